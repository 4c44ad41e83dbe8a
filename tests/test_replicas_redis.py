"""Replicas sharing state in a real Redis, across real processes: two `mcp-llm serve --transport http
--stateless` behind the real nginx of tests/test_nginx.py (README's snippet), a real `redis-server` with a
password, one fake Ollama they all call. What one replica learns, the other knows: a circuit it opened,
the calls in flight against the provider's `concurrency`, the usage since start. A replica killed
mid-call frees its slot when its lease expires; with Redis stopped the calls go on, and once it is back
nothing is counted twice.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.conftest import free_port
from tests.fakes.ollama_server import FakeOllama
from tests.redis_server import RedisServer
from tests.stdio_harness import subprocess_env
from tests.test_http import stop, wait_listening
from tests.test_nginx import NGINX, nginx_conf
from tests.test_state import InFlight

pytestmark = pytest.mark.anyio

TOKEN = "replicas-redis-canary-token-7781"
REDIS_PASSWORD = "redis-canary-password-5150"
SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def config_text(fake: FakeOllama, concurrency: int) -> str:
    return f"""
[defaults]
model = "ollama/llama3.2:3b"
max_retries = 0
max_repairs = 0
timeout_s = 60
circuit_failures = 2
circuit_cooldown_s = 300

[providers.ollama]
endpoint = "{fake.url}"
concurrency = {concurrency}

[server]
token_env = "MCP_LLM_TOKEN"

