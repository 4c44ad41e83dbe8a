"""The MCP server: the four tools' MCP wiring and the preset resources.

What each tool does is `tools.py`'s (shared with the command line); here is only what MCP needs:
each tool's signature with its parameter descriptions (the input schema the assistant's model
reads), its annotations, the call's client handle (`client_call.ClientCall`, built from the MCP
`Context`: sampling, roots, the 2026-07-28 input requests), the resources, and `tool_errors`: our
errors become tool errors here, and only here, with a message that says what to do. The result
models come back from `tools.py`; their annotations publish the output schemas, and each result is
sent as the `CallToolResult` it makes, dumped once and not checked again (`output_schema.py`).
Building the server imports no provider SDK and touches no network.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Annotated, Any

import anyio
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceNotFoundError, ToolError
from mcp_types import Completion, InputRequiredResult, ResourceTemplateReference, ToolAnnotations
from pydantic import AnyHttpUrl, Field, StrictBool

from mcp_llm import __version__
from mcp_llm.app import App
from mcp_llm.client_call import AwaitingClient, ClientCall, StateCodec
from mcp_llm.config import Settings
from mcp_llm.errors import LLMError, clip
from mcp_llm.output_schema import prevalidated, publish_inlined, publish_prevalidated
from mcp_llm.presets import PRESETS
from mcp_llm.progress import ReportFn
from mcp_llm.tools import (
    MAX_COST_USD,
    MAX_TOKENS_LIMIT,
    TEMPERATURE_MAX,
    TIMEOUT_MAX_S,
    HealthReport,
    ImageResult,
    ModelList,
    StructuredResult,
    Tools,
)
from mcp_llm.transport import AnsweringReadStream, http_body_limit

log = logging.getLogger("mcp_llm")

PRESET_TEMPLATE = "mcp-llm://presets/{name}"


def instructions(settings: Settings, app: App) -> str:
    """What the assistant's model is told about this server: only what is true of its config."""
    fallback = list(dict.fromkeys([*settings.defaults.fallback,
                                   *(f for entry in app.registry.configured_models() for f in entry.fallback),
                                   *(["client"] if settings.providers.client.as_fallback else [])]))
    fallbacks = (f"When a model fails, the configured fallbacks are tried ({', '.join(fallback[:5])})."
                 if fallback else "No fallback models are configured: a model that fails is not replaced by another.")
    return f"""\
Ask an LLM and get answers you can trust: generate_structured returns JSON that always validates against the
JSON Schema you pass (or a preset name: {', '.join(PRESETS)}); analyze_image does the same for an image, or
returns text. The model is the one you name in `model` (list_models shows the ids), else the configured default;
with none configured, a model server running on this machine (Ollama, llama-server, LM Studio or vLLM on their
usual ports), else your own model through sampling if you support it, else the call fails and says how to set one
up. Cloud models (Gemini, Anthropic, OpenAI) answer only when their key is configured and they are named. {fallbacks}
Invalid answers are re-asked with the errors. Call provider_health when a call fails."""


# --- the tools' parameters, as the assistant's model reads them in each input schema ---------------

PROMPT = Annotated[str, Field(description="What to ask: the task, with the text or facts it needs.")]
SCHEMA = Annotated[dict[str, Any] | StrictBool | str, Field(description=(
    "The JSON Schema the answer must validate against: an object (draft 2020-12 unless $schema names another), "
    f"its JSON text, `true` for any JSON value, or a preset name ({', '.join(PRESETS)}; mcp-llm://presets lists "
    "them). It is checked before any model is called."))]
IMAGE_SCHEMA = Annotated[dict[str, Any] | StrictBool | str | None, Field(description=(
    "Optional: a JSON Schema (an object, its JSON text, `true`, or a preset name) for an answer as JSON in "
    "`data`; leave it out for a text answer in `text`."))]
MODEL = Annotated[str | None, Field(description=(
    "The model id: 'ollama/<name>', 'gemini-2.5-flash' (any 'gemini-*'), 'claude-haiku-4-5' (any 'claude-*'), "
    "'openai/<name>', '<endpoint>/<name>' for a configured OpenAI-compatible server, an alias from the config, "
    "or 'client' for your own model through sampling; list_models shows the ids. Leave it out for the "
    "configured default (with none: a model server on this machine, else your own model if you can sample)."))]
