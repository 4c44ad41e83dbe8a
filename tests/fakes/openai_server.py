"""A fake OpenAI Chat Completions API on loopback, written from OpenAI's API reference and the SDK's source.

Tests drive it through the real `openai` SDK (`AsyncOpenAI(base_url=fake.url + "/v1", max_retries=0)`),
so the adapter's request shaping, SSE parsing and error mapping are exercised on the wire. Steered
like the other fakes: `enqueue()` queues what the next accepted `POST /v1/chat/completions` gets (a
reply, an HTTP error in OpenAI's shape, malformed bytes, a dropped or hanging connection, an error
event mid-stream, a stall, a cut at `max_tokens`); with nothing queued, `responder` answers (by
default a minimal instance of the `response_format` schema, `{}` in JSON mode, else prose).

Requests the real API refuses (no or wrong key, unknown model, no messages, a `response_format`
type listed in `refuse_formats`, as LM Studio refuses json_object and old vLLM json_schema) are
answered as a server does and do not consume the queue.
"""

from __future__ import annotations

import http
import json
import re
import secrets
import string
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tests.fakes._http import Content, FakeHandler, FakeProvider, Reply
from tests.fakes.ollama_server import schema_instance

Responder = Callable[[dict[str, Any]], Content]

_SSE = "text/event-stream; charset=utf-8"
_ALNUM = string.ascii_letters + string.digits
ERROR_TYPES: dict[int, str] = {400: "invalid_request_error", 401: "invalid_request_error", 403: "permission_error",
                               404: "invalid_request_error", 429: "rate_limit_error", 500: "server_error",
                               503: "server_error"}
ERROR_CODES: dict[int, str | None] = {401: "invalid_api_key", 404: "model_not_found", 429: "rate_limit_exceeded"}


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    json: Any


@dataclass(frozen=True)
class _Reply(Reply):
    """A chat completion reply; an error status without a message gets a stock one."""

    message: str | None = None
    error_type: str | None = None
    finish_reason: str | None = None
    prompt_tokens: int | str | None = None  # MOST: every byte of the prompt a token
    completion_tokens: int | str | None = None  # MOST: the request's whole max_tokens (if it has one)
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    stall_after: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.status != 200 and self.message is None:
            self._set("message", http.HTTPStatus(self.status).phrase)


class RequestError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param


def response_schema(body: Mapping[str, Any]) -> Any:
    """The schema of `response_format` json_schema, if any."""
    fmt = body.get("response_format")
    if isinstance(fmt, Mapping) and fmt.get("type") == "json_schema":
        return (fmt.get("json_schema") or {}).get("schema")
    return None


MOST = "most"  # `enqueue(prompt_tokens=MOST, completion_tokens=MOST)`: the most a provider could bill


def most_prompt_tokens(body: Mapping[str, Any]) -> int:
    """The most tokens any tokenizer counts for the request's prompt: one per UTF-8 byte of every message's
    text and of the schema (a token is at least a byte)."""
    total = 0
    for message in body.get("messages") or []:
        content = message.get("content")
        parts = content if isinstance(content, list) else [{"text": content or ""}]
        total += sum(len(str(part.get("text", "")).encode("utf-8", "surrogatepass")) for part in parts)
    schema = response_schema(body)
    return total + (len(json.dumps(schema, ensure_ascii=False).encode()) if schema is not None else 0)


def default_responder(body: dict[str, Any]) -> Content:
    schema = response_schema(body)
    if schema is not None:
        return json.dumps(schema_instance(schema))
    fmt = body.get("response_format")
    if isinstance(fmt, Mapping) and fmt.get("type") == "json_object":
        return "{}"
    return f"This is a fake reply from {body.get('model')}."


