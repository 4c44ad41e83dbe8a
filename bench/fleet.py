"""A GPU fleet behind one provider: loaded-first routing (mcp_llm/hosts.py) against round-robin.

Simulated hosts: fake Ollama servers (tests/fakes/ollama_server.py) that load models as Ollama does. A
model not loaded costs `--load-s` before its first answer (a real load is 10-30 s on a GPU box; the
default 2 s keeps the ratio to an answer's time); each host holds at most 2 models at once (GPU memory:
loading a third evicts the least recently used) and answers 2 requests at a time (`-np 2`), each in
`--service-s`. The mixed fleet: 4 hosts, 4 models, every model installed everywhere, each host with two
of them loaded at the start (each model hot on two hosts); traffic 40/30/20/10 % over the models from
`--workers` MCP clients at once.

Both paths are the same server, in process, through a real MCP client; only the host choice differs:

- **loaded-first**: mcp_llm as it ships (a host with the model loaded, then fewest in flight, then the
  fastest lately, in turn among equals);
- **round-robin** (the baseline): each call to the next host that has the model, as a load balancer in
  front of the hosts does (`RoundRobin` below: the same Fleet, its choice replaced).

Rounds alternate the paths (the order rotates), each from the same starting layout. Printed per path:
the share of calls that landed on a host with the model hot (from the hosts' own count of loads),
p50/p95 latency, and the ratio to round-robin; then the routing overhead per call (Fleet.pick over 4
hosts, and a call through a 4-host fleet against one endpoint, all hot, no service time); then, with
`--replicas` servers sharing a real Redis, the most calls the provider saw in flight against its
`concurrency` (and the same replicas without Redis).

    python bench/fleet.py                  # about 2 minutes
    python bench/fleet.py --rounds 5 --calls 200
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import load_average, rotated, spread
from mcp_llm.config import load_settings
from mcp_llm.hosts import Fleet, Host
from mcp_llm.server import build_server
from tests.fakes.ollama_server import FakeModel, FakeOllama

MODELS = ["llama3.2:3b", "qwen2.5:7b", "mistral:7b", "gemma2:9b"]
WEIGHTS = [0.4, 0.3, 0.2, 0.1]
HOSTS = 4
SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}


class RoundRobin(Fleet):
    """The baseline: of the hosts that have the model (and are admitted), the next one in turn."""

    def _best(self, pool: list[Host], model: str, now: float) -> tuple[Host, str]:
        self._turn += 1
        return pool[self._turn % len(pool)], "round robin"


class GPU:
    """A host's picker: at most `slots` answers at once, each taking `service_s`; counts calls in flight."""

    def __init__(self, slots: int, service_s: float) -> None:
        self.service_s = service_s
        self.slots = threading.BoundedSemaphore(slots)
        self.lock = threading.Lock()
        self.now = self.most = 0

    def __call__(self, _body: dict[str, Any]) -> None:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
        with self.slots:
            time.sleep(self.service_s)
        with self.lock:
            self.now -= 1
        return None  # then the fake's default reply


def config(hosts: list[str], *, concurrency: int = 64, state: bool = False, refresh_s: float = 1.0) -> str:
    listed = ", ".join(f'"{url}"' for url in hosts)
    table = f"hosts = [{listed}]\nhosts_refresh_s = {refresh_s}" if len(hosts) > 1 else f'endpoint = "{hosts[0]}"'
    return f"""
[defaults]
max_retries = 0
max_repairs = 0
timeout_s = 120

[providers.ollama]
{table}
concurrency = {concurrency}
""" + ('\n[state]\nredis_url_env = "MCP_LLM_REDIS_URL"\ntimeout_s = 2\n' if state else "")


@asynccontextmanager
async def serving(directory: Path, text: str, env: dict[str, str] | None = None) -> AsyncIterator[Any]:
    from mcp import Client

    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "config.toml"
    path.write_text(text, encoding="utf-8")
    server = build_server(load_settings(path, env=env or {}))
    async with Client(server) as client:
        client.bench_app = server.app  # what the routing figures look at (the fleet's state)
        yield client


