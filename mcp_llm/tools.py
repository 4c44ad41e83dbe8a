"""The four tools, once: what each does with its arguments, whatever surface called it.

`server.py` (MCP: parameter descriptions, annotations, the last line of defence) and `cli.py`
(argparse and human output) both call a `Tools` over one `App`, with plain arguments and, from the
MCP side, the call's own client handle (`client_call.ClientCall`: sampling, roots). Each method
checks its arguments, calls the router (or the app) once, and returns the result model the MCP tool
publishes as its output schema. Errors are ours (`errors.py`), worded for the surface that asked
(`words.py`): the surface passes its vocabulary in once, and every message built during the call,
however deep, names that surface's options and commands.

Nothing here imports an SDK or Pillow at module level: the server imports this at start-up.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from mcp_llm.adapters.base import Health, ModelInfo
from mcp_llm.errors import ArgumentError
from mcp_llm.trace import Trace
from mcp_llm.transport import LONE_SURROGATE
from mcp_llm.words import TOOL_WORDS, Words, speaking, words

if TYPE_CHECKING:
    from mcp_llm.app import App
    from mcp_llm.client_call import ClientCall
    from mcp_llm.images import LoadedImage
    from mcp_llm.progress import ReportFn
    from mcp_llm.router import CallSpec

# The tool arguments' domains, checked at the tool boundary (`check_arguments`). A temperature up
# to the highest any provider takes (OpenAI, Gemini, Ollama: 2) is valid; one above a provider's
# own range (Anthropic: 1, `Capabilities.temperature_max`) is lowered to it there, and said so in
# the trace's `argument_rewrites`.
TEMPERATURE_MAX = 2.0
MAX_TOKENS_LIMIT = 1_000_000  # above every model's output limit; the provider refuses what its model cannot
TIMEOUT_MAX_S = 86_400.0
MAX_COST_USD = 1_000_000.0


class StructuredResult(Trace):
    data: Any = Field(description="The answer; it validates against the schema that was passed.")


class ImageResult(Trace):
    text: str | None = Field(default=None, description="The answer, when no schema was passed.")
    data: Any = Field(default=None, description="The answer as JSON valid against the schema, when one was passed.")


class ModelList(BaseModel):
    model_config = ConfigDict(defer_build=True)  # built on first use, not at start-up

    models: list[ModelInfo]


STATE_DESCRIPTION = ("Where circuits, limits and usage are kept: `local` (this server's own), `shared` (with the "
                     "other replicas, in Redis: [state]), or `local (redis unreachable)` while Redis cannot be had.")


class ProviderHealth(Health):
    stats: dict[str, Any] = Field(default_factory=dict,
                                  description="Usage since start (as in mcp-llm://stats, the fleet's when state is "
                                  "shared); empty before any call.")
    state: str = Field(default="local", description=STATE_DESCRIPTION)


class HealthReport(BaseModel):
    model_config = ConfigDict(defer_build=True)  # built on first use, not at start-up

    providers: list[ProviderHealth]
    state: str = Field(default="local", description=STATE_DESCRIPTION)


def check_arguments(temperature: float | None, max_tokens: int | None, timeout_s: float | None,
                    max_cost_usd: float | None = None) -> None:
    """The tool boundary's check of the numeric arguments: an `ArgumentError` for a value out of every
    provider's domain (NaN, infinity, negative, absurdly large), before anything is sent. JSON's
    `1e309` reads as infinity and pydantic takes a bare `NaN`, so both do arrive here; sent on, they
    could not even be encoded, and must never look like the provider's fault."""
    said = words()
    if temperature is not None and not (math.isfinite(temperature) and 0 <= temperature <= TEMPERATURE_MAX):
        raise ArgumentError(
            f"temperature must be a number from 0 to {TEMPERATURE_MAX:g}, not {_number(temperature)}.",
            hint="Leave it out for the provider's default; 0 is the most deterministic. A provider with a "
            "smaller range (Anthropic: 0 to 1) gets its highest value instead, and argument_rewrites says so.",
        )
    if max_tokens is not None and not 1 <= max_tokens <= MAX_TOKENS_LIMIT:
        raise ArgumentError(
            f"{said.max_tokens} must be a whole number from 1 to {MAX_TOKENS_LIMIT:,}, not {max_tokens:,}.",
            hint="It caps the length of the answer; leave it out for the provider's default.",
        )
    if timeout_s is not None and not (math.isfinite(timeout_s) and 0 < timeout_s <= TIMEOUT_MAX_S):
        raise ArgumentError(
            f"{said.timeout_s} must be a number of seconds above 0 and at most {TIMEOUT_MAX_S:,.0f}, "
            f"not {_number(timeout_s)}.",
            hint="Pass seconds, e.g. 60, or leave it out for defaults.timeout_s.",
        )
    if max_cost_usd is not None and not (math.isfinite(max_cost_usd) and 0 <= max_cost_usd <= MAX_COST_USD):
        raise ArgumentError(
            f"{said.max_cost_usd} must be US dollars from 0 to {MAX_COST_USD:,.0f}, not {_number(max_cost_usd)}.",
            hint="Pass what this call may spend at most, e.g. 0.05, or leave it out for the configured budget.",
        )


def _number(value: float) -> str:
    if math.isinf(value):
        return f"{value} (a number too large for a double, such as 1e309, reads as infinity)"
    return f"{value:g}"


