"""Fault injection through a real MCP client: each provider and each fault, and what the user sees.

Every test builds the server with every provider's fake behind it: Ollama, Gemini, Anthropic,
OpenAI and a named OpenAI-compatible endpoint (`serve`, conftest.py; the providers, faults and
calling helpers are in tests/fleet.py). It injects one fault into one provider's fake with
`enqueue(...)` (or points the provider at a closed port), calls `generate_structured` through
`mcp.Client`, and asserts the outcome from the tool result (`data`, `model`, `provider`,
`attempts`) or from the tool error. After each faulty call the same session must answer the next
call correctly.

Waits are kept small: `max_retries` is at most 1 (backoff starts at 0.5 s plus up to 1 s of
jitter), Retry-After is 1 s, a hung request is given up on after 0.5 s (1 s at a call's deadline).
The fakes run for the whole module and are reset before each test; the provider SDKs are imported
once up front, so no call's deadline pays for an import (Anthropic's takes ~2 s).
"""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest

from tests.conftest import free_port
from tests.fleet import (
    BY_NAME,
    GOOD,
    INVALID,
    OLLAMA,
    TRANSIENT,
    Fakes,
    Provider,
    Serve,
    assert_next_call_ok,
    fault_kwargs,
    generate,
    generate_error,
    health,
    matrix,
    per_provider,
    tries,
)

pytestmark = pytest.mark.anyio

HUNG_TRY_S = 0.5  # how long one hung request is waited for, when a test wants a retry or a fallback after it


def read_timeout_config(config: dict[str, Any], arguments: dict[str, Any], fault: str) -> None:
    """A hung request must end well before the call's deadline, so a retry or fallback can follow.

    Ollama and Anthropic honour `first_response_timeout_s`; Gemini's SDK has a single timeout, which
    is `defaults.timeout_s` capped by what is left of the call, so `defaults.timeout_s` is made small
    too, and the call gets a larger deadline through the tool's `timeout_s` argument. (That Gemini
    cap is what test_a_larger_timeout_s_gives_a_slow_model_more_time calls a bug: once it is fixed,
    Gemini needs its own first-response budget for these cases to stay possible.)
    """
    if fault == "read_timeout":
        config.update(timeout_s=HUNG_TRY_S, defaults=f"first_response_timeout_s = {HUNG_TRY_S}")
        arguments.update(timeout_s=8)


# --- transient faults: retried, then fallen back on -----------------------------------------------


@pytest.mark.parametrize(("provider", "fault"), matrix(list(TRANSIENT)))
async def test_transient_fault_is_retried_then_succeeds(serve: Serve, fakes: Fakes, provider: Provider,
                                                        fault: str) -> None:
    fake = fakes.of(provider)
    fake.enqueue(**fault_kwargs(provider, fault))
    fake.enqueue(GOOD)
    config: dict[str, Any] = {"max_retries": 1}
    arguments: dict[str, Any] = {"timeout_s": 5} if fault == "429" else {}
    read_timeout_config(config, arguments, fault)
    async with serve(**config) as client:
        result, elapsed = await generate(client, provider.model, **arguments)
        assert result["data"] == GOOD
        assert (result["model"], result["provider"]) == (provider.model, provider.name)
        assert tries(result) == [(provider.model, "error", TRANSIENT[fault]), (provider.model, "ok", None)]
        assert fakes.completions(provider) == 2 and fake.queued == 0
        if fault == "429":  # Retry-After: 1 was waited out, and the deadline (5 s) was not
            waited_ms = result["latency_ms"] - sum(a["latency_ms"] for a in result["attempts"])
            assert elapsed >= 0.9 and waited_ms >= 900, f"Retry-After: 1 was not honoured ({waited_ms} ms)"
            # the wait between the tries (not the tries themselves, which a loaded machine slows)
            assert waited_ms < 2000, f"waited {waited_ms:.0f} ms between tries for a Retry-After of 1 s"
        if fault == "read_timeout":
            hung_ms = result["attempts"][0]["latency_ms"]
            assert HUNG_TRY_S * 1000 * 0.9 <= hung_ms <= HUNG_TRY_S * 1000 + 2000, hung_ms
            assert fake.wait_for_disconnect(timeout=5), "the hung request was left open"
        await assert_next_call_ok(client, provider.model, provider.name)


