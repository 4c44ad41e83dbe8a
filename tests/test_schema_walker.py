"""The walk the three compilers share (mcp_llm/schema/walker.py): references keep their meaning.

`prepare` resolves each `$ref` as the validator would (`$id` scopes, anchors, a URI naming the
schema itself, draft-04's `id`), and the walk writes it back as a pointer to wherever its target
ends up. The oracle: OpenAI's compiler runs the walk with no rule of its own, so its output (a
non-object root wrapped in `{"value": …}`) must accept and refuse exactly what the caller's schema
does; Gemini's and Anthropic's may be looser, never tighter, and none may drop a reference that
can be followed.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonschema
import pytest

from mcp_llm.schema.dialects import compile_anthropic, compile_gemini, compile_openai
from mcp_llm.schema.walker import WRAP_KEY

DRAFT4 = "http://json-schema.org/draft-04/schema#"
DRAFT3 = "http://json-schema.org/draft-03/schema#"

# name: (schema, instances it accepts, instances it refuses); each root is not an object, so OpenAI wraps it
CASES: dict[str, tuple[dict[str, Any], list[Any], list[Any]]] = {
    "a nested $id is the base of the pointers inside it": (
        {"type": "array", "items": {"$ref": "#/$defs/a"},
         "$defs": {"b": {"type": "integer"},
                   "a": {"$id": "https://example.com/a", "$defs": {"b": {"type": "string"}}, "type": "object",
                         "properties": {"p": {"$ref": "#/$defs/b"}}}}},
        [[{"p": "text"}], []], [[{"p": 1}]]),
    "a URI naming the schema's own $id": (
        {"$id": "https://example.com/root", "type": "array", "items": {"$ref": "https://example.com/root#/$defs/a"},
         "$defs": {"a": {"type": "string"}}},
        [["x"], []], [[1]]),
    "an anchor on the root": (
        {"$anchor": "top", "type": "array", "items": {"anyOf": [{"type": "integer"}, {"$ref": "#top"}]}},
        [[1, [2, []]]], [["x"], [1, ["x"]]]),
    "an anchor inside": (
        {"type": "array", "items": {"$ref": "#word"}, "$defs": {"w": {"$anchor": "word", "type": "string"}}},
        [["x"]], [[1]]),
    "a nested $id named by its URI": (
        {"type": "array", "items": {"$ref": "https://example.com/n"},
         "$defs": {"n": {"$id": "https://example.com/n", "type": "number", "minimum": 0}}},
        [[0, 1.5]], [[-1], ["x"]]),
    "draft 4: `id` names a schema": (
        {"$schema": DRAFT4, "type": "array", "items": {"$ref": "#foo"},
         "definitions": {"a": {"id": "#foo", "type": "string"}}},
        [["x"]], [[1]]),
    "draft 4: a nested `id` is the base of the pointers inside it": (
        {"$schema": DRAFT4, "type": "array", "items": {"$ref": "#/definitions/a"},
         "definitions": {"b": {"type": "integer"},
                         "a": {"id": "https://example.com/a", "definitions": {"b": {"type": "string"}},
                               "type": "object", "properties": {"p": {"$ref": "#/definitions/b"}}}}},
        [[{"p": "text"}]], [[{"p": 1}]]),
    "draft 3: `id` names a schema": (
        {"$schema": DRAFT3, "type": "array", "items": {"$ref": "#foo"},
         "properties": {}, "definitions": {"a": {"id": "#foo", "type": "string"}}},
        [["x"]], [[1]]),
}


def _accepts(schema: Any, instance: Any) -> bool:
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    return bool(cls(schema).is_valid(instance))


def _sent_accepts(compiled: Any, instance: Any) -> bool:
    """What the provider is sent, read as 2020-12 (the `$schema` it keeps, if any, apart)."""
    value = {WRAP_KEY: instance} if compiled.wrapped_in else instance
    return bool(jsonschema.Draft202012Validator(compiled.schema).is_valid(value))


@pytest.mark.timeout(30)
@pytest.mark.parametrize("case", list(CASES))
def test_references_keep_their_meaning_in_what_each_provider_is_sent(case: str) -> None:
    schema, accepted, refused = CASES[case]
    before = copy.deepcopy(schema)
    assert all(_accepts(schema, v) for v in accepted) and not any(_accepts(schema, v) for v in refused)

    openai = compile_openai(schema)
    assert openai.wrapped_in == WRAP_KEY
    for value in accepted + refused:
        assert _sent_accepts(openai, value) == _accepts(schema, value), (case, value, openai.schema)
    for compiler in (compile_gemini, compile_anthropic):
        compiled = compiler(schema)
        assert all(_sent_accepts(compiled, v) for v in accepted), (compiler.__name__, compiled.schema)
        assert not [r for r in compiled.rewrites if "dropped the $ref" in r], compiled.rewrites
    assert schema == before, "the caller's schema was changed"


@pytest.mark.timeout(30)
@pytest.mark.parametrize("dialect", [DRAFT3, DRAFT4, None])
def test_id_is_an_identifier_up_to_draft_4_and_an_unknown_keyword_after(dialect: str | None) -> None:
    """Up to draft 4, a nested `id` is dropped as an identifier (references are sent as places);
    later, `id` means nothing to the validator, so Anthropic keeps it in the description like any
    keyword it does not take."""
    schema = {"type": "object", "properties": {"a": {"id": "#a", "type": "string"}}}
    if dialect:
        schema["$schema"] = dialect
    compiled = compile_anthropic(schema)
    node = compiled.schema["properties"]["a"]
    if dialect:
        assert node == {"type": "string"}
        assert "dropped `id` at $.a: references into it are sent as places in the whole schema" in compiled.rewrites
    else:
        assert node == {"type": "string", "description": '{id: "#a"}'}
        assert not [r for r in compiled.rewrites if "dropped `id`" in r], compiled.rewrites


@pytest.mark.timeout(30)
def test_a_reference_written_into_a_description_reads_as_the_caller_wrote_it() -> None:
    """A keyword Anthropic does not take moves into the description as JSON; a `$ref` inside it is
    written as the caller's text, not as the object it was resolved to."""
    schema = {"type": "object", "properties": {"a": {"not": {"$ref": "#/$defs/n"}}},
              "$defs": {"n": {"type": "string"}}}
    compiled = compile_anthropic(schema)
    assert compiled.schema["properties"]["a"] == {"description": '{not: {"$ref": "#/$defs/n"}}'}
