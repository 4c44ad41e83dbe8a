"""Mutation testing of the core: plant one small bug at a time, and see whether a test notices.

    python bench/mutation.py circuit                 # one module (see TARGETS), all its mutants
    python bench/mutation.py router --recheck        # only the survivors of the last run
    python bench/mutation.py router --unrun          # only what a sampled or interrupted run did not reach
    python bench/mutation.py router --shard 0/2 & python bench/mutation.py router --shard 1/2   # side by side
    python bench/mutation.py --list                  # the modules, and the tests each one runs

A small AST mutator, so it needs nothing but pytest: for each mutation point in the module (a
comparison flipped, an arithmetic or boolean operator swapped, `not` dropped, a constant changed,
a statement deleted, a value no longer returned) it writes the mutant into a scratch copy of the
repository and runs the tests that cover that module against it, stopping at the first failure
(`-x`). A mutant is *killed* when a test fails (or the run outlives its time limit), and
*survives* when every test passes: then either a test is missing or the mutant is equivalent
(it changes no behaviour), and each survivor needs one or the other as its answer.

Runs are bounded and cheap on a shared machine: the script runs at the lowest priority (`nice`),
one mutant at a time; the heavy imports (the MCP SDK, pydantic, jsonschema, the provider SDKs)
are done once, and each mutant's pytest runs in a forked child, so a mutant costs what its
tests cost. Each mutant gets `--timeout-factor` (2) times the clean run's time (plus 10 s). The
results go to `bench/mutation-results/<module>.json`; `--recheck` reruns only that file's
survivors (after adding a test, say).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import copy
import fcntl
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "mutation-results"


@dataclass(frozen=True)
class Target:
    path: str
    tests: tuple[str, ...]  # pytest node ids or files, fastest first: `-x` stops at the first failure
    scope: tuple[str, ...] = ()  # only these functions (and methods) are mutated; empty = the whole module


# What tests/test_core_rules.py held until issue 19 (the rules mutation testing found untested), filed by
# the module each tests: named here file by file, so each module's run still selects them.
CIRCUIT_TESTS = "tests/test_circuit.py"
ROUTER_TESTS = "tests/test_router.py"
REPLY_TESTS = (
    "tests/test_schema_reply.py",  # reading and validating a reply, where that work runs
    "tests/test_schema_argument.py",  # the caller's schema, which reply.py's decoder reads
    "tests/test_schema_gate.py",
    "tests/test_schema_limits.py",
    "tests/test_schema_compile.py",
    "tests/test_schema_repair.py",
)
STRUCTURED_TESTS = (  # what covered structured.py before issue 19 split it into reply, argument and compile
    "tests/test_structured.py",
    *REPLY_TESTS,
    "tests/test_server.py::test_presets_by_name",
    "tests/test_stdio.py::test_stdout_carries_only_json_rpc",  # raw JSON-RPC: a schema holding NaN
    ROUTER_TESTS,  # the final error: how the last answer began, its problems
    "tests/test_properties.py",
    "tests/test_hostile.py",
)
TARGETS: dict[str, Target] = {
    "circuit": Target("mcp_llm/circuit.py", (
        f"{CIRCUIT_TESTS}::test_circuit_states_step_by_step",
        f"{CIRCUIT_TESTS}::test_half_open_lets_one_trial_through_at_a_time",
        CIRCUIT_TESTS,
        f"{ROUTER_TESTS}::test_a_non_transient_error_is_not_retried_and_does_not_open_the_circuit",
        f"{ROUTER_TESTS}::test_a_skipped_provider_says_why_and_when_it_is_tried_again",
        ROUTER_TESTS,
        "tests/test_stats.py",
        "tests/test_faults.py::test_circuit_opens_skips_the_provider_and_closes_after_a_good_trial",
        "tests/test_faults.py::test_a_failed_trial_opens_the_circuit_again",
        "tests/test_faults.py::test_provider_health_shows_the_circuit_as_it_is_now",
    )),
    "router": Target("mcp_llm/router.py", (
        ROUTER_TESTS,
        CIRCUIT_TESTS,
        "tests/test_stats.py",
        "tests/test_schema_compile.py::test_gemini_schema_rewrites_are_in_the_trace_and_in_what_it_was_sent",
        "tests/test_schema_repair.py",
        "tests/test_faults.py",
        "tests/test_server.py::test_generate_structured_returns_valid_data_and_trace",
        "tests/test_image_fit.py::test_the_fit_is_redone_for_each_fallback",
        "tests/test_image_fit.py::test_a_text_model_falls_back_to_a_vision_model",
        "tests/test_image_fit.py::test_a_model_without_vision_is_refused_before_sending",
        "tests/test_cancellation.py",
        "tests/test_cli.py::test_call_prints_valid_data_and_trace",  # a call without progress reporting
        "tests/test_stats.py::test_stats_count_the_calls_made",  # tokens per model, as mcp-llm://stats shows them
        "tests/test_zero_config.py",  # the model picked when none is given
        "tests/test_sampling.py",  # the client's own model: no provider settings
        "tests/test_progress.py",  # progress notifications while a model streams
        "tests/test_adapter_openai.py::test_a_named_endpoint_has_its_own_concurrency_bound",
    )),
    "structured": Target("mcp_llm/schema/reply.py", STRUCTURED_TESTS),
    # the rest of what structured.py was until issue 19: the schema argument and its checked-schema
    # cache, and the per-provider compile cache (what runs off the loop, and when)
    "schema_argument": Target("mcp_llm/schema/argument.py", STRUCTURED_TESTS),
    "schema_compile": Target("mcp_llm/schema/compile.py", STRUCTURED_TESTS),
    # dialects.py only re-exports since issue 19: Gemini's compiler and the walk every compiler shares
    "compile_gemini": Target("mcp_llm/schema/compile_gemini.py", (
        "tests/test_schema_dialects.py",
        "tests/test_schema_compile.py",
        "tests/test_properties.py",
    )),
    "walker": Target("mcp_llm/schema/walker.py", (
        "tests/test_schema_walker.py",
        "tests/test_schema_dialects.py",
        "tests/test_schema_compile.py",
        "tests/test_schema_normalize.py",
        "tests/test_properties.py",
    )),
    "compile_anthropic": Target("mcp_llm/schema/compile_anthropic.py", (
        "tests/test_schema_dialects.py",
        "tests/test_schema_walker.py",
        "tests/test_schema_compile.py",
        "tests/test_adapter_anthropic.py",  # what the SDK is sent: strict output or a forced tool
        "tests/test_properties.py",
        "tests/test_hostile.py",  # hostile schemas compiled within bounds
    )),
    "compile_openai": Target("mcp_llm/schema/compile_openai.py", (
        "tests/test_schema_dialects.py",
        "tests/test_schema_walker.py",
        "tests/test_schema_compile.py",
        "tests/test_adapter_openai.py",
    )),
    "config": Target("mcp_llm/config.py", (
        "tests/test_config.py::test_config_command_redacts_every_secret_and_says_where_it_came_from",
        "tests/test_config.py::test_config_command_json_redacts_every_secret",
        "tests/test_config.py::test_config_command_says_not_set_without_secrets",
        "tests/test_config.py::test_each_secret_is_read_from_the_variable_its_config_names",
        "tests/test_config.py",
        "tests/test_provider_spec.py",
    ), scope=("describe", "load_settings", "_first_env", "_fill_from_env", "_attach")),
    # the path checks moved to image_sources.py (issue 18: race-free, one open per component)
    "image_paths": Target("mcp_llm/image_sources.py", (
        "tests/test_image_paths.py",
        "tests/test_images.py",
    ), scope=("read_source", "read_path", "_checked_text", "_outside_error", "_inside", "_read_inside", "_walk",
              "_check_name", "_reopen", "_open_root", "_lexical", "_open_reached", "_kind_error", "_read_by_name")),
}

# Heavy imports done once in the parent, before any fork (never `mcp_llm` or `tests`: the child
# imports those fresh from the scratch copy, mutant included).
PRELOAD = ("pytest", "anyio", "pydantic", "jsonschema", "httpx", "mcp", "mcp.client", "mcp.server.mcpserver",
           "tenacity", "PIL.Image", "ollama", "anthropic", "google.genai")


# --- mutation points ------------------------------------------------------------------------------

COMPARE = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
           ast.NotEq: ast.Eq, ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is}
BINARY = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.FloorDiv: ast.Div,
          ast.Mod: ast.FloorDiv, ast.BitOr: ast.BitAnd, ast.BitAnd: ast.BitOr}
BOOL = {ast.And: ast.Or, ast.Or: ast.And}
DELETABLE = (ast.Expr, ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Raise, ast.Continue, ast.Break)


@dataclass
class Mutant:
    index: int
    line: int
    end_line: int
    kind: str
    before: str
    after: str
    status: str = ""  # killed, timeout, survived (`tests` says how many ran it: 0 = no test runs that line)
    tests: int = 0
    seconds: float = 0.0
    killed_by: str = ""
    key: str = ""  # what the mutant is, whatever its line: "kind | before | after | occurrence"


@dataclass
class Point:
    node: ast.AST
    kind: str
    apply: object = field(repr=False)  # node copy → mutated node (or None to delete a statement)


def _is_docstring(node: ast.AST, parent: ast.AST | None) -> bool:
    return (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
            and parent is not None and getattr(parent, "body", [None])[0] is node)


def _is_type_alias(node: ast.AST) -> bool:
    """`State = Literal[...]`: read by annotations only, which are never evaluated; deleting it changes nothing."""
    return (isinstance(node, ast.Assign) and isinstance(node.value, ast.Subscript)
            and isinstance(node.value.value, ast.Name)
            and node.value.value.id in ("Literal", "Union", "Optional", "Callable"))


def _points(tree: ast.Module, scope: tuple[str, ...]) -> Iterator[Point]:
    """Every mutation point, in a fixed order (so an index names the same mutant run after run)."""

    def walk(node: ast.AST, parent: ast.AST | None, in_scope: bool) -> Iterator[Point]:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            in_scope = in_scope or node.name in scope
        yield from here(node, parent, in_scope)
        for name, value in ast.iter_fields(node):
            if name in ("annotation", "returns", "decorator_list") or (name == "type_comment"):
                continue  # annotations are never evaluated (`from __future__ import annotations`)
            children = value if isinstance(value, list) else [value]
            for child in children:
                if isinstance(child, ast.AST):
                    yield from walk(child, node, in_scope)

    def here(node: ast.AST, parent: ast.AST | None, in_scope: bool) -> Iterator[Point]:
        if not in_scope:
            return
        if isinstance(node, ast.Compare):
            for i, op in enumerate(node.ops):
                if type(op) in COMPARE:
                    yield Point(node, f"compare {type(op).__name__}->{COMPARE[type(op)].__name__}",
                                lambda n, i=i: _with_op(n, i))
        elif isinstance(node, ast.BinOp) and type(node.op) in BINARY:
            yield Point(node, f"binop {type(node.op).__name__}->{BINARY[type(node.op)].__name__}",
                        lambda n: _replace(n, op=BINARY[type(n.op)]()))
        elif isinstance(node, ast.BoolOp):
            yield Point(node, f"boolop {type(node.op).__name__}->{BOOL[type(node.op)].__name__}",
                        lambda n: _replace(n, op=BOOL[type(n.op)]()))
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            yield Point(node, "drop not", lambda n: n.operand)
        elif isinstance(node, ast.Constant) and not isinstance(parent, ast.JoinedStr | ast.FormattedValue):
            value = node.value
            if isinstance(value, bool):
                yield Point(node, "flip bool", lambda n: ast.Constant(not n.value))
            elif isinstance(value, int | float) and not isinstance(value, bool):
                yield Point(node, "number+1", lambda n: ast.Constant(n.value + 1))
                if value != 0:
                    yield Point(node, "number->0", lambda n: ast.Constant(type(n.value)(0)))
        elif isinstance(node, ast.Return) and node.value is not None and not (
                isinstance(node.value, ast.Constant) and node.value.value is None):
            yield Point(node, "return None", lambda n: ast.Return(ast.Constant(None)))
        if isinstance(node, DELETABLE) and not _is_docstring(node, parent) and not _is_type_alias(node):
            yield Point(node, f"delete {type(node).__name__.lower()}", lambda n: None)

    yield from walk(tree, None, not scope)


def _with_op(node: ast.Compare, i: int) -> ast.Compare:
    ops = list(node.ops)
    ops[i] = COMPARE[type(ops[i])]()
    return _replace(node, ops=ops)


def _replace(node: ast.AST, **changes: object) -> ast.AST:
    new = copy.copy(node)
    for name, value in changes.items():
        setattr(new, name, value)
    return new


class _Swap(ast.NodeTransformer):
    """Replace one node (found by identity in a deep copy, via a path of field positions)."""

    def __init__(self, target: ast.AST, replacement: ast.AST | None) -> None:
        self.target, self.replacement = target, replacement

    def generic_visit(self, node: ast.AST) -> ast.AST:
        for name, value in ast.iter_fields(node):
            if isinstance(value, list):
                new: list[object] = []
                for item in value:
                    if item is self.target:
                        if self.replacement is None:
                            continue
                        new.append(self.replacement)
                    else:
                        new.append(self.visit(item) if isinstance(item, ast.AST) else item)
                if name in ("body", "orelse", "finalbody") and not new and value:
                    new = [ast.Pass()]  # a block must not end up empty
                setattr(node, name, new)
            elif value is self.target:
                setattr(node, name, self.replacement)
            elif isinstance(value, ast.AST):
                self.visit(value)
        return node


def mutants(source: str, scope: tuple[str, ...]) -> list[tuple[Mutant, str]]:
    """Each mutant with the module's source as mutated (unparsed from the AST)."""
    out: list[tuple[Mutant, str]] = []
    lines = source.splitlines()
    count = sum(1 for _ in _points(ast.parse(source), scope))
    for index in range(count):
        tree = ast.parse(source)  # fresh each time: a mutation must not leak into the next
        point = list(_points(tree, scope))[index]
        replacement = point.apply(point.node)  # type: ignore[operator]
        _Swap(point.node, replacement).visit(tree)
        ast.fix_missing_locations(tree)
        line = getattr(point.node, "lineno", 0)
        end_line = getattr(point.node, "end_lineno", line) or line
        before = ast.unparse(point.node)
        after = ast.unparse(replacement) if replacement is not None else "pass"
        if len(before) > 90:
            before = lines[line - 1].strip() if line else before[:90]
        out.append((Mutant(index, line, end_line, point.kind, before[:160], after[:160]), ast.unparse(tree)))
    seen: dict[tuple[str, str, str], int] = {}
    for mutant, _ in out:
        what = (mutant.kind, mutant.before, mutant.after)
        seen[what] = seen.get(what, 0) + 1
        mutant.key = " | ".join((*what, str(seen[what])))
    return out


