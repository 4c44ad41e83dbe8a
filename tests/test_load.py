"""Load over one in-process MCP session: 200 calls, 8 at a time, about 5 % faulty backend replies.

A small version of bench/load.py, with its fault plan and echoing fake Ollama: each chat request
gets, by a seeded hash of (seed, call id, attempt), either a reply that echoes the call's own id
and number into schema-valid JSON, or a fault (HTTP 500, 503, 429 with Retry-After 0, a malformed
body, schema-violating JSON, prose). Two calls are doomed (every request of theirs gets a 503), so
that failing calls are exercised too. No timing or memory thresholds: the assertions are that
every call gets exactly one answer, that each answer is its own call's and validates, that the
failures are clear tool errors, and that the server answers normally afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import anyio
import jsonschema
import pytest
from mcp import Client

from bench.load import (
    FALLBACK_MODEL,
    TEXT_MODEL,
    FaultPlan,
    FaultyOllama,
    call_id,
    config_text,
    error_text,
    expected_data,
    prompt_for,
)
from bench.load import SCHEMA as LOAD_SCHEMA
from mcp_llm.config import Settings
from mcp_llm.server import build_server
from tests.conftest import call

pytestmark = pytest.mark.anyio

CALLS = 200
CONCURRENCY = 8
SEED = 20250930
FAULT_RATE = 0.05
DOOMED = frozenset({call_id(40), call_id(130)})  # far apart: their failures do not add up to open the circuit
TEST_TIMEOUT_S = 60  # the run takes a few seconds; most of it is retries backing off


@pytest.fixture
def plan() -> FaultPlan:
    return FaultPlan(SEED, FAULT_RATE, doomed=DOOMED)


@pytest.fixture
def fake(plan: FaultPlan) -> Iterator[FaultyOllama]:
    with FaultyOllama(plan, keep_requests=True) as server:
        yield server
        assert not server.errors, f"the fake Ollama server itself failed: {server.errors!r}"


def validate(instance: Any) -> None:
    """The test's own check, independent of the server's."""
    jsonschema.validate(instance, LOAD_SCHEMA, cls=jsonschema.Draft202012Validator)


async def test_every_call_gets_exactly_its_own_answer_under_faults(
    fake: FaultyOllama, plan: FaultPlan, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(config_text(fake, concurrency=CONCURRENCY))
    answers: dict[int, list[Any]] = {i: [] for i in range(CALLS)}
    limiter = anyio.CapacityLimiter(CONCURRENCY)

    with anyio.fail_after(TEST_TIMEOUT_S):
        async with Client(build_server(settings)) as client:

            async def one(i: int) -> None:
                async with limiter:
                    cid = call_id(i)
                    result = await client.call_tool(
                        "generate_structured", {"prompt": prompt_for(cid), "schema": LOAD_SCHEMA}
                    )
                    answers[i].append(result)

            async with anyio.create_task_group() as tg:
                for i in range(CALLS):
                    tg.start_soon(one, i)

            # The server still answers, normally, after the load and its failures.
            plan.rate = 0.0
            cid = call_id(CALLS)
            after = await call(client, "generate_structured", prompt=prompt_for(cid), schema=LOAD_SCHEMA)
            health = await call(client, "provider_health", provider="ollama")
            models = await call(client, "list_models", provider="ollama")

    assert after["data"] == expected_data(cid)
    assert [(a["outcome"], a["error"]) for a in after["attempts"]] == [("ok", None)]
    assert health["providers"][0]["status"] == "ok" and health["providers"][0]["circuit"] == "closed"
    assert {TEXT_MODEL, FALLBACK_MODEL} <= {m["id"] for m in models["models"]}

    # Exactly one answer per call.
    assert {i: len(results) for i, results in answers.items() if len(results) != 1} == {}

    failed: dict[str, str] = {}
    retried = reasked = 0
    for i, [result] in answers.items():
        cid = call_id(i)
        if result.is_error:
            failed[cid] = error_text(result)
            continue
        structured = result.structured_content
        validate(structured["data"])
        assert structured["data"] == expected_data(cid), f"{cid} got someone else's answer"
        attempts = structured["attempts"]
        assert attempts[-1]["outcome"] == "ok" and attempts[-1]["model"] == structured["model"], attempts
        assert structured["model"] in (TEXT_MODEL, FALLBACK_MODEL)
        retried += any(a["outcome"] == "error" for a in attempts)
        reasked += any(a["outcome"] == "invalid_output" for a in attempts)

    # Only the doomed calls fail, each with a clear tool error naming both models and what they got.
    assert set(failed) == DOOMED
    for cid, text in failed.items():
        assert "Every model in the fallback chain failed (4 attempts)" in text, text
        assert f"{TEXT_MODEL}: Ollama at {fake.url} failed (503)" in text, text
        assert f"{FALLBACK_MODEL}: Ollama at {fake.url} failed (503)" in text, text
        assert "[server_error, server_error]" in text, text
        assert "Traceback" not in text and cid not in text

    # The faults were really there, at about the rate asked for (the doomed calls' own aside).
    random_faults = plan.faults - 4 * len(DOOMED)
    assert 0.02 * plan.requests < random_faults < 0.10 * plan.requests, (random_faults, plan.requests)
    assert retried > 0 and reasked > 0, (retried, reasked)
    assert len(fake.chat_requests) == plan.requests
