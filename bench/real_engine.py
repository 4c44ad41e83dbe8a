"""Real-engine bench: mcp_llm against a real llama-server serving SmolLM2-135M-Instruct (tests/real/backend.py).

(a) Overhead: per-call latency of `generate_structured` through an MCP stdio session against a direct
    `openai` SDK call to the same server with the same request (system prompt, user prompt, schema as
    response_format json_schema, temperature 0, seed, max_tokens), calls interleaved, median of N each.
(b) Reliability: the 20 bounded schemas of tests/real/schemas.py × several prompts in three modes,
    each an OpenAI-compatible endpoint on the same server with its own `structured_output`:
    json_schema (grammar-constrained), json_object (JSON mode + re-asks), none (prompt only + re-asks).
    Reported: the share of calls that returned data, that every returned `data` validates (checked here
    with jsonschema), and the attempts per call.

(c) JSONSchemaBench coverage (`--jsonschemabench DIR`, the `data/` folder of guidance-ai/jsonschemabench,
    fetched, never committed): N schemas per split (seeded), each asked twice side by side: the raw
    engine (the `openai` SDK, `response_format` json_schema with the schema as is, the paper's zero-shot
    prompt: system "You need to generate a JSON object that matches the schema below.", user the
    schema's JSON), and `generate_structured` through MCP stdio (prompt "Generate a JSON object that
    matches the schema.", the schema as `schema`). The figures follow the paper's evaluator
    (epfl-dlab/jsonschemabench, core/evaluator.py): declared coverage = the engine took the schema
    (raw: HTTP 200; mcp_llm: the gate accepted it); empirical coverage = the output parses and validates
    against Draft 2020-12 with formats (a failed call is an empty output, as the paper's default
    generation is ""); compliance = empirical coverage over the declared schemas. Beside them, for
    mcp_llm, the share of RETURNED data that validates (the product's promise: never invalid data) and
    what the failed calls ended in.

    python -m bench.real_engine [--calls 20] [--prompts 2] [--skip-a] [--skip-b]
    python -m bench.real_engine --skip-a --skip-b --jsonschemabench DIR [--per-split 10] [--seed 1] [--context 16384]

Prints markdown tables (README's Performance section, "Real engine", holds a run of them).
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import jsonschema

from mcp_llm.errors import SchemaError
from mcp_llm.schema import parse_schema_argument, schema_instruction
from tests.real.backend import MODEL_ALIAS, LlamaServer, Unavailable, prepare
from tests.real.conftest import connect, real_config
from tests.real.schemas import SCHEMAS

MODES = (("json_schema", "grammar-constrained (json_schema)"), ("json_object", "JSON mode + re-asks"),
         ("none", "prompt only + re-asks"))
EXTRA_PROMPTS = ("Give a realistic example answer.", "Answer with made-up but plausible values.")
MAX_TOKENS = 160
# What the final error of a failed call says, first match wins (the last attempt's cause).
ERROR_KINDS = (("cut off at the max_tokens limit", "cut at max_tokens"), ("is not JSON", "not JSON"),
               ("does not match the schema", "schema mismatch"), ("lone surrogate", "bad escape"))
SEED = 7


def _mode_endpoints(url: str) -> str:
    return "".join(f'\n[providers.openai_compatible.{mode}]\nendpoint = "{url}/v1"\nmodels = ["{MODEL_ALIAS}"]\n'
                   f'structured_output = "{mode}"\nconcurrency = 2\n' for mode, _ in MODES)


async def overhead(url: str, calls: int, config: Path) -> None:
    from openai import AsyncOpenAI

    name, schema, prompt = SCHEMAS[0]
    direct = AsyncOpenAI(base_url=f"{url}/v1", api_key="no-key", max_retries=0)
    request: dict[str, Any] = {
        "model": MODEL_ALIAS, "temperature": 0, "seed": SEED, "max_tokens": MAX_TOKENS,
        "messages": [{"role": "system", "content": schema_instruction(schema)}, {"role": "user", "content": prompt}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}},
    }
    mcp_ms: list[float] = []
    sdk_ms: list[float] = []
    async with connect(config) as client:
        # cache: false, or every call after the first is a response-cache hit (temperature 0, same request)
        arguments = {"prompt": prompt, "schema": schema, "model": f"llamacpp/{MODEL_ALIAS}", "temperature": 0,
                     "max_tokens": MAX_TOKENS, "cache": False}
        for _ in range(2):  # warm both paths (imports, prompt cache) before measuring
            await client.call_tool("generate_structured", arguments)
            await direct.chat.completions.create(**request)
        for _ in range(calls):
            started = time.perf_counter()
            result = await client.call_tool("generate_structured", arguments)
            mcp_ms.append((time.perf_counter() - started) * 1000)
            assert not result.is_error, result.content
            assert not result.structured_content["cached"], "a cached answer is not a call to the engine"
            jsonschema.validate(result.structured_content["data"], schema)
            started = time.perf_counter()
            await direct.chat.completions.create(**request)
            sdk_ms.append((time.perf_counter() - started) * 1000)
    await direct.close()
    mcp, sdk = statistics.median(mcp_ms), statistics.median(sdk_ms)
    print(f"\n(a) per-call latency, schema {name!r}, {calls} calls each, interleaved\n")
    print("| path | median ms | p90 ms |\n|---|---:|---:|")
    for label, values in (("MCP stdio → mcp_llm → llama-server", mcp_ms), ("direct openai SDK → llama-server", sdk_ms)):
        p90 = statistics.quantiles(values, n=10)[-1]
        print(f"| {label} | {statistics.median(values):.0f} | {p90:.0f} |")
    print(f"\nratio MCP / direct (medians): {mcp / sdk:.3f} (target ≤ 1.05)", flush=True)


async def reliability(prompts: int, config: Path) -> None:
    cases = [(name, schema, prompt) for name, schema, first in SCHEMAS
             for prompt in (first, *EXTRA_PROMPTS)[:prompts]]
    print(f"\n(b) {len(SCHEMAS)} schemas × {prompts} prompts = {len(cases)} calls per mode, temperature 0, "
          f"max_tokens {MAX_TOKENS}, max_repairs 2, max_retries 2\n")
    rows = []
    async with connect(config) as client:
        for mode, label in MODES:
            ok = invalid_returned = errors = 0
            attempts: list[int] = []
            kinds: dict[str, int] = {}
            started = time.perf_counter()
            failed: list[str] = []
            failed_attempts: list[int] = []
            for name, schema, prompt in cases:
                result = await client.call_tool("generate_structured", {
                    "prompt": prompt, "schema": schema, "model": f"{mode}/{MODEL_ALIAS}", "temperature": 0,
                    "max_tokens": MAX_TOKENS, "cache": False})
                if result.is_error:
                    errors += 1
                    text = " ".join(getattr(b, "text", "") for b in result.content)
                    kind = next((label for marker, label in ERROR_KINDS if marker in text), "other")
                    kinds[kind] = kinds.get(kind, 0) + 1
                    failed.append(f"{name}: {kind}")
                    tries = re.search(r"\((\d+) attempts? with", text)
                    failed_attempts.append(int(tries.group(1)) if tries else 0)
                    continue
                content = result.structured_content
                attempts.append(len(content["attempts"]))
                try:
                    jsonschema.validate(content["data"], schema)
                    ok += 1
                except jsonschema.ValidationError:
                    invalid_returned += 1
            seconds = time.perf_counter() - started
            rows.append((label, len(cases), ok, invalid_returned, errors, attempts, failed_attempts, kinds, seconds))
            print(f"  {label}: done in {seconds:.0f} s; failed: {', '.join(failed) or 'none'}", file=sys.stderr,
                  flush=True)
    print("| mode | calls | valid data | returned data that validates | clear errors | attempts per success "
          "(mean) | attempts per call (mean) | time |\n|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, n, ok, bad, errors, attempts, failed_attempts, kinds, seconds in rows:
        returned = ok + bad
        share = f"{100 * ok / returned:.0f} %" if returned else "n/a"
        detail = ", ".join(f"{k}: {v}" for k, v in sorted(kinds.items()))
        mean = f"{statistics.mean(attempts):.2f}" if attempts else "n/a"
        every = attempts + failed_attempts
        per_call = f"{statistics.mean(every):.2f}" if every else "n/a"
        print(f"| {label} | {n} | {ok} ({100 * ok / n:.0f} %) | {share} | {errors}{f' ({detail})' if detail else ''} "
              f"| {mean} | {per_call} | {seconds:.0f} s |")


PAPER_SYSTEM = "You need to generate a JSON object that matches the schema below."
COVERAGE_MAX_TOKENS = 512


def _valid_2020_12(text: str | None, schema: Any) -> bool:
    """The paper's check: the output parses, and validates against Draft 2020-12 with a format checker."""
    import json

    from jsonschema import Draft202012Validator, FormatChecker

    if not text:
        return False
    try:
        value = json.loads(text)
        Draft202012Validator.check_schema(schema)
        Draft202012Validator(schema, format_checker=FormatChecker()).validate(value)
    except Exception:  # the paper's evaluator catches everything here too
        return False
    return True


