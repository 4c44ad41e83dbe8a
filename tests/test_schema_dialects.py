"""Per-provider schema compilation: what each provider is sent, and that every change is reported."""

from __future__ import annotations

import copy
from typing import Any

import jsonschema
import pytest

from mcp_llm.schema_dialects import compile_anthropic, compile_gemini
from mcp_llm.structured import compile_for, parse_and_validate

RICH: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$defs": {"Person": {"type": "object", "properties": {"name": {"type": "string", "minLength": 1}},
                         "required": ["name"]}},
    "type": "object",
    "properties": {
        "owner": {"$ref": "#/$defs/Person"},
        "kind": {"oneOf": [{"const": "cat"}, {"const": "dog"}]},
        "age": {"type": ["integer", "null"], "minimum": 0, "exclusiveMaximum": 40},
        "tags": {"type": "array", "items": {"type": "string", "pattern": "^[a-z]+$"}, "minItems": 2,
                 "uniqueItems": True},
        "scores": {"type": "object", "additionalProperties": {"type": "number"}},
        "born": {"type": "string", "format": "date"},
        "slug": {"type": "string", "format": "hostname-ish"},
    },
    "required": ["owner", "kind", "age"],
}


def test_ollama_gets_the_schema_verbatim() -> None:
    compiled = compile_for("ollama", RICH)
    assert compiled.schema == RICH and compiled.rewrites == [] and compiled.wrapped_in is None


def test_gemini_keeps_what_it_takes_and_reports_each_change() -> None:
    original = copy.deepcopy(RICH)
    compiled = compile_gemini(RICH)
    schema = compiled.schema
    assert RICH == original, "the caller's schema must not be changed in place"
    assert "$schema" not in schema
    assert schema["$defs"]["Person"]["properties"]["name"] == {"type": "string", "minLength": 1}
    assert schema["properties"]["owner"] == {"$ref": "#/$defs/Person"}
    assert schema["properties"]["kind"] == {"anyOf": [{"enum": ["cat"]}, {"enum": ["dog"]}]}
    assert schema["properties"]["age"] == {"type": ["integer", "null"], "minimum": 0}
    assert "uniqueItems" not in schema["properties"]["tags"]
    assert schema["properties"]["scores"]["additionalProperties"] == {"type": "number"}
    assert set(compiled.rewrites) >= {
        "dropped `$schema` at $",
        "`oneOf` became `anyOf` at $.kind",
        "`const` became a one-value `enum` at $.kind.anyOf[0]",  # named as sent (oneOf became anyOf)
        "dropped `exclusiveMaximum` at $.age (Gemini does not take it; the answer is still checked for it)",
        "dropped `uniqueItems` at $.tags (Gemini does not take it; the answer is still checked for it)",
    }
    jsonschema.Draft202012Validator.check_schema(schema)


def test_gemini_renames_definitions_and_their_refs() -> None:
    schema = {"definitions": {"X": {"type": "string"}}, "type": "array", "items": {"$ref": "#/definitions/X"}}
    compiled = compile_gemini(schema)
    assert compiled.schema == {"$defs": {"X": {"type": "string"}}, "type": "array", "items": {"$ref": "#/$defs/X"}}
    assert "`definitions` became `$defs` at $" in compiled.rewrites


def test_anthropic_gets_a_strict_schema_and_reports_each_change() -> None:
    compiled = compile_anthropic(RICH)
    schema = compiled.schema
    assert compiled.wrapped_in is None
    assert schema["additionalProperties"] is False
    assert schema["$defs"]["Person"]["additionalProperties"] is False
    assert "minLength" not in schema["$defs"]["Person"]["properties"]["name"]
    assert schema["properties"]["age"]["anyOf"][1] == {"type": "null"}
    assert schema["properties"]["age"]["anyOf"][0]["type"] == "integer"
    assert "minimum: 0" in schema["properties"]["age"]["anyOf"][0]["description"]
    assert schema["properties"]["kind"] == {"anyOf": [{"const": "cat"}, {"const": "dog"}]}
    assert schema["properties"]["born"]["format"] == "date"
    assert "format" not in schema["properties"]["slug"]
    assert "hostname-ish" in schema["properties"]["slug"]["description"]
    assert schema["properties"]["scores"]["additionalProperties"] == {"type": "number"}  # a map stays a map
    rewrites = "\n".join(compiled.rewrites)
    for expected in (
        "the type list [\"integer\", \"null\"] became `anyOf` at $.age",
        "moved `uniqueItems`, `minItems` into the description at $.tags",
        "`additionalProperties` set to false at $ (was \"absent\")",
        "`oneOf` became `anyOf` at $.kind",
    ):
        assert expected in rewrites, f"missing rewrite: {expected}\n{rewrites}"
    jsonschema.Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize(
    ("schema", "answer", "data"),
    [
        ({"type": "array", "items": {"type": "string"}}, '{"value": ["a"]}', ["a"]),
        ({"type": "string", "enum": ["x", "y"]}, '{"value": "y"}', "y"),
        ({"$defs": {"N": {"type": "integer"}}, "$ref": "#/$defs/N"}, '{"value": 3}', 3),
    ],
)
def test_anthropic_wraps_a_non_object_root_and_the_answer_is_unwrapped(schema: dict, answer: str, data: Any) -> None:
    compiled = compile_anthropic(schema)
    assert compiled.wrapped_in == "value"
    assert compiled.schema["type"] == "object" and compiled.schema["required"] == ["value"]
    assert compiled.rewrites[0].startswith('the root was wrapped as {"value": …}')
    if "$defs" in schema:
        assert compiled.schema["$defs"] == schema["$defs"]  # kept at the root, where the $ref points
    assert parse_and_validate(answer, schema, unwrap="value") == data
