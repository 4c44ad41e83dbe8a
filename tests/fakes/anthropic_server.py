"""A fake Anthropic Messages API on loopback, written from Anthropic's API reference and the SDK's source.

Tests drive it through the real `anthropic` SDK (`AsyncAnthropic(base_url=fake.url, max_retries=0)`),
so an adapter's request shaping, response parsing and error mapping are exercised on the wire.
It is steered like the fake Ollama server: `enqueue()` queues what the next accepted
`POST /v1/messages` gets (a reply, an HTTP error, malformed bytes, a dropped or hanging
connection, an `error` event mid-stream); with nothing queued, `responder` answers (by default
a minimal instance of the requested JSON schema, as text for `output_config` or as the input of
a forced tool).

Requests the real API refuses (no or wrong key, no `anthropic-version`, unknown model, unknown
body fields, bad images, `output_config` on a model without structured outputs, a forced tool
that is not in `tools`) are answered as the API does and do not consume the queue.

Only the stdlib; the server machinery, which the other fakes share, is in `_http`.
"""

from __future__ import annotations

import base64
import binascii
import http
import json
import re
import secrets
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from tests.fakes._http import Content, FakeHandler, FakeProvider, Reply
from tests.fakes._images import ANTHROPIC, image_problem
from tests.fakes.ollama_server import schema_instance

Responder = Callable[[dict[str, Any]], Content]

_SSE = "text/event-stream; charset=utf-8"
MAX_IMAGE_BYTES = 5 * 1024 * 1024
MAX_REQUEST_BYTES = 32 * 1024 * 1024
IMAGE_MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")

# The error `type` for each status, from Anthropic's "HTTP errors" page (docs.claude.com/en/api/errors),
# and the status for each type; 503 is not on that page and gets the generic `api_error`.
ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_STATUS_FOR_TYPE = {kind: status for status, kind in ERROR_TYPES.items() if status != 503}
DEFAULT_MESSAGES: dict[str, str] = {
    "invalid_request_error": "Invalid request",
    "authentication_error": "invalid x-api-key",
    "billing_error": "Your credit balance is too low to access the Anthropic API.",
    "permission_error": "Your API key does not have permission to use the specified resource.",
    "not_found_error": "Not found",
    "conflict_error": "Conflict",
    "request_too_large": "Request exceeds the maximum allowed number of bytes.",
    "rate_limit_error": "Number of request tokens has exceeded your per-minute rate limit",
    "api_error": "Internal server error",
    "timeout_error": "Request timed out",
    "overloaded_error": "Overloaded",
}

# Top-level fields of a Messages request; anything else is refused as the API does ("Extra inputs").
_MESSAGE_FIELDS = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "system",
        "temperature",
        "top_p",
        "top_k",
        "stop_sequences",
        "stream",
        "tools",
        "tool_choice",
        "metadata",
        "thinking",
        "output_config",
        "output_format",
        "service_tier",
        "container",
        "cache_control",
        "context_management",
        "diagnostics",
        "inference_geo",
        "mcp_servers",
        "speed",
    }
)
_ALNUM = string.ascii_letters + string.digits


def _new_id(prefix: str) -> str:
    return prefix + "".join(secrets.choice(_ALNUM) for _ in range(24))


