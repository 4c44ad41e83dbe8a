"""What mcp 2.3's transports leave undone: an answer to every stdio line, and an HTTP body limit for images.

**stdio.** `mcp.server.stdio.stdio_server` parses each line with pydantic
(`jsonrpc_message_adapter.validate_json`) and, when that fails, puts the exception on the read
stream; the dispatcher (`mcp/shared/jsonrpc_dispatcher.py`, `JSONRPCDispatcher._dispatch`) logs it at
debug level and drops it. So a line that is not JSON, or is JSON pydantic refuses — a lone UTF-16
surrogate escape such as `"\\ud800"`, which Python's own `json` takes but is no Unicode character —
gets no answer, and the client waits for its own timeout (over HTTP the same body gets a 400).
`answering_read_stream` wraps the read stream `stdio_server()` yields, before the server reads it:
each such exception becomes a JSON-RPC error sent back at once, carrying the request's id when the
line can be read by Python's `json` (a parse error, -32700, for text that is not valid JSON or not
valid Unicode; an invalid request, -32600, for JSON that is no JSON-RPC message). A response of the
client's that cannot be read (to a sampling request of ours) becomes an error for that request, so
the tool waiting on it fails at once instead of at its deadline. A notification gets no answer, as
JSON-RPC says; it is logged. Everything else passes through untouched, the sender's context too.

**HTTP.** The streamable HTTP transport refuses a body over `max_request_body_size` (4 MiB by
default, `mcp/server/transport_security.py`, `RequestBodyLimitMiddleware`) with a bare 413, which
the SDK's client shows as "Server returned an error response": a base64 image over about 3 MB
could not pass, far below `images.max_bytes`. `http_body_limit` is the size an image of
`images.max_bytes` takes in a request (base64 is 4/3 of it) plus a schema of `limits.schema_max_bytes`
and room for the prompt and the JSON around them.
"""

from __future__ import annotations

import json
import logging
import math
import re
from typing import TYPE_CHECKING, Any

from mcp.shared.message import SessionMessage
from mcp_types import INVALID_REQUEST, PARSE_ERROR, ErrorData, JSONRPCError
from pydantic import ValidationError

if TYPE_CHECKING:
    from mcp_llm.config import Settings

log = logging.getLogger("mcp_llm")

LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # what remains after `json` has joined the valid pairs
_ROOM_FOR_PROMPT = 1024 * 1024  # bytes of prompt, system text and JSON around the image and the schema
SDK_BODY_LIMIT = 4 * 1024 * 1024  # mcp.server.transport_security.DEFAULT_MAX_REQUEST_BODY_SIZE


def http_body_limit(settings: Settings) -> int:
    """The request body an `analyze_image` call with an image of `images.max_bytes` needs, at least the SDK's 4 MiB."""
    image_b64 = 4 * math.ceil(settings.images.max_bytes / 3) + len("data:image/webp;base64,")
    return max(SDK_BODY_LIMIT, image_b64 + settings.limits.schema_max_bytes + _ROOM_FOR_PROMPT)


# --- stdio ---------------------------------------------------------------------------------------


class AnsweringReadStream:
    """The read stream `stdio_server()` yields, with every unreadable line answered (module doc)."""

    def __init__(self, inner: Any, write_stream: Any) -> None:
        self._inner = inner
        self._write = write_stream
        self.last_context = None  # the sender's context of the last item, as the SDK's stream keeps it

    async def receive(self) -> SessionMessage:
        while True:
            item = await self._inner.receive()
            self.last_context = getattr(self._inner, "last_context", None)
            if not isinstance(item, Exception):
                return item
            to_client, to_us = answer_unreadable(item)
            if to_us is not None:
                return SessionMessage(to_us)
            if to_client is not None:
                await self._write.send(SessionMessage(to_client))

    def __aiter__(self) -> AnsweringReadStream:
        return self

    async def __anext__(self) -> SessionMessage:
        import anyio

        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def __aenter__(self) -> AnsweringReadStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def answer_unreadable(exc: Exception) -> tuple[JSONRPCError | None, JSONRPCError | None]:
    """For a line the SDK could not read: (the error to send the client, the error to hand our own
    dispatcher in place of the client's unreadable response); either or both None."""
    line, parsed = _recover(exc)
    if not isinstance(parsed, dict):
        reason = _reason(exc, line, parsed)
        log.info("stdio: a message could not be read: %s", reason)
        return _error(None, PARSE_ERROR if parsed is None else INVALID_REQUEST, reason), None
    request_id = parsed.get("id")
    if not isinstance(request_id, int | str) or isinstance(request_id, bool):
        request_id = None
    reason = _reason(exc, line, parsed)
    code = PARSE_ERROR if line is not None else INVALID_REQUEST
    if "method" in parsed:
        if request_id is None:
            log.warning("stdio: a notification (%s) could not be read and is dropped: %s",
                        str(parsed.get("method"))[:80], reason)
            return None, None
        log.info("stdio: request %r could not be read: %s", request_id, reason)
        return _error(request_id, code, reason), None
    if request_id is not None and ("result" in parsed or "error" in parsed):
        log.warning("stdio: the client's response to request %r could not be read: %s", request_id, reason)
        return None, _error(request_id, code, f"The client's response could not be read. {reason}")
    return _error(request_id, INVALID_REQUEST, reason), None


def _recover(exc: Exception) -> tuple[str | None, Any]:
    """The line the SDK failed on (None if it is not in the error) and what Python's `json` reads
    of it (None if not even that): the id is in there."""
    if not isinstance(exc, ValidationError):
        return None, None
    errors = exc.errors(include_url=False)
    source = errors[0].get("input") if errors else None
    if errors and errors[0].get("type") != "json_invalid":
        # JSON that is no JSON-RPC message: the SDK parsed it, and an error for a missing field (a
        # response's `result`, say) carries the whole object; a list or a number stays what it is.
        whole = [e["input"] for e in errors if isinstance(e.get("input"), dict) and len(e.get("loc", ())) <= 2]
        return None, whole[0] if whole and errors[0].get("loc", ())[1:] else source
    if not isinstance(source, str):
        return None, None
    try:
        return source, json.loads(source)
    except (ValueError, RecursionError):
        return source, None


def _reason(exc: Exception, line: str | None, parsed: Any) -> str:
    if not isinstance(exc, ValidationError):
        return f"Parse error: the message could not be read ({type(exc).__name__})."
    if line is not None and parsed is not None and _holds_lone_surrogate(parsed):
        return ("Parse error: the message holds a lone UTF-16 surrogate escape (such as \\ud800), which is "
                "not a Unicode character. Send valid Unicode text: a character itself, or a surrogate pair.")
    if line is not None and parsed is None:
        detail = exc.errors(include_url=False)[0].get("msg", "")
        return f"Parse error: the message is not valid JSON ({str(detail)[:200]})."
    detail = "; ".join(f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg', '')}"
                       for e in exc.errors(include_url=False)[:3])
    return f"Invalid request: not a JSON-RPC 2.0 message ({detail[:300]})."


def _holds_lone_surrogate(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if LONE_SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _error(request_id: int | str | None, code: int, message: str) -> JSONRPCError:
    return JSONRPCError(jsonrpc="2.0", id=request_id, error=ErrorData(code=code, message=message))
