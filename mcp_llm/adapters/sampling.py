"""The MCP client's own model, through `sampling/createMessage`: ids `client` and `client/<hint>`.

The request reaches the client through the tool call itself, never a global: `server.py` builds
one `ClientCall` per call from its MCP `Context`, and the router hands it down on the `Request`.
The two protocol generations reach the client differently (SDK-FACTS.md):

- 2025-11-25: the request is sent mid-call over the session's back-channel, and awaited.
- 2026-07-28: the tool answers with an `InputRequiredResult` holding the request, and the client
  calls it again with the answer in `input_responses`. The router is then run again from where it
  stopped: the models already done with are skipped (their errors and attempts ride along in
  `request_state`), and the client's earlier answers to this model are replayed in order, each
  checked against a digest of the exact request it answered, so re-asks work as on any provider.

`request_state` comes back from the client, so it is untrusted: the SDK seals it (AES-GCM, bound to
the tool and its arguments, with an expiry) and we sign it again with a key made at start-up, then
check its shape. Only an answer to the request we recorded as asked is ever accepted.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from mcp_types import (
    CreateMessageRequest,
    CreateMessageRequestParams,
    CreateMessageResult,
    ImageContent,
    InputRequiredResult,
    ModelHint,
    ModelPreferences,
    SamplingMessage,
    TextContent,
)
from pydantic import BaseModel, Field, ValidationError

from mcp_llm.adapters.base import Capabilities, Completion, Health, LLMAdapter, ModelInfo, Request, Timeouts
from mcp_llm.adapters.spec import Prefix, ProviderSection, ProviderSpec
from mcp_llm.errors import (
    BadRequestError,
    InputError,
    LLMError,
    OutputError,
    ProviderError,
    ProviderNotReady,
    SamplingDeclined,
)

if TYPE_CHECKING:
    from mcp.server.mcpserver import Context

    from mcp_llm.router import Attempt, Usage

PROVIDER = "client"
INPUT_REQUIRED_VERSION = "2026-07-28"
MAX_REPLY_CHARS = 500_000  # a longer answer is refused, in both protocol generations (`_check_size`)
MAX_STATE_CHARS = 4_000_000
STATE_VERSION = 1
NO_SAMPLING_HINT = (
    "Use an MCP client that supports sampling (e.g. the MCP SDK Client with a sampling_callback), "
    "or pass another model (list_models shows them)."
)


class AwaitingClient(Exception):
    """Raised by a 2026-07-28 sampling request: the tool must answer with an `InputRequiredResult`.

    It is not an `LLMError`, so nothing in the router catches it; `server.py` turns it into the
    input request with `ClientCall.input_required()`.
    """


# --- the state carried between rounds (2026-07-28) -----------------------------------------------


class _Done(BaseModel):
    """A model of the chain the call is done with, and why it failed."""

    model: str
    family: Literal["provider", "output", "input"]
    kind: str
    message: str
    hint: str | None = None
    provider: str | None = None
    errors: list[str] = []


class _Reply(BaseModel):
    q: str  # digest of the request this answered
    result: dict[str, Any]


class _Ask(BaseModel):
    key: str
    q: str


class _State(BaseModel):
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
    """One tool call's handle on the MCP client: can it sample, and the sampling itself.

    Made per call (per round, on 2026-07-28) from that call's `Context`, so concurrent calls from
    different sessions never share one.
    """

    def __init__(self, ctx: Context[Any, Any] | None, codec: StateCodec) -> None:
        self._ctx = ctx
        self._codec = codec
        self.can_sample = False
        self.why_not = "Sampling needs an MCP client; there is none here (the command line has none)."
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
        from mcp_llm.router import Attempt, Usage

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
            raise ProviderNotReady(self.why_not, provider=PROVIDER, hint=NO_SAMPLING_HINT)
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
                hint="Accept the sampling request in your MCP client, or pass another model (list_models).",
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
            provider=PROVIDER, hint="Ask for a shorter answer (max_tokens), or use another model.",
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


# --- the adapter ----------------------------------------------------------------------------------


class ClientSettings(ProviderSection):
    """`[providers.client]`: the MCP client's own model, through sampling: what to ask the client for."""

    as_fallback: bool = False
    hints: list[str] = Field(default_factory=list)
    cost_priority: float | None = Field(default=None, ge=0, le=1)
    speed_priority: float | None = Field(default=None, ge=0, le=1)
    intelligence_priority: float | None = Field(default=None, ge=0, le=1)
    max_tokens: int = Field(default=4096, ge=1)  # sampling needs one; a call's max_tokens wins


