"""Cold start to `initialize` answered over stdio, and the per-call cost of the MCP layer.

    python bench/cold_start.py [--runs 7] [--calls 50]

1. Cold start: spawn the server, write an `initialize` request to its stdin at once, and time
   until the response line arrives on stdout; then kill it. Two servers, alternated, `--runs`
   times each after one untimed warm-up of each:
     (a) a bare one-tool MCPServer script (written to a temp file), the floor for any Python
         MCP server built on this SDK;
     (b) `python -m mcp_llm --config <file> serve`, the config pointing Ollama at an address
         where nothing answers, so a startup that touched the network would stall visibly.
   The design rule is that (b) answers as fast as (a): the ratio should be close to 1.
2. Per-call overhead: `--calls` generate_structured calls through an in-process `mcp.Client`
   against the fake Ollama server, versus the same number of direct `ollama.AsyncClient.chat`
   calls (same prompt, same schema as `format`) to the same fake. The difference per call is
   what routing, schema checking, validation, tracing and the MCP layer cost.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import select
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # `python bench/cold_start.py` puts bench/, not the root, first
    sys.path.insert(0, str(REPO_ROOT))

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "cold-start-bench", "version": "0"},
    },
}
STARTUP_TIMEOUT_S = 60.0

BARE_SERVER = '''\
from mcp.server.mcpserver import MCPServer

server = MCPServer("bare")


@server.tool()
async def ping() -> str:
    """Answer pong."""
    return "pong"


if __name__ == "__main__":
    server.run()
'''

PROMPT = "Invent a film and describe it."
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "title": {"type": "string"},
        "year": {"type": "integer", "minimum": 1900, "maximum": 2100},
        "genres": {"type": "array", "items": {"type": "string"}, "minItems": 1},
    },
    "required": ["title", "year", "genres"],
    "additionalProperties": False,
}


# --- 1. cold start ---------------------------------------------------------------------------------


def time_to_initialize(command: list[str], env: dict[str, str]) -> float:
    """Seconds from spawning `command` until its answer to `initialize` arrives on stdout."""
    line = (json.dumps(INITIALIZE) + "\n").encode()
    started = time.perf_counter()
    with subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=REPO_ROOT
    ) as proc:
        try:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(line)  # the pipe holds it until the server reads
            proc.stdin.flush()
            reply = _read_line(proc.stdout.fileno(), started + STARTUP_TIMEOUT_S)
            elapsed = time.perf_counter() - started
        finally:
            proc.kill()
            proc.wait(timeout=10)
    message = json.loads(reply)
    if message.get("id") != 1 or "result" not in message:
        raise RuntimeError(f"unexpected answer to initialize from {command}: {reply!r}")
    return elapsed


def _read_line(fd: int, deadline: float) -> bytes:
    buffer = b""
    while b"\n" not in buffer:
        left = deadline - time.perf_counter()
        if left <= 0:
            raise TimeoutError(f"no answer to initialize within {STARTUP_TIMEOUT_S} s")
        readable, _, _ = select.select([fd], [], [], left)
        if readable:
            chunk = os.read(fd, 65536)
            if not chunk:
                raise RuntimeError(f"the server closed stdout before answering: {buffer!r}")
            buffer += chunk
    return buffer.split(b"\n", 1)[0]


def cold_start(runs: int) -> None:
    from tests.stdio_harness import UNREACHABLE_ENDPOINT, server_args, subprocess_env, write_unreachable_config

    env = subprocess_env()
    with tempfile.TemporaryDirectory(prefix="mcp-llm-bench-") as scratch:
        bare_script = Path(scratch) / "bare_server.py"
        bare_script.write_text(BARE_SERVER, encoding="utf-8")
        config = write_unreachable_config(Path(scratch))
        commands: dict[str, list[str]] = {
            "bare MCPServer (1 tool)": [sys.executable, str(bare_script)],
            "mcp_llm serve": [sys.executable, *server_args(config)],
        }
        for command in commands.values():  # warm the OS file cache; not counted
            time_to_initialize(command, env)
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(runs):
            for name, command in commands.items():  # alternate, so drift hits both alike
                times[name].append(time_to_initialize(command, env))

    print(f"Cold start to `initialize` answered over stdio ({runs} runs each, alternated, after one warm-up):")
    print(f"  (mcp_llm's Ollama endpoint: {UNREACHABLE_ENDPOINT}, where nothing answers)")
    for name, values in times.items():
        print(
            f"  {name:26} median {statistics.median(values):6.3f} s"
            f"   min {min(values):6.3f} s   max {max(values):6.3f} s"
        )
    bare, ours = (statistics.median(values) for values in times.values())
    print(f"  ratio ours/bare (medians)  {ours / bare:6.2f}x   (+{(ours - bare) * 1000:.0f} ms)")


def cold_start_instructions() -> None:
    """The same two servers under callgrind, instrumented from their first instruction: a figure the
    machine's load does not move (bench/_instructions.py)."""
    import shutil

    from bench._instructions import to_initialize
    from tests.stdio_harness import server_args, subprocess_env, write_unreachable_config

    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("--instructions needs valgrind (apt-get install valgrind)")
    env = subprocess_env()
    line = (json.dumps(INITIALIZE) + "\n").encode()
    with tempfile.TemporaryDirectory(prefix="mcp-llm-bench-") as scratch:
        bare_script = Path(scratch) / "bare_server.py"
        bare_script.write_text(BARE_SERVER, encoding="utf-8")
        config = write_unreachable_config(Path(scratch))
        counts = {
            "bare MCPServer (1 tool)": to_initialize([sys.executable, str(bare_script)], env, line, Path(scratch),
                                                     "bare"),
            "mcp_llm serve": to_initialize([sys.executable, *server_args(config)], env, line, Path(scratch), "ours"),
        }
    print("Cold start to `initialize` answered, instructions under callgrind (PYTHONHASHSEED=0):")
    for name, count in counts.items():
        print(f"  {name:26} {count / 1e6:9.1f} M instructions")
    bare, ours = counts.values()
    print(f"  ratio ours/bare             {ours / bare:6.3f}x   (+{(ours - bare) / 1e6:.1f} M)")


