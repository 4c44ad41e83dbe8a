"""The last hour by minute (mcp_llm/history.py): buckets, bounds, quantiles, and merging copies.

Calls are fed as the router feeds them, with real `Attempt`s; the clock is the test's, so minutes
pass without waiting. The end-to-end path (a call through MCP lands in the status page's history)
is in tests/test_status.py.
"""

from __future__ import annotations

import random

import pytest

from mcp_llm.history import MAX_KEYS, MINUTES, Bucket, History, quantiles, window
from mcp_llm.stats import OTHER
from mcp_llm.trace import Attempt

pytestmark = pytest.mark.timeout(30)

START = 1_800_000_000 // 60 * 60  # a minute's first second


class Clock:
    def __init__(self) -> None:
        self.now = float(START)

    def __call__(self) -> float:
        return self.now


def ok(model: str, provider: str, latency_ms: float = 100.0, **extra: object) -> Attempt:
    return Attempt(model=model, provider=provider, outcome="ok", latency_ms=latency_ms, **extra)


def failed(model: str, provider: str, kind: str = "server_error", latency_ms: float = 50.0) -> Attempt:
    return Attempt(model=model, provider=provider, outcome="error", error=kind, latency_ms=latency_ms)


def test_calls_land_in_their_minute_and_idle_minutes_have_empty_slots() -> None:
    clock = Clock()
    history = History(clock=clock)
    history.record([ok("ollama/a", "ollama")], {"ollama/a": (10, 2)}, 100, None)
    clock.now += 30  # same minute
    history.record([failed("ollama/a", "ollama"), ok("claude-x", "anthropic")], {"claude-x": (5, 1)}, 80, None)
    clock.now += 120  # two minutes on
    history.record([ok("ollama/a", "ollama")], {}, 100, None)

    buckets = history.buckets()
    assert [b.start for b in buckets] == [START, START + 120]
    first = buckets[0]
    assert (first.models["ollama/a"].calls, first.models["ollama/a"].failures, first.models["ollama/a"].fallbacks) \
        == (2, 1, 1)
    assert (first.models["ollama/a"].input_tokens, first.models["ollama/a"].output_tokens) == (10, 2)
    assert (first.providers["ollama"].calls, first.providers["ollama"].failures) == (2, 1)
    assert (first.providers["anthropic"].calls, first.providers["anthropic"].failures) == (1, 0)

    slots = window(history.buckets(), history.now_minute())
    assert len(slots) == MINUTES and slots[-1].start == START + 120 and slots[-3].start == START
    assert slots[-2].models == {} and slots[-2].start == START + 60


def test_re_asks_count_as_in_stats() -> None:
    history = History(clock=Clock())
    attempts = [Attempt(model="m/x", provider="m", outcome="invalid_output", error="not_json", latency_ms=10),
                Attempt(model="m/x", provider="m", outcome="ok", latency_ms=12)]
    history.record(attempts, {}, 25, None)
    row = history.buckets()[0].models["m/x"]
    assert (row.calls, row.failures, row.reasks) == (1, 0, 1)


def test_the_ring_keeps_the_last_hour_only() -> None:
    clock = Clock()
    history = History(clock=clock)
    for _ in range(MINUTES + 15):
        history.record([ok("ollama/a", "ollama")], {}, 10, None)
        clock.now += 60
    buckets = history.buckets()
    assert len(buckets) == MINUTES - 1  # the current minute has had no call yet
    assert buckets[0].start == history.now_minute() - (MINUTES - 1) * 60
    clock.now += 3 * 3600
    assert history.buckets() == []  # everything aged out, nothing kept


def test_ever_new_model_ids_cannot_grow_a_minute() -> None:
    history = History(clock=Clock())
    for i in range(MAX_KEYS + 40):
        history.record([ok(f"ollama/m{i}", f"p{i}")], {}, 10, None)
    bucket = history.buckets()[0]
    assert len(bucket.models) == MAX_KEYS + 1 and bucket.models[OTHER].calls == 40
    assert len(bucket.providers) == MAX_KEYS + 1 and bucket.providers[OTHER].calls == 40


