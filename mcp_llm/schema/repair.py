"""What a model is told: the schema instruction every model gets, and the follow-up after an invalid answer."""

from __future__ import annotations

import json
from typing import Any

from mcp_llm.errors import OutputError


def schema_instruction(schema: dict[str, Any]) -> str:
    """Told to every model, native schema support or not: weak models follow `format` better with it."""
    return (
        "Answer with a single JSON value, and nothing else, that validates against this JSON Schema:\n"
        + json.dumps(schema, ensure_ascii=False, separators=(",", ":"))
    )



def repair_message(error: OutputError) -> str:
    """The follow-up a model gets after an invalid answer: what was wrong, and to answer again."""
    lines = "\n".join(f"- {line}" for line in error.errors) or f"- {error.message}"
    return (
        "Your previous answer was not valid:\n"
        f"{lines}\n"
        "Answer again with only the corrected JSON, which must validate against the schema."
    )
