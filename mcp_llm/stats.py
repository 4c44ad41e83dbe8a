"""Usage since start, per provider and per model: what `mcp-llm://stats` and `provider_health` show.

Everything is derived from a finished call's trace (its attempts, in order), so the numbers are
the ones the caller saw:

- `calls`: calls that tried the model; `successes`: those it answered; `failures`: the others, by
  the kind of the model's last error there (`unavailable`, `invalid_output`, `circuit_open`…), so
  `calls == successes + sum(failures.values())`.
- `attempts`; `retries` (a try after a transient error, same model); `reasks` (a try after an
  invalid answer, same model); `fallbacks` (the call moved on from this model to another).
- `input_tokens` / `output_tokens`; `latency_ms` p50 / p95 over the attempts that reached the provider.
- `cost_usd`: the sum of the attempts' known costs; `unpriced_attempts`: those whose cost is unknown
  (no price for the model), so a `cost_usd` of 0 with unpriced attempts is not "free".
- Beside them, sections other parts report (`sections`): the response cache's hits and the money they
  saved, the budget's total for the day.

Memory stays bounded however long the server runs: latencies are kept in a fixed-size uniform
reservoir (exact until it fills, then a uniform sample of everything since start), and at most
`MAX_KEYS` models (or providers) get their own entry; any more are counted under `(other)`, so a
client sending ever-new model ids cannot grow the table.

Replicas sharing state (state.py, `[state]`): each call is also counted in a delta (`take_delta`),
which the shared store adds to the fleet's counters once; the fleet's numbers, read back from it,
come out in the same shape (`shared_snapshot`). The latencies there are a capped shared sample of
the same kind, so p50/p95 are over every replica's calls. The sections stay each replica's own.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

RESERVOIR_SIZE = 1024
MAX_KEYS = 256
OTHER = "(other)"


class _Attempt(Protocol):
    @property
    def model(self) -> str: ...
    @property
    def provider(self) -> str: ...
    @property
    def outcome(self) -> str: ...
    @property
    def error(self) -> str | None: ...
    @property
    def latency_ms(self) -> float: ...
    @property
    def cost_usd(self) -> float | None: ...


class Reservoir:
    """A uniform sample of at most `size` values out of all ever added (Vitter's algorithm R)."""

    def __init__(self, size: int = RESERVOIR_SIZE, seed: int = 0) -> None:
        self.size = size
        self.count = 0
        self._values: list[float] = []
        self._random = random.Random(seed)

    def add(self, value: float) -> None:
        self.count += 1
        if len(self._values) < self.size:
            self._values.append(value)
            return
        slot = self._random.randrange(self.count)
        if slot < self.size:
            self._values[slot] = value

    def quantile(self, q: float) -> float | None:
        """The nearest-rank quantile of the sample; None before any value."""
        if not self._values:
            return None
        ordered = sorted(self._values)
        rank = max(1, -(-int(q * 1000) * len(ordered) // 1000))  # ceil(q * n) without float drift
        return ordered[min(rank, len(ordered)) - 1]

    def summary(self) -> dict[str, float | None]:
        return {"p50": self.quantile(0.50), "p95": self.quantile(0.95)}


@dataclass
class Counters:
    calls: int = 0
    successes: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    attempts: int = 0
    retries: int = 0
    reasks: int = 0
    fallbacks: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    unpriced_attempts: int = 0
    latency: Reservoir = field(default_factory=Reservoir)

    def as_dict(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "successes": self.successes,
            "failures": dict(sorted(self.failures.items())),
            "attempts": self.attempts,
            "retries": self.retries,
            "reasks": self.reasks,
            "fallbacks": self.fallbacks,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": round(self.cost_usd, 9),
            "unpriced_attempts": self.unpriced_attempts,
            "latency_ms": self.latency.summary(),
        }


@dataclass
class _ModelCall:
    """What one call did with one model, before it is added to the counters."""

    provider: str
    answered: bool = False
    last_error: str | None = None
    attempts: int = 0
    retries: int = 0
    reasks: int = 0
    fallbacks: int = 0
    cost_usd: float = 0.0
    unpriced: int = 0
    latencies: list[float] = field(default_factory=list)


class _Table:
    """The counters of the whole server, each provider and each model, with the number of keys bounded."""

    def __init__(self) -> None:
        self.total = Counters()
        self.providers: dict[str, Counters] = {}
        self.models: dict[str, tuple[str, Counters]] = {}

    def add(self, per_model: Mapping[str, _ModelCall], tokens: Mapping[str, tuple[int, int]], latency_ms: float,
            error_kind: str | None, cost_usd: float) -> None:
        self.total.calls += 1
        self.total.latency.add(latency_ms)
        if error_kind is None:
            self.total.successes += 1
        else:
            self.total.failures[error_kind] += 1
        self.total.cost_usd += cost_usd
        for model_id, seen in per_model.items():
            used = tokens.get(model_id, (0, 0))
            for counters in (self._model(model_id, seen.provider), self._provider(seen.provider)):
                counters.calls += 1
                if seen.answered:
                    counters.successes += 1
                else:
                    counters.failures[seen.last_error or "error"] += 1
                counters.attempts += seen.attempts
                counters.retries += seen.retries
                counters.reasks += seen.reasks
                counters.fallbacks += seen.fallbacks
                counters.input_tokens += used[0]
                counters.output_tokens += used[1]
                counters.cost_usd += seen.cost_usd
                counters.unpriced_attempts += seen.unpriced
                for latency in seen.latencies:
                    counters.latency.add(latency)

    def _provider(self, name: str) -> Counters:
        if name not in self.providers and len(self.providers) >= MAX_KEYS:
            name = OTHER
        return self.providers.setdefault(name, Counters())

    def _model(self, model_id: str, provider: str) -> Counters:
        if model_id not in self.models and len(self.models) >= MAX_KEYS:
            model_id, provider = OTHER, OTHER
        return self.models.setdefault(model_id, (provider, Counters()))[1]


# What the shared store adds up per scope (as integers; cost_usd as a float, by HINCRBYFLOAT)
COUNTER_FIELDS = ("calls", "successes", "attempts", "retries", "reasks", "fallbacks", "input_tokens", "output_tokens",
                  "unpriced_attempts")


def _delta_of(counters: Counters) -> dict[str, Any]:
    """One scope's counts as the shared store adds them: integers, the cost (as text: Lua would round it),
    failures by kind, and the latencies (`n` of them in all, `v` a uniform sample of at most RESERVOIR_SIZE)."""
    out: dict[str, Any] = {name: getattr(counters, name) for name in COUNTER_FIELDS if getattr(counters, name)}
    if counters.cost_usd:
        out["cost_usd"] = repr(counters.cost_usd)
    if counters.failures:
        out["failures"] = dict(counters.failures)
    if counters.latency.count:
        out["latency"] = {"n": counters.latency.count, "v": list(counters.latency._values)}
    return out


class Stats:
    """Counters since start for the whole server, each provider and each model."""

    def __init__(self) -> None:
        self.started = time.time()
        self._monotonic = time.monotonic()
        self._table = _Table()
        self.sections: dict[str, Callable[[], dict[str, Any]]] = {}  # name → its part of the snapshot
        self.sharing = False  # set by a shared state: keep a delta for it
        self.on_record: Callable[[], None] | None = None  # told after each call is counted (the store adds it soon)
        self._delta: _Table | None = None

    @property
    def total_calls(self) -> int:
        return self._table.total.calls

    def record(self, attempts: Sequence[_Attempt], tokens: Mapping[str, tuple[int, int]],
               latency_ms: float, error_kind: str | None) -> None:
        """One finished call: its attempts in order, tokens per model id, and the final error's kind."""
        per_model = _per_model(attempts)
        cost = sum(a.cost_usd or 0.0 for a in attempts)
        self._table.add(per_model, tokens, latency_ms, error_kind, cost)
        if self.sharing:
            if self._delta is None:
                self._delta = _Table()
            self._delta.add(per_model, tokens, latency_ms, error_kind, cost)
            if self.on_record is not None:
                self.on_record()

    def take_delta(self) -> dict[str, Any] | None:
        """What was counted since the last delta was taken, as JSON for the shared store; None if nothing."""
        delta, self._delta = self._delta, None
        if delta is None:
            return None
        return {
            "calls": _delta_of(delta.total),
            "providers": {name: _delta_of(counters) for name, counters in delta.providers.items()},
            "models": {model_id: {"provider": provider, **_delta_of(counters)}
                       for model_id, (provider, counters) in delta.models.items()},
        }

    def providers(self) -> dict[str, dict[str, Any]]:
        return {name: counters.as_dict() for name, counters in sorted(self._table.providers.items())}

    def snapshot(self) -> dict[str, Any]:
        """The JSON shape of `mcp-llm://stats`: this process's counts."""
        table = self._table
        return {
            "since": datetime.fromtimestamp(self.started, UTC).isoformat(timespec="seconds"),
            "uptime_s": self.uptime_s(),
            "calls": {
                "calls": table.total.calls,
                "successes": table.total.successes,
                "failures": dict(sorted(table.total.failures.items())),
                "cost_usd": round(table.total.cost_usd, 9),
                "latency_ms": table.total.latency.summary(),
            },
            "providers": self.providers(),
            "models": {model_id: {"provider": provider, **counters.as_dict()}
                       for model_id, (provider, counters) in sorted(table.models.items())},
            **{name: section() for name, section in self.sections.items()},
        }

    def uptime_s(self) -> float:
        return round(time.monotonic() - self._monotonic, 1)

    def shared_snapshot(self, fleet: Mapping[str, Any]) -> dict[str, Any]:
        """The same shape, from the fleet's counters as the shared store returns them: `since` (epoch
        seconds), and `calls`, `providers` and `models` with each scope's counters, `failures` and
        `latency_ms`. `uptime_s` and the sections stay this replica's."""

        def scope(raw: Mapping[str, Any]) -> dict[str, Any]:
            return {**{name: int(raw.get(name, 0)) for name in COUNTER_FIELDS},
                    "cost_usd": round(float(raw.get("cost_usd", 0.0)), 9),
                    "failures": dict(sorted(raw.get("failures", {}).items())),
                    "latency_ms": raw.get("latency_ms") or {"p50": None, "p95": None}}

        def ordered(row: dict[str, Any]) -> dict[str, Any]:  # the keys in Counters.as_dict's order
            return {key: row[key] for key in Counters().as_dict()}

        total = scope(fleet.get("calls", {}))
        since = float(fleet.get("since") or self.started)
        return {
            "since": datetime.fromtimestamp(since, UTC).isoformat(timespec="seconds"),
            "uptime_s": self.uptime_s(),
            "calls": {key: total[key] for key in ("calls", "successes", "failures", "cost_usd", "latency_ms")},
            "providers": {name: ordered(scope(raw)) for name, raw in sorted(fleet.get("providers", {}).items())},
            "models": {model_id: {"provider": str(raw.get("provider", OTHER)), **ordered(scope(raw))}
                       for model_id, raw in sorted(fleet.get("models", {}).items())},
            **{name: section() for name, section in self.sections.items()},
        }


def _per_model(attempts: Iterable[_Attempt]) -> dict[str, _ModelCall]:
    """Walk the attempts in order: each try after the first with the same model is a retry (after an
    error) or a re-ask (after an invalid answer); a change of model is a fallback from the one before."""
    seen: dict[str, _ModelCall] = {}
    previous: _Attempt | None = None
    for attempt in attempts:
        entry = seen.setdefault(attempt.model, _ModelCall(attempt.provider))
        entry.attempts += 1
        if attempt.cost_usd is None:
            entry.unpriced += 1
        else:
            entry.cost_usd += attempt.cost_usd
        if attempt.outcome != "skipped":
            entry.latencies.append(attempt.latency_ms)
        if attempt.outcome == "ok":
            entry.answered = True
        else:
            entry.last_error = attempt.error or attempt.outcome
        if previous is not None:
            if previous.model != attempt.model:
                seen[previous.model].fallbacks += 1
            elif previous.outcome == "invalid_output":
                entry.reasks += 1
            else:
                entry.retries += 1
        previous = attempt
    return seen
