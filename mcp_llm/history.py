"""The last hour, minute by minute: what the status page charts (`/status`, `/status.json`).

A ring of per-minute buckets, at most `MINUTES` of them (older ones fall off; a minute with no call
has no bucket). Each bucket holds, per model: calls, failures, re-asks, fallbacks, tokens, cost and
its attempts' latencies; per provider: calls and failures. It is fed from the same place as the
usage since start (`Router.run`, beside `Stats.record`) and counts a call exactly as `stats.py`
does (`_per_model`: a call that tried a model is one call of it; a failure is a call it did not
answer), so the page's charts and `mcp-llm://stats` never disagree on what a call is.

Latencies are kept as DDSketch bins (the `ddsketch` package's logarithmic mapping: a value is
counted under the integer key of the bucket it falls in, every value of a bucket within 1 % of the
value read back). Bins add up: two minutes, or two replicas' copies of one minute, merge by adding
their counts, and p50/p95 read from the merged bins keep the same 1 % bound. That is what lets a
shared store hold the fleet's history as plain counters (`Bucket.counters` / `add_counters`: one
Redis hash a minute, each replica adding its `History.take_delta` once).

Memory is bounded: `MINUTES` buckets of at most `MAX_KEYS` models and providers each (any more are
counted under `(other)`, as in stats.py), each model's bins bounded by the mapping's range.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any

from mcp_llm.stats import OTHER, _Attempt, _per_model

if TYPE_CHECKING:
    from ddsketch import LogarithmicMapping

MINUTES = 60
MAX_KEYS = 64
RELATIVE_ACCURACY = 0.01
MINUTE_S = 60


@cache
def _mapping() -> LogarithmicMapping:
    """Imported on first use: start-up does not pay for it."""
    from ddsketch import LogarithmicMapping

    return LogarithmicMapping(RELATIVE_ACCURACY)


def latency_key(latency_ms: float) -> int:
    """The bin a latency is counted in (a latency under 1 µs counts as 1 µs: the mapping takes no 0)."""
    return int(_mapping().key(max(latency_ms, 0.001)))


def quantiles(bins: Mapping[int, int], qs: Sequence[float] = (0.5, 0.95)) -> list[float | None]:
    """Nearest-rank quantiles of the values counted in `bins`, each within 1 % of the true one."""
    total = sum(bins.values())
    if total <= 0:
        return [None for _ in qs]
    mapping = _mapping()
    ordered = sorted(bins.items())
    out: list[float | None] = []
    for q in qs:
        rank = max(1, math.ceil(q * total))
        seen = 0
        for key, count in ordered:
            seen += count
            if seen >= rank:
                out.append(round(mapping.value(key), 1))
                break
    return out


@dataclass
class ModelMinute:
    provider: str
    calls: int = 0
    failures: int = 0
    reasks: int = 0
    fallbacks: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    unpriced_attempts: int = 0  # attempts whose price is unknown (their cost is not in cost_usd), as in stats.py
    latency: Counter[int] = field(default_factory=Counter)


@dataclass
class ProviderMinute:
    calls: int = 0
    failures: int = 0


INT_FIELDS = ("calls", "failures", "reasks", "fallbacks", "input_tokens", "output_tokens", "unpriced_attempts")


@dataclass
class Bucket:
    """One minute: `start` is its first second (epoch seconds, a multiple of 60)."""

    start: int
    models: dict[str, ModelMinute] = field(default_factory=dict)
    providers: dict[str, ProviderMinute] = field(default_factory=dict)

    def model(self, model_id: str, provider: str) -> ModelMinute:
        if model_id not in self.models and len(self.models) >= MAX_KEYS:
            model_id, provider = OTHER, OTHER
        return self.models.setdefault(model_id, ModelMinute(provider))

    def provider(self, name: str) -> ProviderMinute:
        if name not in self.providers and len(self.providers) >= MAX_KEYS:
            name = OTHER
        return self.providers.setdefault(name, ProviderMinute())

    def counters(self) -> dict[str, float]:
        """This minute as flat counters, each named by a JSON list of what it counts (`["model", id, "calls"]`,
        `["model", id, "latency", bin]`, `["provider", name, "failures"]`…): what a shared store adds up
        (Redis HINCRBY / HINCRBYFLOAT), as a replica's delta or the fleet's total. Zeros are left out."""
        out: dict[str, float] = {}
        for model_id, row in self.models.items():
            out[_name("model", model_id, "provider", row.provider)] = row.calls or 1
            for name in INT_FIELDS:
                if getattr(row, name):
                    out[_name("model", model_id, name)] = getattr(row, name)
            if row.cost_usd:
                out[_name("model", model_id, "cost_usd")] = row.cost_usd
            for key, count in row.latency.items():
                out[_name("model", model_id, "latency", key)] = count
        for name, prow in self.providers.items():
            for what in ("calls", "failures"):
                if getattr(prow, what):
                    out[_name("provider", name, what)] = getattr(prow, what)
        return out

    def add_counters(self, counters: Mapping[Any, Any]) -> None:
        """Add counters as `counters()` names them (text or bytes, as Redis returns them); a name or a value
        that is not one of ours is skipped, so a foreign or damaged entry costs nothing but itself."""
        parsed: list[tuple[list[Any], float]] = []
        for raw_name, raw_value in counters.items():
            try:
                name = json.loads(raw_name)
                value = float(raw_value)
            except (TypeError, ValueError):
                continue
            if isinstance(name, list) and len(name) >= 3 and all(isinstance(part, str | int) for part in name) \
                    and math.isfinite(value) and value >= 0:
                parsed.append((name, value))
        for name, _ in parsed:  # each model's row first, with its provider
            if name[0] == "model" and name[2] == "provider" and len(name) == 4:
                self.model(str(name[1]), str(name[3]))
        for name, value in parsed:
            kind, key, what = str(name[0]), str(name[1]), name[2]
            if kind == "provider" and what in ("calls", "failures") and len(name) == 3:
                prow = self.provider(key)
                setattr(prow, str(what), getattr(prow, str(what)) + int(value))
            elif kind == "model" and what != "provider":
                row = self.model(key, self.models[key].provider if key in self.models else OTHER)
                if what in INT_FIELDS and len(name) == 3:
                    setattr(row, str(what), getattr(row, str(what)) + int(value))
                elif what == "cost_usd" and len(name) == 3:
                    row.cost_usd += value
                elif what == "latency" and len(name) == 4 and isinstance(name[3], int):
                    row.latency[name[3]] += int(value)


def _name(*parts: str | int) -> str:
    return json.dumps(parts, separators=(",", ":"))


class History:
    """The ring of per-minute buckets, newest last."""

    def __init__(self, minutes: int = MINUTES, clock: Callable[[], float] = time.time) -> None:
        self.minutes = minutes
        self._clock = clock
        self._buckets: list[Bucket] = []
        self.sharing = False  # set by a shared store: what is counted is also kept for it (`take_delta`)
        self._delta: dict[int, Bucket] = {}

    def now_minute(self) -> int:
        return int(self._clock()) // MINUTE_S * MINUTE_S

    def _current(self) -> Bucket:
        start = self.now_minute()
        if not self._buckets or self._buckets[-1].start != start:
            self._buckets.append(Bucket(start))
            self._prune(start)
        return self._buckets[-1]

    def _prune(self, now: int) -> None:
        oldest = now - (self.minutes - 1) * MINUTE_S
        self._buckets = [bucket for bucket in self._buckets if bucket.start >= oldest]

    def record(self, attempts: Sequence[_Attempt], tokens: Mapping[str, tuple[int, int]],
               latency_ms: float, error_kind: str | None) -> None:
        """One finished call, as `Stats.record` takes it (the arguments are the same)."""
        bucket = self._current()
        per_model = _per_model(attempts)
        _add(bucket, per_model, tokens)
        if self.sharing:
            _add(self._delta.setdefault(bucket.start, Bucket(bucket.start)), per_model, tokens)

    def take_delta(self) -> dict[int, dict[str, float]]:
        """What was counted since the last delta was taken, per minute, as counters (for the shared store)."""
        delta, self._delta = self._delta, {}
        return {start: bucket.counters() for start, bucket in sorted(delta.items())}

    def buckets(self) -> list[Bucket]:
        """The buckets of the last `minutes` minutes, oldest first (an idle minute has none)."""
        self._prune(self.now_minute())
        return list(self._buckets)


def _add(bucket: Bucket, per_model: Mapping[str, Any], tokens: Mapping[str, tuple[int, int]]) -> None:
    """One call's counts (`_per_model`'s, its cost included, and its tokens) into one bucket."""
    for model_id, seen in per_model.items():
        row = bucket.model(model_id, seen.provider)
        provider = bucket.provider(seen.provider)
        row.calls += 1
        provider.calls += 1
        if not seen.answered:
            row.failures += 1
            provider.failures += 1
        row.reasks += seen.reasks
        row.fallbacks += seen.fallbacks
        used = tokens.get(model_id, (0, 0))
        row.input_tokens += used[0]
        row.output_tokens += used[1]
        row.cost_usd += seen.cost_usd
        row.unpriced_attempts += seen.unpriced
        row.latency.update(latency_key(latency) for latency in seen.latencies)


def window(buckets: Sequence[Bucket], now_minute: int, minutes: int = MINUTES) -> list[Bucket]:
    """The last `minutes` minutes up to `now_minute`, oldest first, one bucket each (an empty one for an
    idle minute), so that charts and scripts get one slot per minute."""
    by_start = {bucket.start: bucket for bucket in buckets}
    starts = [now_minute - (minutes - 1 - i) * MINUTE_S for i in range(minutes)]
    return [by_start.get(start) or Bucket(start) for start in starts]
