"""The exact response cache: the same deterministic question is not paid for twice.

Only a call whose answer its arguments fix is cached: temperature 0 (said explicitly; a provider's
default is not 0), and the same chain of model ids (the model asked for, resolved, then its
fallbacks), prompt, system prompt, schema (its canonical form: key order does not count), images
(their SHA-256) and max_tokens. Never a call to the MCP client's own model (`client`: another
user's model, through another session), nor an answer it gave as a fallback. Nothing else is
looked at: this is no semantic cache, which is unsafe for agents (a near question is not the same
question).

A hit is the stored answer, validated again against the caller's schema (one that no longer
validates is dropped, and the call goes on as a miss), with `cached: true`, `cost_usd: 0`, no
attempts and no tokens: nothing is sent. `cache: false` on a call skips the lookup, and its fresh
answer replaces the stored one.

Memory is bounded: entries live `ttl_s`, at most `max_entries` of them and `max_bytes` of stored
JSON in all (the least recently used go first; an answer over a tenth of `max_bytes` is not
stored). The entries are kept in a `Store`: this process's memory (`MemoryStore`), or a store
every replica shares.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

from mcp_llm.schema import parse_and_validate_off_loop
from mcp_llm.schema.canonical import canonical
from mcp_llm.trace import Trace, Usage

if TYPE_CHECKING:
    from mcp_llm.config import CacheSettings
    from mcp_llm.schema import ReplyLimits

KEY_VERSION = 1  # part of every key: a change of what is stored makes old entries misses, not errors
LARGEST_SHARE = 10  # an entry may take at most 1/LARGEST_SHARE of max_bytes
NEVER_CACHED_PROVIDER = "client"


class Store(Protocol):
    """Where entries are kept: bytes under a key, each for a time."""

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl_s: float) -> None: ...

    async def delete(self, key: str) -> None: ...

    def usage(self) -> dict[str, int]:
        """What it holds (`entries`, `bytes`), for the stats; empty when it cannot say cheaply."""
        ...


class MemoryStore:
    """This process's entries, least recently used first, within a count and a byte bound."""

    def __init__(self, max_entries: int, max_bytes: int, clock: Any = time.monotonic) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._bytes = 0

    async def get(self, key: str) -> bytes | None:
        found = self._entries.get(key)
        if found is None:
            return None
        if found[0] <= self._clock():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return found[1]

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        self._drop(key)
        if len(value) * LARGEST_SHARE > self.max_bytes or self.max_entries == 0:
            return
        self._entries[key] = (self._clock() + ttl_s, value)
        self._bytes += len(value)
        while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))

    async def delete(self, key: str) -> None:
        self._drop(key)

    def usage(self) -> dict[str, int]:
        return {"entries": len(self._entries), "bytes": self._bytes}

    def _drop(self, key: str) -> None:
        found = self._entries.pop(key, None)
        if found is not None:
            self._bytes -= len(found[1])


def cache_key(chain: Sequence[str], prompt: str, system: str | None, schema: Any, images: Sequence[bytes],
              max_tokens: int | None) -> str:
    """The entry's key: a SHA-256 over everything that fixes a deterministic answer."""
    parts = {
        "v": KEY_VERSION,
        "chain": list(chain),
        "prompt": prompt,
        "system": system,
        "schema": None if schema is None else canonical(schema),
        "images": [hashlib.sha256(image).hexdigest() for image in images],
        "max_tokens": max_tokens,
    }
    text = json.dumps(parts, ensure_ascii=False, separators=(",", ":"))
    return "mcp-llm:answer:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class ResponseCache:
    """The cache as the router uses it: `key`, `get`, `put`; counters for the stats."""

    def __init__(self, settings: CacheSettings, store: Store | None = None) -> None:
        self.settings = settings
        self.store: Store = store or MemoryStore(settings.max_entries, settings.max_bytes)
        self.hits = 0
        self.misses = 0
        self.stores = 0
        self.skipped = 0  # calls that asked not to look (`cache: false`)
        self.saved = Decimal(0)  # what the hits would have cost again

    def key(self, chain: Sequence[str], prompt: str, system: str | None, schema: Any, images: Sequence[bytes],
            max_tokens: int | None, temperature: float | None) -> str | None:
        """The call's key; None when it is not to be cached (not deterministic, the client's model, disabled)."""
        if not self.settings.enabled or temperature != 0 or not chain:
            return None
        if chain[0].split("/", 1)[0] == NEVER_CACHED_PROVIDER:
            return None
        return cache_key(chain, prompt, system, schema, images, max_tokens)

    async def get(self, key: str, schema: Any, limits: ReplyLimits) -> tuple[str, Any, Trace] | None:
        """The stored answer (text, data, trace) if one is there and still validates against `schema`."""
        stored = await self.store.get(key)
        if stored is None:
            self.misses += 1
            return None
        entry = json.loads(stored)
        data = None
        if schema is not None:
            from mcp_llm.errors import OutputError

            try:
                data = await parse_and_validate_off_loop(entry["data"], schema, unwrap=None, limits=limits)
            except OutputError:  # the same canonical schema, yet it fails now: never serve it
                await self.store.delete(key)
                self.misses += 1
                return None
        original = entry["trace"]
        self.hits += 1
        if original.get("cost_usd"):
            self.saved += Decimal(str(original["cost_usd"]))
        trace = Trace.model_validate({**original, "attempts": [], "usage": Usage(), "latency_ms": 0.0, "cost_usd": 0.0,
                                      "cached": True})
        return entry["text"], data, trace

    async def put(self, key: str, text: str, data: Any, trace: Trace) -> None:
        """Keep a fresh answer (not one the client's own model gave)."""
        if trace.provider == NEVER_CACHED_PROVIDER:
            return
        kept = trace.model_dump(mode="json", include={"model", "provider", "schema_rewrites", "argument_rewrites",
                                                      "images", "cost_usd"})
        entry = {"text": text, "data": json.dumps(data), "trace": kept}
        await self.store.set(key, json.dumps(entry).encode("ascii"), self.settings.ttl_s)  # a lone surrogate escaped
        self.stores += 1

    def snapshot(self) -> dict[str, Any]:
        """For the stats: what it holds, its hits and misses, and the money the hits saved."""
        return {"enabled": self.settings.enabled, **self.store.usage(), "hits": self.hits, "misses": self.misses,
                "stores": self.stores, "skipped": self.skipped, "saved_usd": float(round(self.saved, 9))}
