"""A fake Ollama server on loopback, written from Ollama's REST API docs (docs/api.md).

Tests drive it through the real `ollama` SDK, so the adapter's request shaping, response
parsing and error mapping are exercised on the wire instead of by patching. A test steers it
per request with `enqueue()` (a reply, an HTTP error, malformed bytes, a dropped or hanging
connection, an error line mid-stream), like simonw/llm's `MockModel.enqueue`; with nothing
queued, `responder` answers (by default a minimal instance of the requested JSON schema).

Models are loaded as Ollama loads them: a chat loads its model (taking `load_s` first when it was not
loaded, as a real load takes tens of seconds), keeps it for the request's `keep_alive` (5 minutes by
default, `0` unloads it after the answer, a negative one keeps it for good), and at most `max_loaded`
at once (the least recently used goes first). `/api/ps` lists what is loaded now with its
`expires_at` and `size_vram` (a model's `vram`, less than its size when part of it sits in RAM).
`load()` and `unload()` set it from a test.

Only the stdlib; the server machinery, which the other fakes share, is in `_http`.
"""

from __future__ import annotations

import base64
import hashlib
import http
import json
import math
import re
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tests.fakes._http import FakeHandler, FakeProvider, Reply
from tests.fakes._images import OLLAMA, image_problem

Responder = Callable[[dict[str, Any]], str]


def _timestamp(offset_s: float = 0) -> str:
    """Go's RFC3339Nano in UTC, as Ollama writes it (nine fractional digits, then Z)."""
    ns = time.time_ns() + int(offset_s * 1e9)
    secs, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:09d}Z"


def _normalize(name: str) -> str:
    """Ollama resolves a bare name to its `:latest` tag, so `llava` finds `llava:latest`."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


DEFAULT_KEEP_ALIVE_S = 300.0  # Ollama's OLLAMA_KEEP_ALIVE default: 5m
FOREVER_S = 292 * 365 * 86_400.0  # a negative keep_alive: Go's longest time.Duration (~292 years), as Ollama sets
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def keep_alive_s(value: Any) -> float | None:
    """A request's `keep_alive` as Ollama reads it: a number of seconds or a Go duration ("5m", "1h30m");
    negative means for good (FOREVER_S); absent or unreadable, the default. None for a malformed one."""
    if value is None:
        return DEFAULT_KEEP_ALIVE_S
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            body = text.removeprefix("-")
            parts = _DURATION.findall(body)
            if not parts or "".join(n + u for n, u in parts) != body:
                return None
            seconds = sum(float(n) * _UNIT_S[u] for n, u in parts) * (-1 if text.startswith("-") else 1)
    else:
        return None
    return FOREVER_S if seconds < 0 else seconds


@dataclass(frozen=True)
class FakeModel:
    """One installed model; `vision` adds the capability that `/api/show` reports and chat checks."""

    name: str
    vision: bool = False
    family: str = "llama"
    parameter_size: str = "3.2B"
    quantization_level: str = "Q4_K_M"
    size: int = 2_019_393_189
    context_length: int = 131_072
    extra_capabilities: tuple[str, ...] = ()
    modified_at: str = "2025-09-30T10:00:00.123456789Z"
    vram: int | None = None  # bytes of it in GPU memory once loaded; None: all of it (`size`)

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.name.encode()).hexdigest()

    @property
    def capabilities(self) -> list[str]:
        return ["completion", *(["vision"] if self.vision else []), *self.extra_capabilities]

    def details(self) -> dict[str, Any]:
        return {
            "parent_model": "",
            "format": "gguf",
            "family": self.family,
            "families": [self.family, *(["clip"] if self.vision else [])],
            "parameter_size": self.parameter_size,
            "quantization_level": self.quantization_level,
        }

    def tag(self) -> dict[str, Any]:
        """The model's entry in `GET /api/tags`."""
        return {
            "name": self.name,
            "model": self.name,
            "modified_at": self.modified_at,
            "size": self.size,
            "digest": self.digest,
            "details": self.details(),
        }


