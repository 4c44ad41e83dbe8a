"""A model for a call that names none when none is configured: first one the user runs on this machine.

In order:

1. **A local model server**, found by looking where people run them, all at once, each within
   `discovery.timeout_s`: Ollama at providers.ollama's endpoint (`$OLLAMA_HOST`, else
   localhost:11434; `GET /api/tags`), llama.cpp's llama-server on 8080, LM Studio on 1234 and vLLM
   on 8000 (`GET /v1/models`), the first found in that order (`[discovery]` in the config; the
   environment variable MCP_LLM_DISCOVERY replaces the list, which is how the tests point it at
   their fakes). Its first model that fits is picked (one that can see, for images: Ollama's
   `/api/show` says so; an OpenAI-compatible listing rarely does).
2. **The MCP client's own model**, when the client can sample.
3. Else an error that names every way out.

Why a local server comes before the client's own model, when both are there:

- It is what the user set up. A model server running on this machine was started on purpose;
  sampling is merely a capability the client declares, often by default.
- Sampling is on its way out: the 2026-07-28 MCP revision deprecates it, and Claude Desktop, Claude
  Code and Cursor do not offer it. A default that works only in some clients, for now, is a poor
  first choice; the local one works the same from every client and from the command line.
- Where it is offered, each request typically waits for the user to approve it, spends the user's
  assistant quota, and is answered by the model that asked, so nothing is gained by asking it.
  A local model is free, keeps the data on the machine, and enforces the schema with a grammar
  (llama-server, vLLM, Ollama's `format`), where sampling can only put the schema in the prompt.
- Choosing the other way stays one word away: `model = "client"` in a call, `defaults.model =
  "client"`, or `[providers.client] as_fallback = true` to try it after the local model fails.

A found OpenAI-compatible server becomes callable as an endpoint of `providers.openai_compatible`
(see `Settings.add_discovered_endpoint`): `llamacpp/<model>` for llama-server, as README's config
example names it, unless an endpoint is configured at that URL (its name is used) or the name is
taken by one elsewhere (`llamacpp-local`). Ollama's models are `ollama/<name>`, as always. What was
picked is logged, is the trace's `model`, and `last` says where it came from (the command line
prints it).

Cost: the probes run concurrently; a refused loopback connection fails in microseconds, so a miss
costs about a millisecond. A hit is kept `HIT_CACHE_S`; after that it keeps serving while a refresh
runs in the background (no call waits for it). A miss is kept only `MISS_CACHE_S`, since the user
may be starting a server right now; when it expires the next call looks again, on its own path.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING, Any

import anyio

from mcp_llm.adapters import ollama
from mcp_llm.adapters.base import ModelInfo
from mcp_llm.adapters.spec import public_url
from mcp_llm.errors import LLMError, UnknownModelError
from mcp_llm.registry import _SAFE_NATIVE_NAME
from mcp_llm.words import words

if TYPE_CHECKING:
    import httpx

    from mcp_llm.client_call import ClientCall
    from mcp_llm.registry import Registry

log = logging.getLogger("mcp_llm")

HIT_CACHE_S = 30.0  # a found server is looked at again after this long, in the background
STALE_MAX_S = 600.0  # ... and served from the cache meanwhile for at most this long
MISS_CACHE_S = 3.0  # "nothing there" is asked again this soon: it may have just been started
OLLAMA_LIST_TIMEOUT_S = 5.0  # listing a found Ollama's models with their capabilities (/api/show each)
MAX_LISTING_BYTES = 4 * 1024 * 1024
# What each discovery name is, in messages ("a llama-server at http://127.0.0.1:8080/v1"): Ollama by its
# spec's label; the OpenAI-compatible servers by their own names.
LABELS = {ollama.PROVIDER: ollama.SPEC.label, "llamacpp": "llama-server", "lmstudio": "LM Studio", "vllm": "vLLM"}
_NOT_CHAT = ("embed", "rerank", "whisper", "tts")  # listed by LM Studio and vLLM, but no chat model


@dataclass(frozen=True)
class LocalModel:
    id: str  # `<endpoint>/<name>`, routable
    vision: bool


@dataclass(frozen=True)
class LocalServer:
    """A model server found on this machine, and the models it serves."""

    name: str  # the discovery name (`ollama`, `llamacpp`…)
    endpoint: str  # the provider its models route to: `ollama`, or an openai_compatible endpoint's name
    url: str
    models: tuple[LocalModel, ...]
    inserted: bool = False  # its endpoint was added at run time (not configured)

    @property
    def label(self) -> str:
        return LABELS.get(self.name, self.name)

    def first(self, *, vision: bool) -> LocalModel | None:
        return next((m for m in self.models if m.vision or not vision), None)

    def model_infos(self) -> list[ModelInfo]:
        return [ModelInfo(id=m.id, provider=self.endpoint, label=f"{m.id.split('/', 1)[1]} ({self.label}, local)",
                          vision=m.vision, structured=True, available=True, source="discovered",
                          hosts=[public_url(self.url)]) for m in self.models]


@dataclass(frozen=True)
class Pick:
    """The model picked for calls that name none, and where it was found."""

    model_id: str
    server: LocalServer

    def describe(self) -> str:
        return f"{self.model_id}, served by the {self.server.label} found at {self.server.url}"


@dataclass(frozen=True)
class _Probe:
    """What one place gave: a server, or why there is none (for the error that lists every place)."""

    name: str
    url: str
    server: LocalServer | None = None
    why: str = "nothing answered"


class LocalDiscovery:
    """Finds the local model servers, caches what it found (hits and misses), makes their models routable."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._probes: list[_Probe] = []
        self._at = -1e9
        self._lock = anyio.Lock()
        self._refreshing: asyncio.Task[None] | None = None

    @property
    def settings(self) -> Any:
        return self.registry.settings.discovery

    def places(self) -> list[tuple[str, str]]:
        """Where to look: (discovery name, URL), Ollama first."""
        places = []
        if self.settings.ollama:
            places.append((ollama.PROVIDER, public_url(self.registry.hosts(ollama.PROVIDER)[0])))
        return places + list(self.settings.servers.items())

    async def probes(self) -> list[_Probe]:
        """What each place gave, from the cache when it is fresh enough (see the module's docstring)."""
        if not self.settings.enabled:
            return []
        age = time.monotonic() - self._at
        found = any(p.server for p in self._probes)
        if found and age < HIT_CACHE_S:
            return self._probes
        if found and age < STALE_MAX_S and self._refresh_in_background():
            return self._probes
        async with self._lock:  # calls at once with nothing cached share one look
            if time.monotonic() - self._at >= (HIT_CACHE_S if any(p.server for p in self._probes) else MISS_CACHE_S):
                await self._refresh()
        return self._probes

    async def servers(self) -> list[LocalServer]:
        return [p.server for p in await self.probes() if p.server is not None]

    def inserted(self) -> dict[str, LocalServer]:
        """The endpoints discovery added, by name (their models are listed from what it found)."""
        return {p.server.endpoint: p.server for p in self._probes if p.server is not None and p.server.inserted}

    async def _locked_refresh(self) -> None:
        async with self._lock:
            await self._refresh()

    def _refresh_in_background(self) -> bool:
        if self._refreshing is None:
            try:
                self._refreshing = asyncio.get_running_loop().create_task(self._locked_refresh())
            except RuntimeError:  # not on an asyncio loop: look again on the call's path
                return False
            self._refreshing.add_done_callback(self._refreshed)
        return True

    def _refreshed(self, task: asyncio.Task[None]) -> None:
        self._refreshing = None
        if not task.cancelled() and task.exception() is not None:
            log.error("looking for local model servers failed", exc_info=task.exception())

    async def _refresh(self) -> None:
        import httpx

        places = self.places()
        results: dict[int, _Probe] = {}
        timeout = self.settings.timeout_s
        # trust_env=False: a proxy from the environment must not carry loopback requests away
        async with httpx.AsyncClient(timeout=httpx.Timeout(timeout), trust_env=False) as http:

            async def look(i: int, name: str, url: str) -> None:
                try:
                    results[i] = await (self._ollama(http, url) if name == "ollama" else self._openai(http, name, url))
                except _Answered as exc:
                    results[i] = _Probe(name, url, why=str(exc))

            with anyio.move_on_after(timeout + OLLAMA_LIST_TIMEOUT_S + 1):
                async with anyio.create_task_group() as tg:
                    for i, (name, url) in enumerate(places):
                        tg.start_soon(look, i, name, url)
        self._probes = [results.get(i, _Probe(name, url, why="no answer in time"))
                        for i, (name, url) in enumerate(places)]
        self._at = time.monotonic()
        found = [p.server for p in self._probes if p.server is not None]
        self.registry.remember_discovered(m.id for server in found for m in server.models)
        log.info("local model servers: %s", "; ".join(
            f"{p.name} at {p.url}: " + (f"{len(p.server.models)} model(s)" if p.server else p.why)
            for p in self._probes) or "none looked for")

    async def _ollama(self, http: httpx.AsyncClient, url: str) -> _Probe:
        """Ollama: a quick look at `/api/tags` (no SDK import when nothing is there, nor a 10 s connect
        budget), then the adapter's own listing, which asks `/api/show` what each model can do."""
        if not self.registry.settings.providers.ollama.use_cloud:
            listing = await _get_json(http, url.rstrip("/") + "/api/tags")
            if not isinstance(listing, dict) or not isinstance(listing.get("models"), list):
                return _Probe("ollama", url, why="nothing answered" if listing is None else "not an Ollama listing")
            if not listing["models"]:
                return _Probe("ollama", url, why="Ollama answered, with no model pulled")
        models: list[ModelInfo] | None = None
        why = "its models could not be listed in time"
        with anyio.move_on_after(OLLAMA_LIST_TIMEOUT_S):
            try:
                adapter = await self.registry.ready_adapter("ollama")
                models = await adapter.list_models()
            except LLMError as exc:
                why = exc.message
        if models is None:
            return _Probe("ollama", url, why=why)
        usable = tuple(LocalModel(m.id, m.vision) for m in models if m.structured)
        if not usable:
            return _Probe("ollama", url, why="Ollama answered, with no chat model")
        return _Probe("ollama", url, LocalServer("ollama", "ollama", url, usable))

    async def _openai(self, http: httpx.AsyncClient, name: str, url: str) -> _Probe:
        listing = await _get_json(http, url.rstrip("/") + "/models")
        if not isinstance(listing, dict) or not isinstance(listing.get("data"), list):
            return _Probe(name, url, why="nothing answered" if listing is None else "not an OpenAI model listing")
        seeing = _llama_server_vision(listing)
        names = list(dict.fromkeys(n for n in (_model_name(row) for row in listing["data"]) if n))
        if not names:
            return _Probe(name, url, why=f"{LABELS.get(name, name)} answered, with no chat model")
        settings = self.registry.settings
        endpoint = settings.add_discovered_endpoint(name, url)
        inserted = settings.source_of(f"providers.openai_compatible.{endpoint}") == "discovered"
        models = tuple(LocalModel(f"{endpoint}/{n}", n in seeing) for n in names)
        return _Probe(name, url, LocalServer(name, endpoint, url, models, inserted=inserted))


