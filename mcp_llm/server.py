"""The MCP server: four thin tools and the preset resources.

Each tool parses its arguments, calls the router (or the registry) once, and returns a
pydantic model, which the SDK publishes as the tool's output schema and `structuredContent`.
Our errors become tool errors here, and only here, with a message that says what to do.
Building the server imports no provider SDK and touches no network.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import anyio
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from mcp_types import ToolAnnotations
from pydantic import BaseModel, Field

from mcp_llm import __version__
from mcp_llm.adapters.base import Health, ModelInfo
from mcp_llm.config import Settings
from mcp_llm.errors import InputError, LLMError
from mcp_llm.images import load_image
from mcp_llm.presets import PRESETS
from mcp_llm.registry import CONFIGURABLE_PROVIDERS, Registry
from mcp_llm.router import CallSpec, Router, Trace
from mcp_llm.structured import parse_schema_argument

log = logging.getLogger("mcp_llm")

HEALTH_CACHE_S = 5.0
DISCOVERY_CACHE_S = 30.0
DISCOVERY_TIMEOUT_S = 10.0

INSTRUCTIONS = """\
Reach any configured LLM (local Ollama models first, cloud models as fallback) and get answers you can trust:
generate_structured returns JSON that always validates against the schema you pass (or a preset name:
reverse_prompt, semantic_analysis, visual_prompt_score); analyze_image does the same for an image, or returns
text. Call list_models to see model ids, provider_health when a call fails."""


class StructuredResult(Trace):
    data: Any = Field(description="The answer; it validates against the schema that was passed.")


class ImageResult(Trace):
    text: str | None = Field(default=None, description="The answer, when no schema was passed.")
    data: Any = Field(default=None, description="The answer as JSON valid against the schema, when one was passed.")


class ModelList(BaseModel):
    models: list[ModelInfo]


class HealthReport(BaseModel):
    providers: list[Health]


@contextmanager
def tool_errors(tool: str) -> Iterator[None]:
    """Our anticipated errors → a tool error the assistant can act on; the server stays up."""
    try:
        yield
    except LLMError as exc:
        log.info("%s failed: %s: %s", tool, type(exc).__name__, exc.message)
        raise ToolError(exc.user_message()) from exc


class App:
    """What the tools share: the registry (adapters), the router, and short-lived caches."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.registry = Registry(settings)
        self.router = Router(self.registry)
        self._health: dict[str, tuple[float, Health]] = {}
        self._discovered: dict[str, tuple[float, list[ModelInfo] | None]] = {}

    # --- list_models -----------------------------------------------------------------------

    async def models(self, provider: str | None, refresh: bool) -> list[ModelInfo]:
        providers = self._check_provider(provider)
        discovered: dict[str, list[ModelInfo] | None] = {}

        async def discover(name: str) -> None:
            discovered[name] = await self._discover(name, refresh)

        async with anyio.create_task_group() as tg:
            for name in providers:
                if name in self.registry.providers_with_adapters():
                    tg.start_soon(discover, name)

        models: list[ModelInfo] = []
        for entry in self.registry.configured_models():
            route = self.registry.route_for(entry.id)
            owner = route.provider if route else entry.id.split("/", 1)[0]
            if owner not in providers:
                continue
            available: bool | None = None  # not asked: this version cannot list that provider
            match = None
            if owner in discovered:
                found = discovered[owner]
                match = _find(found, entry.id) if found is not None else None
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
                )
            )
        listed = {m.id for m in models}
        for found in discovered.values():
            models.extend(m for m in found or [] if m.id not in listed and _canonical(m.id) not in listed)
        return models

    async def _discover(self, provider: str, refresh: bool) -> list[ModelInfo] | None:
        """The provider's own listing, cached briefly; None when it cannot be reached."""
        cached = self._discovered.get(provider)
        if cached and not refresh and time.monotonic() - cached[0] < DISCOVERY_CACHE_S:
            return cached[1]
        adapter = await self.registry.ready_adapter(provider)
        if refresh:
            adapter.forget_models()
        found: list[ModelInfo] | None = None
        with anyio.move_on_after(DISCOVERY_TIMEOUT_S):
            try:
                found = await adapter.list_models()
            except LLMError as exc:
                log.info("listing %s models failed: %s", provider, exc.message)
        if found is not None:
            self.registry.remember_discovered(m.id for m in found)
        self._discovered[provider] = (time.monotonic(), found)
        return found

    # --- provider_health -------------------------------------------------------------------

    async def health(self, provider: str | None) -> list[Health]:
        providers = self._check_provider(provider)
        results: dict[str, Health] = {}

        async def probe(name: str) -> None:
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
        return cached[1].model_copy(update={"circuit": self.router.breakers.state(provider)})

    async def _fresh_probe(self, provider: str) -> Health:
        if provider in self.registry.providers_with_adapters():
            return await (await self.registry.ready_adapter(provider)).health()
        settings = self.settings.provider_settings(provider)
        return Health(
            provider=provider,
            status="unconfigured",
            endpoint=settings.endpoint if settings else None,
            has_api_key=bool(settings and settings.has_api_key),
            detail="This version of mcp_llm has no adapter for this provider yet.",
        )

    def _check_provider(self, provider: str | None) -> list[str]:
        known = list(CONFIGURABLE_PROVIDERS)
        if provider is None or provider == "":
            return known
        if provider not in known:
            raise ToolError(f"Unknown provider {provider!r}. Use one of: {', '.join(known)}, or leave it empty.")
        return [provider]

    async def aclose(self) -> None:
        await self.registry.aclose()


def _timeout(timeout_s: float | None) -> float | None:
    if timeout_s is not None and timeout_s <= 0:
        raise InputError(f"timeout_s must be positive, not {timeout_s}.",
                         hint="Pass seconds, e.g. 60, or leave it out.")
    return timeout_s


