"""Anthropic's Messages API through the `anthropic` SDK (imported on first use: it takes ~2 s).

Structured output goes the native way first (`output_config` json_schema, with the schema made
strict in `schema_dialects`); a model that refuses it gets a forced tool call instead, and is
remembered. A schema that cannot be strict (a map: `patternProperties` or a schema for other keys,
which closing would forbid) goes out as a forced tool, whose input schema may be open.
Wire facts this relies on (anthropic 2.12): `messages.create` has no `temperature` parameter
(sent through `extra_body`); the SDK retries by itself, with no cap on Retry-After, unless
`max_retries=0`; errors are `APIStatusError` subclasses by status, `APITimeoutError`
(a subclass of `APIConnectionError`) and `APIConnectionError`.
"""

from __future__ import annotations

import base64
import json
import logging
import warnings
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

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
    LLMAdapter,
    ModelInfo,
    Request,
    Timeouts,
    probe,
)
from mcp_llm.adapters.shards import Shards, shared_tls
from mcp_llm.adapters.spec import API_KEY, Prefix, ProviderSettings, ProviderSpec, Secret, public_url
from mcp_llm.errors import AuthError, BadRequestError, ProviderError, ProviderNotReady, ProviderServerError
from mcp_llm.words import words

if TYPE_CHECKING:
    from anthropic import AsyncAnthropic

log = logging.getLogger(__name__)

PROVIDER = "anthropic"
DEFAULT_ENDPOINT = "https://api.anthropic.com"
DEFAULT_MAX_TOKENS = 4096
ANSWER_TOOL = "answer"
KEY_HINT = "Set ANTHROPIC_API_KEY (from console.anthropic.com), or the variable providers.anthropic.api_key_env names."
# Models from before native structured output: they go straight to the forced tool.
NO_NATIVE_PREFIXES = ("claude-3-", "claude-2", "claude-instant")


class AnthropicSettings(ProviderSettings):
    """`[providers.anthropic]`: Anthropic, or any server speaking the Messages API (`endpoint`)."""

    api_key_env: str = "ANTHROPIC_API_KEY"


def hosts(settings: AnthropicSettings) -> list[str]:
    return [settings.endpoint or DEFAULT_ENDPOINT]


