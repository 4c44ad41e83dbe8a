"""Per-call overhead over stdio, per provider, against that provider's SDK called directly.

    python bench/per_call.py [--rounds 5] [--calls 20] [--delays 0,50] [--providers ollama,gemini,anthropic]

For each provider's fake (in its own process, see _fake_server.py) and each backend delay, three
paths, alternated call batch by call batch, `--rounds` rounds of `--calls` sequential calls each:

- **direct**: the provider's SDK called straight, non-streamed, with the schema as its native
  structured-output parameter (the least any client of that provider does), and the answer parsed;
- **direct, streamed**: the same through the SDK's streaming call, which is what our adapters use
  (streaming lets the read timeout bound the first byte and a cancelled call close the request);
- **mcp_llm**: `generate_structured` through an MCP session over stdio with `python -m mcp_llm serve`;

and once, with no provider at all, **bare echo**: a one-tool MCPServer over stdio whose tool
returns at once, the floor for any tool call on this MCP SDK. At a backend delay over 0 ms, the same
bare server's **waiting** tool (it sleeps the delay, then answers) beside **the wait alone** (the same
sleep in this process): their difference is what any MCP tool over stdio adds to a backend that takes
that long (a process that slept 50 ms wakes slower than one kept busy), and (direct + that hop) /
direct is the SDK's own floor for the mcp_llm/direct ratio, printed beside it.

Then **a response-cache hit** (a temperature-0 call asked again, answered with nothing sent), on the
first provider at 0 ms: over stdio against the bare echo, and in process (the tool service called
directly, no MCP framing: what the hit itself costs in the server) against the same call missing
the cache (`cache: false`, which asks the fake at 0 ms), in µs.

For each round it takes the median ms per call of each path, and prints, over the rounds,
min/median/max of those medians and of the ratios mcp_llm/direct (target ≤ 1.05 at 50 ms) and,
at 0 ms, mcp_llm/bare echo (target ≤ 1.5).

`--instructions` counts instructions per call under valgrind's callgrind instead (bench/_instructions.py):
the same paths at 0 ms, a figure the machine's load does not move.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from functools import partial
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
    PROVIDERS,
    SCHEMA,
    child_env,
    delay_tag,
    fake_process,
    load_average,
    machine_line,
    rotated,
    scratch_dir,
    serve_args,
    server_env,
    spread,
    write_bare_server,
    write_config,
)

Call = Callable[[], Awaitable[None]]
WARMUP = 3


# --- the direct SDK calls ----------------------------------------------------------------------


def direct_calls(provider: str, url: str, delay_s: float) -> tuple[Call, Call, Callable[[], Awaitable[None]]]:
    """(non-streamed call, streamed call, close) for `provider`'s SDK against the fake at `url`."""
    prompt = f"{PROMPT} {delay_tag(delay_s)}"
    if provider == "ollama":
        from ollama import AsyncClient

        client = AsyncClient(host=url, timeout=30)

        async def plain() -> None:
            response = await client.chat(model=MODELS[provider], messages=[{"role": "user", "content": prompt}],
                                         format=SCHEMA, stream=False)
            json.loads(response.message.content or "")

        async def streamed() -> None:
            pieces = []
            async for chunk in await client.chat(model=MODELS[provider], messages=[{"role": "user", "content": prompt}],
                                                 format=SCHEMA, stream=True):
                pieces.append(chunk.message.content or "")
            json.loads("".join(pieces))

        return plain, streamed, client._client.aclose

    if provider == "gemini":
        from google import genai
        from google.genai import types

        gclient = genai.Client(api_key=API_KEY, http_options=types.HttpOptions(base_url=url, timeout=30_000))
        config = types.GenerateContentConfig(response_mime_type="application/json", response_json_schema=SCHEMA)

        async def plain() -> None:
            response = await gclient.aio.models.generate_content(model=MODELS[provider], contents=[prompt],
                                                                 config=config)
            json.loads(response.text or "")

        async def streamed() -> None:
            pieces = []
            async for chunk in await gclient.aio.models.generate_content_stream(model=MODELS[provider],
                                                                                contents=[prompt], config=config):
                pieces.append(chunk.text or "")
            json.loads("".join(pieces))

        async def close() -> None:
            await gclient.aio.aclose()

        return plain, streamed, close

    from anthropic import AsyncAnthropic

    aclient = AsyncAnthropic(api_key=API_KEY, base_url=url, max_retries=0, timeout=30)
    params: dict[str, Any] = {
        "model": MODELS[provider], "max_tokens": 1024, "messages": [{"role": "user", "content": prompt}],
        "output_config": {"format": {"type": "json_schema", "schema": SCHEMA}},
    }

    async def plain() -> None:
        message = await aclient.messages.create(**params)
        json.loads("".join(block.text for block in message.content if block.type == "text"))

    async def streamed() -> None:
        async with aclient.messages.stream(**params) as stream:
            message = await stream.get_final_message()
        json.loads("".join(block.text for block in message.content if block.type == "text"))

    return plain, streamed, aclient.close