def default_models() -> list[FakeModel]:
    """A text model and a vision model, so routing by capability can be tested out of the box."""
    return [
        FakeModel("llama3.2:3b"),
        FakeModel("llava:7b", vision=True, parameter_size="7B", quantization_level="Q4_0", size=4_733_363_377),
    ]


@dataclass(frozen=True)
class RecordedRequest:
    """What reached the server, so a test can assert the exact JSON the SDK sent."""

    method: str
    path: str
    headers: dict[str, str]
    json: Any
    body: bytes = b""


@dataclass(frozen=True)
class _Reply(Reply):
    """A chat reply; as `enqueue()` says, an error alone is a 500 and a status alone sends its reason phrase."""

    error: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    done_reason: str = "stop"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.error is not None and self.status == 200:
            self._set("status", 500)
        if self.status != 200 and self.error is None:
            self._set("error", http.HTTPStatus(self.status).phrase)


# --- a minimal instance of a JSON schema ---------------------------------------------------------

_FORMATS = {
    "date-time": "2025-01-01T00:00:00Z",
    "date": "2025-01-01",
    "time": "00:00:00Z",
    "email": "user@example.com",
    "uri": "https://example.com/",
    "url": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "ipv4": "127.0.0.1",
}


def _resolve(ref: str, root: Any) -> Any:
    if not ref.startswith("#"):
        raise ValueError(f"only local $ref is supported, got {ref!r}")
    node = root
    for part in filter(None, ref[1:].split("/")):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _number(schema: Mapping[str, Any], integer: bool) -> int | float:
    lo, hi = schema.get("minimum"), schema.get("maximum")
    ex_lo, ex_hi = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    step = 1 if integer else 0.5
    if ex_lo is not None:
        lo = max(lo, ex_lo + step) if lo is not None else ex_lo + step
    if ex_hi is not None:
        hi = min(hi, ex_hi - step) if hi is not None else ex_hi - step
    value: float = 0
    if lo is not None:
        value = max(value, lo)
    if hi is not None:
        value = min(value, hi)
    if ex_lo is not None and ex_hi is not None and not integer:
        value = (ex_lo + ex_hi) / 2
    if (multiple := schema.get("multipleOf")) is not None:
        value = math.ceil(value / multiple) * multiple
    return math.ceil(value) if integer else float(value)


