"""The one interface every provider adapter implements, and the types that cross it.

An adapter speaks one provider's wire protocol through its SDK and translates that SDK's
errors into `mcp_llm.errors`. It does not retry, validate or fall back: the router does
that once for every provider. What an adapter can do is stated as data (`capabilities`),
so the router reads flags instead of asking `isinstance`.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from mcp_llm.errors import AuthError, ProviderError, ProviderNotReady

if TYPE_CHECKING:
    from mcp_llm.client_call import ClientCall

ClientT = TypeVar("ClientT")


@dataclass(frozen=True)
class Capabilities:
    """What the router asks of an adapter before sending it a request."""

    native_schema: bool  # send the compiled schema; without it the model only gets the schema instruction
    images: bool  # the provider accepts image input at all (per model: see ModelInfo.vision)
    max_image_bytes: int | None = None  # per image; larger ones are shrunk to fit (image_fit), None: no limit
    max_image_side: int | None = None  # longest side in pixels (beyond it the provider would scale down anyway)
    max_image_pixels: int | None = None  # width × height
    image_formats: tuple[str, ...] = ("image/png", "image/jpeg", "image/gif", "image/webp")  # MIME types taken
    temperature_max: float = 2.0  # a higher one (valid elsewhere) is lowered to this, noted in argument_rewrites


@dataclass(frozen=True)
class Timeouts:
    """How long to wait: to connect (short, so a dead server is found fast), for the first byte of
    the answer (long enough for a cold model load; None means up to the deadline), and in all."""

    total_s: float = 120.0
    connect_s: float = 10.0
    first_response_s: float | None = None

    def plain(self, request: Request) -> bool:
        """Whether `request` goes as one plain request: no one reads its pieces, and no first-response budget
        needs a stream (a plain answer's first byte is its last). Cancelling the call still closes it."""
        return not request.stream and self.first_response_s is None

    def read_s(self, remaining_s: float) -> float:
        """The read budget of one request with `remaining_s` left before the call's deadline."""
        budget = remaining_s if self.first_response_s is None else min(self.first_response_s, remaining_s)
        return max(budget, 0.001)


@dataclass(frozen=True)
class ImageInput:
    data: bytes
    mime_type: str


@dataclass
class Message:
    role: Literal["user", "assistant"]
    content: str
    images: list[ImageInput] = field(default_factory=list)


@dataclass
class Request:
    """One completion, as the router asks it of an adapter."""

    model: str  # the provider's own model name (prefix stripped)
    messages: list[Message]
    system: str | None = None
    schema: dict[str, Any] | None = None  # already compiled for this provider
    temperature: float | None = None
    max_tokens: int | None = None
    timeout_s: float = 120.0
    # Provider-specific route data (`Route.options`, from the id's prefix), read by that provider's adapter
    # alone: `vertex/…` gives Gemini {"vertex": True}, Vertex AI whatever the configured backend.
    options: Mapping[str, Any] = field(default_factory=dict)
    client: ClientCall | None = None  # the MCP call this is part of: how `client` reaches the client's model
    # The base URL to send to, one of those the provider's spec lists (`ProviderSpec.hosts`), as the router
    # chose it among several; None: the provider's first (its only one, for most).
    host: str | None = None
    # Each streamed piece of the answer's text, as it arrives (progress notifications; see progress.py)
    on_chunk: Callable[[str], Awaitable[None]] | None = None
    # Whether anyone reads the pieces as they arrive (the caller asked for progress). False: an adapter may
    # send one plain request, its whole answer in one piece (`on_chunk` then sees it once), unless its
    # first-response budget needs a stream to bound the wait for the first byte (`Timeouts`).
    stream: bool = True


@dataclass
class Completion:
    """One answer, with its usage as the provider reported it, in one shape whatever the provider's: every
    input token in `input_tokens` (those read from or written to a prompt cache included, and also counted
    apart), every output token in `output_tokens` (thinking included, and also counted apart). None: not
    reported. What it cost is priced from these (cost.py)."""

    text: str
    input_tokens: int | None = None
    output_tokens: int | None = None
    finish_reason: str | None = None
    model: str | None = None  # the id to report as the answering model, when the provider names it
    cache_read_tokens: int | None = None  # of input_tokens: read from the provider's prompt cache
    cache_write_tokens: int | None = None  # of input_tokens: written to it (billed above the input rate)
    thinking_tokens: int | None = None  # of output_tokens: reasoning the answer does not show


class ModelInfo(BaseModel):
    model_config = ConfigDict(defer_build=True)  # built on first use, not at start-up

    id: str
    provider: str
    label: str | None = None
    vision: bool = False
    structured: bool = True
    enabled: bool = True
    available: bool | None = None  # False: the provider lacks it; None: unknown (not asked, or unreachable)
    source: Literal["config", "discovered"] = "config"
    hosts: list[str] = Field(default_factory=list, description="The hosts that serve it (base URLs, no "
                             "credentials); empty when unknown or not at an address.")


@dataclass(frozen=True)
class HostReport:
    """What one host of a provider says it has now (`ProviderSpec.host_report`): the models it serves, and
    those loaded in memory, each with the seconds until it is unloaded (None: no expiry given) and the
    bytes of it in GPU memory (None: not said). A served model of llama-server or vLLM counts as loaded."""

    models: frozenset[str]
    loaded: Mapping[str, float | None]
    vram: Mapping[str, int] = field(default_factory=dict)
    version: str | None = None


class HostHealth(BaseModel):
    """One host of a provider, as `provider_health` shows it."""
    model_config = ConfigDict(defer_build=True)  # built on first use, not at start-up


    host: str = Field(description="The host's base URL, without credentials.")
    status: Literal["ok", "degraded", "down", "unconfigured"]
    latency_ms: float | None = Field(default=None, description="Its last probe's latency.")
    loaded: list[str] | None = Field(default=None, description="The models loaded there now; null when not asked "
                                     "(a provider at one host).")
    in_flight: int = Field(default=0, description="Calls this server has in flight to it now.")
    circuit: Literal["closed", "open", "half_open"] = "closed"
    models: int | None = Field(default=None, description="How many models it serves; null when not asked.")
    recent_latency_ms: float | None = Field(default=None, description="Recent time to the first chunk of its "
                                            "answers (a moving average), what routing compares.")
    detail: str = ""


class Health(BaseModel):
    model_config = ConfigDict(defer_build=True)  # built on first use, not at start-up

    provider: str
    status: Literal["ok", "degraded", "down", "unconfigured"]
    latency_ms: float | None = None
    version: str | None = None
    endpoint: str | None = None
    has_api_key: bool = False
    detail: str = ""
    circuit: Literal["closed", "open", "half_open"] = "closed"
    hosts: list[HostHealth] = Field(default_factory=list, description="Each host it is served from; one for a "
                                    "provider at one address, none for the client's own model.")


class LLMAdapter(ABC):
    """A provider behind one interface: a completion, a model listing, a health probe."""

    provider: ClassVar[str]
    capabilities: ClassVar[Capabilities]
    sdk_modules: ClassVar[tuple[str, ...]] = ()  # imported on first use, in a worker thread

    @abstractmethod
    async def complete(self, request: Request) -> Completion:
        """Run one completion; raise only `mcp_llm.errors` classes."""

    @abstractmethod
    async def list_models(self) -> list[ModelInfo]:
        """The models the provider reports having (source `discovered`)."""

    @abstractmethod
    async def health(self) -> Health:
        """A probe that costs nothing (a listing, never a completion)."""

    async def supports_images(self, model: str) -> bool | None:
        """Whether `model` (the provider's own name) reads images: None when the provider cannot say,
        in which case an image is sent and the provider judges."""
        return None

    def not_ready(self) -> ProviderNotReady | None:
        """Why the adapter cannot be used as configured (no key, no project), found without importing
        its SDK: `mcp-llm health` need not pay ~2 s for an SDK it will not use."""
        return None

    def forget_models(self) -> None:  # noqa: B027 - an optional hook, not an abstract one
        """Drop anything cached about the provider's models, so the next listing asks afresh."""

    async def aclose(self) -> None:  # noqa: B027 - an optional hook, not an abstract one
        """Close the SDK client, if one was built."""


async def served_by(hosts: list[str], listing: Callable[[str], Awaitable[list[str]]]) -> dict[str, list[str]]:
    """Each model the hosts list (`listing(host)`, asked of every host at once), with the hosts that serve
    it, in the hosts' order (as configured: show them with `public_url`): one id namespace across them. A
    host that cannot answer is left out; when none can, the first one's error is raised."""
    import anyio

    listings: dict[str, list[str]] = {}
    failures: list[ProviderError] = []

    async def list_host(host: str) -> None:
        try:
            listings[host] = await listing(host)
        except ProviderError as exc:
            failures.append(exc)

    if len(hosts) == 1:  # no task group for the usual provider at one host: its error as it comes
        listings[hosts[0]] = await listing(hosts[0])
    else:
        async with anyio.create_task_group() as tg:
            for host in hosts:
                tg.start_soon(list_host, host)
    if not listings:
        raise failures[0]
    served: dict[str, list[str]] = {}
    for host in hosts:
        for model in listings.get(host, []):
            served.setdefault(model, []).append(host)
    return served


def ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


async def probe(base: Health, connect: Callable[[], ClientT],
                check: Callable[[ClientT], Awaitable[dict[str, Any]]]) -> Health:
    """The health probe every adapter runs: `unconfigured` when the client cannot be built,
    `down` (or `degraded` when the key is refused) when `check` fails, else `ok` with what
    `check` found (it may set its own status, e.g. `degraded` for a partial answer)."""
    try:
        client = connect()
    except ProviderNotReady as exc:
        return base.model_copy(update={"status": "unconfigured", "detail": exc.user_message()})
    started = time.perf_counter()
    try:
        found = await check(client)
    except ProviderError as exc:
        status = "degraded" if isinstance(exc, AuthError) else "down"
        return base.model_copy(update={"status": status, "latency_ms": ms_since(started),
                                       "detail": exc.user_message()})
    return base.model_copy(update={"status": "ok", "latency_ms": ms_since(started), **found})
