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
DRAFT7 = "http://json-schema.org/draft-07/schema#"

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
    "a target outside every keyword, beside `definitions`": (  # sent under `definitions`, which Gemini renames
        {"type": "array", "items": {"anyOf": [{"$ref": "#/definitions/a"}, {"$ref": "#/x/b"}]},
         "definitions": {"a": {"type": "integer"}}, "x": {"b": {"type": "string"}}},
        [[1, "s"], []], [[1.5], [None]]),
    "a target outside every keyword, inside another one, with a reference of its own": (
        {"type": "array", "items": {"anyOf": [{"$ref": "#/x/a/properties/p"}, {"$ref": "#/x/a"}]},
         "x": {"a": {"type": "object", "properties": {"p": {"$ref": "#/x/s"}}}, "s": {"type": "string"}}},
        [["t", {"p": "t"}, {}]], [[1], [{"p": 1}]]),
    "draft 7: a list under `items` where no keyword leads": (  # prefixItems, and additionalItems → items
        {"$schema": DRAFT7, "type": "array", "items": {"$ref": "#/x/pair"},
         "x": {"pair": {"type": "array", "items": [{"type": "string"}, {"type": "integer"}],
                        "additionalItems": False}}},
        [[["a", 1], ["a"]]], [[["a", "b"]], [["a", 1, 2]]]),
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


@pytest.mark.timeout(30)
def test_a_root_id_stays_where_the_root_does_and_goes_with_the_wrapper() -> None:
    """A nested `$id` goes (pointers are read from the document's root), the root's own stays: Gemini
    gets it as written and nothing is reported; a wrapped root's `$id` goes, and that is said."""
    schema = {"$id": "https://example.com/s", "type": "object", "properties": {"a": {"$ref": "#/$defs/d"}},
              "$defs": {"d": {"type": "string"}}}
    gemini = compile_gemini(schema)
    assert gemini.schema == schema and gemini.rewrites == []

    wrapped = compile_openai({"$id": "https://example.com/s", "type": "array"})
    assert wrapped.schema["properties"] == {WRAP_KEY: {"type": "array"}}
    assert "dropped `$id` at $: the wrapper is the document now" in wrapped.rewrites


@pytest.mark.timeout(30)
def test_a_reference_whose_target_did_not_move_is_sent_as_the_caller_wrote_it() -> None:
    """`#/$defs/café` still means its target in what Gemini is sent: it is not re-spelled percent-encoded."""
    schema = {"type": "object", "properties": {"a": {"$ref": "#/$defs/café"}, "b": {"$ref": "#/$defs/caf%C3%A9"}},
              "$defs": {"café": {"type": "string"}}}
    compiled = compile_gemini(schema)
    assert compiled.schema["properties"] == {"a": {"$ref": "#/$defs/café"}, "b": {"$ref": "#/$defs/caf%C3%A9"}}
    assert _sent_accepts(compiled, {"a": "x", "b": "y"}) and not _sent_accepts(compiled, {"a": 1})


def _big_object(size: int) -> dict[str, Any]:
    return {"type": "object", "properties": {f"k{i}": {"type": "integer"} for i in range(size)}, "required": ["k0"]}


@pytest.mark.timeout(30)
def test_a_merged_definition_kept_where_anthropic_takes_no_schema_is_compiled_where_it_is_merged() -> None:
    """An `allOf` base whose definition lies under a keyword Anthropic does not take (`dependentSchemas`,
    moved into the description, so never compiled at its home): a property too big to copy (nine schemas)
    is compiled, closed, in the merged object, not dropped."""
    schema = {"type": "object", "allOf": [{"$ref": "#/dependentSchemas/x"}],
              "dependentSchemas": {"x": {"properties": {"p": _big_object(9)}}}}
    compiled = compile_anthropic(schema)
    assert compiled.schema["properties"]["p"] == {**_big_object(9), "additionalProperties": False}
    assert "`additionalProperties` set to false at $.p (was \"absent\"): Anthropic's strict mode needs closed objects" \
        in compiled.rewrites
    assert not [r for r in compiled.rewrites if "dropped the $ref" in r], compiled.rewrites
    assert _sent_accepts(compiled, {"p": {"k0": 1, "k8": 2}})
    assert not _sent_accepts(compiled, {"p": {"k0": "x"}}) and not _sent_accepts(compiled, {"p": {}})


