"""A fake Gemini API and Vertex AI server on loopback, written from the REST reference and the
`google-genai` SDK's own source (what it sends in `_api_client.py`/`models.py`, what it parses in
`errors.py`).

Tests drive it through the real SDK (`genai.Client(..., http_options=HttpOptions(base_url=fake.url))`),
so the adapter's request shaping, response parsing and error mapping are exercised on the wire.
Both of the SDK's modes are served from one port:

- Gemini API (API key in `x-goog-api-key`, or `?key=`):
  `POST /{v1,v1beta,v1alpha}/models/{m}:generateContent`, `...:streamGenerateContent?alt=sse`,
  `GET /{version}/models` (paged) and `GET /{version}/models/{m}`.
- Vertex AI (`Authorization: Bearer <token>`):
  `POST /{v1beta1,v1}/projects/{p}/locations/{l}/publishers/google/models/{m}:generateContent` (and
  the stream variant), `GET /{version}/publishers/google/models` (what `models.list()` calls),
  `GET /{version}/publishers/google/models/{m}`, `GET /{version}/projects/{p}/locations/{l}/models`
  (tuned models, `query_base=False`). Express mode (`vertexai=True, api_key=...`) sends the
  `publishers/...` paths without a project and the key in `x-goog-api-key`.

A test steers it per request with `enqueue()`, like the fake Ollama; with nothing queued,
`responder` answers (by default a minimal instance of the requested response schema). Errors use
Google's shape: `{"error": {"code", "message", "status", "details"?}}`.

Only the stdlib; the server machinery, which the other fakes share, is in `_http`.
"""

from __future__ import annotations

import base64
import binascii
import http
import json
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import unquote

from tests.fakes._http import FakeHandler, FakeProvider, Reply
from tests.fakes._images import GEMINI, image_problem
from tests.fakes.ollama_server import schema_instance

Responder = Callable[[dict[str, Any]], str]

_SSE = "text/event-stream"

GEMINI_VERSIONS = ("v1", "v1beta", "v1alpha")
VERTEX_VERSIONS = ("v1", "v1beta1")
GENERATE_METHODS = ("generateContent", "streamGenerateContent")

# google.rpc.Code as the HTTP mapping in googleapis/google/rpc/code.proto gives it.
STATUS_BY_CODE = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
CODE_BY_STATUS = {
    **{status: code for code, status in STATUS_BY_CODE.items()},
    "FAILED_PRECONDITION": 400,
    "OUT_OF_RANGE": 400,
    "ALREADY_EXISTS": 409,
    "UNKNOWN": 500,
    "DATA_LOSS": 500,
}

_GEMINI_MESSAGES = {
    400: "Request contains an invalid argument.",
    401: "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other "
    "valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.",
    403: "The caller does not have permission",
    404: "Requested entity was not found.",
    429: "You exceeded your current quota, please check your plan and billing details. For more information on "
    "this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.",
    500: "An internal error has occurred. Please retry or report in "
    "https://developers.generativeai.google/guide/troubleshooting",
    503: "The model is overloaded. Please try again later.",
    504: "Deadline expired before operation could complete.",
}
_VERTEX_MESSAGES = {
    **_GEMINI_MESSAGES,
    429: "Resource exhausted. Please try again later. Please refer to "
    "https://cloud.google.com/vertex-ai/generative-ai/docs/error-code-429 for more details.",
    500: "Internal error encountered.",
    503: "The service is currently unavailable.",
}
_BAD_KEY = "API key not valid. Please pass a valid API key."
_NO_KEY = (
    "Method doesn't allow unregistered callers (callers without established identity). "
    "Please use API Key or other form of API consumer identity to call this API."
)
_NO_TOKEN = (
    "Request is missing required authentication credential. Expected OAuth 2 access token, login cookie or other "
    "valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project."
)
_HTML_404 = (
    b"<!DOCTYPE html>\n<html lang=en>\n  <meta charset=utf-8>\n  <title>Error 404 (Not Found)!!1</title>\n"
    b"  <p><b>404.</b> <ins>That\xe2\x80\x99s an error.</ins>\n"
    b"  <p>The requested URL was not found on this server.  <ins>That\xe2\x80\x99s all we know.</ins>\n"
)
_IMAGE_TOKENS = 258  # what Gemini bills for one image up to 384 px


