"""Every provider's errors become ours: each HTTP status through each provider's real SDK, over real HTTP,
against its fake server; and every exception class each SDK (and the transport under it) can raise.

The status table is `adapters/_errors.error_for_status`: 401/403 auth, 404 model not found,
408/409/429/5xx/529 transient (429 rate limited, with its Retry-After), any other 4xx a bad request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from mcp_llm.adapters.base import LLMAdapter, Message, Request
from mcp_llm.adapters.providers import PROVIDERS
from mcp_llm.config import Settings
from mcp_llm.errors import (
    AuthError,
    BadRequestError,
    LLMError,
    ModelNotFoundError,
    NotSentError,
    ProviderError,
    ProviderServerError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimitedError,
    TransientError,
)
from mcp_llm.schema import compile_for
from tests.conftest import budget
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.gemini_server import FakeGemini
from tests.fakes.ollama_server import FakeOllama
from tests.fakes.openai_server import FakeOpenAI

pytestmark = pytest.mark.anyio

KEYS = {"gemini": "AIza-status-gemini-11", "anthropic": "sk-ant-status-22", "openai": "sk-openai-status-33",
        "local": "sk-local-status-44"}
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"title": {"type": "string"}, "tags": {"type": "array", "items": {"type": "string"}}},
    "required": ["title", "tags"],
}
RETRY_AFTER_S = 7


@dataclass(frozen=True)
class Wire:
    """One provider as the tests reach it: its fake, its config table, the model asked for."""

    name: str  # the provider's name (`Settings.provider_settings`, the error's `.provider`)
    spec: str  # the spec that builds its adapter
    model: str
    message_key: str  # the keyword its fake's `enqueue` takes an error's message as
    table: Callable[[str], str]  # the fake's base URL → its `[providers…]` table
    env: dict[str, str]

    def __str__(self) -> str:
        return self.name


WIRES = [
    Wire("ollama", "ollama", "llama3.2:3b", "error", lambda url: f'[providers.ollama]\nendpoint = "{url}"\n', {}),
    Wire("gemini", "gemini", "gemini-2.5-flash", "error", lambda url: f'[providers.gemini]\nendpoint = "{url}"\n',
         {"GEMINI_API_KEY": KEYS["gemini"]}),
    Wire("anthropic", "anthropic", "claude-haiku-4-5", "message",
         lambda url: f'[providers.anthropic]\nendpoint = "{url}"\n', {"ANTHROPIC_API_KEY": KEYS["anthropic"]}),
    Wire("openai", "openai", "gpt-4.1-mini", "message", lambda url: f'[providers.openai]\nendpoint = "{url}/v1"\n',
         {"OPENAI_API_KEY": KEYS["openai"]}),
    Wire("local", "openai_compatible", "local-model", "message",
         lambda url: (f'[providers.openai_compatible.local]\nendpoint = "{url}/v1"\napi_key_env = "LOCAL_KEY"\n'
                      'models = ["local-model"]\n'), {"LOCAL_KEY": KEYS["local"]}),
]

# Every status a provider may answer with, and what it must become (the union of what the four
# adapter test files checked apiece before issue 19, and 504).
STATUS_MAP: list[tuple[int, type[ProviderError], bool]] = [
    (400, BadRequestError, False),
    (401, AuthError, False),
    (403, AuthError, False),
    (404, ModelNotFoundError, False),
    (408, ProviderServerError, True),
    (409, ProviderServerError, True),
    (413, BadRequestError, False),
    (422, BadRequestError, False),
    (429, RateLimitedError, True),
    (500, ProviderServerError, True),
    (502, ProviderServerError, True),
    (503, ProviderServerError, True),
    (504, ProviderServerError, True),
    (529, ProviderServerError, True),
]


def start_fake(wire: Wire) -> Any:
    if wire.name == "ollama":
        return FakeOllama()
    if wire.name == "gemini":
        return FakeGemini(api_key=KEYS["gemini"])
    if wire.name == "anthropic":
        return FakeAnthropic(api_key=KEYS["anthropic"])
    return FakeOpenAI(api_key=KEYS[wire.name])


@pytest.fixture(scope="module")
def running() -> Iterator[dict[str, Any]]:
    fakes = {wire.name: start_fake(wire) for wire in WIRES}
    for fake in fakes.values():
        fake.start()
    try:
        yield fakes
    finally:
        for fake in fakes.values():
            fake.stop()


def build(wire: Wire, fake: Any, make_settings: Callable[..., Settings]) -> LLMAdapter:
    """The provider's adapter as the registry builds it: from its spec, with the settings its table gives."""
    settings = make_settings(wire.table(fake.url), env=wire.env)
    (spec,) = [s for s in PROVIDERS if s.name == wire.spec]
    return spec.build(settings.provider_settings(wire.name), budget(10), wire.name)


