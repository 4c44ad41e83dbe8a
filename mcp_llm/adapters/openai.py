"""OpenAI's Chat Completions API, and any server that speaks it, through the `openai` SDK.

One class serves `openai/<model>` (OpenAI itself) and each `[providers.openai_compatible.<name>]`
endpoint (`<name>/<model>`: llama-server, vLLM, LM Studio, OpenRouter…). Structured output takes the
strongest form the server accepts, per model:

    json_schema  response_format json_schema (a grammar on llama-server / vLLM; `strict` on OpenAI
                 when the schema already meets its strict rules)
    json_object  JSON mode: any JSON object
    none         the schema instruction in the prompt alone

starting from the endpoint's `structured_output` and stepping down, remembered per model, when the
server refuses `response_format` with a 400 (LM Studio refuses json_object, old vLLM json_schema).
Whatever the form, the router validates the answer against the caller's schema and re-asks.

Wire facts this relies on (openai 3.57): the SDK's transport is `httpx2`; it retries by itself
unless `max_retries=0`; it refuses an empty api_key, so a keyless local server gets a placeholder
(never $OPENAI_API_KEY, which must not leak to a third party); an `error` event in a stream is a
bare `APIError`, not an `APIStatusError`.
"""

from __future__ import annotations

import base64
import logging
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator, model_validator

