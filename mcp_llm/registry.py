"""Model id → provider adapter and the provider's own model name.

The prefixes are a contract (DESIGN.md): `ollama/<name>`, `gemini-*`, `gemini/<name>`,
`vertex/<name>`, `claude-*`, `anthropic/<name>`, `openai/<name>`, `<endpoint>/<name>` for
a named OpenAI-compatible endpoint, and `client` / `client/<hint>`. Aliases from config
are expanded first; an empty id means the configured default. Adapters are built on first
use (so start-up imports no SDK) and kept, one per provider, until `aclose()`.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import anyio

from mcp_llm.adapters.base import LLMAdapter, Timeouts
from mcp_llm.config import ModelEntry, Settings
from mcp_llm.errors import ProviderNotReady, UnknownModelError, clip

MAX_ALIAS_DEPTH = 8
# No id is longer: a native name is at most 200 characters (`_SAFE_NATIVE_NAME`), after a prefix or an
# endpoint name. A longer one is refused before any lookup, and "did you mean" (difflib, whose cost
# grows with the id's length) is only tried on ids this short.
MAX_MODEL_ID_CHARS = 256


@dataclass(frozen=True)
class Route:
    model_id: str  # the id as the user knows it, after alias expansion
    provider: str  # ollama | gemini | anthropic | openai | client | an openai_compatible endpoint name
    native: str  # the provider's own name for the model
    vertex: bool = False  # `vertex/…`: Gemini on Vertex AI whatever the configured backend


# (prefix, provider, strip the prefix?), longest match first where they overlap
PREFIXES: tuple[tuple[str, str, bool], ...] = (
    ("ollama/", "ollama", True),
    ("gemini/", "gemini", True),
    ("vertex/", "gemini", True),
    ("gemini-", "gemini", False),
    ("anthropic/", "anthropic", True),
    ("claude-", "anthropic", False),
    ("openai/", "openai", True),
    ("client/", "client", True),
)

CONFIGURABLE_PROVIDERS = ("ollama", "gemini", "anthropic", "openai")

PROVIDER_LABELS = {
    "ollama": "Ollama",
    "gemini": "Gemini",
    "anthropic": "Anthropic",
    "openai": "OpenAI",
    "client": "the MCP client's own model (sampling)",
}

def _import_all(modules: Iterable[str]) -> None:
    for module in modules:
        importlib.import_module(module)


def full_id(provider: str, model_id: str) -> str:
    """A config entry under `[providers.X]` may omit X's prefix: `llama3.2` there is `ollama/llama3.2`."""
    for prefix, owner, _ in PREFIXES:
        if owner == provider and model_id.startswith(prefix):
            return model_id
    return f"{provider}/{model_id}"


# Providers whose adapter this version ships; the others are known prefixes that say so.
AdapterFactory = Callable[[Settings], LLMAdapter]


def timeouts(settings: Settings) -> Timeouts:
    defaults = settings.defaults
    return Timeouts(total_s=defaults.timeout_s, connect_s=defaults.connect_timeout_s,
                    first_response_s=defaults.first_response_timeout_s)


def _build_ollama(settings: Settings) -> LLMAdapter:
    from mcp_llm.adapters.ollama import OllamaAdapter

    return OllamaAdapter(settings.providers.ollama, timeouts=timeouts(settings))


def _build_gemini(settings: Settings) -> LLMAdapter:
    from mcp_llm.adapters.gemini import GeminiAdapter

    return GeminiAdapter(settings.providers.gemini, timeouts=timeouts(settings))


def _build_anthropic(settings: Settings) -> LLMAdapter:
    from mcp_llm.adapters.anthropic import AnthropicAdapter

    return AnthropicAdapter(settings.providers.anthropic, timeouts=timeouts(settings))


def _build_client(settings: Settings) -> LLMAdapter:
    from mcp_llm.adapters.sampling import SamplingAdapter

    return SamplingAdapter(settings.providers.client)


def _build_openai(settings: Settings) -> LLMAdapter:
    from mcp_llm.adapters.openai import OpenAIAdapter

    return OpenAIAdapter(settings.providers.openai, timeouts=timeouts(settings))


