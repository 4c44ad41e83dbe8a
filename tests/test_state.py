"""Shared state (state.py, state_redis.py) against a real redis-server: two servers in this process, each
with its own App and its own Redis client, as two replicas would be, behind real MCP clients and in front
of one fake Ollama. tests/test_replicas_redis.py does the same across real processes and nginx.

Without `[state]` nothing changes (the first tests); with it, circuits, limits, stats and the cache are
the fleet's; with Redis paused (SIGSTOP: it takes connections and answers nothing) calls go on within the
bound and nothing is lost or counted twice once it resumes.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from mcp_llm.app import App
from mcp_llm.config import describe, load_settings
from mcp_llm.errors import ConfigError
from mcp_llm.server import build_server
from mcp_llm.state import LocalState
from mcp_llm.state_redis import RedisState
from tests.fakes.ollama_server import FakeOllama
from tests.redis_server import RedisServer, redis

__all__ = ["redis"]  # the fixture, used by name

pytestmark = pytest.mark.anyio

SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
PASSWORD = "redis-canary-password-9731"


def config_text(fake: FakeOllama, *, concurrency: int = 4, state: bool = True, extra: str = "",
                timeout_s: float = 2.0) -> str:
    # timeout_s: the bound on each wait for Redis; generous here (a busy test machine), short where a test
    # makes Redis hang
    return f"""
[defaults]
model = "ollama/llama3.2:3b"
max_retries = 0
max_repairs = 0
timeout_s = 30
circuit_failures = 2
circuit_cooldown_s = 60