@pytest.mark.timeout(30)
def test_a_small_merged_property_is_copied_whole_and_its_changes_are_reported_once() -> None:
    """A small property of an `allOf` base's definition is copied into the merged object, each nested
    schema copied too (its home in `$defs` stays whole, so a reference into it still resolves); the
    nested `$id` goes in both places and is reported once, at its home."""
    base = {"properties": {"p": {"type": "object", "properties": {"q": {"type": "integer"}}, "required": ["q"]},
                           "t": {"$id": "https://example.com/t", "type": "string"}}}
    schema = {"type": "object", "allOf": [{"$ref": "#/$defs/base"}],
              "properties": {"r": {"$ref": "#/$defs/base/properties/p/properties/q"}}, "$defs": {"base": base}}
    compiled = compile_anthropic(schema)
    p = {"type": "object", "properties": {"q": {"type": "integer"}}, "required": ["q"], "additionalProperties": False}
    assert compiled.schema == {
        "type": "object",
        "properties": {"r": {"$ref": "#/$defs/base/properties/p/properties/q"}, "p": p, "t": {"type": "string"}},
        "$defs": {"base": {"properties": {"p": p, "t": {"type": "string"}}, "additionalProperties": False}},
        "additionalProperties": False,
    }
    assert [r for r in compiled.rewrites if "$id" in r] == [
        "dropped `$id` at $.$defs.base.t: references into it are sent as places in the whole schema"]
    assert _sent_accepts(compiled, {"p": {"q": 1}, "r": 2, "t": "x"})
    assert not _sent_accepts(compiled, {"r": "x"}) and not _sent_accepts(compiled, {"p": {"q": "x"}})


@pytest.mark.timeout(30)
def test_a_big_merged_property_is_a_reference_to_its_compiled_home() -> None:
    """A property of an `allOf` base's definition too big to copy (nine schemas) is sent as a reference to
    where the definition is compiled, and still binds the value."""
    schema = {"type": "object", "allOf": [{"$ref": "#/$defs/base"}],
              "$defs": {"base": {"properties": {"p": _big_object(9)}}}}
    compiled = compile_anthropic(schema)
    assert compiled.schema["properties"] == {"p": {"$ref": "#/$defs/base/properties/p"}}
    assert compiled.schema["$defs"]["base"]["properties"]["p"] == {**_big_object(9), "additionalProperties": False}
    assert not [r for r in compiled.rewrites if "dropped the $ref" in r], compiled.rewrites
    assert _sent_accepts(compiled, {"p": {"k0": 1}}) and not _sent_accepts(compiled, {"p": {"k0": "x"}})


@pytest.mark.timeout(30)
def test_a_list_under_items_is_sent_as_prefix_items_and_that_is_said() -> None:
    """A draft-07 tuple where no keyword leads (so normalize.py never reads it) is sent as 2020-12 spells
    it: `prefixItems`, and `additionalItems` as `items`; the rewrite names the place."""
    schema = CASES["draft 7: a list under `items` where no keyword leads"][0]
    compiled = compile_openai(schema)
    pair = {"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}], "items": False}
    assert compiled.schema["$defs"]["ref"] == pair
    assert "the list under `items` became `prefixItems` at $.$defs.ref" in compiled.rewrites


@pytest.mark.timeout(30)
def test_a_schema_that_two_targets_share_is_sent_once() -> None:
    """A target outside every keyword that holds another one (each referenced): what is sent holds the inner
    schema once, where the other place refers to it, so its size stays linear in the caller's."""
    schema = CASES["a target outside every keyword, inside another one, with a reference of its own"][0]
    compiled = compile_openai(schema)
    assert compiled.schema["$defs"] == {
        "ref": {"$ref": "#/$defs/ref2"},
        "ref1": {"type": "object", "properties": {"p": {"$ref": "#/$defs/ref"}}},
        "ref2": {"type": "string"},
    }
