"""What each provider is sent (mcp_llm/schema/compile.py): Gemini's rewrites end to end, in the trace
and on the wire; a large schema compiled in a worker, once; the record of those stays bounded."""

from __future__ import annotations

import anyio
import pytest

from mcp_llm.schema import compile as schema_compile
from mcp_llm.schema import limits as schema_limits
from mcp_llm.schema.dialects import compile_anthropic
from tests.fleet import ANSWER, GEMINI, GEMINI_REWRITES, REWRITTEN, Fakes, Serve, generate_with, sent_schema
from tests.on_loop import OnTheLoop, schema_of

pytestmark = pytest.mark.anyio


async def test_gemini_schema_rewrites_are_in_the_trace_and_in_what_it_was_sent(
    serve: Serve, fakes: Fakes
) -> None:
    fakes.gemini.enqueue(ANSWER)
    async with serve() as client:
        result, _ = await generate_with(client, GEMINI.model, REWRITTEN)
    assert sorted(result["schema_rewrites"]) == sorted(GEMINI_REWRITES)
    assert result["data"] == ANSWER
    sent = sent_schema(fakes, GEMINI)
    assert "$schema" not in sent and "patternProperties" not in sent
    assert sent["properties"]["population"] == {"anyOf": [{"type": "integer", "minimum": 0}, {"type": "null"}]}
    assert sent["properties"]["country"] == {"enum": ["France"]}


# --- where the work runs: on the event loop only when it is small ---------------------------------


async def test_a_large_schema_is_compiled_in_a_worker_the_first_time_only() -> None:
    limit = schema_limits.OFF_LOOP_CHARS
    small, large = schema_of(limit, "compile-small"), schema_of(limit + 1, "compile-large")
    # (schema, compiled on the loop, handed to a worker): the second time, the large one was compiled before
    for schema, on_loop, in_worker in ((small, True, False), (large, False, True), (large, False, False)):
        with OnTheLoop(compile_anthropic, anyio.to_thread.run_sync) as seen:
            compiled = await schema_compile.compile_for_off_loop("anthropic", schema)
        assert compiled == compile_anthropic(schema)
        assert ("compile_anthropic" in seen.called, "run_sync" in seen.called) == (on_loop, in_worker), seen.called


async def test_the_record_of_large_schemas_compiled_stays_bounded() -> None:
    # A stream of distinct large schemas must not grow it without end (the cache it shadows is bounded too).
    schema_compile._COMPILED_BEFORE.clear()
    kept = schema_compile.COMPILED_SCHEMAS_KEPT
    assert kept == 256  # as many as the compile cache keeps
    for i in range(kept + 1):
        await schema_compile.compile_for_off_loop("openai", schema_of(schema_limits.OFF_LOOP_CHARS + 1, f"stream-{i}"))
        assert len(schema_compile._COMPILED_BEFORE) <= kept
    assert len(schema_compile._COMPILED_BEFORE) == 1  # started over at the bound, with the newest
