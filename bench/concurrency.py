"""Many calls at once: `generate_structured` over one stdio session against the same number of direct
SDK calls, on a fast fake Ollama (or OpenAI) whose every answer takes `--delay-ms`.

    python bench/concurrency.py [--counts 64,256,1024] [--rounds 3] [--delay-ms 200] [--provider ollama|openai]

For each count N: N calls started together, (a) as direct SDK calls (`ollama.AsyncClient.chat(format=schema,
stream=False)`, or `openai.AsyncOpenAI().chat.completions.create(response_format=json_schema)`) on one
client with a pool of N connections (httpx's default of 100 would queue the rest), (b) the same spread
over clients of 64 connections each (httpx's pool looks at every connection on each request, so one
pool of 1,024 is slow), and (c) as `generate_structured` calls over one MCP session with
`python -m mcp_llm serve` (provider concurrency N), alternated, `--rounds` times each. It prints the
wall time of each batch, its ratio to the backend's delay (the floor), and mcp_llm over each direct
path, with min/median/max over the rounds (target ≤ 1.1).

The fake (_fast_ollama.py, its own process, one asyncio loop, speaking both APIs) answers N requests in
about the delay, so it is not what is measured.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench._common import (  # noqa: E402
    API_KEY,
    MODEL_IDS,
    MODELS,
    PROMPT,
    SCHEMA,
    fake_process,
    load_average,
    machine_line,
    rotated,
    scratch_dir,
    serve_args,
    server_env,
    spread,
    write_config,
)

CALL_TIMEOUT_S = 60.0
SHARD = 64  # connections per client in the sharded direct path


async def gather(call: Any, count: int) -> float:
    """Seconds until `count` concurrent calls of `call` have all returned."""
    import anyio

    started = time.perf_counter()
    with anyio.fail_after(CALL_TIMEOUT_S):
        async with anyio.create_task_group() as tg:
            for _ in range(count):
                tg.start_soon(call)
    return time.perf_counter() - started


def direct_path(provider: str, url: str) -> tuple[Any, Any, Any]:
    """(make a client with a pool of n connections, one call on a client, close a client) for `provider`'s
    SDK against the fake at `url`: the least any client of that provider does."""
    if provider == "openai":
        import httpx2
        import openai

        def make_openai(connections: int) -> Any:
            limits = httpx2.Limits(max_connections=connections, max_keepalive_connections=connections)
            return openai.AsyncOpenAI(api_key=API_KEY, base_url=url, max_retries=0, timeout=CALL_TIMEOUT_S,
                                      http_client=openai.DefaultAsyncHttpxClient(limits=limits,
                                                                                 timeout=CALL_TIMEOUT_S))

        async def complete(client: Any) -> None:
            response = await client.chat.completions.create(
                model=MODELS[provider], messages=[{"role": "user", "content": PROMPT}],
                response_format={"type": "json_schema",
                                 "json_schema": {"name": "answer", "schema": SCHEMA, "strict": True}})
            json.loads(response.choices[0].message.content or "")

        async def close_openai(client: Any) -> None:
            await client.close()

        return make_openai, complete, close_openai
    import httpx
    from ollama import AsyncClient

    def make_ollama(connections: int) -> Any:
        return AsyncClient(host=url, timeout=CALL_TIMEOUT_S,
                           limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections))

    async def chat(client: Any) -> None:
        response = await client.chat(model=MODELS[provider], messages=[{"role": "user", "content": PROMPT}],
                                     format=SCHEMA, stream=False)
        json.loads(response.message.content or "")

    async def close_ollama(client: Any) -> None:
        await client._client.aclose()

    return make_ollama, chat, close_ollama


async def one_count(provider: str, url: str, scratch: Path, count: int, rounds: int, delay_s: float) -> str:
    """Alternated batches of `count` calls on each path; the summary line."""
    from mcp import Client, StdioServerParameters

    make, chat, close = direct_path(provider, url)
    config = write_config(scratch, provider, url, concurrency=count)
    shards = max(1, count // SHARD)
    clients = [make(min(count, SHARD)) for _ in range(shards)]
    one = make(count)
    turn = iter(range(1 << 62))

    async def direct_one() -> None:
        await chat(one)

    async def direct_sharded() -> None:
        await chat(clients[next(turn) % shards])

    ours = StdioServerParameters(command=sys.executable, args=serve_args(config),
                                 env=server_env(provider), cwd=str(REPO_ROOT))
    async with Client(ours, read_timeout_seconds=CALL_TIMEOUT_S) as session:
        arguments = {"prompt": PROMPT, "schema": SCHEMA, "model": MODEL_IDS[provider]}

        async def through_mcp() -> None:
            result = await session.call_tool("generate_structured", arguments)
            if result.is_error:
                raise RuntimeError(f"generate_structured failed: {result.content}")

        paths = {"direct, 1 client": direct_one, f"direct, 1 client per {SHARD}": direct_sharded,
                 "mcp_llm (stdio)": through_mcp}
        for call in paths.values():  # warm-up: imports, and the connection pools filled on every side
            await gather(call, count)
        times: dict[str, list[float]] = {name: [] for name in paths}
        for round_ in range(rounds):
            for name in rotated(list(paths), round_):
                times[name].append(await gather(paths[name], count))
    for client in [one, *clients]:
        await close(client)
    print(f"\n{count} concurrent calls:")
    for name, values in times.items():
        print(f"  {name:24} wall {spread([v * 1000 for v in values], ' ms', 0)}   "
              f"/ backend delay {spread([v / delay_s for v in values], 'x')}")
    ours_s = times["mcp_llm (stdio)"]
    best = [min(a, b) for a, b in zip(times["direct, 1 client"], times[f"direct, 1 client per {SHARD}"], strict=True)]
    single = [o / d for o, d in zip(ours_s, times["direct, 1 client"], strict=True)]
    line = (f"  {count:5d} calls  mcp_llm/direct (1 client) {spread(single, 'x')}   "
            f"mcp_llm/best direct {spread([o / b for o, b in zip(ours_s, best, strict=True)], 'x')}   "
            f"mcp_llm/backend delay {spread([o / delay_s for o in ours_s], 'x')}")
    print(line)
    return line


async def run(args: argparse.Namespace) -> None:
    print(machine_line())
    print(f"Concurrent calls to {args.provider}, backend {args.delay_ms} ms, {args.rounds} rounds per count, "
          "direct and mcp_llm alternated; wall time of each batch, then min/median/max over rounds.")
    delay_s = args.delay_ms / 1000
    summary = []
    with fake_process("ollama", delay_s=delay_s, fast=True) as url, scratch_dir() as scratch:
        endpoint = f"{url}/v1" if args.provider == "openai" else url  # the fast fake speaks both APIs
        for count in args.counts:
            summary.append(await one_count(args.provider, endpoint, scratch, count, args.rounds, delay_s))
    print("\nSummary (target mcp_llm/direct <= 1.1):")
    for line in summary:
        print(line)
    print(f"Load average at the end: {load_average()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", default="64,256,1024")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--delay-ms", type=int, default=200)
    parser.add_argument("--provider", choices=("ollama", "openai"), default="ollama",
                        help="whose SDK and API: Ollama's, or OpenAI's (the mcp_llm adapter of every "
                             "OpenAI-compatible server too)")
    args = parser.parse_args(argv)
    args.counts = [int(c) for c in args.counts.split(",")]
    import logging

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    import anyio

    anyio.run(run, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
