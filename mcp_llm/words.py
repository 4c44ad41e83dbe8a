"""How a message names what the user can change: a tool's parameter, or the command line's option.

The same advice reaches two surfaces. An assistant calling the tools reads "Pass `model`" and
"list_models shows the ids"; someone at a shell reads "Pass --model" and "`mcp-llm models` shows
the ids". A message is written once, with the names taken from `words()` where it is built:

    hint=f"Check the model id; {words().list_models} shows the models this key can use."

The surface says which vocabulary it speaks (`tools.Tools(app, words=CLI_WORDS)` for the command
line); the tool service puts it in effect for the duration of each call with `speaking()`. It is a
context variable, so it follows the call into its tasks and worker threads, and concurrent calls
from different surfaces cannot cross. Outside any call the tools' own words are in effect.

Config keys (`defaults.timeout_s`) are the same on every surface and are written out as they are.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True)
class Words:
    """The names one surface gives the controls that messages point to."""

    model: str  # the argument that names a model, as in f"Pass {words().model}, or set defaults.model"
    list_models: str  # where the model ids are listed
    provider_health: str  # where each provider's state is shown
    timeout_s: str  # the call's own time limit
    max_tokens: str  # the answer's token limit
    max_cost_usd: str  # the call's own budget in US dollars
    cache: str  # how a call skips the response cache


TOOL_WORDS = Words(model="`model`", list_models="list_models", provider_health="provider_health",
                   timeout_s="timeout_s", max_tokens="max_tokens", max_cost_usd="max_cost_usd",
                   cache="`cache: false`")
CLI_WORDS = Words(model="--model", list_models="`mcp-llm models`", provider_health="`mcp-llm health`",
                  timeout_s="--timeout", max_tokens="--max-tokens", max_cost_usd="--max-cost",
                  cache="--no-cache")

_current: ContextVar[Words] = ContextVar("mcp_llm_words", default=TOOL_WORDS)


def words() -> Words:
    """The vocabulary of the surface the current call came from."""
    return _current.get()


@contextmanager
def speaking(vocabulary: Words) -> Iterator[None]:
    """Messages built inside speak `vocabulary`; the one before is back on exit."""
    token = _current.set(vocabulary)
    try:
        yield
    finally:
        _current.reset(token)
