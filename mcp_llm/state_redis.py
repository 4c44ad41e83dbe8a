"""State shared by replicas in Redis (`[state] redis_url_env`): what is shared and why is in state.py, the
scripts and the keys in state_scripts.py.

Why the `redis` package (redis-py): it is Redis's own Python client, maintained by Redis with the
server, with the asyncio API this server runs on (`redis.asyncio`), Lua scripts sent by digest
(`register_script`: EVALSHA, loaded again by itself after a restart), TLS and unix sockets from the
same URL forms, and timeouts and retries it lets us set (its own retries are off: a call must never
wait on Redis beyond `timeout_s`). valkey-py is a fork of it; coredis a smaller rewrite. It is
imported on first use, in a worker thread, so start-up does not pay for it.

One Redis (with replicas of its own, if any), not Redis Cluster: the scripts build key names.
"""

from __future__ import annotations

import asyncio
import importlib
import itertools
import json
import logging
import os
import random
import secrets
import socket
import time
from collections import Counter
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from mcp_llm.budget import today
from mcp_llm.circuit import CircuitBreakers, Record
from mcp_llm.state import SHARED, UNREACHABLE, CacheStore, Limiter, SpendLedger, State
from mcp_llm.state_scripts import SCRIPTS, SPEND_TTL_S
from mcp_llm.stats import MAX_KEYS, RESERVOIR_SIZE, Stats

if TYPE_CHECKING:
    from pydantic import SecretStr

    from mcp_llm.config import StateSettings
    from mcp_llm.history import Bucket, History

log = logging.getLogger("mcp_llm")

PROBE_EVERY_S = 0.5  # while Redis is away, how often the background probe asks whether it is back
POLL_FIRST_S = 0.005  # a full limiter is asked again after this, then twice as long each time…
POLL_MAX_S = 0.05  # …up to this
MAX_UNRELEASED = 10_000  # leases to give back once Redis is back (they expire anyway)
MAX_UNCONFIRMED = 64  # batches of counts not yet confirmed (one per exchange that failed; far fewer in practice)


@dataclass
class _Lease:
    zset: str
    acquired: bool = False  # the local limiter holds it, and it counts against the fleet's limit
    registered: bool | None = False  # Redis has it (None: perhaps, a reply was lost)


class _Outbox:
    """Batches of counts to be added once: each keeps its number until Redis has confirmed it, and every
    exchange sends all the unconfirmed ones, oldest first (Redis adds each number once, in order)."""

    def __init__(self) -> None:
        self._numbers = itertools.count(1)
        self.batches: list[tuple[int, Any]] = []

    def add(self, payload: Any) -> None:
        self.batches.append((next(self._numbers), payload))
        if len(self.batches) > MAX_UNCONFIRMED:
            log.warning("shared state: %d batches of counts unconfirmed by Redis; the oldest is dropped",
                        len(self.batches))
            del self.batches[0]

    def confirm(self, sent: list[tuple[int, Any]]) -> None:
        if sent:
            last = sent[-1][0]
            self.batches = [batch for batch in self.batches if batch[0] > last]


class _SharedLimiter:
    """One `async with` = one request: the replica's own limiter first (so a replica never has more in flight
    than `limit` whatever Redis says), then a lease from the fleet's. Safe to share between tasks."""

    def __init__(self, state: RedisState, key: str, local: anyio.CapacityLimiter) -> None:
        self._state = state
        self._key = key
        self._local = local
        self._members: dict[int, str] = {}

    @property
    def borrowed_tokens(self) -> int:
        return int(self._local.borrowed_tokens)

    @property
    def total_tokens(self) -> float:
        return float(self._local.total_tokens)

    async def __aenter__(self) -> _SharedLimiter:
        await self._local.acquire()
        try:
            self._members[anyio.get_current_task().id] = await self._state._acquire(self._key,
                                                                                      int(self._local.total_tokens))
        except BaseException:
            self._local.release()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        member = self._members.pop(anyio.get_current_task().id, None)
        try:
            if member is not None:
                with anyio.CancelScope(shield=True):
                    await self._state._release(member)
        finally:
            self._local.release()