def schema_instance(schema: Any, root: Any = None, _depth: int = 0) -> Any:
    """Build a small value that validates against `schema`, as a grammar-constrained model would.

    Covers what structured-output schemas use: types, enum/const, anyOf/oneOf (first branch),
    allOf (merged), local $ref, required properties, minItems/prefixItems, string lengths and
    formats, numeric bounds. `pattern` and `uniqueItems` are not honoured.
    """
    root = schema if root is None else root
    if _depth > 64:
        raise ValueError("schema nests too deep (a required recursive $ref?)")
    if not isinstance(schema, Mapping):
        return None
    if "$ref" in schema:
        return schema_instance(_resolve(schema["$ref"], root), root, _depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    if "allOf" in schema:
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        for sub in schema["allOf"]:
            sub = _resolve(sub["$ref"], root) if "$ref" in sub else sub
            for key, value in sub.items():
                if key == "properties":
                    merged["properties"] = {**merged.get("properties", {}), **value}
                elif key == "required":
                    merged["required"] = [*merged.get("required", []), *value]
                else:
                    merged.setdefault(key, value)
        return schema_instance(merged, root, _depth + 1)
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            return schema_instance(schema[key][0], root, _depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((t for t in kind if t != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "null"
    if kind == "object":
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        return {
            name: schema_instance(props.get(name, extra if isinstance(extra, Mapping) else {}), root, _depth + 1)
            for name in schema.get("required", [])
        }
    if kind == "array":
        prefix = list(schema.get("prefixItems", []))
        count = max(schema.get("minItems", 0), 0)
        items = [schema_instance(s, root, _depth + 1) for s in prefix[:count]]
        items += [schema_instance(schema.get("items", {}), root, _depth + 1) for _ in range(count - len(items))]
        return items
    if kind == "string":
        text = _FORMATS.get(schema.get("format", ""), "fake")
        text = text[: schema.get("maxLength", len(text))]
        return text + "x" * max(schema.get("minLength", 0) - len(text), 0)
    if kind in ("number", "integer"):
        return _number(schema, kind == "integer")
    if kind == "boolean":
        return False
    return None


def default_responder(body: dict[str, Any]) -> str:
    """What a well-behaved model returns: schema-valid JSON, `{}` for plain JSON mode, else prose."""
    fmt = body.get("format")
    if isinstance(fmt, Mapping):
        return json.dumps(schema_instance(fmt))
    if fmt == "json":
        return "{}"
    return f"This is a fake reply from {body.get('model')}."


# --- the server ------------------------------------------------------------------------------------


class _Handler(FakeHandler["FakeOllama"]):
    label = "fake ollama"
    json_type = "application/json; charset=utf-8"

    def do_HEAD(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        raw, body = self._read_json()
        path, _query, headers = self._target()
        self.server.fake._record(RecordedRequest(self.command, path, headers, body, raw))
        self._serve(lambda: self._route(path, raw, body))

    def _route(self, path: str, raw: bytes, body: Any) -> None:
        route = _ROUTES.get((self.command, path))
        if route is None:
            self._error(404, "404 page not found")
        elif self.command == "POST" and not isinstance(body, dict):
            self._error(400, "missing request body" if not raw else "invalid JSON request body")
        else:
            route(self, body or {})

    def _error(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        self._json(status, {"error": message}, headers)

    # --- routes ---

    def _root(self, _body: dict[str, Any]) -> None:
        self._send(200, b"Ollama is running", "text/plain; charset=utf-8")

    def _version(self, _body: dict[str, Any]) -> None:
        self._json(200, {"version": self.server.fake.version})

    def _tags(self, _body: dict[str, Any]) -> None:
        self._json(200, {"models": [m.tag() for m in self.server.fake.models]})

    def _ps(self, _body: dict[str, Any]) -> None:
        fake = self.server.fake
        now = time.time()
        rows = []
        for name, expires in fake.running().items():
            model = fake.find(name)
            if model is None:
                continue
            rows.append({**model.tag(), "expires_at": _timestamp(expires - now),
                         "size_vram": model.size if model.vram is None else model.vram, "context_length": 4096})
        self._json(200, {"models": rows})

    def _show(self, body: dict[str, Any]) -> None:
        name = body.get("model") or body.get("name") or ""
        model = self.server.fake.find(name)
        if model is None:
            self._error(404, f"model '{name}' not found")
            return
        self._json(
            200,
            {
                "license": "",
                "modelfile": f'# Modelfile generated by "ollama show"\nFROM {model.name}\n',
                "parameters": 'stop                           "<|eot_id|>"',
                "template": "{{ .Prompt }}",
                "details": model.details(),
                "model_info": {
                    "general.architecture": model.family,
                    "general.parameter_count": 3_212_749_888,
                    f"{model.family}.context_length": model.context_length,
                },
                "capabilities": model.capabilities,
                "modified_at": model.modified_at,
            },
        )

    def _chat(self, body: dict[str, Any]) -> None:
        fake = self.server.fake
        started = time.monotonic_ns()
        name = body.get("model") or ""
        messages = body.get("messages") or []
        if not name:
            self._error(400, "model is required")
            return
        model = fake.find(name)
        if model is None:
            self._error(404, f'model "{name}" not found, try pulling it first')
            return
        if not model.vision and any(m.get("images") for m in messages):
            self._error(500, "this model is missing data required for image input")
            return
        for image in (i for m in messages for i in m.get("images") or []):
            problem = image_problem(base64.b64decode(image), OLLAMA)
            if problem:
                self._error(400, f"invalid image input: {problem}")
                return
        keep = keep_alive_s(body.get("keep_alive"))
        if keep is None:
            self._error(400, f"time: invalid duration {json.dumps(body.get('keep_alive'))}")
            return
        loading = model.name not in fake.running()
        if loading:
            fake.note_load(model.name)
        if loading and fake.load_s and not self._wait(fake.load_s):
            return
        fake._use(model.name, keep)
        if not messages:  # Ollama's way to preload a model
            self._json(
                200,
                {
                    "model": name,
                    "created_at": _timestamp(),
                    "message": {"role": "assistant", "content": ""},
                    "done_reason": "load",
                    "done": True,
                },
            )
            return
        reply = fake._reply_for(body)
        if not self._begin(reply):
            return
        if reply.raw_body is not None:
            self._send(200, reply.raw_body, headers=reply.headers)
            return
        if reply.status != 200:
            self._error(reply.status, reply.error or "", reply.headers)
            return
        content = fake.responder(body) if reply.content is None else reply.content
        text = content if isinstance(content, str) else json.dumps(content)
        chunks = re.findall(r"\S+\s*|\s+", text)
        prompt_chars = sum(len(str(m.get("content") or "")) for m in messages)
        prompt_tokens = reply.prompt_tokens if reply.prompt_tokens is not None else max(1, prompt_chars // 4)
        completion_tokens = reply.completion_tokens if reply.completion_tokens is not None else len(chunks)

        def head() -> dict[str, Any]:
            return {"model": name, "created_at": _timestamp()}

        def final(message_content: str) -> dict[str, Any]:
            load = int(fake.load_s * 1e9) if loading else 1_000_000
            prompt_ns, eval_ns = prompt_tokens * 100_000, completion_tokens * 1_000_000
            total = max(time.monotonic_ns() - started, load + prompt_ns + eval_ns)
            return {
                **head(),
                "message": {"role": "assistant", "content": message_content},
                "done_reason": reply.done_reason,
                "done": True,
                "total_duration": total,
                "load_duration": load,
                "prompt_eval_count": prompt_tokens,
                "prompt_eval_duration": prompt_ns,
                "eval_count": completion_tokens,
                "eval_duration": eval_ns,
            }

        if body.get("stream", True) is False:  # Ollama streams unless told not to
            if reply.stream_error is not None:  # unstreamed, a runner that fails answers with the error alone
                self._error(500, reply.stream_error, reply.headers)
                return
            self._json(200, final(text), reply.headers)
            return
        self._start_stream("application/x-ndjson", reply.headers)
        if reply.stream_error is not None:
            chunks = chunks[: max(1, len(chunks) // 2)]
        for i, chunk in enumerate(chunks):
            if i and reply.chunk_delay_s and not self._wait(reply.chunk_delay_s):
                return
            self._line({**head(), "message": {"role": "assistant", "content": chunk}, "done": False})
        self._line({"error": reply.stream_error} if reply.stream_error is not None else final(""))
        self._end_stream()

    def _line(self, payload: dict[str, Any]) -> None:
        self._chunk(json.dumps(payload).encode() + b"\n")


_ROUTES: dict[tuple[str, str], Callable[[_Handler, dict[str, Any]], None]] = {
    ("GET", "/"): _Handler._root,
    ("HEAD", "/"): _Handler._root,
    ("GET", "/api/version"): _Handler._version,
    ("GET", "/api/tags"): _Handler._tags,
    ("GET", "/api/ps"): _Handler._ps,
    ("POST", "/api/show"): _Handler._show,
    ("POST", "/api/chat"): _Handler._chat,
}


class FakeOllama(FakeProvider[_Reply, RecordedRequest]):
    """The fake server; `with FakeOllama() as fake:` serves on `fake.url` until the block ends.

    Requests a real server would refuse (no model, unknown model, images for a text model) are
    answered as Ollama does and do not consume the queue; every other `/api/chat` call takes the
    next enqueued reply, or asks `responder` when the queue is empty (`picker`, if set, comes first).
    """

    def __init__(self, models: list[FakeModel] | None = None, version: str = "0.12.3", *, load_s: float = 0.0,
                 max_loaded: int | None = None, bind: tuple[str, int] = ("127.0.0.1", 0)) -> None:
        super().__init__(_Handler, _Reply, bind=bind)
        self.models: list[FakeModel] = default_models() if models is None else list(models)
        self.version = version
        self.responder: Responder = default_responder
        self.load_s = load_s  # how long a chat takes to load a model that is not loaded
        self.max_loaded = max_loaded  # at most this many loaded at once (None: no limit)
        self._loaded: dict[str, float] = {}  # model name → when it unloads (time.time()), least recently used first
        self.loads: Counter[str] = Counter()  # the loads chats caused (each taking `load_s`), per model

    def enqueue(
        self,
        content: str | dict[str, Any] | list[Any] | None = None,
        *,
        status: int = 200,
        error: str | None = None,
        headers: Mapping[str, str] | None = None,
        delay_s: float = 0,
        chunk_delay_s: float = 0,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        done_reason: str = "stop",
        raw_body: bytes | None = None,
        drop_connection: bool = False,
        hang: bool = False,
        stream_error: str | None = None,
    ) -> None:
        """Queue what the next accepted `/api/chat` call gets.

        `content` None means "ask `responder`"; a dict or list is sent JSON-encoded. `error` without
        a `status` means 500; a `status` without `error` sends its reason phrase. `headers` are
        added to the reply (e.g. `Retry-After` on a 429). `raw_body` is sent verbatim with 200.
        `hang` never answers; the client hanging up is counted in `disconnects`. `stream_error`
        cuts a streamed reply in half and ends it with an `{"error": ...}` line (an unstreamed one is
        a 500 with that error, as Ollama answers when its runner fails).
        """
        self._push(
            _Reply(
                content=content,
                status=status,
                error=error,
                headers=headers or {},
                delay_s=delay_s,
                chunk_delay_s=chunk_delay_s,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                done_reason=done_reason,
                raw_body=raw_body,
                drop_connection=drop_connection,
                hang=hang,
                stream_error=stream_error,
            )
        )

    def find(self, name: str) -> FakeModel | None:
        wanted = _normalize(name)
        return next((m for m in self.models if _normalize(m.name) == wanted), None)

    # --- loaded models (what /api/ps shows) ---

    def running(self) -> dict[str, float]:
        """The models loaded now, each with when it unloads (time.time()); expired ones are dropped."""
        now = time.time()
        with self._lock:
            for name in [n for n, until in self._loaded.items() if until <= now]:
                del self._loaded[name]
            return dict(self._loaded)

    @property
    def loaded(self) -> set[str]:
        """The names of the models loaded now."""
        return set(self.running())

    def load(self, name: str, keep_alive_s: float = DEFAULT_KEEP_ALIVE_S) -> None:
        """Load a model as a chat with that `keep_alive` would (a negative one: for good), without the wait."""
        model = self.find(name)
        if model is None:
            raise KeyError(name)
        self._use(model.name, FOREVER_S if keep_alive_s < 0 else keep_alive_s)

    def unload(self, name: str | None = None) -> None:
        """Unload one model (None: all), as `keep_alive: 0` or `ollama stop` does."""
        with self._lock:
            if name is None:
                self._loaded.clear()
            else:
                model = self.find(name)
                self._loaded.pop(model.name if model else name, None)

    def note_load(self, name: str) -> None:
        with self._lock:
            self.loads[name] += 1

    def _use(self, name: str, keep_s: float) -> None:
        with self._lock:
            self._loaded.pop(name, None)
            if keep_s <= 0:  # keep_alive 0: loaded for this answer only
                return
            self._loaded[name] = time.time() + keep_s
            while self.max_loaded is not None and len(self._loaded) > self.max_loaded:
                del self._loaded[next(iter(self._loaded))]  # the least recently used

    def reset(self) -> None:
        """Forget requests, queue, disconnects, loaded models and errors; restore the default responder."""
        super().reset()
        self.unload()
        self.loads.clear()
        self.responder = default_responder

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == "/api/chat"]