SYSTEM = Annotated[str | None, Field(description=(
    "A system message put before the prompt: the model's role, tone and rules. The schema's instructions "
    "are added after it."))]
TEMPERATURE = Annotated[float | None, Field(description=(
    "How random the answer may be, from 0 (most deterministic, best for extraction) to 2; leave it out for "
    "the provider's default. Anthropic takes at most 1: a higher value is lowered to 1 there, and "
    "argument_rewrites says so."), json_schema_extra={"minimum": 0, "maximum": TEMPERATURE_MAX})]
MAX_TOKENS = Annotated[int | None, Field(description=(
    f"The most tokens the answer may take, 1 to {MAX_TOKENS_LIMIT:,}; leave it out for the provider's default. "
    "A JSON answer cut off at this limit is an error, never partial data."),
    json_schema_extra={"minimum": 1, "maximum": MAX_TOKENS_LIMIT})]
TIMEOUT = Annotated[float | None, Field(description=(
    "Seconds the whole call may take, retries, re-asks and fallbacks included (more than 0, at most "
    f"{TIMEOUT_MAX_S:,.0f}); leave it out for the configured defaults.timeout_s."),
    json_schema_extra={"exclusiveMinimum": 0, "maximum": TIMEOUT_MAX_S})]
MAX_COST = Annotated[float | None, Field(description=(
    "The most this call may spend, in US dollars, retries, re-asks and fallbacks included (the configured "
    "budget.max_cost_per_call_usd still applies, whichever is lower). Each attempt is checked before it is sent, "
    "against its worst case: one that could cost more is not made, and a cheaper model of the chain is tried; "
    "none left fails with budget_exceeded. Leave it out for the configured budget."),
    json_schema_extra={"minimum": 0, "maximum": MAX_COST_USD})]
CACHE = Annotated[bool, Field(description=(
    "false: do not answer from the response cache (a temperature-0 call identical to an earlier one is answered "
    "from it, with cached: true, and costs nothing); the fresh answer replaces the stored one."))]
IMAGE = Annotated[str, Field(description=(
    "The image: an absolute file path inside the configured image roots (or a root this client declares), "
    "a data: URI, or raw base64; an http(s) URL only when the config enables URLs."))]
IMAGE_PROMPT = Annotated[str, Field(description="What to ask about the image.")]
PROVIDER_NAMES = ("ollama, gemini, anthropic, openai, client (your own model), or a configured "
                  "OpenAI-compatible endpoint")
MODELS_PROVIDER = Annotated[str | None, Field(description=(
    f"Only this provider's models: {PROVIDER_NAMES} (the tool's description lists this server's); "
    "leave it out for all."))]
HEALTH_PROVIDER = Annotated[str | None, Field(description=(
    f"Only this provider: {PROVIDER_NAMES} (the tool's description lists this server's); leave it out for all."))]
REFRESH = Annotated[bool, Field(description=(
    "Ask the providers again instead of using their listings cached for up to 30 s."))]


@contextmanager
def tool_errors(tool: str) -> Iterator[None]:
    """Our anticipated errors → a tool error the assistant can act on; the server stays up.

    The last line of defence, here only: anything unexpected, `BaseException`s such as pyo3's
    PanicException included, becomes a clear tool error with its traceback logged, so one call
    can never take the server (and every other call in flight) down. Cancellation, Ctrl-C and
    exit pass through.
    """
    try:
        yield
    except LLMError as exc:
        log.info("%s failed: %s: %s", tool, type(exc).__name__, exc.message)
        raise ToolError(exc.user_message()) from exc
    except ToolError:
        raise
    except BaseException as exc:
        if isinstance(exc, anyio.get_cancelled_exc_class() | KeyboardInterrupt | SystemExit | GeneratorExit):
            raise
        log.error("%s failed unexpectedly", tool, exc_info=exc)
        raise ToolError(
            f"{tool} failed unexpectedly ({type(exc).__name__}); the server logged the details and keeps serving. "
            "Try again; if it recurs with the same input, report it with the server's log."
        ) from None


def _progress(ctx: Context | None) -> ReportFn | None:
    """Where streamed text is reported: the call's MCP progress, or None when the caller asked for none,
    and its provider request can go unstreamed (issue 23: streaming alone cost 1.38× a plain call)."""
    return ctx.report_progress if ctx is not None and wants_progress(ctx) else None


