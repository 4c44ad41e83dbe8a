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

from pydantic import Field

from mcp_llm.adapters._errors import (
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
    LLMAdapter,
    ModelInfo,
    Request,
    Timeouts,
    probe,
)
from mcp_llm.adapters.spec import API_KEY, ModelEntry, Prefix, ProviderSettings, ProviderSpec, Secret
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


class CompatibleEndpoint(ProviderSettings):
    """`[providers.openai_compatible.<name>]`: a server speaking OpenAI's API, its models `<name>/<model>`."""

    endpoint: str  # type: ignore[assignment]
    api_key_env: str = ""
    models: list[str] = Field(default_factory=list)  # type: ignore[assignment]
    structured_output: StructuredOutput = "json_schema"

    def entries(self) -> list[ModelEntry]:
        return [ModelEntry(id=model) for model in self.models]


def hosts(settings: OpenAISettings | CompatibleEndpoint) -> list[str]:
    return [(settings.endpoint or DEFAULT_ENDPOINT).rstrip("/")]


class OpenAIAdapter(LLMAdapter):
    provider = OPENAI
    sdk_modules = ("openai", "httpx2")
    capabilities = Capabilities(native_schema=True, images=True, max_image_bytes=20 * 1024 * 1024)

    def __init__(self, settings: OpenAISettings | CompatibleEndpoint, timeouts: Timeouts | None = None,
                 name: str = OPENAI) -> None:
        self.provider = name  # type: ignore[misc]  # one instance per endpoint, each under its own name
        self._settings = settings
        self._timeouts = timeouts or Timeouts()
        self._client: AsyncOpenAI | None = None
        self._modes: dict[str, str] = {}  # model → the structured-output form it last accepted

    @property
    def is_openai(self) -> bool:
        return self.provider == OPENAI

    @property
    def endpoint(self) -> str:
        return hosts(self._settings)[0]

    @property
    def where(self) -> str:
        return f"OpenAI at {self.endpoint}" if self.is_openai else f"{self.provider} at {self.endpoint}"

    def _key_hint(self) -> str:
        if self.is_openai:
            return ("Set OPENAI_API_KEY (from platform.openai.com/api-keys), "
                    "or the variable providers.openai.api_key_env names.")
        return (f"Set the variable providers.openai_compatible.{self.provider}.api_key_env names"
                f"{f' ({self._settings.api_key_env})' if self._settings.api_key_env else ''} to the server's key.")

    def _get_client(self) -> AsyncOpenAI:
        if self._client is None:
            key = self._settings.api_key
            if key is None and self.is_openai:
                raise ProviderNotReady("OpenAI needs an API key, and none is set.", provider=self.provider,
                                       hint=self._key_hint())
            from openai import AsyncOpenAI

            self._client = AsyncOpenAI(api_key=key.get_secret_value() if key else NO_KEY, base_url=self.endpoint,
                                       max_retries=0, timeout=self._timeouts.total_s)
            # The hook that tells a request sent from one that failed on our side (adapters/_errors.py), on
            # the httpx2 client the SDK builds for itself (openai/_base_client.py, AsyncAPIClient.__init__:
            # `self._client = http_client or AsyncHttpxClientWrapper(...)`), which it closes on collection.
            hook_into(self._client._client)
        return self._client

    def mode_for(self, model: str) -> str:
        """The structured-output form this model gets now (the configured one, or what it stepped down to)."""
        return self._modes.get(model, self._settings.structured_output)

    # --- completion ---------------------------------------------------------------------------

    async def complete(self, request: Request) -> Completion:
        client = self._get_client()
        params: dict[str, Any] = {
            "model": request.model,
            "messages": _messages(request),
            "stream": True,
            "stream_options": {"include_usage": True},
            "timeout": self._request_timeout(request.timeout_s),
        }
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
        # the whole answer; leaving the block (a cancelled call) closes the response.
        pieces: list[str] = []
        finish: str | None = None
        usage = None
        with self._translate_errors(request.model):
            stream = await client.chat.completions.create(**params)
            async with stream:
                async for chunk in stream:
                    usage = chunk.usage or usage
                    for choice in chunk.choices[:1]:
                        pieces.append(choice.delta.content or "" if choice.delta else "")
                        finish = choice.finish_reason or finish
        if finish is None:
            raise ProviderServerError(f"{self.where} ended the stream before the answer was done.",
                                      provider=self.provider, model=request.model)
        if finish == "length" and request.schema is not None:
            # Cut off mid-JSON: never hand on a prefix that might still parse (a number, say).
            raise BadRequestError(
                f"{self.where}: the answer was cut off at the {words().max_tokens} limit "
                f"({request.max_tokens or 'default'}) before the JSON was complete.", provider=self.provider,
                model=request.model,
                hint=f"Raise {words().max_tokens}, or ask for less (a smaller schema, shorter strings).")
        return _with_usage(Completion(text="".join(pieces), finish_reason=finish), usage)

    # --- listing and health -------------------------------------------------------------------

    async def _model_ids(self, client: AsyncOpenAI) -> list[str]:
        with self._translate_errors(None):
            ids = [model.id async for model in client.models.list()]
        return [i for i in ids if not (self.is_openai and i.startswith(_NOT_CHAT))]

    async def list_models(self) -> list[ModelInfo]:
        ids = await self._model_ids(self._get_client())
        return [ModelInfo(id=f"{self.provider}/{i}", provider=self.provider, label=i, vision=False, structured=True,
                          available=True, source="discovered") for i in ids]

    async def health(self) -> Health:
        async def check(client: AsyncOpenAI) -> dict[str, Any]:
            ids = await self._model_ids(client)
            shown = ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
            return {"detail": f"{len(ids)} model{'s' if len(ids) != 1 else ''} served" + (f": {shown}" if ids else "")}

        base = Health(provider=self.provider, status="down", endpoint=self.endpoint,
                      has_api_key=self._settings.has_api_key)
        return await probe(base, self._get_client, check)

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()

    def _translate_errors(self, model: str | None) -> AbstractContextManager[None]:
        return translated(lambda exc: self.translate_exception(exc, model), where=self.where, provider=self.provider,
                          model=model)

    def _down_hint(self) -> str:
        return ("Check the network, or providers.openai.endpoint if you set one." if self.is_openai else
                f"Start the server, or fix providers.openai_compatible.{self.provider}.endpoint.")

    def translate_exception(self, exc: Exception, model: str | None) -> ProviderError | None:
        """Map an exception from the openai SDK to ours; None if it is not the SDK's."""
        import openai

        where, provider = self.where, self.provider
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
)