def _previous_indexes(entries: list[dict[str, Any]], current: list[Mutant]) -> dict[int, dict[str, Any]]:
    """The last run's verdicts by the current index of the same mutant: matched by key (so an edit
    elsewhere in the module does not mismatch them), or by index for results saved without keys.
    Verdicts of mutants that no longer exist are dropped."""
    by_key = {m.key: m.index for m in current}
    out = {}
    for entry in entries:
        index = by_key.get(entry["key"]) if entry.get("key") else entry["index"]
        if index is not None and index < len(current):
            out[index] = {**entry, "index": index, "line": current[index].line, "key": current[index].key}
    return out


# --- running ----------------------------------------------------------------------------------------


def scratch_copy() -> Path:
    """The repository's code and tests in a temp dir, where mutants are written (never in the worktree)."""
    work = Path(tempfile.mkdtemp(prefix="mcp-llm-mutation-"))
    for name in ("mcp_llm", "tests", "bench"):
        shutil.copytree(ROOT / name, work / name, ignore=shutil.ignore_patterns("__pycache__", "mutation-results"))
    for name in ("pyproject.toml", "config.example.toml", "README.md", "CHANGELOG.md"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, work / name)
    return work


class _Collector:
    """A pytest plugin: the first failing test's id; in the clean run, also which test runs which line.

    The clean run traces the target module (and nothing else: other frames are not traced) in
    every thread, and notes each test's lines and duration, so a mutant runs only the tests that
    execute its lines, quickest first. Lines run at import (module constants, class bodies) belong
    to every test.
    """

    def __init__(self, path: Path, trace: str | None = None) -> None:
        self.path, self.trace = path, trace
        self.current = ""
        self.lines: dict[str, set[int]] = {}
        self.durations: dict[str, float] = {}

    def _tracer(self, frame: object, event: str, arg: object) -> object:
        if frame.f_code.co_filename != self.trace:  # type: ignore[attr-defined]
            return None
        lines = self.lines.setdefault(self.current, set())
        lines.add(frame.f_lineno)  # type: ignore[attr-defined]

        def local(frame: object, event: str, arg: object) -> object:
            if event == "line":
                lines.add(frame.f_lineno)  # type: ignore[attr-defined]
            return local

        return local

    def start(self) -> None:
        """Before pytest starts: conftest.py files import the package before any hook runs."""
        if self.trace:
            import threading

            sys.settrace(self._tracer)
            threading.settrace(self._tracer)

    def pytest_runtest_logstart(self, nodeid: str) -> None:
        self.current = nodeid
        if self.trace:  # again for each test: Python drops a tracer that raised (a test's RecursionError
            sys.settrace(self._tracer)  # reaches into it), and every later test would look as if it ran nothing

    def pytest_runtest_logfinish(self) -> None:
        self.current = ""

    def pytest_runtest_logreport(self, report: object) -> None:
        nodeid = getattr(report, "nodeid", "?")
        self.durations[nodeid] = self.durations.get(nodeid, 0.0) + float(getattr(report, "duration", 0.0))
        if getattr(report, "failed", False) and not self.path.exists():
            self.path.write_text(nodeid, encoding="utf-8")

    def pytest_unconfigure(self) -> None:
        if self.trace:
            sys.settrace(None)
            coverage = {"lines": {k: sorted(v) for k, v in self.lines.items()}, "durations": self.durations}
            (self.path.parent / ".coverage.json").write_text(json.dumps(coverage), encoding="utf-8")


