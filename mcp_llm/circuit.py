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

A circuit's key is a provider (`ollama`) or one host of it (`ollama|http://gpu-a:11434`, see
`circuit_key`): the provider's covers it as a whole, a host's ejects that host alone.

Replicas sharing state (state.py, `[state]`): the circuits here are then this process's copy of the
fleet's. Each change (a failure, a success after failures) is also kept in `changes` until the
shared store has it (`take_changes`), and what the store holds is copied back in
(`adopt`) on each exchange with it, so a circuit opened through one replica is open on the others.
The methods below stay synchronous and never wait on the network. While the store is unreachable
this copy simply goes on alone, and its changes are handed over, once, when it is back.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

State = Literal["closed", "open", "half_open"]
MAX_CHANGES = 4096  # keys with changes not yet handed to the shared store (providers × hosts: far fewer)


def circuit_key(provider: str, host: str | None = None) -> str:
    """The key of a provider's circuit (and limiter), or of one of its hosts': `provider|host`."""
    return provider if host is None else f"{provider}|{host}"


@dataclass
class Change:
    """What this process did to one circuit since the shared store last heard: a reset (a success) and the
    failures after it. Applied in order, as the store does: reset first, then add the failures."""

    reset: bool = False
    failures: int = 0

    def then(self, later: Change) -> Change:
        """This change followed by `later` (a change made while this one was still on its way)."""
        return later if later.reset else Change(self.reset, self.failures + later.failures)


@dataclass(frozen=True)
class Record:
    """One circuit as the shared store holds it: consecutive failures, and how long ago it (re)opened."""

    failures: int
    opened_s_ago: float | None


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
        self.sharing = False  # set by a shared state: keep `changes` for it
        self.on_change: Callable[[], None] | None = None  # told of each change (the store sends it soon)
        self._changes: dict[str, Change] = {}

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
        before = self._circuits.get(provider)
        if self.sharing and (provider in self._changes or (before is not None and before.failures)):
            self._note(provider, Change(reset=True))  # a clean circuit stays clean: no write for each success
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
        if self.sharing:
            self._note(provider, Change(failures=1))

    # --- shared state (state.py) ----------------------------------------------------------------

    def _note(self, key: str, change: Change) -> None:
        earlier = self._changes.get(key)
        if earlier is None and len(self._changes) >= MAX_CHANGES:
            return  # bounded however long the store is away; the local circuit itself still counts it
        self._changes[key] = earlier.then(change) if earlier else change
        if self.on_change is not None:
            self.on_change()

    def take_changes(self) -> dict[str, Change]:
        """The changes not yet handed to the shared store, now in the caller's hands."""
        changes, self._changes = self._changes, {}
        return changes

    def adopt(self, records: Mapping[str, Record]) -> None:
        """The fleet's circuits, as the shared store holds them (a key it lacks is closed). A key with a
        change still on its way keeps its local state until the store has that change too."""
        now = time.monotonic()
        for key in set(self._circuits) | set(records):
            if key in self._changes or key in self.unshared:
                continue
            record = records.get(key)
            if record is None or (record.failures == 0 and record.opened_s_ago is None):
                self._circuits.pop(key, None)
                continue
            circuit = self._get(key)
            opened_at = None if record.opened_s_ago is None else now - record.opened_s_ago
            if opened_at is None or circuit.opened_at is None or abs(opened_at - circuit.opened_at) > 0.05:
                circuit.trial_running = False  # (re)opened elsewhere: a trial of ours was of the old opening
            circuit.failures, circuit.opened_at = record.failures, opened_at

    def release(self, provider: str) -> None:
        """A trial call ended without a verdict (cancelled, or not the provider's fault)."""
        circuit = self._circuits.get(provider)
        if circuit is not None:
            circuit.trial_running = False
