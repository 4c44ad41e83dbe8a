"""Several hosts behind one provider: what each has, and which one a call goes to (issue 20).

A provider that lists several hosts (`[providers.ollama] hosts = [...]`, `hosts` on an OpenAI-compatible
endpoint) and whose spec can ask a host what it has (`ProviderSpec.host_report`: Ollama's `/api/tags` and
`/api/ps`, a llama-server's or vLLM's `/v1/models`) gets a `Fleet`. Every other provider is one host, as
before, and never comes here.

Which host, for a call to model M (`Fleet.pick`), each step keeping what the one before kept:

    1. the hosts that have M (one not heard from yet may; when none has it, all of them, and the
       host's own 404 says so);
    2. the admitted ones: circuit not open (when every one is ejected, all of them anyway, so the
       call gets a real answer or a real error, not one of ours);
    3. those where M is loaded now, so that a call never waits for a model to load (tens of seconds
       on a GPU box) while another host has it hot;
    4. the fewest calls in flight; then the lowest recent latency (a moving average of the time to
       the first chunk), hosts within 1.5 times the best plus 25 ms counting as equal, and one not
       measured in the last 30 s as fast as any (so a host left out is measured again); among
       equals, each in turn, so calls for one model spread over the hosts that have it loaded.

It is a few dict lookups over what was found last: no I/O on the call's path. Why a host was picked
goes to the trace (`Attempt.host_reason`) and the log (DEBUG); what each host has, its circuit and its
calls in flight, to `provider_health`.

What each host has is asked again in the background every `hosts_refresh_s`, the first time on the
first call (which waits for it, at most `PROBE_TIMEOUT_S`). After a call a host answered, its model
counts as loaded there until the next report says otherwise.

A host's circuit is `provider|host` in the router's `CircuitBreakers` (shared between replicas with
`[state]`), as its calls in flight are in the router's limiter of that key. A host that cannot be
reached (connection refused or reset, a timeout before any byte) is ejected at once; one that answers
with errors is ejected after `defaults.circuit_failures` in a row. The background probe readmits a
host as soon as it answers again when it was unreachable, and once its cool-down has passed when it
erred. The router retries a failure before the first chunk at once on another host, inside the call's
deadline, without counting it against the model (router.py, `_on_a_host`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import anyio

from mcp_llm.adapters.base import Health, HostHealth, HostReport
from mcp_llm.adapters.spec import public_url
from mcp_llm.errors import ModelNotFoundError, ProviderError, ProviderTimeout, ProviderUnavailable

if TYPE_CHECKING:
    from mcp_llm.circuit import CircuitBreakers

log = logging.getLogger("mcp_llm")

PROBE_TIMEOUT_S = 2.0  # one host's report; the first call waits for the first round at most this long
# Hosts within this of the fastest count as equally fast (then taken in turn): the time to a first chunk varies
# with the prompt and the network by tens of ms, while a slower box is slower by a multiple.
LATENCY_SLACK = 1.5
LATENCY_SLACK_MS = 25.0
LATENCY_MAX_AGE_S = 30.0  # an estimate not renewed for this long counts as unknown, so a host left out is tried again
EWMA_WEIGHT = 0.3  # of the newest time to first chunk in a host's moving average
HOT_S = 300.0  # how long a model a host just answered with counts as loaded there (Ollama's default keep_alive)

Status = Literal["ok", "degraded", "down", "unconfigured"]


def host_key(provider: str, host: str) -> str:
    """The key of a host's circuit and limiter: `provider|host` (the host's public URL: the same on every
    replica, and no credentials in a shared store). The same as circuit.circuit_key(provider, host)."""
    return f"{provider}|{public_url(host)}"


@dataclass(frozen=True)
class Choice:
    """A host picked for one call, and why (the trace's `host_reason`)."""

    host: Host
    why: str


@dataclass
class Host:
    """One host as this server knows it."""

    url: str  # as the adapter takes it (credentials included, if the config gave any)
    public: str  # as everything shows it
    key: str  # its circuit's and limiter's
    report: HostReport | None = None  # its last report; None: never heard from
    loaded_until: dict[str, float | None] = field(default_factory=dict)  # model → monotonic expiry (None: none)
    status: Status = "ok"
    probe_ms: float | None = None
    detail: str = "not asked yet"
    unreachable: bool = False  # ejected because it could not be reached: readmitted when a probe answers
    ejected: str | None = None  # why it is out, until it is readmitted
    ewma_ms: float | None = None
    ewma_at: float = 0.0  # when it was last renewed (monotonic)

    def recent_ms(self, now: float) -> float | None:
        """Its recent time to the first chunk; None when it has none, or none this recent."""
        return self.ewma_ms if self.ewma_ms is not None and now - self.ewma_at < LATENCY_MAX_AGE_S else None

    def has(self, model: str) -> bool:
        return self.report is not None and model in self.report.models

    def loaded(self, model: str, now: float) -> bool:
        if model not in self.loaded_until:
            return False
        until = self.loaded_until[model]
        return until is None or until > now

    def loaded_names(self, now: float) -> list[str]:
        return _shown(name for name in self.loaded_until if self.loaded(name, now))

    def model_count(self) -> int | None:
        return None if self.report is None else len(_shown(self.report.models))


def _shown(names: Iterable[str]) -> list[str]:
    """Names as shown: a bare name a report adds for its `:latest` tag (Ollama's) is not listed twice."""
    kept = set(names)
    return sorted(name for name in kept if f"{name}:latest" not in kept)


class Fleet:
    """The hosts of one provider: their reports, the choice of one per call, their ejection and return.

    `report(url)` asks one host (the spec's `host_report` with the provider's adapter); `in_flight(key)`
    says how many calls this server has in flight to a host (the router's limiter of its key)."""

    def __init__(self, provider: str, urls: list[str], report: Callable[[str], Awaitable[HostReport]],
                 breakers: CircuitBreakers, in_flight: Callable[[str], int], refresh_s: float) -> None:
        self.provider = provider
        self.hosts = [Host(url, public_url(url), host_key(provider, url)) for url in urls]
        self._report = report
        self._breakers = breakers
        self._in_flight = in_flight
        self.refresh_s = refresh_s
        self.refreshed_at: float | None = None
        self._lock = anyio.Lock()
        self._refreshing: asyncio.Task[None] | None = None
        self._turn = 0

    # --- what each host has -------------------------------------------------------------------

    async def ready(self) -> None:
        """Before a call: the first time, ask every host (waiting at most PROBE_TIMEOUT_S); after that,
        when the reports are older than `refresh_s`, ask again in the background and go on at once."""
        if self.refreshed_at is None:
            with anyio.move_on_after(PROBE_TIMEOUT_S * 2):
                async with self._lock:  # calls at once, before any report: one round for all of them
                    if self.refreshed_at is None:
                        await self._refresh()
            return
        if time.monotonic() - self.refreshed_at >= self.refresh_s:
            self._refresh_in_background()

    async def refresh(self) -> None:
        """Ask every host now (provider_health, `mcp-llm health`)."""
        async with self._lock:
            await self._refresh()

    def _refresh_in_background(self) -> None:
        if self._refreshing is not None:
            return
        try:
            self._refreshing = asyncio.get_running_loop().create_task(self.refresh())
        except RuntimeError:  # not on an asyncio loop: the reports stay as they are until one is
            return
        self._refreshing.add_done_callback(self._refreshed)

    def _refreshed(self, task: asyncio.Task[None]) -> None:
        self._refreshing = None
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: asking its hosts what they have failed", self.provider, exc_info=task.exception())

    async def _refresh(self) -> None:
        async with anyio.create_task_group() as tg:
            for host in self.hosts:
                tg.start_soon(self._probe, host)
        self.refreshed_at = time.monotonic()

    async def _probe(self, host: Host) -> None:
        started = time.perf_counter()
        report: HostReport | None = None
        error: ProviderError | None = None
        with anyio.move_on_after(PROBE_TIMEOUT_S):
            try:
                report = await self._report(host.url)
            except ProviderError as exc:
                error = exc
        host.probe_ms = round((time.perf_counter() - started) * 1000, 1)
        if report is None:
            why = error.message if error is not None else f"no answer in {PROBE_TIMEOUT_S:g} s"
            if error is None or isinstance(error, ProviderUnavailable | ProviderTimeout):
                self._eject(host, why)
            host.status, host.detail = "down", why
            return
        now = time.monotonic()
        host.report = report
        host.loaded_until = {name: None if left is None else now + left for name, left in report.loaded.items()}
        count = host.model_count() or 0
        loaded = len(host.loaded_names(now))
        host.status, host.detail = "ok", f"{count} model{'s' if count != 1 else ''}, {loaded} loaded"
        state = self._breakers.state(host.key)
        if state != "closed" and (host.unreachable or state == "half_open"):
            self._breakers.success(host.key)
            log.warning("%s: host %s answers again: readmitted", self.provider, host.public)
            host.ejected = None
        elif state == "open":  # it answers its probe, but its calls failed: out until its cool-down ends
            host.status = "degraded"
            host.detail = f"{host.ejected or 'ejected'}; answers its probe, readmitted once its cool-down ends"
        host.unreachable = False

    # --- the choice ---------------------------------------------------------------------------

    def pick(self, model: str, exclude: Collection[str] = (), avoid: Collection[str] = ()) -> Choice | None:
        """The host for one call to `model` (the provider's own name), as the module's docstring says, and why;
        None when every host is in `exclude` (tried already in this attempt). Hosts in `avoid` (failed earlier
        in this call) are taken only when no other host has the model. A half-open host is taken as its trial."""
        hosts = [h for h in self.hosts if h.url not in exclude]
        if not hosts:
            return None
        having = [h for h in hosts if h.has(model)]
        why = ""
        if not having:
            having = [h for h in hosts if h.report is None] or hosts
            why = f"no host reports having {model}"
        having = [h for h in having if h.url not in avoid] or having
        admitted = [h for h in having if self._breakers.state(h.key) != "open"]
        now = time.monotonic()
        for pool, claim in ((admitted, True), (having, False)):
            while pool:
                host, reason = self._best(pool, model, now)
                if not claim or self._breakers.allow(host.key):
                    if not claim:
                        log.warning("%s: every host with %s is ejected; trying %s anyway", self.provider, model,
                                    host.public)
                        reason = f"every host with {model} is ejected: tried anyway; {reason}"
                    return Choice(host, "; ".join(part for part in (why, reason) if part))
                pool = [h for h in pool if h is not host]  # half-open, its one trial already running
        return None  # pragma: no cover - `having` is never empty, and its pass claims nothing

    def _best(self, pool: list[Host], model: str, now: float) -> tuple[Host, str]:
        loaded = [h for h in pool if h.loaded(model, now)]
        pool = loaded or pool
        flights = {h.key: self._in_flight(h.key) for h in pool}
        fewest = min(flights.values())
        pool = [h for h in pool if flights[h.key] == fewest]
        recent = {h.key: h.recent_ms(now) for h in pool}
        known = [ms for ms in recent.values() if ms is not None]
        if known:  # a host with no recent estimate is as fast as any, until measured
            cutoff = min(known) * LATENCY_SLACK + LATENCY_SLACK_MS
            pool = [h for h in pool if (ms := recent[h.key]) is None or ms <= cutoff]
        self._turn += 1
        chosen = pool[self._turn % len(pool)]
        why = (f"{model} loaded there" if loaded else f"{model} loaded on no admitted host") + \
            f"; {fewest} in flight" + (f"; recent {ms:g} ms" if (ms := chosen.recent_ms(now)) is not None else "") + \
            (f"; {len(pool)} hosts equal, taken in turn" if len(pool) > 1 else "")
        log.debug("%s/%s → %s (%s)", self.provider, model, chosen.public, why)
        return chosen, why

    # --- what a call found --------------------------------------------------------------------

    def answered(self, host: Host, model: str, first_chunk_ms: float) -> None:
        """A call `host` answered: its latency joins the host's average, and the model counts as loaded there."""
        now = time.monotonic()
        previous = host.recent_ms(now)
        host.ewma_ms = round(first_chunk_ms if previous is None else
                             EWMA_WEIGHT * first_chunk_ms + (1 - EWMA_WEIGHT) * previous, 1)
        host.ewma_at = now
        if not host.loaded(model, time.monotonic()):
            host.loaded_until[model] = time.monotonic() + HOT_S
        self._breakers.success(host.key)
        host.ejected = None

    def failed(self, host: Host, model: str, error: ProviderError, *, streamed: bool) -> None:
        """A call to `host` failed: its circuit counts it (an unreachable host is ejected at once), or, for a
        model it no longer has, the model is dropped from what it has until its next report."""
        if isinstance(error, ModelNotFoundError) and not streamed:
            host.loaded_until.pop(model, None)
            if host.report is not None:
                host.report = HostReport(models=host.report.models - {model}, loaded=host.report.loaded,
                                         vram=host.report.vram, version=host.report.version)
            self._breakers.release(host.key)
            return
        if isinstance(error, ProviderUnavailable | ProviderTimeout) and not streamed:
            self._eject(host, error.message)
            return
        self._breakers.failure(host.key)
        if self._breakers.state(host.key) == "open":
            host.ejected = f"ejected after {self._breakers.threshold} failures in a row: {error.message}"
            host.status, host.detail = "degraded", host.ejected
            log.warning("%s: host %s ejected (%s)", self.provider, host.public, error.message)

    def _eject(self, host: Host, why: str) -> None:
        if self._breakers.state(host.key) != "open":
            log.warning("%s: host %s cannot be reached, ejected until it answers again (%s)", self.provider,
                        host.public, why)
            for _ in range(self._breakers.threshold):  # opens it now (through the counts, as shared state sees)
                self._breakers.failure(host.key)
        host.unreachable = True
        host.ejected = f"ejected: {why}"
        host.status, host.detail = "down", host.ejected

    # --- what is shown ------------------------------------------------------------------------

    def serving(self, model: str) -> list[str]:
        """The hosts that have `model`, as shown."""
        return [h.public for h in self.hosts if h.has(model)]

    def rows(self) -> list[HostHealth]:
        now = time.monotonic()
        return [HostHealth(host=h.public, status=h.status, latency_ms=h.probe_ms,
                           loaded=h.loaded_names(now) if h.report is not None else None,
                           in_flight=self._in_flight(h.key), circuit=self._breakers.state(h.key),
                           models=h.model_count(),
                           recent_latency_ms=h.ewma_ms, detail=h.detail) for h in self.hosts]

    def summary(self, base: Health) -> Health:
        """The provider's own row, from its hosts': ok when every host is up, degraded when some are."""
        up = [h for h in self.hosts if h.status == "ok"]
        status: Status = "ok" if len(up) == len(self.hosts) else "degraded" if up else "down"
        latencies = [h.probe_ms for h in up if h.probe_ms is not None]
        down = "; ".join(f"{h.public}: {h.detail}" for h in self.hosts if h.status != "ok")
        detail = f"{len(up)} of {len(self.hosts)} hosts up" + (f" ({down})" if down else "")
        return base.model_copy(update={"status": status, "latency_ms": min(latencies) if latencies else None,
                                       "detail": detail})

    async def aclose(self) -> None:
        task, self._refreshing = self._refreshing, None
        if task is not None:
            task.cancel()
            with anyio.CancelScope(shield=True):
                await asyncio.wait([task])
