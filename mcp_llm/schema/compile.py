"""Per-provider compilation, cached: what each provider is sent for a caller's schema.

Ollama takes the schema verbatim (its `format` turns it into a grammar); the cloud providers
take their own subsets of JSON Schema (see dialects.py). Every change is reported as a rewrite.
A compiler that raises anyway (a bug: none should) must not cost the call, nor skip the fallback
models the router would try: the provider then gets the loosest schema it takes, the traceback
goes to the log, and the answer is still validated against the caller's schema.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from mcp_llm.schema.canonical import ordered_text
from mcp_llm.schema.dialects import CompiledSchema, compile_anthropic, compile_gemini, compile_openai, loosest
from mcp_llm.schema.limits import OFF_LOOP_CHARS

log = logging.getLogger("mcp_llm")
Compiler = Callable[[dict[str, Any]], CompiledSchema]


def _as_is(schema: dict[str, Any]) -> CompiledSchema:
    return CompiledSchema(schema)


# Ollama takes the schema verbatim (its `format` turns it into a grammar); the cloud providers
# take their own subsets of JSON Schema (see dialects.py).
COMPILERS: dict[str, Compiler] = {"ollama": _as_is, "gemini": compile_gemini, "anthropic": compile_anthropic,
                                   "openai": compile_openai}


def compile_for(provider: str, schema: dict[str, Any]) -> CompiledSchema:
    """What `provider` is sent for `schema`, with every change listed (compiled once per schema;
    callers must not change what they get)."""
    compiler = COMPILERS.get(provider, _as_is)
    if compiler is _as_is:
        return _as_is(schema)
    return _compiled(provider, ordered_text(schema))


async def compile_for_off_loop(provider: str, schema: dict[str, Any]) -> CompiledSchema:
    """`compile_for`, in a worker thread the first time a schema over a kilobyte is compiled: an
    Anthropic compile follows each `allOf` branch's references, and a hostile 50 KB schema takes
    most of a second. Compiled before (or small), it is answered on the loop."""
    if COMPILERS.get(provider, _as_is) is _as_is:
        return _as_is(schema)
    key = (provider, ordered_text(schema))
    if len(key[1]) <= OFF_LOOP_CHARS or key in _COMPILED_BEFORE:
        return _compiled(*key)
    import anyio

    compiled = await anyio.to_thread.run_sync(_compiled, *key, abandon_on_cancel=True)
    if len(_COMPILED_BEFORE) >= COMPILED_SCHEMAS_KEPT:  # the cache below evicts on its own: start over
        _COMPILED_BEFORE.clear()
    _COMPILED_BEFORE.add(key)
    return compiled


COMPILED_SCHEMAS_KEPT = 256
_COMPILED_BEFORE: set[tuple[str, str]] = set()  # large schemas `_compiled` has seen (it may have evicted some)


@lru_cache(maxsize=COMPILED_SCHEMAS_KEPT)
def _compiled(provider: str, schema_text: str) -> CompiledSchema:
    """Keyed by the schema's text in the caller's own key order, and compiled from it: a model that
    writes in order must get `reasoning` before `answer` if that is how the caller wrote them."""
    return _guarded(provider, json.loads(schema_text))


def _guarded(provider: str, schema: dict[str, Any]) -> CompiledSchema:
    """The provider's compiler, or, if it raises (RecursionError included), the loosest schema it takes."""
    try:
        return COMPILERS[provider](schema)
    except Exception as exc:  # any bug in a compiler: logged, and the call goes on, looser
        log.error("compiling a schema for %s failed; it gets the loosest schema it takes", provider, exc_info=True)
        return loosest(provider, f"the schema could not be compiled for {provider} ({type(exc).__name__}, logged)")
