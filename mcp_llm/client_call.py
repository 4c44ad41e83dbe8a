"""One tool call's handle on the MCP client that made it: sampling, roots, and the state between rounds.

The client is reached through the tool call itself, never a global: the MCP wiring (`server.py`)
builds one `ClientCall` per call from its MCP `Context`; the tool service hands it to the router,
which puts it on each adapter `Request` (the sampling adapter, `adapters/sampling.py`, speaks
through it) and to image loading (the client's declared roots). The command line has no client:
its calls carry none, and every question this handle answers says why.

The two protocol generations reach the client differently (SDK-FACTS.md):

- 2025-11-25: a request is sent mid-call over the session's back-channel, and awaited.
- 2026-07-28: the tool answers with an `InputRequiredResult` holding the request, and the client
  calls it again with the answer in `input_responses`. The router is then run again from where it
  stopped (`resume`, `checkpoint`): the models already done with are skipped (their errors and
  attempts ride along in `request_state`), and the client's earlier answers to this model are
  replayed in order, each checked against a digest of the exact request it answered, so re-asks
  work as on any provider.

`request_state` comes back from the client, so it is untrusted: the SDK seals it (AES-GCM, bound to
the tool and its arguments, with an expiry) and we sign it again with a key made at start-up, then
check its shape. Only an answer to the request we recorded as asked is ever accepted.

All of this is one concern, and it sits below the adapters and the router: it imports only the
errors, the trace records and the MCP types, never the router or the tools.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import unquote, urlsplit

import anyio
from mcp_types import (
    CreateMessageRequest,
    CreateMessageRequestParams,
    CreateMessageResult,
    InputRequiredResult,
    ListRootsRequest,
    ListRootsResult,
    TextContent,
)
from pydantic import BaseModel, ConfigDict, ValidationError

from mcp_llm.errors import (
    BadRequestError,
    InputError,
    LLMError,
    OutputError,
    ProviderError,
    ProviderNotReady,
    SamplingDeclined,
)
from mcp_llm.trace import Attempt, Usage
from mcp_llm.words import words

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from mcp.server.mcpserver import Context

log = logging.getLogger("mcp_llm")

PROVIDER = "client"  # the provider name of the client's own model (ids `client`, `client/<hint>`)
INPUT_REQUIRED_VERSION = "2026-07-28"
MAX_REPLY_CHARS = 500_000  # a longer answer is refused, in both protocol generations (`_check_size`)
MAX_STATE_CHARS = 4_000_000
STATE_VERSION = 1
ROOTS_TIMEOUT_S = 5.0
NO_CLIENT = "Sampling needs an MCP client; there is none here (the command line has none)."


def no_sampling_hint() -> str:
    """What to do when the client cannot sample (built per message: it names list_models in the caller's words)."""
    return ("Use an MCP client that supports sampling (e.g. the MCP SDK Client with a sampling_callback), "
            f"or pass another model ({words().list_models} shows them).")


class AwaitingClient(Exception):
    """Raised by a 2026-07-28 sampling request: the tool must answer with an `InputRequiredResult`.

    It is not an `LLMError`, so nothing in the router catches it; `server.py` turns it into the
    input request with `ClientCall.input_required()`.
    """


# --- the state carried between rounds (2026-07-28) -----------------------------------------------


class _Done(BaseModel):
    """A model of the chain the call is done with, and why it failed."""

    model_config = ConfigDict(defer_build=True)  # built at the first sampled call, not at start-up

    model: str
    family: Literal["provider", "output", "input"]
    kind: str
    message: str
    hint: str | None = None
    provider: str | None = None
    errors: list[str] = []


class _Reply(BaseModel):
    model_config = ConfigDict(defer_build=True)
    q: str  # digest of the request this answered
    result: dict[str, Any]


class _Ask(BaseModel):
    model_config = ConfigDict(defer_build=True)
    key: str
    q: str


class _State(BaseModel):
    model_config = ConfigDict(defer_build=True)
    v: int
    started: float  # wall clock of the first round: the call's deadline spans the rounds
    done: list[_Done] = []
    attempts: list[dict[str, Any]] = []
    usage: dict[str, int] = {}
    replies: list[_Reply] = []
    ask: _Ask | None = None


class StateCodec:
    """Signs what goes out in `request_state` with a key held only by this process."""

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key or os.urandom(32)

    def seal(self, state: _State) -> str:
        body = base64.urlsafe_b64encode(state.model_dump_json().encode()).decode()
        return f"{self._sign(body)}.{body}"

    def unseal(self, token: str) -> _State:
        signature, _, body = token.partition(".")
        if len(token) > MAX_STATE_CHARS or not hmac.compare_digest(signature, self._sign(body)):
            raise _stale("its signature does not match")
        try:
            state = _State.model_validate_json(base64.urlsafe_b64decode(body.encode()))
        except (ValueError, ValidationError):
            raise _stale("it cannot be read") from None
        if state.v != STATE_VERSION:
            raise _stale("it was made by another version")
        return state

    def _sign(self, body: str) -> str:
        return hmac.new(self._key, body.encode(), hashlib.sha256).hexdigest()


def _stale(why: str) -> InputError:
    return InputError(f"The state this call carried between rounds was refused: {why}.",
                      hint="Call the tool again from the start (the server may have restarted).")


@dataclass
class Resumed:
    """What a resumed call had done before it stopped to wait for the client."""

    errors: list[tuple[str, LLMError]]
    attempts: list[Attempt]
    usage: Usage
    elapsed_s: float


# --- one tool call's way to the client ------------------------------------------------------------


class ClientCall:
    """One tool call's handle on the MCP client: can it sample, the sampling itself, and its roots.

    Made per call (per round, on 2026-07-28) from that call's `Context`, so concurrent calls from
    different sessions never share one.
    """

    def __init__(self, ctx: Context[Any, Any] | None, codec: StateCodec) -> None:
        self._ctx = ctx
        self._codec = codec
        self.can_sample = False
        self.why_not = NO_CLIENT
        self.modern = False
        self.client_name: str | None = None
        self._state: _State | None = None
        self._responses: dict[str, Any] = {}
        self._replies: list[_Reply] = []
        self._ask: _Ask | None = None
        self._index = 0
        self._started = time.time()
        self._checkpoint: tuple[list[tuple[str, LLMError]], list[Attempt], Usage | None] = ([], [], None)
        self._pending: tuple[str, CreateMessageRequest] | None = None
        if ctx is not None:
            self._read_context(ctx)

    def _read_context(self, ctx: Context[Any, Any]) -> None:
        version = ctx.protocol_version
        if version is None:  # called outside a request (MCPServer.call_tool() directly)
            return
        self.modern = version >= INPUT_REQUIRED_VERSION
        capabilities = ctx.client_capabilities
        info = getattr(ctx.session, "client_params", None)
        client_info = getattr(info, "client_info", None)
        self.client_name = getattr(client_info, "name", None)
        if capabilities is None or capabilities.sampling is None:
            self.why_not = "The connected MCP client did not declare the sampling capability."
        elif not self.modern and not ctx.session.can_send_request:
            self.why_not = "This connection cannot carry a request to the client (stateless HTTP, 2025-11-25)."
        else:
            self.can_sample = True
        if self.modern and ctx.request_state:
            state = self._codec.unseal(ctx.request_state)
            self._state = state
            self._replies = list(state.replies)
            self._ask = state.ask
            self._started = min(state.started, time.time())
            self._responses = dict(ctx.input_responses or {})

    # --- what the router calls ---------------------------------------------------------------

    def resume(self, chain: list[str]) -> Resumed | None:
        """Where the previous round stopped, if this call is a resumed one and the chain is the same."""
        state = self._state
        if state is None:
            return None
        done = [entry.model for entry in state.done]
        if done != chain[: len(done)]:  # the config changed between rounds: start afresh
            self._replies, self._ask = [], None
            return None
        return Resumed(
            errors=[(entry.model, _error_from(entry)) for entry in state.done],
            attempts=[Attempt.model_validate(a) for a in state.attempts],
            usage=Usage.model_validate(state.usage),
            elapsed_s=max(time.time() - self._started, 0.0),
        )

    def checkpoint(self, errors: list[tuple[str, LLMError]], attempts: list[Attempt], usage: Usage) -> None:
        """The router starts the next model of the chain: a resumed round starts again from here."""
        self._checkpoint = (list(errors), list(attempts), usage.model_copy())
        self._replies = self._replies[self._index :]
        self._index = 0

    async def sample(self, params: CreateMessageRequestParams) -> CreateMessageResult:
        if not self.can_sample or self._ctx is None:
            raise ProviderNotReady(self.why_not, provider=PROVIDER, hint=no_sampling_hint())
        if not self.modern:
            return await self._send(self._ctx, params)
        q = _digest(params)
        index, self._index = self._index, self._index + 1
        if index < len(self._replies):
            if self._replies[index].q == q:
                return CreateMessageResult.model_validate(self._replies[index].result)
            del self._replies[index:]  # the call went another way than last round: ask again from here
        ask, answer = self._ask, None
        if ask is not None and ask.q == q and index == len(self._replies):
            answer = self._responses.pop(ask.key, None)
        if answer is None:
            key = f"mcp_llm.sample.{index}"
            self._ask = _Ask(key=key, q=q)
            self._pending = (key, CreateMessageRequest(params=params))
            raise AwaitingClient
        self._ask = None
        result = _check_answer(answer)
        self._replies.append(_Reply(q=q, result=result.model_dump(mode="json", by_alias=True, exclude_none=True)))
        return result

    def input_required(self) -> InputRequiredResult:
        """The answer to give the client when a request is waiting: the request, and where we are."""
        assert self._pending is not None, "input_required() without a waiting sampling request"
        errors, attempts, usage = self._checkpoint
        key, request = self._pending
        state = _State(
            v=STATE_VERSION,
            started=self._started,
            done=[_done(model, error) for model, error in errors],
            attempts=[a.model_dump(mode="json") for a in attempts],
            usage=usage.model_dump() if usage is not None else {},
            replies=self._replies,
            ask=self._ask,
        )
        return InputRequiredResult(input_requests={key: request}, request_state=self._codec.seal(state))

    # --- what image loading calls --------------------------------------------------------------

    def roots_provider(self) -> Callable[[], Awaitable[Sequence[Path]]] | None:
        """How image loading asks for the client's roots (only for a path outside `images.roots`);
        None when there is no MCP client at all, as on the command line."""
        return self.declared_roots if self._ctx is not None else None

    async def declared_roots(self) -> list[Path]:
        """The `file://` roots the MCP client declares (`roots/list`), or none when it declares no roots
        capability or cannot be asked (the capability is deprecated as of the 2026-07-28 protocol)."""
        from mcp.shared.exceptions import MCPError

        ctx = self._ctx
        if ctx is None:
            return []
        capabilities = ctx.client_capabilities
        if capabilities is None or capabilities.roots is None:
            return []
        try:
            with anyio.fail_after(ROOTS_TIMEOUT_S):
                # send_request rather than session.list_roots(), which warns that roots are deprecated
                result = await ctx.session.send_request(ListRootsRequest(), ListRootsResult)
        except (MCPError, TimeoutError) as exc:
            log.info("roots/list failed: %s", exc)
            return []
        roots = []
        for root in result.roots:
            uri = urlsplit(str(root.uri))
            if uri.scheme == "file" and uri.netloc in ("", "localhost") and uri.path:
                roots.append(Path(unquote(uri.path)))
        return roots

    async def _send(self, ctx: Context[Any, Any], params: CreateMessageRequestParams) -> CreateMessageResult:
        """2025-11-25: the request goes over the back-channel now. (`session.create_message` is
        deprecated in mcp 2.3 with all of sampling, so the request is sent as the SDK's own
        resolvers send it.)"""
        from mcp.shared.exceptions import MCPError
        from mcp.shared.message import ServerMessageMetadata

        try:
            result = await ctx.session.send_request(
                CreateMessageRequest(params=params),
                CreateMessageResult,
                metadata=ServerMessageMetadata(related_request_id=ctx.request_id),
            )
        except MCPError as exc:
            raise SamplingDeclined(
                f"The MCP client did not run the sampling request: {exc.error.message}.",
                provider=PROVIDER,
                hint=f"Accept the sampling request in your MCP client, or pass another model ({words().list_models}).",
            ) from None
        return _check_size(result)


def _digest(params: CreateMessageRequestParams) -> str:
    wire = params.model_dump(mode="json", by_alias=True, exclude_none=True)
    rendered = json.dumps(wire, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(rendered.encode()).hexdigest()[:32]


def _check_answer(answer: Any) -> CreateMessageResult:
    """The client's answer from `input_responses`: untrusted, so checked for kind and size."""
    try:
        wire = answer.model_dump(mode="json", by_alias=True, exclude_none=True) if isinstance(answer, BaseModel) \
            else answer
        result = CreateMessageResult.model_validate(wire)
    except ValidationError:
        raise BadRequestError("The MCP client answered the sampling request with something else than a message.",
                              provider=PROVIDER, hint="Check the client's sampling support, or use another model."
                              ) from None
    return _check_size(result)


def _check_size(result: CreateMessageResult) -> CreateMessageResult:
    """One cap on the client's answer in both generations: on 2025-11-25 a 20 MB answer was read,
    validated and sent back whole in each re-ask (14.5 s over stdio); on 2026-07-28 it would be
    carried in `request_state` between rounds. Refused, not re-asked: the same request gets the same."""
    if isinstance(result.content, TextContent) and len(result.content.text) > MAX_REPLY_CHARS:
        raise BadRequestError(
            f"The client's model answered with {len(result.content.text):,} characters, over {MAX_REPLY_CHARS:,}.",
            provider=PROVIDER, hint=f"Ask for a shorter answer ({words().max_tokens}), or use another model.",
        )
    return result


def _done(model: str, error: LLMError) -> _Done:
    family: Literal["provider", "output", "input"] = (
        "output" if isinstance(error, OutputError) else "provider" if isinstance(error, ProviderError) else "input"
    )
    return _Done(model=model, family=family, kind=error.kind, message=error.message, hint=error.hint,
                 provider=getattr(error, "provider", None), errors=getattr(error, "errors", []))


def _error_from(entry: _Done) -> LLMError:
    """A model's failure in an earlier round, rebuilt for the final error message."""
    error: LLMError
    if entry.family == "output":
        error = OutputError(entry.message, errors=entry.errors)
    elif entry.family == "provider":
        error = ProviderError(entry.message, provider=entry.provider or "", model=entry.model, hint=entry.hint)
    else:
        error = InputError(entry.message, hint=entry.hint)
    error.hint = entry.hint
    error.kind = entry.kind
    return error