class SamplingAdapter(LLMAdapter):
    """Speaks `sampling/createMessage` through the call's `ClientCall`; the schema goes in the prompt."""

    provider = PROVIDER
    capabilities = Capabilities(native_schema=False, images=True)

    def __init__(self, settings: ClientSettings) -> None:
        self._settings = settings

    async def complete(self, request: Request) -> Completion:
        handle = request.client
        if handle is None:
            raise ProviderNotReady(ClientCall(None, StateCodec()).why_not, provider=PROVIDER,
                                   hint="Use another model from list_models here.")
        result = await handle.sample(self.params(request))
        if not isinstance(result.content, TextContent):
            raise BadRequestError(
                f"The client's model answered with {result.content.type} content, not text.",
                provider=PROVIDER, model=request.model or None, hint="Use another model (list_models).",
            )
        reported = f"{PROVIDER}/{result.model}" if result.model else None
        return Completion(text=result.content.text, finish_reason=result.stop_reason, model=reported)

    def params(self, request: Request) -> CreateMessageRequestParams:
        settings = self._settings
        messages = []
        for message in request.messages:
            blocks: list[Any] = [
                ImageContent(data=base64.b64encode(image.data).decode(), mime_type=image.mime_type)
                for image in message.images
            ]
            blocks.append(TextContent(text=message.content))
            messages.append(SamplingMessage(role=message.role, content=blocks[0] if len(blocks) == 1 else blocks))
        hints = [ModelHint(name=name) for name in dict.fromkeys([request.model, *settings.hints]) if name]
        priorities = {"cost_priority": settings.cost_priority, "speed_priority": settings.speed_priority,
                      "intelligence_priority": settings.intelligence_priority}
        preferences = None
        if hints or any(value is not None for value in priorities.values()):
            preferences = ModelPreferences(hints=hints or None, **priorities)
        return CreateMessageRequestParams(
            messages=messages,
            system_prompt=request.system,
            temperature=request.temperature,
            max_tokens=request.max_tokens or settings.max_tokens,
            model_preferences=preferences,
        )

    async def list_models(self) -> list[ModelInfo]:
        return []  # per session: see `client_model`

    async def health(self) -> Health:
        return client_health(None)


def client_model(handle: ClientCall | None) -> ModelInfo:
    """`client` as `list_models` shows it to this caller: available only if its client can sample."""
    can = handle is not None and handle.can_sample
    label = "the MCP client's own model (sampling)"
    if not can:
        label += " — not available: " + (handle.why_not if handle else ClientCall(None, StateCodec()).why_not)
    return ModelInfo(id=PROVIDER, provider=PROVIDER, label=label, vision=can, structured=True,
                     enabled=True, available=can, source="discovered")


def client_health(handle: ClientCall | None) -> Health:
    """Whether this caller's client can sample, from its declared capabilities: it never samples."""
    if handle is None or not handle.can_sample:
        why = handle.why_not if handle else ClientCall(None, StateCodec()).why_not
        return Health(provider=PROVIDER, status="unconfigured", detail=f"{why} {NO_SAMPLING_HINT}")
    generation = "input requests (2026-07-28)" if handle.modern else "mid-call requests (2025-11-25)"
    name = f"{handle.client_name} " if handle.client_name else ""
    return Health(provider=PROVIDER, status="ok",
                  detail=f"The client {name}declared sampling; requests go as {generation}, and it may "
                  "ask its user before each one.")


def _build(settings: ClientSettings, timeouts: Timeouts, name: str) -> SamplingAdapter:
    return SamplingAdapter(settings)  # the client's deadline is the call's: no timeouts of its own


SPEC = ProviderSpec(
    name=PROVIDER,
    label="the MCP client's own model (sampling)",
    settings=ClientSettings,
    build=_build,
    prefixes=(Prefix("client/"),),
    ids=(PROVIDER,),
    secrets=(),
    hosts=lambda settings: [],  # reached through the call, not at an address
    call_health=client_health,
    call_models=lambda handle: [client_model(handle)],
)
