"""Usage stats: the numbers `mcp-llm://stats` and `provider_health` show equal the calls a test made.

The calls go through a real MCP client to the server, and from there to the fake Ollama, which is
steered per request: answers, invalid answers (re-asks), 500s (retries), a 404 (fallback).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, MCPError

from mcp_llm.config import load_settings
from mcp_llm.server import build_server
from mcp_llm.stats import MAX_KEYS, OTHER, RESERVOIR_SIZE, Reservoir, Stats
from mcp_llm.trace import Attempt
from tests.fakes.ollama_server import FakeOllama
from tests.fleet import BY_NAME, OLLAMA, Fakes, Serve, generate_error, non_transient

pytestmark = pytest.mark.anyio

SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
TEXT, VISION = "ollama/llama3.2:3b", "ollama/llava:7b"
TOKENS = {"prompt_tokens": 10, "completion_tokens": 5}


def config(fake: FakeOllama, tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(f"""
[defaults]
model = "{TEXT}"
fallback = ["{VISION}"]
max_retries = 1
max_repairs = 1
timeout_s = 30

[providers.ollama]
endpoint = "{fake.url}"
""", encoding="utf-8")
    return path


async def stats_of(client: Client) -> dict[str, Any]:
    result = await client.read_resource("mcp-llm://stats")
    return json.loads(result.contents[0].text)  # type: ignore[union-attr]


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_stats_count_the_calls_made(fake_ollama: FakeOllama, tmp_path: Path, mode: str) -> None:
    fake = fake_ollama
    server = build_server(load_settings(config(fake, tmp_path), env={}))
    async with Client(server, mode=mode) as client:
        empty = await stats_of(client)
        assert empty["calls"] == {"calls": 0, "successes": 0, "failures": {}, "cost_usd": 0.0,
                                  "latency_ms": {"p50": None, "p95": None}}
        assert empty["models"] == {} and empty["providers"] == {}

        async def call(model: str | None = None) -> bool:
            arguments: dict[str, Any] = {"prompt": "n?", "schema": SCHEMA} | ({"model": model} if model else {})
            with anyio.fail_after(60):
                return not (await client.call_tool("generate_structured", arguments)).is_error

        fake.enqueue({"n": 1}, **TOKENS)                       # A: answered at once
        assert await call()
        fake.enqueue(status=500, error="boom")                  # B: a 500, retried, answered
        fake.enqueue({"n": 2}, **TOKENS)
        assert await call()
        fake.enqueue({"n": "two"}, **TOKENS)                    # C: invalid, re-asked, answered
        fake.enqueue({"n": 3}, **TOKENS)
        assert await call()
        fake.enqueue(status=404, error="model 'llama3.2:3b' not found")  # D: 404, falls back to llava
        fake.enqueue({"n": 4}, **TOKENS)
        assert await call()
        assert not await call("nope/model")                     # E: refused before any attempt
        for _ in range(4):                                      # F: 500s everywhere: all failed
            fake.enqueue(status=500, error="boom")
        assert not await call()

        stats = await stats_of(client)
        health = (await client.call_tool("provider_health", {"provider": "ollama"})).structured_content

    assert stats["calls"]["calls"] == 6 and stats["calls"]["successes"] == 4
    assert stats["calls"]["failures"] == {"server_error": 1, "unknown_model": 1}
    assert stats["calls"]["latency_ms"]["p50"] > 0
    text = stats["models"][TEXT]
    assert {k: text[k] for k in ("provider", "calls", "successes", "failures", "attempts", "retries", "reasks",
                                 "fallbacks", "input_tokens", "output_tokens")} == {
        "provider": "ollama", "calls": 5, "successes": 3, "failures": {"model_not_found": 1, "server_error": 1},
        "attempts": 8, "retries": 2, "reasks": 1, "fallbacks": 2, "input_tokens": 40, "output_tokens": 20}
    vision = stats["models"][VISION]
    assert {k: vision[k] for k in ("calls", "successes", "failures", "attempts", "retries", "fallbacks",
                                   "input_tokens")} == {
        "calls": 2, "successes": 1, "failures": {"server_error": 1}, "attempts": 3, "retries": 1, "fallbacks": 0,
        "input_tokens": 10}
    assert set(stats["models"]) == {TEXT, VISION}  # the unknown id got no entry
    p50, p95 = text["latency_ms"]["p50"], text["latency_ms"]["p95"]
    assert 0 < p50 <= p95
    ollama = stats["providers"]["ollama"]
    assert ollama["calls"] == 7 and ollama["successes"] == 4 and ollama["attempts"] == 11
    assert ollama["failures"] == {"model_not_found": 1, "server_error": 2}
    assert health is not None and health["providers"][0]["stats"] == ollama


async def test_an_unknown_preset_is_a_not_found_error(client: Client) -> None:
    with pytest.raises(MCPError) as caught:
        await client.read_resource("mcp-llm://presets/nope")
    assert caught.value.code == -32602  # invalid params: the resource does not exist (not -32603)
    assert "No preset 'nope'" in caught.value.message and "reverse_prompt" in caught.value.message
    assert json.loads((await client.read_resource("mcp-llm://presets/reverse_prompt")).contents[0].text)  # type: ignore[union-attr]


def test_the_reservoir_stays_bounded_and_its_quantiles_hold() -> None:
    exact = Reservoir()
    for value in range(1, 101):
        exact.add(float(value))
    assert exact.summary() == {"p50": 50.0, "p95": 95.0}  # exact while it has room

    sampled = Reservoir()
    for value in range(200_000):
        sampled.add(float(value % 1000))
    assert len(sampled._values) == RESERVOIR_SIZE and sampled.count == 200_000
    p50, p95 = sampled.quantile(0.5), sampled.quantile(0.95)
    assert p50 is not None and p95 is not None
    assert abs(p50 - 500) < 60 and abs(p95 - 950) < 30  # a uniform sample of all of them


def test_ever_new_model_ids_cannot_grow_the_table() -> None:
    stats = Stats()
    for i in range(MAX_KEYS * 3):
        model = f"ollama/m{i}"
        stats.record([Attempt(model=model, provider="ollama", outcome="ok", latency_ms=1.0)], {model: (1, 1)},
                     1.0, None)
    snapshot = stats.snapshot()
    assert len(snapshot["models"]) == MAX_KEYS + 1
    assert snapshot["models"][OTHER]["calls"] == MAX_KEYS * 2
    assert snapshot["providers"]["ollama"]["calls"] == MAX_KEYS * 3 == snapshot["calls"]["calls"]


# --- failed calls: their wall time, and their last error ------------------------------------------


async def test_a_failed_call_counts_its_wall_time_in_the_stats(serve: Serve, fakes: Fakes) -> None:
    fakes.ollama.enqueue(delay_s=0.3, **non_transient(OLLAMA, 401))
    async with serve(max_retries=0) as client:
        started = time.perf_counter()
        await generate_error(client, OLLAMA.model)
        wall_ms = (time.perf_counter() - started) * 1000
        resource = await client.read_resource("mcp-llm://stats")
    latency = json.loads(resource.contents[0].text)["calls"]["latency_ms"]  # type: ignore[union-attr]
    assert 300 <= latency["p50"] <= wall_ms, (latency, wall_ms)


async def test_a_failed_chain_is_counted_under_its_last_error(serve: Serve, fakes: Fakes) -> None:
    # mcp-llm://stats counts a failed call under the kind of its last error (the one the caller acted on).
    fakes.ollama.enqueue(**non_transient(OLLAMA, 401))
    fakes.of(BY_NAME[OLLAMA.fallback_provider]).enqueue("no JSON here")
    async with serve(max_retries=0, max_repairs=0, fallback=[OLLAMA.fallback]) as client:
        await generate_error(client, OLLAMA.model)
        resource = await client.read_resource("mcp-llm://stats")
    stats = json.loads(resource.contents[0].text)  # type: ignore[union-attr]
    assert stats["calls"]["failures"] == {"not_json": 1}