def ask(wire: Wire) -> Request:
    """A structured request, its schema compiled for the provider as the router would."""
    (spec,) = [s for s in PROVIDERS if s.name == wire.spec]
    schema = compile_for(spec.schema_dialect, SCHEMA).schema
    return Request(model=wire.model, messages=[Message("user", "Name a film.")], schema=schema)


@pytest.mark.parametrize(("status", "error_class", "retryable"), STATUS_MAP, ids=[str(s) for s, _, _ in STATUS_MAP])
@pytest.mark.parametrize("wire", WIRES, ids=str)
async def test_every_status_becomes_one_of_our_errors(running: dict[str, Any], make_settings: Callable[..., Settings],
                                                      wire: Wire, status: int, error_class: type[ProviderError],
                                                      retryable: bool) -> None:
    fake = running[wire.name]
    fake.reset()
    adapter = build(wire, fake, make_settings)
    headers = {"Retry-After": str(RETRY_AFTER_S)} if status == 429 else None
    fake.enqueue(status=status, headers=headers, **{wire.message_key: f"simulated {status}"})
    try:
        with pytest.raises(ProviderError) as caught:
            await adapter.complete(ask(wire))
    finally:
        await adapter.aclose()
    error = caught.value
    assert type(error) is error_class, error
    assert error.retryable is retryable
    assert isinstance(error, TransientError) is retryable
    assert error.status == status
    assert (error.provider, error.model) == (wire.name, wire.model)
    assert f"simulated {status}" in error.message
    assert fake.url in error.message, "the error does not say which server answered"
    if isinstance(fake, FakeOpenAI):  # OpenAI's SDK is given the API's base URL, and the error names it
        assert fake.base_url in error.message
    for key in wire.env.values():
        assert key not in error.user_message()
    if status == 429:
        assert error.retry_after == RETRY_AFTER_S
    assert fake.queued == 0, "the fault was not what the adapter's request got"
    assert not fake.errors, f"the fake server itself failed: {fake.errors!r}"


# --- every exception class each SDK, and the transport under it, can raise ---------------------------
#
# As httpx's own test that every lower-layer exception is mapped: each SDK's exception module is
# walked with `inspect`, and each class is either in EXPECTED (built as the SDK builds it, it must
# leave the adapter's error translation as exactly that class of ours, retryable exactly when it is
# a TransientError) or in NEVER_RAISED (with why no call of ours can meet it). A class an SDK adds
# fails test_every_exception_class_of_each_sdk_is_accounted_for until it is put in one of them.

ENDPOINT = "http://127.0.0.1:9"
SENT, NOT_SENT = True, False  # whether the SDK raises it once the request has gone out, or before

_STATUS_OF_CLASS = {"APIStatusError": 418, "InternalServerError": 500, "OAuthError": 401}  # the rest say theirs


@dataclass(frozen=True)
class Sdk:
    name: str  # the adapter's provider
    modules: tuple[str, ...]  # the modules whose exception classes are walked
    transport: str  # the HTTP client the SDK runs on

    def translate(self) -> Callable[[Exception], ProviderError | None]:
        """The adapter's own translation, as its `_translate_errors` calls it."""
        model = "m"
        if self.name == "ollama":
            from mcp_llm.adapters.ollama import translate_exception as ollama_translate

            return lambda exc: ollama_translate(exc, ENDPOINT, model)
        if self.name == "gemini":
            from mcp_llm.adapters.gemini import translate_exception as gemini_translate

            return lambda exc: gemini_translate(exc, ENDPOINT, model, vertex=False)
        if self.name == "anthropic":
            from mcp_llm.adapters.anthropic import translate_exception as anthropic_translate

            return lambda exc: anthropic_translate(exc, ENDPOINT, model)
        from mcp_llm.adapters.openai import OpenAIAdapter, OpenAISettings

        adapter = OpenAIAdapter(OpenAISettings(endpoint=ENDPOINT))
        return lambda exc: adapter.translate_exception(exc, model)