from mcp_llm.adapters._errors import (
    cut_off_error,
    error_for_status,
    hook_into,
    parse_retry_after,
    timeout_error,
    translated,
    transport_error,
    unavailable_error,
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
from mcp_llm.adapters.shards import Shards, of_host, shared_tls
from mcp_llm.adapters.spec import (
    API_KEY,
    HostsSettings,
    ModelEntry,
    Prefix,
    ProviderSettings,
    ProviderSpec,
    Secret,
    public_url,
    split_credentials,
)
from mcp_llm.errors import AuthError, BadRequestError, ProviderError, ProviderNotReady, ProviderServerError
from mcp_llm.words import words

if TYPE_CHECKING:
    from openai import AsyncOpenAI

log = logging.getLogger(__name__)

OPENAI = "openai"
DEFAULT_ENDPOINT = "https://api.openai.com/v1"
NO_KEY = "no-key"  # what a keyless local server is sent: the SDK refuses an empty key
MODES = ("json_schema", "json_object", "none")
SCHEMA_NAME = "answer"
# Words in a 400 that say the server refused response_format itself (not the prompt, not the size).
_FORMAT_WORDS = ("response_format", "json_schema", "json_object", "json schema", "structured output", "grammar")
# Listings from OpenAI itself hold models that cannot chat; they are left out of list_models.
_NOT_CHAT = ("text-embedding", "embedding", "tts-", "whisper", "dall-e", "omni-moderation", "text-moderation",
             "davinci", "babbage", "gpt-image", "sora")

COMPATIBLE = "openai_compatible"  # the table of named endpoints: `[providers.openai_compatible.<name>]`

# How far an OpenAI-style server enforces a schema: `json_schema` (response_format json_schema, a grammar
# or strict decoding), `json_object` (JSON mode: any JSON object), `none` (the prompt alone). The adapter
# steps down by itself, per model, when the server refuses response_format with a 400.
StructuredOutput = Literal["json_schema", "json_object", "none"]


class OpenAISettings(ProviderSettings):
    """`[providers.openai]`: OpenAI itself."""

    api_key_env: str = "OPENAI_API_KEY"
    structured_output: StructuredOutput = "json_schema"


class CompatibleEndpoint(HostsSettings):
    """`[providers.openai_compatible.<name>]`: a server speaking OpenAI's API (`endpoint`), or several serving
    one id namespace (`hosts`: llama-server or vLLM boxes), its models `<name>/<model>`."""

    api_key_env: str = ""
    models: list[str] = Field(default_factory=list)  # type: ignore[assignment]
    structured_output: StructuredOutput = "json_schema"

    @field_validator("hosts")
    @classmethod
    def _urls(cls, hosts: list[str]) -> list[str]:
        for host in hosts:
            if not host.strip().startswith(("http://", "https://")):
                raise ValueError(f"{public_url(host)!r}: a host is an http(s) base URL, e.g. http://gpu-a:8080/v1")
        return hosts

    @model_validator(mode="after")
    def _somewhere(self) -> CompatibleEndpoint:
        if not self.endpoint and not self.hosts:
            raise ValueError("an endpoint needs `endpoint` (its base URL, e.g. http://127.0.0.1:8080/v1) or `hosts`")
        return self

    def entries(self) -> list[ModelEntry]:
        return [ModelEntry(id=model) for model in self.models]

    def derived(self) -> dict[str, Any]:
        shown: dict[str, Any] = {"endpoint": public_url(self.endpoint)} if self.endpoint else {}
        if self.hosts:
            shown["hosts"] = [public_url(host) for host in self.hosts]
        return shown


def hosts(settings: OpenAISettings | CompatibleEndpoint) -> list[str]:
    """Its hosts (an endpoint's `hosts`, one id namespace across them), else its one endpoint."""
    if isinstance(settings, CompatibleEndpoint) and settings.hosts:
        return [host.strip().rstrip("/") for host in settings.hosts]
    return [(settings.endpoint or DEFAULT_ENDPOINT).strip().rstrip("/")]


class OpenAIAdapter(LLMAdapter):
    provider = OPENAI
    sdk_modules = ("openai", "httpx2")
    capabilities = Capabilities(native_schema=True, images=True, max_image_bytes=20 * 1024 * 1024)

    def __init__(self, settings: OpenAISettings | CompatibleEndpoint, timeouts: Timeouts | None = None,
                 name: str = OPENAI) -> None:
        self.provider = name  # type: ignore[misc]  # one instance per endpoint, each under its own name
        self._settings = settings
        self._timeouts = timeouts or Timeouts()
        self._hosts = hosts(settings)
        # per host, built on first use: clients of at most PER_CLIENT calls each (shards.py: one below that)
        self._clients: dict[str, Shards[AsyncOpenAI]] = {}
        self._modes: dict[str, str] = {}  # model → the structured-output form it last accepted

    @property
    def is_openai(self) -> bool:
        return self.provider == OPENAI

    @property
    def endpoint(self) -> str:
        """The first host, as messages and health show it (no credentials)."""
        return public_url(self._hosts[0])

    @property
    def where(self) -> str:
        return self.where_at(None)

    def where_at(self, host: str | None) -> str:
        shown = public_url(host) if host else self.endpoint
        return f"OpenAI at {shown}" if self.is_openai else f"{self.provider} at {shown}"

    def _key_hint(self) -> str:
        if self.is_openai:
            return ("Set OPENAI_API_KEY (from platform.openai.com/api-keys), "
                    "or the variable providers.openai.api_key_env names.")
        return (f"Set the variable providers.openai_compatible.{self.provider}.api_key_env names"
                f"{f' ({self._settings.api_key_env})' if self._settings.api_key_env else ''} to the server's key.")

    def _get_client(self, host: str | None = None) -> AsyncOpenAI:
        """The client of `host` (one of `hosts(settings)`; None: the first) for listings and probes."""
        return self._shards(host or self._hosts[0]).first()

    def _shards(self, host: str) -> Shards[AsyncOpenAI]:
        return of_host(self._clients, host, self._new_client)

    def _new_client(self, host: str) -> AsyncOpenAI:
        """A new client of `host`. The SDK's pool (1,000 connections, 100 kept) is left as it is: a client has
        at most PER_CLIENT calls in flight (shards.py), so it never holds many more connections than that."""
        key = self._settings.api_key
        if key is None and self.is_openai:
            raise ProviderNotReady("OpenAI needs an API key, and none is set.", provider=self.provider,
                                   hint=self._key_hint())
        from openai import AsyncOpenAI, DefaultAsyncHttpxClient

        base, basic = split_credentials(host)  # a host's user:password goes as a header, never in its URL
        headers = {"Authorization": basic} if basic is not None and key is None else None
        client = AsyncOpenAI(api_key=key.get_secret_value() if key else NO_KEY, base_url=base,
                             max_retries=0, timeout=self._timeouts.total_s, default_headers=headers,
                             # the SDK's own client and defaults, with one CA store for all clients (shards.py)
                             http_client=DefaultAsyncHttpxClient(timeout=self._timeouts.total_s,
                                                                 verify=shared_tls("httpx2")))
        # The hook that tells a request sent from one that failed on our side (adapters/_errors.py), on
        # the httpx2 client the SDK builds for itself (openai/_base_client.py, AsyncAPIClient.__init__:
        # `self._client = http_client or AsyncHttpxClientWrapper(...)`), which it closes on collection.
        hook_into(client._client)
        return client

    def mode_for(self, model: str) -> str:
        """The structured-output form this model gets now (the configured one, or what it stepped down to)."""
        return self._modes.get(model, self._settings.structured_output)

    # --- completion ---------------------------------------------------------------------------

    async def complete(self, request: Request) -> Completion:
        with self._shards(request.host or self._hosts[0]).lease() as client:
            return await self._complete(client, request)

    async def _complete(self, client: AsyncOpenAI, request: Request) -> Completion:
        params: dict[str, Any] = {
            "model": request.model,
            "messages": _messages(request),
            "stream": True,
            "stream_options": {"include_usage": True},
            "timeout": self._request_timeout(request.timeout_s),
        }
        if self._timeouts.plain(request):  # no progress to report, no first-response budget: one request
            del params["stream"], params["stream_options"]
        if request.temperature is not None:
            params["temperature"] = request.temperature
        if request.max_tokens is not None:
            # OpenAI's reasoning models take only max_completion_tokens; local servers know max_tokens best.
            params["max_completion_tokens" if self.is_openai else "max_tokens"] = request.max_tokens
        if request.schema is None:
            return await self._create(client, params, request)
        while True:
            mode = self.mode_for(request.model)
            response_format = self._response_format(mode, request.schema)
            try:
                return await self._create(client, params | response_format, request)
            except BadRequestError as exc:
                if not response_format or not _refuses_format(exc):
                    raise
                lower = MODES[MODES.index(mode) + 1]
                log.info("%s refused response_format %s (%s); using %s from now on",
                         request.model, mode, exc.message, lower)
                self._modes[request.model] = lower

    def _response_format(self, mode: str, schema: dict[str, Any]) -> dict[str, Any]:
        if mode == "json_schema":
            spec: dict[str, Any] = {"name": SCHEMA_NAME, "schema": schema}
            if self.is_openai:
                spec["strict"] = is_strict_compatible(schema)
            return {"response_format": {"type": "json_schema", "json_schema": spec}}
        if mode == "json_object" and isinstance(schema, dict) and schema.get("type") == "object":  # objects only
            return {"response_format": {"type": "json_object"}}
        return {}

    def _request_timeout(self, remaining_s: float) -> Any:
        import httpx2  # the openai SDK's transport

        total = max(remaining_s, 0.001)
        return httpx2.Timeout(total, connect=min(self._timeouts.connect_s, total), read=self._timeouts.read_s(total))

    async def _create(self, client: AsyncOpenAI, params: dict[str, Any], request: Request) -> Completion:
        # Streamed: the read timeout then bounds the wait for each chunk (the first one included), not
        # the whole answer; leaving the block (a cancelled call) closes the response. Plain (no progress
        # asked, no first-response budget): one request, closed as well when the call is cancelled.
        pieces: list[str] = []
        finish: str | None = None
        usage = None
        where = self.where_at(request.host)
        with self._translate_errors(request.model, request.host):
            if "stream" not in params:  # one plain request (`complete`): the whole answer, one piece
                answer = await client.chat.completions.create(**params)
                usage = answer.usage
                for whole in answer.choices[:1]:
                    pieces.append(whole.message.content or "" if whole.message else "")
                    finish = whole.finish_reason
                    if request.on_chunk is not None:
                        await request.on_chunk(pieces[-1])
            else:
                stream = await client.chat.completions.create(**params)
                async with stream:
                    async for chunk in stream:
                        usage = chunk.usage or usage
                        for choice in chunk.choices[:1]:
                            pieces.append(choice.delta.content or "" if choice.delta else "")
                            finish = choice.finish_reason or finish
                            if request.on_chunk is not None and pieces[-1]:
                                await request.on_chunk(pieces[-1])
        if finish is None:
            raise ProviderServerError(f"{where} ended the answer before it was done.",
                                      provider=self.provider, model=request.model)
        completion = _with_usage(Completion(text="".join(pieces), finish_reason=finish), usage)
        if finish == "length" and request.schema is not None:
            raise cut_off_error(where, provider=self.provider, model=request.model, max_tokens=request.max_tokens,
                                answered=completion)
        return completion

    # --- listing and health -------------------------------------------------------------------

    async def _model_ids(self, host: str | None = None) -> list[str]:
        client = self._get_client(host)
        with self._translate_errors(None, host):
            ids = [model.id async for model in client.models.list()]
        return [i for i in ids if not (self.is_openai and i.startswith(_NOT_CHAT))]

    async def list_models(self) -> list[ModelInfo]:
        """Every host's models, in one id namespace: each model once, with the hosts that serve it. A host
        that cannot be reached is left out; when none can, its error is raised."""
        served = await served_by(self._hosts, self._model_ids)
        return [ModelInfo(id=f"{self.provider}/{i}", provider=self.provider, label=i, vision=False, structured=True,
                          available=True, source="discovered", hosts=[public_url(h) for h in where])
                for i, where in served.items()]

    async def host_report(self, host: str) -> HostReport:
        """What `host` serves (`/v1/models`): llama-server and vLLM serve only what they hold in memory, so a
        served model counts as loaded."""
        ids = await self._model_ids(host)
        return HostReport(models=frozenset(ids), loaded=dict.fromkeys(ids))

    async def health(self) -> Health:
        async def check(client: AsyncOpenAI) -> dict[str, Any]:
            ids = await self._model_ids()
            shown = ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
            return {"detail": f"{len(ids)} model{'s' if len(ids) != 1 else ''} served" + (f": {shown}" if ids else "")}

        base = Health(provider=self.provider, status="down", endpoint=self.endpoint,
                      has_api_key=self._settings.has_api_key)
        return await probe(base, self._get_client, check)

    async def aclose(self) -> None:
        shards, self._clients = list(self._clients.values()), {}
        for client in (client for shard in shards for client in shard.all()):
            await client.close()

    def _translate_errors(self, model: str | None, host: str | None = None) -> AbstractContextManager[None]:
        return translated(lambda exc: self.translate_exception(exc, model, host), where=self.where_at(host),
                          provider=self.provider, model=model)

    def _down_hint(self) -> str:
        return ("Check the network, or providers.openai.endpoint if you set one." if self.is_openai else
                f"Start the server, or fix providers.openai_compatible.{self.provider}.endpoint.")

    def translate_exception(self, exc: Exception, model: str | None, host: str | None = None) -> ProviderError | None:
        """Map an exception from the openai SDK to ours; None if it is not the SDK's."""
        import openai

        where, provider = self.where_at(host), self.provider
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            error = _error_body(exc.body)
            text = error.get("message") or exc.message
            kind = error.get("type") or error.get("code") or ""
            label = f" {kind}" if isinstance(kind, str) and kind else ""
            if status in (401, 403):
                return AuthError(f"{where} refused the key ({status}{label}): {text}", provider=provider, model=model,
                                 status=status, hint=self._key_hint())
            hint = None
            if status == 404:
                hint = f"Check the model id; {words().list_models} shows the models this server has."
            elif status == 400 and "context" in str(text).lower():
                hint = "Shorten the prompt or schema, or start the server with a larger context (-c)."
            retry_after = parse_retry_after(exc.response.headers.get("retry-after")) if exc.response else None
            return error_for_status(status, f"{where} answered {status}{label}: {text}", provider=provider,
                                    model=model, hint=hint, retry_after=retry_after)
        if isinstance(exc, openai.APITimeoutError):  # before its base class, APIConnectionError
            return timeout_error(where, provider=provider, model=model)
        if isinstance(exc, openai.APIConnectionError):
            return unavailable_error(where, provider=provider, model=model, cause=str(exc), hint=self._down_hint())
        if isinstance(exc, openai.APIResponseValidationError | ValueError):
            return ProviderServerError(f"{where} sent a malformed response: {exc}", provider=provider, model=model)
        if isinstance(exc, openai.APIError):  # an error event inside a stream
            return ProviderServerError(f"{where} reported an error mid-stream: {exc.message}", provider=provider,
                                       model=model)
        # The SDK wraps what fails while it sends; what fails while a stream is read comes from httpx2 as is.
        return transport_error(exc, provider=provider, model=model, where=where, down_hint=self._down_hint())


def _error_body(body: object) -> dict[str, Any]:
    """OpenAI's `{"error": {...}}`; the SDK sometimes hands over the inner object already."""
    if isinstance(body, dict):
        inner = body.get("error", body)
        return inner if isinstance(inner, dict) else {"message": str(inner)}
    return {}


def _refuses_format(exc: BadRequestError) -> bool:
    return exc.status == 400 and any(word in exc.message.lower() for word in _FORMAT_WORDS)


def _messages(request: Request) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if request.system:
        messages.append({"role": "system", "content": request.system})
    for message in request.messages:
        if not message.images:
            messages.append({"role": message.role, "content": message.content})
            continue
        parts: list[dict[str, Any]] = [{"type": "text", "text": message.content}]
        parts += [{"type": "image_url", "image_url": {
            "url": f"data:{image.mime_type};base64,{base64.b64encode(image.data).decode('ascii')}"}}
            for image in message.images]
        messages.append({"role": message.role, "content": parts})
    return messages


def is_strict_compatible(schema: Any, _depth: int = 0) -> bool:
    """Whether OpenAI's strict mode takes the schema as it is: every object closed and every property
    required. Strict mode would otherwise refuse it, and making it so would change what is valid
    (an optional field made required), so such a schema goes non-strict and is validated by us."""
    if _depth > 64:
        return False
    if isinstance(schema, list):
        return all(is_strict_compatible(item, _depth + 1) for item in schema)
    if not isinstance(schema, dict):
        return True
    if schema.get("type") == "object" or "properties" in schema:
        properties = schema.get("properties") or {}
        if schema.get("additionalProperties") is not False or set(schema.get("required") or []) != set(properties):
            return False
    return all(is_strict_compatible(value, _depth + 1) for key, value in schema.items()
               if key not in ("enum", "const", "default", "examples", "required"))


def _with_usage(completion: Completion, usage: Any) -> Completion:
    """The usage of the stream's last chunk (`stream_options.include_usage`): cached prompt tokens are among
    `prompt_tokens` and reasoning tokens among `completion_tokens`, each also broken out in its `*_details`
    (OpenAI's; a local server may send neither)."""
    if usage is None:
        return completion
    completion.input_tokens, completion.output_tokens = usage.prompt_tokens, usage.completion_tokens
    prompt, answer = usage.prompt_tokens_details, usage.completion_tokens_details
    completion.cache_read_tokens = prompt.cached_tokens if prompt is not None else None
    completion.thinking_tokens = answer.reasoning_tokens if answer is not None else None
    return completion


def _build(settings: OpenAISettings | CompatibleEndpoint, timeouts: Timeouts, name: str) -> OpenAIAdapter:
    """One adapter per endpoint, each under its own name (`openai`, or the endpoint's)."""
    return OpenAIAdapter(settings, timeouts=timeouts, name=name)


SPEC = ProviderSpec(
    name=OPENAI,
    label="OpenAI",
    settings=OpenAISettings,
    build=_build,
    prefixes=(Prefix("openai/"),),
    secrets=(Secret(API_KEY.name, API_KEY.variable_field, fallbacks=("OPENAI_API_KEY",)),),
    schema_dialect="openai",
    hosts=hosts,
)

# Never $OPENAI_API_KEY: a key goes only to the server whose table names its variable.
COMPATIBLE_SPEC = ProviderSpec(
    name=COMPATIBLE,
    label="OpenAI-compatible endpoint",
    settings=CompatibleEndpoint,
    build=_build,
    endpoints=True,
    schema_dialect=None,  # llama-server's and vLLM's grammars take any schema, as is
    hosts=hosts,
    host_report=lambda adapter, host: adapter.host_report(host),
)