class _Answered(Exception):
    """Something answered, but not with a listing: the reason, for the error that lists every place."""


async def _get_json(http: httpx.AsyncClient, url: str) -> Any:
    """The JSON body of a 200 answer; None when nothing answered (refused, timed out, not HTTP);
    raises _Answered when something answered otherwise (an error status, not JSON, too large)."""
    import json

    import httpx

    try:
        async with http.stream("GET", url) as response:
            if response.status_code != 200:
                loading = " (still loading its model?)" if response.status_code == 503 else ""
                raise _Answered(f"answered HTTP {response.status_code}{loading}")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_LISTING_BYTES:
                    raise _Answered(f"its listing is over {MAX_LISTING_BYTES // 1024 // 1024} MiB")
    except (httpx.HTTPError, OSError):
        return None
    try:
        return json.loads(body)
    except ValueError:
        raise _Answered("answered, but not with JSON") from None


def _model_name(row: Any) -> str | None:
    """A listed model's name as an id can carry it. llama-server started without `--alias` lists its
    model file's path, which no id may hold: its file name stands in (a llama-server serving one model
    answers whatever name a request gives)."""
    ident = row.get("id") if isinstance(row, dict) else None
    if not isinstance(ident, str) or any(word in ident.lower() for word in _NOT_CHAT):
        return None
    if not _SAFE_NATIVE_NAME.fullmatch(ident) or ".." in ident.split("/"):
        ident = PureWindowsPath(ident).name if "\\" in ident else PurePosixPath(ident).name
    return ident if _SAFE_NATIVE_NAME.fullmatch(ident) else None


