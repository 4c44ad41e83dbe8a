"""A host's clients (mcp_llm/adapters/shards.py): one while calls fit its pool, another only when every
client is full, each call on the least busy; and calls over several clients through the Ollama adapter."""

from __future__ import annotations

import itertools

import anyio
import pytest

from mcp_llm.adapters.base import Message, Request
from mcp_llm.adapters.ollama import OllamaAdapter, OllamaSettings
from mcp_llm.adapters.shards import Shards
from tests.fakes.ollama_server import FakeOllama

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
