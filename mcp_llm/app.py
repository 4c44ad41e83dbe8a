"""What the tools share: the registry (adapters), the router, the merged model list and health.

`list_models` merges the models configured with those each provider reports (cached briefly), each
with the hosts that serve it; `provider_health` runs each provider's free probe (cached briefly) and
adds the circuit breaker's state as it is now, and each host's row (a provider with several hosts:
what each has loaded, its circuit and its calls in flight, from hosts.py). A provider reached
through the MCP call itself (the client's own model) is neither listed nor probed: its spec reads
both from the caller's `ClientCall`. The MCP server and the command line both use one `App`.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import time
from typing import TYPE_CHECKING, Any

import anyio

from mcp_llm.adapters.base import Health, HostHealth, ModelInfo
from mcp_llm.config import Settings, StateSettings
from mcp_llm.errors import InputError, LLMError, clip
from mcp_llm.registry import Registry
from mcp_llm.state import LocalState, State

if TYPE_CHECKING:
    from mcp_llm.client_call import ClientCall
    from mcp_llm.router import Router
    from mcp_llm.zero_config import LocalServer

log = logging.getLogger("mcp_llm")

HEALTH_CACHE_S = 5.0
DISCOVERY_CACHE_S = 30.0
DISCOVERY_TIMEOUT_S = 10.0


class App:
    """What the tools share: the registry (adapters), the router, and short-lived caches."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.registry = Registry(settings)
        self.state: State = state_for(settings.state)  # circuits, limits, stats: this process's, or the fleet's
        self._health: dict[str, tuple[float, Health]] = {}
        self._discovered: dict[str, tuple[float, list[ModelInfo] | None]] = {}
        self.discovery_errors: dict[str, str] = {}  # why a provider's last listing failed, for the CLI

    @functools.cached_property
    def router(self) -> Router:
        """Built on first use: the server answers `initialize` without importing the router (issue 23)."""
        from mcp_llm.router import Router

        return Router(self.registry, self.state)

    # --- list_models -----------------------------------------------------------------------

    async def models(self, provider: str | None, refresh: bool, client: ClientCall | None = None) -> list[ModelInfo]:
        """`client` is the caller's MCP client: whether `client` (sampling) is available depends on it.

        The local model servers found on this machine are listed too (source `discovered`), as
        endpoints of their own (`llamacpp/<model>`): zero_config.py finds them, and makes them routable.
        """
        await self.local_servers()
        providers = self._check_provider(provider)
        local = self.router.picker.discovery.inserted()
        discovered: dict[str, list[ModelInfo] | None] = {name: server.model_infos() for name, server in local.items()}

        async def discover(name: str) -> None:
            discovered[name] = await self._discover(name, refresh)

        askable = set(self.registry.providers_with_adapters()) - set(local)  # a found server is listed already
        askable -= {spec.name for spec in self.registry.call_scoped()}  # its models depend on the caller
        async with anyio.create_task_group() as tg:
            for name in providers:
                if name in askable:
                    tg.start_soon(discover, name)

        models: list[ModelInfo] = []
        for entry in self.registry.configured_models():
            route = self.registry.route_for(entry.id)
            owner = route.provider if route else entry.id.split("/", 1)[0]
            if owner not in providers:
                continue
            available: bool | None = None  # not asked, or the provider could not be reached: unknown
            match = None
            if discovered.get(owner) is not None:
                match = _find(discovered[owner] or [], entry.id)
                available = match is not None
            models.append(
                ModelInfo(
                    id=entry.id,
                    provider=owner,
                    label=entry.label or entry.id.split("/", 1)[-1],
                    vision=entry.vision or bool(match and match.vision),
                    structured=True,
                    enabled=entry.enabled,
                    available=available,
                    source="config",
                    hosts=match.hosts if match else [],
                )
            )
        listed = {m.id for m in models}
        for name, found in discovered.items():
            if name not in providers:
                continue
            models.extend(m for m in found or [] if m.id not in listed and _canonical(m.id) not in listed)
        if client is not None:  # the command line has no MCP client to sample
            for spec in self.registry.call_scoped():
                if spec.name in providers and spec.call_models is not None:
                    models.extend(spec.call_models(client))
        return models

    async def local_servers(self) -> list[LocalServer]:
        """The model servers running on this machine (cached briefly; none when discovery is off)."""
        return await self.router.picker.discovery.servers()

    async def _discover(self, provider: str, refresh: bool) -> list[ModelInfo] | None:
        """The provider's own listing, cached briefly; None when it cannot be reached."""
        cached = self._discovered.get(provider)
        if cached and not refresh and time.monotonic() - cached[0] < DISCOVERY_CACHE_S:
            return cached[1]
        not_ready = self.registry.adapter(provider).not_ready()
        if not_ready is not None:  # no key, say: nothing to ask, and no SDK to import
            self.discovery_errors[provider] = not_ready.user_message()
            return None
        adapter = await self.registry.ready_adapter(provider)
        if refresh:
            adapter.forget_models()
        found: list[ModelInfo] | None = None
        self.discovery_errors[provider] = f"listing its models took over {DISCOVERY_TIMEOUT_S:.0f} s"
        with anyio.move_on_after(DISCOVERY_TIMEOUT_S):
            try:
                found = await adapter.list_models()
                del self.discovery_errors[provider]
            except LLMError as exc:
                log.info("listing %s models failed: %s", provider, exc.message)
                self.discovery_errors[provider] = exc.user_message()
        if found is not None:
            self.registry.remember_discovered(m.id for m in found)
        self._discovered[provider] = (time.monotonic(), found)
        return found

    # --- provider_health -------------------------------------------------------------------

    async def health(self, provider: str | None, client: ClientCall | None = None) -> list[Health]:
        """`client` is the caller's MCP client; its health is read from its capabilities, never by sampling.
        A local model server found on this machine has a row of its own."""
        await self.local_servers()
        providers = self._check_provider(provider)
        _ = self.router  # built now if not yet: it attaches its circuits and stats to the state
        await self.state.refresh()  # with shared state: the circuits as the fleet has them now
        results: dict[str, Health] = {}

        async def probe(name: str) -> None:
            spec = self.registry.spec_of(name)
            if spec is not None and spec.call_health is not None:  # read from the call, never probed
                results[name] = spec.call_health(client).model_copy(
                    update={"circuit": self.router.breakers.state(name), "hosts": []})
                return
            results[name] = await self._probe(name)

        async with anyio.create_task_group() as tg:
            for name in providers:
                tg.start_soon(probe, name)
        return [results[name] for name in providers]

    async def _probe(self, provider: str) -> Health:
        """The provider's own probe (cached briefly), with the circuit's state as it is now."""
        cached = self._health.get(provider)
        if cached is None or time.monotonic() - cached[0] >= HEALTH_CACHE_S:
            cached = self._health[provider] = (time.monotonic(), await self._fresh_probe(provider))
        row = cached[1]
        circuit = self.router.breakers.state(provider)
        fleet = self.router.fleets().get(provider)
        if fleet is not None:  # each host as it is now (its circuit, its calls in flight), not as cached
            return row.model_copy(update={"circuit": circuit, "hosts": fleet.rows()})
        host = self.router.single_host(provider)
        hosts = [HostHealth(host=host, status=row.status, latency_ms=row.latency_ms, circuit=circuit,
                            in_flight=self.router.limiter(provider).borrowed_tokens)] if host else []
        return row.model_copy(update={"circuit": circuit, "hosts": hosts})

    async def _fresh_probe(self, provider: str) -> Health:
        if provider in self.registry.providers_with_adapters():
            adapter = self.registry.adapter(provider)
            if adapter.not_ready() is not None:  # `unconfigured`, told without importing its SDK
                return await adapter.health()
            adapter = await self.registry.ready_adapter(provider)
            fleet = self.router.fleet(provider, adapter)
            if fleet is not None:  # several hosts: each asked now, the provider's row made from theirs
                await fleet.refresh()
                base = Health(provider=provider, status="down", endpoint=fleet.hosts[0].public,
                              has_api_key=bool((settings := self.settings.provider_settings(provider))
                                               and settings.has_api_key))
                return fleet.summary(base)
            return await adapter.health()
        settings = self.settings.provider_settings(provider)
        return Health(
            provider=provider,
            status="unconfigured",
            endpoint=next(iter(self.registry.hosts(provider)), None),
            has_api_key=bool(settings and settings.has_api_key),
            detail="This version of mcp_llm has no adapter for this provider yet.",
        )

    def _check_provider(self, provider: str | None) -> list[str]:
        known = [*self.registry.provider_names(), *(spec.name for spec in self.registry.call_scoped())]
        if provider is None or provider == "":
            return known
        if provider not in known:
            raise InputError(f"Unknown provider {clip(provider)}.",
                             hint=f"Use one of: {', '.join(known)}, or leave it empty.")
        return [provider]

    async def stats(self) -> dict[str, Any]:
        """`mcp-llm://stats`: usage since start, of the whole fleet when state is shared (`state` says which)."""
        _ = self.router  # built now if not yet: it attaches its circuits and stats to the state
        return await self.state.stats_snapshot()

    async def aclose(self) -> None:
        if "router" in self.__dict__:  # built (cached_property)
            await self.router.picker.aclose()
            await self.router.aclose()
        await self.state.aclose()
        await self.registry.aclose()


def state_for(config: StateSettings) -> State:
    """The state `[state]` asks for: Redis when its variable holds a URL (state_redis.py), else this process's."""
    if not config.redis_url_env:
        return LocalState()
    if config.redis_url is None:
        log.warning("state.redis_url_env names %s, which is not set: this replica keeps its circuits, limits and "
                    "stats to itself", config.redis_url_env)
        return LocalState(why=f"{config.redis_url_env} is not set")
    if importlib.util.find_spec("redis") is None:  # looked up, not imported
        log.warning("state.redis_url_env is set, but the redis package is not installed (pip install "
                    "'mcp-llm[redis]'): this replica keeps its circuits, limits and stats to itself")
        return LocalState(why="the redis package is not installed")
    from mcp_llm.state_redis import RedisState

    return RedisState(config.redis_url, config)


def _canonical(model_id: str) -> str:
    """Ollama's implicit tag: `ollama/llama3.2` is `ollama/llama3.2:latest`."""
    return model_id.removesuffix(":latest")


def _find(models: list[ModelInfo], model_id: str) -> ModelInfo | None:
    return next((m for m in models if _canonical(m.id) == _canonical(model_id)), None)
