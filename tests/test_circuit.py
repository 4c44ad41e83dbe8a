"""The circuit breaker (mcp_llm/circuit.py): its states step by step, and half-open through a real MCP client.

A half-open circuit lets one trial call through at a time; the others are skipped meanwhile. A
trial that ends without a verdict (a non-transient error, a cancelled call) frees the next trial.
The provider-level tests run on every provider of tests/fleet.py. What opens a circuit (transient
failures only) is in test_router.py and test_faults.py.
"""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest

from mcp_llm.circuit import CircuitBreakers
from tests.fleet import (
    GOOD,
    SCHEMA,
    Fakes,
    Provider,
    Serve,
    assert_next_call_ok,
    fault_kwargs,
    generate,
    health,
    non_transient,
    per_provider,
    tries,
)

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("fresh_health")]

COOL_DOWN_S = 1.0
CIRCUIT = f"circuit_failures = 1\ncircuit_cooldown_s = {COOL_DOWN_S}"


async def wait_for_completions(servers: Fakes, provider: Provider, count: int) -> None:
    """Until the provider's fake has received `count` completion requests (an event, not a poll)."""
    fake = servers.of(provider)
    arrived = await anyio.to_thread.run_sync(fake.wait_for, lambda: servers.completions(provider) >= count, 30)
    assert arrived, f"{provider}: request {count} never reached the fake"


async def open_the_circuit(client: Any, servers: Fakes, provider: Provider) -> None:
    """One transient failure (with `circuit_failures = 1`) opens it; the call falls back; the cool-down passes."""
    servers.of(provider).enqueue(**fault_kwargs(provider, "503"))
    started = time.monotonic()
    first, _ = await generate(client, provider.model)
    assert tries(first) == [(provider.model, "error", "server_error"), (provider.fallback, "ok", None)]
    state = (await health(client, provider))["circuit"]
    if time.monotonic() - started < COOL_DOWN_S:  # on a loaded machine the cool-down may be over already
        assert state == "open"
    await anyio.sleep(COOL_DOWN_S + 0.1)  # a clock, not a race: the cool-down is time itself
    assert (await health(client, provider))["circuit"] == "half_open"


# --- the circuit breaker, state by state ----------------------------------------------------------


def test_circuit_states_step_by_step() -> None:
    breakers = CircuitBreakers(threshold=2, cooldown_s=60)
    assert (breakers.state("p"), breakers.allow("p"), breakers.retry_in("p")) == ("closed", True, 0.0)
    breakers.failure("p")
    assert (breakers.state("p"), breakers.allow("p"), breakers.retry_in("p")) == ("closed", True, 0.0)
    breakers.success("p")  # a success forgets the failures before it: two more are needed
    breakers.failure("p")
    assert breakers.state("p") == "closed"
    breakers.failure("p")
    assert (breakers.state("p"), breakers.allow("p")) == ("open", False)
    assert 59 < breakers.retry_in("p") <= 60
    assert (breakers.state("q"), breakers.allow("q"), breakers.retry_in("q")) == ("closed", True, 0.0)
    breakers.release("p")  # no trial is running: releasing changes nothing
    breakers.release("never-called")
    assert (breakers.state("p"), breakers.allow("p")) == ("open", False)


def test_half_open_lets_one_trial_through_at_a_time() -> None:
    breakers = CircuitBreakers(threshold=1, cooldown_s=0.05)
    breakers.failure("p")
    assert breakers.state("p") == "open"
    time.sleep(0.06)  # the cool-down is a clock: nothing to wait on but time
    assert (breakers.state("p"), breakers.retry_in("p")) == ("half_open", 0.0)
    assert breakers.allow("p") is True, "the trial call"
    assert breakers.allow("p") is False, "a second call while the trial runs"
    assert breakers.allow("p") is False
    assert breakers.state("p") == "half_open"
    breakers.release("p")  # the trial ended without a verdict: the next call is the trial
    assert breakers.allow("p") is True
    breakers.failure("p")  # a failed trial: open again, for a whole new cool-down
    assert (breakers.state("p"), breakers.allow("p")) == ("open", False)
    assert breakers.retry_in("p") > 0.03
    time.sleep(0.06)
    assert breakers.allow("p") is True
    breakers.success("p")  # a good trial closes it, and every call goes through
    assert (breakers.state("p"), breakers.allow("p"), breakers.allow("p")) == ("closed", True, True)
    breakers.failure("p")  # and it takes `threshold` failures again to open it
    assert breakers.state("p") == "open"