@pytest.mark.parametrize(("provider", "fault"), matrix(list(TRANSIENT)))
async def test_transient_fault_falls_back_to_another_provider(serve: Serve, fakes: Fakes, provider: Provider,
                                                              fault: str) -> None:
    config: dict[str, Any] = {"max_retries": 0, "fallback": [provider.fallback]}
    arguments: dict[str, Any] = {}
    read_timeout_config(config, arguments, fault)
    async with serve(**config) as client:
        if fault == "429":  # the wall time below is the fallback's alone: SDK imports and first-call set-up paid now
            await generate(client, provider.model)
            await generate(client, provider.fallback)
        before = fakes.completions(provider)
        fakes.of(provider).enqueue(**fault_kwargs(provider, fault))
        fakes.of(provider.fallback_provider).enqueue(GOOD)
        result, elapsed = await generate(client, provider.model, **arguments)
        assert result["data"] == GOOD
        assert (result["model"], result["provider"]) == (provider.fallback, provider.fallback_provider)
        assert [(a["model"], a["provider"], a["outcome"], a["error"]) for a in result["attempts"]] == [
            (provider.model, provider.name, "error", TRANSIENT[fault]),
            (provider.fallback, provider.fallback_provider, "ok", None),
        ]
        assert fakes.completions(provider) == before + 1, "max_retries = 0, yet the provider was asked again"
        if fault == "429":
            assert elapsed < 0.9, f"no retries are allowed, yet the fallback waited ({elapsed:.2f} s)"
        if fault == "read_timeout":
            assert fakes.of(provider).wait_for_disconnect(timeout=5), "the hung request was left open"
        await assert_next_call_ok(client, provider.model, provider.name)


# --- 429: Retry-After honoured up to the cap, never past the deadline -----------------------------


@pytest.mark.parametrize("provider", per_provider())
async def test_retry_after_beyond_the_deadline_fails_fast(serve: Serve, fakes: Fakes, provider: Provider) -> None:
    fake = fakes.of(provider)
    fake.enqueue(**fault_kwargs(provider, "429", retry_after="10"))
    fake.enqueue(GOOD)  # must not be asked for: there is no time to wait 10 s in a 3 s call
    async with serve(max_retries=1) as client:
        text, elapsed = await generate_error(client, provider.model, timeout_s=3)
        assert elapsed < 1.0, f"slept {elapsed:.2f} s on a Retry-After it could never wait out"
        assert "simulated 429, slow down" in text
        assert "429" in text or "rate limit" in text.lower(), text
        assert f"(1 attempt with {provider.model}: rate_limited)" in text
        assert fakes.completions(provider) == 1 and fake.queued == 1
        result, _ = await generate(client, provider.model)  # the next call gets the queued good reply
        assert result["data"] == GOOD and tries(result) == [(provider.model, "ok", None)]


@pytest.mark.parametrize("provider", per_provider())
async def test_retry_after_is_capped_by_retry_after_max_s(serve: Serve, fakes: Fakes, provider: Provider) -> None:
    fake = fakes.of(provider)
    fake.enqueue(**fault_kwargs(provider, "429", retry_after="60"))
    fake.enqueue(GOOD)
    async with serve(max_retries=1, defaults="retry_after_max_s = 0.5") as client:
        result, elapsed = await generate(client, provider.model, timeout_s=5)
        assert result["data"] == GOOD
        assert tries(result) == [(provider.model, "error", "rate_limited"), (provider.model, "ok", None)]
        assert 0.45 <= elapsed < 2.0, f"Retry-After: 60 capped at 0.5 s, yet the call took {elapsed:.2f} s"
        await assert_next_call_ok(client, provider.model, provider.name)


