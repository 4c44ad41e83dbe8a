"""Where circuits, concurrency limits and usage live: this process, or every replica's, in Redis.

One small interface, `State`, with two implementations:

- `LocalState`: everything in this process, as a single server always kept it (no `[state]`).
- `RedisState` (state_redis.py, `[state] redis_url_env`): shared by every replica naming the same
  Redis, so N replicas behind nginx behave as one server:

      circuits      one hash of every circuit (`provider`, `provider|host`): a circuit opened
                    through one replica is open on all; each replica keeps a copy (circuit.py)
      concurrency   a sorted set of leases per provider, each with an expiry that the replica
                    holding it renews while its call runs: a replica killed mid-call frees its
                    slots when its leases expire, never leaking a counter
      stats         the fleet's counters since start and its last hour by minute, each replica
                    adding its deltas once (stats.py, history.py)
      cache         a store for the response cache (get / set with a TTL / delete), bounded

On the call path a shared limiter costs two round trips: one script on entry (the circuits as the
fleet has them, the changes this replica made to them, and the lease) and one on exit (the lease
given back). Stats go to Redis in the background, off the call path.

Redis unreachable or slow: no call waits on it more than `[state] timeout_s` (0.2 s), and once one
has, the replica goes on with its own state (`status()`: "local (redis unreachable)") without
asking again until a background probe finds Redis back. What it counted meanwhile (stats, circuit
changes) is handed over then, once; the leases its calls took locally hold the local limit all
along, and are registered with Redis when it returns.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from mcp_llm.circuit import CircuitBreakers
from mcp_llm.stats import Stats

if TYPE_CHECKING:
    from mcp_llm.history import Bucket, History

LOCAL = "local"
SHARED = "shared"
UNREACHABLE = "local (redis unreachable)"  # DESIGN.md's wording, in provider_health and mcp-llm://stats


class Limiter(Protocol):
    """What `Router.limiter(key)` hands out: `async with` it around one request (an anyio
    `CapacityLimiter` when local)."""

    async def __aenter__(self) -> Any: ...

    async def __aexit__(self, *exc_info: Any) -> Any: ...

    @property
    def borrowed_tokens(self) -> int:
        """Requests in flight through this limiter on this replica."""
        ...

    @property
    def total_tokens(self) -> float: ...


class CacheStore(Protocol):
    """Where the response cache keeps its entries: bytes under a key, each for a time (response_cache.py's
    `Store`). `State.cache_store` hands the fleet's, in Redis, when state is shared."""

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl_s: float) -> None: ...

    async def delete(self, key: str) -> None: ...

    def usage(self) -> dict[str, int]: ...


class SpendLedger(Protocol):
    """Where the budget keeps each day's spending (budget.py's `Ledger`). `State.spend_ledger` hands the
    fleet's, in Redis, when state is shared."""

    async def reserve(self, day: str, amount: int, limit: int) -> tuple[bool, int]: ...

    async def adjust(self, day: str, delta: int) -> None: ...

    async def spent(self, day: str) -> int: ...

    def last_seen(self, day: str) -> int: ...


class State(ABC):
    """The interface the router, the app and the tools use; see the module docstring."""

    shared: bool = False

    def __init__(self) -> None:
        self.breakers: CircuitBreakers | None = None
        self.stats: Stats | None = None
        self.history: History | None = None

    def attach(self, breakers: CircuitBreakers, stats: Stats, history: History | None = None) -> None:
        """The router's circuits, stats and history, which this state keeps in step with the fleet's."""
        self.breakers, self.stats, self.history = breakers, stats, history

    @abstractmethod
    def status(self) -> str:
        """`local`, `shared`, or `local (<why>)` when state should be shared but cannot be now."""

    @abstractmethod
    def limiter(self, key: str, limit: int) -> Limiter:
        """At most `limit` requests in flight for `key` (a provider, or `provider|host`), fleet-wide when shared."""

    async def refresh(self) -> None:
        """Bring the circuits up to date with the fleet's before they are shown (provider_health)."""
        return None

    async def share_changes(self) -> None:
        """Hand this replica's circuit changes to the fleet now (after a failure: before the caller hears
        of it, so that the next call, through whichever replica, finds the circuit as it is)."""
        return None

    async def stats_snapshot(self) -> dict[str, Any]:
        """`mcp-llm://stats`: the fleet's usage when shared, else this process's."""
        assert self.stats is not None
        return {"state": self.status(), **self.stats.snapshot()}

    async def history_buckets(self) -> list[Bucket]:
        """The last hour by minute (history.py), the fleet's when shared; oldest first."""
        return self.history.buckets() if self.history is not None else []

    def cache_store(self, local: CacheStore, max_entries: int, max_value_bytes: int) -> CacheStore:
        """The response cache's store: `local` (this process's), or the fleet's (at most `max_entries`, none
        over `max_value_bytes`), which falls back on `local` while Redis is away."""
        return local

    def spend_ledger(self, local: SpendLedger) -> SpendLedger:
        """The daily budget's totals: `local` (this process's), or the fleet's, one total every replica's
        attempts are checked against (while Redis is away, from its total as last seen, handed over on return)."""
        return local

    async def aclose(self) -> None:
        """Hand over what is still counted only here, stop background work, close connections."""
        return None


class LocalState(State):
    """In this process only: what a single server always did. `why` says why it is not shared
    when `[state]` asked for Redis but it cannot be had (e.g. its variable is not set)."""

    def __init__(self, why: str | None = None) -> None:
        super().__init__()
        self.why = why
        self._limiters: dict[str, anyio.CapacityLimiter] = {}

    def status(self) -> str:
        return LOCAL if self.why is None else f"{LOCAL} ({self.why})"

    def limiter(self, key: str, limit: int) -> Limiter:
        if key not in self._limiters:
            self._limiters[key] = anyio.CapacityLimiter(limit)
        return self._limiters[key]