def _build_compatible(settings: Settings, name: str) -> LLMAdapter:
    """`[providers.openai_compatible.<name>]`: the OpenAI adapter under the endpoint's own name."""
    from mcp_llm.adapters.openai import OpenAIAdapter

    return OpenAIAdapter(settings.providers.openai_compatible[name], timeouts=timeouts(settings), name=name)


ADAPTER_FACTORIES: dict[str, AdapterFactory] = {
    "ollama": _build_ollama,
    "gemini": _build_gemini,
    "anthropic": _build_anthropic,
    "client": _build_client,
    "openai": _build_openai,
}


_SAFE_NATIVE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,199}")


class Registry:
    def __init__(self, settings: Settings, factories: dict[str, AdapterFactory] | None = None) -> None:
        self.settings = settings
        self._factories = dict(ADAPTER_FACTORIES if factories is None else factories)
        self._adapters: dict[str, LLMAdapter] = {}
        self._discovered: set[str] = set()
        self._imported: set[str] = set()

    # --- ids -------------------------------------------------------------------------------

    def configured_models(self) -> list[ModelEntry]:
        entries: list[ModelEntry] = []
        for name in CONFIGURABLE_PROVIDERS:
            provider = self.settings.provider_settings(name)
            if provider is not None:
                entries.extend(entry.model_copy(update={"id": full_id(name, entry.id)}) for entry in provider.models)
        for name, endpoint in self.settings.providers.openai_compatible.items():
            entries.extend(ModelEntry(id=f"{name}/{model}") for model in endpoint.models)
        return entries

    def provider_names(self) -> list[str]:
        """Every provider a caller may name: the built-in ones, then each OpenAI-compatible endpoint."""
        return [*CONFIGURABLE_PROVIDERS, *self.settings.providers.openai_compatible]

    def configured_entry(self, model_id: str) -> ModelEntry | None:
        return next((entry for entry in self.configured_models() if entry.id == model_id), None)

    def remember_discovered(self, model_ids: Iterable[str]) -> None:
        """Ids seen in a provider's listing, so "did you mean" can suggest them."""
        self._discovered.update(model_ids)

    def known_ids(self) -> list[str]:
        ids = [entry.id for entry in self.configured_models()]
        ids += list(self.settings.aliases)
        ids += sorted(self._discovered)
        return list(dict.fromkeys(ids))

    def configured_default(self, *, vision: bool) -> str | None:
        """`defaults.vision_model` / `defaults.model`, else the first enabled configured model; None if none."""
        defaults = self.settings.defaults
        chosen = (defaults.vision_model if vision else "") or defaults.model
        if chosen:
            return chosen
        enabled = [entry for entry in self.configured_models() if entry.enabled and (entry.vision or not vision)]
        return enabled[0].id if enabled else None

    def default_model(self, *, vision: bool) -> str:
        chosen = self.configured_default(vision=vision)
        if chosen:
            return chosen
        what = "defaults.vision_model (or defaults.model)" if vision else "defaults.model"
        raise UnknownModelError(
            "No model was given and no default is configured.",
            hint=f"Pass `model`{self.examples()}, set {what} in the config file, "
            "or use an MCP client that supports sampling (its own model answers then).",
        )

    def examples(self) -> str:
        """` (e.g. 'a', 'b')` from the ids that exist (config or discovery); empty when none is known."""
        ids = [i for i in self.known_ids() if i not in self.settings.aliases][:3] or list(self.settings.aliases)[:3]
        return f" (e.g. {', '.join(repr(i) for i in ids)})" if ids else ""

    def expand_alias(self, model_id: str) -> str:
        seen = [model_id]
        while model_id in self.settings.aliases:
            model_id = self.settings.aliases[model_id]
            if model_id in seen or len(seen) > MAX_ALIAS_DEPTH:
                raise UnknownModelError(
                    f"Alias loop: {' → '.join([*seen, model_id])}.", hint="Fix [aliases] in the config file."
                )
            seen.append(model_id)
        return model_id

    def resolve(self, model_id: str | None, *, vision: bool = False) -> Route:
        requested = (model_id or "").strip() or self.default_model(vision=vision)
        if len(requested) > MAX_MODEL_ID_CHARS and requested not in self.settings.aliases:
            raise UnknownModelError(
                f"Model id {clip(requested)} is too long to be one (at most {MAX_MODEL_ID_CHARS} characters).",
                hint=f"Pass a model id{self.examples()}; list_models shows what is available.",
            )
        resolved = self.expand_alias(requested)
        entry = self.configured_entry(resolved)
        if entry is not None and not entry.enabled:
            raise UnknownModelError(
                f"Model {clip(resolved)} is disabled in the config file.",
                hint="Set enabled = true for it, or choose another model (list_models).",
            )
        route = self.route_for(resolved)
        if route is None:
            raise self._unknown(requested)
        if (route.native and not _SAFE_NATIVE_NAME.fullmatch(route.native)) or ".." in route.native.split("/"):
            # the native name goes into provider URLs (Gemini's `models/<name>:generateContent`,
            # with the key attached): no path tricks, queries, fragments or escapes
            raise UnknownModelError(
                f"Model id {clip(requested)} holds characters no model name has.",
                hint="Model names are letters, digits and . _ - : / @ + (list_models shows the ids).",
            )
        return route

    def route_for(self, model_id: str) -> Route | None:
        """The route an id takes by its prefix alone (no alias, default or enabled check)."""
        if model_id == "client":
            return Route(model_id, "client", "")
        for prefix, provider, strip in PREFIXES:
            if model_id.startswith(prefix) and len(model_id) > len(prefix):
                native = model_id[len(prefix) :] if strip else model_id
                return Route(model_id, provider, native, vertex=prefix == "vertex/")
        endpoint, sep, native = model_id.partition("/")
        if sep and native and endpoint in self.settings.providers.openai_compatible:
            return Route(model_id, endpoint, native)
        return None

    def _unknown(self, model_id: str) -> UnknownModelError:
        prefixes = [prefix for prefix, _, _ in PREFIXES] + ["client"]
        prefixes += [f"{name}/" for name in self.settings.providers.openai_compatible]
        candidates = self.known_ids()
        close: list[str] = []
        if len(model_id) <= MAX_MODEL_ID_CHARS:  # resolve() refuses longer ones first; kept for other callers
            close = difflib.get_close_matches(model_id, candidates, n=3, cutoff=0.5)
            close += [c for c in candidates if c.endswith("/" + model_id) and c not in close]
        hint = f"Use one of the prefixes {', '.join(prefixes)}"
        if close:
            hint = f"Did you mean {', '.join(repr(c) for c in close[:3])}? " + hint
        return UnknownModelError(
            f"Unknown model id {clip(model_id)}.",
            hint=hint + f"{self.examples()}, or an alias from [aliases]; list_models shows what is available.",
        )

    # --- adapters --------------------------------------------------------------------------

    def adapter(self, provider: str) -> LLMAdapter:
        """The provider's adapter, built on first use."""
        if provider in self._adapters:
            return self._adapters[provider]
        factory = self._factories.get(provider)
        if factory is None and provider in self.settings.providers.openai_compatible:
            factory = functools.partial(_build_compatible, name=provider)
        if factory is None:
            label = PROVIDER_LABELS.get(provider, f"the OpenAI-compatible endpoint {provider!r}")
            raise ProviderNotReady(
                f"{label} is a known provider, but this version of mcp_llm has no adapter for it yet.",
                provider=provider,
                hint="Use an Ollama model ('ollama/<name>') for now; list_models shows those available.",
            )
        adapter = self._adapters[provider] = factory(self.settings)
        return adapter

    async def ready_adapter(self, provider: str) -> LLMAdapter:
        """The adapter, its SDK imported in a worker thread on first use: importing anthropic takes
        ~2 s, which must not stall the event loop and every other call with it."""
        adapter = self.adapter(provider)
        if provider not in self._imported:
            await anyio.to_thread.run_sync(_import_all, adapter.sdk_modules)
            self._imported.add(provider)
        return adapter

    def providers_with_adapters(self) -> list[str]:
        return [*self._factories, *self.settings.providers.openai_compatible]

    def built_adapters(self) -> dict[str, LLMAdapter]:
        return dict(self._adapters)

    async def aclose(self) -> None:
        adapters, self._adapters = list(self._adapters.values()), {}
        for adapter in adapters:
            await adapter.aclose()
