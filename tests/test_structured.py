"""Schema checking, JSON extraction from replies, validation and the re-ask message."""

from __future__ import annotations

import json

import pytest

from mcp_llm.errors import OutputError, SchemaError
from mcp_llm.presets import PRESETS
from mcp_llm.schema import (
    check_schema,
    parse_and_validate,
    parse_schema_argument,
    repair_message,
    validation_errors,
)

ANY_VALUE: dict[str, object] = {}  # every JSON value is valid: what is found is what the reader extracts
OBJ = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}


@pytest.mark.parametrize(
    ("schema", "fragment"),
    [
        ([1, 2], "must be a JSON object, not list"),
        ("plain", "Unknown schema preset 'plain'"),
        ({"type": "strng"}, "at $.type"),
        ({"properties": {"a": {"minimum": "zero"}}}, "at $.properties.a.minimum"),
        ({"required": "a"}, "at $.required"),
        ({"$ref": "#/$defs/Nope"}, "$ref '#/$defs/Nope' points nowhere"),
        ({"$ref": "https://example.com/schema.json"}, "remote references are not fetched"),
    ],
)
def test_broken_schemas_are_refused_saying_where(schema: object, fragment: str) -> None:
    with pytest.raises(SchemaError) as info:
        parse_schema_argument(schema)  # type: ignore[arg-type]
    assert fragment in info.value.user_message()


def test_schema_arguments_accepted() -> None:
    assert parse_schema_argument(OBJ) == (OBJ, None)
    assert parse_schema_argument(json.dumps(OBJ)) == (OBJ, None)
    schema, name = parse_schema_argument("reverse_prompt")
    assert name == "reverse_prompt" and schema is PRESETS["reverse_prompt"]
    defs = {"$defs": {"P": {"type": "string"}}, "type": "array", "items": {"$ref": "#/$defs/P"}}
    check_schema(defs)
    check_schema({"$schema": "http://json-schema.org/draft-07/schema#", "definitions": {"x": {}},
                  "$ref": "#/definitions/x"})


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_are_valid_schemas(preset: str) -> None:
    check_schema(PRESETS[preset])


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ('{"a": 1}', {"a": 1}),
        ("  [1, 2]\n", [1, 2]),
        ('Here you go:\n```json\n{"a": 2}\n```\nAnything else?', {"a": 2}),
        ('```\n{"a": 3}\n```', {"a": 3}),
        ('Sure. {"a": 4} Hope that helps {"b": 5}', {"a": 4}),
        ('The answer is {not json} but then {"a": 6}.', {"a": 6}),
        ("42", 42),
    ],
)
def test_json_is_pulled_out_of_replies(reply: str, expected: object) -> None:
    assert parse_and_validate(reply, ANY_VALUE) == expected


@pytest.mark.parametrize(
    "reply",
    ["", "   ", "I cannot help with that.", '{"a": 1, "b": [1, 2', '{"name": "\\ud800"}'],
    ids=["empty", "blank", "prose", "truncated", "lone-surrogate"],
)
def test_replies_without_usable_json_are_output_errors(reply: str) -> None:
    with pytest.raises(OutputError):
        parse_and_validate(reply, ANY_VALUE)


def test_validation_errors_name_paths_and_are_bounded() -> None:
    schema = {
        "type": "object",
        "properties": {"items": {"type": "array", "items": {"type": "integer"}}, "mode": {"enum": ["a", "b"]}},
        "required": ["items", "mode"],
    }
    errors = validation_errors({"items": [1, "x", 3, "y"], "mode": "c"}, schema)
    assert "at $.items[1]: 'x' is not of type 'integer'" in errors
    assert "at $.items[3]: 'y' is not of type 'integer'" in errors
    assert any(e.startswith("at $.mode:") for e in errors)
    many = validation_errors(list(range(50)), {"type": "array", "items": {"type": "string"}})
    assert len(many) == 8


def test_formats_are_checked() -> None:
    schema = {"type": "string", "format": "date"}
    assert validation_errors("2026-11-22", schema) == []
    assert validation_errors("yesterday", schema)


def test_parse_and_validate_and_repair_message() -> None:
    assert parse_and_validate('{"a": 1}', OBJ) == {"a": 1}
    with pytest.raises(OutputError) as info:
        parse_and_validate('{"a": "one"}', OBJ)
    message = repair_message(info.value)
    assert "- at $.a: 'one' is not of type 'integer'" in message
    assert "Answer again" in message


@pytest.mark.parametrize(("text", "kind"), [("[1]", "array"), ('"name"', "string"), ("42", "value")])
def test_json_that_is_not_a_schema_is_not_called_a_preset(text: str, kind: str) -> None:
    with pytest.raises(SchemaError) as info:
        parse_schema_argument(text)
    assert f"is a JSON {kind}" in info.value.message and "preset" not in info.value.message
