"""One call end to end: resolve the chain of models, call, validate, re-ask, retry, fall back.

This is the one place where retries, re-asks and fallback happen, for every provider:

    for each model in [requested, its fallbacks…, defaults.fallback…]:
        up to 1 + max_repairs answers:       (re-ask with the validation errors)
            up to 1 + max_retries tries:     (transient errors only, backoff with jitter)
                adapter.complete(request)    (within what is left of the call's deadline)

Every try is recorded as an `Attempt`, so the result (or the final error) says what happened.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from mcp_llm.adapters.base import Completion, ImageInput, LLMAdapter, Message, Request
from mcp_llm.adapters.spec import public_url
from mcp_llm.budget import Budget, CallMoney, LocalLedger
from mcp_llm.circuit import CircuitBreakers
from mcp_llm.cost import Prices
from mcp_llm.errors import (
    AllAttemptsFailed,
    BadRequestError,
    BudgetExceeded,
    CircuitOpenError,
    InputError,
    LLMError,
    ModelNotFoundError,
    OutputError,
    ProviderError,
    ProviderTimeout,
    RateLimitedError,
    TransientError,
)
from mcp_llm.history import History
from mcp_llm.hosts import Fleet
from mcp_llm.image_fit import CannotFit, fit_all
from mcp_llm.progress import Progress, ReportFn
from mcp_llm.registry import Registry, Route
from mcp_llm.response_cache import LARGEST_SHARE, MemoryStore, ResponseCache
from mcp_llm.schema import (
    compile_for_off_loop,
    limits_from,
    parse_and_validate_off_loop,
    repair_message,
    schema_instruction,
)
from mcp_llm.state import Limiter, LocalState, State
from mcp_llm.stats import Stats
from mcp_llm.trace import Attempt, AttemptOutcome, ImageReport, Trace, Usage
from mcp_llm.vision import check_vision
from mcp_llm.words import words
from mcp_llm.zero_config import DefaultPicker

if TYPE_CHECKING:
    from mcp_llm.client_call import ClientCall
    from mcp_llm.images import LoadedImage

log = logging.getLogger("mcp_llm")

RETRY_INITIAL_WAIT_S = 0.5
RETRY_MAX_WAIT_S = 8.0


@dataclass
class Outcome:
    text: str
    data: Any
    trace: Trace


@dataclass
class CallSpec:
    prompt: str
    schema: dict[str, Any] | None = None  # the caller's checked schema; None for free text
    model: str | None = None
    system: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    images: tuple[LoadedImage, ...] = ()  # as `images.load_image` made them; fitted per route here
    timeout_s: float | None = None
    client: ClientCall | None = None  # this call's MCP client (sampling), from the tool call; never shared
    progress: ReportFn | None = None  # e.g. the MCP context's report_progress: streamed text reports through it
    max_cost_usd: float | None = None  # this call's own budget (the lower of it and budget.max_cost_per_call_usd)
    cache: bool = True  # False: skip the response cache's lookup (a fresh answer still replaces the stored one)


class _Call:
    """The state of one call while it runs: its deadline, its attempts, its token count, its money."""

    def __init__(self, timeout_s: float, money: CallMoney) -> None:
        self.started = time.perf_counter()
        self.deadline = anyio.current_time() + timeout_s
        self.attempts: list[Attempt] = []
        self.usage = Usage()
        self.images: list[ImageReport] = []  # as fitted for the model tried last
        self.argument_rewrites: list[str] = []  # likewise
        self.tokens: dict[str, tuple[int, int]] = {}  # per model id, for the usage stats
        self.progress: Progress | None = None
        self.host: str | None = None  # the host of the try being made (as shown), for its `Attempt`
        self.host_reason: str | None = None  # why that host, when the provider has several
        self.failed_hosts: set[str] = set()  # hosts that failed in this call: a retry goes elsewhere if it can
        self.money = money
        self.attempt_cost: float | None = 0.0  # the last answered attempt's, until it is recorded

    def add_tokens(self, route: Route, completion: Completion) -> None:
        used_in, used_out = completion.input_tokens or 0, completion.output_tokens or 0
        self.usage.input_tokens += used_in
        self.usage.output_tokens += used_out
        self.usage.cached_input_tokens += completion.cache_read_tokens or 0
        self.usage.cache_write_tokens += completion.cache_write_tokens or 0
        self.usage.thinking_tokens += completion.thinking_tokens or 0
        before = self.tokens.get(route.model_id, (0, 0))
        self.tokens[route.model_id] = (before[0] + used_in, before[1] + used_out)

    def remaining(self) -> float:
        return self.deadline - anyio.current_time()

    def record(self, route: Route, outcome: AttemptOutcome, started: float,
               error: LLMError | None = None, cost_usd: float | None = 0.0) -> None:
        self.attempts.append(
            Attempt(
                model=route.model_id,
                provider=route.provider,
                outcome=outcome,
                error=error.kind if error else None,
                latency_ms=round((time.perf_counter() - started) * 1000, 1),
                host=self.host,
                host_reason=self.host_reason,
                cost_usd=cost_usd,
            )
        )

    def cost_usd(self) -> float | None:
        """The sum over every attempt; None when any attempt's cost is unknown."""
        costs = [attempt.cost_usd for attempt in self.attempts]
        return None if None in costs else round(sum(c or 0.0 for c in costs), 9)