SDKS = {sdk.name: sdk for sdk in (
    Sdk("ollama", ("ollama",), "httpx"),
    Sdk("gemini", ("google.genai.errors",), "httpx2"),
    Sdk("anthropic", ("anthropic._exceptions",), "httpx2"),
    Sdk("openai", ("openai._exceptions",), "httpx2"),
)}

# The transport's classes (httpx, and httpx2, its fork under its own name), for every adapter.
TRANSPORT_EXPECTED: dict[str, tuple[type[LLMError], bool]] = {
    **{name: (ProviderTimeout, SENT) for name in (
        "TimeoutException", "ConnectTimeout", "ReadTimeout", "WriteTimeout", "PoolTimeout")},
    **{name: (ProviderUnavailable, SENT) for name in (
        "TransportError", "NetworkError", "ConnectError", "ReadError", "WriteError", "CloseError", "ProtocolError",
        "LocalProtocolError", "RemoteProtocolError", "ProxyError", "UnsupportedProtocol", "SSEError",
        "RequestError", "TooManyRedirects")},
    "DecodingError": (ProviderServerError, SENT),
    "HTTPStatusError": (ProviderServerError, SENT),  # built with a 503
    "InvalidURL": (NotSentError, NOT_SENT),  # raised while the request is built
    "CookieConflict": (NotSentError, NOT_SENT),
}
TRANSPORT_NEVER_RAISED = {
    "HTTPError": "the base class: httpx raises its subclasses",
    **{name: "misuse of a request or response object (read twice, or after it was closed), which the SDKs' "
       "own reading never does; were it raised it would be a bug, and surface as one"
       for name in ("StreamError", "StreamConsumed", "StreamClosed", "ResponseNotRead", "RequestNotRead")},
}

