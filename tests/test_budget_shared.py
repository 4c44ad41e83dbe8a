"""The daily budget across replicas: one total in Redis (`[state]`), checked by every replica before each
attempt, against a real redis-server (tests/redis_server.py). Without `[state]`, each process has its own."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from mcp_llm.config import load_settings
from mcp_llm.server import build_server
from tests.fakes.openai_server import FakeOpenAI
from tests.redis_server import RedisServer, redis

__all__ = ["redis"]  # the fixture, used by name

pytestmark = pytest.mark.anyio

SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
MODEL = "vps/small"
# $10 per million answer tokens, nothing for the prompt: an attempt of max_tokens 1,000 risks $0.01 at most,
# and one that answers 900 tokens costs $0.009.
WORST, COST = 0.01, 0.009


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=None, models=["small"]) as server:
        yield server


@asynccontextmanager
async def replicas(fake: FakeOpenAI, tmp_path: Path, redis_url: str | None,
                   daily_usd: float) -> AsyncIterator[tuple[Client, Client, list[Any]]]:
    """Two servers (each its own App: router, budget, ledger) on one Redis, or each on its own (None)."""
    state = '[state]\nredis_url_env = "MCP_LLM_REDIS_URL"\ntimeout_s = 0.5\n' if redis_url else ""
    path = tmp_path / "config.toml"
    path.write_text(f'[defaults]\nmodel = "{MODEL}"\nmax_retries = 0\nmax_repairs = 0\ntimeout_s = 30\n'
                    f"[budget]\ndaily_usd = {daily_usd}\n[cache]\nenabled = false\n{state}"
                    f'[providers.openai_compatible.vps]\nendpoint = "{fake.base_url}"\nmodels = ["small"]\n'
                    "cost_per_mtok = {input = 0, output = 10}\n", encoding="utf-8")
    env = {"MCP_LLM_REDIS_URL": redis_url} if redis_url else {}
    servers = [build_server(load_settings(path, env=env)) for _ in range(2)]
    async with Client(servers[0]) as first, Client(servers[1]) as second:
        yield first, second, [server.app for server in servers]  # type: ignore[attr-defined]


async def ask(client: Client) -> tuple[bool, str]:
    with anyio.fail_after(30):
        result = await client.call_tool("generate_structured", {"prompt": "n?", "schema": SCHEMA, "max_tokens": 1000})
    return not result.is_error, " ".join(getattr(block, "text", "") for block in result.content)


async def spent_today(client: Client) -> float:
    result = await client.read_resource("mcp-llm://stats")
    return float(json.loads(result.contents[0].text)["budget"]["spent_today_usd"])  # type: ignore[union-attr]


async def test_the_day_is_one_budget_for_every_replica(fake: FakeOpenAI, tmp_path: Path, redis: RedisServer) -> None:
    """$0.025 a day: the first replica spends $0.009, the second $0.009; then neither may risk another $0.01,
    although each spent only $0.009 of its own."""
    for _ in range(4):
        fake.enqueue({"n": 1}, prompt_tokens=50, completion_tokens=900)
    async with replicas(fake, tmp_path, redis.url, daily_usd=0.025) as (first, second, _):
        assert (await ask(first))[0] and (await ask(second))[0]
        refused_here, text = await ask(first)
        refused_there, _ = await ask(second)
        seen = await spent_today(second)
    assert not refused_here and not refused_there
    assert "budget_exceeded" in text and "of today's budget" in text and "$0.007 is left" in text, text
    assert len(fake.chat_requests) == 2
    assert seen == pytest.approx(2 * COST)


async def test_without_shared_state_each_process_has_its_own_day(fake: FakeOpenAI, tmp_path: Path) -> None:
    for _ in range(4):
        fake.enqueue({"n": 1}, prompt_tokens=50, completion_tokens=900)
    async with replicas(fake, tmp_path, None, daily_usd=0.015) as (first, second, _):
        outcomes = [(await ask(client))[0] for client in (first, second, first, second)]
    assert outcomes == [True, True, False, False]  # one attempt a process fits in $0.015 (a second would risk 0.01)


async def test_redis_away_the_replica_goes_on_from_the_last_total_and_hands_over_its_spending(
    fake: FakeOpenAI, tmp_path: Path, redis: RedisServer
) -> None:
    """Redis stops answering: a replica checks against the fleet's total as it last saw it plus its own
    spending since, and when Redis is back that spending is added to the fleet's day, once."""
    for _ in range(4):
        fake.enqueue({"n": 1}, prompt_tokens=50, completion_tokens=900)
    async with replicas(fake, tmp_path, redis.url, daily_usd=0.035) as (first, second, apps):
        assert (await ask(first))[0]  # the fleet: $0.009
        redis.pause()
        try:
            assert (await ask(first))[0]  # $0.009 + $0.01 at worst fits: answered locally, $0.018
            answered, text = await ask(first)  # $0.018 + $0.01 still fits $0.035: taken ...
            assert answered, text
            assert not (await ask(first))[0]  # ... and now $0.027 + $0.01 does not
        finally:
            redis.resume()
        with anyio.fail_after(30):
            while apps[0].state.status() != "shared":
                await anyio.sleep(0.05)
        assert await spent_today(second) == pytest.approx(3 * COST)  # handed over: the fleet's total, once
        assert not (await ask(second))[0]  # the other replica knows the day is spent
    assert len(fake.chat_requests) == 3