def wants_progress(ctx: Context) -> bool:
    """Whether the caller asked for progress: a progress token (JSON-RPC) or a callback (in-process).

    `Context.report_progress` is a no-op without either, and the SDK says which only on the dispatch
    context it reports through (mcp/shared/jsonrpc_dispatcher.py `_progress_token`, direct_dispatcher.py
    `_on_progress`, _streamable_http_modern.py `progress_token`; mcp/server/runner.py wraps one in
    `_inner`). Of a context that says neither, progress is taken as wanted: streamed, as before."""
    outbound = getattr(ctx.request_context.session, "_request_outbound", None)
    for _ in range(4):  # a wrapper or two at most
        for attribute in _PROGRESS_ATTRIBUTES:
            if hasattr(outbound, attribute):
                return getattr(outbound, attribute) is not None
        outbound = getattr(outbound, "_inner", None)
    return True


_PROGRESS_ATTRIBUTES = ("_progress_token", "progress_token", "_on_progress")


class StaticTokenVerifier:
    """Over HTTP: the one bearer token from `server.token_env`, compared in constant time."""

    def __init__(self, token: str) -> None:
        self._token = token.encode()

    async def verify_token(self, token: str) -> AccessToken | None:
        if hmac.compare_digest(token.encode(), self._token):
            return AccessToken(token="static", client_id="mcp-llm", scopes=[])
        return None


class ToolsOnFirstUse:
    """The SDK's tool manager, whose tools are registered the first time anything asks it for anything.

    Registering a tool builds its argument model and output schema with pydantic, about a fifth of
    our start-up over a bare MCPServer's (issue 23); `initialize` needs none of it, `tools/list` and
    `tools/call` do. Every use of the tools in mcp 2.3 goes through `MCPServer._tool_manager` (listing,
    calling, the input schema the dispatcher checks arguments against), so this stands in its place
    and runs the pending registrations at the first attribute asked for; their own `add_tool` calls
    then pass straight through."""

    def __init__(self, manager: Any) -> None:
        self._manager = manager
        self.pending: list[Callable[[], Any]] = []

    def __getattr__(self, name: str) -> Any:
        pending, self.pending = self.pending, []
        for step in pending:
            step()
        return getattr(self._manager, name)


