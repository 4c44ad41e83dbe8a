"""A host's clients (mcp_llm/adapters/shards.py): one while calls fit its pool, another only when every
client is full, each call on the least busy; and calls over several clients through the Ollama adapter."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import anyio
import pytest

from mcp_llm.adapters.anthropic import AnthropicAdapter
from mcp_llm.adapters.base import LLMAdapter, Message, Request
from mcp_llm.adapters.gemini import GeminiAdapter
from mcp_llm.adapters.ollama import OllamaAdapter, OllamaSettings
from mcp_llm.adapters.openai import OpenAIAdapter
from mcp_llm.adapters.shards import Shards, shared_tls
from mcp_llm.config import Settings
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.gemini_server import FakeGemini
from tests.fakes.ollama_server import FakeOllama
from tests.fakes.openai_server import FakeOpenAI

pytestmark = pytest.mark.anyio


def test_one_client_until_every_client_is_full_then_the_least_busy() -> None:
    made = itertools.count()
    shards: Shards[int] = Shards(lambda: next(made), per_client=2)
    with shards.lease() as a, shards.lease() as b:
        assert a == b == 0  # two calls fit the first client
        with shards.lease() as c:
            assert c == 1  # the first is full: a second client
            with shards.lease() as d:
                assert d == 1
        with shards.lease() as e:
            assert e == 1  # the least busy: 1 has none in flight now, 0 has two
    with shards.lease() as f:
        assert f == 0
    assert shards.all() == [0, 1] and shards.first() == 0


async def test_calls_spread_over_clients_all_answer_and_every_client_is_closed() -> None:
    with FakeOllama() as fake:
        adapter = OllamaAdapter(OllamaSettings(endpoint=fake.url, concurrency=200))
        request = Request(model="llama3.2:3b", messages=[Message(role="user", content="hi")], stream=False)
        answers: list[str] = []

        async def one() -> None:
            answers.append((await adapter.complete(request)).text)

        for _ in range(150):
            fake.enqueue({"ok": True}, delay_s=0.5)  # all in flight at once: more than one client's worth
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for _ in range(150):
                    tg.start_soon(one)
        clients = adapter._clients[fake.url].all()
        await adapter.aclose()
    assert len(answers) == 150 and set(answers) == {'{"ok": true}'}
    assert len(clients) >= 3  # 150 calls over clients of PER_CLIENT (8) calls each
    assert all(client._client.is_closed for client in clients)
    # one CA store for them all, not one loaded per client (20-40 ms and 0.75 MB each)
    assert {id(tls_of(client._client)) for client in clients} == {id(shared_tls("httpx"))}


# --- the same through OpenAI's, Anthropic's and Gemini's SDKs ----------------------------------------


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
async def test_every_sdk_adapter_spreads_calls_over_clients_and_closes_them(
    provider: str, make_settings: Callable[..., Settings]
) -> None:
    """150 calls at once through the real SDK: each answered, over several clients of at most PER_CLIENT."""
    fakes = {"openai": lambda: FakeOpenAI(api_key="k"), "anthropic": lambda: FakeAnthropic(api_key="k"),
             "gemini": lambda: FakeGemini(api_key="k")}
    with fakes[provider]() as fake:
        url = fake.base_url if provider == "openai" else fake.url
        settings = make_settings(f'[providers.{provider}]\nendpoint = "{url}"\nconcurrency = 200\n',
                                 env={"OPENAI_API_KEY": "k", "ANTHROPIC_API_KEY": "k", "GEMINI_API_KEY": "k"})
        adapter = build_adapter(provider, settings)
        model = {"openai": "gpt-4.1-mini", "anthropic": "claude-haiku-4-5", "gemini": "gemini-2.5-flash"}[provider]
        request = Request(model=model, messages=[Message(role="user", content="hi")], stream=False)
        answers: list[str] = []

        async def one() -> None:
            answers.append((await adapter.complete(request)).text)

        for _ in range(150):
            fake.enqueue('{"ok": true}', delay_s=0.5)  # all in flight at once: more than one client's worth
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for _ in range(150):
                    tg.start_soon(one)
        clients = [client for shards in adapter_shards(adapter) for client in shards.all()]
        await adapter.aclose()
        assert not fake.errors, fake.errors
    assert len(answers) == 150 and set(answers) == {'{"ok": true}'}
    assert len(clients) >= 3  # 150 calls over clients of PER_CLIENT (8) calls each
    assert all(http_client(client).is_closed for client in clients)
    assert {id(tls_of(http_client(client))) for client in clients} == {id(shared_tls("httpx2"))}
    if provider == "gemini":  # google-genai's sync client, which it builds beside the async one, shares it too
        assert {id(tls_of(client._api_client._httpx_client)) for client in clients} == {id(shared_tls("httpx2"))}


def build_adapter(provider: str, settings: Settings) -> LLMAdapter:
    if provider == "openai":
        return OpenAIAdapter(settings.providers.openai)
    if provider == "anthropic":
        return AnthropicAdapter(settings.providers.anthropic)
    return GeminiAdapter(settings.providers.gemini)


def adapter_shards(adapter: Any) -> list[Shards[Any]]:
    """The adapter's clients, per host (OpenAI), per backend (Gemini) or its one set (Anthropic)."""
    return [adapter._clients] if isinstance(adapter, AnthropicAdapter) else list(adapter._clients.values())


def http_client(client: Any) -> Any:
    """The httpx2 client an SDK client sends through (google-genai keeps its own under `_api_client`)."""
    return client.aio._api_client._async_httpx_client if hasattr(client, "aio") else client._client


def tls_of(client: Any) -> Any:
    """The TLS context an httpx (or httpx2) client's connection pool wraps its connections in."""
    return client._transport._pool._ssl_context
