"""The router through the tools: retries of transient errors, fallback chains, the deadline.

Also, on every provider of tests/fleet.py: a non-transient error (auth 401/403, 404, 400) is never
retried, falls back at once, and never counts toward opening the provider's circuit; `schema_rewrites`
in the trace are those of the model that answered; what a request carries, usage over every attempt,
and what the final error says.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from mcp import Client

from mcp_llm.server import build_server
from tests.conftest import assert_sent_one_at_a_time, call, call_error, ollama_config
from tests.fakes.ollama_server import FakeOllama
from tests.fleet import (
    ANSWER,
    BY_NAME,
    GEMINI,
    GEMINI_REWRITES,
    GOOD,
    NON_TRANSIENT,
    OLLAMA,
    REWRITTEN,
    Fakes,
    Provider,
    Serve,
    assert_next_call_ok,
    fault_kwargs,
    generate,
    generate_error,
    generate_with,
    health,
    matrix,
    non_transient,
    per_provider,
    sent_schema,
    tries,
)
from tests.fleet import SCHEMA as CITY_SCHEMA
from tests.images import png_bytes

pytestmark = pytest.mark.anyio

SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}


def config(fake: FakeOllama, root: Path, defaults: str = "", *, max_retries: int = 0) -> str:
    text = ollama_config(fake, root, max_retries=max_retries)
    return text.replace("[defaults]\n", "[defaults]\n" + defaults, 1)


async def test_transient_errors_are_retried_and_recorded(fake_ollama: FakeOllama, image_root: Path,
                                                         make_settings) -> None:
    fake_ollama.enqueue(status=503, error="server busy")
    fake_ollama.enqueue({"n": 1})
    async with Client(build_server(make_settings(config(fake_ollama, image_root, max_retries=2)))) as client:
        result = await call(client, "generate_structured", prompt="n?", schema=SCHEMA)
    assert result["data"] == {"n": 1}
    assert [(a["outcome"], a["error"]) for a in result["attempts"]] == [("error", "server_error"), ("ok", None)]


async def test_client_errors_are_not_retried(fake_ollama: FakeOllama, image_root: Path, make_settings) -> None:
    fake_ollama.enqueue(status=400, error="invalid JSON schema in format")
    async with Client(build_server(make_settings(config(fake_ollama, image_root, max_retries=2)))) as client:
        text = await call_error(client, "generate_structured", prompt="n?", schema=SCHEMA)
    assert "invalid JSON schema in format" in text and "(1 attempt with" in text
    assert len(fake_ollama.chat_requests) == 1


async def test_fallback_to_the_next_model_when_one_fails(fake_ollama: FakeOllama, image_root: Path,
                                                         make_settings) -> None:
    defaults = 'fallback = ["ollama/llava:7b"]\n'
    async with Client(build_server(make_settings(config(fake_ollama, image_root, defaults)))) as client:
        result = await call(client, "generate_structured", prompt="n?", schema=SCHEMA, model="ollama/mistral:7b")
    jsonschema.validate(result["data"], SCHEMA)
    assert result["model"] == "ollama/llava:7b"
    assert [(a["model"], a["outcome"], a["error"]) for a in result["attempts"]] == [
        ("ollama/mistral:7b", "error", "model_not_found"),
        ("ollama/llava:7b", "ok", None),
    ]


async def test_fallback_when_output_stays_invalid(fake_ollama: FakeOllama, image_root: Path, make_settings) -> None:
    defaults = 'fallback = ["ollama/llava:7b"]\nmax_repairs = 1\n'
    for _ in range(2):
        fake_ollama.enqueue("I think n is probably seven.")
    fake_ollama.enqueue({"n": 7})
    settings = make_settings(config(fake_ollama, image_root, defaults).replace("max_repairs = 2\n", ""))
    async with Client(build_server(settings)) as client:
        result = await call(client, "generate_structured", prompt="n?", schema=SCHEMA)
    assert result["data"] == {"n": 7}
    assert [(a["model"], a["outcome"]) for a in result["attempts"]] == [
        ("ollama/llama3.2:3b", "invalid_output"),
        ("ollama/llama3.2:3b", "invalid_output"),
        ("ollama/llava:7b", "ok"),
    ]


async def test_every_model_failing_lists_each(fake_ollama: FakeOllama, image_root: Path, make_settings) -> None:
    defaults = 'fallback = ["ollama/qwen2.5:7b"]\n'
    fake_ollama.enqueue(status=500, error="out of memory")
    async with Client(build_server(make_settings(config(fake_ollama, image_root, defaults)))) as client:
        text = await call_error(client, "generate_structured", prompt="n?", schema=SCHEMA)
    assert "Every model in the fallback chain failed (2 attempts)" in text
    assert "ollama/llama3.2:3b: Ollama at" in text and "out of memory" in text
    assert "ollama/qwen2.5:7b: Ollama at" in text and "no model 'qwen2.5:7b'" in text


async def test_a_backend_that_never_answers_fails_at_the_deadline(fake_ollama: FakeOllama, image_root: Path,
                                                                  make_settings) -> None:
    settings = make_settings(config(fake_ollama, image_root).replace("timeout_s = 20", "timeout_s = 1"))
    fake_ollama.enqueue(hang=True)
    async with Client(build_server(settings)) as client:
        started = time.perf_counter()
        text = await call_error(client, "generate_structured", prompt="n?", schema=SCHEMA)
        elapsed = time.perf_counter() - started
        assert "did not answer" in text
        assert elapsed < 5  # bounded by the deadline, not by the hung backend
        assert fake_ollama.wait_for_disconnect(timeout=5), "the hung request was left open"
        result = await call(client, "generate_structured", prompt="n?", schema=SCHEMA)
    jsonschema.validate(result["data"], SCHEMA)


# --- non-transient errors: no retry, fallback at once, the circuit untouched ----------------------


@pytest.mark.usefixtures("fresh_health")
@pytest.mark.parametrize(("provider", "status"), matrix(list(NON_TRANSIENT)))
async def test_a_non_transient_error_is_not_retried_and_does_not_open_the_circuit(
    serve: Serve, fakes: Fakes, provider: Provider, status: int
) -> None:
    kind = NON_TRANSIENT[status]
    fakes.of(provider).enqueue(**non_transient(provider, status))
    fakes.of(provider.fallback_provider).enqueue(GOOD)
    async with serve(max_retries=2, fallback=[provider.fallback], defaults="circuit_failures = 1") as client:
        result, elapsed = await generate(client, provider.model)
        assert tries(result) == [(provider.model, "error", kind), (provider.fallback, "ok", None)]
        assert fakes.completions(provider) == 1, f"a {status} was retried"
        assert elapsed < 0.5 + 5, "the fallback waited on a retry backoff"
        assert (await health(client, provider))["circuit"] == "closed", f"a {status} opened the circuit"
        await assert_next_call_ok(client, provider.model, provider.name)


@pytest.mark.parametrize("provider", per_provider())
async def test_a_non_transient_error_without_fallback_is_reported_after_one_attempt(
    serve: Serve, fakes: Fakes, provider: Provider
) -> None:
    fakes.of(provider).enqueue(**non_transient(provider, 401))
    async with serve(max_retries=2) as client:
        text, _ = await generate_error(client, provider.model)
        assert "simulated 401" in text
        assert f"(1 attempt with {provider.model}: auth)" in text
        assert fakes.completions(provider) == 1
        await assert_next_call_ok(client, provider.model, provider.name)


# --- schema_rewrites: those of the model that answered; the reply checked against the caller's schema ---


async def test_schema_rewrites_are_those_of_the_model_that_answered(serve: Serve, fakes: Fakes) -> None:
    fakes.gemini.enqueue(**fault_kwargs(GEMINI, "503"))
    fakes.ollama.enqueue(ANSWER)
    async with serve(max_retries=0, fallback=[OLLAMA.model]) as client:
        fell_back, _ = await generate_with(client, GEMINI.model, REWRITTEN)
        assert (fell_back["model"], fell_back["schema_rewrites"]) == (OLLAMA.model, [])
        assert sent_schema(fakes, OLLAMA) == REWRITTEN, "Ollama takes the caller's schema as is"

    fakes.ollama.enqueue(**fault_kwargs(OLLAMA, "503"))
    fakes.gemini.enqueue(ANSWER)
    async with serve(max_retries=0, fallback=[GEMINI.model]) as client:
        to_gemini, _ = await generate_with(client, OLLAMA.model, REWRITTEN)
        assert to_gemini["model"] == GEMINI.model
        assert sorted(to_gemini["schema_rewrites"]) == sorted(GEMINI_REWRITES)


async def test_the_reply_is_validated_against_the_callers_schema_not_the_rewritten_one(
    serve: Serve, fakes: Fakes
) -> None:
    # Gemini was sent no `patternProperties` and an `anyOf`; the caller's schema still rules the answer.
    bad = {**ANSWER, "x-note": 7}  # `x-` keys must be strings
    fakes.gemini.enqueue(bad)
    fakes.gemini.enqueue(ANSWER)
    async with serve(max_repairs=1) as client:
        result, _ = await generate_with(client, GEMINI.model, REWRITTEN)
    assert tries(result) == [(GEMINI.model, "invalid_output", "invalid_output"), (GEMINI.model, "ok", None)]
    assert "7 is not of type 'string'" in fakes.last_completion(GEMINI)
    jsonschema.validate(result["data"], REWRITTEN)


# --- what a request carries, the deadline over the chain, retries, usage --------------------------


async def test_a_schema_call_tells_the_model_the_schema_and_a_free_text_call_does_not(
    serve: Serve, fakes: Fakes
) -> None:
    fakes.ollama.enqueue(GOOD)
    async with serve() as client:
        await call(client, "generate_structured", prompt="A city.", schema=CITY_SCHEMA, model=OLLAMA.model,
                   system="Be brief.")
        system = fakes.ollama.chat_requests[-1].json["messages"][0]
        assert system["role"] == "system"
        assert system["content"].startswith("Be brief.\n\nAnswer with a single JSON value")
        assert json.dumps(CITY_SCHEMA, separators=(",", ":")) in system["content"]

        image = "data:image/png;base64," + base64.b64encode(png_bytes()).decode()
        fakes.ollama.enqueue("A grey square.")
        text = await call(client, "analyze_image", image=image, prompt="What is it?", model="ollama/llava:7b")
        assert text["text"] == "A grey square."
        sent = fakes.ollama.chat_requests[-1].json
        assert not any("JSON" in m["content"] for m in sent["messages"]), "a free-text call was told to answer JSON"
        assert "format" not in sent or not sent["format"]


async def test_retries_back_off_exponentially_with_jitter(serve: Serve, fakes: Fakes) -> None:
    # Router logic, the same for every provider. Waits: 0.5 s then 1 s, each plus up to 0.5 s of
    # jitter (RETRY_INITIAL_WAIT_S = 0.5): 1.5 to 2.5 s in all, whatever the machine's load
    # adds to the calls themselves (those are timed apart, in each attempt's latency).
    for _ in range(2):
        fakes.ollama.enqueue(**fault_kwargs(OLLAMA, "503"))
    fakes.ollama.enqueue(GOOD)
    async with serve(max_retries=2, timeout_s=30) as client:
        result, _ = await generate(client, OLLAMA.model)
    assert tries(result) == [(OLLAMA.model, "error", "server_error")] * 2 + [(OLLAMA.model, "ok", None)]
    waited_s = (result["latency_ms"] - sum(a["latency_ms"] for a in result["attempts"])) / 1000
    assert 1.5 <= waited_s <= 2.5 + 1.0, f"the two backoffs took {waited_s:.2f} s in all, not 1.5 to 2.5 s"


async def test_after_the_deadline_no_fallback_is_tried(serve: Serve, fakes: Fakes) -> None:
    fakes.ollama.enqueue(hang=True)
    async with serve(max_retries=0, fallback=[OLLAMA.fallback]) as client:
        text, elapsed = await generate_error(client, OLLAMA.model, timeout_s=1)
    assert "did not answer" in text and f"(1 attempt with {OLLAMA.model}: timeout)" in text
    assert fakes.completions(OLLAMA.fallback_provider) == 0
    assert elapsed < 3


async def test_a_fallback_is_tried_while_any_time_remains(serve: Serve, fakes: Fakes) -> None:
    # The first model fails with well under a second of the call's 3 s left: the fallback still gets its turn.
    fakes.ollama.enqueue(delay_s=2.4, **non_transient(OLLAMA, 401))
    fakes.of(BY_NAME[OLLAMA.fallback_provider]).enqueue(GOOD)
    async with serve(max_retries=0, timeout_s=3, fallback=[OLLAMA.fallback]) as client:
        result, _ = await generate(client, OLLAMA.model)
    assert tries(result) == [(OLLAMA.model, "error", "auth"), (OLLAMA.fallback, "ok", None)]


async def test_a_re_ask_is_made_while_any_time_remains(serve: Serve, fakes: Fakes) -> None:
    fakes.ollama.enqueue({"city": 42}, delay_s=2.4)  # invalid, with well under a second of 3 s left
    fakes.ollama.enqueue(GOOD)
    async with serve(max_repairs=1, timeout_s=3) as client:
        result, _ = await generate(client, OLLAMA.model)
    assert tries(result) == [(OLLAMA.model, "invalid_output", "invalid_output"), (OLLAMA.model, "ok", None)]


async def test_a_skipped_provider_says_why_and_when_it_is_tried_again(serve: Serve, fakes: Fakes) -> None:
    fakes.ollama.enqueue(**fault_kwargs(OLLAMA, "503"))
    async with serve(max_retries=0, defaults="circuit_failures = 1\ncircuit_cooldown_s = 30") as client:
        await generate_error(client, OLLAMA.model)
        text, _ = await generate_error(client, OLLAMA.model)
    assert "ollama is skipped: it failed 1 time in a row." in text
    assert "It is tried again in 2" in text or "It is tried again in 3" in text  # of 30 s, a few passed
    assert f"(1 attempt with {OLLAMA.model}: circuit_open)" in text


TOKENS = {"ollama": ("prompt_tokens", "completion_tokens"), "gemini": ("prompt_tokens", "completion_tokens"),
          "anthropic": ("input_tokens", "output_tokens"), "openai": ("prompt_tokens", "completion_tokens"),
          "lmstudio": ("prompt_tokens", "completion_tokens")}


@pytest.mark.parametrize("provider", per_provider())
async def test_usage_adds_up_every_answer_of_the_call(serve: Serve, fakes: Fakes, provider: Provider) -> None:
    tokens_in, tokens_out = TOKENS[provider.name]
    fake = fakes.of(provider)
    fake.enqueue({"city": 42}, **{tokens_in: 100, tokens_out: 7})  # invalid: re-asked
    fake.enqueue(GOOD, **{tokens_in: 130, tokens_out: 11})
    async with serve(max_repairs=1) as client:
        result, _ = await generate(client, provider.model)
    assert tries(result) == [(provider.model, "invalid_output", "invalid_output"), (provider.model, "ok", None)]
    assert result["usage"] == {"input_tokens": 230, "output_tokens": 18, "cached_input_tokens": 0,
                               "cache_write_tokens": 0, "thinking_tokens": 0}
    assert result["latency_ms"] >= sum(a["latency_ms"] for a in result["attempts"]) > 0


async def test_usage_is_zero_when_the_provider_reports_none(serve: Serve, fakes: Fakes) -> None:
    line = {"model": "llama3.2:3b", "created_at": "2026-01-01T00:00:00Z", "done": True, "done_reason": "stop",
            "message": {"role": "assistant", "content": json.dumps(GOOD)}}
    fakes.ollama.enqueue(raw_body=(json.dumps(line) + "\n").encode(), headers={"Content-Type": "application/x-ndjson"})
    async with serve() as client:
        result, _ = await generate(client, OLLAMA.model)
    assert result["data"] == GOOD
    assert result["usage"] == {"input_tokens": 0, "output_tokens": 0, "cached_input_tokens": 0,
                               "cache_write_tokens": 0, "thinking_tokens": 0}
    assert result["cost_usd"] is None  # no usage reported (and no price for Ollama): unknown, not 0


async def test_provider_concurrency_bounds_the_requests_in_flight(fake_ollama: FakeOllama, image_root: Path,
                                                                 make_settings: Any) -> None:
    config = ollama_config(fake_ollama, image_root).replace("[providers.ollama]\n",
                                                            "[providers.ollama]\nconcurrency = 1\n", 1)
    fake_ollama.enqueue(GOOD, delay_s=1.5)
    fake_ollama.enqueue(GOOD)
    answers: list[Any] = []

    async with Client(build_server(make_settings(config))) as client:

        async def one() -> None:
            answers.append((await call(client, "generate_structured", prompt="A city.", schema=CITY_SCHEMA))["data"])

        await assert_sent_one_at_a_time(fake_ollama, one)
    assert answers == [GOOD, GOOD]


# --- what the caller is told when every answer was unusable ---------------------------------------


async def test_the_final_error_shows_how_the_last_answer_began(serve: Serve, fakes: Fakes) -> None:
    # The model's own words make a failure diagnosable (prose instead of JSON, a cut-off object):
    # shown with their whitespace collapsed, clipped at 160 characters.
    prose = "Sure!\n\n   Lyon is a   city " + "x" * 300
    fakes.ollama.enqueue("I think the answer is Paris.")
    fakes.ollama.enqueue(prose)
    async with serve(max_repairs=1) as client:
        text, _ = await generate_error(client, OLLAMA.model)
    collapsed = " ".join(prose.split())
    assert f'The answer began: "{collapsed[:159]}…".' in text
    assert "Paris" not in text, "the error showed an earlier answer, not the last"


async def test_a_short_answer_is_shown_whole(serve: Serve, fakes: Fakes) -> None:
    answer = "Lyon" * 40  # exactly 160 characters: no clipping
    fakes.ollama.enqueue(answer)
    async with serve(max_repairs=0) as client:
        text, _ = await generate_error(client, OLLAMA.model)
    assert f'The answer began: "{answer}".' in text


async def test_the_final_error_lists_at_most_three_problems(serve: Serve, fakes: Fakes) -> None:
    schema = {"type": "object", "required": ["a", "b", "c", "d", "e"]}
    fakes.ollama.enqueue({})
    async with serve(max_repairs=0) as client:
        text = await call_error(client, "generate_structured", prompt="x", schema=schema, model=OLLAMA.model)
    problems = "; ".join(f"at $: '{name}' is a required property" for name in "abc")
    assert f"Last problems: {problems}." in text, text
    assert "'d'" not in text


async def test_a_fallback_id_that_is_not_a_model_is_listed_with_the_others(serve: Serve, fakes: Fakes) -> None:
    fakes.ollama.enqueue(**non_transient(OLLAMA, 401))
    async with serve(max_retries=0, fallback=["nope/x"]) as client:
        text, _ = await generate_error(client, OLLAMA.model)
    assert f"Every model in the fallback chain failed (1 attempts) — {OLLAMA.model}: " in text, text
    assert "nope/x: Unknown model id 'nope/x'" in text, text
