"""Several hosts behind one provider, across real network boundaries (tests/hostnet.py).

Each host is a fake Ollama or OpenAI-compatible server in a network namespace of its own, at its own
address (gpu-a, gpu-b… on 10.77.<n>.2), linked by veth to the namespace where `mcp-llm serve` runs,
driven over stdio by a real MCP client, as an assistant runs it. A host dies by having its process
killed or its link dropped. Each test prints its figures (`pytest -s` shows them).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters

from tests.hostnet import HostNet, unavailable
from tests.stdio_harness import REPO_ROOT, subprocess_env

WHY_NOT = unavailable()
pytestmark = [pytest.mark.anyio, pytest.mark.skipif(WHY_NOT is not None, reason=f"no host network: {WHY_NOT}")]

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
RUN_TIMEOUT_S = 90
LOAD_S = 3.0  # what a model load costs on a host where the model is not loaded (a real one: tens of seconds)


@pytest.fixture
def net(tmp_path: Path) -> Iterator[HostNet]:
    with HostNet(tmp_path) as made:
        yield made


def write_config(net: HostNet, provider: str = "ollama", endpoint: str = "fleet") -> Path:
    hosts = ", ".join(f'"{host.url}"' for host in net.hosts)
    table = "[providers.ollama]" if provider == "ollama" else f"[providers.openai_compatible.{endpoint}]"
    path = net.tmp / "config.toml"
    path.write_text(f"""
[defaults]
timeout_s = 30
max_retries = 2
connect_timeout_s = 1
first_response_timeout_s = 2
circuit_failures = 3
circuit_cooldown_s = 2