# --- read timeout: the call ends at its deadline, and the request is closed -----------------------


@pytest.mark.parametrize("provider", per_provider())
async def test_hung_provider_fails_at_the_deadline_and_is_disconnected(serve: Serve, fakes: Fakes,
                                                                       provider: Provider) -> None:
    fake = fakes.of(provider)
    fake.enqueue(hang=True)
    async with serve(max_retries=1) as client:
        text, elapsed = await generate_error(client, provider.model, timeout_s=1)
        assert 0.9 <= elapsed <= 1 + 2, f"a 1 s call ended after {elapsed:.2f} s"
        assert "did not answer" in text and provider.model in text
        assert "timeout" in text, f"the error does not say what to do: {text}"
        assert fake.wait_for_disconnect(timeout=5), "the hung request was left open"
        assert fakes.completions(provider) == 1
        await assert_next_call_ok(client, provider.model, provider.name)


@pytest.mark.parametrize("provider", per_provider())
async def test_a_larger_timeout_s_gives_a_slow_model_more_time(serve: Serve, fakes: Fakes,
                                                               provider: Provider) -> None:
    fakes.of(provider).enqueue(GOOD, delay_s=1.0)  # a cold model: the first byte comes after 1 s
    async with serve(max_retries=0, timeout_s=0.5) as client:
        result, _ = await generate(client, provider.model, timeout_s=4)
        assert result["data"] == GOOD and tries(result) == [(provider.model, "ok", None)]


# --- connection refused ---------------------------------------------------------------------------


@pytest.mark.parametrize("provider", per_provider())
async def test_connection_refused_is_retried_then_a_clear_error(serve: Serve, fakes: Fakes,
                                                                provider: Provider) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    async with serve(max_retries=1, endpoints={provider.name: endpoint}) as client:
        text, elapsed = await generate_error(client, provider.model)
        assert f"Cannot reach {provider.label} at {endpoint}" in text
        assert f"{provider.config_table}.endpoint" in text, f"the error does not say what to do: {text}"
        assert f"(2 attempts with {provider.model}: unavailable, unavailable)" in text, "not retried once"
        assert elapsed < 3.0
        assert (await health(client, provider))["status"] == "down"
        other = BY_NAME[provider.fallback_provider]
        await assert_next_call_ok(client, other.model, other.name)


@pytest.mark.parametrize("provider", per_provider(own_fallback=True))  # a named endpoint's models name none
async def test_connection_refused_falls_back_to_the_models_own_fallback(serve: Serve, fakes: Fakes,
                                                                        provider: Provider) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    fakes.of(provider.fallback_provider).enqueue(GOOD)
    async with serve(max_retries=1, endpoints={provider.name: endpoint},
                     model_fallback={provider.name: [provider.fallback]}) as client:
        result, _ = await generate(client, provider.model)
        assert result["data"] == GOOD
        assert (result["model"], result["provider"]) == (provider.fallback, provider.fallback_provider)
        assert tries(result) == [
            (provider.model, "error", "unavailable"),
            (provider.model, "error", "unavailable"),
            (provider.fallback, "ok", None),
        ]
        other = BY_NAME[provider.fallback_provider]
        await assert_next_call_ok(client, other.model, other.name)


# --- invalid output: re-asked, then fallen back on or reported ------------------------------------


@pytest.mark.parametrize(("provider", "fault"), matrix(list(INVALID)))
async def test_invalid_output_is_re_asked_with_the_problems(serve: Serve, fakes: Fakes, provider: Provider,
                                                            fault: str) -> None:
    bad, kind = INVALID[fault]
    fake = fakes.of(provider)
    fake.enqueue(bad)
    fake.enqueue(GOOD)
    async with serve(max_repairs=1) as client:
        result, _ = await generate(client, provider.model)
        assert result["data"] == GOOD
        assert (result["model"], result["provider"]) == (provider.model, provider.name)
        assert tries(result) == [(provider.model, "invalid_output", kind), (provider.model, "ok", None)]
        re_ask = fakes.last_completion(provider)
        assert "Your previous answer was not valid" in re_ask
        problem = "'population' is a required property" if fault == "schema_violation" else "holds no JSON"
        assert problem in re_ask, "the re-ask does not tell the model what was wrong"
        await assert_next_call_ok(client, provider.model, provider.name)