[providers.ollama]
endpoint = "{fake.url}"
concurrency = {concurrency}
""" + (f"""
[state]
redis_url_env = "MCP_LLM_REDIS_URL"
lease_ttl_s = 2
timeout_s = {timeout_s}
""" if state else "") + extra


class InFlight:
    """A picker for the fake: holds each request `hold_s` (or until `released` is set) and counts how many
    it held at once."""

    def __init__(self, hold_s: float) -> None:
        self.hold_s = hold_s
        self.now = self.most = self.seen = 0
        self._lock = threading.Lock()
        self.released = threading.Event()

    def __call__(self, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.now += 1
            self.seen += 1
            self.most = max(self.most, self.now)
        if self.hold_s:
            self.released.wait(self.hold_s)
        with self._lock:
            self.now -= 1
        return {"content": {"n": 1}}


@pytest.fixture(autouse=True)
def fresh_probes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("mcp_llm.app.HEALTH_CACHE_S", 0.0)  # a cached probe would hide the circuit's changes


@asynccontextmanager
async def replicas(fake: FakeOllama, tmp_path: Path, redis_url: str, count: int = 2,
                   **config: Any) -> AsyncIterator[list[Client]]:
    """`count` servers on one Redis, each with its own App (and so its own circuits, limiters and client)."""
    path = tmp_path / "config.toml"
    path.write_text(config_text(fake, **config), encoding="utf-8")
    servers = [build_server(load_settings(path, env={"MCP_LLM_REDIS_URL": redis_url})) for _ in range(count)]
    async with Client(servers[0]) as first, Client(servers[1]) as second:
        APPS[id(first)], APPS[id(second)] = servers[0].app, servers[1].app
        yield [first, second]


async def generate(client: Client, **arguments: Any) -> dict[str, Any]:
    with anyio.fail_after(60):
        result = await client.call_tool("generate_structured", {"prompt": "n?", "schema": SCHEMA, **arguments})
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


async def failing(client: Client) -> str:
    with anyio.fail_after(60):
        result = await client.call_tool("generate_structured", {"prompt": "n?", "schema": SCHEMA})
    assert result.is_error
    return " ".join(getattr(block, "text", "") for block in result.content)


async def stats_of(client: Client) -> dict[str, Any]:
    result = await client.read_resource("mcp-llm://stats")
    return json.loads(result.contents[0].text)  # type: ignore[union-attr]


async def health_of(client: Client) -> dict[str, Any]:
    result = await client.call_tool("provider_health", {"provider": "ollama"})
    assert result.structured_content is not None
    return result.structured_content


APPS: dict[int, App] = {}


def app_of(client: Client) -> App:
    """The App behind a client of `replicas`."""
    return APPS[id(client)]


# --- without [state]: nothing changes --------------------------------------------------------------


async def test_without_state_everything_is_local(fake_ollama: FakeOllama, tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(config_text(fake_ollama, state=False), encoding="utf-8")
    app = App(load_settings(path, env={}))
    assert isinstance(app.state, LocalState) and app.state.status() == "local"
    assert isinstance(app.router.limiter("ollama"), anyio.CapacityLimiter)  # as before: no wrapper at all
    async with Client(build_server(load_settings(path, env={}))) as client:
        await generate(client)
        health, stats = await health_of(client), await stats_of(client)
    assert health["state"] == "local" and health["providers"][0]["state"] == "local"
    assert stats["state"] == "local" and stats["calls"]["calls"] == 1
    await app.aclose()


async def test_a_state_variable_that_is_not_set_says_so(fake_ollama: FakeOllama, tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "config.toml"
    path.write_text(config_text(fake_ollama), encoding="utf-8")
    with caplog.at_level(logging.WARNING, "mcp_llm"):
        app = App(load_settings(path, env={}))
    assert app.state.status() == "local (MCP_LLM_REDIS_URL is not set)"
    assert "MCP_LLM_REDIS_URL" in caplog.text
    await app.aclose()


def test_the_redis_url_is_a_secret(fake_ollama: FakeOllama, tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(config_text(fake_ollama), encoding="utf-8")
    url = f"redis://:{PASSWORD}@127.0.0.1:6390/0"
    settings = load_settings(path, env={"MCP_LLM_REDIS_URL": url})
    shown = describe(settings)["state"]
    assert shown["redis_url"] == "<set>" and shown["redis_url_env"] == "MCP_LLM_REDIS_URL"
    assert PASSWORD not in json.dumps(describe(settings)) and PASSWORD not in repr(settings)
    assert settings.source_of("state.redis_url") == "env:MCP_LLM_REDIS_URL"
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env={"MCP_LLM_REDIS_URL": f"http://{PASSWORD}@example"})
    assert "MCP_LLM_REDIS_URL" in caught.value.message and PASSWORD not in caught.value.user_message()


async def test_an_unreachable_redis_never_shows_its_password(fake_ollama: FakeOllama, tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    from tests.conftest import free_port

    path = tmp_path / "config.toml"
    path.write_text(config_text(fake_ollama), encoding="utf-8")
    url = f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0"  # nothing listens there
    with caplog.at_level(logging.INFO, "mcp_llm"):
        async with Client(build_server(load_settings(path, env={"MCP_LLM_REDIS_URL": url}))) as client:
            assert isinstance((await generate(client))["data"]["n"], int)  # nothing listens there: it goes on
            health = await health_of(client)
    assert health["state"] == "local (redis unreachable)"
    assert "unreachable" in caplog.text and PASSWORD not in caplog.text


# --- with Redis: the fleet's -------------------------------------------------------------------------


async def test_a_circuit_opened_through_one_replica_holds_on_the_other(fake_ollama: FakeOllama, tmp_path: Path,
                                                                       redis: RedisServer) -> None:
    async with replicas(fake_ollama, tmp_path, redis.url) as (first, second):
        await generate(second)  # B has seen the circuit closed: its copy says so
        for _ in range(2):  # circuit_failures = 2, both through A
            fake_ollama.enqueue(status=500, error="boom")
            await failing(first)
        sent = len(fake_ollama.chat_requests)
        error = await failing(second)
        assert "skipped" in error, error
        assert len(fake_ollama.chat_requests) == sent, "B sent nothing to the provider whose circuit A opened"
        health = await health_of(second)
        assert health["providers"][0]["circuit"] == "open" and health["state"] == "shared"


async def test_a_providers_concurrency_holds_across_replicas(fake_ollama: FakeOllama, tmp_path: Path,
                                                             redis: RedisServer) -> None:
    counter = InFlight(hold_s=0.25)
    fake_ollama.picker = counter
    async with replicas(fake_ollama, tmp_path, redis.url, concurrency=2) as clients:
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for i in range(12):
                    tg.start_soon(generate, clients[i % 2])
    assert counter.seen == 12
    assert counter.most == 2, f"{counter.most} requests in flight at once; concurrency is 2 across both replicas"


async def test_stats_read_from_either_replica_count_both(fake_ollama: FakeOllama, tmp_path: Path,
                                                         redis: RedisServer) -> None:
    async with replicas(fake_ollama, tmp_path, redis.url) as (first, second):
        for _ in range(3):
            await generate(first)
        for _ in range(2):
            await generate(second)
        fake_ollama.enqueue(status=500, error="boom")
        await failing(second)
        seen = [await stats_of(first), await stats_of(second)]
        health = await health_of(first)
    for stats in seen:
        assert stats["state"] == "shared"
        assert stats["calls"]["calls"] == 6 and stats["calls"]["successes"] == 5
        assert stats["calls"]["failures"] == {"server_error": 1}
        model = stats["models"]["ollama/llama3.2:3b"]
        assert model["provider"] == "ollama" and model["calls"] == 6 and model["attempts"] == 6
        assert 0 < model["latency_ms"]["p50"] <= model["latency_ms"]["p95"]
    assert seen[0]["providers"] == seen[1]["providers"]
    assert health["providers"][0]["stats"]["calls"] == 6


async def test_two_round_trips_on_the_call_path(fake_ollama: FakeOllama, tmp_path: Path,
                                                redis: RedisServer) -> None:
    """A call that succeeds at once: one script on entering the limiter, one on leaving it; the stats go
    in the background (one script, however many calls ended meanwhile)."""
    async with replicas(fake_ollama, tmp_path, redis.url) as (first, _):
        await generate(first)  # the first call also connects and loads the scripts
        await anyio.sleep(0.1)
        state = app_of(first).state
        assert isinstance(state, RedisState)
        before = dict(state.sent)
        for _ in range(5):
            await generate(first)
        await anyio.sleep(0.1)
        sent = {name: count - before.get(name, 0) for name, count in state.sent.items()}
    assert sent.get("sync") == 10, sent
    assert sent.get("stats", 0) <= 5 and set(sent) <= {"sync", "stats"}, sent


async def test_with_redis_paused_calls_go_on_and_nothing_is_lost_or_doubled(fake_ollama: FakeOllama,
                                                                            tmp_path: Path,
                                                                            redis: RedisServer) -> None:
    async with replicas(fake_ollama, tmp_path, redis.url, timeout_s=0.3) as (first, second):
        for client in (first, second):
            await generate(client)
        states = [app_of(client).state for client in (first, second)]
        redis.pause()  # connections are taken, nothing is answered: each command would hang
        try:
            sent = []
            for client in (first, second, first, second, first):
                await generate(client)
                sent.append([dict(state.sent) for state in states])  # type: ignore[attr-defined]
            health = await health_of(first)
            stats_away = await stats_of(second)
        finally:
            redis.resume()
        # each replica waited on Redis once (its first call's lease, bounded by timeout_s) and then asked
        # it nothing more: the calls after went on with local state at once
        assert sent[2] == sent[4] and sent[3][1] == sent[4][1], sent
        assert health["state"] == "local (redis unreachable)"
        assert stats_away["state"] == "local (redis unreachable)"
        assert stats_away["calls"]["calls"] == 3  # what this replica counted itself, meanwhile
        with anyio.fail_after(10):
            while (await health_of(first))["state"] != "shared" or (await health_of(second))["state"] != "shared":
                await anyio.sleep(0.1)
        await generate(second)
        stats = await stats_of(first)
    assert stats["state"] == "shared"
    assert stats["calls"]["calls"] == 8 and stats["calls"]["successes"] == 8, stats["calls"]
    assert stats["models"]["ollama/llama3.2:3b"]["calls"] == 8


async def test_with_redis_killed_and_back_empty_calls_go_on_and_counting_resumes(fake_ollama: FakeOllama,
                                                                                tmp_path: Path,
                                                                                redis: RedisServer) -> None:
    async with replicas(fake_ollama, tmp_path, redis.url, timeout_s=0.3) as (first, second):
        await generate(first)
        assert (await stats_of(first))["calls"]["calls"] == 1  # handed over (and then lost with Redis's data)
        redis.kill()  # gone, connections refused; its data with it
        for client in (first, second, first):
            await generate(client)
        assert (await health_of(second))["state"] == "local (redis unreachable)"
        redis.start()  # back on the same port, empty
        with anyio.fail_after(10):
            while (await health_of(first))["state"] != "shared" or (await health_of(second))["state"] != "shared":
                await anyio.sleep(0.1)
        await generate(second)
        stats = await stats_of(first)
    # the fleet's count starts again from what was handed over after the restart: the calls made while it
    # was away (3) and the one after (1); the first one was lost with Redis's data, and none counted twice
    assert stats["calls"]["calls"] == 4, stats["calls"]


def test_mcp_llm_health_says_where_the_state_is(fake_ollama: FakeOllama, tmp_path: Path,
                                               redis: RedisServer) -> None:
    import subprocess
    import sys

    from tests.stdio_harness import subprocess_env

    path = tmp_path / "config.toml"
    path.write_text(config_text(fake_ollama), encoding="utf-8")
    for env, said in (({"MCP_LLM_REDIS_URL": redis.url}, "state: shared"),
                      ({}, "state: local (MCP_LLM_REDIS_URL is not set)")):
        done = subprocess.run([sys.executable, "-m", "mcp_llm", "--config", str(path), "health"], capture_output=True,
                              text=True, timeout=60, env=subprocess_env(env), check=False)
        assert done.returncode == 0, done.stderr
        assert said in done.stdout.splitlines(), done.stdout


async def test_the_status_pages_history_is_the_fleets(fake_ollama: FakeOllama, tmp_path: Path,
                                                     redis: RedisServer) -> None:
    async with replicas(fake_ollama, tmp_path, redis.url) as (first, second):
        for client in (first, first, second):
            await generate(client)
        seen = [await app_of(client).state.history_buckets() for client in (first, second)]
        own = app_of(second).router.history.buckets()
    for buckets in seen:
        assert sum(row.calls for bucket in buckets for row in bucket.models.values()) == 3
    assert sum(row.calls for bucket in own for row in bucket.models.values()) == 1


async def test_a_cached_answer_from_one_replica_is_the_others(fake_ollama: FakeOllama, tmp_path: Path,
                                                              redis: RedisServer) -> None:
    async with replicas(fake_ollama, tmp_path, redis.url) as (first, second):
        fresh = await generate(first, temperature=0)
        sent = len(fake_ollama.chat_requests)
        hit = await generate(second, temperature=0)  # same arguments, through the other replica
    assert fresh["cached"] is False and hit["cached"] is True and hit["data"] == fresh["data"]
    assert len(fake_ollama.chat_requests) == sent  # nothing sent: the answer came from the fleet's cache


async def test_the_cache_store_keeps_entries_for_their_ttl_and_no_more_than_asked(tmp_path: Path,
                                                                                  redis: RedisServer) -> None:
    from mcp_llm.config import StateSettings

    one, two = (RedisState(_secret(redis.url), StateSettings(redis_url_env="X", timeout_s=2)) for _ in range(2))
    for state in (one, two):
        state.attach(*_parts())
    local_one, local_two = MemoryStore(), MemoryStore()
    a, b = (state.cache_store(local, max_entries=2, max_value_bytes=100)
            for state, local in ((one, local_one), (two, local_two)))
    await a.set("k1", b"\x00answer", ttl_s=0.3)
    assert await b.get("k1") == b"\x00answer"  # shared
    await a.set("k2", b"2", ttl_s=30)
    await a.set("k3", b"3", ttl_s=30)
    assert await b.get("k1") is None  # the oldest went: two entries at most
    assert await b.get("k3") == b"3"
    await b.delete("k3")
    assert await a.get("k3") is None
    await a.set("big", b"x" * 101, ttl_s=30)  # over max_value_bytes: not kept
    assert await b.get("big") is None
    await a.set("k4", b"4", ttl_s=0.2)
    await anyio.sleep(0.3)
    assert await b.get("k4") is None  # expired
    assert not local_one.entries and not local_two.entries  # nothing kept apart while Redis answers
    redis.kill()
    await a.set("k5", b"5", ttl_s=30)  # Redis away: kept here, and found here
    assert await a.get("k5") == b"5" and local_one.entries == {"k5": b"5"}
    assert LocalState().cache_store(local_one, 2, 100) is local_one
    for state in (one, two):
        await state.aclose()


class MemoryStore:
    """The simplest store (the response cache brings its own): a dict, no expiry."""

    def __init__(self) -> None:
        self.entries: dict[str, bytes] = {}

    async def get(self, key: str) -> bytes | None:
        return self.entries.get(key)

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        self.entries[key] = value

    async def delete(self, key: str) -> None:
        self.entries.pop(key, None)

    def usage(self) -> dict[str, int]:
        return {"entries": len(self.entries)}


def _secret(url: str) -> Any:
    from pydantic import SecretStr

    return SecretStr(url)


def _parts() -> tuple[Any, Any]:
    from mcp_llm.circuit import CircuitBreakers
    from mcp_llm.stats import Stats

    return CircuitBreakers(2, 60), Stats()


async def test_a_host_ejected_through_one_replica_is_out_on_the_other(tmp_path: Path, redis: RedisServer) -> None:
    from tests.fakes.ollama_server import FakeModel

    with FakeOllama([FakeModel("llama3.2:3b")]) as a, FakeOllama([FakeModel("llama3.2:3b")]) as b:
        for fake in (a, b):
            fake.load("llama3.2:3b", -1)
        path = tmp_path / "config.toml"
        path.write_text(f"""
