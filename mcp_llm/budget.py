"""Budgets that hold before money is spent: per call and per day, checked before each attempt.

Before an attempt is sent, its worst case is priced: its prompt's tokens, bounded, and its `max_tokens`,
at the model's price (cost.py). It is sent only if that fits in what is left of the call's budget (the
lower of `[budget] max_cost_per_call_usd` and the call's `max_cost_usd`) and of the day's (`daily_usd`,
per UTC day). Otherwise it is not made (`BudgetExceeded`: the router records it as skipped and moves on
along the chain, so a cheaper model, say a free local one, still answers).

- **The prompt's bound**: a token is at least one byte of text in every tokenizer these providers use,
  so the UTF-8 bytes of the system prompt, the messages and the schema sent, plus the chat template's
  and a structured-output request's own tokens (`REQUEST_OVERHEAD_TOKENS`, `MESSAGE_OVERHEAD_TOKENS`),
  plus each image's bound from its sent size (`image_tokens_bound`), is at least what any of them counts.
- **The answer's bound** is `max_tokens`, which providers enforce (thinking included). A call that sets
  none is sent `[budget] default_max_tokens` under a budget, so even it has a bound (the trace's
  `argument_rewrites` says so). A free model (`cost_per_mtok = 0`) is never bounded: it costs nothing.
- **An unknown price** cannot be bounded, so under a budget such a model is not asked.
- **What is charged**: the day's total holds every attempt's worst case while it runs (so calls in
  parallel cannot overrun it together), then its real cost once known; an attempt whose cost cannot be
  known (a timeout, a stream broken mid-answer: the provider may have billed it) keeps its worst case.

The day's total lives in a `Ledger`: this process's memory (`LocalLedger`), or a store every replica
shares, where one is configured. Amounts are whole nano-dollars, rounded up, so sums are exact.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_CEILING, Decimal
from typing import TYPE_CHECKING, Any, Protocol

from mcp_llm.cost import Prices, Tokens, billed_nothing, price_data_version, usd
from mcp_llm.errors import BudgetExceeded, LLMError, ProviderError
from mcp_llm.words import words

if TYPE_CHECKING:
    from mcp_llm.adapters.base import Completion, Request
    from mcp_llm.config import BudgetSettings
    from mcp_llm.trace import ImageReport

NANO_PER_USD = 10**9
REQUEST_OVERHEAD_TOKENS = 1024  # a forced tool's or structured output's own system prompt (Anthropic's: ~350)
MESSAGE_OVERHEAD_TOKENS = 16  # the chat template's role markers around each message
UNSIZED_IMAGE_TOKENS = 8192  # an image whose sent size is not known: above every provider's largest


def to_nano(amount: Decimal) -> int:
    """Dollars as whole nano-dollars, rounded up: a charge is never less than the cost."""
    return int((amount * NANO_PER_USD).to_integral_value(rounding=ROUND_CEILING))


def dollars(nano: int) -> str:
    """An amount for a message: `$0.0123`, `$1.50`, `$0`."""
    value = nano / NANO_PER_USD
    if value == 0:
        return "$0"
    return f"${value:.2f}" if value >= 1 else f"${value:.4g}"


def image_tokens_bound(width: int, height: int) -> int:
    """The most tokens an image of this size is billed as by any provider: Anthropic (w·h/750), OpenAI's
    high detail (85 + 170 per 512-pixel tile; the patch-based models at most 1,536 × 2.46), Gemini (258 per
    768-pixel tile). The sizes are those sent, after fitting to the provider."""
    tiles_512 = math.ceil(width / 512) * math.ceil(height / 512)
    tiles_768 = math.ceil(width / 768) * math.ceil(height / 768)
    return max(math.ceil(width * height / 750), 85 + 170 * tiles_512, 258 * tiles_768, 3780)


def prompt_tokens_bound(request: Request, images: Sequence[ImageReport] = ()) -> int:
    """At least as many tokens as any provider counts for the request's input (see the module's docstring)."""
    import json

    text = len((request.system or "").encode("utf-8", "surrogatepass"))
    text += sum(len(m.content.encode("utf-8", "surrogatepass")) for m in request.messages)
    if request.schema is not None:
        text += len(json.dumps(request.schema, ensure_ascii=False).encode("utf-8", "surrogatepass"))
    sent = [m_image for m in request.messages for m_image in m.images]
    sized = [image_tokens_bound(report.sent.width, report.sent.height) for report in images]
    unsized = max(0, len(sent) - len(sized)) * UNSIZED_IMAGE_TOKENS
    return text + REQUEST_OVERHEAD_TOKENS + MESSAGE_OVERHEAD_TOKENS * len(request.messages) + sum(sized) + unsized


class Ledger(Protocol):
    """Where each day's spending is kept (nano-dollars, per UTC day `YYYY-MM-DD`)."""

    async def reserve(self, day: str, amount: int, limit: int) -> tuple[bool, int]:
        """Add `amount` to the day's total if that stays within `limit`; (whether it did, what was left before)."""

    async def adjust(self, day: str, delta: int) -> None:
        """Change the day's total by `delta` (a held worst case settled to the real cost: usually negative)."""

    async def spent(self, day: str) -> int:
        """The day's total: spent, plus what attempts running now hold."""

    def last_seen(self, day: str) -> int:
        """The day's total as this process last saw it, without asking (for the stats, which are read in sync)."""