@pytest.mark.parametrize(("provider", "fault"), matrix(list(INVALID)))
async def test_output_that_stays_invalid_is_a_clear_error(serve: Serve, fakes: Fakes, provider: Provider,
                                                          fault: str) -> None:
    bad, _ = INVALID[fault]
    fake = fakes.of(provider)
    fake.enqueue(bad)
    fake.enqueue(bad)
    async with serve(max_repairs=1) as client:
        text, _ = await generate_error(client, provider.model)
        assert f"(2 attempts with {provider.model}: " in text
        assert "Last problems:" in text
        if fault == "schema_violation":
            assert "does not match the schema" in text
            assert "'population' is a required property" in text and "42 is not of type 'string'" in text
        else:
            assert "not JSON" in text and "holds no JSON value" in text
        assert "simplify the schema" in text, f"the error does not say what to do: {text}"
        assert fake.queued == 0
        await assert_next_call_ok(client, provider.model, provider.name)


@pytest.mark.parametrize(("provider", "fault"), matrix(list(INVALID)))
async def test_output_that_stays_invalid_falls_back(serve: Serve, fakes: Fakes, provider: Provider,
                                                    fault: str) -> None:
    bad, kind = INVALID[fault]
    fake = fakes.of(provider)
    fake.enqueue(bad)
    fake.enqueue(bad)
    fakes.of(provider.fallback_provider).enqueue(GOOD)
    async with serve(max_repairs=1, fallback=[provider.fallback]) as client:
        result, _ = await generate(client, provider.model)
        assert result["data"] == GOOD
        assert (result["model"], result["provider"]) == (provider.fallback, provider.fallback_provider)
        assert tries(result) == [
            (provider.model, "invalid_output", kind),
            (provider.model, "invalid_output", kind),
            (provider.fallback, "ok", None),
        ]
        await assert_next_call_ok(client, provider.model, provider.name)


# --- circuit breaker ------------------------------------------------------------------------------

# Long enough that the calls made while the circuit is open finish inside it on a loaded machine.
COOL_DOWN_S = 2.0
CIRCUIT = f"circuit_failures = 2\ncircuit_cooldown_s = {COOL_DOWN_S}"


async def cool_down_from(opened: float) -> None:
    """Until the cool-down that began at `opened` (time.monotonic()) is over: a clock, not a race."""
    await anyio.sleep(max(opened + COOL_DOWN_S - time.monotonic(), 0) + 0.1)


@pytest.mark.parametrize("provider", per_provider())
async def test_circuit_opens_skips_the_provider_and_closes_after_a_good_trial(
    serve: Serve, fakes: Fakes, provider: Provider, monkeypatch: pytest.MonkeyPatch
) -> None:
    # provider_health caches its probes for 5 s; with the cache on, a stale entry would hide the
    # circuit's changes (see test_provider_health_shows_the_circuit_as_it_is_now).
    monkeypatch.setattr("mcp_llm.app.HEALTH_CACHE_S", 0.0)
    fake = fakes.of(provider)
    fake.enqueue(**fault_kwargs(provider, "503"))
    fake.enqueue(**fault_kwargs(provider, "503"))
    async with serve(max_retries=1, fallback=[provider.fallback], defaults=CIRCUIT) as client:
        assert (await health(client, provider))["circuit"] == "closed"
        first, _ = await generate(client, provider.model)  # two transient failures in a row: the circuit opens
        opened = time.monotonic()
        assert first["model"] == provider.fallback
        assert tries(first) == [
            (provider.model, "error", "server_error"),
            (provider.model, "error", "server_error"),
            (provider.fallback, "ok", None),
        ]

        second, _ = await generate(client, provider.model)
        assert (second["model"], second["provider"]) == (provider.fallback, provider.fallback_provider)
        assert [(a["provider"], a["outcome"], a["error"]) for a in second["attempts"]] == [
            (provider.name, "skipped", "circuit_open"),
            (provider.fallback_provider, "ok", None),
        ]
        assert fakes.completions(provider) == 2, "an open circuit still sent a request"
        assert (await health(client, provider))["circuit"] == "open"

        await cool_down_from(opened)  # one trial call may go through now
        assert (await health(client, provider))["circuit"] == "half_open"
        trial, _ = await generate(client, provider.model)
        assert (trial["model"], trial["provider"]) == (provider.model, provider.name)
        assert tries(trial) == [(provider.model, "ok", None)]
        assert (await health(client, provider))["circuit"] == "closed"
        await assert_next_call_ok(client, provider.model, provider.name)


