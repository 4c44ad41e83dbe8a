"""SDK clients of a small connection pool each, as many as the calls in flight need.

httpx's pool (httpcore's `AsyncConnectionPool`) looks at every connection and queued request it holds
each time a request starts or ends, so a client with k calls in flight costs O(k) per event: one
client for 1,024 calls at once took 2.3x the direct path that spreads them over clients of 64
connections (bench/concurrency.py, issue 23), and clients of 8 cut what that burst costs the server
again by a third (4.5 s instead of 6.5-7 s on 2 cores; its profile lost half of its function calls,
httpcore's `is_idle` scans). Here each call leases the least busy of a host's clients, and a new client
is made only when every one has `per_client` calls in flight; below that (a provider `concurrency` up
to 8, or calls one at a time) there is one client, as before. How many calls run at once is still the
router's limiter's to say (`concurrency`); this only keeps each pool small.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    import ssl

PER_CLIENT = 8  # calls in flight per client (the direct baseline of bench/concurrency.py uses 64)

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


def of_host(clients: dict[str, Shards[C]], host: str, make: Callable[[str], C]) -> Shards[C]:
    """`host`'s clients in a per-host table, made on first use (`make(host)` builds one client)."""
    shards = clients.get(host)
    if shards is None:
        shards = clients[host] = Shards(lambda: make(host))
    return shards


@functools.cache
def shared_tls(library: str) -> ssl.SSLContext:
    """One TLS context for every client this process makes on `library` (`httpx`, which the ollama SDK
    sends with, or `httpx2`, the others'), built as that library builds its default one (its CA store,
    SSL_CERT_FILE and SSL_CERT_DIR honoured). Left to themselves, each SDK client builds its own and
    loads the CA store again: 20-40 ms on the event loop and 0.75 MB a client, which clients of
    PER_CLIENT calls each multiply (128 of them for 1,024 calls at once). A context is safe to share
    between connections; the hosts' names are checked per connection, as before."""
    return importlib.import_module(library).create_ssl_context()  # type: ignore[no-any-return]
