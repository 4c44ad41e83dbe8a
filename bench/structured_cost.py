"""Structured output's own cost per call, for a small and a large schema, cached against uncached.

    python bench/structured_cost.py [--rounds 5] [--calls 200]

What a `generate_structured` call does with the schema and the reply, outside any I/O: the
schema gate (`parse_schema_argument`: limits, meta-schema, references), the compilation for the
provider (`compile_for`), the instruction the model is told (`schema_instruction`), and reading
and validating the reply (`parse_and_validate`). **Cached** is the steady state (the gate's
memo of checked schemas, the compiled schemas and validators kept per distinct schema);
**uncached** clears those caches before every call, as for a schema seen for the first time.
Both alternate, `--rounds` rounds of `--calls` calls each, per provider; it prints µs per call
(each round's median, then min/median/max over rounds) and uncached/cached.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench._common import PROVIDERS, SCHEMA, load_average, machine_line, rotated, spread  # noqa: E402


def large_schema(fields: int = 120) -> dict[str, Any]:
    """About 20 KB: nested objects, arrays, enums, formats, and `$defs` referenced many times."""
    item = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 80},
                                             "score": {"type": "number", "minimum": 0, "maximum": 1},
                                             "tags": {"type": "array", "items": {"type": "string"}}},
            "required": ["name", "score"], "additionalProperties": False}
    properties: dict[str, Any] = {}
    for i in range(fields):
        kind = i % 6
        if kind == 0:
            properties[f"f{i}"] = {"type": "string", "description": f"field {i}"}
        elif kind == 1:
            properties[f"f{i}"] = {"type": "integer", "minimum": 0, "maximum": 10_000}
        elif kind == 2:
            properties[f"f{i}"] = {"enum": ["low", "medium", "high"]}
        elif kind == 3:
            properties[f"f{i}"] = {"type": "array", "items": {"$ref": "#/$defs/item"}, "minItems": 1}
        elif kind == 4:
            properties[f"f{i}"] = {"type": "string", "format": "date"}
        else:
            properties[f"f{i}"] = {"anyOf": [{"$ref": "#/$defs/item"}, {"type": "null"}]}
    return {"type": "object", "$defs": {"item": item}, "properties": properties,
            "required": list(properties), "additionalProperties": False}


def clear_caches() -> None:
    from mcp_llm.schema import argument, compile, validation

    argument._CHECKED.clear()
    compile._compiled.cache_clear()
    validation.compiled_validator.cache_clear()


def one_call(provider: str, schema: dict[str, Any], reply: str) -> None:
    from mcp_llm.schema import compile_for, parse_and_validate, parse_schema_argument, schema_instruction

    checked, _ = parse_schema_argument(json.loads(json.dumps(schema)))  # a fresh dict, as off the wire
    compiled = compile_for(provider, checked)
    schema_instruction(checked)
    parse_and_validate(reply, checked, unwrap=compiled.wrapped_in)


def batch(provider: str, schema: dict[str, Any], reply: str, calls: int, cached: bool) -> float:
    """The median µs per call."""
    times = []
    for _ in range(calls):
        if not cached:
            clear_caches()
        started = time.perf_counter()
        one_call(provider, schema, reply)
        times.append((time.perf_counter() - started) * 1e6)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args(argv)

    from tests.fakes.ollama_server import schema_instance

    print(machine_line())
    print(f"Structured-output work per call: {args.rounds} rounds x {args.calls} calls, cached and uncached "
          "alternated; µs per call (each round's median; min/median/max over rounds).")
    schemas = {"small (3 fields)": SCHEMA, "large (120 fields, $defs)": large_schema()}
    for label, schema in schemas.items():
        reply = json.dumps(schema_instance(schema))
        print(f"\n{label}: schema {len(json.dumps(schema)):,} bytes, reply {len(reply):,} bytes")
        for provider in PROVIDERS:
            wrapped = json.loads(json.dumps(schema))
            from mcp_llm.schema import compile_for

            unwrap = compile_for(provider, wrapped).wrapped_in
            provider_reply = json.dumps({unwrap: json.loads(reply)}) if unwrap else reply
            one_call(provider, schema, provider_reply)  # imports
            medians: dict[bool, list[float]] = {True: [], False: []}
            for round_ in range(args.rounds):
                for cached in rotated([True, False], round_):
                    medians[cached].append(batch(provider, schema, provider_reply, args.calls, cached))
            ratio = [u / c for u, c in zip(medians[False], medians[True], strict=True)]
            print(f"  {provider:9} cached {spread(medians[True], ' us', 0)}   "
                  f"uncached {spread(medians[False], ' us', 0)}   uncached/cached {spread(ratio, 'x', 1)}")
    print(f"Load average at the end: {load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