def _sniff_image(data: bytes) -> str | None:
    """The media type the bytes really are, as the API checks it against the declared one."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


@dataclass(frozen=True)
class FakeClaude:
    """One model the fake serves; `native_structured=False` refuses `output_config.format` with a 400."""

    id: str
    display_name: str = ""
    native_structured: bool = True
    vision: bool = True
    created_at: str = "2025-10-01T00:00:00Z"
    aliases: tuple[str, ...] = ()
    max_input_tokens: int = 200_000
    max_tokens: int = 64_000

    def info(self) -> dict[str, Any]:
        """The model's object in `GET /v1/models`."""
        line = next((name for name in ("opus", "sonnet", "haiku") if name in self.id), None)
        yes, no = {"supported": True}, {"supported": False}
        return {
            "type": "model",
            "id": self.id,
            "display_name": self.display_name or self.id,
            "created_at": self.created_at,
            "lifecycle": "active",
            "deprecated_at": None,
            "retires_at": None,
            "line": line,
            "max_input_tokens": self.max_input_tokens,
            "max_tokens": self.max_tokens,
            "capabilities": {
                "batch": yes,
                "citations": yes,
                "code_execution": no,
                "context_management": {"supported": False},
                "effort": {"supported": False, "low": no, "medium": no, "high": no, "max": no},
                "image_input": yes if self.vision else no,
                "pdf_input": yes,
                "server_tools": {"supported": False, "code_execution": no, "web_search": no},
                "structured_outputs": yes if self.native_structured else no,
                "thinking": {
                    "supported": True,
                    "types": {"enabled": yes, "adaptive": no, "between_tools": no, "disabled": yes},
                },
            },
        }


def default_models() -> list[FakeClaude]:
    """Newest first, as the API lists them; the last one has no native structured output."""
    return [
        FakeClaude("claude-opus-4-6", "Claude Opus 4.6", created_at="2026-02-05T00:00:00Z"),
        FakeClaude(
            "claude-haiku-4-5-20251001",
            "Claude Haiku 4.5",
            created_at="2025-10-15T00:00:00Z",
            aliases=("claude-haiku-4-5",),
        ),
        FakeClaude(
            "claude-opus-4-1-20250805",
            "Claude Opus 4.1",
            native_structured=False,
            created_at="2025-08-05T00:00:00Z",
            aliases=("claude-opus-4-1",),
            max_tokens=32_000,
        ),
    ]