@pytest.mark.parametrize("provider", per_provider())
async def test_a_failed_trial_opens_the_circuit_again(serve: Serve, fakes: Fakes, provider: Provider,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("mcp_llm.app.HEALTH_CACHE_S", 0.0)
    fake = fakes.of(provider)
    for _ in range(2):
        fake.enqueue(**fault_kwargs(provider, "500"))
    async with serve(max_retries=0, fallback=[provider.fallback], defaults=CIRCUIT) as client:
        for _ in range(2):
            await generate(client, provider.model)
        opened = time.monotonic()
        assert (await health(client, provider))["circuit"] == "open"
        await cool_down_from(opened)
        fake.enqueue(**fault_kwargs(provider, "500"))
        trial, _ = await generate(client, provider.model)
        assert tries(trial) == [(provider.model, "error", "server_error"), (provider.fallback, "ok", None)]
        assert (await health(client, provider))["circuit"] == "open"
        after, _ = await generate(client, provider.model)  # a new cool-down: skipped at once
        assert [(a["outcome"], a["error"]) for a in after["attempts"]] == [("skipped", "circuit_open"), ("ok", None)]
        assert fakes.completions(provider) == 3


async def test_the_failure_that_opens_the_circuit_falls_back_at_once(serve: Serve, fakes: Fakes,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # Router logic, the same for every provider: one provider is enough. A retry would sleep 5 s or
    # more (within the deadline): far beyond a call that falls back at once, whatever the machine's load.
    monkeypatch.setattr("mcp_llm.router.RETRY_INITIAL_WAIT_S", 5.0)
    fakes.ollama.enqueue(**fault_kwargs(OLLAMA, "503"))
    async with serve(max_retries=1, fallback=[OLLAMA.fallback],
                     defaults="circuit_failures = 1\ncircuit_cooldown_s = 30") as client:
        result, elapsed = await generate(client, OLLAMA.model)
        assert result["model"] == OLLAMA.fallback
        assert elapsed < 4, f"slept {elapsed:.2f} s on a retry the open circuit could only skip"
        assert [(a["model"], a["outcome"]) for a in result["attempts"]] == [
            (OLLAMA.model, "error"), (OLLAMA.fallback, "ok")]


@pytest.mark.parametrize("provider", per_provider())
async def test_provider_health_shows_the_circuit_as_it_is_now(serve: Serve, fakes: Fakes,
                                                              provider: Provider) -> None:
    fakes.of(provider).enqueue(**fault_kwargs(provider, "503"))
    async with serve(max_retries=0, fallback=[provider.fallback],
                     defaults="circuit_failures = 1\ncircuit_cooldown_s = 30") as client:
        assert (await health(client, provider))["circuit"] == "closed"
        result, _ = await generate(client, provider.model)  # one transient failure: the circuit opens
        assert result["model"] == provider.fallback
        assert (await health(client, provider))["circuit"] == "open"
