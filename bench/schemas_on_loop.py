"""Gate and compile time of the schemas that are checked on the event loop (at most OFF_LOOP_CHARS of canonical text).

    python bench/schemas_on_loop.py <jsonschemabench>/data

Larger schemas go to a worker thread (schema/compile.py, schema/argument.py); these are the ones a call's
event loop pays for, so their p99 is what "gate and compile p99 under 50 ms on the event loop" is about.
Each compile is measured with the compile cache cleared; the gate is `parse_schema_argument` as a tool
call makes it.
"""

from __future__ import annotations

import glob
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mcp_llm.schema import compile_for, parse_schema_argument
from mcp_llm.schema.canonical import ordered_text
from mcp_llm.schema.compile import _compiled
from mcp_llm.schema.limits import OFF_LOOP_CHARS

DIALECTS = ("gemini", "anthropic", "openai", None)


def main(data: str) -> None:
    times: dict[str, list[float]] = {"gate": [], **{str(d or "as-is (ollama)"): [] for d in DIALECTS}}
    seen = 0
    for path in sorted(glob.glob(f"{data}/*/*.json")):
        try:
            schema = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(schema, dict) or len(ordered_text(schema)) > OFF_LOOP_CHARS:
            continue
        seen += 1
        started = time.perf_counter()
        try:
            parse_schema_argument(schema)
        except Exception:  # refused: not timed further
            continue
        times["gate"].append(time.perf_counter() - started)
        for dialect in DIALECTS:
            _compiled.cache_clear()
            started = time.perf_counter()
            compile_for(dialect, schema)
            times[str(dialect or "as-is (ollama)")].append(time.perf_counter() - started)
    print(f"schemas checked on the event loop (<= {OFF_LOOP_CHARS:,} chars): {seen}")
    for name, values in times.items():
        values.sort()
        p50, p99 = (values[min(len(values) - 1, int(q * len(values)))] * 1000 for q in (0.5, 0.99))
        print(f"{name:16} n={len(values):5}  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  max {values[-1] * 1000:6.1f} ms")


if __name__ == "__main__":
    main(sys.argv[1])