class LocalLedger:
    """This process's own total, for when no shared store is configured (each replica then has its own)."""

    def __init__(self) -> None:
        self._days: dict[str, int] = {}

    async def reserve(self, day: str, amount: int, limit: int) -> tuple[bool, int]:
        self._forget_before(day)
        total = self._days.get(day, 0)
        if total + amount > limit:
            return False, max(0, limit - total)
        self._days[day] = total + amount
        return True, limit - total

    async def adjust(self, day: str, delta: int) -> None:
        self._days[day] = max(0, self._days.get(day, 0) + delta)

    async def spent(self, day: str) -> int:
        return self._days.get(day, 0)

    def last_seen(self, day: str) -> int:
        return self._days.get(day, 0)

    def _forget_before(self, day: str) -> None:
        for old in [d for d in self._days if d < day]:
            del self._days[old]


def today() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


@dataclass
class Hold:
    """What one attempt holds of the budget while it runs: its worst case, in nano-dollars (0: nothing held)."""

    worst: int = 0
    day: str | None = None  # the UTC day whose total holds it (None: no daily budget)
    note: str | None = None  # an argument the budget changed (max_tokens set), for the trace


class Budget:
    """The server's budgets and its price book; `start` gives each call its own `CallMoney`."""

    def __init__(self, settings: BudgetSettings, prices: Prices, ledger: Ledger | None = None) -> None:
        self.settings = settings
        self.prices = prices
        self.ledger: Ledger = ledger or LocalLedger()

    def start(self, max_cost_usd: float | None) -> CallMoney:
        limits = [v for v in (self.settings.max_cost_per_call_usd, max_cost_usd) if v is not None]
        per_call = to_nano(Decimal(str(min(limits)))) if limits else None
        return CallMoney(self, per_call)

    @property
    def daily_limit(self) -> int | None:
        daily = self.settings.daily_usd
        return None if daily is None else to_nano(Decimal(str(daily)))

    def snapshot(self) -> dict[str, Any]:
        """For the stats: the budgets, and the day's total so far (attempts running now hold their worst case)."""
        day = today()
        return {"day": day, "daily_usd": self.settings.daily_usd,
                "max_cost_per_call_usd": self.settings.max_cost_per_call_usd,
                "spent_today_usd": self.ledger.last_seen(day) / NANO_PER_USD}


