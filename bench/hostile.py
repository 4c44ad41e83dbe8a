"""What hostile schemas and replies cost now: each case timed against a baseline in the same run.

    python bench/hostile.py [--runs 5]

Prints min/median/max milliseconds per case and the ratio it is about:
- compiling a schema of N nested `not`s around a pattern for Anthropic (was doubling per level:
  805 MB at 26 levels): size and time must grow linearly with N;
- a 3,000-object `uniqueItems` reply: our bounded validator against plain jsonschema;
- "```" plus 40,000 spaces: our reply reader against `json.loads` of a same-sized valid reply;
- the schema gate on a 600-anchor schema and on a 60 KB valid schema;
- patterns that backtrack without end in Python's `re` (issue 18: `(a|a?)+$` against 40 `a`s and a
  `!` froze the server), and backreference patterns that need the backtracking engine, each against
  replies of 41 characters, 100 KB and 1 MB: validation time against the same reply checked with
  the trivial pattern `a` (the baseline), so the ratio is what the pattern itself costs.
Nothing here is a test: it prints, and fails on nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import contextlib

from mcp_llm.errors import LLMError
from mcp_llm.schema import argument as structured
from mcp_llm.schema import parse_and_validate, validation_errors
from mcp_llm.schema.dialects import compile_anthropic


def check_schema(schema: dict[str, Any]) -> None:
    """The gate with its cache emptied first: what a schema costs the first time it is seen."""
    structured._CHECKED.clear()
    structured.check_schema(schema)


def timed(fn: Callable[[], Any], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        with contextlib.suppress(LLMError):
            fn()
        times.append((time.perf_counter() - started) * 1000)
    return times


def row(name: str, times: list[float], extra: str = "") -> None:
    print(f"{name:<48} {min(times):9.2f} {statistics.median(times):9.2f} {max(times):9.2f}  {extra}")


def nested_not(levels: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", "pattern": "^[a-z]{1,8}$", "description": "a word"}
    for _ in range(levels):
        schema = {"not": schema}
    return {"type": "object", "properties": {"x": schema}, "required": ["x"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    print(f"{'case':<48} {'min ms':>9} {'median':>9} {'max':>9}")

    print("\nAnthropic compilation of N nested `not` (size in bytes; linear means size/N stays flat)")
    for levels in (8, 16, 26, 64):
        schema = nested_not(levels)
        size = len(json.dumps(compile_anthropic(schema).schema))
        row(f"  N = {levels}", timed(lambda s=schema: compile_anthropic(s), runs),
            f"{size:,} bytes, {size / levels:,.0f} per level")

    print("\nuniqueItems over 3,000 distinct objects (schema allows at most 10 items)")
    import jsonschema

    schema = {"type": "array", "uniqueItems": True, "maxItems": 10}
    value = [{"i": i} for i in range(3000)]
    check_schema(schema)
    ours = timed(lambda: validation_errors(value, schema), runs)
    plain = timed(lambda: list(jsonschema.Draft202012Validator(schema).iter_errors(value)), runs)
    row("  mcp_llm validation", ours)
    row("  plain jsonschema (baseline)", plain, f"ratio {statistics.median(ours) / statistics.median(plain):.3f}")

    print("\nReply reader on 40 KB replies")
    fence = "```" + " " * 40_000
    valid = json.dumps({"x": "a" * 39_990})
    number = {"type": "object"}
    ours = timed(lambda: parse_and_validate(fence, number), runs)
    base = timed(lambda: json.loads(valid), runs)
    row('  "```" + 40,000 spaces (refused)', ours)
    row("  json.loads of a valid 40 KB reply (baseline)", base,
        f"ratio {statistics.median(ours) / statistics.median(base):.1f}")

    print("\nSchema gate (first check of each schema; checks are cached after)")
    anchors = {"$defs": {f"a{i}": {"$anchor": f"a{i}", "type": "integer"} for i in range(600)},
               "anyOf": [{"$ref": f"#a{i}"} for i in range(600)]}
    row("  600 $anchor refs", timed(lambda: check_schema(anchors), runs))
    big = {"type": "object", "properties": {f"p{i}": {"type": "string", "maxLength": 20, "description": "d" * 40}
                                            for i in range(600)}}
    size = len(json.dumps(big))
    row(f"  a valid {size / 1024:.0f} KB schema", timed(lambda: check_schema(big), runs))

    print("\nPatterns against a hostile reply (validation of the whole reply; baseline: the pattern `a`)")
    hostile = ["(a|a?)+$", "(?:a|a)+$", "(a|aa)+$", "^(([a-z])+.)+[A-Z]([a-z])+$", "(.*a){12}!", ".*" * 30 + "!",
               "^(a+)+$", "^(a|a?)+\\1$", "^((a+)+)\\2b$", "(.)\\1"]
    for length in (41, 100_000, 1_000_000):
        text = "a" * (length - 1) + "!"
        base_schema = {"type": "string", "pattern": "a"}
        check_schema(base_schema)
        base = timed(lambda t=text, b=base_schema: validation_errors(t, b), runs)
        row(f"  {length:,} characters, pattern `a` (baseline)", base)
        for pattern in hostile:
            schema = {"type": "string", "pattern": pattern}
            check_schema(schema)
            ours = timed(lambda t=text, s=schema: validation_errors(t, s), runs)
            row(f"    {pattern[:40]}", ours, f"ratio {statistics.median(ours) / statistics.median(base):.1f}")


if __name__ == "__main__":
    main()
