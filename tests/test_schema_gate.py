"""The schema gate's limits (mcp_llm/schema/gate.py): the depth limit exactly, and references counted
before the meta-schema check."""

from __future__ import annotations

from typing import Any

import pytest

from mcp_llm.errors import SchemaError
from mcp_llm.schema import check_schema
from mcp_llm.schema.gate import SchemaLimits, json_depth


def test_a_schema_exactly_at_the_depth_limit_is_accepted() -> None:
    limits = SchemaLimits(max_depth=6)
    schema: dict[str, Any] = {"type": "string"}
    while json_depth(schema, 100) < limits.max_depth:
        schema = {"type": "array", "items": schema}  # one level each
    assert json_depth(schema, 100) == limits.max_depth
    check_schema(schema, limits)
    deeper = {"type": "array", "items": schema}
    with pytest.raises(SchemaError, match="nested more than 6 levels"):
        check_schema(deeper, limits)


def test_references_are_counted_before_the_meta_schema_check() -> None:
    # Counting is cheap and the meta-schema check of thousands of references is not: a schema that
    # is both over the reference limit and invalid is refused for its references.
    schema = {"type": 5, "$defs": {"a": {}}, "properties": {f"p{i}": {"$ref": "#/$defs/a"} for i in range(20)}}
    with pytest.raises(SchemaError, match="more than 10 references"):
        check_schema(schema, SchemaLimits(max_refs=10))
    with pytest.raises(SchemaError, match="not a valid JSON Schema"):
        check_schema(schema)