class CallMoney:
    """One call's money: what its attempts were charged, checked against its budgets before each one."""

    def __init__(self, budget: Budget, per_call: int | None) -> None:
        self.budget = budget
        self.per_call = per_call
        self.charged = 0  # nano-dollars: real costs, and worst cases where the cost is unknown

    @property
    def limited(self) -> bool:
        return self.per_call is not None or self.budget.daily_limit is not None

    def resume(self, costs: Sequence[float | None]) -> None:
        """A call carried on from an earlier round (2026-07-28 sampling): what its attempts cost then."""
        self.charged += sum(to_nano(Decimal(str(c))) for c in costs if c)

    async def before(self, provider: str, model_id: str, native: str, request: Request,
                     images: Sequence[ImageReport] = ()) -> Hold:
        """Hold the attempt's worst case, or raise `BudgetExceeded` when it may not be made."""
        prices = self.budget.prices
        if not self.limited or prices.free(provider):
            return Hold()
        note = None
        if request.max_tokens is None:
            request.max_tokens = self.budget.settings.default_max_tokens
            note = (f"{words().max_tokens} set to {request.max_tokens:,} (budget.default_max_tokens): under a budget "
                    "every priced attempt has a bound")
        prompt = prompt_tokens_bound(request, images)
        worst = await prices.worst_case(provider, native, prompt, request.max_tokens)
        if worst is None:
            raise self._unpriced(provider, model_id)
        amount = to_nano(worst)
        size = f"up to {prompt:,} prompt tokens and {request.max_tokens:,} answer tokens"
        if self.per_call is not None and self.charged + amount > self.per_call:
            left = max(0, self.per_call - self.charged)
            raise self._over(model_id, provider, amount, size, left,
                             f"of this call's budget ({dollars(self.per_call)}, the lower of "
                             f"{words().max_cost_usd} and budget.max_cost_per_call_usd)")
        daily = self.budget.daily_limit
        if daily is None:
            return Hold(amount, None, note)
        day = today()
        taken, left = await self.budget.ledger.reserve(day, amount, daily)
        if not taken:
            raise self._over(model_id, provider, amount, size, left,
                             f"of today's budget (budget.daily_usd {dollars(daily)}, UTC day {day})")
        return Hold(amount, day, note)

    async def after(self, hold: Hold, provider: str, native: str, completion: Completion | None,
                    error: LLMError | None = None) -> float | None:
        """Settle the attempt: its cost for the trace (None: unknown), charged to the call and the day."""
        prices = self.budget.prices
        if completion is None and isinstance(error, ProviderError) and error.answered is not None:
            completion = error.answered  # an answer refused here (cut off at max_tokens) is billed all the same
        cost: Decimal | None
        if prices.free(provider) or (completion is None and error is not None and billed_nothing(error)):
            cost = Decimal(0)
        elif completion is not None:
            cost = await prices.cost(provider, native, Tokens.of(completion))
        else:
            cost = None
        charge = to_nano(cost) if cost is not None else hold.worst
        self.charged += charge
        if hold.day is not None and charge != hold.worst:
            await self.budget.ledger.adjust(hold.day, charge - hold.worst)
        return usd(cost)

    def _over(self, model_id: str, provider: str, amount: int, size: str, left: int, which: str) -> BudgetExceeded:
        return BudgetExceeded(
            f"{model_id} was not asked: at worst it would cost {dollars(amount)} ({size}), and {dollars(left)} "
            f"is left {which}.",
            would_cost=amount / NANO_PER_USD, left=left / NANO_PER_USD, provider=provider, model=model_id,
            hint=f"Raise the budget, pass a smaller {words().max_tokens}, or put a cheaper model in the chain "
            "(defaults.fallback; a local one with cost_per_mtok = 0 is free).",
        )

    def _unpriced(self, provider: str, model_id: str) -> BudgetExceeded:
        version = price_data_version()
        library = f"genai-prices {version}" if version else "the price library"
        return BudgetExceeded(
            f"{model_id} was not asked: under a budget every attempt's worst case must be known, and its price is "
            f"not ({library} has none for it, and its config table sets no cost_per_mtok).",
            would_cost=None, left=0.0, provider=provider, model=model_id,
            hint=f"Set cost_per_mtok in [{self.budget.prices.table_key(provider)}] (0 for a free local model, or "
            "US dollars per million tokens), or use a model with a known price.",
        )