# --- the rounds ---------------------------------------------------------------------------------


async def batch(call: Call, calls: int) -> float:
    """The median ms per call of `calls` sequential calls."""
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        await call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


async def measure(paths: dict[str, Call], rounds: int, calls: int) -> dict[str, list[float]]:
    for call in paths.values():
        for _ in range(WARMUP):
            await call()
    medians: dict[str, list[float]] = {name: [] for name in paths}
    for round_ in range(rounds):
        for name in rotated(list(paths), round_):
            medians[name].append(await batch(paths[name], calls))
    return medians


async def run(args: argparse.Namespace) -> None:
    from mcp import Client, StdioServerParameters

    print(machine_line())
    print(f"Per call, sequential: {args.rounds} rounds x {args.calls} calls per path, paths alternated, "
          f"{WARMUP} warm-up calls each; figures are each round's median, then min/median/max over rounds.")
    bare_ms: list[float] | None = None
    summary: list[str] = []
    with scratch_dir() as scratch:
        bare = StdioServerParameters(command=sys.executable, args=[str(write_bare_server(scratch))],
                                     env=child_env(), cwd=str(REPO_ROOT))
        async with Client(bare) as bare_client:

            async def echo() -> None:
                result = await bare_client.call_tool("ping", {})
                if result.is_error:
                    raise RuntimeError(f"ping failed: {result.content}")

            for provider in args.providers:
                with fake_process(provider) as url:
                    config = write_config(scratch, provider, url)
                    ours = StdioServerParameters(command=sys.executable, args=serve_args(config),
                                                 env=server_env(provider), cwd=str(REPO_ROOT))
                    async with Client(ours) as client:
                        for delay_ms in args.delays:
                            delay_s = delay_ms / 1000
                            plain, streamed, close = direct_calls(provider, url, delay_s)
                            arguments = {"prompt": f"{PROMPT} {delay_tag(delay_s)}", "schema": SCHEMA,
                                         "model": MODEL_IDS[provider]}

                            async def through_mcp(arguments: dict[str, Any] = arguments) -> None:
                                result = await client.call_tool("generate_structured", arguments)
                                if result.is_error:
                                    raise RuntimeError(f"generate_structured failed: {result.content}")

                            paths: dict[str, Call] = {"direct": plain, "direct, streamed": streamed,
                                                      "mcp_llm (stdio)": through_mcp}
                            if delay_ms == 0:
                                paths["bare echo (stdio)"] = echo
                            else:  # the SDK's own hop when the backend takes delay_ms: its floor there
                                paths["bare echo, waiting (stdio)"] = partial(echo_waiting, bare_client, delay_ms)
                                paths["the wait alone"] = partial(wait_alone, delay_ms)
                            medians = await measure(paths, args.rounds, args.calls)
                            await close()
                            if "bare echo (stdio)" in medians:
                                bare_ms = (bare_ms or []) + medians["bare echo (stdio)"]
                            summary += report(provider, delay_ms, medians)
                    if provider == args.providers[0]:
                        summary += await cache_hit(args, scratch, provider, url, echo)
    print()
    print("Summary (ratio of per-round medians; median over rounds, with min and max):")
    for line in summary:
        print(line)
    if bare_ms:
        print(f"  bare echo over stdio: {spread(bare_ms, ' ms')}")
    print(f"Load average at the end: {load_average()}")