def _llama_server_vision(listing: dict[str, Any]) -> set[str]:
    """llama-server also lists its models Ollama's way, with capabilities: `multimodal` when it can see."""
    seeing: set[str] = set()
    for row in listing.get("models") or []:
        if isinstance(row, dict) and {"multimodal", "vision"} & set(row.get("capabilities") or []):
            seeing.update(name for name in (_model_name({"id": row.get("model")}),
                                            _model_name({"id": row.get("name")})) if name)
    return seeing


class DefaultPicker:
    """Chooses the model for a call that names none, with nothing configured."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.discovery = LocalDiscovery(registry)
        self.last: Pick | None = None  # the last local model picked, and where it was found

    async def prepare(self, model: str | None) -> None:
        """Before a call that names `model`: when its `<endpoint>/` prefix is no endpoint known yet, look for
        the local servers, so an id that list_models showed (`llamacpp/<model>`) routes in a fresh process."""
        registry = self.registry
        wanted = registry.expand_alias((model or "").strip())
        if wanted and "/" in wanted and registry.route_for(wanted) is None:
            await self.discovery.probes()

    async def pick(self, *, vision: bool, client: ClientCall | None) -> str:
        probes = await self.discovery.probes()
        for probe in probes:
            model = probe.server.first(vision=vision) if probe.server else None
            if model is not None:
                assert probe.server is not None
                if self.last is None or self.last.model_id != model.id:
                    log.info("no model given or configured: using %s (a %s found at %s)", model.id,
                             probe.server.label, probe.server.url)
                self.last = Pick(model.id, probe.server)
                return model.id
        if client is not None and client.can_sample:
            return "client"
        raise self._nothing(probes, vision, client)

    def _nothing(self, probes: list[_Probe], vision: bool, client: ClientCall | None) -> UnknownModelError:
        kind = "vision model" if vision else "model"
        why = client.why_not if client is not None else "there is no MCP client here to sample"
        why = why[:1].lower() + why[1:].rstrip(".")
        if probes:
            places = "; ".join(
                f"{LABELS.get(p.name, p.name)} at {p.url}: "
                + (f"no model known to take images among {', '.join(m.id for m in p.server.models[:3])}"
                   if p.server else p.why)
                for p in probes)
            looked = f"no local {kind} was found ({places})"
        else:
            looked = "looking for local model servers is off (discovery.enabled)"
        return UnknownModelError(
            f"No model was given and none is configured, and none could be chosen: {looked}; and {why}.",
            hint=f"Pass {words().model}, or set defaults.model in the config file; or start a local model server "
            f"(`llama-server -hf {'ggml-org/gemma-3-4b-it-GGUF' if vision else 'ggml-org/gemma-3-1b-it-GGUF'}`, "
            f"or `ollama serve` and `ollama pull {'llava' if vision else 'llama3.2:3b'}`); "
            "or use an MCP client that supports sampling.",
        )

    async def aclose(self) -> None:
        task, self.discovery._refreshing = self.discovery._refreshing, None
        if task is not None:
            task.cancel()
            with anyio.CancelScope(shield=True):
                await asyncio.wait([task])