class RedisState(State):
    shared = True

    def __init__(self, url: SecretStr, config: StateSettings) -> None:
        super().__init__()
        self._url = url
        self.timeout_s = config.timeout_s
        self.lease_ttl_ms = int(config.lease_ttl_s * 1000)
        self.prefix = config.key_prefix
        self.replica = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._client: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scripts: dict[str, Any] = {}
        self._down: str | None = None  # why Redis is not used now; None: it is
        self._local: dict[str, anyio.CapacityLimiter] = {}
        self._held: dict[str, _Lease] = {}
        self._unreleased: dict[str, str] = {}  # member → lease set, given back once Redis is back
        self._changes = _Outbox()  # circuit changes
        self._deltas = _Outbox()  # stats
        self._members = itertools.count(1)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._flushing = self._flush_again = False
        self._heartbeat: asyncio.Task[Any] | None = None
        self._probe: asyncio.Task[Any] | None = None
        self._closing = self._closed = False  # aclose() began / ended: no background work / nothing sent
        self._ledgers: list[_SharedLedger] = []  # the daily budget's totals (budget.py), one per router
        self.round_trips = 0  # scripts and commands sent (the bench and the tests read it)
        self.sent: Counter[str] = Counter()  # scripts sent, by name

    def attach(self, breakers: CircuitBreakers, stats: Stats, history: History | None = None) -> None:
        super().attach(breakers, stats, history)
        breakers.sharing = stats.sharing = True
        breakers.on_change = stats.on_record = self._soon
        if history is not None:
            history.sharing = True  # its minutes go to Redis with the stats (Stats.on_record tells when)

    def status(self) -> str:
        return SHARED if self._down is None else UNREACHABLE

    # --- the client and its failures ----------------------------------------------------------

    async def _redis(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            module = await anyio.to_thread.run_sync(importlib.import_module, "redis.asyncio")
            if self._client is not None and self._loop is loop:  # built by a call that asked at the same time
                return self._client
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            self._client = module.Redis.from_url(
                self._url.get_secret_value(), socket_timeout=self.timeout_s, socket_connect_timeout=self.timeout_s,
                retry=Retry(NoBackoff(), 0), client_name="mcp-llm")
            self._scripts = {name: self._client.register_script(source) for name, source in SCRIPTS.items()}
            self._loop = loop
            self._tasks.clear()
            self._heartbeat = self._probe = None
        return self._client

    async def _send(self, name: str, keys: list[str], args: list[Any], *, probing: bool = False) -> Any:
        """One script's reply, or None when Redis is away (then the replica goes on with its own state)."""
        if (self._down is not None and not probing) or self._closed:
            return None
        await self._redis()
        self.sent[name] += 1
        return await self._bounded(self._scripts[name](keys=keys, args=args))

    async def _bounded(self, step: Coroutine[Any, Any, Any]) -> Any:
        from redis.exceptions import RedisError

        self.round_trips += 1
        try:
            with anyio.fail_after(self.timeout_s):
                return await step
        except TimeoutError:
            self._went_down(f"no answer within {self.timeout_s:g} s")
        except (RedisError, OSError) as exc:
            self._went_down(self._describe(exc))
        return None

    def _describe(self, exc: BaseException) -> str:
        """What failed, for the log: never the URL, which may hold a password."""
        from urllib.parse import urlsplit

        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        url = self._url.get_secret_value()
        for secret in (url, urlsplit(url).password):
            if secret:
                text = text.replace(secret, "<redacted>")
        return text[:300].rstrip(".")

    def _went_down(self, why: str) -> None:
        if self._down is None:
            log.warning("Redis (shared state) unreachable (%s): this replica goes on with its own circuits, limits "
                        "and stats, and hands over what it counted once Redis is back", why)
        self._down = why
        if self._probe is None or self._probe.done():
            self._probe = self._spawn(self._probe_until_back())

    async def _probe_until_back(self) -> None:
        while self._down is not None:
            await anyio.sleep(PROBE_EVERY_S)
            client = await self._redis()
            if await self._bounded(client.ping()) is None:
                continue
            # Back: hand over what was counted meanwhile, register the leases taken meanwhile, give back the
            # ones that ended meanwhile; only then is Redis used again by the calls.
            if (await self._exchange(probing=True) is not None and await self._flush_stats(probing=True) is not None
                    and await self._refresh_leases(probing=True) and await self._hand_over_spending()):
                log.warning("Redis (shared state) is back: circuits, limits and stats are shared again")
                self._down = None

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any] | None:
        if self._closing:
            work.close()
            return None
        try:
            task = asyncio.get_running_loop().create_task(work)
        except RuntimeError:  # no loop running: the next exchange carries it
            work.close()
            return None
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("shared state: background work failed", exc_info=task.exception())

    # --- circuits and leases ------------------------------------------------------------------

    async def _exchange(self, lease: tuple[str, str, str, int, list[str]] | None = None, *,
                        probing: bool = False) -> str | None:
        """One round trip: this replica's circuit changes in, the lease op, the fleet's circuits out (adopted
        into the local copy). The lease's fate, '' without one; None when Redis is away."""
        breakers = self.breakers
        assert breakers is not None
        changes = breakers.take_changes()
        if changes:
            self._changes.add({key: [int(change.reset), change.failures] for key, change in changes.items()})
        batches = list(self._changes.batches)
        op, zset, member, limit, waits_on = lease or ("", "", "", 0, [])
        circuits = f"{self.prefix}:circuits"
        reply = await self._send("sync", [circuits, zset or circuits, f"{self.prefix}:once"], [
            breakers.threshold, int(breakers.cooldown_s * 1000), json.dumps(batches) if batches else "",
            f"{self.replica}|circuits", op, member, limit, self.lease_ttl_ms, json.dumps(waits_on)], probing=probing)
        if reply is None:
            return None
        self._changes.confirm(batches)
        now_ms, fate, flat = reply
        breakers.adopt(_records(flat, int(now_ms)))
        return fate.decode() if isinstance(fate, bytes) else str(fate)

    def limiter(self, key: str, limit: int) -> Limiter:
        local = self._local.get(key)
        if local is None:
            local = self._local[key] = anyio.CapacityLimiter(limit)
        if "|" in key:  # a host's: its calls in flight here, for routing; the provider's lease bounds the fleet
            return local
        return _SharedLimiter(self, key, local)

    async def _acquire(self, key: str, limit: int) -> str:
        """A lease of `key`'s limiter: taken in Redis while it has fewer than `limit`, else asked again shortly;
        a local one while Redis is away. Not taken when the fleet has `key`'s circuit open (the router then
        sees it open and skips the call). Its member, to give it back."""
        member = f"{self.replica}:{next(self._members)}"
        lease = self._held[member] = _Lease(f"{self.prefix}:lease:{key}")
        wait = POLL_FIRST_S
        try:
            while True:
                asked = self._down is None
                fate = await self._exchange(("acquire", lease.zset, member, limit, [key.partition("|")[0]]))
                if fate == "full":
                    await anyio.sleep(wait)
                    wait = min(wait * 2, POLL_MAX_S)
                    continue
                if fate != "open":  # taken, or Redis is away: a local lease (registered once it is back)
                    lease.acquired = True
                    lease.registered = True if fate == "ok" else None if asked else False
                    self._keep_alive()
                return member
        except BaseException:
            self._forget(member)
            raise

    async def _release(self, member: str) -> None:
        lease = self._held.get(member)
        if lease is None or lease.registered is False:
            self._held.pop(member, None)
            return
        del self._held[member]
        if await self._exchange(("release", lease.zset, member, 0, [])) is None:
            self._unreleased_add(member, lease.zset)

    def _forget(self, member: str) -> None:
        lease = self._held.pop(member, None)
        if lease is not None:
            self._unreleased_add(member, lease.zset)  # cancelled while asking: Redis may have it
            self._soon()

    def _unreleased_add(self, member: str, zset: str) -> None:
        if len(self._unreleased) < MAX_UNRELEASED:
            self._unreleased[member] = zset

    def _keep_alive(self) -> None:
        if self._heartbeat is None or self._heartbeat.done():
            self._heartbeat = self._spawn(self._heartbeat_loop())

    async def _heartbeat_loop(self) -> None:
        """While this replica holds leases, move their expiry on every third of the TTL."""
        while any(lease.acquired for lease in self._held.values()):
            await anyio.sleep(self.lease_ttl_ms / 3000)
            await self._refresh_leases()

    async def _refresh_leases(self, *, probing: bool = False) -> bool:
        """One round trip: the leases held renewed (those Redis may lack registered), those that ended while
        their release could not be sent given back."""
        held = [(member, lease) for member, lease in self._held.items() if lease.acquired]
        renewed = [(member, lease) for member, lease in held if lease.registered is True]
        registered = [(member, lease) for member, lease in held if lease.registered is not True]
        gone = list(self._unreleased.items())
        if not held and not gone:
            return True
        keys = [lease.zset for _, lease in renewed + registered] + [zset for _, zset in gone]
        members = [member for member, _ in renewed + registered] + [member for member, _ in gone]
        if await self._send("leases", keys, [self.lease_ttl_ms, len(renewed), len(registered), *members],
                            probing=probing) is None:
            return False
        for _, lease in registered:
            lease.registered = True
        for member, _ in gone:
            self._unreleased.pop(member, None)
        return True

    async def refresh(self) -> None:
        await self._exchange()

    async def share_changes(self) -> None:
        if self.breakers is not None and self.breakers._changes and self._down is None:
            await self._exchange()

    # --- stats ---------------------------------------------------------------------------------

    def _soon(self) -> None:
        """Counts or circuit changes to hand over: in the background, at once, coalescing what comes meanwhile."""
        if self._down is not None:
            return
        if self._flushing:
            self._flush_again = True
            return
        self._flushing = True
        if self._spawn(self._flush_loop()) is None:
            self._flushing = False

    async def _flush_loop(self) -> None:
        try:
            while self._down is None:
                self._flush_again = False
                await self._flush_stats()
                if self.breakers is not None and self.breakers._changes:
                    await self._exchange()
                if self._unreleased:
                    await self._refresh_leases()
                if not self._flush_again:
                    break
        finally:
            self._flushing = False

    async def _flush_stats(self, *, read: bool = False, probing: bool = False) -> Any:
        """The counts since the last batch (stats and the minutes of the history) handed to Redis, and with
        `read` the fleet's stats read back: one round trip. None when Redis is away."""
        assert self.stats is not None
        delta = self.stats.take_delta()
        minutes = self.history.take_delta() if self.history is not None else {}
        if delta is not None or minutes:
            self._deltas.add({**({"stats": _for_lua(delta)} if delta is not None else {}),
                              **({"history": _minutes_for_lua(minutes)} if minutes else {})})
        batches = list(self._deltas.batches)
        if not batches and not read:
            return 0
        reply = await self._send("stats", [f"{self.prefix}:once"], [
            self.prefix, f"{self.replica}|stats", json.dumps(batches) if batches else "", MAX_KEYS, RESERVOIR_SIZE,
            f"{time.time():.3f}", "1" if read else "0"], probing=probing)
        if reply is not None:
            self._deltas.confirm(batches)
        return reply

    async def stats_snapshot(self) -> dict[str, Any]:
        assert self.stats is not None
        for ledger in self._ledgers:  # the day's spending as the fleet has it now (the stats' budget section)
            await ledger.spent(today())
        reply = await self._flush_stats(read=True) if self._down is None else None
        if reply is None:
            return {"state": self.status(), **self.stats.snapshot()}
        return {"state": SHARED, **self.stats.shared_snapshot(_fleet(reply))}

    async def history_buckets(self) -> list[Bucket]:
        """The fleet's last hour by minute: this replica's counts handed over first, then every replica's read
        back (one round trip each); this replica's own while Redis is away."""
        from mcp_llm.history import MINUTE_S, Bucket

        if self.history is None:
            return []
        if self._down is None and await self._flush_stats() is not None:
            now = self.history.now_minute()
            starts = [now - i * MINUTE_S for i in reversed(range(self.history.minutes))]
            reply = await self._send("history", [], [self.prefix, *starts])
            if reply is not None:
                buckets = []
                for start, flat in zip(starts, reply, strict=True):
                    if flat:
                        bucket = Bucket(start)
                        bucket.add_counters(dict(zip(flat[::2], flat[1::2], strict=True)))
                        buckets.append(bucket)
                return buckets
        return self.history.buckets()

    def cache_store(self, local: CacheStore, max_entries: int, max_value_bytes: int) -> CacheStore:
        return _SharedCache(self, local, max_entries, max_value_bytes)

    def spend_ledger(self, local: SpendLedger) -> SpendLedger:
        ledger = _SharedLedger(self)
        self._ledgers.append(ledger)
        return ledger

    async def _hand_over_spending(self) -> bool:
        """What the budget spent here while Redis was away, added to the fleet's day (on the way back)."""
        for ledger in self._ledgers:
            if not await ledger.hand_over():
                return False
        return True

    # --- the end --------------------------------------------------------------------------------

    async def aclose(self) -> None:
        self._closing = True  # no more background work
        if self._client is None or self._loop is not asyncio.get_running_loop():
            self._closed = True
            return
        with anyio.CancelScope(shield=True):
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.wait(list(self._tasks))
            if self._down is None:  # what is counted only here: handed over, within the usual bound each
                await self._flush_stats()
                if self.breakers is not None and self.breakers._changes:
                    await self._exchange()
                self._unreleased.update({member: lease.zset for member, lease in self._held.items()
                                         if lease.registered is not False})
                self._held.clear()
                await self._refresh_leases()
            client, self._client = self._client, None
            self._closed = True
            await client.aclose()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _records(flat: list[Any], now_ms: int) -> dict[str, Record]:
    """HGETALL of the circuits hash → each circuit's record."""
    failures: dict[str, int] = {}
    opened: dict[str, float] = {}
    for field, value in zip(flat[::2], flat[1::2], strict=True):
        kind, _, key = _text(field).partition("|")
        if kind == "f":
            failures[key] = int(value)
        elif kind == "o":
            opened[key] = max(0.0, (now_ms - float(value)) / 1000)
    return {key: Record(failures.get(key, 0), opened.get(key)) for key in failures.keys() | opened.keys()}