class Router:
    def __init__(self, registry: Registry, state: State | None = None) -> None:
        self.registry = registry
        self._concurrency: dict[str, int] = {}
        self._fleets: dict[str, Fleet | None] = {}  # per provider: its hosts when it has several, else None
        self._hosts: dict[str, str | None] = {}  # per provider at one host: that host, as shown
        defaults = registry.settings.defaults
        self.breakers = CircuitBreakers(defaults.circuit_failures, defaults.circuit_cooldown_s)
        self.schema_limits, self.reply_limits = limits_from(registry.settings.limits)
        self.picker = DefaultPicker(registry)
        self.stats = Stats()
        self.history = History()  # the last hour by minute, for the status page (history.py)
        # Circuits, limits and stats: this process's own, or shared with the other replicas (`[state]`, state.py)
        self.state = state if state is not None else LocalState()
        self.state.attach(self.breakers, self.stats, self.history)
        # The day's spending: this process's, or the fleet's one total (in Redis, with [state])
        self.budget = Budget(registry.settings.budget, Prices(registry.settings),
                             self.state.spend_ledger(LocalLedger()))
        cache = registry.settings.cache  # its entries in this process, or the fleet's (in Redis, with [state])
        self.cache = ResponseCache(cache, self.state.cache_store(MemoryStore(cache.max_entries, cache.max_bytes),
                                                                 cache.max_entries, cache.max_bytes // LARGEST_SHARE))
        self.stats.sections.update(cache=self.cache.snapshot, budget=self.budget.snapshot)

    def limiter(self, provider: str) -> Limiter:
        """At most `providers.<name>.concurrency` requests in flight to one provider, across every replica
        when state is shared (a lease per request, see state.py). A host's key (`provider|host`,
        hosts.host_key) counts the calls in flight to that host here, within the provider's."""
        if provider not in self._concurrency:
            settings = self.registry.settings.provider_settings(provider.partition("|")[0])
            if settings is None:
                settings = self.registry.settings.providers.openai_compatible.get(provider)
            # The client's own model (sampling) has no `concurrency` setting: 4 requests at a time.
            self._concurrency[provider] = settings.concurrency if settings else 4
        return self.state.limiter(provider, self._concurrency[provider])

    def fleet(self, provider: str, adapter: LLMAdapter) -> Fleet | None:
        """The provider's hosts, when it has several and its spec can ask each what it has (hosts.py); None
        for a provider at one host, which is called as it always was."""
        if provider in self._fleets:
            return self._fleets[provider]
        table = self.registry.table(provider)
        urls = self.registry.hosts(provider)
        fleet = None
        if table is not None and table.spec.host_report is not None and len(urls) > 1:
            report = table.spec.host_report
            fleet = Fleet(provider, urls, lambda url: report(adapter, url), self.breakers,
                          lambda key: self.limiter(key).borrowed_tokens,
                          refresh_s=getattr(table.section, "hosts_refresh_s", 5.0))
        self._fleets[provider] = fleet
        return fleet

    def fleets(self) -> dict[str, Fleet]:
        return {name: fleet for name, fleet in self._fleets.items() if fleet is not None}

    def single_host(self, provider: str) -> str | None:
        """The one host of a provider that has one (as shown: no credentials); None when it is not at an address."""
        if provider not in self._hosts:
            urls = self.registry.hosts(provider)
            self._hosts[provider] = public_url(urls[0]) if urls else None
        return self._hosts[provider]

    async def aclose(self) -> None:
        fleets, self._fleets = list(self.fleets().values()), {}
        for fleet in fleets:
            await fleet.aclose()

    @property
    def defaults(self) -> Any:
        return self.registry.settings.defaults

    def chain(self, first: Route) -> list[str]:
        """The requested model, its own fallbacks, then `defaults.fallback`; each once."""
        entry = self.registry.configured_entry(first.model_id)
        ids = [first.model_id, *(entry.fallback if entry else []), *self.defaults.fallback]
        if self.registry.settings.providers.client.as_fallback:
            ids.append("client")
        return list(dict.fromkeys(ids))

    async def run(self, spec: CallSpec) -> Outcome:
        """The call, counted in `self.stats` whether it answers or fails (a cancelled call is not)."""
        call = _Call(spec.timeout_s or self.defaults.timeout_s, self.budget.start(spec.max_cost_usd))
        if spec.progress is not None:
            call.progress = Progress(spec.progress)
        try:
            outcome = await self._run_chain(spec, call)
        except LLMError as exc:
            kind = exc.last.kind if isinstance(exc, AllAttemptsFailed) else exc.kind
            self._count(call, _ms_since(call.started), kind)
            raise
        self._count(call, outcome.trace.latency_ms, None)
        return outcome

    def _count(self, call: _Call, latency_ms: float, error_kind: str | None) -> None:
        """A finished call: in the usage since start (stats.py) and in the last hour's minutes (history.py)."""
        self.stats.record(call.attempts, call.tokens, latency_ms, error_kind)
        self.history.record(call.attempts, call.tokens, latency_ms, error_kind)

    async def _run_chain(self, spec: CallSpec, call: _Call) -> Outcome:
        vision = bool(spec.images)
        model = spec.model
        if not (model or "").strip() and self.registry.configured_default(vision=vision) is None:
            model = await self.picker.pick(vision=vision, client=spec.client)
        else:
            await self.picker.prepare(model)  # `llamacpp/<model>` as list_models showed it, in a fresh process
        first = self.registry.resolve(model, vision=vision)
        errors: list[tuple[str, LLMError]] = []
        chain = self.chain(first)
        resumed = spec.client.resume(chain) if spec.client is not None else None
        if resumed is not None:  # a 2026-07-28 call back with the client's answer: go on where it stopped
            errors, call.attempts, call.usage = resumed.errors, resumed.attempts, resumed.usage
            call.started -= resumed.elapsed_s
            call.deadline -= resumed.elapsed_s
            call.money.resume([attempt.cost_usd for attempt in call.attempts])
        key = self.cache.key(chain, spec.prompt, spec.system, spec.schema, [i.data for i in spec.images],
                             spec.max_tokens, spec.temperature) if resumed is None else None
        if key is not None and spec.cache and (hit := await self.cache.get(key, spec.schema, self.reply_limits)):
            text, data, trace = hit
            return Outcome(text, data, trace.model_copy(update={"latency_ms": _ms_since(call.started)}))
        self.cache.skipped += key is not None and not spec.cache
        for model_id in chain[len(errors):]:
            if spec.client is not None:
                spec.client.checkpoint(errors, call.attempts, call.usage)
            try:
                route = first if model_id == first.model_id else self.registry.resolve(model_id)
            except InputError as exc:
                errors.append((model_id, exc))  # a bad fallback id in config: say so, try the next
                continue
            try:
                outcome = await self._run_model(route, spec, call)
            except (ProviderError, OutputError) as exc:
                errors.append((model_id, exc))
            else:
                if key is not None:
                    await self.cache.put(key, outcome.text, outcome.data, outcome.trace)
                return outcome
            if call.remaining() <= 0:
                break
        raise _all_failed(errors, call)

    async def _run_model(self, route: Route, spec: CallSpec, call: _Call) -> Outcome:
        adapter = await self.registry.ready_adapter(route.provider)
        images, call.images = await self._images_for(adapter, route, spec.images)
        dialect = self.registry.schema_dialect(route.provider)
        compiled = await compile_for_off_loop(dialect, spec.schema) if spec.schema is not None else None
        system = spec.system
        if spec.schema is not None:
            system = "\n\n".join(part for part in (spec.system, schema_instruction(spec.schema)) if part)
        unwrap = compiled.wrapped_in if compiled else None
        temperature, call.argument_rewrites = fit_temperature(spec.temperature, adapter, route)
        messages = [Message("user", spec.prompt, list(images))]
        repairs = self.defaults.max_repairs if spec.schema is not None else 0
        for round_ in range(repairs + 1):
            request = Request(
                model=route.native,
                messages=list(messages),
                system=system,
                schema=compiled.schema if compiled and adapter.capabilities.native_schema else None,
                temperature=temperature,
                max_tokens=spec.max_tokens,
                options=route.options,
                client=spec.client,
            )
            completion, started = await self._complete_with_retries(adapter, route, request, call)
            call.add_tokens(route, completion)
            data: Any = None
            if spec.schema is not None:
                try:
                    data = await parse_and_validate_off_loop(completion.text, spec.schema, unwrap=unwrap,
                                                             limits=self.reply_limits)
                except OutputError as exc:
                    call.record(route, "invalid_output", started, exc, call.attempt_cost)
                    if round_ == repairs or call.remaining() <= 0:
                        raise
                    messages += [Message("assistant", completion.text), Message("user", repair_message(exc))]
                    continue
            call.record(route, "ok", started, cost_usd=call.attempt_cost)
            trace = self._trace(route, call, compiled.rewrites if compiled else [], completion.model)
            return Outcome(completion.text, data, trace)
        raise AssertionError("unreachable: the last round returns or raises")

    async def _images_for(
        self, adapter: LLMAdapter, route: Route, images: tuple[LoadedImage, ...]
    ) -> tuple[tuple[ImageInput, ...], list[ImageReport]]:
        """The images as `route`'s provider can take them, and what was done to each (for the trace).

        Routing decides who may see an image: a model that cannot read images is refused here,
        before anything is sent (`vision.check_vision`). The pixels are image_fit's. Either refusal
        is a non-retryable error of that provider, so the next model of the chain is tried.
        """
        if not images:
            return (), []
        await check_vision(self.registry, adapter, route)
        try:
            return await fit_all(images, adapter.capabilities, route.provider)
        except CannotFit as exc:
            raise BadRequestError(f"The image {exc}.", provider=route.provider, model=route.model_id,
                                  hint="Use another provider's model, or send a smaller image.") from None

    async def _complete_with_retries(
        self, adapter: LLMAdapter, route: Route, request: Request, call: _Call
    ) -> tuple[Completion, float]:
        """The completion and when its successful try started; failed tries are recorded here."""
        from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

        provider = route.provider
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(TransientError),
            stop=stop_after_attempt(self.defaults.max_retries + 1),
            wait=self._wait(wait_exponential_jitter(initial=RETRY_INITIAL_WAIT_S, max=RETRY_MAX_WAIT_S,
                                                    jitter=RETRY_INITIAL_WAIT_S)),
            before_sleep=lambda state: self._check_before_sleep(state, call, provider),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                started = time.perf_counter()
                call.host = call.host_reason = None
                if not self.breakers.allow(provider):
                    error = self._circuit_open(route)
                    call.record(route, "skipped", started, error)
                    raise error
                try:
                    hold = await call.money.before(provider, route.model_id, route.native, request, call.images)
                except BudgetExceeded as exc:  # nothing sent: the chain moves on, maybe to a cheaper model
                    self.breakers.release(provider)
                    call.record(route, "skipped", started, exc)
                    raise
                if hold.note and hold.note not in call.argument_rewrites:
                    call.argument_rewrites.append(hold.note)
                try:
                    completion = await self._complete_before_deadline(adapter, route, request, call)
                except CircuitOpenError as exc:  # opened by another replica, as the limiter's lease found
                    self.breakers.release(provider)
                    call.record(route, "skipped", started, exc, await call.money.after(hold, provider, route.native,
                                                                                       None, exc))
                    raise
                except TransientError as exc:
                    self.breakers.failure(provider)
                    call.record(route, "error", started, exc, await call.money.after(hold, provider, route.native,
                                                                                     None, exc))
                    await self.state.share_changes()  # shared state: the fleet counts it before anyone hears of it
                    raise
                except ProviderError as exc:  # the request's fault (auth, 404, 400), not the provider's health
                    self.breakers.release(provider)
                    call.record(route, "error", started, exc, await call.money.after(hold, provider, route.native,
                                                                                     None, exc))
                    raise
                except BaseException:  # cancelled: the day keeps the attempt's worst case (it may have been billed)
                    self.breakers.release(provider)
                    raise
                self.breakers.success(provider)
                call.attempt_cost = await call.money.after(hold, provider, route.native, completion)
                return completion, started
        raise AssertionError("unreachable: tenacity re-raises the last error")

    def _circuit_open(self, route: Route) -> CircuitOpenError:
        provider, failures = route.provider, self.breakers.threshold
        return CircuitOpenError(
            f"{provider} is skipped: it failed {failures} time{'s' if failures != 1 else ''} in a row.",
            provider=provider, model=route.model_id,
            hint=f"It is tried again in {self.breakers.retry_in(provider):.1f} s; "
            f"{words().provider_health} shows its state.",
        )

    async def _complete_before_deadline(
        self, adapter: LLMAdapter, route: Route, request: Request, call: _Call
    ) -> Completion:
        remaining = call.remaining()
        with anyio.move_on_after(remaining) as scope:
            async with self.limiter(route.provider):
                if self.state.shared and self.breakers.state(route.provider) == "open":
                    raise self._circuit_open(route)  # the fleet's circuit, as entering the limiter read it
                return await self._on_a_host(adapter, route, request, call)
        assert scope.cancelled_caught
        raise ProviderTimeout(
            f"{route.model_id} did not answer within the call's deadline.",
            provider=route.provider,
            model=route.model_id,
            hint=f"Pass a larger {words().timeout_s} for slow models, or raise defaults.timeout_s.",
        )

    async def _on_a_host(self, adapter: LLMAdapter, route: Route, request: Request, call: _Call) -> Completion:
        """One try, on a host: the provider's only one, or of several the one `Fleet.pick` chooses, and at once
        the next one when it fails before the first chunk of its answer (unreachable, an error status, a model
        it turns out not to have). That is the host failing, not the model: it costs no retry, and only the
        host's circuit counts it. A failure once the answer streams is the try's, retried as any other."""
        listener = call.progress.listener(route.model_id, call.attempts) if call.progress else None
        fleet = self.fleet(route.provider, adapter)
        if fleet is None:
            call.host = self.single_host(route.provider)
            request.timeout_s = max(call.remaining(), 0.001)
            request.on_chunk, request.stream = listener, listener is not None
            return await adapter.complete(request)
        await fleet.ready()
        tried: list[str] = []
        failure: ProviderError | None = None
        after = ""  # why this is not the first host of the try
        while (choice := fleet.pick(route.native, tried, call.failed_hosts)) is not None:
            host = choice.host
            tried.append(host.url)
            call.host, call.host_reason = host.public, after + choice.why
            first, request.on_chunk = _noting_first_chunk(listener)
            request.stream = listener is not None  # the first chunk is only noted: a plain answer is one chunk
            request.host = host.url
            request.timeout_s = max(call.remaining(), 0.001)
            started = time.perf_counter()
            try:
                async with self.limiter(host.key):
                    completion = await adapter.complete(request)
            except (TransientError, ModelNotFoundError) as exc:
                fleet.failed(host, route.native, exc, streamed=bool(first))
                call.failed_hosts.add(host.url)
                elsewhere = [h for h in fleet.serving(route.native) if h not in {public_url(t) for t in tried}]
                if first or (isinstance(exc, ModelNotFoundError) and not elsewhere):
                    raise
                log.warning("%s: %s failed on %s before answering (%s: %s); trying another host at once",
                            route.provider, route.model_id, host.public, exc.kind, exc.message)
                failure = exc
                after = f"{host.public} failed before answering ({exc.kind}); "
                continue
            except BaseException:  # not the host's fault (a 400, auth), or cancelled: no verdict on it
                self.breakers.release(host.key)
                raise
            fleet.answered(host, route.native, ((first[0] if first else time.perf_counter()) - started) * 1000)
            return completion
        assert failure is not None  # `pick` gives a host until every one was tried
        raise failure

    def _wait(self, backoff: Any) -> Any:
        """Exponential backoff with jitter, or the provider's Retry-After up to `retry_after_max_s`."""

        def wait(state: Any) -> float:
            error = state.outcome.exception() if state.outcome else None
            if isinstance(error, RateLimitedError) and error.retry_after is not None:
                return min(error.retry_after, self.defaults.retry_after_max_s)
            return float(backoff(state))

        return wait

    def _check_before_sleep(self, state: Any, call: _Call, provider: str) -> None:
        """Give up now, with the last error, rather than sleep past the deadline or retry a
        provider whose circuit that failure just opened (the next model is tried at once)."""
        wait = state.next_action.sleep if state.next_action else 0
        if wait >= call.remaining() or self.breakers.state(provider) == "open":
            outcome = state.outcome
            if outcome is not None and outcome.failed:
                raise outcome.exception()

    @staticmethod
    def _trace(route: Route, call: _Call, rewrites: list[str], reported: str | None = None) -> Trace:
        return Trace(
            model=reported or route.model_id,
            provider=route.provider,
            attempts=call.attempts,
            usage=call.usage,
            latency_ms=round((time.perf_counter() - call.started) * 1000, 1),
            schema_rewrites=rewrites,
            argument_rewrites=call.argument_rewrites,
            images=call.images,
            cost_usd=call.cost_usd(),
        )


def fit_temperature(temperature: float | None, adapter: LLMAdapter, route: Route) -> tuple[float | None, list[str]]:
    """The temperature this provider gets, and the note when it had to be lowered to its range."""
    top = adapter.capabilities.temperature_max
    if temperature is None or temperature <= top:
        return temperature, []
    return top, [f"temperature {temperature:g} lowered to {top:g}, the highest {route.provider} takes"]


def _noting_first_chunk(listener: Callable[[str], Awaitable[None]] | None
                        ) -> tuple[list[float], Callable[[str], Awaitable[None]]]:
    """An `on_chunk` that notes when the first chunk came (in the list, empty until then), and passes every
    chunk on to `listener` (progress), if any."""
    first: list[float] = []

    async def on_chunk(text: str) -> None:
        if not first:
            first.append(time.perf_counter())
        if listener is not None:
            await listener(text)

    return first, on_chunk


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


def _all_failed(errors: list[tuple[str, LLMError]], call: _Call) -> LLMError:
    tries = len(call.attempts)
    if len(errors) == 1:
        model_id, error = errors[0]
        suffix = f" ({tries} attempt{'s' if tries != 1 else ''} with {model_id}: {_kinds(call, model_id)})"
        detail = _describe(error)
        hint = error.hint or (OUTPUT_HINT if isinstance(error, OutputError) else None)
        return AllAttemptsFailed(detail + suffix, attempts=call.attempts, last=error, hint=hint)
    listing = "; ".join(f"{model_id}: {_describe(error)} [{_kinds(call, model_id)}]" for model_id, error in errors)
    return AllAttemptsFailed(
        f"Every model in the fallback chain failed ({tries} attempts) — {listing}",
        attempts=call.attempts,
        last=errors[-1][1],
        hint=next((e.hint for _, e in errors if e.hint), OUTPUT_HINT),
    )


OUTPUT_HINT = (
    "Describe the fields in the prompt, simplify the schema, raise defaults.max_repairs, "
    "or use a stronger model (defaults.fallback tries others)."
)


def _kinds(call: _Call, model_id: str) -> str:
    """What each attempt with one model got, e.g. `unavailable, unavailable, server_error`."""
    kinds = [a.error or a.outcome for a in call.attempts if a.model == model_id]
    return ", ".join(kinds) or "not tried"


REPLY_EXCERPT_CHARS = 160


def _describe(error: LLMError) -> str:
    """The error's message; for an unusable answer, also its problems and how the answer began,
    so the caller sees what the model actually said (prose, a cut-off object, a wrong shape)."""
    if not isinstance(error, OutputError):
        return error.message
    text = error.message
    if error.errors:
        text += f" Last problems: {'; '.join(error.errors[:3])}."
    reply = " ".join(error.reply.split())
    if reply:
        if len(reply) > REPLY_EXCERPT_CHARS:
            reply = reply[: REPLY_EXCERPT_CHARS - 1] + "…"
        text += f" The answer began: {json.dumps(reply, ensure_ascii=False)}."
    return text