class AnthropicAdapter(LLMAdapter):
    provider = PROVIDER
    sdk_modules = ("anthropic", "httpx2")
    # Images: 5 MB each; beyond a 1568-pixel long edge or ~1.15 megapixels the API scales them down
    # itself (docs.claude.com, "Vision": image size), so larger ones would only cost upload time.
    # Temperature: 0 to 1 (the Messages API refuses more; the others take up to 2).
    capabilities = Capabilities(native_schema=True, images=True, max_image_bytes=5 * 1024 * 1024,
                                max_image_side=1568, max_image_pixels=1_150_000, temperature_max=1.0)

    def __init__(self, settings: AnthropicSettings, timeouts: Timeouts | None = None) -> None:
        self._settings = settings
        self._timeouts = timeouts or Timeouts()
        # built on first use: clients of at most PER_CLIENT calls each (shards.py: one below that)
        self._clients: Shards[AsyncAnthropic] = Shards(self._new_client)
        self._no_native: set[str] = set()  # models that refused output_config: use the forced tool

    @property
    def endpoint(self) -> str:
        """As messages and health show it (`public_url`); the client is built on the configured one."""
        return public_url(hosts(self._settings)[0])

    def not_ready(self) -> ProviderNotReady | None:
        if self._settings.api_key is None:
            return ProviderNotReady("Anthropic needs an API key, and none is set.", provider=PROVIDER, hint=KEY_HINT)
        return None

    def _get_client(self) -> AsyncAnthropic:
        """A client for listings and probes (the first)."""
        return self._clients.first()

    def _new_client(self) -> AsyncAnthropic:
        """A new client. The SDK's pool (1,000 connections, 100 kept) is left as it is: a client has at most
        PER_CLIENT calls in flight (shards.py), so it never holds many more connections than that."""
        missing = self.not_ready()
        if missing is not None:
            raise missing
        key = self._settings.api_key
        assert key is not None
        from anthropic import AsyncAnthropic, DefaultAsyncHttpxClient

        # The SDK warns (DeprecationWarning) on retired model ids; we log that once instead.
        warnings.filterwarnings("ignore", message=r"The model '.*' is deprecated", category=DeprecationWarning)
        client = AsyncAnthropic(api_key=key.get_secret_value(), base_url=self._settings.endpoint or None,
                                max_retries=0, timeout=self._timeouts.total_s,
                                # the SDK's own client and defaults, one CA store for all clients (shards.py)
                                http_client=DefaultAsyncHttpxClient(timeout=self._timeouts.total_s,
                                                                    verify=shared_tls("httpx2")))
        # The hook that tells a request sent from one that failed on our side (adapters/_errors.py), on
        # the httpx2 client the SDK builds for itself (anthropic/_base_client.py, AsyncAPIClient.__init__:
        # `self._client = http_client or AsyncHttpxClientWrapper(...)`), which it closes on collection.
        hook_into(client._client)
        return client

    def uses_native_schema(self, model: str) -> bool:
        return model not in self._no_native and not model.startswith(NO_NATIVE_PREFIXES)

    async def complete(self, request: Request) -> Completion:
        with self._clients.lease() as client:
            return await self._complete(client, request)

    async def _complete(self, client: AsyncAnthropic, request: Request) -> Completion:
        _warn_if_deprecated(request.model)
        messages = [{"role": m.role, "content": _content(m)} for m in request.messages]
        params: dict[str, Any] = {
            "model": request.model,
            "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS,
            "messages": messages,
            "timeout": self._request_timeout(request.timeout_s),
        }
        if request.system:
            params["system"] = request.system
        if request.temperature is not None:
            params["extra_body"] = {"temperature": request.temperature}
        if request.schema is None:
            return await self._create(client, params, request)
        from mcp_llm.schema.dialects import is_strict  # the compilers are imported on first use, not at start-up

        if self.uses_native_schema(request.model) and is_strict(request.schema):
            try:
                native = {"output_config": {"format": {"type": "json_schema", "schema": request.schema}}}
                return await self._create(client, params | native, request)
            except BadRequestError as exc:
                if "output_config" not in exc.message and "structured output" not in exc.message.lower():
                    raise
                log.info("%s refused native structured output; using a forced tool from now on", request.model)
                self._no_native.add(request.model)
        tool = {"name": ANSWER_TOOL, "description": "Give the answer as this tool's input.",
                "input_schema": request.schema}
        forced = {"tools": [tool], "tool_choice": {"type": "tool", "name": ANSWER_TOOL}}
        return await self._create(client, params | forced, request)

    def _request_timeout(self, remaining_s: float) -> Any:
        import httpx2  # the anthropic SDK's transport

        total = max(remaining_s, 0.001)
        return httpx2.Timeout(total, connect=min(self._timeouts.connect_s, total), read=self._timeouts.read_s(total))

    def plain(self, request: Request, max_tokens: int) -> bool:
        """Whether `request` goes as one plain `messages.create`: nobody reads its pieces, no first-response
        budget needs a stream, and the answer is short enough for the API to send unstreamed (`_streaming_only`)."""
        return self._timeouts.plain(request) and not _streaming_only(request.model, max_tokens)

    async def _create(self, client: AsyncAnthropic, params: dict[str, Any], request: Request) -> Completion:
        # Streamed: the read timeout then bounds the wait for the first event, not the whole answer; leaving
        # the block (a cancelled call) closes the response. Plain: one request whose read timeout is the call's
        # remaining time (no first-response budget, or it would stream), closed as well when cancelled.
        model, on_chunk = request.model, request.on_chunk
        with self._translate_errors(model):
            if self.plain(request, params["max_tokens"]):
                message = await client.messages.create(**params)
                if on_chunk is not None:  # the whole answer, one piece (the fleet's first-chunk note)
                    await on_chunk(_answer_text(message))
            else:
                async with client.messages.stream(**params) as stream:
                    if on_chunk is not None:  # text deltas, or the forced tool's JSON as it grows
                        async for event in stream:
                            if event.type == "text" or event.type == "input_json":
                                await on_chunk(event.text if event.type == "text" else event.partial_json)
                    try:
                        message = await stream.get_final_message()
                    except AssertionError:  # the SDK asserts a message arrived: a body with no events
                        raise ProviderServerError(f"Anthropic at {self.endpoint} sent a malformed stream "
                                                  "(no message).", provider=PROVIDER, model=model) from None
        return self._completion(message, request)

    def _completion(self, message: Any, request: Request) -> Completion:
        """The answer, read the same whether it streamed or not: its text (or the forced tool's input), stop
        reason and usage; a refusal, or JSON cut off at max_tokens, is an error that keeps the usage."""
        where = f"Anthropic at {self.endpoint}"
        if message.stop_reason is None:
            raise ProviderServerError(f"{where} ended the answer before the message was done.",
                                      provider=PROVIDER, model=request.model)
        completion = _with_usage(Completion(text=_answer_text(message), finish_reason=message.stop_reason),
                                 message.usage)
        if message.stop_reason == "refusal":  # the model declined (its safety classifiers): asking again won't help
            error = BadRequestError(f"{where}: {request.model} declined to answer (stop_reason refusal).",
                                    provider=PROVIDER, model=request.model,
                                    hint="Rephrase the prompt, or use another model (defaults.fallback).")
            error.answered = completion  # billed all the same
            raise error
        if message.stop_reason == "max_tokens" and request.schema is not None:
            raise cut_off_error(where, provider=PROVIDER, model=request.model, max_tokens=request.max_tokens,
                                answered=completion)
        return completion

    async def list_models(self) -> list[ModelInfo]:
        client = self._get_client()
        models: list[ModelInfo] = []
        with self._translate_errors(None):
            async for model in client.models.list(limit=100):
                model_id = SPEC.model_id(model.id)
                models.append(ModelInfo(id=model_id, provider=PROVIDER, label=model.display_name or model.id,
                                        vision=True, structured=True, available=True, source="discovered"))
        return models

    async def health(self) -> Health:
        async def check(client: AsyncAnthropic) -> dict[str, Any]:
            with self._translate_errors(None):
                page = await client.models.list(limit=1)
            newest = page.data[0].id if page.data else "none"
            return {"version": _api_version(client), "detail": f"listing models works (newest: {newest})"}

        base = Health(provider=PROVIDER, status="down", endpoint=self.endpoint, has_api_key=self._settings.has_api_key)
        return await probe(base, self._get_client, check)

    async def aclose(self) -> None:
        clients, self._clients = self._clients.all(), Shards(self._new_client)
        for client in clients:
            await client.close()

    def _translate_errors(self, model: str | None) -> AbstractContextManager[None]:
        return translated(lambda exc: translate_exception(exc, self.endpoint, model),
                          where=f"Anthropic at {self.endpoint}", provider=PROVIDER, model=model)


