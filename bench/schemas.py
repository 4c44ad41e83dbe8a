"""Real-world schemas, exactly as JSON Schema means them: the gate, the reply reader and every compiler.

Two public corpora, fetched outside the repository (never committed; their paths are arguments):

```sh
python bench/schemas.py --bench /work/ext/guidance-ai+jsonschemabench/data \\
    --suite /work/ext/json-schema-org+JSON-Schema-Test-Suite/tests --jobs 2 --json /tmp/schemas.json
python bench/schemas.py --bench DIR --limit 50                  # quick: 50 schemas per split, no suite
python bench/schemas.py --bench DIR --splits Github_easy,Kubernetes --tighter-schemas 50
python bench/schemas.py --suite DIR                             # only the JSON Schema Test Suite
```

It uses only the schema package's stable entry points: `parse_schema_argument` (the gate),
`parse_and_validate` (the reply reader) and `compile_for` (what each provider is sent).

**1. JSONSchemaBench** (guidance-ai/jsonschemabench, `data/<Split>/*.json`, one schema a file):

- *Valid for its own dialect*, by two judges: `jsonschema`'s `validator_for(s).check_schema(s)`
  (Python `re` for the `regex` format) and `jsonschema_rs.meta.is_valid(s)` (an ECMA 262 regex
  engine; not asked about a `$schema` it does not know, since it would fetch it over the network).
  Both counts are printed, and the verdict used is "valid by either ECMA-correct judge": valid if
  jsonschema_rs says so, or if jsonschema says so and jsonschema_rs's only objection is not about
  a regex. So where they disagree on a regex (`\\p{L}`, `(?<name>…)`, Python-only syntax)
  jsonschema_rs decides; elsewhere either judge's "valid" counts. Without jsonschema_rs (or for a
  dialect it does not know, draft 3) jsonschema's verdict is used.
- *The gate*: accepted, or refused grouped by a short reason class normalised from the
  `SchemaError` message ("size limit", "nested repeat pattern", "not a valid JSON Schema", …).
  Anything else the gate raises is a crash, counted and listed with the file. Gate time
  (`time.perf_counter` around the call) p50/p99/max, apart for schemas whose canonical JSON
  (sorted keys, no spaces) is at most 1,024 characters (the server checks those on the event
  loop) and larger ones (checked in a worker thread). A schema repeated in the corpus hits the
  gate's own cache of checked schemas, as it would in the server.
- *Per provider* (ollama, gemini, anthropic, openai), for each accepted schema: `compile_for`
  exceptions (count, type, first files), compile time p50/p99/max, the sent/original size ratio
  of the compact JSON texts (p50, max), and whether what is sent passes the gate itself.
- *Tighter instances*: `--tighter-schemas` accepted schemas (a seeded sample over all splits)
  get up to `--tighter-samples` instances drawn from the ORIGINAL schema by hypothesis-jsonschema
  (`@given(from_schema(s))`, generate phase only, no database, no deadline, no health checks,
  seeded per file); a schema it cannot handle is "not sampled". Only instances the reply reader
  accepts against the original are kept. Each is then validated, for each provider, against
  what is sent (as `{wrapped_in: x}` when the root was wrapped) with
  `jsonschema.Draft202012Validator(sent, format_checker=None)`; one refused is "tighter" (shown
  with jsonschema's `best_match` error). Anthropic closes objects on purpose, so it also gets
  "tighter beyond closing": the tighter instances with no object key (at any depth) outside the
  property names the original schema mentions (`properties` keys, `required` entries,
  `dependentRequired`/`dependencies` names and lists).

**2. The JSON Schema Test Suite** (`tests/<draft>/`, drafts 2020-12, 2019-09, 7, 6, 4, 3): each
case's schema (with the draft's `$schema` added at the root when it has none, the suite's own
convention) goes through the gate; our verdict on a test is "the gate accepted AND
`parse_and_validate(json.dumps(data), schema)` returned a value equal to `data` (bool apart from
numbers)", compared with the test's `valid`. Groups: required (`<draft>/*.json`), optional
(`optional/*.json`) and format (`optional/format/*.json`). Excluded, and listed: `refRemote.json`,
every case whose schema refers to an http(s) URL not defined inside the case (a remote
reference, meta-schemas included; no network here), and in `format.json` the tests that expect
a format to be annotation-only ("… is only an annotation by default": we assert formats on
purpose). Every schema the gate accepts is also compiled for every provider, and exceptions
are counted.

Work runs in `--jobs` worker processes (spawned, so each imports mcp_llm afresh), one schema
(or suite case) a task, with a time limit per task (`--timeout`, 60 s): a worker over it is
killed and replaced, and the schema is counted and listed as a timeout, with the stage it was
in. Timings come from workers sharing the machine: read them as orders of magnitude.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import multiprocessing
import os
import random
import re
import sys
import time
import traceback
import warnings
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any
from urllib.parse import urldefrag, urljoin, urlsplit

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

PROVIDERS = ("ollama", "gemini", "anthropic", "openai")
OFF_LOOP_CHARS = 1_024  # the server checks larger schemas in a worker thread
EXAMPLES = 3  # files listed per reason, exception or tighter provider
SUITE_DRAFTS = {
    "draft2020-12": "https://json-schema.org/draft/2020-12/schema",
    "draft2019-09": "https://json-schema.org/draft/2019-09/schema",
    "draft7": "http://json-schema.org/draft-07/schema#",
    "draft6": "http://json-schema.org/draft-06/schema#",
    "draft4": "http://json-schema.org/draft-04/schema#",
    "draft3": "http://json-schema.org/draft-03/schema#",
}
RS_DIALECTS = {"json-schema.org/draft/2020-12/schema", "json-schema.org/draft/2019-09/schema",
               "json-schema.org/draft-07/schema", "json-schema.org/draft-06/schema",
               "json-schema.org/draft-04/schema"}  # what jsonschema_rs knows without fetching
KNOWN_DIALECTS = RS_DIALECTS | {"json-schema.org/draft-03/schema"}


def _dialect_key(uri: str) -> str:
    """A `$schema` URI without scheme and trailing '#': the key of RS_DIALECTS and KNOWN_DIALECTS."""
    return re.sub(r"^https?://", "", uri.strip()).rstrip("#")


# ---------------------------------------------------------------------------------------------
# The gate's messages, as short reason classes (wording may change: unknown ones keep their gist)

_REASONS: list[tuple[str, str]] = [
    (r"byte limit|bytes, over", "size limit"),
    (r"nested more than|too deeply nested|too deep", "depth limit"),
    (r"more than [\d,]+ references", "reference count limit"),
    (r"points nowhere", "reference points nowhere"),
    (r"points at a", "reference to a non-schema"),
    (r"refers back to itself", "reference cycle"),
    (r"subschemas|multiply", "reference expansion limit"),
    (r"chains .* references or combinators", "reference chain limit"),
    (r"repeats a group that itself repeats|repeat inside a repeat", "nested repeat pattern"),
    (r"not a valid JSON Schema", "not a valid JSON Schema"),
    (r"\$schema .* not a JSON Schema dialect|dialect", "unknown dialect"),
    (r"must be a JSON object", "not an object"),
    (r"`false`|boolean", "false schema"),
    (r"JSON cannot express", "non-JSON value"),
    (r"not valid JSON", "not valid JSON"),
    (r"pattern", "pattern"),
    (r"reference|\$ref", "reference"),
]


def reason_class(message: str) -> str:
    for pattern, reason in _REASONS:
        if re.search(pattern, message):
            return reason
    gist = re.sub(r"\d[\d,.]*", "N", re.sub(r"'[^']*'|\"[^\"]*\"", "…", message))
    return "other: " + gist[:60]


# ---------------------------------------------------------------------------------------------
# Worker side: everything below runs in a spawned process, and imports mcp_llm there

_CONN: Connection | None = None


def _stage(name: str, partial: dict[str, Any]) -> None:
    """Tell the parent what is about to run, with what is known so far (kept if the worker dies)."""
    if _CONN is not None:
        _CONN.send(("stage", name, partial))


def _clip(value: Any, limit: int = 200) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=repr)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _clip_middle(text: str, limit: int = 200) -> str:
    """Head and tail: a validator's message is often "<the whole instance> is not …"."""
    return text if len(text) <= limit else text[: limit // 2 - 1] + " … " + text[-(limit // 2 - 2):]


def without_regexes(schema: Any) -> Any:
    """`schema` with every `pattern` string emptied and every `patternProperties` key made plain:
    a judge that accepts this but not `schema` objects to a regex, and to nothing else."""
    if isinstance(schema, list):
        return [without_regexes(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    plain = {key: without_regexes(value) for key, value in schema.items()}  # (`pattern` as a property name: a dict)
    if isinstance(plain.get("pattern"), str):
        plain["pattern"] = ""
    if isinstance(plain.get("patternProperties"), dict):
        plain["patternProperties"] = {f"^p{i}$": value for i, value in enumerate(plain["patternProperties"].values())}
    return plain


def _compact(value: Any, *, sort: bool = False) -> str:
    return json.dumps(value, sort_keys=sort, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _gate(schema: Any) -> tuple[Any, str, str]:
    """(checked schema or None, "ok" | reason class | "crash: Type", message)."""
    from mcp_llm.errors import SchemaError
    from mcp_llm.schema import parse_schema_argument

    try:
        checked, _ = parse_schema_argument(schema)
    except SchemaError as exc:
        return None, reason_class(exc.message), exc.message
    except Exception as exc:
        return None, f"crash: {type(exc).__name__}", _clip(f"{exc}", 300)
    return checked, "ok", ""


def regexes(schema: Any) -> Iterator[str]:
    """Every `pattern` string and `patternProperties` key in `schema`."""
    if isinstance(schema, list):
        for item in schema:
            yield from regexes(item)
    elif isinstance(schema, dict):
        if isinstance(schema.get("pattern"), str):
            yield schema["pattern"]
        if isinstance(schema.get("patternProperties"), dict):
            yield from schema["patternProperties"]
        for value in schema.values():
            yield from regexes(value)


def _first_refused_regex(schema: Any, judge: Callable[..., dict[str, Any] | None]) -> str:
    """The first regex of `schema` that `judge` refuses on its own (in the schema's dialect)."""
    dialect = {"$schema": schema["$schema"]} if isinstance(schema, dict) and "$schema" in schema else {}
    for pattern in regexes(schema):
        verdict = judge({**dialect, "pattern": pattern}, attribute=False)
        if verdict is not None and not verdict["valid"]:
            return pattern
    return ""


def _judge_python(schema: Any, *, attribute: bool = True) -> dict[str, Any]:
    from jsonschema.exceptions import SchemaError as MetaSchemaError
    from jsonschema.validators import validator_for

    try:
        validator_for(schema).check_schema(schema)
    except MetaSchemaError as exc:
        regex = attribute and _judge_python(without_regexes(schema), attribute=False)["valid"]
        message = exc.message
        if regex:
            refused = _clip(json.dumps(_first_refused_regex(schema, _judge_python)), 150)
            message = f"refuses the regex {refused}: {message}"
        return {"valid": False, "regex": regex, "message": _clip_middle(message, 300)}
    except Exception as exc:
        return {"valid": False, "regex": False, "message": f"judge crashed: {type(exc).__name__}"}
    return {"valid": True, "regex": False, "message": ""}


def _judge_rs(schema: Any, *, attribute: bool = True) -> dict[str, Any] | None:
    try:
        import jsonschema_rs
    except ImportError:
        return None
    dialect = schema.get("$schema") if isinstance(schema, dict) else None
    if dialect is not None and (not isinstance(dialect, str) or _dialect_key(dialect) not in RS_DIALECTS):
        return None  # jsonschema_rs would try to fetch it
    try:
        jsonschema_rs.meta.validate(schema)
    except jsonschema_rs.ValidationError as exc:
        plain = _judge_rs(without_regexes(schema), attribute=False) if attribute else None
        regex = bool(plain and plain["valid"])
        message = str(getattr(exc, "message", exc))
        if regex:
            refused = _clip(json.dumps(_first_refused_regex(schema, _judge_rs)), 150)
            message = f"refuses the regex {refused}: {message}"
        return {"valid": False, "regex": regex, "message": _clip_middle(message, 300)}
    except Exception as exc:
        return {"valid": False, "regex": False, "message": f"judge crashed: {type(exc).__name__}: {_clip(str(exc))}"}
    return {"valid": True, "regex": False, "message": ""}


def combined_validity(python: dict[str, Any] | None, rust: dict[str, Any] | None) -> bool:
    """Valid by either ECMA-correct judge: on a regex jsonschema_rs decides (see the docstring)."""
    if rust is None:
        return bool(python and python["valid"])
    return rust["valid"] or bool(python and python["valid"] and not rust["regex"])


def bench_one(path: str, label: str) -> dict[str, Any]:
    """One JSONSchemaBench schema: gate, compilers, the gate on what is sent, then the two judges."""
    from mcp_llm.schema import compile_for

    record: dict[str, Any] = {"file": label}
    try:
        schema = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        record["load_error"] = f"{type(exc).__name__}: {_clip(str(exc))}"
        return record
    try:
        record["chars"] = len(_compact(schema, sort=True))
        original_len = len(_compact(schema))
    except (TypeError, ValueError, RecursionError):
        record["chars"], original_len = None, None
    _stage("gate", record)
    start = time.perf_counter()
    checked, gate, message = _gate(schema)
    record["gate_ms"] = (time.perf_counter() - start) * 1000
    record["gate"], record["gate_message"] = gate, _clip(message, 300)
    record["providers"] = {}
    if checked is not None:
        for provider in PROVIDERS:
            entry: dict[str, Any] = {}
            record["providers"][provider] = entry
            _stage(f"compile {provider}", record)
            start = time.perf_counter()
            try:
                compiled = compile_for(provider, checked)
            except Exception as exc:
                entry["ms"] = (time.perf_counter() - start) * 1000
                entry["error"] = f"{type(exc).__name__}: {_clip(str(exc), 150)}"
                continue
            entry["ms"] = (time.perf_counter() - start) * 1000
            entry["wrapped"] = compiled.wrapped_in is not None
            entry["rewrites"] = len(compiled.rewrites)
            try:
                entry["ratio"] = len(_compact(compiled.schema)) / original_len if original_len else None
            except (TypeError, ValueError, RecursionError) as exc:
                entry["ratio"], entry["sent_gate"] = None, f"crash: {type(exc).__name__}"
                continue
            _stage(f"gate on what {provider} is sent", record)
            _, entry["sent_gate"], sent_message = _gate(compiled.schema)
            entry["sent_gate_message"] = _clip(sent_message, 300)
    _stage("jsonschema judge", record)
    record["python"] = _judge_python(schema)
    _stage("jsonschema_rs judge", record)
    record["rust"] = _judge_rs(schema)
    record["valid"] = combined_validity(record["python"], record["rust"])
    return record


def property_names(schema: Any) -> set[str]:
    """Every property name the schema mentions: properties keys, required, dependentRequired, dependencies."""
    names: set[str] = set()
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        if isinstance(node.get("properties"), dict):
            names.update(node["properties"])
        if isinstance(node.get("required"), list):
            names.update(name for name in node["required"] if isinstance(name, str))
        for key in ("dependentRequired", "dependencies"):
            if isinstance(node.get(key), dict):
                names.update(node[key])
                for value in node[key].values():
                    if isinstance(value, list):
                        names.update(name for name in value if isinstance(name, str))
        stack.extend(node.values())
    return names


def _keys_outside(value: Any, names: set[str]) -> bool:
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if any(key not in names for key in node):
                return True
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False


def _draw(schema: dict[str, Any], samples: int, seed: int) -> tuple[list[Any], str]:
    """Up to `samples` distinct instances of `schema` from hypothesis-jsonschema, and why none if none."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hypothesis_seed
    from hypothesis_jsonschema import from_schema

    found: dict[str, Any] = {}
    try:
        strategy = from_schema(schema)
    except Exception as exc:
        return [], f"{type(exc).__name__}: {_clip(str(exc), 120)}"

    @hypothesis_seed(seed)
    @settings(max_examples=samples, database=None, deadline=None, suppress_health_check=list(HealthCheck),
              phases=[Phase.generate], print_blob=False)
    @given(strategy)
    def collect(instance: Any) -> None:
        with contextlib.suppress(TypeError, ValueError):
            found.setdefault(_compact(instance, sort=True), instance)

    problem = ""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            collect()
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [""])[0]
            problem = f"{type(exc).__name__}: {_clip(first, 120)}"
    return list(found.values())[:samples], problem


def tighter_one(path: str, label: str, samples: int, seed: int) -> dict[str, Any]:
    """Instances of the original schema that what a provider is sent refuses."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import best_match

    from mcp_llm.errors import OutputError
    from mcp_llm.schema import compile_for, parse_and_validate

    record: dict[str, Any] = {"file": label, "providers": {}}
    schema = json.loads(Path(path).read_text(encoding="utf-8"))
    checked, gate, _ = _gate(schema)
    if checked is None:
        record["not_sampled"] = f"gate: {gate}"
        return record
    _stage("hypothesis-jsonschema", record)
    drawn, problem = _draw(checked, samples, (seed * 1_000_003 + zlib.crc32(label.encode())) % 2**32)
    record["drawn"] = len(drawn)
    if not drawn:
        record["not_sampled"] = problem or "no instance drawn"
        return record
    _stage("reply reader", record)
    kept: list[Any] = []
    for instance in drawn:
        with contextlib.suppress(OutputError):
            parse_and_validate(json.dumps(instance), checked)
            kept.append(instance)
    record["kept"] = len(kept)
    names = property_names(checked)
    for provider in PROVIDERS:
        entry: dict[str, Any] = {"checked": 0, "tighter": 0, "beyond_closing": 0, "examples": [], "beyond": []}
        record["providers"][provider] = entry
        _stage(f"tighter {provider}", record)
        try:
            compiled = compile_for(provider, checked)
            validator = Draft202012Validator(compiled.schema, format_checker=None)
        except Exception as exc:
            entry["error"] = f"{type(exc).__name__}: {_clip(str(exc), 120)}"
            continue
        for instance in kept:
            sent_instance = {compiled.wrapped_in: instance} if compiled.wrapped_in else instance
            entry["checked"] += 1
            try:
                error = best_match(validator.iter_errors(sent_instance))
            except Exception as exc:
                entry.setdefault("check_errors", []).append(f"{type(exc).__name__}: {_clip(str(exc), 120)}")
                continue
            if error is None:
                continue
            entry["tighter"] += 1
            beyond = not _keys_outside(instance, names)
            entry["beyond_closing"] += beyond
            example = {"instance": _clip(instance), "error": _clip(error.message, 200), "beyond_closing": beyond}
            for kept_examples in (entry["examples"], *([entry["beyond"]] if beyond else [])):
                if len(kept_examples) < EXAMPLES:
                    kept_examples.append(example)
    return record


def same_value(a: Any, b: Any) -> bool:
    """JSON equality: bool is not a number, 1 == 1.0, objects by keys, arrays in order."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_value(a[key], b[key]) for key in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def suite_case(schema: Any, tests: list[dict[str, Any]]) -> dict[str, Any]:
    """One test-suite case: the gate, then the reply reader on each test's data; compilers on the side."""
    from mcp_llm.errors import OutputError
    from mcp_llm.schema import compile_for, parse_and_validate

    record: dict[str, Any] = {"compile_errors": {}}
    _stage("gate", record)
    checked, gate, message = _gate(schema)
    record["gate"], record["gate_message"] = gate, _clip(message, 200)
    verdicts: list[dict[str, Any]] = []
    record["tests"] = verdicts
    for test in tests:
        _stage("reply reader", record)
        ours, why = False, f"gate: {gate}"
        if checked is not None:
            try:
                value = parse_and_validate(json.dumps(test["data"]), checked)
            except OutputError as exc:
                why = "reader: " + _clip("; ".join(exc.errors[:1]) or str(exc), 160)
            except Exception as exc:
                why = f"reader crash: {type(exc).__name__}: {_clip(str(exc), 120)}"
            else:
                ours = same_value(value, test["data"])
                why = "" if ours else "reader: a different value: " + _clip(value, 80)
        verdicts.append({"ours": ours, "why": why})
    if checked is not None:
        for provider in PROVIDERS:
            _stage(f"compile {provider}", record)
            try:
                compile_for(provider, checked)
            except Exception as exc:
                record["compile_errors"][provider] = f"{type(exc).__name__}: {_clip(str(exc), 120)}"
    return record


TASKS: dict[str, Callable[..., dict[str, Any]]] = {"bench": bench_one, "tighter": tighter_one, "suite": suite_case}


def _warm_up() -> None:
    """Import what the first schema would otherwise pay for (jsonschema, its format checkers, the compilers)."""
    from mcp_llm.schema import compile_for, parse_and_validate, parse_schema_argument

    schema = {"type": "object", "properties": {"a": {"type": "string", "format": "date-time", "pattern": "^x"}}}
    checked, _ = parse_schema_argument(schema)
    for provider in PROVIDERS:
        compile_for(provider, checked)
    with contextlib.suppress(Exception):
        parse_and_validate('{"a": "x"}', checked)
    _judge_python(schema)
    _judge_rs(schema)


def _worker(conn: Connection) -> None:
    global _CONN
    _CONN = conn
    warnings.simplefilter("ignore")
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (the worker's own stdout, for its whole life)
    _warm_up()
    conn.send(("ready", None, None))
    while True:
        task = conn.recv()
        if task is None:
            return
        kind, args = task
        try:
            result = TASKS[kind](*args)
        except Exception as exc:
            result = {"worker_error": f"{type(exc).__name__}: {_clip(str(exc), 200)}",
                      "traceback": traceback.format_exc(limit=-3)}
        conn.send(("done", None, result))


# ---------------------------------------------------------------------------------------------
# Parent side: a pool with a time limit per task


class _Slot:
    def __init__(self, context: Any) -> None:
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_worker, args=(child,), daemon=True)
        self.process.start()
        child.close()
        self.ready = False
        self.task: int | None = None
        self.started = 0.0
        self.stage = ""
        self.partial: dict[str, Any] = {}

    def stop(self, *, kill: bool = False) -> None:
        if kill:
            self.process.kill()
        else:
            with contextlib.suppress(OSError, BrokenPipeError):
                self.conn.send(None)
        self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()


class Pool:
    """`jobs` spawned workers; a task over `timeout` s has its worker killed and replaced."""

    def __init__(self, jobs: int, timeout: float) -> None:
        self.context = multiprocessing.get_context("spawn")
        self.timeout = timeout
        self.slots = [_Slot(self.context) for _ in range(max(1, jobs))]

    def run(self, kind: str, tasks: Sequence[tuple[Any, ...]], label: str) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = [{} for _ in tasks]
        queue: Iterator[int] = iter(range(len(tasks)))
        done, last_note, began = 0, time.monotonic(), time.monotonic()

        def feed(slot: _Slot) -> None:
            index = next(queue, None)
            slot.task, slot.stage, slot.partial = index, "", {}
            if index is not None:
                slot.started = time.monotonic()
                slot.conn.send((kind, tasks[index]))

        for slot in self.slots:
            if slot.ready:
                feed(slot)
        while done < len(tasks):
            now = time.monotonic()
            busy = [slot for slot in self.slots if slot.task is not None]
            deadline = min((slot.started + self.timeout for slot in busy), default=now + 1)
            readable = wait([slot.conn for slot in self.slots], timeout=max(0.0, deadline - now) + 0.01)
            for slot in list(self.slots):
                if slot.conn in readable:
                    try:
                        what, stage, payload = slot.conn.recv()
                    except (EOFError, OSError):  # the worker died (a stack overflow in native code, say)
                        done += self._replace(slot, results, f"worker died (exit code {slot.process.exitcode})")
                        continue
                    if what == "ready":
                        slot.ready = True
                        feed(slot)
                    elif what == "stage":
                        slot.stage, slot.partial = stage, payload
                    elif slot.task is not None:
                        results[slot.task] = payload
                        done += 1
                        feed(slot)
            for slot in list(self.slots):  # even a worker still sending stage messages has a time limit
                if slot.task is not None and time.monotonic() - slot.started > self.timeout:
                    done += self._replace(slot, results, f"timeout after {self.timeout:g} s")
            if time.monotonic() - last_note > 15:
                last_note = time.monotonic()
                print(f"  {label}: {done:,}/{len(tasks):,} in {last_note - began:.0f} s", file=sys.stderr, flush=True)
        return results

    def _replace(self, slot: _Slot, results: list[dict[str, Any]], problem: str) -> int:
        """Kill `slot`'s worker, record its task as failed with what was known, start a new worker."""
        index, stage, partial = slot.task, slot.stage, slot.partial
        slot.stop(kill=True)
        position = self.slots.index(slot)
        self.slots[position] = _Slot(self.context)
        if index is None:
            return 0
        results[index] = {**partial, "failed": f"{problem} in stage {stage or 'start'!r}"}
        return 1

    def close(self) -> None:
        for slot in self.slots:
            slot.stop()


# ---------------------------------------------------------------------------------------------
# Figures and tables


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (NaN for no values)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return "-" if math.isnan(value) else f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
        return f"{value:,}" if isinstance(value, int) else str(value)

    cells = [[cell(value) for value in row] for row in rows]
    widths = [max(len(str(header)), *(len(row[i]) for row in cells)) for i, header in enumerate(headers)]
    align = [">" if any(isinstance(row[i], int | float) for row in rows) else "<" for i in range(len(headers))]
    lines = ["  ".join(f"{header:{align[i]}{widths[i]}}" for i, header in enumerate(headers))]
    lines.append("  ".join("-" * width for width in widths))
    lines += ["  ".join(f"{row[i]:{align[i]}{widths[i]}}" for i in range(len(headers))) for row in cells]
    return "\n".join(lines)


def _timings(values: Sequence[float]) -> list[float]:
    return [percentile(values, 0.5), percentile(values, 0.99), max(values) if values else math.nan]


def bench_files(root: Path, splits: list[str] | None, limit: int | None) -> list[tuple[str, Path]]:
    chosen = splits or sorted(entry.name for entry in root.iterdir() if entry.is_dir())
    files: list[tuple[str, Path]] = []
    for split in chosen:
        paths = sorted((root / split).glob("*.json"))
        if not paths:
            raise SystemExit(f"no *.json under {root / split}")
        files += [(split, path) for path in paths[:limit]]
    return files


def report_bench(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Print the bench tables; return the summary figures."""
    by_split: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        by_split[record["file"].split("/")[0]].append(record)
    rows, summary = [], {}
    for split, group in [*sorted(by_split.items()), ("TOTAL", records)]:
        accepted = [r for r in group if r.get("gate") == "ok"]
        figures = {
            "schemas": len(group),
            "valid_jsonschema": sum(bool(r.get("python", {}).get("valid")) for r in group),
            "valid_jsonschema_rs": sum(bool((r.get("rust") or {}).get("valid")) for r in group),
            "rs_not_asked": sum("python" in r and r.get("rust") is None for r in group),
            "valid": sum(bool(r.get("valid")) for r in group),
            "accepted": len(accepted),
            "refused": sum(r.get("gate") not in (None, "ok") and not r["gate"].startswith("crash") for r in group),
            "gate_crash": sum(str(r.get("gate", "")).startswith("crash") for r in group),
            "refused_valid": sum(r.get("gate") not in (None, "ok") and bool(r.get("valid")) for r in group),
            "accepted_invalid": sum(r.get("gate") == "ok" and "valid" in r and not r["valid"] for r in group),
            "failed": sum("failed" in r or "worker_error" in r or "load_error" in r for r in group),
        }
        summary[split] = figures
        rows.append([split, *figures.values()])
    print(table(["split", "schemas", "valid(js)", "valid(rs)", "rs n/a", "valid", "accepted", "refused", "crash",
                 "refused valid", "accepted invalid", "timeout/died"], rows))
    print("valid(js): jsonschema check_schema; valid(rs): jsonschema_rs.meta (rs n/a: a $schema it does not know);"
          "\nvalid: by either ECMA-correct judge (jsonschema_rs decides on regexes).")
    disagree = Counter()
    for record in records:
        python, rust = record.get("python"), record.get("rust")
        if python and rust and python["valid"] != rust["valid"]:
            side = "jsonschema only" if python["valid"] else "jsonschema_rs only"
            about = "regex" if (rust["regex"] if python["valid"] else python["regex"]) else "other"
            disagree[f"valid by {side} ({about} objection)"] += 1
    for what, count in sorted(disagree.items()):
        print(f"  judges disagree: {count:,} {what}")
    for record in records:
        if record.get("gate") == "ok" and "valid" in record and not record["valid"]:
            judge = record["rust"] if record.get("rust") and not record["rust"]["valid"] else record["python"]
            print(f"  accepted though invalid: {record['file']}: {judge['message']}")

    reasons: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        if record.get("gate") not in (None, "ok"):
            reasons[record["gate"]].append(record)
    print("\nRefused by the gate, by reason:")
    print(table(["reason", "schemas", "of them valid", "first files"],
                [[reason, len(group), sum(bool(r.get("valid")) for r in group),
                  ", ".join(r["file"] for r in group[:EXAMPLES])]
                 for reason, group in sorted(reasons.items(), key=lambda item: -len(item[1]))] or [["-", 0, 0, ""]]))
    crashes = [r for r in records if str(r.get("gate", "")).startswith("crash")]
    for record in crashes:
        print(f"  GATE CRASH {record['file']}: {record['gate']}: {record['gate_message']}")
    for record in records:
        if "failed" in record or "worker_error" in record or "load_error" in record:
            print(f"  NOT MEASURED {record['file']}: "
                  f"{record.get('failed') or record.get('worker_error') or record.get('load_error')}")

    print("\nPer provider (schemas the gate accepted):")
    rows = []
    provider_summary: dict[str, Any] = {}
    for provider in PROVIDERS:
        entries = [(r["file"], r["providers"][provider]) for r in records if provider in r.get("providers", {})]
        failed = {r["file"]: r.get("failed", "not finished") for r in records}
        errors = [(file, e.get("error") or f"NotFinished: {failed[file]}") for file, e in entries
                  if "error" in e or "ms" not in e]
        compiled = [e for _, e in entries if "error" not in e and "ms" in e]
        ratios = [e["ratio"] for e in compiled if e.get("ratio") is not None]
        sent_refused = [(file, e["sent_gate"], e.get("sent_gate_message", "")) for file, e in entries
                        if e.get("sent_gate") not in (None, "ok")]
        ms = [e["ms"] for _, e in entries if "ms" in e]
        provider_summary[provider] = {
            "compiled": len(compiled), "exceptions": len(errors), "ms_p50_p99_max": _timings(ms),
            "ratio_p50": percentile(ratios, 0.5), "ratio_max": max(ratios, default=math.nan),
            "wrapped": sum(bool(e.get("wrapped")) for e in compiled), "sent_refused": len(sent_refused),
            "exception_files": errors, "sent_refused_files": sent_refused,
        }
        rows.append([provider, len(entries), len(errors), *_timings(ms), percentile(ratios, 0.5),
                     max(ratios, default=math.nan), provider_summary[provider]["wrapped"], len(sent_refused)])
    print(table(["provider", "schemas", "exceptions", "ms p50", "ms p99", "ms max", "size ratio p50", "ratio max",
                 "wrapped", "sent refused by gate"], rows))
    for provider in PROVIDERS:
        by_type: dict[str, list[str]] = defaultdict(list)
        for file, error in provider_summary[provider]["exception_files"]:
            by_type[error.split(":")[0]].append(file)
        for kind, files in by_type.items():
            print(f"  {provider} raises {kind} on {len(files):,}: {', '.join(files[:EXAMPLES])}"
                  + (" …" if len(files) > EXAMPLES else ""))
        by_reason: dict[str, list[str]] = defaultdict(list)
        for file, reason, _ in provider_summary[provider]["sent_refused_files"]:
            by_reason[reason].append(file)
        for reason, files in by_reason.items():
            print(f"  what {provider} is sent is refused by the gate ({reason}) for {len(files):,}: "
                  f"{', '.join(files[:EXAMPLES])}" + (" …" if len(files) > EXAMPLES else ""))

    print("\nGate time (ms), all gated schemas:")
    small = [r["gate_ms"] for r in records if "gate_ms" in r and r.get("chars") is not None
             and r["chars"] <= OFF_LOOP_CHARS]
    large = [r["gate_ms"] for r in records if "gate_ms" in r
             and (r.get("chars") is None or r["chars"] > OFF_LOOP_CHARS)]
    print(table(["canonical JSON", "schemas", "p50", "p99", "max"],
                [[f"<= {OFF_LOOP_CHARS:,} chars (event loop)", len(small), *_timings(small)],
                 [f"> {OFF_LOOP_CHARS:,} chars (worker thread)", len(large), *_timings(large)]]))
    slowest = sorted((r for r in records if "gate_ms" in r), key=lambda r: -r["gate_ms"])[:EXAMPLES]
    print("  slowest: " + ", ".join(f"{r['file']} ({r['gate_ms']:,.0f} ms, {r.get('chars') or 0:,} chars)"
                                    for r in slowest))
    return {"splits": summary, "reasons": {k: len(v) for k, v in reasons.items()}, "providers": provider_summary,
            "gate_ms": {"small": _timings(small), "large": _timings(large), "small_n": len(small),
                        "large_n": len(large)}}


def report_tighter(records: list[dict[str, Any]], samples: int) -> dict[str, Any]:
    sampled = [r for r in records if r.get("kept") is not None]
    not_sampled = [r for r in records if r.get("kept") is None]
    print(f"\nTighter instances: {len(records):,} accepted schemas picked, {len(sampled):,} sampled "
          f"(up to {samples} instances each: {sum(r['drawn'] for r in sampled):,} drawn, "
          f"{sum(r['kept'] for r in sampled):,} accepted by the reply reader), {len(not_sampled):,} not sampled.")
    why = Counter()
    for record in not_sampled:
        text = record.get("not_sampled") or record.get("failed") or record.get("worker_error") or "?"
        why[re.sub(r"\d[\d,.]*", "N", text.split(":")[0] if "timeout" not in text else text)[:80]] += 1
    for text, count in why.most_common():
        print(f"  not sampled: {count:,} {text}")
    rows, summary = [], {}
    for provider in PROVIDERS:
        entries = [(r["file"], r["providers"][provider]) for r in sampled if provider in r.get("providers", {})]
        figures = {
            "schemas": sum(e["checked"] > 0 for _, e in entries),
            "instances": sum(e["checked"] for _, e in entries),
            "tighter_instances": sum(e["tighter"] for _, e in entries),
            "tighter_schemas": sum(e["tighter"] > 0 for _, e in entries),
            "beyond_closing_instances": sum(e["beyond_closing"] for _, e in entries),
            "beyond_closing_schemas": sum(e["beyond_closing"] > 0 for _, e in entries),
            "compile_errors": sum("error" in e for _, e in entries),
            "check_errors": sum(len(e.get("check_errors", [])) for _, e in entries),
        }
        summary[provider] = figures
        beyond = (figures["beyond_closing_instances"], figures["beyond_closing_schemas"]) \
            if provider == "anthropic" else ("", "")
        rows.append([provider, figures["schemas"], figures["instances"], figures["tighter_instances"],
                     figures["tighter_schemas"], *beyond, figures["compile_errors"], figures["check_errors"]])
    print(table(["provider", "schemas", "instances", "tighter", "schemas tighter", "beyond closing",
                 "schemas beyond closing", "compile errors", "check errors"], rows))
    for provider, key, what in [*((p, "examples", "tighter") for p in PROVIDERS),
                                ("anthropic", "beyond", "tighter beyond closing")]:
        shown = [(record["file"], example) for record in sampled
                 for example in record["providers"].get(provider, {}).get(key, [])][:EXAMPLES]
        for file, example in shown:
            print(f"  {provider} {what}: {file}: {example['instance']}\n      {example['error']}")
    return summary


# ---------------------------------------------------------------------------------------------
# The test suite: which cases and tests count


_SCHEMA_MAPS = {"properties", "patternProperties", "$defs", "definitions", "dependentSchemas", "dependencies"}
_NOT_SCHEMAS = {"enum", "const", "default", "examples"}


def remote_references(schema: Any) -> list[str]:
    """The http(s) URLs the schema refers to (`$ref`, `$dynamicRef`, `$recursiveRef`, an unknown
    `$schema`) that no `$id` (or draft-4 `id`) inside it defines."""
    ids: set[str] = set()
    refs: list[str] = []

    def walk(node: Any, base: str) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item, base)
            return
        if not isinstance(node, dict):
            return
        ident = node.get("$id", node.get("id"))
        if isinstance(ident, str):
            base = urljoin(base, ident)
            ids.add(urldefrag(base).url)
        for key in ("$ref", "$dynamicRef", "$recursiveRef"):
            if isinstance(node.get(key), str):
                refs.append(urljoin(base, node[key]))
        dialect = node.get("$schema")
        if isinstance(dialect, str) and _dialect_key(dialect) not in KNOWN_DIALECTS:
            refs.append(dialect)
        for key, value in node.items():
            if key in _NOT_SCHEMAS:
                continue
            if key in _SCHEMA_MAPS and isinstance(value, dict):
                for sub in value.values():
                    walk(sub, base)
            elif isinstance(value, dict | list):
                walk(value, base)

    walk(schema, "")
    return [ref for ref in refs if urlsplit(ref).scheme in ("http", "https") and urldefrag(ref).url not in ids]


def suite_tasks(root: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The cases to run (with their tests), and what was excluded and why."""
    cases: list[dict[str, Any]] = []
    excluded: list[str] = []
    annotation_only: dict[str, list[str]] = defaultdict(list)
    for draft, dialect in SUITE_DRAFTS.items():
        base = root / draft
        if not base.is_dir():
            continue
        folders = (("required", base), ("optional", base / "optional"), ("format", base / "optional" / "format"))
        for group, folder in folders:
            for path in sorted(folder.glob("*.json")):
                name = path.relative_to(base).as_posix()
                if path.name == "refRemote.json":
                    count = len(json.loads(path.read_text(encoding="utf-8")))
                    excluded.append(f"{draft}/{name}: all {count} cases (remote references)")
                    continue
                for index, case in enumerate(json.loads(path.read_text(encoding="utf-8"))):
                    schema = case["schema"]
                    if isinstance(schema, dict) and "$schema" not in schema:
                        schema = {"$schema": dialect, **schema}
                    remote = remote_references(schema)
                    if remote:
                        excluded.append(f"{draft}/{name} #{index} {case['description']!r}: remote {remote[0]}")
                        continue
                    tests = case["tests"]
                    if path.name == "format.json" and group == "required":
                        keep = [t for t in tests if "only an annotation" not in t["description"]]
                        if len(keep) < len(tests):
                            dropped = len(tests) - len(keep)
                            annotation_only[f"{draft}/{name}"].append(f"{case['description']} ({dropped})")
                        tests = keep
                    if tests:
                        cases.append({"draft": draft, "group": group, "file": name, "index": index,
                                      "description": case["description"], "schema": schema, "tests": tests})
    for file, names in annotation_only.items():
        excluded.append(f"{file}: the annotation-only tests ('… is only an annotation by default') of "
                        f"{len(names)} cases: {', '.join(names)}")
    return cases, excluded


def report_suite(cases: list[dict[str, Any]], results: list[dict[str, Any]], excluded: list[str]) -> dict[str, Any]:
    print(f"\nExcluded ({len(excluded):,}): refRemote.json, cases with a remote reference (no network here),\n"
          "and format.json tests expecting annotation-only formats (we assert formats on purpose):")
    for line in excluded:
        print(f"  {line}")
    groups: dict[tuple[str, str], list[tuple[dict[str, Any], dict[str, Any]]]] = defaultdict(list)
    for case, result in zip(cases, results, strict=True):
        groups[(case["draft"], case["group"])].append((case, result))
    rows, summary, disagreements = [], {}, {}
    refusals: Counter[str] = Counter()
    compile_errors: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for (draft, group), pairs in groups.items():
        agree, total, refused, lines = 0, 0, 0, []
        for case, result in pairs:
            where = f"{case['file']} {case['description']!r}"
            if "tests" not in result:
                lines.append(f"{where}: NOT RUN ({result.get('failed') or result.get('worker_error')})")
                total += len(case["tests"])
                continue
            if result["gate"] != "ok":
                refused += 1
                refusals[f"{result['gate']}"] += 1
            for provider, error in result.get("compile_errors", {}).items():
                compile_errors[provider].append((error.split(":")[0], f"{draft}/{where}: {error}"))
            for test, verdict in zip(case["tests"], result["tests"], strict=True):
                total += 1
                if verdict["ours"] == test["valid"]:
                    agree += 1
                else:
                    lines.append(f"{where} / {test['description']!r}: expected "
                                 f"{'valid' if test['valid'] else 'invalid'}, ours {verdict['why'] or 'valid'}")
        summary[f"{draft} {group}"] = {"cases": len(pairs), "tests": total, "agree": agree,
                                       "disagree": total - agree, "gate_refused_cases": refused}
        disagreements[f"{draft} {group}"] = lines
        rows.append([draft, group, len(pairs), refused, total, agree, total - agree])
    print("\nJSON Schema Test Suite (ours = gate accepts, and the reply reader returns the same value):")
    print(table(["draft", "group", "cases", "gate refused", "tests", "agree", "disagree"], rows))
    print("  cases the gate refused, by reason: "
          + (", ".join(f"{reason} {count}" for reason, count in refusals.most_common()) or "none"))
    for key, lines in disagreements.items():
        if lines:
            print(f"\n  {key}: first disagreements of {len(lines):,}")
            for line in lines[:10]:
                print(f"    {line}")
    print("\nSuite schemas compiled for every provider: "
          + (", ".join(f"{p} {len(compile_errors[p])} exceptions" for p in PROVIDERS)))
    for provider in PROVIDERS:
        by_type: dict[str, list[str]] = defaultdict(list)
        for kind, line in compile_errors[provider]:
            by_type[kind].append(line)
        for kind, lines in by_type.items():
            print(f"  {provider} raises {kind} on {len(lines)} cases, as:")
            for line in lines[:EXAMPLES]:
                print(f"    {line}")
    return {"groups": summary, "disagreements": disagreements, "excluded": excluded, "refusals": dict(refusals),
            "compile_errors": dict(compile_errors)}


def _code_version() -> str:
    """The commit measured, and whether mcp_llm/ differs from it (others may be changing it)."""
    import subprocess

    def git(*argv: str) -> str:
        result = subprocess.run(["git", *argv], cwd=REPO_ROOT, capture_output=True, text=True, check=False)
        return result.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown commit"
    changed = git("status", "--porcelain", "--", "mcp_llm")
    return commit + (f" + {len(changed.splitlines())} changed files under mcp_llm/" if changed else "")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", type=Path, help="JSONSchemaBench's data/ directory (one folder per split)")
    parser.add_argument("--suite", type=Path, help="the JSON Schema Test Suite's tests/ directory")
    parser.add_argument("--splits", help="comma-separated split names (default: every folder)")
    parser.add_argument("--limit", type=int, help="at most N schemas per split (the first, by name)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tighter-schemas", type=int, default=300)
    parser.add_argument("--tighter-samples", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per schema (or suite case)")
    parser.add_argument("--json", type=Path, help="write the raw figures here")
    args = parser.parse_args(argv)
    if args.bench is None and args.suite is None:
        parser.error("give --bench DIR, --suite DIR, or both")
    began = time.monotonic()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  (tables before stderr's progress)
    raw: dict[str, Any] = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
    raw["code"] = _code_version()
    print(f"mcp_llm at {raw['code']}")
    pool = Pool(args.jobs, args.timeout)
    try:
        if args.bench is not None:
            files = bench_files(args.bench, args.splits.split(",") if args.splits else None, args.limit)
            print(f"JSONSchemaBench: {len(files):,} schemas from {args.bench}")
            records = pool.run("bench", [(str(path), f"{split}/{path.name}") for split, path in files], "bench")
            for record, (split, path) in zip(records, files, strict=True):
                record.setdefault("file", f"{split}/{path.name}")
            raw["bench"] = {"summary": report_bench(records), "records": records}
            accepted = sorted(r["file"] for r in records if r.get("gate") == "ok")
            picked = random.Random(args.seed).sample(accepted, min(args.tighter_schemas, len(accepted)))
            if picked:
                tasks = [(str(args.bench / file), file, args.tighter_samples, args.seed) for file in picked]
                tighter = pool.run("tighter", tasks, "tighter")
                for record, file in zip(tighter, picked, strict=True):
                    record.setdefault("file", file)
                raw["tighter"] = {"summary": report_tighter(tighter, args.tighter_samples), "records": tighter}
        if args.suite is not None:
            cases, excluded = suite_tasks(args.suite)
            print(f"\nJSON Schema Test Suite: {len(cases):,} cases, "
                  f"{sum(len(c['tests']) for c in cases):,} tests from {args.suite}")
            results = pool.run("suite", [(case["schema"], case["tests"]) for case in cases], "suite")
            raw["suite"] = report_suite(cases, results, excluded)
    finally:
        pool.close()
    raw["elapsed_s"] = time.monotonic() - began
    print(f"\nWhole run: {raw['elapsed_s']:,.0f} s with --jobs {args.jobs}.")
    if args.json is not None:
        args.json.write_text(json.dumps(raw, indent=1, default=repr, allow_nan=True), encoding="utf-8")
        print(f"Raw figures: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