def run_tests(work: Path, tests: tuple[str, ...], limit_s: float, trace: Path | None = None) -> tuple[str, float, str]:
    """Run pytest in a forked child, in `work`; → (killed | survived | timeout, seconds, first failure)."""
    marker = work / ".first-failure"
    marker.unlink(missing_ok=True)
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the child: its own process group, so a timeout kills whatever it started too
        code = 3
        try:
            os.setpgid(0, 0)
            os.chdir(work)
            sys.path.insert(0, str(work))
            os.environ["PYTHONPATH"] = str(work)
            if not os.environ.get("MUTATION_VERBOSE"):  # set it to see the tests' output
                with open(os.devnull, "w") as devnull:
                    os.dup2(devnull.fileno(), 1)
                    os.dup2(devnull.fileno(), 2)
            import pytest

            # The preloaded plugins (hypothesis, anyio) cannot have their asserts rewritten: fine.
            plugin = _Collector(marker, str(trace) if trace else None)
            plugin.start()
            code = pytest.main(["-x", "-q", "-p", "no:cacheprovider", "-W", "ignore::pytest.PytestAssertRewriteWarning",
                                "--rootdir", str(work), *dict.fromkeys(tests)], plugins=[plugin])
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            os._exit(int(code))
    deadline = started + limit_s
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return "timeout", time.monotonic() - started, ""
        time.sleep(0.05)
    seconds = time.monotonic() - started
    code = os.waitstatus_to_exitcode(status)
    failure = marker.read_text(encoding="utf-8") if marker.exists() else ""
    if code == 0:
        return "survived", seconds, ""
    if code == 1:
        return "killed", seconds, failure
    return "killed", seconds, failure or f"pytest exit {code} (collection or import error)"


