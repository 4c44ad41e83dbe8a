"""Resident memory: idle after `initialize` against a bare MCPServer, and over 10,000 calls.

    python bench/memory.py [--runs 5] [--calls 10000] [--concurrency 16]

1. Idle RSS: spawn the server over stdio, `initialize` (2025-11-25) and `notifications/initialized`,
   wait until its RSS stops moving, read VmRSS from /proc. The bare one-tool MCPServer and
   `mcp_llm serve` alternate, `--runs` times each; it prints both and the ratio of each pair
   (target ours/bare ≤ 1.15).
2. RSS over calls: `--calls` generate_structured calls over one stdio session against the fast
   fake Ollama (_fast_ollama.py, 0 ms), `--concurrency` at a time; the server's VmRSS after every
   tenth of the calls, and the ratio of the last to the one after the first tenth (flat: ≈ 1.0).
"""

from __future__ import annotations

import argparse
import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench._common import (  # noqa: E402
    MODEL_IDS,
    PROMPT,
    SCHEMA,
    child_env,
    child_pids,
    fake_process,
    load_average,
    machine_line,
    scratch_dir,
    serve_args,
    server_env,
    spread,
    vm_rss_kb,
    write_bare_server,
    write_config,
)

INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
              "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                         "clientInfo": {"name": "memory-bench", "version": "0"}}}
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}
TIMEOUT_S = 60.0


def idle_rss_kb(command: list[str], env: dict[str, str]) -> int:
    """VmRSS of a server process once it has answered `initialize` and its RSS has settled."""
    with subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                          env=env, cwd=REPO_ROOT) as proc:
        try:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write((json.dumps(INITIALIZE) + "\n").encode())
            proc.stdin.flush()
            deadline = time.monotonic() + TIMEOUT_S
            buffer = b""
            while b"\n" not in buffer:
                readable, _, _ = select.select([proc.stdout], [], [], max(deadline - time.monotonic(), 0))
                if not readable:
                    raise TimeoutError("no answer to initialize")
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    raise RuntimeError("the server exited before answering initialize")
                buffer += chunk
            proc.stdin.write((json.dumps(INITIALIZED) + "\n").encode())
            proc.stdin.flush()
            last, rss = -1, vm_rss_kb(proc.pid) or 0
            while rss != last and time.monotonic() < deadline:  # settled: the same twice, 0.2 s apart
                time.sleep(0.2)
                last, rss = rss, vm_rss_kb(proc.pid) or 0
            return rss
        finally:
            proc.kill()
            proc.wait(timeout=10)


def idle(runs: int) -> list[str]:
    with scratch_dir() as scratch:
        bare = [sys.executable, str(write_bare_server(scratch))]
        config = write_config(scratch, "ollama", "http://192.0.2.1:11434")  # TEST-NET-1: never reached
        ours = [sys.executable, *serve_args(config)]
        pairs = []
        for run in range(runs):
            first, second = (bare, ours) if run % 2 == 0 else (ours, bare)
            a = idle_rss_kb(first, child_env())
            b = idle_rss_kb(second, server_env("ollama"))
            pairs.append((a, b) if first is bare else (b, a))
    bare_kb, ours_kb = [p[0] for p in pairs], [p[1] for p in pairs]
    lines = [
        f"  bare MCPServer (1 tool)  {spread([k / 1024 for k in bare_kb], ' MB', 1)}",
        f"  mcp_llm serve            {spread([k / 1024 for k in ours_kb], ' MB', 1)}",
        f"  idle RSS ours/bare       {spread([o / b for b, o in pairs], 'x', 3)}   (target <= 1.15)",
    ]
    print(f"Idle RSS after initialize ({runs} runs each, alternated):")
    for line in lines:
        print(line)
    return lines


async def over_calls(calls: int, concurrency: int) -> list[str]:
    import anyio
    from mcp import Client, StdioServerParameters

    points: list[tuple[int, int]] = []
    with fake_process("ollama", fast=True) as url, scratch_dir() as scratch:
        config = write_config(scratch, "ollama", url, concurrency=concurrency)
        before = set(child_pids())
        server = StdioServerParameters(command=sys.executable, args=serve_args(config), env=server_env("ollama"),
                                       cwd=str(REPO_ROOT))
        async with Client(server, read_timeout_seconds=TIMEOUT_S) as client:
            pid = next(p for p in child_pids() if p not in before)
            arguments = {"prompt": PROMPT, "schema": SCHEMA, "model": MODEL_IDS["ollama"]}
            step = max(calls // 10, 1)
            done = 0
            started = time.perf_counter()
            while done < calls:
                batch = min(step, calls - done)
                pending = iter(range(batch))

                async def worker(pending: Iterator[int] = pending) -> None:
                    for _ in pending:
                        result = await client.call_tool("generate_structured", arguments)
                        if result.is_error:
                            raise RuntimeError(f"generate_structured failed: {result.content}")

                with anyio.fail_after(TIMEOUT_S * 5):
                    async with anyio.create_task_group() as tg:
                        for _ in range(concurrency):
                            tg.start_soon(worker)
                done += batch
                points.append((done, vm_rss_kb(pid) or 0))
            elapsed = time.perf_counter() - started
    first, last = points[0][1], points[-1][1]
    series = "  ".join(f"{n}:{kb / 1024:.1f}" for n, kb in points)
    lines = [f"  server RSS (MB) after N calls: {series}",
             f"  last/first {last / first:.3f}   ({(last - first) * 1024 / max(calls - points[0][0], 1):+.0f} B/call "
             f"after call {points[0][0]}; {calls / elapsed:.0f} calls/s, concurrency {concurrency})"]
    print(f"RSS over {calls} calls (stdio, fast fake Ollama, 0 ms):")
    for line in lines:
        print(line)
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--skip-idle", action="store_true")
    parser.add_argument("--skip-calls", action="store_true")
    args = parser.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    print(machine_line())
    summary = []
    if not args.skip_idle:
        summary += idle(args.runs)
    if not args.skip_calls:
        import anyio

        summary += anyio.run(over_calls, args.calls, args.concurrency)
    print(f"Load average at the end: {load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
