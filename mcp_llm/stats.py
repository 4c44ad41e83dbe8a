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


class Stats:
    """Counters since start for the whole server, each provider and each model."""

    def __init__(self) -> None:
        self.started = time.time()
        self._monotonic = time.monotonic()
        self.total_calls = 0
        self.total_successes = 0
        self.total_failures: Counter[str] = Counter()
        self.total_latency = Reservoir()
        self.total_cost_usd = 0.0
        self.sections: dict[str, Callable[[], dict[str, Any]]] = {}  # name → its part of the snapshot
        self._providers: dict[str, Counters] = {}
        self._models: dict[str, tuple[str, Counters]] = {}

    def record(self, attempts: Sequence[_Attempt], tokens: Mapping[str, tuple[int, int]],
               latency_ms: float, error_kind: str | None) -> None:
        """One finished call: its attempts in order, tokens per model id, and the final error's kind."""
        self.total_calls += 1
        self.total_latency.add(latency_ms)
        if error_kind is None:
            self.total_successes += 1
        else:
            self.total_failures[error_kind] += 1
        self.total_cost_usd += sum(a.cost_usd or 0.0 for a in attempts)
        for model_id, seen in _per_model(attempts).items():
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
        if name not in self._providers and len(self._providers) >= MAX_KEYS:
            name = OTHER
        return self._providers.setdefault(name, Counters())

    def _model(self, model_id: str, provider: str) -> Counters:
        if model_id not in self._models and len(self._models) >= MAX_KEYS:
            model_id, provider = OTHER, OTHER
        return self._models.setdefault(model_id, (provider, Counters()))[1]

    def providers(self) -> dict[str, dict[str, Any]]:
        return {name: counters.as_dict() for name, counters in sorted(self._providers.items())}

    def snapshot(self) -> dict[str, Any]:
        """The JSON shape of `mcp-llm://stats`."""
        return {
            "since": datetime.fromtimestamp(self.started, UTC).isoformat(timespec="seconds"),
            "uptime_s": round(time.monotonic() - self._monotonic, 1),
            "calls": {
                "calls": self.total_calls,
                "successes": self.total_successes,
                "failures": dict(sorted(self.total_failures.items())),
                "cost_usd": round(self.total_cost_usd, 9),
                "latency_ms": self.total_latency.summary(),
            },
            "providers": self.providers(),
            "models": {model_id: {"provider": provider, **counters.as_dict()}
                       for model_id, (provider, counters) in sorted(self._models.items())},
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