EXPECTED: dict[str, dict[str, tuple[type[LLMError], bool]]] = {
    "ollama": {
        "ResponseError": (ProviderServerError, SENT),  # built with a 503; every status: the table above
        "RequestError": (NotSentError, NOT_SENT),  # the SDK's checks of a request before it is sent
    },
    "gemini": {
        "APIError": (ProviderServerError, SENT),  # built with a 503
        "ClientError": (BadRequestError, SENT),  # a 400
        "ServerError": (ProviderServerError, SENT),  # a 500
        "UnknownApiResponseError": (ProviderServerError, SENT),
    },
    "anthropic": {
        "AnthropicError": (NotSentError, NOT_SENT),  # the client's own checks (a missing key, a batch call)
        "APIError": (ProviderServerError, SENT),
        "APIConnectionError": (ProviderUnavailable, SENT),
        "APITimeoutError": (ProviderTimeout, SENT),
        "APIResponseValidationError": (ProviderServerError, SENT),
        "APIStatusError": (BadRequestError, SENT),  # a status no subclass names: 418
        "BadRequestError": (BadRequestError, SENT),
        "AuthenticationError": (AuthError, SENT),
        "PermissionDeniedError": (AuthError, SENT),
        "NotFoundError": (ModelNotFoundError, SENT),
        "PaymentRequiredError": (BadRequestError, SENT),
        "PreconditionFailedError": (BadRequestError, SENT),
        "ContentTooLargeError": (BadRequestError, SENT),
        "RequestTooLargeError": (BadRequestError, SENT),
        "UnprocessableEntityError": (BadRequestError, SENT),
        "RequestHeaderFieldsTooLargeError": (BadRequestError, SENT),
        "ClientClosedRequestError": (BadRequestError, SENT),  # 499
        "RequestTimeoutError": (ProviderServerError, SENT),  # 408
        "ConflictError": (ProviderServerError, SENT),  # 409
        "RateLimitError": (RateLimitedError, SENT),
        "InternalServerError": (ProviderServerError, SENT),
        "HTTPNotImplementedError": (ProviderServerError, SENT),  # 501
        "ServiceUnavailableError": (ProviderServerError, SENT),
        "GatewayTimeoutError": (ProviderServerError, SENT),
        "DeadlineExceededError": (ProviderServerError, SENT),
        "OverloadedError": (ProviderServerError, SENT),  # 529
    },
    "openai": {
        "OpenAIError": (NotSentError, NOT_SENT),  # the client's own checks (a missing key)
        "APIError": (ProviderServerError, SENT),  # an error event inside a stream
        "APIConnectionError": (ProviderUnavailable, SENT),
        "APITimeoutError": (ProviderTimeout, SENT),
        "APIResponseValidationError": (ProviderServerError, SENT),
        "APIStatusError": (BadRequestError, SENT),  # 418
        "BadRequestError": (BadRequestError, SENT),
        "AuthenticationError": (AuthError, SENT),
        "OAuthError": (AuthError, SENT),
        "PermissionDeniedError": (AuthError, SENT),
        "NotFoundError": (ModelNotFoundError, SENT),
        "ConflictError": (ProviderServerError, SENT),
        "UnprocessableEntityError": (BadRequestError, SENT),
        "RateLimitError": (RateLimitedError, SENT),
        "InternalServerError": (ProviderServerError, SENT),
    },
}
NEVER_RAISED: dict[str, dict[str, str]] = {
    "ollama": {},
    "gemini": {
        "ContinuationInterruptedError": "the Interactions API's resumable streams; generate_content_stream is not one",
        "FunctionInvocationError": "automatic function calling: no tools are passed",
        "UnknownFunctionCallArgumentError": "automatic function calling: no tools are passed",
        "UnsupportedFunctionError": "automatic function calling: no tools are passed",
        "ExperimentalWarning": "a warning about experimental features, none of which is used",
    },
    "anthropic": {
        "APIWebhookValidationError": "webhooks: none are verified",
        "CredentialsError": "credential providers (workload identity): the adapter passes an API key",
        "IdentityTokenFileError": "credential providers (workload identity): the adapter passes an API key",
        "RetryableError": "raised by a caller's middleware to ask for a retry: there is none",
    },
    "openai": {
        "ContentFilterFinishReasonError": "raised by the `parse()` helpers; the adapter streams `create()`",
        "LengthFinishReasonError": "raised by the `parse()` helpers; the adapter streams `create()`",
        "InvalidWebhookSignatureError": "webhooks: none are verified",
        "WebSocketConnectionClosedError": "the Realtime API's websockets: not used",
        "WebSocketQueueFullError": "the Realtime API's websockets: not used",
        "SubjectTokenProviderError": "workload identity federation: the adapter passes an API key",
    },
}


def exception_classes(module_name: str) -> dict[str, type[BaseException]]:
    """Every exception class a module offers that its own package defines."""
    import importlib
    import inspect

    module = importlib.import_module(module_name)
    package = module_name.split(".")[0]
    return {name: cls for name, cls in vars(module).items()
            if inspect.isclass(cls) and issubclass(cls, BaseException) and cls.__module__.split(".")[0] == package}


def build_exception(module_name: str, name: str) -> BaseException:
    """The exception as its SDK raises it: a status error with a response, a transport error with its request."""
    cls = exception_classes(module_name)[name]
    transport = __import__("httpx" if module_name in ("ollama", "httpx") else "httpx2")
    request = transport.Request("POST", f"{ENDPOINT}/v1/chat")
    if module_name == "ollama":
        return cls("simulated", 503) if name == "ResponseError" else cls("simulated")
    if module_name == "google.genai.errors":
        if issubclass(cls, __import__("google.genai.errors").genai.errors.APIError):
            code = {"ClientError": 400, "ServerError": 500}.get(name, 503)
            return cls(code, {"error": {"code": code, "message": "simulated", "status": "SIMULATED"}})
        return cls("simulated")
    if module_name in ("anthropic._exceptions", "openai._exceptions"):
        sdk = __import__(module_name.split(".")[0])
        if issubclass(cls, sdk.APIStatusError):
            status = cls.__dict__.get("status_code", _STATUS_OF_CLASS.get(name))
            body = {"type": "error", "error": {"type": "simulated", "message": "simulated"}}
            response = transport.Response(status, request=request, json=body)
            if name == "OAuthError":
                return cls(response=response, body=body)
            return cls("simulated", response=response, body=body)
        if issubclass(cls, sdk.APITimeoutError):
            return cls(request=request)
        if issubclass(cls, sdk.APIConnectionError):
            return cls(request=request)
        if issubclass(cls, sdk.APIResponseValidationError):
            return cls(transport.Response(200, request=request, content=b"{}"), None)
        if issubclass(cls, sdk.APIError):
            return cls("simulated", request, body=None)
        return cls("simulated")
    # httpx / httpx2
    if name == "HTTPStatusError":
        return cls("simulated", request=request, response=transport.Response(503, request=request))
    if name in ("InvalidURL", "CookieConflict"):
        return cls("simulated")
    return cls("simulated", request=request)