{table}
hosts = [{hosts}]
hosts_refresh_s = 0.5
concurrency = 16
""", encoding="utf-8")
    return path


def connect(net: HostNet, config: Path) -> Client:
    """`mcp-llm serve` over stdio, in the client namespace."""
    command = net.command(sys.executable, "-m", "mcp_llm", "--config", str(config), "serve")
    params = StdioServerParameters(command=command[0], args=command[1:], env=subprocess_env(), cwd=str(REPO_ROOT))
    return Client(params, read_timeout_seconds=60)  # type: ignore[arg-type]


class Run:
    """Calls made by a few workers at once; what each got."""

    def __init__(self) -> None:
        self.results: list[dict[str, Any]] = []
        self.failures: list[str] = []

    @property
    def done(self) -> int:
        return len(self.results) + len(self.failures)

    def hosts(self) -> Counter[str]:
        """Which host answered each call (the trace's last attempt)."""
        return Counter(r["attempts"][-1]["host"] for r in self.results)

    async def go(self, client: Client, model: str, calls: int, workers: int) -> Run:
        left = iter(range(calls))

        async def worker() -> None:
            for _ in left:
                result = await client.call_tool("generate_structured", {"prompt": "Where?", "schema": SCHEMA,
                                                                          "model": model})
                if result.is_error:
                    self.failures.append(" ".join(getattr(b, "text", "") for b in result.content))
                else:
                    self.results.append(result.structured_content or {})

        async with anyio.create_task_group() as tg:
            for _ in range(workers):
                tg.start_soon(worker)
        return self


async def health(client: Client) -> dict[str, Any]:
    result = await client.call_tool("provider_health", {})
    return {row["provider"]: row for row in (result.structured_content or {})["providers"]}


async def readmitted(client: Client, url: str, provider: str = "ollama") -> bool:
    """Whether provider_health shows the host back: up, its circuit closed."""
    row = {h["host"]: h for h in (await health(client))[provider]["hosts"]}[url]
    return bool(row["status"] == "ok" and row["circuit"] == "closed")


async def until(condition: Any, timeout_s: float) -> float:
    """Seconds until `await condition()` is true (fails the test after `timeout_s`)."""
    started = time.monotonic()
    with anyio.fail_after(timeout_s):
        while not await condition():
            await anyio.sleep(0.1)
    return time.monotonic() - started


async def test_calls_go_only_to_hosts_with_the_model_and_to_the_one_where_it_is_loaded(net: HostNet) -> None:
    a = net.add("gpu-a", "ollama", ["llama3.2:3b", "qwen2.5:7b"], loaded=["llama3.2:3b"], load_s=LOAD_S)
    b = net.add("gpu-b", "ollama", ["llama3.2:3b", "qwen2.5:7b"], loaded=["qwen2.5:7b"], load_s=LOAD_S)
    c = net.add("gpu-c", "ollama", ["mistral:7b", "llama3.2:3b"], loaded=["mistral:7b"], load_s=LOAD_S)
    config = write_config(net)
    with anyio.fail_after(RUN_TIMEOUT_S):
        async with connect(net, config) as client:
            started = time.perf_counter()
            runs = {model: await Run().go(client, f"ollama/{model}", calls, workers=4)
                    for model, calls in (("llama3.2:3b", 40), ("qwen2.5:7b", 30), ("mistral:7b", 20))}
            elapsed = time.perf_counter() - started
            rows = await health(client)
            listed = {m["id"]: m for m in (await client.call_tool("list_models", {})).structured_content["models"]}
    hot = {"llama3.2:3b": a, "qwen2.5:7b": b, "mistral:7b": c}
    for model, run in runs.items():
        share = run.hosts()[hot[model].url] / len(run.results)
        print(f"\n{model}: {len(run.results)} answered, {len(run.failures)} failed; hosts {dict(run.hosts())}; "
              f"share on the host where it is loaded {share:.0%}")
        assert not run.failures, run.failures[:3]
        assert share >= 0.9, run.hosts()
        last = [r["attempts"][-1] for r in run.results]
        assert all(a["host"] for a in last)  # the trace names the host, and why
        assert all(a["host_reason"].startswith(f"{model} loaded there") for a in last if a["host"] == hot[model].url)
    loads = {host.name: host.loads() for host in net.hosts}
    print(f"90 calls in {elapsed:.1f} s; model loads {loads} (each costs {LOAD_S:g} s)")
    counts = {host.name: host.counts() for host in net.hosts}  # what reached each host, failovers included
    assert counts["gpu-c"]["qwen2.5:7b"] == 0 and counts["gpu-a"]["mistral:7b"] == counts["gpu-b"]["mistral:7b"] == 0
    assert sum(loads.values(), Counter()) == Counter()  # no call waited for a load: each model went where it was hot

    (ollama,) = [rows["ollama"]]
    shown = {h["host"]: h for h in ollama["hosts"]}
    assert set(shown) == {a.url, b.url, c.url}
    assert "llama3.2:3b" in shown[a.url]["loaded"] and "mistral:7b" in shown[c.url]["loaded"]
    assert all(h["status"] == "ok" and h["circuit"] == "closed" and h["in_flight"] == 0 for h in shown.values())
    assert listed["ollama/mistral:7b"]["hosts"] == [c.url]
    assert listed["ollama/qwen2.5:7b"]["hosts"] == [a.url, b.url]
    assert set(listed["ollama/llama3.2:3b"]["hosts"]) == {a.url, b.url, c.url}

    env = subprocess_env()
    printed = subprocess.run(net.command(sys.executable, "-m", "mcp_llm", "--config", str(config), "health"),
                             capture_output=True, text=True, timeout=60, cwd=REPO_ROOT, env=env, check=False)
    assert printed.returncode == 0, printed.stderr
    lines = printed.stdout.splitlines()
    assert "ollama hosts:" in lines
    assert any(line.split()[:2] == [a.url, "ok"] and "llama3.2:3b" in line for line in lines), printed.stdout
    models = subprocess.run(net.command(sys.executable, "-m", "mcp_llm", "--config", str(config), "models"),
                            capture_output=True, text=True, timeout=60, cwd=REPO_ROOT, env=env, check=False)
    assert models.returncode == 0, models.stderr
    table = {line.split()[0]: line for line in models.stdout.splitlines()}
    assert table["MODEL"].split()[-1] == "HOSTS"
    assert table["ollama/mistral:7b"].endswith(c.url) and f"{a.url}, {b.url}" in table["ollama/qwen2.5:7b"]


async def test_calls_for_one_model_spread_over_the_hosts_where_it_is_loaded(net: HostNet) -> None:
    a = net.add("gpu-a", "ollama", ["llama3.2:3b"], loaded=["llama3.2:3b"])
    b = net.add("gpu-b", "ollama", ["llama3.2:3b"], loaded=["llama3.2:3b"])
    c = net.add("gpu-c", "ollama", ["llama3.2:3b"], load_s=LOAD_S)  # has it, not loaded
    with anyio.fail_after(RUN_TIMEOUT_S):
        async with connect(net, write_config(net)) as client:
            run = await Run().go(client, "ollama/llama3.2:3b", 60, workers=8)
    hosts = run.hosts()
    print(f"\nspread: {dict(hosts)}, {len(run.failures)} failed")
    assert not run.failures
    assert hosts[a.url] >= 15 and hosts[b.url] >= 15  # each a quarter at least, of the hot hosts' share
    assert hosts[a.url] + hosts[b.url] >= 54  # ≥ 90 % where it is loaded
    assert c.loads() == Counter()  # and nothing was sent where it would have to load first


async def test_no_call_fails_when_a_host_is_killed_and_it_is_readmitted_when_it_returns(net: HostNet) -> None:
    a = net.add("gpu-a", "ollama", ["llama3.2:3b"], loaded=["llama3.2:3b"])
    net.add("gpu-b", "ollama", ["llama3.2:3b"], loaded=["llama3.2:3b"])
    with anyio.fail_after(RUN_TIMEOUT_S):
        async with connect(net, write_config(net)) as client:
            run = Run()

            async def kill_then_restart() -> None:
                await until(lambda: _at_least(run, 20), 30)
                a.kill()
                await until(lambda: _at_least(run, 50), 30)
                await anyio.to_thread.run_sync(a.start)

            async with anyio.create_task_group() as tg:
                tg.start_soon(kill_then_restart)
                tg.start_soon(run.go, client, "ollama/llama3.2:3b", 80, 4)
            print(f"\nhost killed mid-run: {len(run.results)} answered, {len(run.failures)} failed; "
                  f"{dict(run.hosts())}")
            assert not run.failures, run.failures[:3]
            failed_over = [a for r in run.results for a in r["attempts"] if "failed before answering" in
                           (a["host_reason"] or "")]
            assert failed_over, "a call in flight to the killed host went on to the other"

            waited = await until(lambda: readmitted(client, a.url), 20)
            after = await Run().go(client, "ollama/llama3.2:3b", 20, workers=2)
    print(f"readmitted {waited:.1f} s after the check began; then {dict(after.hosts())}")
    assert not after.failures and after.hosts()[a.url] >= 5


async def test_no_call_fails_when_a_host_drops_off_the_network_and_it_is_readmitted(net: HostNet) -> None:
    a = net.add("gpu-a", "ollama", ["llama3.2:3b"], loaded=["llama3.2:3b"])
    b = net.add("gpu-b", "ollama", ["llama3.2:3b"], loaded=["llama3.2:3b"])
    with anyio.fail_after(RUN_TIMEOUT_S):
        async with connect(net, write_config(net)) as client:
            run = Run()

            dropped_at: list[int] = []

            async def drop() -> None:
                await until(lambda: _at_least(run, 20), 30)
                b.link(False)  # its packets go nowhere: connections time out
                dropped_at.append(len(run.results))

            async with anyio.create_task_group() as tg:
                tg.start_soon(drop)
                tg.start_soon(run.go, client, "ollama/llama3.2:3b", 60, 4)
            # answered after the drop (past those in flight then, which the host may have answered just before)
            late = Counter(r["attempts"][-1]["host"] for r in run.results[dropped_at[0] + 4:])
            print(f"\nlink dropped mid-run: {len(run.results)} answered, {len(run.failures)} failed; "
                  f"{dict(run.hosts())}, after it {dict(late)}")
            assert not run.failures, run.failures[:3]
            assert late[b.url] == 0
            rows = {h["host"]: h for h in (await health(client))["ollama"]["hosts"]}
            assert rows[b.url]["status"] == "down" and rows[b.url]["circuit"] == "open"
            assert (await health(client))["ollama"]["status"] == "degraded"
            b.link(True)

            waited = await until(lambda: readmitted(client, b.url), 20)
            after = await Run().go(client, "ollama/llama3.2:3b", 20, workers=2)
    print(f"link back: readmitted in {waited:.1f} s; then {dict(after.hosts())}")
    assert not after.failures and after.hosts()[b.url] >= 5 and after.hosts()[a.url] >= 5


async def test_an_openai_compatible_endpoint_with_several_hosts(net: HostNet) -> None:
    x = net.add("gpu-x", "openai", ["qwen"])
    y = net.add("gpu-y", "openai", ["qwen", "llama"])
    with anyio.fail_after(RUN_TIMEOUT_S):
        async with connect(net, write_config(net, "openai_compatible", "vllm")) as client:
            llama = await Run().go(client, "vllm/llama", 10, workers=2)
            qwen = Run()

            async def kill() -> None:
                await until(lambda: _at_least(qwen, 10), 30)
                x.kill()

            async with anyio.create_task_group() as tg:
                tg.start_soon(kill)
                tg.start_soon(qwen.go, client, "vllm/qwen", 40, 4)
            rows = {h["host"]: h for h in (await health(client))["vllm"]["hosts"]}
    print(f"\nopenai-compatible: llama {dict(llama.hosts())}; qwen {dict(qwen.hosts())}, {len(qwen.failures)} failed")
    assert not llama.failures and llama.hosts() == Counter({y.url: 10})
    assert not qwen.failures and qwen.hosts()[x.url] >= 2
    assert rows[x.url]["status"] == "down" and rows[y.url]["loaded"] == ["llama", "qwen"]
    assert y.counts()["llama"] == 10


async def _at_least(run: Run, done: int) -> bool:
    return run.done >= done