def _for_lua(delta: dict[str, Any]) -> dict[str, Any]:
    """A stats delta as the STATS script takes it: latencies as text (Lua would print 12.3 as 12.300000000000001)
    with a uniform random number each, for the shared sample."""
    scopes = [delta["calls"], *delta["providers"].values(), *delta["models"].values()]
    for scope in scopes:
        latency = scope.get("latency")
        if latency:
            latency["r"] = [random.random() for _ in latency["v"]]
            latency["v"] = [repr(float(value)) for value in latency["v"]]
    return delta


def _minutes_for_lua(minutes: Mapping[int, Mapping[str, float]]) -> dict[str, list[list[str]]]:
    """History deltas as the STATS script takes them: per minute, [name, value as text] pairs (HINCRBYFLOAT)."""
    return {str(start): [[name, repr(float(value))] for name, value in counters.items()]
            for start, counters in minutes.items()}


class _SharedCache:
    """The response cache's store (`CacheStore`) in Redis, bounded to `max_entries`; `local` while Redis is
    away (a miss there is a miss: the call is made, never failed)."""

    def __init__(self, state: RedisState, local: CacheStore, max_entries: int, max_value_bytes: int) -> None:
        self._state, self._local, self._max_entries, self._max_value = state, local, max_entries, max_value_bytes

    def _key(self, key: str) -> str:
        return f"{self._state.prefix}:cache:{key}"

    async def get(self, key: str) -> bytes | None:
        state = self._state
        if state._down is None:
            client = await state._redis()
            found = await state._bounded(client.get(self._key(key)))
            if state._down is None:
                return None if found is None else bytes(found)
        return await self._local.get(key)

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        state = self._state
        if len(value) > self._max_value or self._max_entries <= 0:
            await self.delete(key)  # as the local store: an answer too large for the cache is not kept
            return
        if ttl_s <= 0 or await state._send("cache_set", [self._key(key), f"{state.prefix}:cache"],
                                           [value, max(1, int(ttl_s * 1000)), self._max_entries]) is None:
            await self._local.set(key, value, ttl_s)

    async def delete(self, key: str) -> None:
        state = self._state
        await self._local.delete(key)
        if state._down is None:
            client = await state._redis()
            await state._bounded(client.delete(self._key(key)))

    def usage(self) -> dict[str, int]:
        return {}  # not known without asking Redis


