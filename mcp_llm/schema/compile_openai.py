"""OpenAI (`response_format` json_schema): an object root, and otherwise the schema as it is.

A non-object root is wrapped in `{"value": …}` (unwrapped again before validation) by the wrapper
Anthropic's compiler uses too (walker.py): the root's `$defs` move up with it, references to the
root or into it follow it, and its `$id` goes, so `#` and `#/…` still mean what the caller meant
(a root `$id` left on the wrapped node made them point at the wrapper instead). `strict` is asked
only for a schema that already meets strict mode's rules (adapters/openai.py). OpenAI-compatible
endpoints (llama-server, vLLM…) are not compiled: their grammars take any root.
"""

from __future__ import annotations

from typing import Any

from mcp_llm.schema.walker import WRAP_KEY, CompiledSchema, Walk, attach_detached, loosest, prepare, wrap_root


def compile_openai(schema: Any) -> CompiledSchema:
    if not isinstance(schema, dict):
        return loosest("openai", f"the schema is `{str(schema).lower()}`, not an object")
    rewrites: list[str] = []
    if schema.get("type") == "object":
        if "$schema" in schema:
            schema = {k: v for k, v in schema.items() if k != "$schema"}
            rewrites.append("dropped `$schema` at $")
        return CompiledSchema(schema, rewrites)
    prepared = prepare(schema, rewrites)
    top = wrap_root(prepared, "OpenAI", rewrites)
    attach_detached(top, prepared, rewrites)
    walk = Walk(prepared, None, rewrites)
    compiled = walk.finish(walk.run(top, rule_on_top=False))
    return CompiledSchema(compiled, rewrites, WRAP_KEY)