async def cache_hit(args: argparse.Namespace, scratch: Path, provider: str, url: str, echo: Call) -> list[str]:
    """A cache hit over stdio (against the bare echo) and in process (against a miss), on the fake at `url`."""
    from mcp import Client, StdioServerParameters

    from mcp_llm.app import App
    from mcp_llm.config import load_settings
    from mcp_llm.tools import Tools

    config = write_config(scratch, provider, url)
    arguments = {"prompt": f"{PROMPT} {delay_tag(0)}", "schema": SCHEMA, "model": MODEL_IDS[provider],
                 "temperature": 0}
    ours = StdioServerParameters(command=sys.executable, args=serve_args(config), env=server_env(provider),
                                 cwd=str(REPO_ROOT))
    async with Client(ours) as client:

        async def hit_over_stdio() -> None:
            result = await client.call_tool("generate_structured", arguments)
            if result.is_error or not (result.structured_content or {}).get("cached"):
                raise RuntimeError(f"not a cache hit: {result.content}")

        await client.call_tool("generate_structured", arguments)  # the miss that fills the cache
        stdio = await measure({"cache hit (stdio)": hit_over_stdio, "bare echo (stdio)": echo}, args.rounds,
                              args.calls)
    app = App(load_settings(config, env=server_env(provider)))
    tools = Tools(app)
    plain = {k: v for k, v in arguments.items() if k != "model"}

    async def hit_in_process() -> None:
        result = await tools.generate_structured(**plain, model=MODEL_IDS[provider])
        if not result.cached:
            raise RuntimeError("not a cache hit")

    async def miss_in_process() -> None:
        await tools.generate_structured(**plain, model=MODEL_IDS[provider], cache=False)

    try:
        await miss_in_process()
        inproc = await measure({"cache hit (in process)": hit_in_process, "miss, 0 ms (in process)": miss_in_process},
                               args.rounds, args.calls * 5)
    finally:
        await app.aclose()
    print(f"\n{provider}, a response-cache hit:")
    for name, values in {**stdio, **inproc}.items():
        print(f"  {name:24} {spread([v * 1000 for v in values], ' us', 0)}")
    hit_us = [v * 1000 for v in inproc["cache hit (in process)"]]
    to_miss = ratios(inproc["cache hit (in process)"], inproc["miss, 0 ms (in process)"])
    to_echo = ratios(stdio["cache hit (stdio)"], stdio["bare echo (stdio)"])
    lines = [f"  cache hit {provider:9} in process {spread(hit_us, ' us', 0)}; "
             f"hit/miss at 0 ms {spread(to_miss, 'x')}; over stdio hit/bare echo {spread(to_echo, 'x')}"]
    print(lines[0])
    return lines


async def echo_waiting(client: Any, delay_ms: int) -> None:
    result = await client.call_tool("wait", {"ms": delay_ms})
    if result.is_error:
        raise RuntimeError(f"wait failed: {result.content}")


async def wait_alone(delay_ms: int) -> None:
    import anyio

    await anyio.sleep(delay_ms / 1000)


def ratios(top: list[float], bottom: list[float]) -> list[float]:
    return [t / b for t, b in zip(top, bottom, strict=True)]


def report(provider: str, delay_ms: int, medians: dict[str, list[float]]) -> list[str]:
    print(f"\n{provider}, backend {delay_ms} ms:")
    for name, values in medians.items():
        print(f"  {name:22} {spread(values, ' ms')}")
    ours, direct = medians["mcp_llm (stdio)"], medians["direct"]
    ratios = [o / d for o, d in zip(ours, direct, strict=True)]
    extra = [o - d for o, d in zip(ours, direct, strict=True)]
    lines = [f"  {provider:9} {delay_ms:3d} ms  mcp_llm/direct {spread(ratios, 'x')}   "
             f"overhead {spread(extra, ' ms')}"]
    streamed = medians["direct, streamed"]
    lines.append(f"  {'':9} {'':6}  (direct streamed/direct "
                 f"{spread([s / d for s, d in zip(streamed, direct, strict=True)], 'x')}; mcp_llm/direct streamed "
                 f"{spread([o / s for o, s in zip(ours, streamed, strict=True)], 'x')})")
    if "bare echo (stdio)" in medians:
        to_bare = [o / b for o, b in zip(ours, medians["bare echo (stdio)"], strict=True)]
        lines.append(f"  {'':9} {'':6}  mcp_llm/bare echo {spread(to_bare, 'x')}")
    if "bare echo, waiting (stdio)" in medians:
        # The least any MCP tool over stdio adds to a backend of delay_ms: a bare tool that waits it out,
        # less the wait itself; on top of the direct call, the SDK's floor for mcp_llm/direct.
        hop = [e - w for e, w in zip(medians["bare echo, waiting (stdio)"], medians["the wait alone"], strict=True)]
        floor = [(d + h) / d for d, h in zip(direct, hop, strict=True)]
        ours_only = [x - h for x, h in zip(extra, hop, strict=True)]
        lines.append(f"  {'':9} {'':6}  the MCP SDK's floor: a bare tool's hop {spread(hop, ' ms')}, "
                     f"(direct + hop)/direct {spread(floor, 'x')}; mcp_llm beyond it {spread(ours_only, ' ms')}")
    for line in lines:
        print(line)
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=20, help="sequential calls per path per round")
    parser.add_argument("--delays", default="0,50", help="backend delays in ms, comma-separated")
    parser.add_argument("--providers", default=",".join(PROVIDERS))
    parser.add_argument("--instructions", action="store_true",
                        help="instructions per call under valgrind's callgrind instead of wall time "
                             "(bench/_instructions.py; backend 0 ms)")
    args = parser.parse_args(argv)
    args.delays = [int(d) for d in args.delays.split(",")]
    args.providers = [p for p in args.providers.split(",") if p]
    if unknown := set(args.providers) - set(PROVIDERS):
        parser.error(f"unknown providers: {', '.join(sorted(unknown))}")
    import logging

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if args.instructions:
        from bench import _instructions

        _instructions.run(args.providers, args.calls, args.rounds)
        return 0
    import anyio

    anyio.run(run, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
