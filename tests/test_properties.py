"""Properties of the core promise, over generated schemas, answers and replies (hypothesis).

- Compiling a schema for a provider never changes the caller's schema, never raises, grows at most
  linearly, leaves no dangling reference, and never forbids an answer the caller's schema allows
  (answers are generated from the ORIGINAL schema with hypothesis-jsonschema and checked against
  what the provider is sent).
- Whatever a model replies, reading it raises nothing but our OutputError, and any value it returns
  validates against the caller's schema, checked by the test with jsonschema directly.
- The schema gate raises nothing but SchemaError, whatever JSON it is given.
Examples are bounded so the suite stays fast in CI.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from hypothesis_jsonschema import from_schema
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from mcp_llm.errors import OutputError, SchemaError
from mcp_llm.schema import check_schema, parse_and_validate
from mcp_llm.schema.dialects import compile_anthropic, compile_gemini

COMPILERS = {"gemini": compile_gemini, "anthropic": compile_anthropic}
FAST = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
NAMES = st.sampled_from(["a", "b", "c", "kind", "x_1"])


def leaf() -> st.SearchStrategy[dict[str, Any]]:
    small_int = st.integers(-50, 50)
    return st.one_of(
        st.builds(lambda n: {"type": "string", "maxLength": n}, st.integers(0, 12)),
        st.just({"type": "string", "pattern": "^[a-z]+$", "maxLength": 8}),
        st.sampled_from([{"type": "string", "format": f} for f in ("date", "email", "uuid", "date-time")]),
        st.builds(lambda lo, span: {"type": "integer", "minimum": lo, "maximum": lo + span}, small_int,
                  st.integers(0, 20)),
        st.builds(lambda lo: {"type": "number", "minimum": lo, "exclusiveMaximum": lo + 10}, small_int),
        st.just({"type": "number", "multipleOf": 0.5, "maximum": 100}),
        st.just({"type": "boolean"}),
        st.just({"type": ["string", "null"], "maxLength": 5}),
        st.builds(lambda v: {"const": v}, st.one_of(small_int, st.sampled_from(["on", "off"]))),
        st.builds(lambda vs: {"enum": vs}, st.lists(st.sampled_from(["red", "green", 1, None]), min_size=1,
                                                    max_size=3, unique=True)),
    )


def extend(children: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    def obj(props: dict[str, Any], required: list[str], closed: Any, patterns: bool) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "object", "properties": props,
                                  "required": list(dict.fromkeys(n for n in required if n in props))}
        if closed is not None:
            schema["additionalProperties"] = closed
        if patterns:
            schema["patternProperties"] = {"^x_": {"type": "integer"}}
        return schema

    objects = st.builds(obj, st.dictionaries(NAMES, children, max_size=3), st.lists(NAMES, max_size=3),
                        st.one_of(st.none(), st.booleans(), children), st.booleans())
    arrays = st.builds(lambda items, lo, extra, unique: {"type": "array", "items": items, "minItems": lo,
                                                         "maxItems": lo + extra, "uniqueItems": unique},
                       children, st.integers(0, 2), st.integers(0, 3), st.booleans())
    return st.one_of(
        objects,
        arrays,
        st.builds(lambda xs: {"anyOf": xs}, st.lists(children, min_size=1, max_size=3)),
        st.builds(lambda xs: {"oneOf": xs}, st.lists(children, min_size=1, max_size=2)),
        st.builds(lambda a, b: {"type": "object", "properties": {"a": a}, "allOf": [
            {"properties": {"b": b}, "required": ["b"]}]}, children, children),
        st.builds(lambda x: {"allOf": [x, {"not": {"type": "null"}}]}, children),
        st.builds(lambda x: {"type": ["object", "null"], "properties": {"a": x}}, children),
    )


def with_defs(schema: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Sometimes move the schema into $defs and point the root at it."""
    return st.sampled_from([
        schema,
        {"$defs": {"main": schema}, "$ref": "#/$defs/main"},
        {"type": "object", "properties": {"v": schema}, "required": ["v"]},
    ])