def _content(message: Any) -> str | list[dict[str, Any]]:
    if not message.images:
        return message.content
    blocks: list[dict[str, Any]] = [
        {"type": "image", "source": {"type": "base64", "media_type": image.mime_type,
                                     "data": base64.b64encode(image.data).decode("ascii")}}
        for image in message.images
    ]
    return [*blocks, {"type": "text", "text": message.content}]


def _answer_text(message: Any) -> str:
    """The forced tool's input as JSON, if the model called it; else its text blocks, joined."""
    texts, tool_input = [], None
    for block in message.content:
        if block.type == "text":
            texts.append(block.text)
        elif block.type == "tool_use" and block.name == ANSWER_TOOL:
            tool_input = block.input
    return json.dumps(tool_input) if tool_input is not None else "".join(texts)


def _streaming_only(model: str, max_tokens: int) -> bool:
    """Whether the API could take longer than 10 minutes to send this answer unstreamed, by the SDK's own rule
    (anthropic/_base_client.py, `_calculate_nonstreaming_timeout`: an hour per 128,000 tokens, and a lower cap
    for some models in `MODEL_NONSTREAMING_TOKENS`), decided before sending: such a request streams. Long
    unstreamed requests risk idle connections dropped by the network on the way (the SDK's "long requests")."""
    from anthropic._constants import MODEL_NONSTREAMING_TOKENS

    cap = MODEL_NONSTREAMING_TOKENS.get(model)
    return max_tokens * 3600 / 128_000 > 600 or (cap is not None and max_tokens > cap)


_warned: set[str] = set()