[state]
redis_url_env = "MCP_LLM_REDIS_URL"
timeout_s = 1
lease_ttl_s = 2
"""


class Fleet:
    """The replicas (each its own `mcp-llm serve` process), Redis, and nginx in front of two of them."""

    def __init__(self, fake: FakeOllama, tmp_path: Path, redis: RedisServer, concurrency: int = 2) -> None:
        self.tmp_path = tmp_path
        self.redis = redis
        self.config = tmp_path / "config.toml"
        self.config.write_text(config_text(fake, concurrency), encoding="utf-8")
        self.ports = [free_port(), free_port()]
        self.processes: list[subprocess.Popen[bytes] | None] = [self._start(port) for port in self.ports]
        for port, process in zip(self.ports, self.processes, strict=True):
            assert process is not None
            wait_listening(port, process, timeout_s=60)
        self.nginx: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.stderr: list[bytes] = []

    def _start(self, port: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "mcp_llm", "serve", "--config", str(self.config), "--transport", "http",
             "--stateless", "--port", str(port)],
            env=subprocess_env({"MCP_LLM_TOKEN": TOKEN, "MCP_LLM_REDIS_URL": self.redis.url}),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def start_nginx(self) -> str:
        if NGINX is None:
            pytest.skip("nginx is not installed (apt-get install nginx; .ci/run installs it)")
        port = free_port()
        directory = self.tmp_path / "nginx"
        conf = nginx_conf(directory, (self.ports[0], self.ports[1]), port)
        self.nginx = subprocess.Popen([NGINX, "-p", str(directory), "-e", str(directory / "error.log"), "-c",
                                       str(conf)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        wait_listening(port, self.nginx, timeout_s=20)
        self.url = f"http://127.0.0.1:{port}/mcp"
        return self.url

    def replica_url(self, index: int) -> str:
        return f"http://127.0.0.1:{self.ports[index]}/mcp"

    def kill(self, index: int) -> None:
        """SIGKILL: gone mid-call, with no chance to give anything back."""
        process = self.processes[index]
        assert process is not None
        process.send_signal(signal.SIGKILL)
        _, stderr = process.communicate(timeout=10)  # what it said before, and its pipes closed
        self.stderr.append(stderr)
        self.processes[index] = None

    def close(self) -> None:
        if self.nginx is not None:
            stop(self.nginx)
        for process in self.processes:
            if process is not None:
                self.stderr.append(stop(process))


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis", password=REDIS_PASSWORD).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def make_fleet(fake_ollama: FakeOllama, tmp_path: Path, redis: RedisServer) -> Iterator[Any]:
    made: list[Fleet] = []

    def make(concurrency: int = 2) -> Fleet:
        made.append(Fleet(fake_ollama, tmp_path, redis, concurrency))
        return made[-1]

    yield make
    for fleet in made:
        fleet.close()
        for stderr in fleet.stderr:
            assert REDIS_PASSWORD.encode() not in stderr and TOKEN.encode() not in stderr
            assert b"Traceback" not in stderr, stderr.decode()[-3000:]


@asynccontextmanager
async def session(url: str) -> AsyncIterator[Client]:
    async with (httpx2.AsyncClient(headers=AUTH, timeout=60) as http,
                Client(streamable_http_client(url, http_client=http)) as client):
        yield client


async def generate(url: str, calls: int = 1) -> list[dict[str, Any]]:
    out = []
    async with session(url) as client:
        for _ in range(calls):
            result = await client.call_tool("generate_structured", {"prompt": "n?", "schema": SCHEMA})
            assert not result.is_error, result.content
            out.append(result.structured_content or {})
    return out


async def failing(url: str) -> str:
    async with session(url) as client:
        result = await client.call_tool("generate_structured", {"prompt": "n?", "schema": SCHEMA})
    assert result.is_error
    return " ".join(getattr(block, "text", "") for block in result.content)


async def stats(url: str) -> dict[str, Any]:
    async with session(url) as client:
        result = await client.read_resource("mcp-llm://stats")
    return json.loads(result.contents[0].text)  # type: ignore[union-attr]


async def health(url: str) -> dict[str, Any]:
    async with session(url) as client:
        result = await client.call_tool("provider_health", {"provider": "ollama"})
    assert result.structured_content is not None
    return result.structured_content


async def test_a_circuit_opened_through_one_replica_holds_on_the_other(make_fleet: Any,
                                                                       fake_ollama: FakeOllama) -> None:
    fleet = make_fleet()
    with anyio.fail_after(120):
        await generate(fleet.replica_url(1))  # the second has seen the circuit closed
        for _ in range(2):  # circuit_failures = 2, both through the first replica
            fake_ollama.enqueue(status=500, error="CUDA error: out of memory")
            await failing(fleet.replica_url(0))
        sent = len(fake_ollama.chat_requests)
        error = await failing(fleet.replica_url(1))
        shown = await health(fleet.replica_url(1))
    assert "skipped" in error and "failed 2 times in a row" in error, error
    assert len(fake_ollama.chat_requests) == sent, "the second replica sent nothing to the provider"
    assert shown["providers"][0]["circuit"] == "open" and shown["state"] == "shared"


async def test_behind_nginx_concurrency_and_stats_hold_across_replicas(make_fleet: Any,
                                                                       fake_ollama: FakeOllama) -> None:
    holding = InFlight(hold_s=0.2)
    fake_ollama.picker = holding
    fleet = make_fleet(concurrency=2)
    url = fleet.start_nginx()
    with anyio.fail_after(180):
        async with anyio.create_task_group() as tg:
            for _ in range(8):  # 8 sessions at once, 3 calls each, spread by nginx over both replicas
                tg.start_soon(generate, url, 3)
        seen = [await stats(fleet.replica_url(i)) for i in (0, 1)]
        rows = [await health(fleet.replica_url(i)) for i in (0, 1)]
    print(f"\n24 calls through nginx, 2 replicas, concurrency 2: at most {holding.most} in flight at the provider")
    assert holding.seen == 24
    assert holding.most == 2, f"{holding.most} requests in flight at once; concurrency is 2 across the replicas"
    for one in seen:  # either replica's stats count both replicas' calls
        assert one["state"] == "shared" and one["calls"]["calls"] == 24 and one["calls"]["successes"] == 24
        assert one["models"]["ollama/llama3.2:3b"]["attempts"] == 24
    for row in rows:
        assert row["providers"][0]["stats"]["calls"] == 24


async def test_a_replica_killed_mid_call_frees_its_slot_when_its_lease_expires(make_fleet: Any,
                                                                              fake_ollama: FakeOllama) -> None:
    holding = InFlight(hold_s=60)  # the first request hangs until the test ends
    fake_ollama.picker = holding
    fleet = make_fleet(concurrency=1)
    try:
        with anyio.fail_after(120):
            async with anyio.create_task_group() as tg:
                tg.start_soon(failing_quietly, fleet.replica_url(0))
                assert await anyio.to_thread.run_sync(fake_ollama.wait_for, lambda: holding.seen >= 1, 60)
                holding.hold_s = 0  # from now on, answered at once
                second: list[dict[str, Any]] = []

                async def call_second() -> None:
                    second.extend(await generate(fleet.replica_url(1)))

                tg.start_soon(call_second)
                waited = await anyio.to_thread.run_sync(fake_ollama.wait_for, lambda: holding.seen >= 2, 1.5)
                assert not waited, "concurrency = 1 across the replicas, yet the second replica sent a request"
                fleet.kill(0)  # mid-call: its lease is never given back
                assert await anyio.to_thread.run_sync(fake_ollama.wait_for, lambda: holding.seen >= 2, 30)
        assert len(second) == 1 and second[0]["data"] == {"n": 1}
    finally:
        holding.released.set()


async def failing_quietly(url: str) -> None:
    """A call whose replica is killed under it: its connection just ends."""
    try:
        async with session(url) as client:
            await client.call_tool("generate_structured", {"prompt": "n?", "schema": SCHEMA})
    except Exception:
        return


async def test_with_redis_stopped_calls_go_on_and_nothing_is_counted_twice(make_fleet: Any,
                                                                          redis: RedisServer) -> None:
    fleet = make_fleet()
    url = fleet.start_nginx()
    with anyio.fail_after(180):
        await generate(url, 4)
        redis.pause()  # there, but answering nothing: each replica waits once, at most timeout_s
        try:
            answered = await generate(url, 6)
            away = [await health(fleet.replica_url(i)) for i in (0, 1)]
        finally:
            redis.resume()
        assert len(answered) == 6
        assert all(row["state"] == "local (redis unreachable)" for row in away), [r["state"] for r in away]
        with anyio.fail_after(20):
            while [(await health(fleet.replica_url(i)))["state"] for i in (0, 1)] != ["shared", "shared"]:
                await anyio.sleep(0.2)
        await generate(url, 2)
        seen = [await stats(fleet.replica_url(i)) for i in (0, 1)]
        redis.kill()  # stopped for good: calls still go on
        after = await generate(url, 3)
        gone = await health(fleet.replica_url(0))
    assert all(one["state"] == "shared" and one["calls"]["calls"] == 12 for one in seen), [s["calls"] for s in seen]
    assert len(after) == 3 and gone["state"] == "local (redis unreachable)"