def _canonical(model_id: str) -> str:
    """Ollama's implicit tag: `ollama/llama3.2` is `ollama/llama3.2:latest`."""
    return model_id.removesuffix(":latest")


def _find(models: list[ModelInfo], model_id: str) -> ModelInfo | None:
    return next((m for m in models if _canonical(m.id) == _canonical(model_id)), None)


class StaticTokenVerifier:
    """Over HTTP: the one bearer token from `server.token_env`, compared in constant time."""

    def __init__(self, token: str) -> None:
        self._token = token.encode()

    async def verify_token(self, token: str) -> AccessToken | None:
        if hmac.compare_digest(token.encode(), self._token):
            return AccessToken(token="static", client_id="mcp-llm", scopes=[])
        return None


def build_server(settings: Settings, *, http_token: str | None = None, http_url: str | None = None) -> MCPServer:
    """The server with its tools; `http_token` makes every HTTP request carry that bearer token."""
    app = App(settings)
    auth: dict[str, Any] = {}
    if http_token is not None:
        url = http_url or f"http://{settings.server.host}:{settings.server.port}"
        auth = {
            "token_verifier": StaticTokenVerifier(http_token),
            "auth": AuthSettings(issuer_url=url, resource_server_url=f"{url}/mcp"),
        }

    @asynccontextmanager
    async def lifespan(_: MCPServer) -> AsyncIterator[App]:
        try:
            yield app
        finally:
            await app.aclose()

    server = MCPServer(
        "mcp-llm",
        title="mcp_llm",
        instructions=INSTRUCTIONS,
        version=__version__,
        lifespan=lifespan,
        **auth,
    )
    reads = ToolAnnotations(readOnlyHint=True, openWorldHint=True, idempotentHint=False)

    @server.tool(title="Generate schema-valid JSON", annotations=reads)
    async def generate_structured(
        prompt: str,
        schema: dict[str, Any] | str,
        model: str | None = None,
        system: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        timeout_s: float | None = None,
    ) -> StructuredResult:
        """Ask an LLM and get back JSON that validates against `schema`.

        `schema` is a JSON Schema object, or a preset name (reverse_prompt, semantic_analysis,
        visual_prompt_score). `model` is an id such as 'ollama/llama3.2' (list_models shows them);
        empty means the configured default. Invalid answers are re-asked with the errors, and
        other models are tried when configured as fallbacks; the trace fields say what happened.
        `timeout_s` bounds the whole call (default: the configured defaults.timeout_s).
        """
        with tool_errors("generate_structured"):
            checked, _ = parse_schema_argument(schema)
            spec = CallSpec(prompt=prompt, schema=checked, model=model, system=system,
                            temperature=temperature, max_tokens=max_tokens, timeout_s=_timeout(timeout_s))
            outcome = await app.router.run(spec)
            return StructuredResult(data=outcome.data, **outcome.trace.model_dump())

    @server.tool(title="Analyze an image", annotations=reads)
    async def analyze_image(
        image: str,
        prompt: str,
        schema: dict[str, Any] | str | None = None,
        model: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        timeout_s: float | None = None,
    ) -> ImageResult:
        """Ask a vision model about an image; get text, or JSON valid against `schema` when one is given.

        `image` is an absolute file path (inside the configured image roots), a data: URI, or raw
        base64 (http(s) URLs only when enabled in config). `schema` is a JSON Schema object or a
        preset name. `model` empty means the configured vision default. `timeout_s` bounds the call.
        """
        with tool_errors("analyze_image"):
            checked = parse_schema_argument(schema)[0] if schema not in (None, "") else None
            loaded = await load_image(image, settings.images)
            spec = CallSpec(prompt=prompt, schema=checked, model=model, temperature=temperature,
                            max_tokens=max_tokens, images=(loaded,), timeout_s=_timeout(timeout_s))
            outcome = await app.router.run(spec)
            trace = outcome.trace.model_dump()
            if checked is None:
                return ImageResult(text=outcome.text, **trace)
            return ImageResult(data=outcome.data, **trace)

    @server.tool(title="List models", annotations=ToolAnnotations(readOnlyHint=True, openWorldHint=True))
    async def list_models(provider: str | None = None, refresh: bool = False) -> ModelList:
        """The models configured and those the providers report, with what each can do.

        `source` is 'config' or 'discovered'; `available` says whether the provider has the model
        (null when it was not asked). `refresh` skips the short cache.
        """
        with tool_errors("list_models"):
            return ModelList(models=await app.models(provider, refresh))

    @server.tool(title="Provider health", annotations=ToolAnnotations(readOnlyHint=True, openWorldHint=True))
    async def provider_health(provider: str | None = None) -> HealthReport:
        """Whether each provider is reachable, how fast, its version, and whether a key is set.

        Probes never run a completion, and are cached for a few seconds. Status is ok, degraded,
        down or unconfigured; `detail` says what to do when it is not ok.
        """
        with tool_errors("provider_health"):
            return HealthReport(providers=await app.health(provider))

    @server.resource("mcp-llm://presets", title="Schema presets", mime_type="application/json")
    def presets_index() -> str:
        """The names of the schema presets `schema` accepts, with their descriptions."""
        return json.dumps({name: schema.get("description", "") for name, schema in PRESETS.items()}, indent=2)

    @server.resource("mcp-llm://presets/{name}", title="A schema preset", mime_type="application/json")
    def preset(name: str) -> str:
        """The JSON Schema behind one preset name."""
        if name not in PRESETS:
            raise ResourceError(f"No preset {name!r}; the presets are {', '.join(PRESETS)}.")
        return json.dumps(PRESETS[name], indent=2)

    return server