SCHEMAS = st.recursive(leaf(), extend, max_leaves=6).flatmap(with_defs)


def validator(schema: dict[str, Any]) -> jsonschema.protocols.Validator:
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def dangling_refs(schema: dict[str, Any]) -> list[str]:
    resolver = Registry().resolver_with_root(DRAFT202012.create_resource(schema))
    found = []
    stack: list[Any] = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str):
                try:
                    resolver.lookup(ref)
                except Exception:  # any failure is what is being looked for
                    found.append(ref)
            stack.extend(v for k, v in node.items() if k not in ("enum", "const", "default", "examples"))
    return found


@pytest.mark.parametrize("provider", COMPILERS)
@FAST
@given(schema=SCHEMAS)
def test_compiling_never_mutates_raises_or_grows_super_linearly(provider: str, schema: dict[str, Any]) -> None:
    check_schema(schema)
    original = copy.deepcopy(schema)
    compiled = COMPILERS[provider](schema)
    assert schema == original, "the caller's schema was changed"
    size_in, size_out = len(json.dumps(schema)), len(json.dumps(compiled.schema))
    assert size_out <= 4 * size_in + 1_000, (size_in, size_out)
    assert not dangling_refs(compiled.schema)
    jsonschema.Draft202012Validator.check_schema(compiled.schema)
    assert all(isinstance(r, str) and r for r in compiled.rewrites)


def without_extra_keys(node: Any) -> Any:
    """The schema, but with objects holding only the keys their schema names (here or in `allOf`).

    Anthropic's strict mode needs closed objects: that one tightening is expected, so its answers
    are drawn from this; every other rewrite must still accept them."""
    if isinstance(node, list):
        return [without_extra_keys(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: (v if k in ("enum", "const", "required") else without_extra_keys(v)) for k, v in node.items()}
    if out.get("type") == "object" or "properties" in out:
        names = set(out.get("properties", {}))
        for branch in out.get("allOf", []):
            names |= set(branch.get("properties", {})) | set(branch.get("required", []))
        out["propertyNames"] = {"enum": sorted(names)} if names else False
    return out


@pytest.mark.parametrize("provider", COMPILERS)
@FAST
@given(schema=SCHEMAS, data=st.data())
def test_the_provider_is_never_sent_a_tighter_schema(provider: str, schema: dict[str, Any], data: st.DataObject,
                                                     ) -> None:
    """Every answer the caller's schema allows is allowed by what the provider is sent (for Anthropic:
    every such answer without keys its objects do not name, since strict mode closes objects)."""
    try:
        answer = data.draw(from_schema(without_extra_keys(schema) if provider == "anthropic" else schema))
    except (InvalidArgument, jsonschema.exceptions.SchemaError, ValueError):  # unsatisfiable, or not generable
        assume(False)
    assume(not list(validator(schema).iter_errors(answer)))  # hypothesis-jsonschema does not know every format
    compiled = COMPILERS[provider](schema)
    sent = {compiled.wrapped_in: answer} if compiled.wrapped_in else answer
    errors = [e.message for e in jsonschema.Draft202012Validator(compiled.schema).iter_errors(sent)]
    assert not errors, f"{provider} was sent a schema that refuses a valid answer: {errors}\n{compiled.schema}"


@FAST
@given(schema=SCHEMAS, data=st.data())
def test_a_valid_answer_comes_back_unchanged(schema: dict[str, Any], data: st.DataObject) -> None:
    try:
        answer = data.draw(from_schema(schema))
    except (InvalidArgument, jsonschema.exceptions.SchemaError, ValueError):
        assume(False)
    assume(not list(validator(schema).iter_errors(answer)))  # hypothesis-jsonschema does not know every format
    check_schema(schema)
    assert parse_and_validate(json.dumps(answer), schema) == answer


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                    lambda xs: st.lists(xs, max_size=4) | st.dictionaries(st.text(max_size=4), xs, max_size=4),
                    max_leaves=12)