# --- half-open through the tools: one trial call at a time ----------------------------------------


@pytest.mark.parametrize("provider", per_provider())
async def test_half_open_sends_one_trial_and_skips_the_calls_meanwhile(
    serve: Serve, fakes: Fakes, provider: Provider
) -> None:
    async with serve(max_retries=0, fallback=[provider.fallback], defaults=CIRCUIT) as client:
        await open_the_circuit(client, fakes, provider)
        fakes.of(provider).enqueue(GOOD, delay_s=4.0)  # the trial is slow: other calls come while it runs
        trial: dict[str, Any] = {}

        async def run_trial() -> None:
            trial["result"], _ = await generate(client, provider.model)

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                tg.start_soon(run_trial)
                await wait_for_completions(fakes, provider, 2)  # the trial is in flight
                for _ in range(2):
                    meanwhile, elapsed = await generate(client, provider.model)
                    assert [(a["provider"], a["outcome"], a["error"]) for a in meanwhile["attempts"]] == [
                        (provider.name, "skipped", "circuit_open"), (provider.fallback_provider, "ok", None)]
                    assert elapsed < 3.0, "a call during the trial waited for it instead of falling back"
                assert fakes.completions(provider) == 2, "a half-open circuit let a second call through"
        assert tries(trial["result"]) == [(provider.model, "ok", None)]
        assert (await health(client, provider))["circuit"] == "closed"
        await assert_next_call_ok(client, provider.model, provider.name)


@pytest.mark.parametrize("provider", per_provider())
async def test_a_trial_ending_in_a_non_transient_error_frees_the_next_trial(
    serve: Serve, fakes: Fakes, provider: Provider
) -> None:
    async with serve(max_retries=0, fallback=[provider.fallback], defaults=CIRCUIT) as client:
        await open_the_circuit(client, fakes, provider)
        fakes.of(provider).enqueue(**non_transient(provider, 400))
        trial, _ = await generate(client, provider.model)
        assert tries(trial) == [(provider.model, "error", "bad_request"), (provider.fallback, "ok", None)]
        assert (await health(client, provider))["circuit"] == "half_open", "a 400 decided the trial"
        # The next call is the trial now (not skipped), and its success closes the circuit.
        await assert_next_call_ok(client, provider.model, provider.name)
        assert (await health(client, provider))["circuit"] == "closed"


@pytest.mark.parametrize("provider", per_provider())
async def test_a_cancelled_trial_is_no_verdict(serve: Serve, fakes: Fakes, provider: Provider) -> None:
    async with serve(max_retries=0, fallback=[provider.fallback], defaults=CIRCUIT) as client:
        await open_the_circuit(client, fakes, provider)
        fakes.of(provider).enqueue(hang=True)
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(client.call_tool, "generate_structured",
                              {"prompt": "wait", "schema": SCHEMA, "model": provider.model})
                await wait_for_completions(fakes, provider, 2)  # the trial is in flight
                tg.cancel_scope.cancel()
        assert await anyio.to_thread.run_sync(fakes.of(provider).wait_for_disconnect, 10)
        assert (await health(client, provider))["circuit"] == "half_open", "a cancelled trial decided the circuit"
        await assert_next_call_ok(client, provider.model, provider.name)  # the next call is the trial
        assert (await health(client, provider))["circuit"] == "closed"