# --- 2. per-call overhead --------------------------------------------------------------------------


async def per_call_overhead(calls: int) -> None:
    import logging

    # What `mcp-llm serve` does before MCPServer() would set up INFO logging (a log line per request).
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    from mcp import Client
    from ollama import AsyncClient

    from mcp_llm.config import load_settings
    from mcp_llm.server import build_server
    from tests.fakes import ollama_server
    from tests.stdio_harness import write_config

    # The fake writes a reply's headers and body in two sends; with Nagle's algorithm on, the
    # client's delayed ACK then holds every reply back ~40 ms, which would swamp what is measured.
    # (StreamRequestHandler's own switch; see the report on tests/fakes/ollama_server.py.)
    ollama_server._Handler.disable_nagle_algorithm = True

    warmup = 3
    results: dict[str, float] = {}
    with ollama_server.FakeOllama() as fake, tempfile.TemporaryDirectory(prefix="mcp-llm-bench-") as scratch:
        settings = load_settings(write_config(fake, Path(scratch)), env={})

        for label, mode in (("mcp.Client, in-process", "auto"), ("mcp.Client, in-process, legacy", "legacy")):
            async with Client(build_server(settings), mode=mode) as client:

                async def through_mcp(client: Client = client) -> None:
                    result = await client.call_tool("generate_structured", {"prompt": PROMPT, "schema": SCHEMA})
                    if result.is_error:
                        raise RuntimeError(f"generate_structured failed: {result.content}")

                results[label] = await _timed(through_mcp, calls, warmup)

        direct = AsyncClient(host=fake.url, timeout=30)

        async def straight_to_ollama() -> None:
            response = await direct.chat(
                model="llama3.2:3b",
                messages=[{"role": "user", "content": PROMPT}],
                format=SCHEMA,
                stream=False,
            )
            json.loads(response.message.content or "")

        results["ollama.AsyncClient.chat"] = await _timed(straight_to_ollama, calls, warmup)
        await direct._client.aclose()
        if fake.errors:
            raise RuntimeError(f"the fake Ollama server failed: {fake.errors!r}")

    baseline = results["ollama.AsyncClient.chat"]
    print(f"Per-call cost, {calls} sequential calls each (after {warmup} warm-up calls), same fake Ollama:")
    for label, total in results.items():
        print(f"  {label:32} {total:6.3f} s total   {total / calls * 1000:7.2f} ms/call")
    for label, total in results.items():
        if label != "ollama.AsyncClient.chat":
            overhead = (total - baseline) / calls * 1000
            print(f"  {label:32} ratio {total / baseline:5.2f}x   overhead {overhead:+.2f} ms/call")


async def _timed(call: Callable[[], Any], calls: int, warmup: int) -> float:
    for _ in range(warmup):
        await call()
    started = time.perf_counter()
    for _ in range(calls):
        await call()
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="cold starts per server (default 7)")
    parser.add_argument("--calls", type=int, default=50, help="calls per path for the overhead (default 50)")
    parser.add_argument("--skip-cold-start", action="store_true")
    parser.add_argument("--skip-per-call", action="store_true")
    parser.add_argument("--instructions", action="store_true",
                        help="the cold start in instructions under callgrind instead of seconds (a few minutes)")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.calls < 1:
        parser.error("--runs and --calls must be at least 1")

    versions = ", ".join(f"{name} {metadata.version(name)}" for name in ("mcp", "ollama", "mcp-llm"))
    print(f"Python {platform.python_version()} on {platform.platform()}; {versions}")
    from bench._common import fresh_bytecode

    fresh_bytecode()  # as an installed server starts: from compiled modules
    if args.instructions:
        cold_start_instructions()
        return 0
    if not args.skip_cold_start:
        cold_start(args.runs)
    if not args.skip_per_call:
        import anyio

        anyio.run(per_call_overhead, args.calls)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
