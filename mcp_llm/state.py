"""What replicas share: circuit state, concurrency leases, usage stats and the response cache.

One small interface, `State`, with two implementations:

- `LocalState`: everything in this process, as a single server always kept it (no `[state]`).
- `RedisState` (state_redis.py, `[state] redis_url_env`): shared by every replica naming the same
  Redis, so N replicas behind nginx behave as one server:

      circuits      one hash of every circuit (`provider`, `provider|host`): a circuit opened
                    through one replica is open on all; each replica keeps a copy (circuit.py)
      concurrency   a sorted set of leases per limiter key, each with an expiry that the replica
                    holding it refreshes while its call runs: a replica killed mid-call frees its
                    slots when its leases expire, never leaking a counter
      stats         the fleet's counters, each replica adding its deltas once (stats.py)
      cache         get / set with a TTL and a bounded number of entries (for the response cache)

On the call path a shared limiter costs two round trips: one script on entry (the circuits as the
fleet has them, the changes this replica made to them, and the lease) and one on exit (the lease
given back, with any changes). Stats go to Redis in the background, off the call path.

Redis unreachable or slow: no call waits on it more than `[state] timeout_s` (0.2 s), and once one
has, the replica goes on with its own state (`status()`: "local (redis unreachable)") without
asking again until a background probe finds Redis back. What it counted meanwhile (stats, circuit
changes) is handed over then, once; the leases its calls took locally hold the local limit all
along, and are registered with Redis when it returns.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Protocol

import anyio

from mcp_llm.circuit import CircuitBreakers
from mcp_llm.stats import Stats

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


class State(ABC):
    """The interface the router, the app and the tools use; see the module docstring."""

    shared: bool = False

    def __init__(self) -> None:
        self.breakers: CircuitBreakers | None = None
        self.stats: Stats | None = None

    def attach(self, breakers: CircuitBreakers, stats: Stats) -> None:
        """The router's circuits and stats, which this state keeps in step with the fleet's."""
        self.breakers, self.stats = breakers, stats

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

    def warm_up(self) -> None:
        """Start what can be started without the network (the server's lifespan calls it)."""
        return None

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