REPLIES = st.one_of(
    st.text(max_size=200),
    JSON.map(json.dumps),
    JSON.map(lambda v: f"Here you go:\n```json\n{json.dumps(v)}\n```"),
    st.sampled_from(['{"x": NaN}', "Infinity", '{"x": 1e999}', "[" * 3000, '"\\ud800"', "```" + " " * 5000,
                     '{"a": 1} trailing', "See [1]. Answer: {\"a\": 2}", "9" * 400]),
)


@FAST
@given(schema=SCHEMAS, reply=REPLIES)
def test_any_reply_ends_in_valid_data_or_an_output_error(schema: dict[str, Any], reply: str) -> None:
    check_schema(schema)
    try:
        value = parse_and_validate(reply, schema)
    except OutputError:
        return
    assert not list(validator(schema).iter_errors(value)), f"{reply!r} was accepted for {schema}"
    json.dumps(value, allow_nan=False).encode("utf-8")


@FAST
@given(candidate=st.dictionaries(st.sampled_from(["type", "properties", "$ref", "items", "not", "allOf", "$defs",
                                                  "$dynamicRef", "$anchor", "pattern", "required", "$schema"]),
                                 JSON | SCHEMAS, max_size=5))
def test_the_gate_raises_nothing_but_schema_errors(candidate: dict[str, Any]) -> None:
    try:
        check_schema(candidate)
    except SchemaError:
        return


# The compilations issue 7 found unsatisfiable or dangling, each with answers the caller's schema allows.
TIGHTENED_BEFORE = {
    "allOf adds a required property": (
        {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"],
         "allOf": [{"properties": {"b": {"type": "integer"}}, "required": ["b"]}]},
        [{"a": "x", "b": 1}]),
    "prefixItems with items false": (
        {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}], "items": False},
        [[1, "a"], [2]]),
    "patternProperties with additionalProperties false": (
        {"type": "object", "patternProperties": {"^x_": {"type": "integer"}}, "additionalProperties": False},
        [{"x_1": 1, "x_2": 2}]),
    "type list beside anyOf": (
        {"type": ["string", "integer"], "anyOf": [{"type": "string", "minLength": 2}, {"type": "integer"}]},
        ["ab", 7]),
    "ref to the root of a wrapped schema": (
        {"type": "array", "maxItems": 3, "items": {"anyOf": [{"type": "integer"}, {"$ref": "#"}]}},
        [[1, [2, [3]]]]),
    "ref into a dropped keyword": (
        {"type": "object", "properties": {"a": {"not": {"type": "string"}}, "b": {"$ref": "#/properties/a/not"}}},
        [{"a": 1, "b": "s"}]),
    "required name only in patternProperties": (
        {"type": "object", "patternProperties": {"^x_": {"type": "integer"}}, "required": ["x_1"]},
        [{"x_1": 3}]),
}


@pytest.mark.parametrize("provider", COMPILERS)
@pytest.mark.parametrize("case", TIGHTENED_BEFORE)
def test_compiled_schemas_admit_what_the_caller_allows(provider: str, case: str) -> None:
    schema, answers = TIGHTENED_BEFORE[case]
    check_schema(schema)
    compiled = COMPILERS[provider](schema)
    assert not dangling_refs(compiled.schema), compiled.schema
    jsonschema.Draft202012Validator.check_schema(compiled.schema)
    for answer in answers:
        assert not list(validator(schema).iter_errors(answer))
        sent = {compiled.wrapped_in: answer} if compiled.wrapped_in else answer
        errors = [e.message for e in jsonschema.Draft202012Validator(compiled.schema).iter_errors(sent)]
        assert not errors, f"{provider} refuses {answer!r}: {errors}\n{json.dumps(compiled.schema)}"
        assert parse_and_validate(json.dumps(sent), schema, unwrap=compiled.wrapped_in) == answer