def _sample(directory: Path, per_split: int, seed: int) -> list[tuple[str, str, Any]]:
    import json
    import random

    chosen = []
    for split in sorted(p for p in directory.iterdir() if p.is_dir()):
        files = sorted(split.glob("*.json"))
        for path in random.Random(f"{seed}/{split.name}").sample(files, min(per_split, len(files))):
            chosen.append((split.name, path.name, json.loads(path.read_text(encoding="utf-8"))))
    return chosen


async def coverage(url: str, config: Path, directory: Path, per_split: int, seed: int) -> None:
    import json

    from openai import APIError, APIStatusError, AsyncOpenAI

    cases = _sample(directory, per_split, seed)
    print(f"\n(c) JSONSchemaBench: {per_split} schemas per split (seed {seed}), temperature 0, "
          f"max_tokens {COVERAGE_MAX_TOKENS}, max_repairs 2\n")
    direct = AsyncOpenAI(base_url=f"{url}/v1", api_key="no-key", max_retries=0, timeout=180)
    rows: dict[str, dict[str, list[Any]]] = {}
    async with connect(config) as client:
        for split, name, schema in cases:
            row = rows.setdefault(split, {"raw": [], "ours": [], "returned": [], "why": []})
            started = time.perf_counter()
            try:  # the raw engine, as a user of its API would call it
                reply = await direct.chat.completions.create(
                    model=MODEL_ALIAS, temperature=0, seed=SEED, max_tokens=COVERAGE_MAX_TOKENS,
                    messages=[{"role": "system", "content": PAPER_SYSTEM},
                              {"role": "user", "content": json.dumps(schema)}],
                    response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}})
                raw = (True, reply.choices[0].message.content or "")
            except APIStatusError as exc:  # 400: the grammar could not be built (or the prompt overflowed)
                raw = (exc.status_code != 400 or "context" in str(exc), "")
            except APIError:
                raw = (True, "")
            try:  # declared: what the server's own gate says of the schema
                parse_schema_argument(schema)
                declared = True
            except SchemaError:
                declared = False
            result = await client.call_tool("generate_structured", {
                "prompt": "Generate a JSON object that matches the schema.", "schema": schema,
                "model": f"llamacpp/{MODEL_ALIAS}", "temperature": 0, "max_tokens": COVERAGE_MAX_TOKENS,
                "cache": False})
            text = " ".join(getattr(b, "text", "") for b in result.content) if result.is_error else ""
            output = json.dumps(result.structured_content["data"]) if not result.is_error else ""
            row["raw"].append((raw[0], _valid_2020_12(raw[1], schema)))
            row["ours"].append((declared, _valid_2020_12(output, schema)))
            if not result.is_error:
                row["returned"].append(_valid_2020_12(output, schema) or _valid_own_dialect(output, schema))
            else:
                kind = next((label for marker, label in ERROR_KINDS if marker in text), "other")
                if "context" in text:
                    kind = "context limit"
                elif not declared:
                    kind = "schema refused"
                row["why"].append(kind)
            print(f"  {split}/{name}: raw {'ok' if row['raw'][-1][1] else '--'}, "
                  f"mcp_llm {'ok' if row['ours'][-1][1] else '-- ' + (row['why'][-1] if row['why'] else '')} "
                  f"({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
    await direct.close()
    print("| split | n | raw declared | raw empirical | raw compliance | mcp_llm declared | mcp_llm empirical "
          "| mcp_llm compliance | returned data valid | failed calls (why) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    totals: dict[str, list[Any]] = {"raw": [], "ours": [], "returned": [], "why": []}
    for split, row in [*rows.items(), ("all", totals)]:
        if split != "all":
            for key in totals:
                totals[key] += row[key]
        n = len(row["raw"])
        cells = []
        for path in ("raw", "ours"):
            declared = [d for d, _ in row[path]]
            empirical = [e for _, e in row[path]]
            compliance = [e for d, e in row[path] if d]
            cells += [f"{sum(declared) / n:.3f}", f"{sum(empirical) / n:.3f}",
                      f"{sum(compliance) / len(compliance):.3f}" if compliance else "n/a"]
        returned = row["returned"]
        why = ", ".join(f"{k}: {row['why'].count(k)}" for k in sorted(set(row["why"])))
        print(f"| {split} | {n} | {' | '.join(cells)} | "
              f"{f'{sum(returned) / len(returned):.3f} ({len(returned)})' if returned else 'n/a'} | {why or '-'} |")


def _valid_own_dialect(text: str, schema: Any) -> bool:
    """Whether returned data validates against the schema's own dialect (the paper reads every schema as
    2020-12, which a draft-04 schema's `exclusiveMinimum: true` breaks; mcp_llm validates by the schema's own)."""
    import json

    import jsonschema_rs

    try:
        return bool(jsonschema_rs.validator_for(schema, validate_formats=True).is_valid(json.loads(text)))
    except Exception:
        return False


async def main(args: argparse.Namespace) -> int:
    try:
        prepared = prepare()
    except Unavailable as exc:
        print(f"real engine unavailable: {exc}")
        return 1
    server = LlamaServer(prepared, parallel=2, context=args.context).start()
    try:
        with tempfile.TemporaryDirectory(prefix="mcp-llm-bench-") as tmp:
            config = real_config(Path(tmp), server.url, _mode_endpoints(server.url))
            print(f"llama-server {server.url}, model {MODEL_ALIAS} (SmolLM2-135M-Instruct Q4_1), "
                  f"-np 2 -c {args.context}")
            if not args.skip_a:
                await overhead(server.url, args.calls, config)
            if not args.skip_b:
                await reliability(args.prompts, config)
            if args.jsonschemabench:
                await coverage(server.url, config, Path(args.jsonschemabench), args.per_split, args.seed)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--prompts", type=int, default=2, choices=(1, 2, 3))
    parser.add_argument("--skip-a", action="store_true")
    parser.add_argument("--skip-b", action="store_true")
    parser.add_argument("--jsonschemabench", metavar="DIR", help="JSONSchemaBench's data/ folder: run (c)")
    parser.add_argument("--per-split", type=int, default=10)
    parser.add_argument("--context", type=int, default=4096, help="llama-server -c (split over its 2 slots)")
    parser.add_argument("--seed", type=int, default=1)
    raise SystemExit(anyio.run(main, parser.parse_args()))