def _warn_if_deprecated(model: str) -> None:
    from anthropic.resources.messages.messages import DEPRECATED_MODELS

    if model in DEPRECATED_MODELS and model not in _warned:
        _warned.add(model)
        log.warning("Anthropic model %s is deprecated (end of life: %s); consider a newer one.",
                    model, DEPRECATED_MODELS[model])


def _api_version(client: Any) -> str | None:
    return client.default_headers.get("anthropic-version") if hasattr(client, "default_headers") else None


DOWN_HINT = "Check the network, or providers.anthropic.endpoint if you set one."


def translate_exception(exc: Exception, endpoint: str, model: str | None) -> ProviderError | None:
    """Map an exception from the anthropic SDK to ours; None if it is not the SDK's."""
    import anthropic

    where = f"Anthropic at {endpoint}"
    if isinstance(exc, anthropic.APIStatusError):
        status = exc.status_code
        body = exc.body if isinstance(exc.body, dict) else {}
        error = body.get("error", {}) if isinstance(body.get("error"), dict) else {}
        text = error.get("message") or exc.message
        kind = error.get("type") or ""
        if status in (401, 403):
            return AuthError(f"{where} refused the key ({status} {kind}): {text}", provider=PROVIDER, model=model,
                             status=status, hint=KEY_HINT)
        if status == 200:  # an error event inside a stream
            return ProviderServerError(f"{where} reported an error mid-stream ({kind}): {text}", provider=PROVIDER,
                                       model=model, status=status)
        hint = (f"Check the model id; {words().list_models} shows the models this key can use."
                if status == 404 else None)
        if status == 413:
            hint = "Send a smaller image or prompt."
        retry_after = parse_retry_after(exc.response.headers.get("retry-after")) if exc.response else None
        return error_for_status(status, f"{where} answered {status} {kind}: {text}", provider=PROVIDER, model=model,
                                hint=hint, retry_after=retry_after)
    if isinstance(exc, anthropic.APITimeoutError):  # before its base class, APIConnectionError
        return timeout_error(where, provider=PROVIDER, model=model)
    if isinstance(exc, anthropic.APIConnectionError):
        return unavailable_error(where, provider=PROVIDER, model=model, cause=str(exc), hint=DOWN_HINT)
    if isinstance(exc, anthropic.APIResponseValidationError | ValueError):
        return ProviderServerError(f"{where} sent a malformed response: {exc}", provider=PROVIDER, model=model)
    if isinstance(exc, anthropic.APIError):  # below APIStatusError and the rest: an error of the API itself
        return ProviderServerError(f"{where} reported an error: {exc.message}", provider=PROVIDER, model=model)
    # The SDK wraps what fails while it sends; what fails while a stream is read comes from httpx2 as is.
    return transport_error(exc, provider=PROVIDER, model=model, where=where, down_hint=DOWN_HINT)


def _with_usage(completion: Completion, usage: Any) -> Completion:
    """The usage as the Messages API reports it, in Completion's shape: its `input_tokens` are those after
    the last cache breakpoint only, so the tokens read from and written to the prompt cache are added back
    (and kept apart, each billed at its own rate); `output_tokens` already include any thinking, which
    `output_tokens_details.thinking_tokens` breaks out."""
    if usage is None:
        return completion
    read, written = usage.cache_read_input_tokens, usage.cache_creation_input_tokens
    completion.input_tokens = None if usage.input_tokens is None else usage.input_tokens + (read or 0) + (written or 0)
    completion.output_tokens = usage.output_tokens
    completion.cache_read_tokens, completion.cache_write_tokens = read, written
    details = usage.output_tokens_details
    completion.thinking_tokens = details.thinking_tokens if details is not None else None
    return completion


def _build(settings: AnthropicSettings, timeouts: Timeouts, name: str) -> AnthropicAdapter:
    return AnthropicAdapter(settings, timeouts=timeouts)


SPEC = ProviderSpec(
    name=PROVIDER,
    label="Anthropic",
    settings=AnthropicSettings,
    build=_build,
    prefixes=(Prefix("anthropic/"), Prefix("claude-", strip=False)),
    secrets=(Secret(API_KEY.name, API_KEY.variable_field, fallbacks=("ANTHROPIC_API_KEY",)),),
    schema_dialect="anthropic",
    hosts=hosts,
)
