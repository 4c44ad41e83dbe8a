"""Ollama, local or Ollama Cloud, through the `ollama` SDK (imported on first use).

Wire facts this relies on (ollama 0.6.3): `chat(format=<schema dict>)` sends the schema as
is; images go as bytes on the user message (a str ending in `.png` would be taken for a
path); `stream=False` must be explicit; the client's default timeout is none at all.
There is no version call in the SDK, so `/api/version` is fetched through its transport.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import anyio
from pydantic import PrivateAttr, model_validator

from mcp_llm.adapters._errors import (
    cut_off_error,
    error_for_status,
    mark_sent,
    parse_retry_after,
    translated,
    transport_error,
)
from mcp_llm.adapters.base import (
    Capabilities,
    Completion,
    Health,
    HostReport,
    LLMAdapter,
    ModelInfo,
    Request,
    Timeouts,
    probe,
    served_by,
)
from mcp_llm.adapters.shards import PER_CLIENT, Shards, of_host, shared_tls
from mcp_llm.adapters.spec import HostsSettings, Prefix, ProviderSpec, public_url, split_credentials
from mcp_llm.errors import BadRequestError, ProviderError, ProviderNotReady, ProviderServerError
from mcp_llm.words import words

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ollama import AsyncClient
    from pydantic import SecretStr

PROVIDER = "ollama"
SHOW_CONCURRENCY = 4
LOCAL_ENDPOINT = "http://localhost:11434"
CLOUD_ENDPOINT = "https://ollama.com"
HOST_ENV = "OLLAMA_HOST"  # where the ollama CLI and SDK look for the server


class OllamaSettings(HostsSettings):
    """`[providers.ollama]`: a local server (`endpoint`, else `$OLLAMA_HOST`, else localhost), several (`hosts`),
    or Ollama Cloud."""

    use_cloud: bool = False
    api_key_env: str = "OLLAMA_API_KEY"
    _env_host: str | None = PrivateAttr(default=None)

    def attach(self, secrets: Mapping[str, SecretStr], env: Mapping[str, str]) -> dict[str, str]:
        super().attach(secrets, env)
        self._env_host = env.get(HOST_ENV)
        taken = self._env_host and not self.endpoint and not self.hosts and not self.use_cloud
        return {"endpoint": HOST_ENV} if taken else {}

    @property
    def effective_endpoint(self) -> str:
        """Cloud: `endpoint` or ollama.com. Local: `endpoint`, else `$OLLAMA_HOST`, else localhost."""
        if self.use_cloud:
            return normalize_ollama_host(self.endpoint or CLOUD_ENDPOINT)
        return normalize_ollama_host(self.endpoint or self._env_host or LOCAL_ENDPOINT)

    @property
    def sends_api_key(self) -> bool:
        """Only Ollama Cloud gets the key; a local server never sees it."""
        return self.use_cloud and self.has_api_key

    def derived(self) -> dict[str, Any]:
        shown: dict[str, Any] = {"effective_endpoint": public_url(self.effective_endpoint)}
        if self.endpoint:
            shown["endpoint"] = public_url(self.endpoint)
        if self.hosts:
            shown["hosts"] = [public_url(host) for host in hosts(self)]
        return shown

    @model_validator(mode="after")
    def _cloud_is_one_host(self) -> OllamaSettings:
        if self.use_cloud and self.hosts:
            raise ValueError("Ollama Cloud is one host: set `endpoint` (or nothing) with use_cloud, not `hosts`")
        return self


def normalize_ollama_host(host: str) -> str:
    """`OLLAMA_HOST` forms → a full base URL, by the ollama SDK's own rules (ollama/_client.py, _parse_host).

    No scheme means port 11434; `http://h` means port 80 and `https://h` 443, as the SDK and
    the ollama CLI read them. `0.0.0.0` (a bind address, often set for the server) becomes 127.0.0.1.
    A `user:password@` is kept (the adapter sends it as a header, and never shows it).
    """
    host = host.strip()
    scheme, sep, rest = host.partition("://")
    if not sep:
        scheme, rest = "http", host
    default_port = {"http": 80, "https": 443}.get(scheme, 11434) if sep else 11434
    hostport, _, path = rest.partition("/")
    path = path.rstrip("/")
    userinfo, at, hostport = hostport.rpartition("@")
    if hostport.startswith("["):  # an IPv6 literal
        address, _, after = hostport[1:].partition("]")
        name, port = f"[{address}]", after.removeprefix(":")
    else:
        name, _, port = hostport.partition(":")
    if name in ("", "0.0.0.0"):
        name = "127.0.0.1"
    return f"{scheme}://{userinfo}{at}{name}:{port or default_port}" + (f"/{path}" if path else "")


def hosts(settings: OllamaSettings) -> list[str]:
    """The servers it talks to: `hosts` (one id namespace across them), else its one endpoint."""
    if settings.hosts:
        return [normalize_ollama_host(host) for host in settings.hosts]
    return [settings.effective_endpoint]


class OllamaAdapter(LLMAdapter):
    provider = PROVIDER
    sdk_modules = ("ollama", "httpx")
    # Ollama decodes images with Go's image package (PNG and JPEG); each model's projector resizes them.
    capabilities = Capabilities(native_schema=True, images=True, image_formats=("image/png", "image/jpeg"))

    def __init__(self, settings: OllamaSettings, timeouts: Timeouts | None = None) -> None:
        self._settings = settings
        self._timeouts = timeouts or Timeouts()
        self._hosts = hosts(settings)
        # per host, built on first use: clients of at most PER_CLIENT calls each (shards.py: one below that)
        self._clients: dict[str, Shards[AsyncClient]] = {}
        # from /api/show, e.g. ["completion", "vision"]; None: an Ollama too old to report them
        self._capabilities: dict[str, list[str] | None] = {}

    @property
    def endpoint(self) -> str:
        """The first host, as messages and health show it (no credentials)."""
        return public_url(self._hosts[0])

    def _get_client(self, host: str | None = None) -> AsyncClient:
        """The client of `host` (one of `hosts(settings)`; None: the first) for listings and probes."""
        return self._shards(host or self._hosts[0]).first()

    def _shards(self, host: str) -> Shards[AsyncClient]:
        return of_host(self._clients, host, self._new_client)

    def _new_client(self, host: str) -> AsyncClient:
        """A new client of `host`: its key or credentials, timeouts and a pool of PER_CLIENT connections."""
        if self._settings.use_cloud and not self._settings.has_api_key:
            raise ProviderNotReady(
                "Ollama Cloud needs an API key, and none is set.",
                provider=PROVIDER,
                hint=f"Set {self._settings.api_key_env} (from ollama.com/settings/keys), "
                "or set providers.ollama.use_cloud = false to use a local server.",
            )
        import httpx
        from ollama import AsyncClient

        base, basic = split_credentials(host)  # a host's user:password goes as a header, never in its URL
        headers = {}
        if self._settings.sends_api_key:
            key = self._settings.api_key
            assert key is not None
            headers["Authorization"] = f"Bearer {key.get_secret_value()}"
        elif basic is not None:
            headers["Authorization"] = basic
        client = AsyncClient(
            host=base,
            headers=headers,
            # The ollama SDK takes no per-request timeout, so the client's only bounds the
            # connection and, when set, the wait for the first (then each) streamed chunk; the
            # router's deadline, by cancellation, bounds everything else.
            timeout=httpx.Timeout(
                None,
                connect=self._timeouts.connect_s,
                read=self._timeouts.first_response_s,
            ),
            event_hooks={"request": [mark_sent], "response": [_remember_retry_after]},
            # httpx keeps 100 connections (20 idle) by default: the calls in flight on this client
            # (`concurrency`, at most PER_CLIENT: shards.py) need as many, or they reconnect after a burst.
            limits=httpx.Limits(max_connections=max(min(self._settings.concurrency, PER_CLIENT), 100),
                                max_keepalive_connections=max(min(self._settings.concurrency, PER_CLIENT), 20)),
            verify=shared_tls("httpx"),  # one CA store for all the host's clients (shards.py)
        )
        if not headers:
            # The SDK adds $OLLAMA_API_KEY to every request by itself (ollama/_client.py,
            # BaseClient.__init__); a local server, or a proxy in front of it, must not get it.
            client._client.headers.pop("authorization", None)
        return client

    async def complete(self, request: Request) -> Completion:
        host = request.host or self._hosts[0]
        with self._shards(host).lease() as client:
            return await self._complete(client, host, request)

    async def _complete(self, client: AsyncClient, host: str, request: Request) -> Completion:
        messages: list[dict[str, Any]] = []
        if request.system:
            messages.append({"role": "system", "content": request.system})
        for message in request.messages:
            entry: dict[str, Any] = {"role": message.role, "content": message.content}
            if message.images:
                entry["images"] = [image.data for image in message.images]
            messages.append(entry)
        options: dict[str, Any] = {}
        if request.temperature is not None:
            options["temperature"] = request.temperature
        if request.max_tokens is not None:
            options["num_predict"] = request.max_tokens
        pieces: list[str] = []
        last = None
        with self._translate_errors(request.model, host):
            if self._timeouts.plain(request):  # no progress to report, no first-response budget: one request
                last = await client.chat(model=request.model, messages=messages, format=_format(request.schema),
                                         options=options or None, stream=False)
                pieces.append(last.message.content or "")
                if request.on_chunk is not None:
                    await request.on_chunk(pieces[-1])
                return self._completion(host, request, pieces, last)
            # Streamed, so the read timeout bounds the wait for the first chunk (model load
            # included) rather than the whole generation, and a cancelled call closes the stream.
            stream = await client.chat(
                model=request.model,
                messages=messages,
                format=_format(request.schema),
                options=options or None,
                stream=True,
            )
            async for chunk in stream:
                pieces.append(chunk.message.content or "")
                last = chunk
                if request.on_chunk is not None:
                    await request.on_chunk(pieces[-1])
        return self._completion(host, request, pieces, last)

    def _completion(self, host: str, request: Request, pieces: list[str], last: Any) -> Completion:
        """The answer from its pieces and the last message (streamed, the one that says `done`)."""
        if last is None or not last.done:
            raise ProviderServerError(f"Ollama at {public_url(host)} ended the stream before it was done.",
                                      provider=PROVIDER, model=request.model)
        completion = Completion(
            text="".join(pieces),
            input_tokens=last.prompt_eval_count,
            output_tokens=last.eval_count,
            finish_reason=last.done_reason,
        )
        if completion.finish_reason == "length" and request.schema is not None:  # num_predict reached
            raise cut_off_error(f"Ollama at {public_url(host)}", provider=PROVIDER, model=request.model,
                                max_tokens=request.max_tokens, answered=completion)
        return completion

    async def _names(self, host: str) -> list[str]:
        with self._translate_errors(None, host):
            listing = await self._get_client(host).list()
        return [m.model for m in listing.models if m.model]

    async def list_models(self) -> list[ModelInfo]:
        """Every host's models, in one id namespace: each model once, with the hosts that have it. A host
        that cannot be reached is left out; when none can, its error is raised."""
        served = await served_by(self._hosts, self._names)  # model → the hosts that have it
        names = list(served)
        limiter = anyio.CapacityLimiter(SHOW_CONCURRENCY)

        async def learn_vision(name: str) -> None:
            if name in self._capabilities:
                return
            host = served[name][0]
            async with limiter:
                try:
                    with self._translate_errors(name, host):
                        shown = await self._get_client(host).show(name)
                except ProviderError:
                    return  # vision stays unknown (False) for this one; the listing still stands
            self._capabilities[name] = list(shown.capabilities) if shown.capabilities is not None else None

        async with anyio.create_task_group() as tg:
            for name in names:
                tg.start_soon(learn_vision, name)
        return [
            ModelInfo(
                id=SPEC.model_id(name),
                provider=PROVIDER,
                label=name,
                vision="vision" in (self._capabilities.get(name) or []),
                # an embedding-only model cannot answer; unknown (no /api/show) counts as able
                structured="completion" in (self._capabilities.get(name) or ["completion"]),
                available=True,
                source="discovered",
                hosts=[public_url(host) for host in served[name]],
            )
            for name in names
        ]

    async def host_report(self, host: str) -> HostReport:
        """What `host` has (`/api/tags`) and has loaded now (`/api/ps`: each model's `expires_at` and
        `size_vram`). A bare name stands for its `:latest` tag, as Ollama resolves it; a model past its
        expiry is on its way out and is not counted as loaded."""
        client = self._get_client(host)
        with self._translate_errors(None, host):
            tags = await client.list()
            running = await client.ps()
        now = datetime.now(UTC)
        models = {name for m in tags.models if m.model for name in _names_of(m.model)}
        loaded: dict[str, float | None] = {}
        vram: dict[str, int] = {}
        for m in running.models:
            name = m.model or m.name
            if not name:
                continue
            expires = m.expires_at
            left = None if expires is None or expires.year <= 1 else (expires - now).total_seconds()
            if left is not None and left <= 0:
                continue
            for alias in _names_of(name):
                loaded[alias] = left
                if m.size_vram is not None:
                    vram[alias] = int(m.size_vram)
        return HostReport(models=frozenset(models | set(loaded)), loaded=loaded, vram=vram)

    async def supports_images(self, model: str) -> bool | None:
        """Whether `/api/show` lists `vision` among the model's capabilities (asked once per model);
        None when it cannot say (an older server without `capabilities`, or no answer): then the
        image is sent and the server judges."""
        if model not in self._capabilities:
            for host in self._hosts:  # several hosts: the first that knows the model says
                try:
                    with self._translate_errors(model, host):
                        shown = await self._get_client(host).show(model)
                except ProviderError:
                    continue  # e.g. an unknown model: the chat request itself says so, clearly
                self._capabilities[model] = list(shown.capabilities) if shown.capabilities is not None else None
                break
            else:
                return None
        capabilities = self._capabilities[model]
        return None if capabilities is None else "vision" in capabilities

    def forget_models(self) -> None:
        """Drop what `/api/show` told us, so the next listing asks again."""
        self._capabilities.clear()

    async def health(self) -> Health:
        async def check(client: AsyncClient) -> dict[str, Any]:
            # No SDK call for the version; `_request_raw` is the SDK's own transport with its
            # error mapping (ollama/_client.py, AsyncClient._request_raw).
            with self._translate_errors(None):
                response = await client._request_raw("GET", "/api/version")
            try:
                version = response.json().get("version")
            except ValueError:
                version = None
            try:
                with self._translate_errors(None):
                    count = len((await client.list()).models)
            except ProviderError as exc:
                return {"status": "degraded", "version": version,
                        "detail": f"/api/version answered but listing models failed: {exc.user_message()}"}
            return {"version": version, "detail": f"{count} model{'s' if count != 1 else ''} installed"}

        base = Health(provider=PROVIDER, status="down", endpoint=self.endpoint, has_api_key=self._settings.has_api_key)
        return await probe(base, self._get_client, check)

    async def aclose(self) -> None:
        shards, self._clients = list(self._clients.values()), {}
        for client in (client for shard in shards for client in shard.all()):
            await client._client.aclose()

    @contextmanager
    def _translate_errors(self, model: str | None, host: str | None = None) -> Iterator[None]:
        _retry_after.set(None)
        where = public_url(host) if host else self.endpoint
        with translated(lambda exc: translate_exception(exc, where, model), where=f"Ollama at {where}",
                        provider=PROVIDER, model=model):
            yield


def _names_of(name: str) -> tuple[str, ...]:
    """The names a call may give a model by: `llama3.2:latest` is also `llama3.2`."""
    return (name, name.removesuffix(":latest")) if name.endswith(":latest") else (name,)


def _format(schema: Any) -> Any:
    """Ollama's `format`: the schema, or for the boolean schema `true` (any JSON value; the SDK takes
    only '', 'json' or an object) JSON mode."""
    return "json" if schema is True else schema


OLLAMA_HINTS = {
    404: "Run `ollama pull {model}` on that server, or pick one from {list_models}.",
    401: "Check the API key in OLLAMA_API_KEY (or the variable api_key_env names).",
    403: "Check the API key in OLLAMA_API_KEY (or the variable api_key_env names).",
    400: "If it names the schema, simplify the schema (some Ollama builds refuse `pattern`).",
}
DOWN_HINT = "Start it with `ollama serve`, or point providers.ollama.endpoint / OLLAMA_HOST at it."


def translate_exception(exc: Exception, endpoint: str, model: str | None) -> ProviderError | None:
    """Map one exception raised by the ollama SDK to ours; None if it is not the SDK's.

    The SDK raises `ResponseError` for HTTP errors (status -1 for an error line mid-stream),
    the builtin `ConnectionError` for a refused connection, httpx's own exceptions for
    timeouts and dropped connections, and a bare JSONDecodeError / pydantic ValidationError
    for a malformed body.
    """
    from ollama import ResponseError
    from pydantic import ValidationError

    where = f"Ollama at {endpoint}"
    if isinstance(exc, ResponseError):
        status, text = exc.status_code, str(exc.error)
        if "missing data required for image input" in text:  # Ollama's 500 for an image sent to a text model
            return BadRequestError(f"Ollama model {model!r} cannot read images ({text}).", provider=PROVIDER,
                                   model=model, status=status,
                                   hint=f"Use a vision model ({words().list_models} shows vision: true).")
        if status == -1:
            return ProviderServerError(f"Ollama reported an error mid-stream: {text}.", provider=PROVIDER,
                                       model=model, status=status)
        if status == 404:
            message = f"{where} has no model {model!r}: {text}."
        elif status == 429:
            message = f"{where} is rate limiting ({text})."
        elif status >= 500:
            message = f"{where} failed ({status}): {text}."
        else:
            message = f"{where} refused the request ({status}): {text}."
        hint = OLLAMA_HINTS.get(status, "").format(model=model, list_models=words().list_models) or None
        return error_for_status(status, message, provider=PROVIDER, model=model, hint=hint,
                                retry_after=_retry_after.get())
    # JSONDecodeError is a ValueError; a JSON body that is not an object fails `cls(**r.json())`
    # with a TypeError, or `part.get('error')` on a streamed line with an AttributeError
    # (ollama/_client.py, AsyncClient._request)
    if isinstance(exc, ValueError | ValidationError | TypeError | AttributeError):
        return ProviderServerError(f"{where} sent a malformed response: {exc}.", provider=PROVIDER, model=model)
    return transport_error(exc, provider=PROVIDER, model=model, where=where, down_hint=DOWN_HINT)


# The SDK's ResponseError keeps only the body and status; the Retry-After header is caught here.
# httpx runs response hooks in the task that made the request, so a ContextVar keeps concurrent
# calls apart.
_retry_after: ContextVar[float | None] = ContextVar("ollama_retry_after", default=None)


async def _remember_retry_after(response: Any) -> None:
    if response.status_code >= 400:
        _retry_after.set(parse_retry_after(response.headers.get("retry-after")))


def _build(settings: OllamaSettings, timeouts: Timeouts, name: str) -> OllamaAdapter:
    return OllamaAdapter(settings, timeouts=timeouts)


SPEC = ProviderSpec(
    name=PROVIDER,
    label="Ollama",
    settings=OllamaSettings,
    build=_build,
    prefixes=(Prefix("ollama/"),),
    env=(HOST_ENV,),
    schema_dialect=None,  # the schema as is: Ollama's `format` turns it into a grammar
    hosts=hosts,
    host_report=lambda adapter, host: adapter.host_report(host),
)
