"""What an attempt cost, in US dollars: the usage the provider reported, priced; `None` when unknown.

Where a provider's price comes from, the first that applies:

1. its config table's `cost_per_mtok` (dollars per million tokens: one number for every token, or
   `{input, output}`): `0` says a local model is free, another number overrides the library;
2. `genai-prices`, pydantic's maintained price database, for Anthropic, Gemini (Google's prices, on
   the Gemini API and Vertex AI) and OpenAI, and for an OpenAI-compatible endpoint whose URL it knows
   (OpenRouter, Groq, Together, DeepSeek, Mistral, Fireworks…); a model it does not list is unknown;
3. otherwise unknown (Ollama, llama-server, LM Studio, vLLM, the client's own model): `None`, never a
   guess. A trace with any unknown attempt has an unknown total.

The library prices every part of a usage at its own rate: prompt-cache reads and writes, thinking
(`output_reasoning_tokens`, which is output unless a model prices it apart). Its import takes about
0.3 s (its tables are Python source), so it is imported on first need, in a worker thread, never at
start-up; so is the first lookup of each model (a walk over its tables), after which a price is
worked out on the event loop in about 0.1 ms.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal
from importlib import metadata
from typing import TYPE_CHECKING, Any

import anyio

from mcp_llm.errors import (
    BudgetExceeded,
    CircuitOpenError,
    LLMError,
    NotSentError,
    ProviderNotReady,
    SamplingDeclined,
)

if TYPE_CHECKING:
    from mcp_llm.adapters.base import Completion
    from mcp_llm.config import Settings

log = logging.getLogger("mcp_llm")

PRICES_DISTRIBUTION = "genai-prices"
MTOK = Decimal(1_000_000)
# Our provider → the library's provider id. An OpenAI-compatible endpoint is looked up by its URL instead.
LIBRARY_PROVIDERS = {"anthropic": "anthropic", "gemini": "google", "openai": "openai"}
COMPATIBLE_TABLE = "openai_compatible"


def price_data_version() -> str | None:
    """The version of the price data (genai-prices ships its data in its releases), read without importing it."""
    try:
        return metadata.version(PRICES_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return None


@dataclass(frozen=True)
class Tokens:
    """A usage to price: every input token in `input` (cache reads and writes among them), every output
    token in `output` (thinking among them), as `adapters.base.Completion` carries them."""

    input: int
    output: int
    cache_read: int = 0
    cache_write: int = 0
    thinking: int = 0

    @classmethod
    def of(cls, completion: Completion) -> Tokens | None:
        """The completion's usage; None when the provider did not report its input or its output."""
        if completion.input_tokens is None or completion.output_tokens is None:
            return None
        return cls(completion.input_tokens, completion.output_tokens, completion.cache_read_tokens or 0,
                   completion.cache_write_tokens or 0, completion.thinking_tokens or 0)


@dataclass(frozen=True)
class FixedPrice:
    """A price from the config: dollars per million input and output tokens (cached ones at the input rate)."""

    input_per_mtok: Decimal
    output_per_mtok: Decimal

    @property
    def free(self) -> bool:
        return not self.input_per_mtok and not self.output_per_mtok

    def of(self, tokens: Tokens) -> Decimal:
        return (tokens.input * self.input_per_mtok + tokens.output * self.output_per_mtok) / MTOK


@dataclass(frozen=True)
class LibraryPrice:
    """Priced by genai-prices: by its provider id, or by the API's URL (an OpenAI-compatible endpoint)."""

    provider_id: str | None = None
    api_url: str | None = None


PriceSource = FixedPrice | LibraryPrice


