"""Per-provider schema compilation: the caller's JSON Schema → what each provider accepts.

Each provider constrains decoding with its own subset of JSON Schema. Rather than let a
provider refuse a schema (or silently ignore part of it), the schema is rewritten into that
subset, and every change is reported (`CompiledSchema.rewrites`, shown to the caller as
`schema_rewrites`). Nothing is lost for the caller: the answer is still validated against the
original schema, and re-asked if it breaks a constraint the provider could not enforce. So when
a constraint cannot be expressed, the provider gets a LOOSER schema, never a tighter one: a
tighter one could forbid every answer the caller's schema allows. The one narrowing allowed is
Anthropic's closing of objects (strict mode needs it), and only for keys the caller's schema never
names for that value.

- Ollama: sent as is (its `format` turns the schema into a grammar; compile.py).
- Gemini (`response_json_schema`): compile_gemini.py.
- Anthropic (strict `output_config`, or a forced tool when `is_strict` says no): compile_anthropic.py.
- OpenAI (`response_format` json_schema, which needs an object root): compile_openai.py.

They share one walk (walker.py): the schema is copied, every `$ref` resolved once to the schema it
points at and written back as a pointer to wherever that schema is finally sent, each node compiled
once, iteratively, so compilation is linear in the schema's size at any depth. A compiler never
raises: compile.py sends the loosest schema a provider takes if one ever does, and logs why.
This module is the one the rest of the package imports them from.
"""

from __future__ import annotations

from mcp_llm.schema.compile_anthropic import ANTHROPIC_FORMATS, ANTHROPIC_KEYWORDS, compile_anthropic, is_strict
from mcp_llm.schema.compile_gemini import GEMINI_KEYWORDS, compile_gemini
from mcp_llm.schema.compile_openai import compile_openai
from mcp_llm.schema.walker import WRAP_KEY, CompiledSchema, loosest

__all__ = [
    "ANTHROPIC_FORMATS",
    "ANTHROPIC_KEYWORDS",
    "GEMINI_KEYWORDS",
    "WRAP_KEY",
    "CompiledSchema",
    "compile_anthropic",
    "compile_gemini",
    "compile_openai",
    "is_strict",
    "loosest",
]