def default_message(code: int, vertex: bool = False) -> str:
    """The message Google sends with an error of this HTTP status when nothing more specific applies."""
    table = _VERTEX_MESSAGES if vertex else _GEMINI_MESSAGES
    if code in table:
        return table[code]
    try:
        return http.HTTPStatus(code).phrase
    except ValueError:
        return "Unknown error."


def error_body(code: int, message: str, status: str | None = None, details: list[Any] | None = None) -> dict[str, Any]:
    """Google's JSON error envelope (google.rpc.Status inside `error`)."""
    error: dict[str, Any] = {"code": code, "message": message, "status": status or STATUS_BY_CODE.get(code, "UNKNOWN")}
    if details:
        error["details"] = details
    return {"error": error}


def _error_info(reason: str, service: str, **metadata: str) -> dict[str, Any]:
    return {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": reason,
        "domain": "googleapis.com",
        "metadata": {"service": service, **metadata},
    }


def _display_name(model_id: str) -> str:
    words = model_id.replace("-", " ").split()
    return " ".join(w if any(c.isdigit() for c in w) else w.capitalize() for w in words)


@dataclass(frozen=True)
class GeminiModel:
    """One model. `locations` limits the Vertex regions serving it (None: every region)."""

    id: str
    display_name: str = ""
    description: str = ""
    input_token_limit: int = 1_048_576
    output_token_limit: int = 65_536
    methods: tuple[str, ...] = ("generateContent", "countTokens")
    version: str = "001"
    locations: tuple[str, ...] | None = None
    thinking: bool = True

    @property
    def name(self) -> str:
        return f"models/{self.id}"

    @property
    def generates(self) -> bool:
        return "generateContent" in self.methods

    def gemini_entry(self) -> dict[str, Any]:
        """The model as `GET /v1/models` lists it."""
        entry: dict[str, Any] = {
            "name": self.name,
            "version": self.version,
            "displayName": self.display_name or _display_name(self.id),
            "description": self.description or f"Fake {_display_name(self.id)}.",
            "inputTokenLimit": self.input_token_limit,
            "outputTokenLimit": self.output_token_limit,
            "supportedGenerationMethods": list(self.methods),
        }
        if self.generates:
            entry.update({"temperature": 1, "topP": 0.95, "topK": 64, "maxTemperature": 2})
            if self.thinking:
                entry["thinking"] = True
        return entry

    def vertex_entry(self) -> dict[str, Any]:
        """The model as Vertex's `GET /v1beta1/publishers/google/models` lists it (a PublisherModel)."""
        preview = "preview" in self.id or "exp" in self.id
        return {
            "name": f"publishers/google/models/{self.id}",
            "versionId": "default",
            "openSourceCategory": "PROPRIETARY",
            "launchStage": "PUBLIC_PREVIEW" if preview else "GA",
            "versionState": "VERSION_STATE_UNSTABLE" if preview else "VERSION_STATE_STABLE",
            "publisherModelTemplate": f"projects/{{project}}/locations/{{location}}/publishers/google/models/{self.id}",
        }


def default_models() -> list[GeminiModel]:
    """Current text models, one only served from Vertex's `global` location, and an embedding model."""
    return [
        GeminiModel("gemini-2.5-flash", "Gemini 2.5 Flash"),
        GeminiModel("gemini-2.5-pro", "Gemini 2.5 Pro"),
        GeminiModel("gemini-2.5-flash-lite", "Gemini 2.5 Flash-Lite"),
        GeminiModel("gemini-3-pro-preview", "Gemini 3 Pro Preview", locations=("global",)),
        GeminiModel(
            "gemini-embedding-001",
            "Gemini Embedding 001",
            input_token_limit=2048,
            output_token_limit=1,
            methods=("embedContent", "countTextTokens", "countTokens"),
            thinking=False,
        ),
    ]


