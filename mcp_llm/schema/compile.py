"""Per-dialect compilation, cached: what a provider is sent for a caller's schema.

A provider's spec names its dialect (`ProviderSpec.schema_dialect`, read by the router): `gemini`,
`anthropic` or `openai`, each its own subset of JSON Schema (see dialects.py); none (Ollama, the
OpenAI-compatible servers, whose grammars take any schema) means the schema as is. The names are
this package's, so the arrow points down: the adapters name a dialect, the schema package knows
what it is. Each compiler is imported on its first use (compile_anthropic.py is the package's
largest module), so start-up pays for none of them. Every change is reported as a rewrite.
Before any of that, a schema that declares an older draft (4, 6, 7, 2019-09, 3) is read as the
2020-12 schema with the same meaning (normalize.py), since that is what every provider reads; the
translation is reported as one rewrite. The reply is still validated against the caller's original.
A compiler that raises anyway (a bug: none should) must not cost the call, nor skip the fallback
models the router would try: the provider then gets the loosest schema it takes, the traceback
goes to the log, and the answer is still validated against the caller's schema.
"""

from __future__ import annotations

import importlib
import json
import logging
from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from mcp_llm.schema.canonical import ordered_text
from mcp_llm.schema.limits import OFF_LOOP_CHARS

if TYPE_CHECKING:
    from mcp_llm.schema.walker import CompiledSchema

log = logging.getLogger("mcp_llm")
Compiler = Callable[[dict[str, Any]], "CompiledSchema"]


def _as_is(schema: dict[str, Any]) -> CompiledSchema:
    from mcp_llm.schema.walker import CompiledSchema

    return CompiledSchema(schema)


def _on_first_use(module: str, function: str) -> Compiler:
    """The compiler `module.function`, imported when it is first called."""

    def compile_schema(schema: dict[str, Any]) -> CompiledSchema:
        compiler: Compiler = getattr(importlib.import_module(module), function)
        return compiler(schema)

    compile_schema.__name__ = compile_schema.__qualname__ = function
    return compile_schema


# The dialects, by the name a provider's spec gives; any other name (or None) is sent as is.
COMPILERS: dict[str, Compiler] = {
    "gemini": _on_first_use("mcp_llm.schema.compile_gemini", "compile_gemini"),
    "anthropic": _on_first_use("mcp_llm.schema.compile_anthropic", "compile_anthropic"),
    "openai": _on_first_use("mcp_llm.schema.compile_openai", "compile_openai"),
}


_CURRENT_DRAFT = ("https://json-schema.org/draft/2020-12/schema", "https://json-schema.org/draft/2020-12/schema#")


def _as_is_will_do(dialect: str | None, schema: Any) -> bool:
    """Sent as is: a dialect with no compiler, and a schema already in 2020-12 (no `$schema`, or that one)."""
    return dialect not in COMPILERS and not (isinstance(schema, dict) and schema.get("$schema", _CURRENT_DRAFT[0])
                                              not in _CURRENT_DRAFT)


def compile_for(dialect: str | None, schema: dict[str, Any]) -> CompiledSchema:
    """What a provider of `dialect` is sent for `schema`, with every change listed (compiled once per
    schema; callers must not change what they get)."""
    if _as_is_will_do(dialect, schema):
        return _as_is(schema)
    return _compiled(dialect or "", ordered_text(schema))


async def compile_for_off_loop(dialect: str | None, schema: dict[str, Any]) -> CompiledSchema:
    """`compile_for`, in a worker thread the first time a schema over a kilobyte is compiled: an
    Anthropic compile follows each `allOf` branch's references, and a hostile 50 KB schema takes
    most of a second. Compiled before (or small), it is answered on the loop."""
    if _as_is_will_do(dialect, schema):
        return _as_is(schema)
    key = (dialect or "", ordered_text(schema))
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
def _compiled(dialect: str, schema_text: str) -> CompiledSchema:
    """Keyed by the schema's text in the caller's own key order, and compiled from it: a model that
    writes in order must get `reasoning` before `answer` if that is how the caller wrote them."""
    return _guarded(dialect, json.loads(schema_text))


def _guarded(dialect: str, schema: dict[str, Any]) -> CompiledSchema:
    """The schema read as 2020-12, then the dialect's compiler (none: as is), or, if that raises
    (RecursionError included), the loosest schema the dialect takes."""
    from mcp_llm.schema.normalize import to_2020_12
    from mcp_llm.schema.walker import CompiledSchema

    normalized, notes = to_2020_12(schema)  # never raises: on a fault of its own it returns the schema
    if dialect not in COMPILERS:
        return CompiledSchema(normalized, notes)  # type: ignore[arg-type]
    try:
        compiled = COMPILERS[dialect](normalized)  # type: ignore[arg-type]
        return CompiledSchema(compiled.schema, [*notes, *compiled.rewrites], compiled.wrapped_in)
    except Exception as exc:  # any bug in a compiler: logged, and the call goes on, looser
        from mcp_llm.schema.walker import loosest

        log.error("compiling a schema for %s failed; it gets the loosest schema it takes", dialect, exc_info=True)
        return loosest(dialect, f"the schema could not be compiled for {dialect} ({type(exc).__name__}, logged)")