def test_quantiles_are_within_one_percent_and_merge_by_adding_bins() -> None:
    rng = random.Random(7)
    values = [rng.lognormvariate(5, 1) for _ in range(5000)]
    history = History(clock=Clock())
    for value in values:
        history.record([ok("ollama/a", "ollama", latency_ms=value)], {}, value, None)
    bins = history.buckets()[0].models["ollama/a"].latency
    ordered = sorted(values)
    for q, got in zip((0.5, 0.95), quantiles(bins), strict=True):
        exact = ordered[max(1, -(-int(q * 1000) * len(ordered) // 1000)) - 1]
        assert got is not None and abs(got - exact) <= 0.011 * exact, (q, got, exact)
    assert quantiles({}) == [None, None]

    one, other = Bucket(START), Bucket(START)
    one.add_counters(history.buckets()[0].counters())
    other.add_counters({name.encode(): str(value).encode()  # as Redis hands them back
                        for name, value in history.buckets()[0].counters().items()})
    one.add_counters(other.counters())  # two replicas' copies of the same minute
    row = one.models["ollama/a"]
    assert row.provider == "ollama" and one.providers["ollama"].calls == 2 * len(values)
    assert row.calls == 2 * len(values) and sum(row.latency.values()) == 2 * len(values)
    assert quantiles(row.latency) == quantiles(bins)  # the same distribution twice over


def test_a_shared_store_gets_each_call_once_as_a_delta() -> None:
    clock = Clock()
    history = History(clock=clock)
    history.sharing = True
    history.record([failed("ollama/a:3b", "ollama"), ok("claude-x", "anthropic", latency_ms=250)],
                   {"claude-x": (7, 3)}, 300, None)
    clock.now += 60
    history.record([ok("ollama/a:3b", "ollama")], {}, 100, None)
    delta = history.take_delta()
    assert list(delta) == [START, START + 60] and history.take_delta() == {}  # taken once
    fleet = [Bucket(start) for start in delta]
    for bucket, start in zip(fleet, delta, strict=True):
        bucket.add_counters(delta[start])
    assert fleet[0].models["claude-x"].input_tokens == 7 and fleet[0].models["claude-x"].fallbacks == 0
    assert fleet[0].models["ollama/a:3b"].fallbacks == 1 and fleet[0].models["ollama/a:3b"].failures == 1
    assert quantiles(fleet[0].models["claude-x"].latency)[0] == pytest.approx(250, rel=0.01)
    assert fleet[1].providers == {"ollama": fleet[1].providers["ollama"]} and fleet[1].providers["ollama"].calls == 1


def test_foreign_or_damaged_counters_are_skipped() -> None:
    bucket = Bucket(START)
    bucket.add_counters({"not json": 1, '["model"]': 2, '["model","m/x","calls"]': "NaN", '["model","m/x","calls"]x': 1,
                         '["provider","p","calls"]': -5, '["provider","p","failures"]': "2",
                         '["model","m/x","latency","7"]': 3, '["model","m/x","provider","m"]': 1})
    assert bucket.providers["p"].failures == 2 and bucket.providers["p"].calls == 0
    assert bucket.models["m/x"].provider == "m" and bucket.models["m/x"].latency == {}


def test_cost_is_summed_and_unpriced_attempts_are_counted() -> None:
    """An attempt's `cost_usd` (issue 21): a price, or None when the model's price is unknown (never a guess)."""
    history = History(clock=Clock())
    history.record([ok("openai/x", "openai", cost_usd=0.002)], {}, 5, None)
    history.record([ok("openai/x", "openai", cost_usd=None)], {}, 5, None)
    history.record([ok("ollama/a", "ollama", cost_usd=0.0)], {}, 5, None)
    bucket = history.buckets()[0]
    assert bucket.models["openai/x"].cost_usd == pytest.approx(0.002)
    assert bucket.models["openai/x"].unpriced_attempts == 1
    assert (bucket.models["ollama/a"].cost_usd, bucket.models["ollama/a"].unpriced_attempts) == (0.0, 0)
    again = Bucket(START)
    again.add_counters(bucket.counters())
    assert again.models["openai/x"].cost_usd == pytest.approx(0.002) and again.models["openai/x"].unpriced_attempts == 1
