"""Gemini, by API key or on Vertex AI, through `google-genai` (imported on first use).

Wire facts this relies on (google-genai 3.4): `response_json_schema` is sent verbatim (the
older `response_schema` is rewritten by the SDK and crashes on type lists), so the schema
is first compiled to Gemini's subset in `schema_dialects`; images go as `Part.from_bytes`;
the SDK does not retry unless `retry_options` is set; errors are `errors.APIError` (`.code`)
and, below it, httpx/httpx2 transport exceptions. On Vertex AI a client is bound to one
location, so one client is kept per location, and a model can be pinned to its own
location (`[providers.gemini.locations]`) — e.g. preview models served only from `global`.
"""

from __future__ import annotations

import json
import math
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Literal

import anyio
from pydantic import Field

from mcp_llm.adapters._errors import (
    EVENT_HOOKS,
    cut_off_error,
    error_for_status,
    parse_retry_after,
    timeout_error,
    translated,
    transport_error,
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
from mcp_llm.adapters.spec import API_KEY, FromEnv, Prefix, ProviderSettings, ProviderSpec, Secret, public_url
from mcp_llm.errors import AuthError, BadRequestError, ProviderError, ProviderNotReady, ProviderServerError
from mcp_llm.words import words

if TYPE_CHECKING:
    from google.genai import Client
    from pydantic import SecretStr

PROVIDER = "gemini"
API_ENDPOINT = "https://generativelanguage.googleapis.com"
VERTEX = "vertex"  # the route option `vertex/<name>` carries (Request.options): Vertex AI whatever the backend
KEY_HINT = "Set GEMINI_API_KEY (from aistudio.google.com/apikey), or the variable providers.gemini.api_key_env names."
VERTEX_HINT = (
    "Set GOOGLE_CLOUD_PROJECT (or providers.gemini.project) and sign in with "
    "`gcloud auth application-default login`, or name a token variable in providers.gemini.access_token_env."
)


class GeminiSettings(ProviderSettings):
    """`[providers.gemini]`: the Gemini API by key, or Vertex AI (a project, ADC or an access token)."""

    backend: Literal["api", "vertex"] = "api"
    api_key_env: str = "GEMINI_API_KEY"
    project: str | None = None
    location: str | None = None
    access_token_env: str = ""
    locations: dict[str, str] = Field(default_factory=dict)

    @property
    def access_token(self) -> SecretStr | None:
        """Vertex AI: an OAuth access token from the variable `access_token_env` names, if set."""
        return self.secret("access_token")

    def location_for(self, model: str) -> str:
        """Vertex AI: the model's own location if it has one, else `location`, else `global`."""
        return self.locations.get(model) or self.location or "global"


def endpoint_for(settings: GeminiSettings, vertex: bool, location: str | None = None) -> str:
    """The base URL: `endpoint` if set, else the Gemini API's, else Vertex AI's for the location."""
    if settings.endpoint:
        return settings.endpoint
    if not vertex:
        return API_ENDPOINT
    if location in (None, "global"):
        return "https://aiplatform.googleapis.com"
    return f"https://{location}-aiplatform.googleapis.com"


def hosts(settings: GeminiSettings) -> list[str]:
    """Where the configured backend is reached (a Vertex AI model pinned elsewhere goes to its location's)."""
    return [endpoint_for(settings, settings.backend == "vertex", settings.location)]


class GeminiAdapter(LLMAdapter):
    provider = PROVIDER
    sdk_modules = ("google.genai", "google.oauth2.credentials")
    # Inline images: the whole request is at most 20 MB and base64 adds a third, so 15 MB of image;
    # PNG, JPEG, WebP (HEIC/HEIF too, not GIF); larger than 3072 px a side is scaled down by the API.
    capabilities = Capabilities(native_schema=True, images=True, max_image_bytes=15 * 1024 * 1024,
                                max_image_side=3072, image_formats=("image/png", "image/jpeg", "image/webp"))

    def __init__(self, settings: GeminiSettings, timeouts: Timeouts | None = None) -> None:
        self._settings = settings
        self._timeouts = timeouts or Timeouts()
        # "api", or the Vertex AI location: clients of at most PER_CLIENT calls each (shards.py: one below that)
        self._clients: dict[str, Shards[Client]] = {}

    # --- clients ---------------------------------------------------------------------------

    def uses_vertex(self, forced: bool = False) -> bool:
        return forced or self._settings.backend == "vertex"

    def endpoint(self, vertex: bool, location: str | None = None) -> str:
        """As messages and health show it (`public_url`)."""
        return public_url(endpoint_for(self._settings, vertex, location))

    def _check_configured(self, vertex: bool) -> None:
        settings = self._settings
        if vertex:
            if not settings.project and not settings.has_api_key:
                raise ProviderNotReady("Vertex AI needs a Google Cloud project, and none is set.",
                                       provider=PROVIDER, hint=VERTEX_HINT)
        elif not settings.has_api_key:
            raise ProviderNotReady("The Gemini API needs an API key, and none is set.", provider=PROVIDER,
                                   hint=KEY_HINT + " Or set providers.gemini.backend = \"vertex\".")

    def not_ready(self) -> ProviderNotReady | None:
        try:
            self._check_configured(self.uses_vertex())
        except ProviderNotReady as exc:
            return exc
        return None

    def _client(self, vertex: bool, location: str | None) -> Client:
        """A client of the backend (and Vertex AI location) for listings and probes: the first."""
        return self._shards(vertex, location).first()

    def _shards(self, vertex: bool, location: str | None) -> Shards[Client]:
        key = f"vertex:{location}" if vertex else "api"
        shards = self._clients.get(key)
        if shards is None:
            self._check_configured(vertex)
            shards = self._clients[key] = Shards(lambda: self._new_client(vertex, location))
        return shards

    def _new_client(self, vertex: bool, location: str | None) -> Client:
        from google.genai import Client, types

        # google-genai takes one timeout for the whole request: no separate connect budget. Its httpx2
        # client gets the hook that tells a request sent from one that failed on our side (_errors.py); its
        # pool (httpx's 100 connections, 20 kept) is left as it is: a client has at most PER_CLIENT calls
        # in flight (shards.py), so it never needs more.
        http_options = types.HttpOptions(timeout=int(self._timeouts.total_s * 1000),
                                         async_client_args={"event_hooks": EVENT_HOOKS})
        if not vertex:  # one CA store for all clients (shards.py); Vertex AI may want its mTLS client certificate
            tls = shared_tls("httpx2")
            # the sync client's, the async client's, and the one google-genai keeps for websockets (`ssl`)
            http_options.client_args = {"verify": tls}
            http_options.async_client_args = {"event_hooks": EVENT_HOOKS, "verify": tls, "ssl": tls}
        if self._settings.endpoint:
            http_options.base_url = self._settings.endpoint
        settings = self._settings
        api_key = settings.api_key.get_secret_value() if settings.api_key else None
        if not vertex:
            return Client(api_key=api_key, http_options=http_options)
        if settings.project:
            credentials = None
            if settings.access_token is not None:
                from google.oauth2.credentials import Credentials

                credentials = Credentials(token=settings.access_token.get_secret_value())
            return Client(vertexai=True, project=settings.project, location=location, credentials=credentials,
                          http_options=http_options)
        return Client(vertexai=True, api_key=api_key, http_options=http_options)  # Vertex AI express mode

    def _shards_for_model(self, model: str, vertex: bool) -> tuple[Shards[Client], str]:
        location = self._settings.location_for(model) if vertex else None
        return self._shards(vertex, location), self.endpoint(vertex, location)

    # --- completion ------------------------------------------------------------------------

    async def complete(self, request: Request) -> Completion:
        vertex = self.uses_vertex(bool(request.options.get(VERTEX)))
        shards, endpoint = self._shards_for_model(request.model, vertex)
        with shards.lease() as client:
            return await self._complete(client, endpoint, request)

    async def _complete(self, client: Client, endpoint: str, request: Request) -> Completion:
        from google.genai import types

        contents = [
            types.Content(
                role="model" if message.role == "assistant" else "user",
                parts=[types.Part.from_text(text=message.content)]
                + [types.Part.from_bytes(data=image.data, mime_type=image.mime_type) for image in message.images],
            )
            for message in request.messages
        ]
        config = types.GenerateContentConfig(
            system_instruction=request.system,
            temperature=request.temperature,
            max_output_tokens=request.max_tokens,
            http_options=types.HttpOptions(timeout=max(1, int(request.timeout_s * 1000))),
        )
        if request.schema is not None:
            config.response_mime_type = "application/json"
            config.response_json_schema = request.schema
        chunks: list[Any] | None
        with self._translate_errors(request.model, endpoint):
            if self._timeouts.plain(request):
                # Nobody reads the pieces and no first-response budget applies: one plain request, bounded by
                # the config's timeout (the call's remaining time), closed as well when the call is cancelled.
                chunks = [await client.aio.models.generate_content(model=request.model, contents=contents,
                                                                   config=config)]
                if request.on_chunk is not None:  # the whole answer, one piece (the fleet's first-chunk note)
                    await request.on_chunk(_completion_text(chunks))
            else:
                chunks = await self._stream(client, request, contents, config)
        if chunks is None:
            raise timeout_error(f"Gemini at {endpoint}", provider=PROVIDER, model=request.model,
                                cause="no first response within first_response_timeout_s")
        completion = _completion(chunks, request.model)
        if completion.finish_reason == "max_tokens" and request.schema is not None:
            raise cut_off_error(f"Gemini at {endpoint}", provider=PROVIDER, model=request.model,
                                max_tokens=request.max_tokens, answered=completion)
        return completion

    async def _stream(self, client: Client, request: Request, contents: list[Any], config: Any) -> list[Any] | None:
        """The answer's chunks, streamed (SSE): an error mid-answer surfaces as an APIError. google-genai has one
        timeout for the whole request, so the first-response budget is kept here: None when no first chunk came
        within it (the request is then cancelled, and closed)."""
        chunks: list[Any] = []
        with anyio.move_on_after(self._timeouts.read_s(request.timeout_s)) as first_wait:
            stream = await client.aio.models.generate_content_stream(model=request.model, contents=contents,
                                                                     config=config)
            async for chunk in stream:
                chunks.append(chunk)
                first_wait.deadline = math.inf
                if request.on_chunk is not None:
                    await request.on_chunk(_completion_text([chunk]))
        return None if first_wait.cancelled_caught else chunks

    # --- listing and health ----------------------------------------------------------------

    async def list_models(self) -> list[ModelInfo]:
        vertex = self.uses_vertex()
        location = self._settings.location if vertex else None
        client = self._client(vertex, location or ("global" if vertex else None))
        endpoint = self.endpoint(vertex, location)
        models: list[ModelInfo] = []
        # `vertex/<name>` when Vertex AI is not the configured backend, so that the ids route back there
        route = {VERTEX: True} if vertex and self._settings.backend != "vertex" else {}
        with self._translate_errors(None, endpoint):
            pager = await client.aio.models.list(config={"page_size": 100, "query_base": True})
            async for model in pager:
                actions = model.supported_actions or []
                if actions and "generateContent" not in actions:
                    continue  # embeddings, imagen…: not for this server's tools
                name = (model.name or "").rsplit("/", 1)[-1]
                if not name:
                    continue
                model_id = SPEC.model_id(name, **route)
                models.append(ModelInfo(id=model_id, provider=PROVIDER, label=model.display_name or name,
                                        vision=True, structured=True, available=True, source="discovered"))
        return models

    async def health(self) -> Health:
        vertex = self.uses_vertex()
        location = (self._settings.location or "global") if vertex else None
        endpoint = self.endpoint(vertex, location)
        backend = f"Vertex AI ({self._settings.project or 'express mode'}, {location})" if vertex else "Gemini API"

        async def check(client: Client) -> dict[str, Any]:
            with self._translate_errors(None, endpoint):
                pager = await client.aio.models.list(config={"page_size": 1, "query_base": True})
            return {"detail": f"{backend}: listing models works" + ("" if pager.page else " (none)")}

        has_key = self._settings.has_api_key or self._settings.access_token is not None
        base = Health(provider=PROVIDER, status="down", endpoint=endpoint, has_api_key=has_key,
                      version="v1beta1" if vertex else "v1")
        return await probe(base, lambda: self._client(vertex, location), check)

    async def aclose(self) -> None:
        shards, self._clients = list(self._clients.values()), {}
        for client in (client for shard in shards for client in shard.all()):
            await client.aio.aclose()

    # --- errors ----------------------------------------------------------------------------

    def _translate_errors(self, model: str | None, endpoint: str) -> AbstractContextManager[None]:
        return translated(lambda exc: translate_exception(exc, endpoint, model, vertex=self.uses_vertex()),
                          where=f"Gemini at {endpoint}", provider=PROVIDER, model=model)


def _completion(chunks: list[Any], model: str) -> Completion:
    """Join a streamed answer: the text of every chunk's first candidate, the last usage and finish."""
    finish = ""
    usage = None
    block_reason = None
    for chunk in chunks:
        if chunk.prompt_feedback and chunk.prompt_feedback.block_reason:
            block_reason = chunk.prompt_feedback.block_reason
        usage = chunk.usage_metadata or usage
        for candidate in (chunk.candidates or [])[:1]:
            finish = _name(candidate.finish_reason) or finish
    text = _completion_text(chunks)
    if block_reason is not None and not text:
        raise BadRequestError(f"Gemini returned no answer (the prompt was blocked: {_name(block_reason)}).",
                              provider=PROVIDER, model=model, hint="Rephrase the prompt, or use another model.")
    if not text and finish in ("SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII"):
        raise BadRequestError(f"Gemini stopped without an answer ({finish}).", provider=PROVIDER, model=model,
                              hint="Rephrase the prompt, or use another model.")
    if not chunks:
        raise ProviderServerError("Gemini ended the stream without an answer.", provider=PROVIDER, model=model)
    # Gemini counts cached tokens among the prompt's, and thinking apart from the answer's (both billed as
    # output): `output_tokens` is their sum, as for every provider (adapters/base.py, Completion).
    thoughts = usage.thoughts_token_count if usage else None
    answer = usage.candidates_token_count if usage else None
    return Completion(
        text=text,
        input_tokens=usage.prompt_token_count if usage else None,
        output_tokens=None if answer is None and thoughts is None else (answer or 0) + (thoughts or 0),
        finish_reason=finish.lower() or None,
        cache_read_tokens=usage.cached_content_token_count if usage else None,
        thinking_tokens=thoughts,
    )


def _completion_text(chunks: list[Any]) -> str:
    """The answer's text in `chunks`: every chunk's first candidate, thoughts left out."""
    texts: list[str] = []
    for chunk in chunks:
        for candidate in (chunk.candidates or [])[:1]:
            parts = candidate.content.parts if candidate.content and candidate.content.parts else []
            texts.extend(part.text for part in parts if part.text and not part.thought)
    return "".join(texts)


def _name(value: Any) -> str:
    return str(getattr(value, "name", value) or "")


def translate_exception(exc: Exception, endpoint: str, model: str | None, *, vertex: bool) -> ProviderError | None:
    """Map an exception from google-genai (or the transport under it) to ours; None if it is neither."""
    from google.genai import errors
    from pydantic import ValidationError

    where = f"Gemini at {endpoint}"
    if isinstance(exc, errors.APIError):
        status = int(exc.code or 0)
        text = exc.message or exc.status or "no message"
        retry_after = None
        headers = getattr(getattr(exc, "response", None), "headers", None)
        if headers is not None:
            retry_after = parse_retry_after(headers.get("retry-after"))
        auth_failure = status in (401, 403) or (status == 400 and "api key" in text.lower())
        if auth_failure:
            return AuthError(f"{where} refused the credentials ({status}): {text}", provider=PROVIDER, model=model,
                             status=status, hint=VERTEX_HINT if vertex else KEY_HINT)
        hint = None
        if status == 404:
            hint = f"Check the model name; {words().list_models} shows the models this key can use."
        elif status == 400 and "schema" in text.lower():
            hint = "Simplify the schema; schema_rewrites lists what was already adapted for Gemini."
        return error_for_status(status, f"{where} answered {status} {exc.status or ''}: {text}".replace("  ", " "),
                                provider=PROVIDER, model=model, hint=hint, retry_after=retry_after)
    # a 200 with a body that is not JSON surfaces as a bare JSONDecodeError (or, mid-stream,
    # UnknownApiResponseError); one that is JSON of the wrong shape as a pydantic ValidationError
    if isinstance(exc, json.JSONDecodeError | errors.UnknownApiResponseError | ValidationError):
        return ProviderServerError(f"{where} sent a malformed response: {exc}.", provider=PROVIDER, model=model)
    try:
        from google.auth.exceptions import DefaultCredentialsError, RefreshError
    except ImportError:  # pragma: no cover - google-auth ships with google-genai
        pass
    else:
        if isinstance(exc, DefaultCredentialsError | RefreshError):
            return ProviderNotReady(f"No usable Google Cloud credentials: {exc}", provider=PROVIDER, model=model,
                                    hint=VERTEX_HINT)
    return transport_error(exc, provider=PROVIDER, model=model, where=where,
                           down_hint="Check the network, or providers.gemini.endpoint if you set one.")


def _vertex_if_true(value: str) -> str | None:
    """GOOGLE_GENAI_USE_VERTEXAI, read as google-genai reads it: true, 1 or yes mean Vertex AI."""
    return "vertex" if value.lower() in ("1", "true", "yes") else None


def _build(settings: GeminiSettings, timeouts: Timeouts, name: str) -> GeminiAdapter:
    return GeminiAdapter(settings, timeouts=timeouts)


SPEC = ProviderSpec(
    name=PROVIDER,
    label="Gemini",
    settings=GeminiSettings,
    build=_build,
    prefixes=(Prefix("gemini/"), Prefix("vertex/", options={VERTEX: True}), Prefix("gemini-", strip=False)),
    secrets=(Secret(API_KEY.name, API_KEY.variable_field, fallbacks=("GEMINI_API_KEY", "GOOGLE_API_KEY")),
             Secret("access_token", "access_token_env")),
    from_env=(FromEnv("backend", "GOOGLE_GENAI_USE_VERTEXAI", _vertex_if_true),
              FromEnv("project", "GOOGLE_CLOUD_PROJECT"), FromEnv("location", "GOOGLE_CLOUD_LOCATION")),
    schema_dialect="gemini",
    hosts=hosts,
)