@dataclass(frozen=True)
class RecordedRequest:
    """What reached the server, with the routing facts parsed out of the path.

    `api` is "gemini" or "vertex" ("" for an unknown path); `project`/`location` are set for Vertex
    calls scoped to a project, so a test can assert which location a model was sent to.
    """

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: Any
    body: bytes = b""
    api: str = ""
    api_version: str | None = None
    model: str | None = None
    action: str | None = None
    project: str | None = None
    location: str | None = None

    @property
    def stream(self) -> bool:
        return self.action == "streamGenerateContent"

    @property
    def texts(self) -> list[str]:
        """Every text part in `contents`, in order."""
        return [p["text"] for c in _contents(self.json) for p in c.get("parts") or [] if "text" in p]

    @property
    def images(self) -> list[tuple[str, bytes]]:
        """Every `inlineData` part in `contents` as (mimeType, decoded bytes)."""
        return [
            (_field(blob, "mimeType") or "", _b64decode(_field(blob, "data") or ""))
            for c in _contents(self.json)
            for p in c.get("parts") or []
            if (blob := _field(p, "inlineData")) is not None
        ]

    @property
    def generation_config(self) -> dict[str, Any]:
        return _field(self.json, "generationConfig") or {} if isinstance(self.json, dict) else {}

    @property
    def system_instruction(self) -> str | None:
        """The text of `systemInstruction`, None when the request has none."""
        si = _field(self.json, "systemInstruction") if isinstance(self.json, dict) else None
        if not si:
            return None
        return "".join(p.get("text", "") for p in si.get("parts") or [])


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _field(message: Mapping[str, Any], name: str) -> Any:
    """A proto field read as the JSON parser does: by its lowerCamel name or its snake_case one.

    The Python SDK sends some fields snake_case (`inlineData.mime_type`), the API takes both.
    """
    return message.get(name, message.get(_snake(name)))


def _contents(body: Any) -> list[dict[str, Any]]:
    return list(body.get("contents") or []) if isinstance(body, dict) else []


def _b64decode(data: str) -> bytes:
    """Gemini accepts both alphabets; the Python SDK sends URL-safe base64."""
    data = data.replace("-", "+").replace("_", "/")
    return base64.b64decode(data + "=" * (-len(data) % 4), validate=True)


@dataclass(frozen=True)
class _Reply(Reply):
    """A generate reply; as `enqueue()` says, `error` or `error_status` alone picks the HTTP status."""

    error: str | None = None
    error_status: str | None = None
    details: list[Any] | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int = 0
    thoughts_tokens: int = 0
    finish_reason: str = "STOP"
    drop_mid_stream: bool = False
    blocked: bool | str = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.error_status is not None and self.error_status not in CODE_BY_STATUS:
            raise ValueError(f"unknown google.rpc.Code name {self.error_status!r}")
        names_an_error = self.error is not None or self.error_status is not None
        if self.stream_error is None and self.status == 200 and names_an_error:
            self._set("status", CODE_BY_STATUS.get(self.error_status or "", 500))


# --- schemas and the default responder -------------------------------------------------------------

_INT_KEYS = ("minItems", "maxItems", "minLength", "maxLength", "minProperties", "maxProperties")


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(w[:1].upper() + w[1:] for w in rest)


