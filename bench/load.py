"""Load over one MCP session: many generate_structured calls, bounded concurrency, faulty backend replies.

    python bench/load.py [--calls 1000] [--concurrency 8] [--seed 1] [--fault-rate 0.05] [--stdio]

One `mcp.Client` session (in-process by default; `--stdio` runs `python -m mcp_llm serve` as a
subprocess instead) sends `--calls` generate_structured calls with a small schema, at most
`--concurrency` at a time, to a server built from a config with `max_retries = 1`, the default
`max_repairs = 2` and a fallback model on the same fake Ollama. The fake answers each chat request
by echoing the call's id (from the prompt) into schema-valid JSON, except for a seeded-random
`--fault-rate` of them, which get a fault: HTTP 500, 503, 429 with `Retry-After: 0`, a malformed
body, schema-violating JSON, or prose. Whether a request is faulty, and which fault it gets, is a
hash of (seed, call id, how many requests that call made before), so a seed gives the same faults
to the same calls whatever the interleaving.

It checks that every call was answered exactly once and that each answer's data is its own call's
(the echoed id and number), and exits 1 otherwise; nothing else fails the run. It prints the wall
time, calls/s, p50/p95/p99 latency, the outcomes (ok first try, ok after retry, ok after re-ask,
ok via fallback, failed), the faults injected, and memory after call 100 and after the last call
(tracemalloc's current heap and VmRSS, each after a `gc.collect()`), with the ratio last/first
(flat means about 1.0) and the growth per call.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import threading
import time
import tracemalloc
from array import array
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # `python bench/load.py` puts bench/, not the root, first
    sys.path.insert(0, str(REPO_ROOT))

from bench._common import child_pids, vm_rss_kb  # noqa: E402
from tests.fakes.ollama_server import FakeOllama, default_responder  # noqa: E402

TEXT_MODEL = "ollama/llama3.2:3b"
FALLBACK_MODEL = "ollama/llava:7b"  # on the same fake; any installed model answers text
CHECKPOINT = 100  # memory is compared after this many calls and after the last one
CALL_TIMEOUT_S = 60.0
WARMUP_CALLS = 3

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "call_id": {"type": "string"},
        "n": {"type": "integer", "minimum": 0},
        "parity": {"enum": ["even", "odd"]},
    },
    "required": ["call_id", "n", "parity"],
    "additionalProperties": False,
}

# An id is a word and six digits: `call-000042` for a measured call, `warm-000001` for a warm-up.
_ID = re.compile(r"\b([a-z]+)-(\d{6})\b")


def call_id(i: int, prefix: str = "call") -> str:
    return f"{prefix}-{i:06d}"


def prompt_for(cid: str) -> str:
    return f"Request {cid}: answer with call_id {cid}, its number n, and whether n is even or odd."


def expected_data(cid: str) -> dict[str, Any]:
    """What the answer to the call with id `cid` must be, exactly."""
    n = int(cid.rsplit("-", 1)[1])
    return {"call_id": cid, "n": n, "parity": "odd" if n % 2 else "even"}


def id_in_request(body: dict[str, Any]) -> str | None:
    """The call id in a chat request: in its first user message (re-asks append to the conversation)."""
    for message in body.get("messages") or []:
        if isinstance(message, dict) and message.get("role") == "user":
            match = _ID.search(str(message.get("content") or ""))
            return match.group(0) if match else None
    return None


def echo_responder(body: dict[str, Any]) -> str:
    """A well-behaved model that answers with the request's own id and number; else the fake's default."""
    cid = id_in_request(body)
    return json.dumps(expected_data(cid)) if cid else default_responder(body)


# --- faults --------------------------------------------------------------------------------------

FAULT_KINDS = ("http_500", "http_503", "http_429", "malformed", "schema_violation", "prose")


def fault_reply(kind: str, cid: str) -> dict[str, Any]:
    """`FakeOllama.enqueue` arguments for one fault, for the call `cid`."""
    if kind == "http_500":
        return {"status": 500, "error": "simulated: llama runner process has terminated"}
    if kind == "http_503":
        return {"status": 503, "error": "simulated: server busy, please try again"}
    if kind == "http_429":
        return {"status": 429, "error": "simulated: too many requests", "headers": {"Retry-After": "0"}}
    if kind == "malformed":  # a body cut short: the SDK's json.loads fails on it
        return {"raw_body": b'{"model": "llama3.2:3b", "message": {"role": "assistant", "cont'}
    if kind == "schema_violation":
        return {"content": {"call_id": cid, "n": "not a number", "parity": "both"}}
    if kind == "prose":
        return {"content": f"Sure! This is request {cid}, but I would rather not say what n is."}
    raise ValueError(f"unknown fault kind {kind!r}")


class FaultPlan:
    """Which chat requests get a fault: a hash of (seed, call id, that call's request count).

    Only measured calls (`call-…` ids) get faults; ids in `doomed` get an HTTP 503 on every
    request, so they fail whatever the retries and fallbacks (for a test of failed calls).
    Thread-safe: the fake asks from its connection threads.
    """

    def __init__(self, seed: int, rate: float, *, doomed: frozenset[str] = frozenset()) -> None:
        self.seed = seed
        self.rate = rate
        self.doomed = doomed
        self.injected: Counter[str] = Counter({kind: 0 for kind in FAULT_KINDS})
        self.requests = 0
        self._seen: dict[str, int] = {}
        self._lock = threading.Lock()

    def draw(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """The fault for this request (enqueue arguments), or None for a normal answer."""
        cid = id_in_request(body)
        with self._lock:
            self.requests += 1
            if cid is None or not cid.startswith("call-"):
                return None
            k = self._seen.get(cid, 0)
            self._seen[cid] = k + 1
            if cid in self.doomed:
                kind = "http_503"
            else:
                digest = hashlib.sha256(f"{self.seed}/{cid}/{k}".encode()).digest()
                if int.from_bytes(digest[:8], "big") >= self.rate * 2**64:
                    return None
                kind = FAULT_KINDS[digest[8] % len(FAULT_KINDS)]
            self.injected[kind] += 1
        return fault_reply(kind, cid)

    def forget(self, cid: str) -> None:
        """Drop a finished call's request count, so the plan does not grow with the run."""
        with self._lock:
            self._seen.pop(cid, None)

    @property
    def faults(self) -> int:
        return sum(self.injected.values())


class FaultyOllama(FakeOllama):
    """The fake Ollama, answering each accepted chat request as `plan` says: a fault, or the echo.

    The plan is the fake's `picker`: it sees each accepted request's JSON, in the connection's own
    thread, and its fault goes to that request alone (never through the queue, so concurrent
    requests cannot take each other's). With `keep_requests` False the fake keeps no request log:
    a long run would otherwise hold every request body, and the memory figures would show the
    fake's log instead of the server.
    """

    def __init__(self, plan: FaultPlan, *, keep_requests: bool = False) -> None:
        super().__init__()
        self.plan = plan
        self.picker = plan.draw
        self.responder = echo_responder
        self.keep_requests = keep_requests


def config_text(fake: FakeOllama, *, concurrency: int, fallback: bool = True, timeout_s: float = 30) -> str:
    """The server's config: `max_retries = 1`, two re-asks, a fallback on the same fake."""
    fallbacks = f'"{FALLBACK_MODEL}"' if fallback else ""
    return f"""
[defaults]
model = "{TEXT_MODEL}"
fallback = [{fallbacks}]
max_retries = 1
max_repairs = 2
timeout_s = {timeout_s}

[providers.ollama]
endpoint = "{fake.url}"
concurrency = {concurrency}

[[providers.ollama.models]]
id = "llama3.2:3b"

[[providers.ollama.models]]
id = "llava:7b"
vision = true
"""


# --- one call and its verdict --------------------------------------------------------------------

OUTCOMES = ("ok first try", "ok after retry", "ok after re-ask", "ok via fallback", "failed")


def error_text(result: Any) -> str:
    return " ".join(getattr(block, "text", "") for block in result.content)


def judge(cid: str, result: Any, validate: Callable[[Any], None]) -> tuple[str, str | None]:
    """(outcome, problem): the outcome of one call's result, and what is wrong with it, if anything.

    Precedence when a call had several mishaps: fallback, then re-ask, then retry.
    """
    if result.is_error:
        text = error_text(result)
        if "attempt" not in text or "Traceback" in text:
            return "failed", f"{cid}: unclear tool error: {text!r}"
        return "failed", None
    structured = result.structured_content or {}
    data = structured.get("data")
    try:
        validate(data)
    except Exception as exc:  # jsonschema.ValidationError; reported, not raised
        return "failed", f"{cid}: data does not validate: {exc}"
    if data != expected_data(cid):
        return "failed", f"{cid}: got another call's data, or wrong data: {data!r}"
    attempts = structured.get("attempts") or []
    if not attempts or attempts[-1].get("outcome") != "ok":
        return "failed", f"{cid}: answered, but its trace does not end with ok: {attempts!r}"
    if structured.get("model") != TEXT_MODEL:
        return "ok via fallback", None
    if any(a.get("outcome") == "invalid_output" for a in attempts):
        return "ok after re-ask", None
    if any(a.get("outcome") == "error" for a in attempts):
        return "ok after retry", None
    return "ok first try", None


def schema_validator() -> Callable[[Any], None]:
    """The benchmark's own check of `data`, independent of the server's."""
    import jsonschema

    return jsonschema.Draft202012Validator(SCHEMA).validate


# --- memory --------------------------------------------------------------------------------------


@dataclass
class MemoryPoint:
    heap: int | None  # bytes, tracemalloc's current
    rss_kb: int | None
    server_rss_kb: int | None  # --stdio: the server subprocess
    snapshot: Path | None = None  # a tracemalloc snapshot, dumped to a file


def memory_point(server_pid: int | None, snapshot_to: Path | None = None) -> MemoryPoint:
    """Heap and RSS after a gc.collect(); then, if asked, a heap snapshot for the growth sites.

    The snapshot is taken after the figures and kept on disk, not in memory: tracemalloc does
    not count it in the heap, but held in memory until the next point it would swell the RSS.
    """
    gc.collect()
    heap = tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else None
    point = MemoryPoint(heap, vm_rss_kb(), vm_rss_kb(server_pid) if server_pid else None)
    if snapshot_to is not None and tracemalloc.is_tracing():
        tracemalloc.take_snapshot().dump(str(snapshot_to))
        point.snapshot = snapshot_to
        gc.collect()
    return point


# --- the run -------------------------------------------------------------------------------------


@dataclass
class Run:
    calls: int
    latency_s: array = field(init=False)  # preallocated, so the bookkeeping does not grow during the run
    answers: bytearray = field(init=False)
    outcomes: Counter[str] = field(default_factory=lambda: Counter({name: 0 for name in OUTCOMES}))
    problems: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # a few tool-error texts, to show
    wall_s: float = 0.0  # all the calls, the drain at the checkpoint included, the memory points not
    drain_s: float = 0.0
    points: dict[str, MemoryPoint] = field(default_factory=dict)
    growth: list[str] = field(default_factory=list)  # where the heap grew most between the two points
    after: str = ""

    def __post_init__(self) -> None:
        self.latency_s = array("d", bytes(8 * self.calls))
        self.answers = bytearray(self.calls)

    @property
    def unanswered(self) -> list[int]:
        return [i for i, count in enumerate(self.answers) if count != 1]

    @property
    def correct(self) -> bool:
        return not self.unanswered and not self.problems


async def drive(client: Any, plan: FaultPlan, calls: int, concurrency: int, *,
                server_pid: int | None = None, snapshot_dir: Path | None = None) -> Run:
    """The calls, `concurrency` at a time, with a memory point after call CHECKPOINT and after the last.

    Both points are taken with no call in flight: after call CHECKPOINT the workers finish the
    calls they have before the first point is taken (the drain, which is timed and reported),
    then go on. The points themselves are not timed. With `snapshot_dir`, each point also dumps
    a tracemalloc snapshot there (see `growth_sites`).
    """
    import anyio

    run = Run(calls)
    validate = schema_validator()

    async def one(i: int) -> None:
        cid = call_id(i)
        started = time.perf_counter()
        try:
            result = await client.call_tool(
                "generate_structured",
                {"prompt": prompt_for(cid), "schema": SCHEMA, "model": TEXT_MODEL},
                read_timeout_seconds=CALL_TIMEOUT_S,
            )
        except Exception as exc:  # no answer at all (a protocol error or a timeout): unanswered
            run.problems.append(f"{cid}: no answer: {type(exc).__name__}: {exc}")
            return
        finally:
            plan.forget(cid)
        run.latency_s[i] = time.perf_counter() - started
        run.answers[i] = min(run.answers[i] + 1, 255)
        outcome, problem = judge(cid, result, validate)
        run.outcomes[outcome] += 1
        if problem:
            run.problems.append(problem)
        elif outcome == "failed" and len(run.failures) < 3:
            run.failures.append(f"{cid}: {error_text(result)}")

    async def phase(indices: range) -> float:
        """Run the calls; return how long the phase drained (fewer calls in flight than workers)."""
        pending = iter(indices)
        idle_from: list[float] = []

        async def worker() -> None:
            for i in pending:  # shared: each worker takes the next call when it is free
                await one(i)
            idle_from.append(time.perf_counter())

        async with anyio.create_task_group() as tg:
            for _ in range(min(concurrency, len(indices))):
                tg.start_soon(worker)
        return time.perf_counter() - idle_from[0] if idle_from else 0.0

    first = min(CHECKPOINT, calls)
    started = time.perf_counter()
    run.drain_s = await phase(range(first))
    paused = time.perf_counter()
    run.points["first"] = memory_point(server_pid, snapshot_dir and snapshot_dir / "first.heap")
    resumed = time.perf_counter()
    await phase(range(first, calls))
    run.wall_s = (paused - started) + (time.perf_counter() - resumed)
    run.points["last"] = memory_point(server_pid, snapshot_dir and snapshot_dir / "last.heap")
    return run


async def load(args: argparse.Namespace) -> tuple[Run, FaultPlan]:
    import anyio
    from mcp import Client, StdioServerParameters

    plan = FaultPlan(args.seed, args.fault_rate)
    with FaultyOllama(plan) as fake, tempfile.TemporaryDirectory(prefix="mcp-llm-load-") as scratch:
        config = Path(scratch) / "config.toml"
        config.write_text(config_text(fake, concurrency=args.concurrency, fallback=not args.no_fallback),
                          encoding="utf-8")
        if args.stdio:
            from tests.stdio_harness import server_args, subprocess_env

            target: Any = StdioServerParameters(
                command=sys.executable, args=server_args(config), env=subprocess_env(), cwd=str(REPO_ROOT)
            )
        else:
            from mcp_llm.config import load_settings
            from mcp_llm.server import build_server

            target = build_server(load_settings(config, env={}))
        async with Client(target, read_timeout_seconds=CALL_TIMEOUT_S) as client:
            server_pid = next(iter(child_pids()), None) if args.stdio else None
            for i in range(WARMUP_CALLS):  # imports and connections; never faulty, not counted
                cid = call_id(i, "warm")
                result = await client.call_tool("generate_structured", {"prompt": prompt_for(cid), "schema": SCHEMA})
                if result.is_error:
                    raise RuntimeError(f"warm-up call failed: {error_text(result)}")
            snapshots = Path(scratch) if args.top and tracemalloc.is_tracing() else None
            run = await drive(client, plan, args.calls, args.concurrency, server_pid=server_pid,
                              snapshot_dir=snapshots)
            with anyio.fail_after(CALL_TIMEOUT_S):
                health = await client.call_tool("provider_health", {"provider": "ollama"})
                cid = call_id(args.calls + 1, "warm")
                again = await client.call_tool("generate_structured", {"prompt": prompt_for(cid), "schema": SCHEMA})
            circuit = (health.structured_content or {}).get("providers", [{}])[0].get("circuit")
            ok = not again.is_error and (again.structured_content or {}).get("data") == expected_data(cid)
            run.after = f"circuit {circuit}; a follow-up call: {'ok' if ok else 'FAILED: ' + error_text(again)}"
        if snapshots is not None:
            run.growth = growth_sites(run.points["first"], run.points["last"], args.top)
        if fake.errors:
            raise RuntimeError(f"the fake Ollama server itself failed: {fake.errors!r}")
    return run, plan


# --- the report ----------------------------------------------------------------------------------


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    rank = max(1, min(len(sorted_values), round(q / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def report(run: Run, plan: FaultPlan, args: argparse.Namespace) -> None:
    n = run.calls
    answered = sum(1 for count in run.answers if count == 1)
    twice = sum(1 for count in run.answers if count > 1)
    print(f"Correctness: {answered}/{n} calls answered exactly once ({n - answered - twice} not at all, "
          f"{twice} more than once); {len(run.problems)} wrong or unclear answers")
    for problem in run.problems[:10]:
        print(f"  ! {problem}")

    latencies = sorted(run.latency_s[i] * 1000 for i, count in enumerate(run.answers) if count)
    print(f"Time: {run.wall_s:.3f} s wall for {n} calls, {n / run.wall_s:.1f} calls/s "
          f"(including {run.drain_s:.3f} s draining the calls in flight at call {min(CHECKPOINT, n)})")
    if latencies:
        print(f"  latency (ms): p50 {percentile(latencies, 50):.1f}   p95 {percentile(latencies, 95):.1f}   "
              f"p99 {percentile(latencies, 99):.1f}   max {latencies[-1]:.1f}   mean {statistics.fmean(latencies):.1f}")

    print("Outcomes: " + ", ".join(f"{name} {run.outcomes[name]}" for name in OUTCOMES))
    for failure in run.failures:
        print(f"  e.g. {failure[:300]}")
    share = plan.faults / plan.requests * 100 if plan.requests else 0.0
    print(f"Faults injected: {plan.faults} of {plan.requests} chat requests ({share:.2f} %): "
          + ", ".join(f"{kind} {plan.injected[kind]}" for kind in FAULT_KINDS))

    first, last = run.points["first"], run.points["last"]
    checkpoint = min(CHECKPOINT, n)
    print(f"Memory, after gc.collect():      after call {checkpoint:<6} after call {n:<6}  ratio   growth")
    here = " (client, fake)" if args.stdio else ""  # in-process, this process is the server too
    rows: list[tuple[str, float | None, float | None]] = [
        (f"Python heap{here or ' (tracemalloc)'}", first.heap, last.heap),
        (f"RSS{here or ' (VmRSS)'}{', swollen by --top' if run.growth else ''}",
         _kb(first.rss_kb), _kb(last.rss_kb)),
    ]
    if args.stdio:
        rows.append(("RSS (server subprocess)", _kb(first.server_rss_kb), _kb(last.server_rss_kb)))
    later = n - checkpoint
    for label, before, after in rows:
        if before is None or after is None:
            print(f"  {label:30} {'n/a':>12}   {'n/a':>12}")
            continue
        growth = after - before
        per_call = f", {growth / later:+.0f} B/call" if later else ""
        print(f"  {label:30} {before / 1e6:9.2f} MB   {after / 1e6:9.2f} MB   {after / before:5.3f}   "
              f"{growth / 1e6:+.2f} MB{per_call}")
    if run.growth:
        print(f"  largest heap changes between the two points (top {len(run.growth)}, by line):")
        for line in run.growth:
            print(f"    {line}")
    print(f"After the run: {run.after}")


def growth_sites(first: MemoryPoint, last: MemoryPoint, top: int) -> list[str]:
    """The lines whose live allocations changed most between two points, from their snapshots."""
    if first.snapshot is None or last.snapshot is None:
        return []
    before, after = (tracemalloc.Snapshot.load(str(point.snapshot)) for point in (first, last))
    lines = []
    for stat in after.compare_to(before, "lineno")[:top]:
        frame = stat.traceback[0]
        lines.append(f"{stat.size_diff / 1024:+9.1f} KiB {stat.count_diff:+6d} blocks  "
                     f"{_short(frame.filename)}:{frame.lineno}")
    return lines


def _kb(value: int | None) -> float | None:
    return None if value is None else value * 1024.0


def _short(filename: str) -> str:
    """A path from site-packages, the stdlib or the repository, without the prefix."""
    return re.sub(rf"^.*?(site-packages/|/lib/python3\.\d+/|{re.escape(str(REPO_ROOT))}/)", "", filename)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1000, help="tool calls to send (default 1000)")
    parser.add_argument("--concurrency", type=int, default=8, help="calls in flight at most (default 8)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the fault plan (default 1)")
    parser.add_argument("--fault-rate", type=float, default=0.05,
                        help="share of chat requests that get a fault (default 0.05)")
    parser.add_argument("--stdio", action="store_true", help="run the server as a stdio subprocess")
    parser.add_argument("--no-fallback", action="store_true", help="configure no fallback model")
    parser.add_argument("--no-tracemalloc", action="store_true",
                        help="do not trace the heap (tracing slows every allocation down)")
    parser.add_argument("--top", type=int, default=0,
                        help="list the N lines whose heap grew most (snapshots swell the RSS; default 0)")
    args = parser.parse_args(argv)
    if args.calls < 1 or args.concurrency < 1:
        parser.error("--calls and --concurrency must be at least 1")
    if not 0 <= args.fault_rate <= 1:
        parser.error("--fault-rate must be between 0 and 1")

    import logging

    # What `mcp-llm serve` does before MCPServer() would set up INFO logging (a log line per request).
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if not args.no_tracemalloc:
        tracemalloc.start()

    import anyio

    versions = ", ".join(f"{name} {metadata.version(name)}" for name in ("mcp", "ollama", "mcp-llm"))
    print(f"Python {platform.python_version()} on {platform.platform()}, {os.cpu_count()} CPUs; {versions}")
    where = "a stdio subprocess" if args.stdio else "in-process"
    print(f"Load: {args.calls} generate_structured calls over one MCP session ({where}), "
          f"concurrency {args.concurrency}, seed {args.seed}, {args.fault_rate * 100:g} % faulty chat requests")
    print(f"  server config: max_retries 1, max_repairs 2, fallback "
          f"{'none' if args.no_fallback else FALLBACK_MODEL}, provider concurrency {args.concurrency}; "
          f"tracemalloc {'off' if args.no_tracemalloc else 'on'}; {WARMUP_CALLS} warm-up calls first")
    sys.stdout.flush()
    run, plan = anyio.run(load, args)
    report(run, plan, args)
    if not run.correct:
        print("FAILED: not every call was answered exactly once with its own data.")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
