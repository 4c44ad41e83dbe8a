"""Instructions per call under valgrind's callgrind: a measure the machine's load cannot move.

    python bench/per_call.py --instructions [--calls 20] [--providers ollama]

Wall-clock ratios on a shared 2-core machine swing by tens of per cent from run to run; the number
of instructions a call executes does not (it repeats within a fraction of a per cent), so a
regression of a few per cent shows. Each path runs in processes started under
`valgrind --tool=callgrind --instr-atstart=no`: startup and imports run uninstrumented (a few times
slower than native rather than fifty), the warm-up calls are made, and only then does the driver
switch instrumentation on (`callgrind_control --instr=on PID`); each round zeroes the counters, sends
`--calls` calls, and dumps them (`callgrind_control --dump`). The paths:

- **direct**: the provider's SDK called straight, non-streamed (bench/per_call.py's baseline), in
  one process;
- **mcp_llm**: an MCP client over stdio and `python -m mcp_llm serve`, both under callgrind: what a
  call costs the assistant's process and the server's together;
- **bare echo** (with `--providers` including ollama, at 0 ms): the same MCP client and a one-tool
  MCPServer whose tool returns at once, the floor of any tool call on this SDK.

The fake provider runs outside valgrind: its instructions are nobody's overhead. Printed: the
instructions per call of each process and path, and the ratios mcp_llm/direct and mcp_llm/bare
echo. Needs valgrind (`apt-get install valgrind`); not part of CI.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

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
    server_env,
    write_bare_server,
    write_config,
)

WARMUP = 3
READY_TIMEOUT_S = 900.0  # imports under valgrind, on a loaded machine
_TOTALS = re.compile(r"^(?:summary|totals):\s*(\d+)", re.M)


def valgrind_prefix(out_dir: Path, name: str) -> list[str]:
    return ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--trace-children=no",
            f"--callgrind-out-file={out_dir}/{name}.%p", "-q"]


# --- the worker: one path's calls, in a process under callgrind --------------------------------------


async def _worker(args: argparse.Namespace) -> None:
    call, close, server_pid = await _path(args)
    for _ in range(WARMUP):
        await call()
    pids = [os.getpid(), *([server_pid] if server_pid else [])]
    print("ready " + " ".join(map(str, pids)), flush=True)
    loop = asyncio.get_running_loop()
    while True:
        line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
        if not line or line == "quit":
            break
        for _ in range(int(line.split()[1])):  # "go N"
            await call()
        print("done", flush=True)
    await close()


async def _path(args: argparse.Namespace) -> tuple[Any, Any, int | None]:
    """(one call, close, the server's pid or None) for the worker's path."""
    if args.path == "direct":
        from bench.per_call import direct_calls

        plain, _, close = direct_calls(args.provider, args.url, 0.0)
        return plain, close, None
    from contextlib import AsyncExitStack

    from mcp import Client, StdioServerParameters

    server_args = json.loads(args.server)
    stack = AsyncExitStack()
    client = await stack.enter_async_context(Client(StdioServerParameters(
        command=server_args[0], args=server_args[1:], env=json.loads(args.env), cwd=str(REPO_ROOT))))
    if args.path == "bare":
        tool, arguments = "ping", {}
    else:
        tool, arguments = "generate_structured", {"prompt": PROMPT, "schema": SCHEMA,
                                                  "model": MODEL_IDS[args.provider]}

    async def call() -> None:
        result = await client.call_tool(tool, arguments)
        if result.is_error:
            raise RuntimeError(f"{tool} failed: {result.content}")

    (server_pid,) = child_pids()  # the stdio server, under its own valgrind
    return call, stack.aclose, server_pid


# --- the driver -----------------------------------------------------------------------------------------


class Measured:
    """A worker under callgrind: its pids (the worker's and a server's), measured `calls` at a time."""

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
                                     cwd=REPO_ROOT, text=True)
        self.pids = self._ready()
        self.instrumented = False

    def _ready(self) -> list[int]:
        assert self.proc.stdout is not None
        started = time.monotonic()
        while time.monotonic() - started < READY_TIMEOUT_S:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"the worker exited before it was ready ({self.proc.wait()})")
            if line.startswith("ready "):
                return [int(pid) for pid in line.split()[1:]]
        raise TimeoutError("the worker was not ready in time")

    def instructions(self, calls: int, out_dir: Path) -> list[int]:
        """Instructions each process executed during `calls` calls."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        for pid in self.pids:
            if not self.instrumented:
                _control("--instr=on", pid)
            _control("--zero", pid)  # what ran since the last dump (idle waiting) is not the calls'
        self.instrumented = True
        self.proc.stdin.write(f"go {calls}\n")
        self.proc.stdin.flush()
        if self.proc.stdout.readline().strip() != "done":
            raise RuntimeError("the worker did not finish its calls")
        counts = []
        for pid in self.pids:
            before = set(out_dir.glob(f"*.{pid}.*"))
            _control("--dump", pid)
            (dump,) = set(out_dir.glob(f"*.{pid}.*")) - before
            counts.append(int(_TOTALS.search(dump.read_text(errors="replace")).group(1)))  # type: ignore[union-attr]
        return counts

    def close(self) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=120)
        except (subprocess.TimeoutExpired, BrokenPipeError):
            self.proc.kill()
            self.proc.wait()