def _tests_for(mutant: Mutant, coverage: dict[str, Any], full: tuple[str, ...] | None) -> tuple[str, ...]:
    """The tests that run the mutant's lines, quickest first; everything, for a module-level line or `full`."""
    if full is not None:
        return full
    span = set(range(mutant.line, mutant.end_line + 1))
    if span & set(coverage["lines"].get("", [])):  # run at import: every test depends on it
        return tuple(sorted(coverage["durations"], key=coverage["durations"].get))
    covering = [test for test, lines in coverage["lines"].items() if test and span & set(lines)]
    return tuple(sorted(covering, key=lambda t: coverage["durations"].get(t, 0.0)))


def run_module(name: str, *, recheck: bool, only: set[int] | None, factor: float,
               full: bool = False, budget_s: float = 0, unrun: bool = False,
               shard: tuple[int, int] | None = None) -> dict[str, object]:
    target = TARGETS[name]
    module = ROOT / target.path
    source = module.read_text(encoding="utf-8")
    all_mutants = mutants(source, target.scope)
    current = [m for m, _ in all_mutants]
    results_file = RESULTS / f"{name}.json"
    merge = recheck or unrun or shard is not None or only is not None  # else a fresh run replaces the file
    earlier = _saved(results_file, current) if merge else {}
    if recheck:
        survivors = {index for index, m in earlier.items() if m["status"] == "survived"}
        only = survivors if only is None else only & survivors
    if unrun:  # finish a sampled or interrupted run: only the mutants no run has reached
        missing = set(range(len(current))) - set(earlier)
        only = missing if only is None else only & missing
    if shard is not None:  # one of several runs side by side, each on its own share of the mutants
        mine = {i for i in range(len(current)) if i % shard[1] == shard[0]}
        only = mine if only is None else only & mine
    chosen = [(m, text) for m, text in all_mutants if only is None or m.index in only]
    print(f"{name}: {len(all_mutants)} mutants in {target.path}"
          + (f" (scope: {', '.join(target.scope)})" if target.scope else "")
          + f"; running {len(chosen)}", flush=True)
    done: list[Mutant] = []
    clean_s = 0.0

    def save() -> dict[str, Any]:
        """After every mutant, so an interrupted run keeps its verdicts (`--unrun` goes on from them);
        under a lock, merged with what other shards saved meanwhile."""
        RESULTS.mkdir(parents=True, exist_ok=True)
        with open(RESULTS / f".{name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            merged = _saved(results_file, current) if merge else {}
            merged.update({m.index: asdict(m) for m in done})
            results = [merged[i] for i in sorted(merged)]
            killed = sum(1 for m in results if m["status"] != "survived")
            report = {"module": target.path, "scope": list(target.scope), "tests": list(target.tests),
                      "mutants": results, "killed": killed, "total": len(results),
                      "mutants_in_module": len(all_mutants),
                      "score": round(100 * killed / len(results), 1) if results else None,
                      "clean_run_s": round(clean_s, 1), "full_tests": full, "date": time.strftime("%Y-%m-%d %H:%M")}
            scratch = results_file.with_suffix(".tmp")
            scratch.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
            scratch.replace(results_file)
        return report

    work = scratch_copy()
    try:
        mutated = work / target.path
        status, clean_s, failure = run_tests(work, target.tests, limit_s=3600, trace=mutated)
        if status != "survived":
            raise SystemExit(f"the clean run fails ({status}: {failure}); fix the tests before mutating")
        coverage = json.loads((work / ".coverage.json").read_text(encoding="utf-8"))
        print(f"  clean run (traced): {clean_s:.1f} s, {len(coverage['durations'])} tests", flush=True)
        if budget_s:  # a uniform sample when the budget runs out: not just the top of the file
            random.Random(0).shuffle(chosen)
        loop_started = time.monotonic()
        for mutant, text in chosen:
            if budget_s and time.monotonic() - loop_started > budget_s:
                print(f"  the budget ({budget_s / 60:.0f} min) is spent: stopping here", flush=True)
                break
            tests = _tests_for(mutant, coverage, target.tests if full else None)
            if not tests:  # the tracing saw no test run it: make sure, with every test of the list (a
                tests = target.tests  # RecursionError drops the tracer for the rest of that test)
            mutant.tests = len(tests)
            if os.environ.get("MUTATION_VERBOSE"):
                print("  tests:", *tests, sep="\n    ", flush=True)
            limit = factor * (sum(coverage["durations"].get(t, 1.0) for t in tests) if tests != target.tests
                              else clean_s) + 15
            mutated.write_text(text, encoding="utf-8")
            mutant.status, mutant.seconds, mutant.killed_by = run_tests(work, tests, limit)
            mutated.write_text(source, encoding="utf-8")
            done.append(mutant)
            save()
            flag = {"killed": ".", "timeout": "T", "survived": "S"}[mutant.status]
            print(f"  {flag} #{mutant.index:<3} line {mutant.line:<4} {mutant.kind:24} {mutant.before!r} -> "
                  f"{mutant.after!r}  ({mutant.tests} tests, {mutant.seconds:.1f} s)", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = save()
    results = report["mutants"]
    survivors = [m for m in results if m["status"] == "survived"]
    print(f"{name}: {report['killed']}/{len(results)} killed ({report['score']} %), {len(survivors)} survived"
          + (f"; {len(results)} of the module's {len(all_mutants)} mutants run" if len(results) < len(all_mutants)
             else ""), flush=True)
    for m in survivors:
        print(f"  survived #{m['index']} line {m['line']}: {m['kind']}: {m['before']!r} -> {m['after']!r}")
    return report


def _saved(results_file: Path, current: list[Mutant]) -> dict[int, dict[str, Any]]:
    if not results_file.exists():
        return {}
    return _previous_indexes(json.loads(results_file.read_text(encoding="utf-8"))["mutants"], current)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", help=f"of: {', '.join(TARGETS)} (default: all, one at a time)")
    parser.add_argument("--recheck", action="store_true", help="rerun only the last run's survivors")
    parser.add_argument("--unrun", action="store_true",
                        help="run only the mutants the last run did not reach (after a --budget-min sample)")
    parser.add_argument("--only", help="comma-separated mutant indexes")
    parser.add_argument("--shard", help="K/N: run only the mutants whose index is K modulo N, merging into the "
                        "same results file (start N runs side by side, K = 0 … N-1)")
    parser.add_argument("--full", action="store_true",
                        help="run every test of the module's list per mutant, not only those that run its line "
                        "(catches what a cache hides from the line tracing; slow: use with --recheck)")
    parser.add_argument("--timeout-factor", type=float, default=2.0, help="times the clean run, per mutant")
    parser.add_argument("--budget-min", type=float, default=0,
                        help="stop a module after this many minutes; the mutants are then run in a seeded random "
                        "order, so what ran is a uniform sample (default: no limit)")
    parser.add_argument("--list", action="store_true", help="show the modules, their tests and mutant counts")
    args = parser.parse_args(argv)
    if args.list:
        for name, target in TARGETS.items():
            count = len(list(_points(ast.parse((ROOT / target.path).read_text()), target.scope)))
            print(f"{name:16} {target.path:28} {count:4} mutants  tests: {' '.join(target.tests)}")
        return 0
    with contextlib.suppress(OSError):
        os.nice(19)
    sys.dont_write_bytecode = True  # a stale .pyc of a same-sized mutant would hide the next one
    os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
    for module in PRELOAD:
        with contextlib.suppress(ImportError):
            __import__(module)
    only = {int(i) for i in args.only.split(",")} if args.only else None
    shard = None
    if args.shard:
        k, _, n = args.shard.partition("/")
        if not (k.isdigit() and n.isdigit() and 0 <= int(k) < int(n)):
            parser.error(f"--shard takes K/N with 0 <= K < N, not {args.shard!r}")
        shard = (int(k), int(n))
    for name in args.modules or list(TARGETS):
        if name not in TARGETS:
            parser.error(f"unknown module {name!r}; one of {', '.join(TARGETS)}")
        run_module(name, recheck=args.recheck, only=only, factor=args.timeout_factor, full=args.full,
                   budget_s=args.budget_min * 60, unrun=args.unrun, shard=shard)
    return 0


if __name__ == "__main__":
    sys.exit(main())