class _Handler(FakeHandler["FakeOpenAI"]):
    label = "fake openai"

    def _error(self, status: int, message: str, error_type: str | None = None, code: str | None = None,
               param: str | None = None, headers: Mapping[str, str] | None = None) -> None:
        error = {"message": message, "type": error_type or ERROR_TYPES.get(status, "server_error"),
                 "param": param, "code": code if code is not None else ERROR_CODES.get(status)}
        self._json(status, {"error": error}, headers)

    def _refused(self, exc: Exception) -> bool:
        if not isinstance(exc, RequestError):
            return False
        self._error(exc.status, exc.message, code=exc.code, param=exc.param)
        return True

    def _dispatch(self) -> None:
        path, _, headers = self._target()
        raw, body = self._read_json()
        self.server.fake._record(RecordedRequest(self.command, path, headers, body))
        self._serve(lambda: self._route(path, headers, raw, body))

    def _route(self, path: str, headers: dict[str, str], raw: bytes, body: Any) -> None:
        fake = self.server.fake
        fake._authenticate(headers)
        if path == "/v1/models" and self.command == "GET":
            data = [{"id": m, "object": "model", "created": 1_700_000_000, "owned_by": "fake"} for m in fake.models]
            self._json(200, {"object": "list", "data": data})
            return
        if path != "/v1/chat/completions" or self.command != "POST":
            raise RequestError(404, f"Invalid URL ({self.command} {path})")
        if not isinstance(body, dict):
            raise RequestError(400, "We could not parse the JSON body of your request.")
        if body.get("model") not in fake.models:
            raise RequestError(404, f"The model `{body.get('model')}` does not exist or you do not have access to it.")
        if not body.get("messages"):
            raise RequestError(400, "[] is too short - 'messages'", param="messages")
        fmt = body.get("response_format")
        if isinstance(fmt, Mapping) and fmt.get("type") in fake.refuse_formats:
            raise RequestError(400, f"'response_format.type' {fmt.get('type')!r} is not supported by this server",
                               param="response_format")
        self._chat(body)

    def _chat(self, body: dict[str, Any]) -> None:
        fake = self.server.fake
        reply = fake._reply_for(body)
        if not self._begin(reply):
            return
        if reply.raw_body is not None:
            self._send(reply.status, reply.raw_body, headers=reply.headers)
            return
        if reply.status != 200:
            self._error(reply.status, reply.message or "", reply.error_type, headers=reply.headers)
            return
        content = fake.responder(body) if reply.content is None else reply.content
        text = content if isinstance(content, str) else json.dumps(content)
        units = re.findall(r".{1,6}", text, re.S)  # about a token each
        limit = body.get("max_tokens") or body.get("max_completion_tokens")
        finish = reply.finish_reason or "stop"
        if reply.finish_reason is None and isinstance(limit, int) and len(units) > limit:
            units, finish = units[:limit], "length"
        prompt_tokens = reply.prompt_tokens if reply.prompt_tokens is not None else len(json.dumps(body)) // 4
        if prompt_tokens == MOST:
            prompt_tokens = most_prompt_tokens(body)
        completion_tokens = reply.completion_tokens if reply.completion_tokens is not None else len(units)
        if completion_tokens == MOST:  # the whole limit (thinking unseen, say); without one, the answer's own
            completion_tokens = limit if isinstance(limit, int) else len(units)
        if isinstance(limit, int):  # the API never reports (nor bills) more output than the request allowed
            completion_tokens = min(completion_tokens, limit)
        # As OpenAI reports it: cached prompt tokens are among `prompt_tokens`, reasoning tokens among
        # `completion_tokens` (billed as output), each broken out in its `*_details`.
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                 "total_tokens": prompt_tokens + completion_tokens,
                 "prompt_tokens_details": {"cached_tokens": reply.cached_tokens, "audio_tokens": 0},
                 "completion_tokens_details": {"reasoning_tokens": reply.reasoning_tokens, "audio_tokens": 0,
                                               "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}
        base = {"id": "chatcmpl-" + "".join(secrets.choice(_ALNUM) for _ in range(24)), "created": int(time.time()),
                "model": body["model"], "system_fingerprint": "fp_fake"}
        if body.get("stream") is not True:
            if reply.stream_error is not None:  # unstreamed, the failure is the whole answer: an error status
                self._error(500, reply.message or reply.stream_error, reply.stream_error, headers=reply.headers)
                return
            message = {"role": "assistant", "content": "".join(units), "refusal": None}
            self._json(200, {**base, "object": "chat.completion", "usage": usage,
                             "choices": [{"index": 0, "message": message, "finish_reason": finish,
                                          "logprobs": None}]}, reply.headers)
            return
        self._start_stream(_SSE, {"Cache-Control": "no-cache", **reply.headers})

        def event(delta: dict[str, Any], finish_reason: str | None = None, **extra: Any) -> None:
            chunk = {**base, "object": "chat.completion.chunk",
                     "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
                     **extra}
            self._chunk(f"data: {json.dumps(chunk)}\n\n".encode())

        event({"role": "assistant", "content": ""})
        for index, unit in enumerate(units):
            if reply.stream_error is not None and index >= len(units) // 2:
                error = {"message": reply.message or reply.stream_error, "type": reply.stream_error}
                self._chunk(f"data: {json.dumps({'error': error})}\n\n".encode())
                self._end_stream()
                return
            if reply.stall_after is not None and index >= reply.stall_after:
                self._wait(None)
                return
            if index and reply.chunk_delay_s and not self._wait(reply.chunk_delay_s):
                return
            event({"content": unit})
        event({}, finish)
        if (body.get("stream_options") or {}).get("include_usage"):
            last = {**base, "object": "chat.completion.chunk", "choices": [], "usage": usage}
            self._chunk(f"data: {json.dumps(last)}\n\n".encode())
        self._chunk(b"data: [DONE]\n\n")
        self._end_stream()


class FakeOpenAI(FakeProvider[_Reply, RecordedRequest]):
    """`with FakeOpenAI() as fake:` serves the API under `fake.url + "/v1"`. `api_key` None: no key check."""

    def __init__(self, api_key: str | None = "test-key", models: list[str] | None = None,
                 refuse_formats: tuple[str, ...] = (), *, bind: tuple[str, int] = ("127.0.0.1", 0)) -> None:
        super().__init__(_Handler, _Reply, bind=bind)
        self.api_key = api_key
        self.models = list(models or ["gpt-4.1-mini", "text-embedding-3-small", "local-model"])
        self.refuse_formats = refuse_formats
        self.responder: Responder = default_responder

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def enqueue(self, content: Content | None = None, *, status: int = 200, message: str | None = None,
                error_type: str | None = None, headers: Mapping[str, str] | None = None, delay_s: float = 0,
                chunk_delay_s: float = 0, finish_reason: str | None = None, prompt_tokens: int | str | None = None,
                completion_tokens: int | str | None = None, cached_tokens: int = 0, reasoning_tokens: int = 0,
                raw_body: bytes | None = None, drop_connection: bool = False,
                hang: bool = False, stream_error: str | None = None, stall_after: int | None = None) -> None:
        """Queue what the next accepted chat completion gets.

        `content` None asks `responder`; a dict or list is sent JSON-encoded. The text is cut at the
        request's `max_tokens` (6 characters a token) with finish_reason `length`, unless
        `finish_reason` is given. `status` != 200 answers `{"error": {message, type, param, code}}`;
        `headers` are added (e.g. `retry-after`). `raw_body` is sent verbatim. `drop_connection`
        closes the socket unanswered; `hang` never answers. `stream_error` (unstreamed: a 500 with it; an error
        type) sends an error event halfway; `stall_after=N` hangs after N content chunks;
        `chunk_delay_s` sleeps between chunks. `prompt_tokens` / `completion_tokens` set the usage
        reported (default: about a token per 4 characters of the request, per 6 of the answer);
        `cached_tokens` of the prompt's were read from OpenAI's prompt cache and `reasoning_tokens` of
        the completion's were thinking, as `usage.*_details` report them. `MOST` reports the most a
        provider could bill: every byte of the prompt a token, the whole `max_tokens` answered.
        """
        self._push(_Reply(content=content, status=status, message=message, error_type=error_type,
                          headers=headers or {}, delay_s=delay_s, chunk_delay_s=chunk_delay_s,
                          finish_reason=finish_reason, prompt_tokens=prompt_tokens,
                          completion_tokens=completion_tokens, cached_tokens=cached_tokens,
                          reasoning_tokens=reasoning_tokens, raw_body=raw_body, drop_connection=drop_connection,
                          hang=hang, stream_error=stream_error, stall_after=stall_after))

    def reset(self) -> None:
        super().reset()
        self.responder = default_responder

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == "/v1/chat/completions"]

    def _authenticate(self, headers: Mapping[str, str]) -> None:
        if self.api_key is None:
            return
        auth = headers.get("authorization", "")
        if not auth.lower().startswith("bearer "):
            raise RequestError(401, "You didn't provide an API key.", code=None)
        if auth[len("bearer "):].strip() != self.api_key:
            raise RequestError(401, "Incorrect API key provided.", code="invalid_api_key")
