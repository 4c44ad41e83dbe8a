"""Real-engine bench: mcp_llm against a real llama-server serving SmolLM2-135M-Instruct (tests/real/backend.py).

(a) Overhead: per-call latency of `generate_structured` through an MCP stdio session against a direct
    `openai` SDK call to the same server with the same request (system prompt, user prompt, schema as
    response_format json_schema, temperature 0, seed, max_tokens), calls interleaved, median of N each.
(b) Reliability: the 20 bounded schemas of tests/real/schemas.py × several prompts in three modes,
    each an OpenAI-compatible endpoint on the same server with its own `structured_output`:
    json_schema (grammar-constrained), json_object (JSON mode + re-asks), none (prompt only + re-asks).
    Reported: the share of calls that returned data, that every returned `data` validates (checked here
    with jsonschema), and the attempts per call.

    python -m bench.real_engine [--calls 20] [--prompts 2] [--skip-a] [--skip-b]

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

from mcp_llm.schema import schema_instruction
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
        arguments = {"prompt": prompt, "schema": schema, "model": f"llamacpp/{MODEL_ALIAS}", "temperature": 0,
                     "max_tokens": MAX_TOKENS}
        for _ in range(2):  # warm both paths (imports, prompt cache) before measuring
            await client.call_tool("generate_structured", arguments)
            await direct.chat.completions.create(**request)
        for _ in range(calls):
            started = time.perf_counter()
            result = await client.call_tool("generate_structured", arguments)
            mcp_ms.append((time.perf_counter() - started) * 1000)
            assert not result.is_error, result.content
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
                    "max_tokens": MAX_TOKENS})
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


async def main(args: argparse.Namespace) -> int:
    try:
        prepared = prepare()
    except Unavailable as exc:
        print(f"real engine unavailable: {exc}")
        return 1
    server = LlamaServer(prepared, parallel=2, context=4096).start()
    try:
        with tempfile.TemporaryDirectory(prefix="mcp-llm-bench-") as tmp:
            config = real_config(Path(tmp), server.url, _mode_endpoints(server.url))
            print(f"llama-server {server.url}, model {MODEL_ALIAS} (SmolLM2-135M-Instruct Q4_1), -np 2 -c 4096")
            if not args.skip_a:
                await overhead(server.url, args.calls, config)
            if not args.skip_b:
                await reliability(args.prompts, config)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--prompts", type=int, default=2, choices=(1, 2, 3))
    parser.add_argument("--skip-a", action="store_true")
    parser.add_argument("--skip-b", action="store_true")
    raise SystemExit(anyio.run(main, parser.parse_args()))