async def translated_as(sdk: Sdk, exc: BaseException, sent: bool) -> BaseException:
    """What leaves the adapter's error translation (`translated` around its translate function)."""
    from mcp_llm.adapters._errors import mark_sent, translated

    try:
        with translated(sdk.translate(), where=f"{sdk.name} at {ENDPOINT}", provider=sdk.name, model="m"):
            if sent:
                await mark_sent(None)  # the request event hook: the request went out
            raise exc
    except BaseException as caught:
        return caught
    raise AssertionError("nothing was raised")


def mapping_cases() -> list[Any]:
    cases = []
    for sdk in SDKS.values():
        for name in EXPECTED[sdk.name]:
            cases.append(pytest.param(sdk.name, sdk.modules[0], name, id=f"{sdk.name}-{name}"))
        for name in TRANSPORT_EXPECTED:
            if name == "SSEError" and sdk.transport == "httpx":
                continue  # httpx2's alone
            cases.append(pytest.param(sdk.name, sdk.transport, name, id=f"{sdk.name}-{sdk.transport}.{name}"))
    return cases


@pytest.mark.parametrize("sdk_name", list(SDKS))
def test_every_exception_class_of_each_sdk_is_accounted_for(sdk_name: str) -> None:
    sdk = SDKS[sdk_name]
    walked = {name for module in sdk.modules for name in exception_classes(module)}
    known = set(EXPECTED[sdk.name]) | set(NEVER_RAISED[sdk.name])
    assert not walked - known, (f"{sdk.name}: new exception classes {sorted(walked - known)}: map each in the "
                                "adapter's translate_exception and list it in EXPECTED (or say in NEVER_RAISED why "
                                "no call can meet it)")
    assert not known - walked, f"{sdk.name}: gone from the SDK: {sorted(known - walked)}"
    assert not set(EXPECTED[sdk.name]) & set(NEVER_RAISED[sdk.name])
    for transport in ("httpx", "httpx2"):
        walked = set(exception_classes(transport))
        known = set(TRANSPORT_EXPECTED) | set(TRANSPORT_NEVER_RAISED)
        assert not walked - known, f"{transport}: new exception classes {sorted(walked - known)}: map them"
        assert not known - walked - {"SSEError"}, f"{transport}: gone: {sorted(known - walked)}"  # SSEError: httpx2's


@pytest.mark.parametrize(("sdk_name", "module_name", "name"), mapping_cases())
async def test_each_sdk_exception_becomes_one_of_ours(sdk_name: str, module_name: str, name: str) -> None:
    sdk = SDKS[sdk_name]
    expected = (TRANSPORT_EXPECTED if module_name in ("httpx", "httpx2") else EXPECTED[sdk.name])[name]
    our_class, sent = expected
    exc = build_exception(module_name, name)
    caught = await translated_as(sdk, exc, sent)
    assert isinstance(caught, LLMError), f"{module_name}.{name} left the adapter as itself: {caught!r}"
    assert type(caught) is our_class, f"{module_name}.{name} became {type(caught).__name__}: {caught}"
    assert caught.retryable is issubclass(our_class, TransientError)
    assert caught.__cause__ is exc
    assert isinstance(caught, ProviderError) and caught.provider == sdk.name
    if sent:  # mapped by the adapter itself, not only by `translated`'s fallback for what was never sent
        assert sdk.translate()(exc) is not None