class LLMServer(MCPServer):
    """`MCPServer` with what its transports leave undone (see mcp_llm/transport.py): over stdio, a line
    the SDK cannot read gets a JSON-RPC error instead of silence, and pipes cost no thread hop per line
    (mcp_llm/stdio_pipes.py); over streamable HTTP, the request body limit follows `images.max_bytes`
    unless the caller passes `max_request_body_size`."""

    def __init__(self, *args: Any, body_limit: int, app: App, http_token: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.body_limit = body_limit
        self.app = app  # what the tools share: the status page reads it
        self._http_token = http_token
        self._tools_pending = ToolsOnFirstUse(self._tool_manager)
        self._tool_manager = self._tools_pending  # type: ignore[assignment]

    def lazy_tool(self, **options: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """As `MCPServer.tool(**options)`, the registration itself left to the first use of the tools."""
        def record(fn: Callable[..., Any]) -> Callable[..., Any]:
            self._tools_pending.pending.append(lambda: MCPServer.tool(self, **options)(fn))
            return fn

        return record

    def after_tools(self, step: Callable[[], None]) -> None:
        """Run `step` once the tools are registered (it may read them)."""
        self._tools_pending.pending.append(step)

    async def run_stdio_async(self) -> None:
        """As `MCPServer.run_stdio_async` (mcp/server/mcpserver/server.py), with the read stream wrapped, and
        over pipes read and written from the event loop (`stdio_pipes`) instead of a worker thread per line."""
        from mcp.server.stdio import stdio_server

        from mcp_llm.stdio_pipes import pipe_stdio

        async with pipe_stdio() as pipes, stdio_server(*(pipes or ())) as (read_stream, write_stream):
            await self._lowlevel_server.run(
                AnsweringReadStream(read_stream, write_stream),
                write_stream,
                self._lowlevel_server.create_initialization_options(),
            )

    async def run_streamable_http_async(self, *, host: str = "127.0.0.1", port: int = 8000, **kwargs: Any) -> None:
        """As `MCPServer.run_streamable_http_async`, but uvicorn keeps the logging set up for us (`log_config=None`):
        its own default config sends the access log to stdout, and every log line belongs on stderr."""
        import uvicorn

        kwargs.setdefault("max_request_body_size", self.body_limit)
        app = self.streamable_http_app(host=host, **kwargs)
        config = uvicorn.Config(app, host=host, port=port, log_config=None, log_level=self.settings.log_level.lower())
        await uvicorn.Server(config).serve()

    def streamable_http_app(self, **kwargs: Any) -> Any:
        """The SDK's app, with the status page beside /mcp (status/http.py), under the same Host/Origin checks."""
        from mcp_llm.http_security import transport_security
        from mcp_llm.status.http import StatusRoutes

        kwargs.setdefault("max_request_body_size", self.body_limit)
        starlette = super().streamable_http_app(**kwargs)
        settings = self.app.settings
        security = kwargs.get("transport_security") or transport_security(kwargs.get("host", settings.server.host),
                                                                          settings.server)
        starlette.router.routes.extend(StatusRoutes(self.app, self._http_token, security).routes())
        return starlette


def build_server(settings: Settings, *, http_token: str | None = None, http_url: str | None = None) -> LLMServer:
    """The server with its tools; `http_token` makes every HTTP request carry that bearer token."""
    app = App(settings)
    tools = Tools(app)
    codec = StateCodec()  # signs the state a 2026-07-28 sampling call carries between rounds
    auth: dict[str, Any] = {}
    if http_token is not None:
        url = http_url or f"http://{settings.server.host}:{settings.server.port}"
        auth = {
            "token_verifier": StaticTokenVerifier(http_token),
            "auth": AuthSettings(issuer_url=AnyHttpUrl(url), resource_server_url=AnyHttpUrl(f"{url}/mcp")),
        }

    @asynccontextmanager
    async def lifespan(_: MCPServer) -> AsyncIterator[App]:
        try:
            yield app
        finally:
            await app.aclose()

    server = LLMServer(
        "mcp-llm",
        title="mcp_llm",
        instructions=instructions(settings, app),
        version=__version__,
        lifespan=lifespan,
        body_limit=http_body_limit(settings),
        app=app,
        http_token=http_token,
        **auth,
    )
    reads = ToolAnnotations(read_only_hint=True, open_world_hint=True, idempotent_hint=False)

    @server.lazy_tool(title="Generate schema-valid JSON", annotations=reads)
    async def generate_structured(
        prompt: PROMPT,
        schema: SCHEMA,
        model: MODEL = None,
        system: SYSTEM = None,
        temperature: TEMPERATURE = None,
        max_tokens: MAX_TOKENS = None,
        timeout_s: TIMEOUT = None,
        max_cost_usd: MAX_COST = None,
        cache: CACHE = True,
        ctx: Context | None = None,
    ) -> StructuredResult | InputRequiredResult:
        """Ask an LLM and get back JSON in `data` that validates against `schema`.

        An answer that is not valid is re-asked with the validation errors; a model that keeps failing
        is replaced by the configured fallbacks, if any. The result's trace says which model answered,
        every attempt, the tokens used, what it cost (cost_usd, null when a price is unknown) and what
        was adapted for the provider (schema_rewrites, argument_rewrites). A temperature-0 call identical
        to an earlier one is answered from the cache (cached: true, nothing sent). Bad input is a tool
        error that says what to change.
        """
        with tool_errors("generate_structured"):
            client = ClientCall(ctx, codec)
            try:
                return prevalidated(await tools.generate_structured(
                    prompt, schema, model, system, temperature, max_tokens, timeout_s, max_cost_usd, cache,
                    client=client, progress=_progress(ctx)))
            except AwaitingClient:  # 2026-07-28: ask the client to sample, then go on when it calls again
                return client.input_required()

    @server.lazy_tool(title="Analyze an image", annotations=reads)
    async def analyze_image(
        image: IMAGE,
        prompt: IMAGE_PROMPT,
        schema: IMAGE_SCHEMA = None,
        model: MODEL = None,
        temperature: TEMPERATURE = None,
        max_tokens: MAX_TOKENS = None,
        timeout_s: TIMEOUT = None,
        max_cost_usd: MAX_COST = None,
        cache: CACHE = True,
        ctx: Context | None = None,
    ) -> ImageResult | InputRequiredResult:
        """Ask a vision model about an image; get text, or JSON valid against `schema` when one is given.

        The image is turned upright, stripped of metadata and shrunk to fit the model's provider.
        `model` left out means the configured vision model (defaults.vision_model), else a model
        that can see on a model server on this machine, else your own model if you can sample. A
        model known not to read images (config `vision = false`, or an Ollama model without the
        vision capability) is refused before the image is sent, and the next model of the fallback
        chain is tried; when none can, the error names a vision model to use, or says to set
        defaults.vision_model (or pull one, e.g. `ollama pull llava`).
        """
        with tool_errors("analyze_image"):
            client = ClientCall(ctx, codec)
            try:
                return prevalidated(await tools.analyze_image(
                    image, prompt, schema, model, temperature, max_tokens, timeout_s, max_cost_usd, cache,
                    client=client, progress=_progress(ctx)))
            except AwaitingClient:
                return client.input_required()

    names = ", ".join([*app.registry.provider_names(), "client"])

    @server.lazy_tool(title="List models", annotations=ToolAnnotations(read_only_hint=True, open_world_hint=True),
                 description=f"""The models configured and those the providers report, with what each can do.

`source` is 'config' or 'discovered'; `available` says whether the provider has the model (null when
unknown: not asked, or the provider could not be reached); `vision` whether it reads images.
Providers of this server: {names}.""")
    async def list_models(provider: MODELS_PROVIDER = None, refresh: REFRESH = False,
                          ctx: Context | None = None) -> ModelList:
        with tool_errors("list_models"):
            return prevalidated(await tools.list_models(provider, refresh, client=ClientCall(ctx, codec)))

    @server.lazy_tool(title="Provider health", annotations=ToolAnnotations(read_only_hint=True, open_world_hint=True),
                 description=f"""Whether each provider is reachable, how fast, its version, and whether a key is set.

Probes never run a completion, and are cached for a few seconds. Status is ok, degraded, down or
unconfigured; `detail` says what to do when it is not ok; `circuit` is open while a provider that
kept failing is skipped. Providers of this server: {names}.""")
    async def provider_health(provider: HEALTH_PROVIDER = None, ctx: Context | None = None) -> HealthReport:
        with tool_errors("provider_health"):
            return prevalidated(await tools.provider_health(provider, client=ClientCall(ctx, codec)))

    @server.resource("mcp-llm://presets", title="Schema presets", mime_type="application/json")
    async def presets_index() -> str:
        """The names of the schema presets `schema` accepts, with their descriptions."""
        return json.dumps({name: schema.get("description", "") for name, schema in PRESETS.items()}, indent=2)

    @server.resource(PRESET_TEMPLATE, title="A schema preset", mime_type="application/json")
    async def preset(name: str) -> str:
        """The JSON Schema behind one preset name."""
        if name not in PRESETS:
            raise ResourceNotFoundError(f"No preset {clip(name)}; the presets are {', '.join(PRESETS)}.")
        return json.dumps(PRESETS[name], indent=2)

    @server.completion()
    async def complete_preset_name(ref: Any, argument: Any, context: Any) -> Completion | None:
        """Completion of `{name}` in `mcp-llm://presets/{name}`: the preset names that start with what is typed."""
        if isinstance(ref, ResourceTemplateReference) and ref.uri == PRESET_TEMPLATE and argument.name == "name":
            return Completion(values=[n for n in PRESETS if n.startswith(argument.value)])
        return None

    @server.resource("mcp-llm://stats", title="Usage since start", mime_type="application/json")
    async def stats() -> str:
        """Per provider and per model since the server started: calls, successes, failures by kind,
        retries, re-asks, fallbacks, tokens, cost, latency p50/p95, summed over every replica when state is
        shared (`state`: local, shared, or local (redis unreachable)); the response cache's hits and the
        money they saved; the day's budget and what it has spent."""
        return json.dumps(await app.stats(), indent=2)

    server.after_tools(lambda: publish_inlined(server, "generate_structured", "analyze_image"))  # cheaper to check
    server.after_tools(lambda: publish_prevalidated(server, "generate_structured", "analyze_image", "list_models",
                                                    "provider_health"))
    return server
