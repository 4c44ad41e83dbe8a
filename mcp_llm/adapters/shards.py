"""SDK clients of a bounded connection pool each, as many as the calls in flight need.

httpx's pool (httpcore's `AsyncConnectionPool`) looks at every connection it holds for each request
it routes, so one client of N connections costs O(N) a request and O(N²) a burst: 1,024 calls at once
on one Ollama client took 2.3× the direct path that spreads them over clients of 64 connections
(bench/concurrency.py, issue 23). Here each call leases the least busy of a host's clients, and a new
client is made only when every one has `per_client` calls in flight; below that (any provider
`concurrency` up to 64) there is one client, as before. How many calls run at once is still the
router's limiter's to say (`concurrency`); this only keeps each pool small.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

PER_CLIENT = 64  # connections per client: what the fastest direct path uses

C = TypeVar("C")


class Shards(Generic[C]):
    """The clients of one host: `make()` builds one (with a pool of `per_client` connections)."""

    def __init__(self, make: Callable[[], C], per_client: int = PER_CLIENT) -> None:
        self._make = make
        self._per_client = per_client
        self._clients: list[C] = []
        self._busy: list[int] = []

    def first(self) -> C:
        """A client for what is not a completion (listings, probes): the first, made if need be."""
        if not self._clients:
            self._add()
        return self._clients[0]

    @contextlib.contextmanager
    def lease(self) -> Iterator[C]:
        """The least busy client for one call, counted busy until the call ends."""
        index = min(range(len(self._busy)), key=self._busy.__getitem__, default=None)
        if index is None or self._busy[index] >= self._per_client:
            index = self._add()
        self._busy[index] += 1
        try:
            yield self._clients[index]
        finally:
            self._busy[index] -= 1

    def all(self) -> list[C]:
        return list(self._clients)

    def _add(self) -> int:
        self._clients.append(self._make())
        self._busy.append(0)
        return len(self._clients) - 1