def _scope(reply: list[Any]) -> dict[str, Any]:
    """[HGETALL, p50, p95] of one scope → its counters, failures and latency_ms."""
    flat, p50, p95 = reply
    out: dict[str, Any] = {"failures": {}}
    for field, value in zip(flat[::2], flat[1::2], strict=True):
        name = _text(field)
        if name.startswith("failures|"):
            out["failures"][name.partition("|")[2]] = int(value)
        elif name == "provider":
            out["provider"] = _text(value)
        elif name == "cost_usd":
            out[name] = float(value)
        elif name != "latency_count":
            out[name] = int(value)
    out["latency_ms"] = {"p50": float(p50) if p50 else None, "p95": float(p95) if p95 else None}
    return out


def _fleet(reply: list[Any]) -> Mapping[str, Any]:
    since, total, provider_names, providers, model_names, models = reply
    return {
        "since": float(_text(since)) if since else None,
        "calls": _scope(total),
        "providers": {_text(name): _scope(scope) for name, scope in zip(provider_names, providers, strict=True)},
        "models": {_text(name): _scope(scope) for name, scope in zip(model_names, models, strict=True)},
    }


NO_LIMIT = -1  # the SPEND script's "add whatever the limit" (a hold settled, or a read)


class _SharedLedger:
    """The daily budget's totals (`SpendLedger`) in Redis: one per UTC day for the whole fleet, each hold taken
    by one script only while the total stays within the limit, so replicas cannot overrun it together.

    While Redis is away a replica goes on from the fleet's total as it last saw it, plus what it spent since
    (each replica then spends at most what was left when Redis went), and hands that over with its next
    exchange once Redis is back. A reply lost after Redis counted can only count an amount twice, never miss
    one: the budget errs on the side of spending less."""

    def __init__(self, state: RedisState) -> None:
        self._state = state
        self._seen: dict[str, int] = {}  # the fleet's total, as last seen
        self._carried: dict[str, int] = {}  # spent here while Redis was away, not yet handed over

    def _key(self, day: str) -> str:
        return f"{self._state.prefix}:spend:{day}"

    async def _exchange(self, day: str, amount: int, limit: int = NO_LIMIT, *,
                        probing: bool = False) -> tuple[bool, int] | None:
        for old in [d for d in self._carried if d < day]:  # a day gone by is done with
            del self._carried[old]
        carried = self._carried.pop(day, 0)
        reply = await self._state._send("spend", [self._key(day)], [amount, limit, carried, SPEND_TTL_S],
                                        probing=probing)
        if reply is None:
            self._carried[day] = self._carried.get(day, 0) + carried
            return None
        taken, total = bool(int(reply[0])), int(reply[1])
        self._seen = {day: total}  # the days before are done with
        return taken, total

    async def reserve(self, day: str, amount: int, limit: int) -> tuple[bool, int]:
        shared = await self._exchange(day, amount, limit)
        if shared is not None:
            taken, total = shared
            before = total - amount if taken else total
            return taken, max(0, limit - before)
        before = self.last_seen(day)
        if before + amount > limit:
            return False, max(0, limit - before)
        self._carried[day] = self._carried.get(day, 0) + amount
        return True, limit - before

    async def adjust(self, day: str, delta: int) -> None:
        if await self._exchange(day, delta) is None:
            self._carried[day] = self._carried.get(day, 0) + delta

    async def spent(self, day: str) -> int:
        await self._exchange(day, 0)
        return self.last_seen(day)

    def last_seen(self, day: str) -> int:
        return max(0, self._seen.get(day, 0) + self._carried.get(day, 0))

    async def hand_over(self) -> bool:
        """Add what was spent here while Redis was away (Redis back: before the calls use it again)."""
        if not self._carried:
            return True
        return await self._exchange(max(self._carried), 0, probing=True) is not None  # the latest day