@dataclass(frozen=True)
class RecordedRequest:
    """What reached the server, so a test can assert the exact JSON and headers the SDK sent."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: Any
    body: bytes = b""


@dataclass(frozen=True)
class _Reply(Reply):
    """A Messages reply; as `enqueue()` says, an error type alone picks its status and a status alone its
    type, and an error without a message gets the stock one."""

    blocks: list[dict[str, Any]] | None = None
    error_type: str | None = None
    message: str | None = None
    error_code: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    thinking_tokens: int = 0
    stop_reason: str | None = None
    stall_after: int | None = None
    as_tool: bool | str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.error_type is not None and self.status == 200:
            self._set("status", _STATUS_FOR_TYPE.get(self.error_type, 500))
        if self.status != 200 and self.raw_body is None:
            fallback = "api_error" if self.status >= 500 else "invalid_request_error"
            error_type = self.error_type or ERROR_TYPES.get(self.status, fallback)
            self._set("error_type", error_type)
            if self.message is None:
                self._set("message", DEFAULT_MESSAGES.get(error_type) or http.HTTPStatus(self.status).phrase)


class RequestError(Exception):
    """A request the real API would refuse: answered with Anthropic's error body, the queue untouched."""

    def __init__(self, status: int, message: str, error_type: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type or ERROR_TYPES.get(status, "api_error")


# --- what the model "says" -------------------------------------------------------------------------


def output_schema(body: Mapping[str, Any]) -> Any:
    """The schema of `output_config.format` (or the deprecated top-level `output_format`), if any."""
    config = body.get("output_config")
    fmt = config.get("format") if isinstance(config, Mapping) else None
    fmt = fmt if isinstance(fmt, Mapping) else body.get("output_format")
    if isinstance(fmt, Mapping) and fmt.get("type") == "json_schema":
        return fmt.get("schema")
    return None


def forced_tool(body: Mapping[str, Any]) -> dict[str, Any] | None:
    """The tool the request makes the model call: `tool_choice` `tool` (by name) or `any` (the first)."""
    choice = body.get("tool_choice")
    tools = [t for t in body.get("tools") or [] if isinstance(t, Mapping)]
    if not isinstance(choice, Mapping) or not tools:
        return None
    if choice.get("type") == "tool":
        return next((dict(t) for t in tools if t.get("name") == choice.get("name")), None)
    if choice.get("type") == "any":
        return dict(tools[0])
    return None


def default_responder(body: dict[str, Any]) -> Content:
    """What a well-behaved Claude returns: the forced tool's input, schema-valid JSON text, else prose."""
    tool = forced_tool(body)
    if tool is not None:
        return schema_instance(tool.get("input_schema") or {"type": "object"})
    schema = output_schema(body)
    if schema is not None:
        return json.dumps(schema_instance(schema))
    return f"This is a fake reply from {body.get('model')}."


# --- request validation, as the API does it ---------------------------------------------------------


def _check_image(block: Mapping[str, Any], where: str, strict_images: bool) -> int:
    source = block.get("source")
    if not isinstance(source, Mapping):
        raise RequestError(400, f"{where}.source: Field required")
    kind = source.get("type")
    if kind == "url":
        if not isinstance(source.get("url"), str):
            raise RequestError(400, f"{where}.source.url: Field required")
        return 0
    if kind != "base64":
        raise RequestError(400, f"{where}.source.type: Input tag '{kind}' found using 'type' does not match")
    media_type, data = source.get("media_type"), source.get("data")
    if media_type not in IMAGE_MEDIA_TYPES:
        allowed = ", ".join(f"'{m}'" for m in IMAGE_MEDIA_TYPES)
        raise RequestError(400, f"{where}.source.base64.media_type: Input should be {allowed}")
    if not isinstance(data, str):
        raise RequestError(400, f"{where}.source.base64.data: Field required")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(400, f"{where}.source.base64.data: The image data is not valid base64") from None
    if len(raw) > MAX_IMAGE_BYTES:
        raise RequestError(
            400, f"{where}.source.base64: image exceeds 5 MB maximum: {len(raw)} bytes > {MAX_IMAGE_BYTES} bytes"
        )
    if strict_images:
        actual = _sniff_image(raw)
        if actual is None:
            raise RequestError(400, f"{where}.source.base64.data: Could not process image")
        if actual != media_type:
            raise RequestError(
                400,
                f"{where}.source.base64.data: Image does not match the provided media type {media_type}",
            )
        problem = image_problem(raw, ANTHROPIC, media_type)  # decodes, within the size we promise to send
        if problem:
            raise RequestError(400, f"{where}.source.base64.data: {problem}")
    return len(raw)


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts = []
    for block in content if isinstance(content, list) else []:
        if isinstance(block, Mapping):
            if block.get("type") == "text":
                parts.append(str(block.get("text", "")))
            elif block.get("type") in ("tool_use", "tool_result"):
                parts.append(json.dumps(block.get("input", block.get("content", ""))))
    return " ".join(parts)


def _has_loose_object(schema: Any) -> bool:
    """True if some object in the schema does not set `additionalProperties: false`."""
    if isinstance(schema, list):
        return any(_has_loose_object(s) for s in schema)
    if not isinstance(schema, Mapping):
        return False
    if (schema.get("type") == "object" or "properties" in schema) and schema.get("additionalProperties") is not False:
        return True
    return any(_has_loose_object(v) for k, v in schema.items() if k not in ("enum", "const", "default", "examples"))


def validate_messages_request(
    body: Mapping[str, Any], model: FakeClaude, *, strict_images: bool = True, strict_schemas: bool = False
) -> int:
    """Raise `RequestError` for what the API refuses; return an estimate of the input tokens."""
    for key in body:
        if key not in _MESSAGE_FIELDS:
            raise RequestError(400, f"{key}: Extra inputs are not permitted")
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        raise RequestError(400, "max_tokens: Field required")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 0:
        raise RequestError(400, "max_tokens: Input should be a valid integer greater than or equal to 0")
    if max_tokens > model.max_tokens:
        raise RequestError(
            400,
            f"max_tokens: {max_tokens} > {model.max_tokens}, which is the maximum allowed number of output "
            f"tokens for {model.id}",
        )
    temperature = body.get("temperature")
    if temperature is not None and (not isinstance(temperature, int | float) or not 0 <= temperature <= 1):
        raise RequestError(400, "temperature: Input should be less than or equal to 1")
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise RequestError(400, "messages: Field required" if messages is None else "messages: Input should be a list")
    if not messages:
        raise RequestError(400, "messages: at least one message is required")
    chars, image_tokens = len(_text_of(body.get("system") or "")), 0
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise RequestError(400, f"messages.{i}: Input should be a valid dictionary")
        if message.get("role") not in ("user", "assistant"):
            raise RequestError(400, f"messages.{i}.role: Input should be 'user' or 'assistant'")
        content = message.get("content")
        if isinstance(content, str):
            chars += len(content)
            continue
        if not isinstance(content, list):
            raise RequestError(400, f"messages.{i}.content: Field required")
        for j, block in enumerate(content):
            where = f"messages.{i}.content.{j}"
            kind = block.get("type") if isinstance(block, Mapping) else None
            if kind == "text":
                if not isinstance(block.get("text"), str):
                    raise RequestError(400, f"{where}.text.text: Field required")
                if not block["text"]:
                    raise RequestError(400, f"{where}.text.text: text content blocks must be non-empty")
            elif kind == "image":
                if not model.vision:
                    raise RequestError(400, f"{where}: this model does not support image input")
                if _check_image(block, f"{where}.image", strict_images):
                    image_tokens += 1_600
            elif not isinstance(kind, str):
                raise RequestError(400, f"{where}.type: Field required")
        chars += len(_text_of(content))
    tools = body.get("tools") or []
    names = []
    for k, tool in enumerate(tools):
        if not isinstance(tool, Mapping) or not tool.get("name"):
            raise RequestError(400, f"tools.{k}.custom.name: Field required")
        names.append(tool["name"])
        if tool.get("type") in (None, "custom"):
            schema = tool.get("input_schema")
            if not isinstance(schema, Mapping):
                raise RequestError(400, f"tools.{k}.custom.input_schema: Field required")
            if schema.get("type") != "object":
                raise RequestError(400, f"tools.{k}.custom.input_schema.type: Input should be 'object'")
    choice = body.get("tool_choice")
    if choice is not None:
        kind = choice.get("type") if isinstance(choice, Mapping) else None
        if kind not in ("auto", "any", "tool", "none"):
            raise RequestError(400, f"tool_choice.type: Input tag '{kind}' found using 'type' does not match")
        if kind == "tool" and choice.get("name") not in names:
            raise RequestError(400, f"tool_choice: Tool '{choice.get('name')}' not found in provided tools")
        if kind in ("any", "tool") and not names:
            raise RequestError(400, "tool_choice: tool_choice may only be specified while providing tools.")
        thinking = body.get("thinking")
        if kind in ("any", "tool") and isinstance(thinking, Mapping) and thinking.get("type") == "enabled":
            raise RequestError(400, "Thinking may not be enabled when tool_choice forces tool use.")
    config = body.get("output_config")
    fmt = config.get("format") if isinstance(config, Mapping) else None
    if config is not None and not isinstance(config, Mapping):
        raise RequestError(400, "output_config: Input should be a valid dictionary")
    fmt = fmt if fmt is not None else body.get("output_format")
    if fmt is not None:
        if not isinstance(fmt, Mapping) or fmt.get("type") != "json_schema":
            raise RequestError(400, "output_config.format.type: Input should be 'json_schema'")
        if not isinstance(fmt.get("schema"), Mapping):
            raise RequestError(400, "output_config.format.schema: Field required")
        if not model.native_structured:
            raise RequestError(
                400, f"output_config.format: structured outputs are not supported for model '{body.get('model')}'"
            )
        if strict_schemas and _has_loose_object(fmt["schema"]):
            raise RequestError(
                400,
                "output_config.format.schema: For 'object' type, 'additionalProperties' must be explicitly "
                "set to false",
            )
    tool_chars = len(json.dumps(tools)) if tools else 0
    return max(1, (chars + tool_chars) // 4) + image_tokens


# --- the server ------------------------------------------------------------------------------------


class _Handler(FakeHandler["FakeAnthropic"]):
    label = "fake anthropic"
    request_id = ""  # each request's own, set in `_dispatch`; on every reply, as the API sends it

    def _start(self, status: int, content_type: str, headers: Mapping[str, str] | None = None) -> None:
        """The API's headers; a `Content-Type` in `headers` (say, on a `raw_body` reply) replaces the default."""
        headers = dict(headers or {})
        self.send_response_only(status)
        self.send_header("Date", self.date_time_string())
        if not any(key.lower() == "content-type" for key in headers):
            self.send_header("Content-Type", content_type)
        self.send_header("request-id", self.request_id)
        self.send_header("anthropic-organization-id", "00000000-0000-4000-8000-000000000000")
        for key, value in headers.items():
            self.send_header(key, value)

    def _error(
        self,
        status: int,
        message: str,
        error_type: str | None = None,
        headers: Mapping[str, str] | None = None,
        error_code: str | None = None,
    ) -> None:
        error: dict[str, Any] = {"type": error_type or ERROR_TYPES.get(status, "api_error"), "message": message}
        if error_code is not None:
            error["details"] = {"error_code": error_code}
        self._json(status, {"type": "error", "error": error, "request_id": self.request_id}, headers)

    # --- dispatch ---

    def _dispatch(self) -> None:
        fake = self.server.fake
        self.request_id = _new_id("req_")
        path, query, headers = self._target()
        length = int(self.headers.get("Content-Length") or 0)
        if length > fake.max_request_bytes:  # refused at the edge, as Cloudflare does, without parsing
            fake._record(RecordedRequest(self.command, path, query, headers, None))
            while length > 0:  # drain it, so the client reads the 413 rather than a reset
                length -= len(self.rfile.read(min(length, 1 << 16)) or b"\0" * length)
            self._error(413, DEFAULT_MESSAGES["request_too_large"])
            return
        raw, body = self._read_json(length)
        fake._record(RecordedRequest(self.command, path, query, headers, body, raw))
        self._serve(lambda: self._route(path, query, headers, raw, body))

    def _refused(self, exc: Exception) -> bool:
        if not isinstance(exc, RequestError):
            return False
        self._error(exc.status, exc.message, exc.error_type)
        return True

    def _route(self, path: str, query: dict[str, str], headers: dict[str, str], raw: bytes, body: Any) -> None:
        fake = self.server.fake
        if path == "/v1/messages" or path == "/v1/messages/count_tokens":
            if self.command != "POST":
                raise RequestError(405, "Method Not Allowed", "invalid_request_error")
        elif path == "/v1/models" or path.startswith("/v1/models/"):
            if self.command != "GET":
                raise RequestError(405, "Method Not Allowed", "invalid_request_error")
        else:
            raise RequestError(404, "Not Found")
        fake._authenticate(headers)
        if not headers.get("anthropic-version"):
            raise RequestError(400, "anthropic-version: header is required")
        if path == "/v1/models":
            self._json(200, fake._model_page(query))
            return
        if path.startswith("/v1/models/"):
            model_id = unquote(path[len("/v1/models/") :])
            model = fake.find(model_id)
            if model is None:
                raise RequestError(404, f"model: {model_id}")
            self._json(200, model.info())
            return
        if not isinstance(body, dict):
            raise RequestError(400, "There was an issue with the request body: invalid JSON" if raw else "Empty body")
        name = body.get("model")
        if not isinstance(name, str) or not name:
            raise RequestError(400, "model: Field required")
        model = fake.find(name)
        if model is None:
            raise RequestError(404, f"model: {name}")
        if path == "/v1/messages/count_tokens":
            body = {**body, "max_tokens": 1}
            self._json(200, {"input_tokens": fake._validate(body, model)})
            return
        self._messages(body, model, fake._validate(body, model))

    # --- POST /v1/messages ---

    def _messages(self, body: dict[str, Any], model: FakeClaude, input_estimate: int) -> None:
        fake = self.server.fake
        reply = fake._reply_for(body)
        if not self._begin(reply):
            return
        if reply.raw_body is not None:
            self._send(reply.status, reply.raw_body, headers=reply.headers)
            return
        if reply.status != 200:
            self._error(reply.status, reply.message or "", reply.error_type, reply.headers, reply.error_code)
            return

        tool = forced_tool(body)
        use_tool = reply.as_tool if reply.as_tool is not None else tool is not None
        if isinstance(use_tool, str):
            tool_name: str | None = use_tool
        elif use_tool:
            tools = body.get("tools") or [{}]
            tool_name = (tool or tools[0]).get("name") or "tool"
        else:
            tool_name = None
        if reply.blocks is not None:
            blocks = [dict(b) for b in reply.blocks]
            units = [json.dumps(b) for b in blocks]
        else:
            content = fake.responder(body) if reply.content is None else reply.content
            if tool_name is not None:
                tool_input = json.loads(content) if isinstance(content, str) else content
                if not isinstance(tool_input, dict):
                    raise ValueError(f"a tool_use input must be a JSON object, got {tool_input!r}")
                blocks = [{"type": "tool_use", "id": _new_id("toolu_"), "name": tool_name, "input": tool_input}]
                units = re.findall(r".{1,12}", json.dumps(tool_input), re.S)
            else:
                text = content if isinstance(content, str) else json.dumps(content)
                units = re.findall(r"\S+\s*|\s+", text)
                blocks = [{"type": "text", "text": text}]
        calls_tool = tool_name is not None if reply.blocks is None else any(b.get("type") == "tool_use" for b in blocks)
        stop_reason = reply.stop_reason or ("tool_use" if calls_tool else "end_turn")
        max_tokens = body["max_tokens"]
        if reply.stop_reason is None and tool_name is None and reply.blocks is None and len(units) > max_tokens:
            units, stop_reason = units[:max_tokens], "max_tokens"
            blocks = [{"type": "text", "text": "".join(units)}] if units else []
        input_tokens = reply.input_tokens if reply.input_tokens is not None else input_estimate
        output_tokens = reply.output_tokens if reply.output_tokens is not None else max(1, len(units))
        message = {
            "id": _new_id("msg_"),
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": blocks,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            # As the API reports it: `input_tokens` are those after the last cache breakpoint only; the
            # tokens read from the prompt cache and those written to it are counted apart (each billed at
            # its own rate), and `output_tokens` include any thinking.
            "usage": {
                "input_tokens": input_tokens,
                "cache_creation_input_tokens": reply.cache_creation_input_tokens,
                "cache_read_input_tokens": reply.cache_read_input_tokens,
                "cache_creation": {"ephemeral_5m_input_tokens": reply.cache_creation_input_tokens,
                                   "ephemeral_1h_input_tokens": 0},
                "output_tokens": output_tokens,
                "service_tier": "standard",
            },
        }
        if reply.thinking_tokens:  # of `output_tokens`: the reasoning, broken out (billed as output)
            message["usage"]["output_tokens_details"] = {"thinking_tokens": reply.thinking_tokens}
        if body.get("stream") is not True:
            if reply.stream_error is not None:  # unstreamed, the failure is the whole answer: its error status
                kind = reply.stream_error
                self._error(_STATUS_FOR_TYPE.get(kind, 500), reply.message or DEFAULT_MESSAGES.get(kind, kind),
                            kind, reply.headers)
                return
            self._json(200, message, reply.headers)
            return
        self._stream(message, reply)

    def _stream(self, message: dict[str, Any], reply: _Reply) -> None:
        """SSE as the API sends it: message_start, per block start/ping/deltas/stop, message_delta, message_stop."""
        self._start_stream(_SSE, {"Cache-Control": "no-cache", **reply.headers})
        usage = message["usage"]
        start = {
            **message,
            "content": [],
            "stop_reason": None,
            "usage": {**usage, "output_tokens": 1},
        }
        events: list[tuple[str, dict[str, Any]]] = [("message_start", {"type": "message_start", "message": start})]
        for index, block in enumerate(message["content"]):
            if block["type"] == "text":
                head, deltas = (
                    {"type": "text", "text": ""},
                    [{"type": "text_delta", "text": t} for t in re.findall(r"\S+\s*|\s+", block["text"])],
                )
            elif block["type"] == "tool_use":
                head = {**block, "input": {}}
                pieces = re.findall(r".{1,12}", json.dumps(block["input"]), re.S)
                deltas = [{"type": "input_json_delta", "partial_json": p} for p in ["", *pieces]]
            else:
                head, deltas = block, []
            events.append(
                ("content_block_start", {"type": "content_block_start", "index": index, "content_block": head})
            )
            if index == 0:
                events.append(("ping", {"type": "ping"}))
            events += [
                ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d}) for d in deltas
            ]
            events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
        events.append(
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                    # cumulative counts, as the API sends them (the SDK overwrites its snapshot's with them)
                    "usage": {key: usage[key] for key in ("input_tokens", "cache_creation_input_tokens",
                                                          "cache_read_input_tokens", "output_tokens",
                                                          "output_tokens_details") if key in usage},
                },
            )
        )
        events.append(("message_stop", {"type": "message_stop"}))
        if reply.stream_error is not None:
            events = events[: max(3, len(events) // 2)]
            kind = reply.stream_error
            text = reply.message or DEFAULT_MESSAGES.get(kind, kind)
            events.append(("error", {"type": "error", "error": {"type": kind, "message": text}}))
        deltas_sent = 0
        for event, data in events:
            if event == "content_block_delta":
                if reply.stall_after is not None and deltas_sent >= reply.stall_after:
                    self._wait(None)
                    return
                if deltas_sent and reply.chunk_delay_s and not self._wait(reply.chunk_delay_s):
                    return
                deltas_sent += 1
            self._chunk(f"event: {event}\ndata: {json.dumps(data)}\n\n".encode())
        self._end_stream()


class FakeAnthropic(FakeProvider[_Reply, RecordedRequest]):
    """The fake server; `with FakeAnthropic() as fake:` serves on `fake.url` until the block ends.

    `api_key` None turns the key check off. `strict_images` (on) checks that image bytes are the
    declared media type, as the API does; `strict_schemas` (off) refuses `output_config` schemas whose
    objects lack `additionalProperties: false`.
    """

    def __init__(
        self,
        api_key: str | None = "test-key",
        models: list[FakeClaude] | None = None,
        *,
        strict_images: bool = True,
        strict_schemas: bool = False,
        max_request_bytes: int = MAX_REQUEST_BYTES,
    ) -> None:
        super().__init__(_Handler, _Reply)
        self.api_key = api_key
        self.models: list[FakeClaude] = default_models() if models is None else list(models)
        self.strict_images = strict_images
        self.strict_schemas = strict_schemas
        self.max_request_bytes = max_request_bytes
        self.responder: Responder = default_responder

    def enqueue(
        self,
        content: Content | None = None,
        *,
        status: int = 200,
        error_type: str | None = None,
        message: str | None = None,
        error_code: str | None = None,
        headers: Mapping[str, str] | None = None,
        delay_s: float = 0,
        chunk_delay_s: float = 0,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        cache_read_input_tokens: int = 0,
        cache_creation_input_tokens: int = 0,
        thinking_tokens: int = 0,
        stop_reason: str | None = None,
        raw_body: bytes | None = None,
        drop_connection: bool = False,
        hang: bool = False,
        stream_error: str | None = None,
        stall_after: int | None = None,
        as_tool: bool | str | None = None,
        blocks: list[dict[str, Any]] | None = None,
    ) -> None:
        """Queue what the next accepted `POST /v1/messages` gets.

        `content` None means "ask `responder`". In a text reply a dict or list is sent JSON-encoded; in
        a tool reply (a forced tool, or `as_tool`) a dict is the `input` and a str is parsed as JSON.
        `as_tool`: None follows `tool_choice`; True answers with a `tool_use` of the forced (or first)
        tool; a str names the tool; False answers with text even when a tool is forced.
        `blocks` sends these content blocks verbatim (mixed text and tool_use, thinking...).
        `input_tokens` / `output_tokens` set the usage reported (default: an estimate from the request,
        a token per streamed piece); `cache_read_input_tokens` / `cache_creation_input_tokens` report
        prompt-cache reads and writes beside them, as the API does (`input_tokens` then excludes them);
        `thinking_tokens` of the output's were reasoning (`usage.output_tokens_details`).
        `stop_reason` overrides the derived one (`end_turn`, `tool_use`, or `max_tokens` when the text
        has more whitespace-separated pieces than `max_tokens`, which then cuts it).

        Errors: `status` alone sends the type for that status (400 invalid_request_error ... 529
        overloaded_error) and a stock message; `error_type` alone picks its status; `error_code` adds
        `error.details.error_code`. `headers` are added to the reply (e.g. `retry-after` on a 429).
        `raw_body` is sent verbatim with `status`, as `application/json` unless `headers` sets a
        `Content-Type`. `drop_connection` closes the
        socket without answering; `hang` never answers (the client hanging up counts in `disconnects`).
        `stream_error` (an error type, e.g. "overloaded_error") cuts a stream about halfway and sends an
        `error` event; unstreamed, the API answers that failure with its status (529 for overloaded_error,
        500 for api_error) and error body. Streaming only: `stall_after=N` hangs after N content deltas;
        `chunk_delay_s` sleeps between deltas.
        """
        self._push(
            _Reply(
                content=content,
                blocks=blocks,
                status=status,
                error_type=error_type,
                message=message,
                error_code=error_code,
                headers=headers or {},
                delay_s=delay_s,
                chunk_delay_s=chunk_delay_s,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cache_read_input_tokens=cache_read_input_tokens,
                cache_creation_input_tokens=cache_creation_input_tokens,
                thinking_tokens=thinking_tokens,
                stop_reason=stop_reason,
                raw_body=raw_body,
                drop_connection=drop_connection,
                hang=hang,
                stream_error=stream_error,
                stall_after=stall_after,
                as_tool=as_tool,
            )
        )

    def find(self, model_id: str) -> FakeClaude | None:
        """The model with this id or alias."""
        return next((m for m in self.models if model_id == m.id or model_id in m.aliases), None)

    def reset(self) -> None:
        """Forget requests, queue, disconnects and errors; restore the default responder."""
        super().reset()
        self.responder = default_responder

    @property
    def message_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == "/v1/messages" and r.method == "POST"]

    # --- internals ---

    def _authenticate(self, headers: Mapping[str, str]) -> None:
        if self.api_key is None:
            return
        key = headers.get("x-api-key")
        auth = headers.get("authorization", "")
        if key is None and auth.lower().startswith("bearer "):
            key = auth[len("bearer ") :].strip()
        if not key:
            raise RequestError(401, "x-api-key header is required")
        if key != self.api_key:
            raise RequestError(401, "invalid x-api-key")

    def _validate(self, body: dict[str, Any], model: FakeClaude) -> int:
        return validate_messages_request(
            body, model, strict_images=self.strict_images, strict_schemas=self.strict_schemas
        )

    def _model_page(self, query: Mapping[str, str]) -> dict[str, Any]:
        try:
            limit = int(query.get("limit", "20"))
        except ValueError:
            raise RequestError(400, "limit: Input should be a valid integer") from None
        if not 1 <= limit <= 1000:
            raise RequestError(400, "limit: Input should be greater than or equal to 1 and less than or equal to 1000")
        ids = [m.id for m in self.models]
        after, before = query.get("after_id"), query.get("before_id")
        for cursor in (after, before):
            if cursor is not None and cursor not in ids:
                raise RequestError(400, f"Invalid cursor: {cursor}")
        if before is not None:
            end = ids.index(before)
            start = max(0, end - limit)
            has_more = start > 0
        else:
            start = ids.index(after) + 1 if after is not None else 0
            end = min(len(ids), start + limit)
            has_more = end < len(ids)
        page = self.models[start:end]
        return {
            "data": [m.info() for m in page],
            "has_more": has_more,
            "first_id": page[0].id if page else None,
            "last_id": page[-1].id if page else None,
        }
