"""Model id → provider adapter and the provider's own model name.

The prefixes are a contract (DESIGN.md): `ollama/<name>`, `gemini-*`, `gemini/<name>`,
`vertex/<name>`, `claude-*`, `anthropic/<name>`, `openai/<name>`, `<endpoint>/<name>` for
a named OpenAI-compatible endpoint, and `client` / `client/<hint>`. Each provider's spec states
its own (adapters/spec.py); this module reads them, in the order adapters/providers.py lists them,
from the settings it is given (`Settings.specs`). Aliases from config are expanded first; an empty
id means the configured default. Adapters are built on first use (so start-up imports no SDK) and
kept, one per provider, until `aclose()`.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio

from mcp_llm.adapters.base import LLMAdapter, Timeouts
from mcp_llm.adapters.providers import spec_named
from mcp_llm.adapters.spec import ProviderSpec
from mcp_llm.config import ModelEntry, ProviderTable, Settings
from mcp_llm.errors import ProviderNotReady, UnknownModelError, clip
from mcp_llm.words import words

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
    # Provider-specific route data from the prefix (`Prefix.options`), handed to the adapter as
    # `Request.options`: `vertex/…` carries {"vertex": True}, Gemini on Vertex AI whatever the backend.
    options: Mapping[str, Any] = field(default_factory=dict, hash=False)


def _import_all(modules: Iterable[str]) -> None:
    for module in modules:
        importlib.import_module(module)


def _full_id(spec: ProviderSpec, name: str, model_id: str) -> str:
    """A config entry under `[providers.X]` may omit X's prefix: `llama3.2` there is `ollama/llama3.2`.
    An endpoint's models are always `<endpoint>/<model>`."""
    if not spec.endpoints and any(model_id.startswith(prefix.text) for prefix in spec.prefixes):
        return model_id
    return f"{name}/{model_id}"


def full_id(provider: str, model_id: str) -> str:
    """`_full_id` for a built-in provider by name (an unknown one is taken for an endpoint)."""
    try:
        spec = spec_named(provider)
    except KeyError:
        return f"{provider}/{model_id}"
    return _full_id(spec, provider, model_id)


def timeouts(settings: Settings) -> Timeouts:
    defaults = settings.defaults
    return Timeouts(total_s=defaults.timeout_s, connect_s=defaults.connect_timeout_s,
                    first_response_s=defaults.first_response_timeout_s)


_SAFE_NATIVE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,199}")