def valid_unicode(text: str) -> str:
    """A text answer with each lone surrogate (a model's `"\\ud800"`, decoded by its SDK) as U+FFFD:
    the SDK cannot serialize one, and the caller got "Error executing tool" instead of the answer.
    (A JSON answer holding one is refused by the reply reader and re-asked.)"""
    if not LONE_SURROGATE.search(text):
        return text
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


class Tools:
    """The tool bodies over one `App`, speaking one surface's vocabulary (`words`).

    `client` is the calling MCP client's per-call handle (None on the command line: no sampling,
    no client roots). A 2026-07-28 sampling request surfaces as `client_call.AwaitingClient`, which
    is the MCP wiring's to answer (with `client.input_required()`); it is not an error of ours.
    """

    def __init__(self, app: App, words: Words = TOOL_WORDS) -> None:
        self.app = app
        self.words = words

    async def generate_structured(
        self, prompt: str, schema: dict[str, Any] | bool | str, model: str | None = None, system: str | None = None,
        temperature: float | None = None, max_tokens: int | None = None, timeout_s: float | None = None,
        max_cost_usd: float | None = None, cache: bool = True, *,
        client: ClientCall | None = None, progress: ReportFn | None = None,
    ) -> StructuredResult:
        """JSON in `data` that validates against `schema` (an object, its JSON text, `true`, or a preset name)."""
        with speaking(self.words):
            check_arguments(temperature, max_tokens, timeout_s, max_cost_usd)
            checked = await self._schema(schema)
            from mcp_llm.router import CallSpec  # on the first call: start-up does not import the router

            outcome = await self.app.router.run(CallSpec(prompt=prompt, schema=checked, model=model, system=system,
                                               temperature=temperature, max_tokens=max_tokens, timeout_s=timeout_s,
                                               client=client, progress=progress, max_cost_usd=max_cost_usd,
                                               cache=cache))
            return StructuredResult(data=outcome.data, **dict(outcome.trace))  # its records as they are, not dumped

    async def analyze_image(
        self, image: str, prompt: str, schema: dict[str, Any] | bool | str | None = None, model: str | None = None,
        temperature: float | None = None, max_tokens: int | None = None, timeout_s: float | None = None,
        max_cost_usd: float | None = None, cache: bool = True, *,
        system: str | None = None, client: ClientCall | None = None, progress: ReportFn | None = None,
    ) -> ImageResult:
        """Text about the image, or JSON in `data` when a schema is given (None or "" means text).

        `system` is the command line's (`call --image --system`); the MCP tool takes none."""
        with speaking(self.words):
            check_arguments(temperature, max_tokens, timeout_s, max_cost_usd)
            checked = await self._schema(schema) if schema not in (None, "") else None
            loaded = await self._image(image, client)
            from mcp_llm.router import CallSpec  # on the first call: start-up does not import the router

            return await self._answer(CallSpec(prompt=prompt, schema=checked, model=model, system=system,
                                               temperature=temperature, max_tokens=max_tokens, images=(loaded,),
                                               timeout_s=timeout_s, client=client, progress=progress,
                                               max_cost_usd=max_cost_usd, cache=cache))

    async def generate_text(
        self, prompt: str, model: str | None = None, system: str | None = None, temperature: float | None = None,
        max_tokens: int | None = None, timeout_s: float | None = None, max_cost_usd: float | None = None,
        cache: bool = True,
    ) -> ImageResult:
        """A text answer without an image, which no MCP tool offers: the command line's `call --schema none`."""
        with speaking(self.words):
            check_arguments(temperature, max_tokens, timeout_s, max_cost_usd)
            from mcp_llm.router import CallSpec  # on the first call: start-up does not import the router

            return await self._answer(CallSpec(prompt=prompt, model=model, system=system, temperature=temperature,
                                               max_tokens=max_tokens, timeout_s=timeout_s, max_cost_usd=max_cost_usd,
                                               cache=cache))

    async def list_models(self, provider: str | None = None, refresh: bool = False, *,
                          client: ClientCall | None = None) -> ModelList:
        """The configured and discovered models; `client` decides whether `client` (sampling) is listed."""
        with speaking(self.words):
            return ModelList(models=await self.app.models(provider, refresh, client))

    async def provider_health(self, provider: str | None = None, *, client: ClientCall | None = None) -> HealthReport:
        """Each provider's free probe (cached briefly), with its usage since start."""
        with speaking(self.words):
            rows = await self.app.health(provider, client)  # (with shared state, the fleet's circuits first)
            usage = await self.app.stats()
            state = self.app.state.status()
            return HealthReport(providers=[ProviderHealth(**dict(row), stats=usage["providers"].get(
                row.provider, {}), state=state) for row in rows], state=state)

    # --- shared steps ------------------------------------------------------------------------------

    async def _schema(self, schema: dict[str, Any] | bool | str) -> Any:
        from mcp_llm.schema import parse_schema_argument_off_loop  # on the first call, not at start-up

        return (await parse_schema_argument_off_loop(schema, self.app.router.schema_limits))[0]

    async def _image(self, image: str, client: ClientCall | None) -> LoadedImage:
        from mcp_llm.images import load_image  # on first use: start-up does not pay for Pillow

        roots = client.roots_provider() if client is not None else None
        return await load_image(image, self.app.settings.images, roots)

    async def _answer(self, spec: CallSpec) -> ImageResult:
        outcome = await self.app.router.run(spec)
        trace = dict(outcome.trace)
        if spec.schema is None:
            return ImageResult(text=valid_unicode(outcome.text), **trace)
        return ImageResult(data=outcome.data, **trace)
