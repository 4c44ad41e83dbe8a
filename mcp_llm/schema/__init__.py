"""JSON Schema in, schema-valid JSON out: the schema work, as one package.

The router and the tools call it through a few functions:
- `parse_schema_argument[_off_loop]`: the caller's schema (object, JSON text or preset name),
  checked by the gate before any model is called (`gate.py`, `argument.py`);
- `compile_for[_off_loop]`: what one provider is sent, every change reported (`compile.py`,
  `dialects.py`);
- `parse_and_validate[_off_loop]`: the JSON value in a reply, validated against the caller's
  original schema within a time limit (`reply.py`, `validation.py`);
- `schema_instruction` and `repair_message`: what the model is told (`repair.py`).

Modules: `limits.py` (what a schema and a reply may cost), `canonical.py` (cache keys),
`gate.py`, `argument.py`, `dialects.py`, `compile.py`, `validation.py`, `reply.py`, `repair.py`.
"""

from typing import TYPE_CHECKING, Any

from mcp_llm.schema.argument import check_schema, parse_schema_argument, parse_schema_argument_off_loop
from mcp_llm.schema.compile import compile_for, compile_for_off_loop
from mcp_llm.schema.limits import DEFAULT_REPLY_LIMITS, DEFAULT_SCHEMA_LIMITS, ReplyLimits, SchemaLimits, limits_from
from mcp_llm.schema.repair import repair_message, schema_instruction
from mcp_llm.schema.reply import parse_and_validate, parse_and_validate_off_loop, validation_errors

if TYPE_CHECKING:
    from mcp_llm.schema.walker import CompiledSchema

__all__ = [
    "DEFAULT_REPLY_LIMITS",
    "DEFAULT_SCHEMA_LIMITS",
    "CompiledSchema",
    "ReplyLimits",
    "SchemaLimits",
    "check_schema",
    "compile_for",
    "compile_for_off_loop",
    "limits_from",
    "parse_and_validate",
    "parse_and_validate_off_loop",
    "parse_schema_argument",
    "parse_schema_argument_off_loop",
    "repair_message",
    "schema_instruction",
    "validation_errors",
]


def __getattr__(name: str) -> Any:
    """`CompiledSchema` on first use: it lives with the compilers, which start-up does not import."""
    if name == "CompiledSchema":
        from mcp_llm.schema.walker import CompiledSchema

        return CompiledSchema
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