class Registry:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.specs = settings.specs
        self._adapters: dict[str, LLMAdapter] = {}
        self._discovered: set[str] = set()
        self._imported: set[str] = set()

    # --- providers -------------------------------------------------------------------------

    def tables(self) -> list[ProviderTable]:
        """Every provider's table, endpoints included (they may be added at run time: discovery)."""
        return self.settings.provider_tables()

    def table(self, provider: str) -> ProviderTable | None:
        return next((table for table in self.tables() if table.name == provider), None)

    def spec_of(self, provider: str) -> ProviderSpec | None:
        table = self.table(provider)
        return table.spec if table else None

    def label(self, provider: str) -> str:
        """How messages name a provider: its spec's label (an endpoint's says which)."""
        table = self.table(provider)
        if table is None:
            return repr(provider)
        return f"the {table.spec.label} {provider!r}" if table.spec.endpoints else table.spec.label

    def hosts(self, provider: str) -> list[str]:
        """The base URLs the provider serves from, as its spec says what a host is (none: not at an address)."""
        table = self.table(provider)
        return table.spec.hosts(table.section) if table else []

    def schema_dialect(self, provider: str) -> str | None:
        """The schema package's dialect this provider is sent (None: the caller's schema as is)."""
        spec = self.spec_of(provider)
        return spec.schema_dialect if spec else None

    def call_scoped(self) -> list[ProviderSpec]:
        """The providers reached through the MCP call itself (the client's own model)."""
        return [spec for spec in self.specs if spec.call_scoped]

    # --- ids -------------------------------------------------------------------------------

    def configured_models(self) -> list[ModelEntry]:
        entries: list[ModelEntry] = []
        for table in self.tables():
            entries.extend(entry.model_copy(update={"id": _full_id(table.spec, table.name, entry.id)})
                           for entry in table.section.entries())
        return entries

    def provider_names(self) -> list[str]:
        """Every provider a caller may name but those reached through the call: the built-in ones, then
        each OpenAI-compatible endpoint."""
        return [table.name for table in self.tables() if not table.spec.call_scoped]

    def configured_entry(self, model_id: str) -> ModelEntry | None:
        """The entry `model_id` names, with its full id; looked up without copying every entry (each
        call looks up its model and chain)."""
        for table in self.tables():
            for entry in table.section.entries():
                if _full_id(table.spec, table.name, entry.id) == model_id:
                    return entry.model_copy(update={"id": model_id})
        return None

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
            hint=f"Pass {words().model}{self.examples()}, set {what} in the config file, "
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
                hint=f"Pass a model id{self.examples()}; {words().list_models} shows what is available.",
            )
        resolved = self.expand_alias(requested)
        entry = self.configured_entry(resolved)
        if entry is not None and not entry.enabled:
            raise UnknownModelError(
                f"Model {clip(resolved)} is disabled in the config file.",
                hint=f"Set enabled = true for it, or choose another model ({words().list_models}).",
            )
        route = self.route_for(resolved)
        if route is None:
            raise self._unknown(requested)
        if (route.native and not _SAFE_NATIVE_NAME.fullmatch(route.native)) or ".." in route.native.split("/"):
            # the native name goes into provider URLs (Gemini's `models/<name>:generateContent`,
            # with the key attached): no path tricks, queries, fragments or escapes
            raise UnknownModelError(
                f"Model id {clip(requested)} holds characters no model name has.",
                hint=f"Model names are letters, digits and . _ - : / @ + ({words().list_models} shows the ids).",
            )
        return route

    def route_for(self, model_id: str) -> Route | None:
        """The route an id takes by its prefix alone (no alias, default or enabled check): a whole id a
        provider claims, else the first prefix that matches (provider by provider, in order), else
        `<endpoint>/<name>` for an endpoint that exists."""
        for spec in self.specs:
            if model_id in spec.ids:
                return Route(model_id, spec.name, "")
        for spec in self.specs:
            for prefix in spec.prefixes:
                if model_id.startswith(prefix.text) and len(model_id) > len(prefix.text):
                    native = model_id[len(prefix.text) :] if prefix.strip else model_id
                    return Route(model_id, spec.name, native, options=prefix.options)
        endpoint, sep, native = model_id.partition("/")
        table = self.table(endpoint) if sep and native else None
        if table is not None and table.spec.endpoints:
            return Route(model_id, endpoint, native)
        return None

    def _unknown(self, model_id: str) -> UnknownModelError:
        prefixes = [prefix.text for spec in self.specs for prefix in spec.prefixes]
        prefixes += [whole for spec in self.specs for whole in spec.ids]
        prefixes += [f"{table.name}/" for table in self.tables() if table.spec.endpoints]
        candidates = self.known_ids()
        close: list[str] = []
        if len(model_id) <= MAX_MODEL_ID_CHARS:  # resolve() refuses longer ones first; kept for other callers
            import difflib  # only for a did-you-mean

            close = difflib.get_close_matches(model_id, candidates, n=3, cutoff=0.5)
            close += [c for c in candidates if c.endswith("/" + model_id) and c not in close]
        hint = f"Use one of the prefixes {', '.join(prefixes)}"
        if close:
            hint = f"Did you mean {', '.join(repr(c) for c in close[:3])}? " + hint
        return UnknownModelError(
            f"Unknown model id {clip(model_id)}.",
            hint=hint + f"{self.examples()}, or an alias from [aliases]; "
            f"{words().list_models} shows what is available.",
        )

    # --- adapters --------------------------------------------------------------------------

    def adapter(self, provider: str) -> LLMAdapter:
        """The provider's adapter, built on first use."""
        if provider in self._adapters:
            return self._adapters[provider]
        table = self.table(provider)
        if table is None:  # the tools check names first: this is a caller of ours asking for what is not there
            raise ProviderNotReady(f"{provider!r} is not a provider of this server.", provider=provider,
                                   hint=f"{words().list_models} and {words().provider_health} show the providers "
                                   "there are.")
        if table.spec.build is None:
            raise ProviderNotReady(
                f"{self.label(provider)} is a known provider, but this version of mcp_llm has no adapter for it yet.",
                provider=provider,
                hint=f"Use an Ollama model ('ollama/<name>') for now; {words().list_models} shows those available.",
            )
        adapter = self._adapters[provider] = table.spec.build(table.section, timeouts(self.settings), provider)
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
        return [table.name for table in self.tables() if table.spec.build is not None]

    def built_adapters(self) -> dict[str, LLMAdapter]:
        return dict(self._adapters)

    async def aclose(self) -> None:
        adapters, self._adapters = list(self._adapters.values()), {}
        for adapter in adapters:
            await adapter.aclose()
