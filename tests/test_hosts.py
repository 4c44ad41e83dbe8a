"""Several hosts behind one provider, in one process: fake Ollama servers on loopback ports, the server
behind a real MCP client (tests/test_hosts_netns.py does the same across network namespaces and a
stdio subprocess). What a host's errors do to it (ejection, readmission after its cool-down), a
failure after the answer began streaming, a model a host no longer has, credentials in a host's URL,
and the config that makes a fleet.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from mcp_llm.config import describe, load_settings
from mcp_llm.errors import ConfigError
from mcp_llm.server import build_server
from tests.conftest import call
from tests.fakes.ollama_server import FakeModel, FakeOllama

pytestmark = pytest.mark.anyio

SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
MODEL = "llama3.2:3b"


@pytest.fixture
def two() -> Iterator[tuple[FakeOllama, FakeOllama]]:
    with FakeOllama([FakeModel(MODEL)]) as a, FakeOllama([FakeModel(MODEL)]) as b:
        for fake in (a, b):
            fake.load(MODEL, -1)
        yield a, b
        assert not a.errors and not b.errors


@pytest.fixture(autouse=True)
def fresh_probes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("mcp_llm.app.HEALTH_CACHE_S", 0.0)  # each provider_health asks the hosts now


def fleet_config(hosts: list[str], *, max_retries: int = 0, refresh_s: float = 0.2) -> str:
    listed = ", ".join(f'"{host}"' for host in hosts)
    return f"""
[defaults]
max_retries = {max_retries}
max_repairs = 0
timeout_s = 20
circuit_failures = 2
circuit_cooldown_s = 1

