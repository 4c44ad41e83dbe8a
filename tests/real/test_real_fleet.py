"""Two real llama-servers (SmolLM2-135M) as two hosts of one OpenAI-compatible endpoint, through a real MCP
client over stdio: both hosts are found serving the model and share the calls; one killed mid-run costs
no call (each goes on at once to the other), and it is readmitted once it serves again. Every `data`
returned is validated here against the caller's schema.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.real.backend import MODEL_ALIAS, LlamaServer, Prepared
from tests.real.conftest import connect
from tests.real.schemas import SCHEMAS
from tests.real.test_real_engine import valid

pytestmark = pytest.mark.anyio

FLEET_ID = f"fleet/{MODEL_ALIAS}"
PICKS = [SCHEMAS[i] for i in (0, 2, 3, 6)]


def fleet_config(directory: Path, hosts: list[str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "config.toml"
    listed = ", ".join(f'"{host}/v1"' for host in hosts)
    path.write_text(f"""
[defaults]
model = "{FLEET_ID}"
timeout_s = 120
max_retries = 2
max_repairs = 2
connect_timeout_s = 2
circuit_cooldown_s = 2

[providers.openai_compatible.fleet]
hosts = [{listed}]
hosts_refresh_s = 0.5
models = ["{MODEL_ALIAS}"]
concurrency = 8
""", encoding="utf-8")
    return path


class Run:
    def __init__(self) -> None:
        self.results: list[dict[str, Any]] = []
        self.errors: list[str] = []

    async def go(self, client: Any, calls: int, workers: int = 2) -> Run:
        left = iter(range(calls))

        async def worker() -> None:
            for i in left:
                _, schema, prompt = PICKS[i % len(PICKS)]
                result = await client.call_tool("generate_structured", {
                    "prompt": prompt, "schema": schema, "temperature": 0, "max_tokens": 160, "cache": False})
                if result.is_error:
                    self.errors.append(" ".join(getattr(block, "text", "") for block in result.content))
                    continue
                valid(result.structured_content["data"], schema)
                self.results.append(result.structured_content)

        async with anyio.create_task_group() as tg:
            for _ in range(workers):
                tg.start_soon(worker)
        return self

    def hosts(self) -> Counter[str]:
        return Counter(r["attempts"][-1]["host"] for r in self.results)


async def hosts_of(client: Any) -> dict[str, dict[str, Any]]:
    health = (await client.call_tool("provider_health", {"provider": "fleet"})).structured_content
    return {row["host"]: row for row in health["providers"][0]["hosts"]}


async def test_two_llama_servers_as_two_hosts_of_one_endpoint(prepared: Prepared, llama: LlamaServer,
                                                             tmp_path: Path) -> None:
    second = LlamaServer(prepared, parallel=2, context=2048, log_path=tmp_path / "second.log").start()
    a, b = f"{llama.url}/v1", f"{second.url}/v1"
    try:
        async with connect(fleet_config(tmp_path, [llama.url, second.url])) as client:
            with anyio.fail_after(600):
                first = await Run().go(client, 8)
                shown = await hosts_of(client)
                listed = (await client.call_tool("list_models", {"provider": "fleet"})).structured_content["models"]
                print(f"\ntwo llama-servers: {dict(first.hosts())}, {len(first.errors)} errors")
                assert not first.errors, first.errors
                assert set(first.hosts()) == {a, b}  # both took calls
                assert all(shown[h]["status"] == "ok" and shown[h]["loaded"] == [MODEL_ALIAS] for h in (a, b))
                (entry,) = [m for m in listed if m["id"] == FLEET_ID]
                assert entry["hosts"] == [a, b]

                run = Run()

                async def kill_then_restart() -> None:
                    while len(run.results) < 3:
                        await anyio.sleep(0.05)
                    second.kill()
                    while len(run.results) < 7:
                        await anyio.sleep(0.05)
                    await anyio.to_thread.run_sync(second.start)

                async with anyio.create_task_group() as tg:
                    tg.start_soon(kill_then_restart)
                    tg.start_soon(run.go, client, 10)
                print(f"one killed mid-run: {dict(run.hosts())}, {len(run.errors)} errors")
                assert not run.errors, run.errors  # no call failed: each went on to the live host

                while (row := (await hosts_of(client))[b])["circuit"] != "closed" or row["status"] != "ok":
                    await anyio.sleep(0.2)  # readmitted by its probe once it serves again
                after = await Run().go(client, 6)
                print(f"after it came back: {dict(after.hosts())}")
                assert not after.errors and after.hosts()[b] >= 1
    finally:
        second.stop()