def _control(option: str, pid: int) -> None:
    subprocess.run(["callgrind_control", option, str(pid)], check=True, capture_output=True, timeout=120)


def run(providers: list[str], calls: int, rounds: int) -> None:
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("--instructions needs valgrind (apt-get install valgrind)")
    print(f"Instructions per call under callgrind: {rounds} rounds x {calls} calls per path after {WARMUP} "
          f"warm-up calls; load average {load_average()} (it does not move these figures)")
    python = sys.executable
    bare_per_call: list[float] = []
    with tempfile.TemporaryDirectory(prefix="mcp-llm-instr-") as scratch:
        out_dir = Path(scratch)
        worker = [python, str(REPO_ROOT / "bench" / "_instructions.py"), "--worker"]
        for provider in providers:
            with fake_process(provider) as url:
                config = write_config(out_dir, provider, url)
                ours_server = [*valgrind_prefix(out_dir, "server"), python, "-m", "mcp_llm", "--config",
                               str(config), "serve"]
                paths = {
                    "direct": [*valgrind_prefix(out_dir, "direct"), *worker, "--path", "direct", "--provider",
                               provider, "--url", url],
                    "mcp_llm": [*valgrind_prefix(out_dir, "client"), *worker, "--path", "mcp", "--provider",
                                provider, "--server", json.dumps(ours_server), "--env",
                                json.dumps(server_env(provider))],
                }
                if provider == providers[0]:
                    bare_server = [*valgrind_prefix(out_dir, "bare"), python, str(write_bare_server(out_dir))]
                    paths["bare echo"] = [*valgrind_prefix(out_dir, "client"), *worker, "--path", "bare",
                                          "--provider", provider, "--server", json.dumps(bare_server), "--env",
                                          json.dumps(child_env())]
                per_call = _measure(paths, calls, rounds, out_dir, server_env(provider))
                _report(provider, per_call)
                bare_per_call += per_call.get("bare echo", [])
    if bare_per_call:
        print(f"  (bare echo: {min(bare_per_call) / 1e6:.2f} M instructions per call, client and server)")


def _measure(paths: dict[str, list[str]], calls: int, rounds: int, out_dir: Path,
             env: dict[str, str]) -> dict[str, list[float]]:
    workers = {name: Measured(command, env) for name, command in paths.items()}
    try:
        per_call: dict[str, list[float]] = {name: [] for name in paths}
        per_process: dict[str, list[list[int]]] = {name: [] for name in paths}
        for _ in range(rounds):
            for name, worker in workers.items():
                counts = worker.instructions(calls, out_dir)
                per_process[name].append(counts)
                per_call[name].append(sum(counts) / calls)
        for name, rows in per_process.items():
            parts = " + ".join(f"{min(row[i] for row in rows) / calls / 1e6:.2f}"
                               for i in range(len(rows[0])))
            label = "client + server" if len(rows[0]) == 2 else "one process"
            print(f"  {name:10} {min(per_call[name]) / 1e6:7.2f} M instructions per call ({label}: {parts} M); "
                  f"rounds {', '.join(f'{v / 1e6:.2f}' for v in per_call[name])}")
        return per_call
    finally:
        for worker in workers.values():
            worker.close()


def _report(provider: str, per_call: dict[str, list[float]]) -> None:
    ours, direct = min(per_call["mcp_llm"]), min(per_call["direct"])
    line = f"  {provider}: mcp_llm/direct {ours / direct:.2f}x"
    if per_call.get("bare echo"):
        line += f", mcp_llm/bare echo {ours / min(per_call['bare echo']):.2f}x"
    print(line + " (instructions per call, the least of the rounds)")


# --- cold start: instructions until `initialize` is answered ---------------------------------------------


def to_initialize(command: list[str], env: dict[str, str], line: bytes, out_dir: Path, name: str) -> int:
    """Instructions `command` executes from its start until its answer to `line` (an `initialize`) is on
    stdout, under callgrind from the first instruction; the interpreter's hash seed is fixed."""
    with subprocess.Popen(["valgrind", "--tool=callgrind", "-q", f"--callgrind-out-file={out_dir}/{name}.%p",
                           *command], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                          env=env | {"PYTHONHASHSEED": "0"}, cwd=REPO_ROOT) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(line)
            proc.stdin.flush()
            if not proc.stdout.readline().startswith(b"{"):
                raise RuntimeError(f"{name} did not answer initialize")
            before = set(out_dir.glob(f"{name}.{proc.pid}*"))
            _control("--dump", proc.pid)
            (dump,) = set(out_dir.glob(f"{name}.{proc.pid}*")) - before
            return int(_TOTALS.search(dump.read_text(errors="replace")).group(1))  # type: ignore[union-attr]
        finally:
            proc.kill()
            proc.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--path", choices=("direct", "mcp", "bare"))
    parser.add_argument("--provider", default="ollama")
    parser.add_argument("--url", default="")
    parser.add_argument("--server", default="[]")
    parser.add_argument("--env", default="{}")
    args = parser.parse_args()
    import logging

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(_worker(args))


if __name__ == "__main__":
    main()
