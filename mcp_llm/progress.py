"""Signs of life while a model streams its answer: MCP progress notifications, throttled.

A slow local model can take minutes; a client whose request times out after 60 s gives up on a
call that would have succeeded unless it hears something. So every streamed piece of text goes
through the `on_chunk` callback the router puts on each adapter `Request`, and this module turns
those pieces into progress notifications:

- `progress` is the number of characters received so far in the call, over every attempt, so it
  only grows (the protocol requires that); there is no `total`, as the length is not known.
- `message` says which model and which attempt, and why that attempt ran: e.g.
  `ollama/llama3.2:3b, attempt 2 (re-ask): 512 characters`.
- At most one notification per `PROGRESS_INTERVAL_S`; the first piece of the call is reported at once.

Nothing reaches the client unless it sent a progress token: the SDK's `report_progress` is a no-op
then, and the callbacks cost a counter update. The result of a call is the same either way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    from mcp_llm.trace import Attempt

log = logging.getLogger("mcp_llm")

PROGRESS_INTERVAL_S = 0.25

ReportFn = Callable[[float, float | None, str | None], Awaitable[None]]
ChunkFn = Callable[[str], Awaitable[None]]


def attempt_reason(model_id: str, earlier: Sequence[Attempt]) -> str:
    """Why an attempt runs, from the attempts before it: first, retry, re-ask or fallback."""
    if not earlier:
        return "first"
    last = earlier[-1]
    if last.model != model_id:
        return "fallback"
    return "re-ask" if last.outcome == "invalid_output" else "retry"


class Progress:
    """One call's progress: counts characters over its attempts and reports them, throttled."""

    def __init__(self, report: ReportFn, *, interval_s: float = PROGRESS_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._report = report
        self._interval_s = interval_s
        self._clock = clock
        self._chars = 0
        self._sent = 0  # the last progress value sent; the next must be larger
        self._last_at: float | None = None
        self.notifications = 0

    @property
    def characters(self) -> int:
        return self._chars

    def listener(self, model_id: str, earlier: Sequence[Attempt]) -> ChunkFn:
        """The `on_chunk` callback of the attempt about to run with `model_id`."""
        number = len(earlier) + 1
        reason = attempt_reason(model_id, earlier)
        label = f"{model_id}, attempt {number}" + ("" if reason == "first" else f" ({reason})")

        async def on_chunk(text: str) -> None:
            self._chars += len(text)
            now = self._clock()
            if self._chars <= self._sent:
                return
            if self._last_at is not None and now - self._last_at < self._interval_s:
                return
            self._last_at, self._sent = now, self._chars
            self.notifications += 1
            try:
                await self._report(float(self._chars), None, f"{label}: {self._chars} characters")
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                # The client went away mid-call; the call itself goes on and its result is dropped.
                log.debug("a progress notification could not be sent: the client is gone")

        return on_chunk