[providers.ollama]
hosts = [{listed}]
hosts_refresh_s = {refresh_s}
concurrency = 8
"""


@asynccontextmanager
async def serving(tmp_path: Path, text: str) -> AsyncIterator[Client]:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    async with Client(build_server(load_settings(path, env={}))) as client:
        yield client


async def generate(client: Client) -> dict[str, Any]:
    with anyio.fail_after(30):
        return await call(client, "generate_structured", prompt="n?", schema=SCHEMA, model=f"ollama/{MODEL}")


async def hosts_of(client: Client) -> dict[str, dict[str, Any]]:
    health = await call(client, "provider_health", provider="ollama")
    return {row["host"]: row for row in health["providers"][0]["hosts"]}


async def test_a_host_that_errs_is_ejected_and_readmitted_by_its_probe_after_the_cool_down(
        two: tuple[FakeOllama, FakeOllama], tmp_path: Path) -> None:
    a, b = two
    for _ in range(2):  # circuit_failures = 2
        a.enqueue(status=500, error="CUDA error: out of memory")
    async with serving(tmp_path, fleet_config([a.url, b.url])) as client:
        results = [await generate(client) for _ in range(10)]
        hosts = await hosts_of(client)
        assert hosts[a.url]["circuit"] == "open" and hosts[a.url]["status"] == "degraded"
        assert "ejected after 2 failures in a row" in hosts[a.url]["detail"], hosts[a.url]
        assert (await call(client, "provider_health", provider="ollama"))["providers"][0]["status"] == "degraded"
        # every call answered at once by the other host: each failure on `a` cost no retry of the model's
        assert all(len(r["attempts"]) == 1 and r["attempts"][0]["outcome"] == "ok" for r in results)
        moved = [r["attempts"][0] for r in results if "failed before answering" in r["attempts"][0]["host_reason"]]
        assert len(moved) == 2 and all(m["host"] == b.url for m in moved)
        assert moved[0]["host_reason"].startswith(f"{a.url} failed before answering (server_error); ")
        while_out = len(a.chat_requests)
        for _ in range(4):
            await generate(client)
        assert len(a.chat_requests) == while_out  # ejected: nothing goes there during its cool-down

        async def readmitted() -> bool:
            return (await hosts_of(client))[a.url]["circuit"] == "closed"

        with anyio.fail_after(10):
            while not await readmitted():  # the cool-down (1 s), then the background probe readmits it
                await anyio.sleep(0.1)
        after = [(await generate(client))["attempts"][0]["host"] for _ in range(10)]
    # readmitted: it answers again (how the calls then spread follows each host's latency, which a loaded
    # machine makes noisy: the spreading itself is tests/test_hosts_netns.py's calls-spread test)
    assert a.url in after, after


async def test_of_hosts_equally_loaded_and_idle_the_faster_lately_is_preferred(
        two: tuple[FakeOllama, FakeOllama], tmp_path: Path) -> None:
    a, b = two
    a.picker = lambda _body: time.sleep(0.3)  # a slower box: 300 ms more to the first chunk (then the default reply)
    async with serving(tmp_path, fleet_config([a.url, b.url])) as client:
        hosts = [(await generate(client))["attempts"][0] for _ in range(12)]
    chosen = [h["host"] for h in hosts]
    assert set(chosen[:2]) == {a.url, b.url}  # neither measured yet: taken in turn
    assert chosen[2:].count(b.url) == 10, chosen  # then the faster one, while a's estimate is recent
    assert "recent" in hosts[-1]["host_reason"]


async def test_a_failure_after_the_answer_began_streaming_is_an_ordinary_retry(
        two: tuple[FakeOllama, FakeOllama], tmp_path: Path) -> None:
    a, b = two
    async with serving(tmp_path, fleet_config([a.url, b.url], max_retries=1)) as client:
        first = (await generate(client))["attempts"][0]["host"]
        broken = a if first == b.url else b  # the next call goes to the other host (taken in turn)
        broken.enqueue(content='{"n": 1}', stream_error="model runner has unexpectedly stopped")

        async def progress(*_: Any) -> None:  # asked for: the answer streams (unasked, it is one plain request)
            return None

        with anyio.fail_after(30):
            streamed = await client.call_tool("generate_structured", {"prompt": "n?", "schema": SCHEMA,
                                                                      "model": f"ollama/{MODEL}"},
                                              progress_callback=progress)
        assert not streamed.is_error and streamed.structured_content is not None, streamed.content
        result = streamed.structured_content
    attempts = result["attempts"]
    assert [x["outcome"] for x in attempts] == ["error", "ok"], attempts
    assert attempts[0]["host"] == broken.url and attempts[0]["error"] == "server_error"
    assert attempts[1]["host"] != broken.url  # the retry goes to a host that has not failed in this call


async def test_a_model_a_host_no_longer_has_goes_to_another_host_at_once(
        two: tuple[FakeOllama, FakeOllama], tmp_path: Path) -> None:
    a, b = two
    async with serving(tmp_path, fleet_config([a.url, b.url], refresh_s=3600)) as client:
        await generate(client)  # both reports say they have it
        a.models = []  # removed from `a` (`ollama rm`) after its last report
        a.unload()
        results = [await generate(client) for _ in range(4)]
        listed = {m["id"]: m for m in (await call(client, "list_models"))["models"]}
    assert all(r["attempts"][-1]["host"] == b.url and len(r["attempts"]) == 1 for r in results)
    assert sum("failed before answering (model_not_found)" in r["attempts"][0]["host_reason"] for r in results) == 1
    assert listed[f"ollama/{MODEL}"]["hosts"] == [b.url]


async def test_a_model_no_host_has_is_a_clear_error(two: tuple[FakeOllama, FakeOllama], tmp_path: Path) -> None:
    a, b = two
    async with serving(tmp_path, fleet_config([a.url, b.url])) as client:
        result = await client.call_tool("generate_structured", {"prompt": "n?", "schema": SCHEMA,
                                                                 "model": "ollama/nowhere:1b"})
    assert result.is_error
    text = " ".join(getattr(block, "text", "") for block in result.content)
    assert "nowhere:1b" in text and "not found" in text.lower(), text


async def test_credentials_in_a_host_go_as_basic_auth_and_are_never_shown(
        two: tuple[FakeOllama, FakeOllama], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    a, b = two
    secret = "s3cret-fleet-pw"
    with_user = a.url.replace("http://", f"http://alice:{secret}@")
    text = fleet_config([with_user, b.url])
    with caplog.at_level(logging.DEBUG, "mcp_llm"):
        async with serving(tmp_path, text) as client:
            results = [await generate(client) for _ in range(4)]
            health = await call(client, "provider_health", provider="ollama")
            listed = await call(client, "list_models")
            a.enqueue(status=500, error="boom")
            errors = [await generate(client) for _ in range(2)]
    expected = "Basic " + base64.b64encode(f"alice:{secret}".encode()).decode()
    assert a.chat_requests and all(r.headers.get("authorization") == expected for r in a.chat_requests)
    assert all("authorization" not in r.headers for r in b.chat_requests)
    shown = json.dumps([results, health, listed, errors])
    assert a.url in shown  # the host, as everything shows it: no user, no password
    path = tmp_path / "config.toml"
    config = json.dumps(describe(load_settings(path, env={})))
    for where in (shown, caplog.text, config):
        assert secret not in where and "alice" not in where


async def test_one_endpoint_is_a_fleet_of_one(fake_ollama: FakeOllama, tmp_path: Path) -> None:
    text = f'[defaults]\nmax_retries = 0\n[providers.ollama]\nendpoint = "{fake_ollama.url}"\n'
    async with serving(tmp_path, text) as client:
        result = await generate(client)
        health = await call(client, "provider_health", provider="ollama")
    assert result["attempts"][0]["host"] == fake_ollama.url and result["attempts"][0]["host_reason"] is None
    (row,) = health["providers"][0]["hosts"]
    assert row["host"] == fake_ollama.url and row["status"] == "ok" and row["loaded"] is None


@pytest.mark.parametrize(("table", "problem"), [
    ('endpoint = "http://a:11434"\nhosts = ["http://b:11434"]', "not both"),
    ('hosts = ["http://a:11434", "http://A:11434/"]', "listed twice"),
    ('hosts = ["http://a:11434", " "]', "empty one"),
    ('use_cloud = true\nhosts = ["http://a:11434", "http://b:11434"]', "Ollama Cloud is one host"),
    ('hosts = ["http://a:11434"]\nhosts_refresh_s = 0', "hosts_refresh_s"),
])
def test_a_fleet_config_that_cannot_work_is_refused(tmp_path: Path, table: str, problem: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f"[providers.ollama]\n{table}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env={})
    assert problem in caught.value.user_message(), caught.value.user_message()


def test_an_openai_compatible_endpoint_takes_hosts_and_says_what_a_host_is(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[providers.openai_compatible.vllm]\nhosts = ["http://u:pw@gpu-a:8000/v1", '
                    '"http://gpu-b:8000/v1"]\n', encoding="utf-8")
    shown = describe(load_settings(path, env={}))["providers"]["openai_compatible"]["vllm"]
    assert shown["hosts"] == ["http://gpu-a:8000/v1", "http://gpu-b:8000/v1"] and "pw" not in json.dumps(shown)
    for table, problem in (("hosts = [\"gpu-a:8000\"]", "http(s) base URL"), ("models = []", "`endpoint`")):
        path.write_text(f"[providers.openai_compatible.vllm]\n{table}\n", encoding="utf-8")
        with pytest.raises(ConfigError) as caught:
            load_settings(path, env={})
        assert problem in caught.value.user_message()
