"""A circuit breaker per provider: stop calling a provider that keeps failing, for a while.

closed ──N consecutive transient failures──▶ open ──cool-down passes──▶ half_open
  ▲                                                                        │
  └──────────── a success ◀── one trial call ──── a failure: open again ───┘

While open, the router skips the provider (the call falls back to the next model at once
instead of waiting on timeouts), and `provider_health` shows `circuit: open`.

A circuit is shared by every session, so only the provider's own failures may count (the router
counts `TransientError`s only, never what failed on our side before sending). The MCP client's
own model (`client`) has no circuit at all: each session reaches its own client, and one client
that keeps timing out says nothing about another's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

State = Literal["closed", "open", "half_open"]


@dataclass
class _Circuit:
    failures: int = 0
    opened_at: float | None = None
    trial_running: bool = False


UNSHARED = frozenset({"client"})  # one per session: no circuit shared between sessions


class CircuitBreakers:
    def __init__(self, threshold: int, cooldown_s: float, unshared: frozenset[str] = UNSHARED) -> None:
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self.unshared = unshared
        self._circuits: dict[str, _Circuit] = {}

    def _get(self, provider: str) -> _Circuit:
        return self._circuits.setdefault(provider, _Circuit())

    def state(self, provider: str) -> State:
        circuit = self._circuits.get(provider)
        if circuit is None or circuit.opened_at is None:
            return "closed"
        if time.monotonic() - circuit.opened_at < self.cooldown_s:
            return "open"
        return "half_open"

    def retry_in(self, provider: str) -> float:
        """Seconds until an open circuit lets a trial call through."""
        circuit = self._circuits.get(provider)
        if circuit is None or circuit.opened_at is None:
            return 0.0
        return max(0.0, self.cooldown_s - (time.monotonic() - circuit.opened_at))

    def allow(self, provider: str) -> bool:
        """May a call go to this provider now? In half-open, only one trial at a time."""
        state = self.state(provider)
        if state == "closed":
            return True
        if state == "open":
            return False
        circuit = self._get(provider)
        if circuit.trial_running:
            return False
        circuit.trial_running = True
        return True

    def success(self, provider: str) -> None:
        self._circuits[provider] = _Circuit()

    def failure(self, provider: str) -> None:
        if provider in self.unshared:
            return
        circuit = self._get(provider)
        circuit.trial_running = False
        circuit.failures += 1
        # Failures only grow until a success resets them, so an open or half-open circuit is
        # always at or past the threshold: a failed trial (re)opens it for a new cool-down.
        if circuit.failures >= self.threshold:
            circuit.opened_at = time.monotonic()

    def release(self, provider: str) -> None:
        """A trial call ended without a verdict (cancelled, or not the provider's fault)."""
        circuit = self._circuits.get(provider)
        if circuit is not None:
            circuit.trial_running = False
