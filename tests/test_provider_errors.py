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
    ModelNotFoundError,
    ProviderError,
    ProviderServerError,
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