[defaults]
model = "ollama/llama3.2:3b"
max_retries = 0
max_repairs = 0
circuit_failures = 2
circuit_cooldown_s = 60

[providers.ollama]
hosts = ["{a.url}", "{b.url}"]
hosts_refresh_s = 3600

[state]
redis_url_env = "MCP_LLM_REDIS_URL"
timeout_s = 2
""", encoding="utf-8")
        servers = [build_server(load_settings(path, env={"MCP_LLM_REDIS_URL": redis.url})) for _ in range(2)]
        async with Client(servers[0]) as first, Client(servers[1]) as second:
            await generate(second)  # the second has its fleet, both hosts in
            for _ in range(2):  # circuit_failures = 2 on host a, through the first replica
                a.enqueue(status=500, error="CUDA error: out of memory")
            for _ in range(4):
                await generate(first)  # each failure on a goes on to b at once
            sent_to_a = len(a.chat_requests)
            answered = [(await generate(second))["attempts"][0]["host"] for _ in range(4)]
            rows = {h["host"]: h for h in (await health_of(second))["providers"][0]["hosts"]}
        urls = a.url, b.url
        assert len(a.chat_requests) == sent_to_a  # the second replica sends nothing to a
    a_url, b_url = urls
    assert answered == [b_url] * 4
    assert rows[a_url]["circuit"] == "open" and rows[b_url]["circuit"] == "closed"