def from_gemini_schema(schema: Any) -> Any:
    """Turn Gemini's own Schema (`responseSchema`: "OBJECT", `nullable`, int64 bounds as strings,
    field names in either JSON spelling, e.g. `min_items`) into JSON Schema for `schema_instance`."""
    if isinstance(schema, list):
        return [from_gemini_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for raw_key, value in schema.items():
        key = raw_key if raw_key.startswith("$") else _camel(raw_key)
        if key == "type" and isinstance(value, str):
            out[key] = value.lower()
        elif key == "type" and isinstance(value, list):
            out[key] = [t.lower() if isinstance(t, str) else t for t in value]
        elif key in _INT_KEYS and isinstance(value, str) and value.lstrip("-").isdigit():
            out[key] = int(value)
        elif key in ("properties", "$defs", "definitions") and isinstance(value, dict):
            out[key] = {name: from_gemini_schema(sub) for name, sub in value.items()}
        elif key in ("items", "anyOf", "oneOf", "allOf", "prefixItems", "additionalProperties", "not"):
            out[key] = from_gemini_schema(value)
        else:
            out[key] = value
    if out.get("type") == "type_unspecified":
        del out["type"]
    return out


def requested_schema(body: Mapping[str, Any]) -> dict[str, Any] | None:
    """The JSON schema a request asks for: `responseJsonSchema` as is, or `responseSchema` converted."""
    config = _field(body, "generationConfig") or {}
    if isinstance(json_schema := _field(config, "responseJsonSchema"), dict):
        return json_schema
    if isinstance(gemini_schema := _field(config, "responseSchema"), dict):
        return from_gemini_schema(gemini_schema)
    return None


def default_responder(body: dict[str, Any]) -> str:
    """What a well-behaved model returns: schema-valid JSON, `{}` for bare JSON mode, the first enum
    value for `text/x.enum`, else prose."""
    config = _field(body, "generationConfig") or {}
    mime = _field(config, "responseMimeType") or ""
    schema = requested_schema(body)
    if mime == "text/x.enum" and schema is not None:
        return str(schema_instance(schema))
    if schema is not None:
        return json.dumps(schema_instance(schema))
    if mime == "application/json":
        return "{}"
    return "This is a fake reply from Gemini."


# --- the server ------------------------------------------------------------------------------------

_GEMINI_RE = re.compile(r"^/(?P<version>v1|v1beta|v1alpha)/(?P<rest>models(?:/.*)?|tunedModels)$")
_VERTEX_RE = re.compile(
    r"^/(?P<version>v1|v1beta1)/(?:projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)/)?(?P<rest>.+)$"
)
_MODEL_RE = re.compile(r"^(?P<model>[^/:]+)(?::(?P<action>[A-Za-z]+))?$")


@dataclass
class _Route:
    api: str  # "gemini" | "vertex"
    kind: str  # "generate" | "list" | "get" | "tuned"
    version: str
    model: str | None = None
    action: str | None = None
    project: str | None = None
    location: str | None = None
    publisher: str = "google"


def _route(method: str, path: str) -> _Route | None:
    path = unquote(path)
    if m := _GEMINI_RE.match(path):
        version, rest = m["version"], m["rest"]
        if rest == "tunedModels":
            return _Route("gemini", "tuned", version) if method == "GET" else None
        if rest == "models":
            return _Route("gemini", "list", version) if method == "GET" else None
        mm = _MODEL_RE.match(rest.removeprefix("models/"))
        if mm is None:
            return None
        if mm["action"] is None:
            return _Route("gemini", "get", version, mm["model"]) if method == "GET" else None
        return _Route("gemini", "generate", version, mm["model"], mm["action"]) if method == "POST" else None
    if m := _VERTEX_RE.match(path):
        version, project, location, rest = m["version"], m["project"], m["location"], m["rest"]
        if project is not None and rest == "models":
            return _Route("vertex", "tuned", version, project=project, location=location) if method == "GET" else None
        pm = re.match(r"^publishers/(?P<publisher>[^/]+)/models(?:/(?P<tail>.+))?$", rest)
        if pm is None:
            return None
        publisher, tail = pm["publisher"], pm["tail"]
        if tail is None:
            ok = method == "GET" and project is None
            return _Route("vertex", "list", version, publisher=publisher) if ok else None
        mm = _MODEL_RE.match(tail)
        if mm is None:
            return None
        if mm["action"] is None:
            ok = method == "GET" and project is None
            return _Route("vertex", "get", version, mm["model"], publisher=publisher) if ok else None
        if method != "POST":
            return None
        return _Route("vertex", "generate", version, mm["model"], mm["action"], project, location, publisher)
    return None


class _Handler(FakeHandler["FakeGemini"]):
    server_version = "scaffolding on HTTPServer2"
    sys_version = ""
    label = "fake gemini"
    json_type = "application/json; charset=UTF-8"
    stock_headers: ClassVar[Mapping[str, str]] = {"Vary": "Origin, X-Origin, Referer", "Server": server_version}

    def do_PATCH(self) -> None:
        self._dispatch()

    def _send(
        self, status: int, body: bytes, content_type: str | None = None, headers: Mapping[str, str] | None = None
    ) -> None:
        """A `Content-Type` in `headers` (say, on a `raw_body` reply) takes the place of the default one."""
        headers = dict(headers or {})
        content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), content_type)
        rest = {k: v for k, v in headers.items() if k.lower() != "content-type"}
        super()._send(status, body, content_type, rest)

    def _json(self, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> None:
        # Google pretty-prints its JSON replies with two-space indents.
        self._send(status, json.dumps(payload, indent=2).encode() + b"\n", headers=headers)

    def _error(
        self,
        code: int,
        message: str,
        status: str | None = None,
        details: list[Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self._json(code, error_body(code, message, status, details), headers)

    # --- dispatch ---

    def _dispatch(self) -> None:
        raw, body = self._read_json()
        path, query, headers = self._target()
        route = _route(self.command, path)
        self.server.fake._record(
            RecordedRequest(
                self.command,
                path,
                query,
                headers,
                body,
                raw,
                api=route.api if route else "",
                api_version=route.version if route else None,
                model=route.model if route else None,
                action=route.action if route else None,
                project=route.project if route else None,
                location=route.location if route else None,
            )
        )
        self._serve(lambda: self._handle(route, headers, query, raw, body))

    def _handle(
        self, route: _Route | None, headers: Mapping[str, str], query: Mapping[str, str], raw: bytes, body: Any
    ) -> None:
        if route is None:
            self._send(404, _HTML_404, "text/html; charset=UTF-8")
        elif not self._authorized(route, headers, query):
            return
        elif route.kind == "generate":
            self._generate(route, raw, body)
        elif route.kind == "list":
            self._list(route, query)
        elif route.kind == "get":
            self._get(route)
        else:  # tuned models: none; proto3 JSON leaves the empty list out
            self._json(200, {})

    def _authorized(self, route: _Route, headers: Mapping[str, str], query: Mapping[str, str]) -> bool:
        fake = self.server.fake
        key = headers.get("x-goog-api-key") or query.get("key")
        auth = headers.get("authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else None
        if route.api == "gemini":
            service = "generativelanguage.googleapis.com"
            if key is not None:
                if fake.api_key is None or key == fake.api_key:
                    return True
                self._error(400, _BAD_KEY, details=[_error_info("API_KEY_INVALID", service), _localized(_BAD_KEY)])
                return False
            if token is not None:  # the Gemini API also takes OAuth
                if fake.access_token is None or token == fake.access_token:
                    return True
                self._error(401, default_message(401), details=[_error_info("ACCESS_TOKEN_TYPE_UNSUPPORTED", service)])
                return False
            self._error(403, _NO_KEY)
            return False
        service = "aiplatform.googleapis.com"
        method = _vertex_method(route)
        if token is not None:
            if fake.access_token is None or token == fake.access_token:
                return True
            info = _error_info("ACCESS_TOKEN_TYPE_UNSUPPORTED", service, method=method)
            self._error(401, default_message(401, vertex=True), details=[info])
            return False
        if key is not None and route.project is None:  # express mode
            if fake.api_key is None or key == fake.api_key:
                return True
            self._error(400, _BAD_KEY, details=[_error_info("API_KEY_INVALID", service), _localized(_BAD_KEY)])
            return False
        self._error(401, _NO_TOKEN, details=[_error_info("CREDENTIALS_MISSING", service, method=method)])
        return False

    # --- routes ---

    def _list(self, route: _Route, query: Mapping[str, str]) -> None:
        fake = self.server.fake
        try:
            size = int(query.get("pageSize") or 0)
        except ValueError:
            self._error(400, f"Invalid value at 'page_size' (TYPE_INT32), \"{query['pageSize']}\"")
            return
        size = 50 if size <= 0 else min(size, 1000)
        start = 0
        if token := query.get("pageToken"):
            try:
                start = int(base64.urlsafe_b64decode(token.encode()).decode().removeprefix("offset:"))
            except (ValueError, binascii.Error):
                self._error(400, "Invalid page token.")
                return
        models = fake.models
        page = models[start : start + size]
        key = "models" if route.api == "gemini" else "publisherModels"
        payload: dict[str, Any] = {}
        if page:
            payload[key] = [m.gemini_entry() if route.api == "gemini" else m.vertex_entry() for m in page]
        if start + size < len(models):
            payload["nextPageToken"] = base64.urlsafe_b64encode(f"offset:{start + size}".encode()).decode()
        self._json(200, payload)

    def _get(self, route: _Route) -> None:
        model = self.server.fake.find(route.model or "")
        if route.api == "gemini":
            if model is None:
                self._error(404, f"models/{route.model} is not found for API version {route.version}.")
            else:
                self._json(200, model.gemini_entry())
            return
        if model is None or route.publisher != "google":
            self._error(404, f"Publisher Model `publishers/{route.publisher}/models/{route.model}` not found.")
        else:
            self._json(200, model.vertex_entry())

    def _generate(self, route: _Route, raw: bytes, body: Any) -> None:
        fake = self.server.fake
        vertex = route.api == "vertex"
        if route.action not in GENERATE_METHODS:
            self._send(404, _HTML_404, "text/html; charset=UTF-8")
            return
        if not isinstance(body, dict):
            if raw:
                self._error(400, "Invalid JSON payload received. Unexpected token.")
            else:
                self._error(400, "* GenerateContentRequest.contents: contents is not specified\n")
            return
        model = fake.find(route.model or "")
        if vertex:
            resource = f"publishers/{route.publisher}/models/{route.model}"
            if route.project is not None:
                resource = f"projects/{route.project}/locations/{route.location}/{resource}"
            if fake.project is not None and route.project is not None and route.project != fake.project:
                self._error(
                    403,
                    f"Permission 'aiplatform.endpoints.predict' denied on resource "
                    f"'//aiplatform.googleapis.com/{resource}' (or it may not exist).",
                    details=[_error_info("IAM_PERMISSION_DENIED", "aiplatform.googleapis.com")],
                )
                return
            servable = (
                model is not None
                and model.generates
                and route.publisher == "google"
                and (model.locations is None or route.location is None or route.location in model.locations)
            )
            if not servable:
                self._error(
                    404,
                    f"Publisher Model `{resource}` was not found or your project does not have access to it. "
                    "Please ensure you are using a valid model version. For more information, see: "
                    "https://cloud.google.com/vertex-ai/generative-ai/docs/learn/model-versions",
                )
                return
        elif model is None or not model.generates:
            self._error(
                404,
                f"models/{route.model} is not found for API version {route.version}, or is not supported for "
                f"{route.action}. Call ListModels to see the list of available models and their supported methods.",
            )
            return
        assert model is not None
        if not _contents(body):
            self._error(400, "* GenerateContentRequest.contents: contents is not specified\n")
            return
        for mime, data in RecordedRequest("", "", {}, {}, body).images:
            problem = image_problem(data, GEMINI, mime)
            if problem:
                self._error(400, f"Unable to process input image: {problem}.")
                return
        reply = fake._reply_for(body)
        if not self._begin(reply):
            return
        if reply.raw_body is not None:
            self._send(reply.status, reply.raw_body, headers=reply.headers)
            return
        if reply.status != 200:
            message = reply.error or default_message(reply.status, vertex)
            self._error(reply.status, message, reply.error_status, reply.details, reply.headers)
            return
        self._answer(route, model, body, reply)

    def _answer(self, route: _Route, model: GeminiModel, body: dict[str, Any], reply: _Reply) -> None:
        fake = self.server.fake
        vertex = route.api == "vertex"
        response_id = uuid.uuid4().hex[:22]
        created = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{time.time_ns() % 10**9 // 1000:06d}Z"
        prompt_text = sum(len(t) for t in RecordedRequest("", "", {}, {}, body).texts)
        images = sum(1 for c in _contents(body) for p in c.get("parts") or [] if _field(p, "inlineData") is not None)
        prompt_tokens = reply.prompt_tokens
        if prompt_tokens is None:
            prompt_tokens = max(1, prompt_text // 4) + images * _IMAGE_TOKENS

        def envelope(**fields: Any) -> dict[str, Any]:
            out = {**fields, "modelVersion": model.id, "responseId": response_id}
            if vertex:
                out["createTime"] = created
            return out

        def usage(completion: int | None) -> dict[str, Any]:
            # As the API reports it: cached tokens are among `promptTokenCount`; thinking is counted apart
            # from the answer's `candidatesTokenCount` (both billed as output), and in the total.
            u: dict[str, Any] = {"promptTokenCount": prompt_tokens}
            if completion is not None:
                u["candidatesTokenCount"] = completion
            if reply.cached_tokens:
                u["cachedContentTokenCount"] = reply.cached_tokens
                u["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": reply.cached_tokens}]
            if reply.thoughts_tokens and completion is not None:
                u["thoughtsTokenCount"] = reply.thoughts_tokens
            u["totalTokenCount"] = prompt_tokens + (completion or 0) + (reply.thoughts_tokens if completion else 0)
            details = [{"modality": "TEXT", "tokenCount": max(0, prompt_tokens - images * _IMAGE_TOKENS)}]
            if images:
                details.append({"modality": "IMAGE", "tokenCount": images * _IMAGE_TOKENS})
            u["promptTokensDetails"] = details
            if vertex:
                u["trafficType"] = "ON_DEMAND"
            return u

        if reply.blocked:
            reason = reply.blocked if isinstance(reply.blocked, str) else "SAFETY"
            payload = envelope(promptFeedback={"blockReason": reason}, usageMetadata=usage(None))
            if route.action == "streamGenerateContent":
                self._start_stream(_SSE, reply.headers)
                self._event(payload)
                self._end_stream()
            else:
                self._json(200, payload, reply.headers)
            return

        no_content = reply.content is None and reply.finish_reason in (
            "SAFETY",
            "RECITATION",
            "BLOCKLIST",
            "PROHIBITED_CONTENT",
            "SPII",
        )
        if no_content:
            text = ""
        else:
            content = fake.responder(body) if reply.content is None else reply.content
            text = content if isinstance(content, str) else json.dumps(content)
        pieces = re.findall(r"\S+\s*|\s+", text)
        completion = reply.completion_tokens if reply.completion_tokens is not None else len(pieces)

        def candidate(piece: str | None, finish: bool) -> dict[str, Any]:
            cand: dict[str, Any] = {}
            if piece is not None:
                cand["content"] = {"role": "model", "parts": [{"text": piece}]}
            if finish:
                cand["finishReason"] = reply.finish_reason
            cand["index"] = 0
            return cand

        if route.action == "generateContent":
            if reply.stream_error is not None:  # unstreamed, the failure is the whole answer: its error status
                status = reply.error_status or "INTERNAL"
                self._error(CODE_BY_STATUS.get(status, 500), reply.stream_error, status, reply.details, reply.headers)
                return
            if reply.drop_mid_stream:  # unstreamed, nothing of the answer has been sent: the socket closes
                self._drop()
                return
            cand = candidate(None if no_content else text, True)
            self._json(200, envelope(candidates=[cand], usageMetadata=usage(completion)), reply.headers)
            return

        self._start_stream(_SSE, reply.headers)
        if no_content:
            pieces = []
        if reply.stream_error is not None or reply.drop_mid_stream:
            pieces = pieces[: max(1, len(pieces) // 2)]
        for i, piece in enumerate(pieces):
            if i and reply.chunk_delay_s and not self._wait(reply.chunk_delay_s):
                return
            last = i == len(pieces) - 1 and reply.stream_error is None and not reply.drop_mid_stream
            self._event(
                envelope(candidates=[candidate(piece, last)], usageMetadata=usage(completion if last else None))
            )
        if reply.drop_mid_stream:
            self._drop()
            return
        if reply.stream_error is not None:
            status = reply.error_status or "INTERNAL"
            self._event(error_body(CODE_BY_STATUS.get(status, 500), reply.stream_error, status, reply.details))
        elif not pieces:
            final = candidate(None if no_content else "", True)
            self._event(envelope(candidates=[final], usageMetadata=usage(completion)))
        self._end_stream()

    def _event(self, payload: dict[str, Any]) -> None:
        self._chunk(b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\r\n\r\n")


def _localized(message: str) -> dict[str, Any]:
    return {"@type": "type.googleapis.com/google.rpc.LocalizedMessage", "locale": "en-US", "message": message}


def _vertex_method(route: _Route) -> str:
    action = {"generate": route.action or "GenerateContent", "list": "ListPublisherModels"}.get(route.kind, "Get")
    action = action[:1].upper() + action[1:]
    service = "PredictionService" if route.kind == "generate" else "ModelGardenService"
    return f"google.cloud.aiplatform.{route.version}.{service}.{action}"


class FakeGemini(FakeProvider[_Reply, RecordedRequest]):
    """The fake server; `with FakeGemini() as fake:` serves on `fake.url` until the block ends.

    `api_key` is what `x-goog-api-key` must carry, `access_token` what `Authorization: Bearer` must
    carry (None accepts any). `project`, if set, is the only Vertex project allowed (others get 403).
    Requests a real server would refuse (bad auth, unknown model, a model not served in the
    location, no contents) are answered as Google does and do not consume the queue; every other
    generate call takes the next enqueued reply, or asks `responder` when the queue is empty (`picker`,
    if set, comes first).
    """

    def __init__(
        self,
        api_key: str | None = "test-key",
        access_token: str | None = "test-token",
        models: list[GeminiModel | str] | None = None,
        project: str | None = None,
    ) -> None:
        super().__init__(_Handler, _Reply)
        self.api_key = api_key
        self.access_token = access_token
        self.project = project
        self.models: list[GeminiModel] = (
            default_models() if models is None else [GeminiModel(m) if isinstance(m, str) else m for m in models]
        )
        self.responder: Responder = default_responder

    def enqueue(
        self,
        content: str | dict[str, Any] | list[Any] | None = None,
        *,
        status: int = 200,
        error: str | None = None,
        error_status: str | None = None,
        details: list[Any] | None = None,
        headers: Mapping[str, str] | None = None,
        delay_s: float = 0,
        chunk_delay_s: float = 0,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        cached_tokens: int = 0,
        thoughts_tokens: int = 0,
        finish_reason: str = "STOP",
        raw_body: bytes | None = None,
        drop_connection: bool = False,
        drop_mid_stream: bool = False,
        hang: bool = False,
        stream_error: str | None = None,
        blocked: bool | str = False,
    ) -> None:
        """Queue what the next accepted generate call gets.

        `content` None means "ask `responder`"; a dict or list is sent JSON-encoded as the text.
        An error: `status` (e.g. 429) and/or `error_status` (Google's name, e.g. "RESOURCE_EXHAUSTED",
        which alone picks the HTTP status); `error` is the message (default: Google's usual one),
        `details` the `error.details` list (e.g. a RetryInfo). `headers` go on the reply (e.g.
        `Retry-After`). `raw_body` is sent verbatim with `status`. `hang` never answers (the client
        hanging up is counted in `disconnects`). `stream_error` cuts a streamed reply in half and
        ends it with a `data: {"error": ...}` event (code from `error_status`, default INTERNAL);
        `drop_mid_stream` cuts it in half and closes the socket. Unstreamed (`generateContent`),
        `stream_error` is answered with that error status and envelope, and `drop_mid_stream` closes the
        socket unanswered. `blocked` (True or a reason such as "PROHIBITED_CONTENT") answers 200 with
        `promptFeedback.blockReason` and no candidates.
        `finish_reason` "SAFETY"/"RECITATION"/... with no `content` sends a candidate without content.
        `prompt_tokens` / `completion_tokens` set the usage reported (default: a token per 4 characters
        of the prompt, per streamed piece of the answer); `cached_tokens` of the prompt's came from a
        context cache (`cachedContentTokenCount`), and `thoughts_tokens` were thinking, reported apart
        from the answer's (`thoughtsTokenCount`).
        """
        self._push(
            _Reply(
                content=content,
                status=status,
                error=error,
                error_status=error_status,
                details=details,
                headers=headers or {},
                delay_s=delay_s,
                chunk_delay_s=chunk_delay_s,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                cached_tokens=cached_tokens,
                thoughts_tokens=thoughts_tokens,
                finish_reason=finish_reason,
                raw_body=raw_body,
                drop_connection=drop_connection,
                drop_mid_stream=drop_mid_stream,
                hang=hang,
                stream_error=stream_error,
                blocked=blocked,
            )
        )

    def find(self, name: str) -> GeminiModel | None:
        """A model by id, `models/<id>` or `publishers/google/models/<id>`."""
        bare = name.rsplit("/", 1)[-1]
        return next((m for m in self.models if m.id == bare), None)

    def reset(self) -> None:
        """Forget requests, queue, disconnects and errors; restore the default responder."""
        super().reset()
        self.responder = default_responder

    @property
    def generate_requests(self) -> list[RecordedRequest]:
        """generateContent and streamGenerateContent calls, in both modes, refused ones included."""
        return [r for r in self.requests if r.action in GENERATE_METHODS]