async def call(client: Any, model: str) -> float:
    started = time.perf_counter()
    result = await client.call_tool("generate_structured", {"prompt": "n?", "schema": SCHEMA,
                                                            "model": f"ollama/{model}"})
    if result.is_error:
        raise RuntimeError(" ".join(getattr(block, "text", "") for block in result.content))
    return (time.perf_counter() - started) * 1000


async def run_path(path: str, fakes: list[FakeOllama], directory: Path, calls: int, workers: int,
                   seed: int) -> tuple[float, list[float]]:
    """One round of one path from the starting layout: (hot share, latencies in ms)."""
    import mcp_llm.router as router

    for i, fake in enumerate(fakes):
        fake.unload()
        fake.loads.clear()
        for model in (MODELS[i % len(MODELS)], MODELS[(i + 1) % len(MODELS)]):
            fake.load(model, -1)
    picks = random.Random(seed).choices(MODELS, WEIGHTS, k=calls)
    latencies: list[float] = []
    router.Fleet = RoundRobin if path == "round-robin" else Fleet  # type: ignore[misc]  # the baseline's choice
    try:
        async with serving(directory / path, config([f.url for f in fakes])) as client:
            left = iter(picks)

            async def worker() -> None:
                for model in left:
                    latencies.append(await call(client, model))

            async with anyio.create_task_group() as tg:
                for _ in range(workers):
                    tg.start_soon(worker)
    finally:
        router.Fleet = Fleet  # type: ignore[misc]
    loads = sum(sum(fake.loads.values()) for fake in fakes)
    return (calls - loads) / calls, latencies


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, -(-int(q * 1000) * len(ordered) // 1000) - 1))]


async def routing(directory: Path, fakes: list[FakeOllama], calls: int) -> None:
    """Fleet.pick's cost, and a call's through 4 hosts against one endpoint (all hot, no service time). The
    fleet's background reports are asked once only here: the fakes share this process, so their answers to
    them would be counted against the calls."""
    for fake in fakes:
        fake.picker, fake.max_loaded = None, None
        for model in MODELS:
            fake.load(model, -1)
    async with serving(directory / "one", config([fakes[0].url])) as one, \
            serving(directory / "four", config([f.url for f in fakes], refresh_s=3600)) as four:
        for client in (one, four):
            for _ in range(20):
                await call(client, MODELS[0])  # warm: connections, the fleet's first report
        ratios, medians = [], {"one endpoint": [], "4 hosts": []}
        for round_ in range(7):
            for name, client in rotated([("one endpoint", one), ("4 hosts", four)], round_):
                medians[name].append(statistics.median([await call(client, MODELS[0]) for _ in range(calls)]))
            ratios.append(medians["4 hosts"][-1] / medians["one endpoint"][-1])
        fleet = four.bench_app.router.fleets()["ollama"]  # the real fleet, as the calls left it
    print("\nrouting overhead per call")
    for name, values in medians.items():
        print(f"  {name:13s} median {spread(values, ' ms')}")
    print(f"  ratio 4 hosts / one endpoint: {spread(ratios, 'x', 3)}")
    n = 20_000
    started = time.perf_counter()
    for i in range(n):
        fleet.pick(MODELS[i % len(MODELS)])
    print(f"  Fleet.pick over 4 hosts: {(time.perf_counter() - started) / n * 1e6:.1f} µs a call")


async def replicas(directory: Path, count: int, concurrency: int, calls: int) -> None:
    """`count` servers on one fake host: the most requests it saw at once, with and without Redis."""
    try:
        from tests.redis_server import REDIS_SERVER, RedisServer
    except ImportError as exc:  # pytest, which tests/ needs, is not installed
        print(f"\nreplicas sharing Redis: skipped ({exc})")
        return
    if REDIS_SERVER is None:
        print("\nreplicas sharing Redis: skipped (redis-server is not installed: apt-get install redis-server)")
        return
    redis = RedisServer(directory / "redis").start()
    print(f"\n{count} replicas, providers.ollama.concurrency = {concurrency}, {calls} calls at once")
    try:
        with FakeOllama([FakeModel(MODELS[0])]) as fake:
            fake.keep_requests = False
            for shared in (False, True):
                gpu = GPU(slots=10_000, service_s=0.05)
                fake.picker = gpu
                async with AsyncExitStack() as stack:
                    clients = [await stack.enter_async_context(serving(
                        directory / f"replica{i}-{shared}", config([fake.url], concurrency=concurrency, state=shared),
                        {"MCP_LLM_REDIS_URL": redis.url})) for i in range(count)]
                    for client in clients:
                        await call(client, MODELS[0])
                    gpu.most = 0
                    started = time.perf_counter()
                    async with anyio.create_task_group() as tg:
                        for i in range(calls):
                            tg.start_soon(call, clients[i % count], MODELS[0])
                    took = time.perf_counter() - started
                label = "sharing Redis" if shared else "each its own state (no [state])"
                print(f"  {label:32s} most in flight at the provider: {gpu.most} (concurrency {concurrency}; "
                      f"{gpu.most / concurrency:.2f}x), {calls} calls in {took:.1f} s")
    finally:
        redis.stop()


async def main(args: argparse.Namespace) -> None:
    print(f"bench/fleet.py: {HOSTS} hosts, {len(MODELS)} models, load {args.load_s:g} s, answer {args.service_s:g} s, "
          f"{args.calls} calls x {args.rounds} rounds, {args.workers} at once; load average {load_average()}")
    with tempfile.TemporaryDirectory(prefix="mcp-llm-fleet-") as scratch:
        directory = Path(scratch)
        fakes = [FakeOllama([FakeModel(m) for m in MODELS], load_s=args.load_s, max_loaded=2) for _ in range(HOSTS)]
        async with AsyncExitStack() as stack:
            for fake in fakes:
                stack.enter_context(fake)
                fake.keep_requests = False
                fake.picker = GPU(slots=2, service_s=args.service_s)
            hot: dict[str, list[float]] = {"loaded-first": [], "round-robin": []}
            p50: dict[str, list[float]] = {"loaded-first": [], "round-robin": []}
            p95: dict[str, list[float]] = {"loaded-first": [], "round-robin": []}
            for round_ in range(args.rounds):
                for path in rotated(["loaded-first", "round-robin"], round_):
                    share, latencies = await run_path(path, fakes, directory / str(round_), args.calls,
                                                      args.workers, seed=round_)
                    hot[path].append(share * 100)
                    p50[path].append(quantile(latencies, 0.50))
                    p95[path].append(quantile(latencies, 0.95))
            print("\nper path (median over the rounds, min and max)")
            for path in hot:
                print(f"  {path:13s} hot-host share {spread(hot[path], ' %', 1)}; p50 {spread(p50[path], ' ms', 0)}; "
                      f"p95 {spread(p95[path], ' ms', 0)}")
            for name, values in (("p50", p50), ("p95", p95)):
                ratios = [a / b for a, b in zip(values["loaded-first"], values["round-robin"], strict=True)]
                print(f"  {name} loaded-first / round-robin: {spread(ratios, 'x', 3)}")
            await routing(directory, fakes, calls=100)
        await replicas(directory, args.replicas, args.concurrency, args.replica_calls)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=120, help="calls per path per round")
    parser.add_argument("--workers", type=int, default=8, help="MCP clients calling at once")
    parser.add_argument("--load-s", type=float, default=2.0, help="a model load, on a host where it is not loaded")
    parser.add_argument("--service-s", type=float, default=0.1, help="an answer's time once loaded")
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--replica-calls", type=int, default=60)
    anyio.run(main, parser.parse_args())