class Prices:
    """Each provider's price source (config, library, or none), and the library loaded on first need."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._sources: dict[str, PriceSource | None] = {}
        self._looked_up: set[tuple[str, str]] = set()  # (provider, model) the library has matched once
        self._library: Any = None
        self._loading = anyio.Lock()

    def source(self, provider: str) -> PriceSource | None:
        """Where `provider`'s prices come from; None: nowhere (its costs are unknown)."""
        if provider not in self._sources:
            self._sources[provider] = self._find_source(provider)
        return self._sources[provider]

    def _find_source(self, provider: str) -> PriceSource | None:
        table = next((t for t in self._settings.provider_tables() if t.name == provider), None)
        configured = getattr(table.section, "cost_per_mtok", None) if table else None
        if configured is not None:
            if isinstance(configured, float | int):
                return FixedPrice(Decimal(str(configured)), Decimal(str(configured)))
            return FixedPrice(Decimal(str(configured.input)), Decimal(str(configured.output)))
        if provider in LIBRARY_PROVIDERS:
            return LibraryPrice(provider_id=LIBRARY_PROVIDERS[provider])
        if table is not None and table.spec.name == COMPATIBLE_TABLE:
            endpoint = getattr(table.section, "endpoint", None)
            return LibraryPrice(api_url=endpoint.rstrip("/")) if endpoint else None
        return None

    def table_key(self, provider: str) -> str:
        """The config table that would set `provider`'s price (`providers.openai_compatible.lmstudio`)."""
        table = next((t for t in self._settings.provider_tables() if t.name == provider), None)
        return table.key if table else f"providers.{provider}"

    def free(self, provider: str) -> bool:
        """Configured as costing nothing (`cost_per_mtok = 0`)."""
        found = self.source(provider)
        return isinstance(found, FixedPrice) and found.free

    async def cost(self, provider: str, model: str, tokens: Tokens | None) -> Decimal | None:
        """What `tokens` of `model` (the provider's own name) cost; None when the price or the usage is unknown."""
        found = self.source(provider)
        if found is None or tokens is None:
            return None
        if isinstance(found, FixedPrice):
            return found.of(tokens)
        return await self._library_price(found, provider, model, tokens)

    async def worst_case(self, provider: str, model: str, input_tokens: int, output_tokens: int) -> Decimal | None:
        """The most `input_tokens` in and `output_tokens` out can cost: every input token at the uncached rate
        (a cache write, dearer, only happens when asked for, and this server never asks), every output token at
        the dearer of the output and thinking rates. Cost only grows with tokens (tiers included), so a bound
        on the tokens bounds the cost."""
        plain = await self.cost(provider, model, Tokens(input_tokens, output_tokens))
        if plain is None or not isinstance(self.source(provider), LibraryPrice):
            return plain
        thinking = await self.cost(provider, model, Tokens(input_tokens, output_tokens, thinking=output_tokens))
        return max(plain, thinking) if thinking is not None else plain

    async def _library_price(self, found: LibraryPrice, provider: str, model: str, tokens: Tokens) -> Decimal | None:
        library = self._library or await self._load()
        usage = library.Usage(input_tokens=tokens.input, output_tokens=tokens.output,
                              cache_read_tokens=tokens.cache_read or None,
                              cache_write_tokens=tokens.cache_write or None,
                              output_reasoning_tokens=tokens.thinking or None)

        def price() -> Decimal | None:
            try:
                if found.api_url is not None:
                    return Decimal(library.calc_price(usage, model, provider_api_url=found.api_url).total_price)
                return Decimal(library.calc_price(usage, model, provider_id=found.provider_id).total_price)
            except LookupError:  # a model (or endpoint) it has no price for: unknown
                return None
            except (ValueError, ArithmeticError) as exc:  # a usage it cannot price (parts larger than the whole)
                log.warning("genai-prices could not price %s/%s for %s: %s", provider, model, tokens, exc)
                return None

        key = (provider, model)
        if key in self._looked_up:
            return price()
        result = await anyio.to_thread.run_sync(price)  # the first match of a model walks the library's tables
        self._looked_up.add(key)
        return result

    async def _load(self) -> Any:
        async with self._loading:
            if self._library is None:
                self._library = await anyio.to_thread.run_sync(_import_library)
        return self._library


def _import_library() -> Any:
    import genai_prices

    return genai_prices


def billed_nothing(error: LLMError) -> bool:
    """Whether an attempt that failed with `error` cannot have been billed: nothing was sent (skipped, not
    sent, no client), the provider refused with an error status before answering, or no connection was
    made. A timeout, a dropped connection or a stream broken mid-answer may have been billed: unknown."""
    if isinstance(error, NotSentError | CircuitOpenError | BudgetExceeded | ProviderNotReady | SamplingDeclined):
        return True
    status = getattr(error, "status", None)
    if isinstance(status, int) and status >= 400:
        return True
    cause: BaseException | None = error.__cause__
    for _ in range(8):  # the SDK's exception, and the transport's under it (a chain is short; never loop)
        if cause is None:
            break
        if isinstance(cause, ConnectionRefusedError) or type(cause).__name__ == "ConnectError":
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def usd(value: Decimal | None) -> float | None:
    """A cost as the trace shows it: a float of dollars (to the nano-dollar), None when unknown."""
    return None if value is None else float(round(value, 9))
