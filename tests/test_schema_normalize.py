"""`to_2020_12`: a draft 3/4/6/7/2019-09 schema read as draft 2020-12 gives every instance the same verdict.

One small schema per translation rule, each checked on instances both ways (the original draft's
validator against `Draft202012Validator` on the result); the caller's schema untouched, key order
kept, deep and large schemas walked without recursion; then the official JSON Schema Test Suite
(every case of drafts 3, 4, 6, 7 and 2019-09) and a sample of JSONSchemaBench's real-world schemas
with instances drawn by hypothesis-jsonschema. Neither data set is in the repository: those tests
skip when `JSON_SCHEMA_TEST_SUITE` / `JSONSCHEMABENCH_DATA` name no directory.

`python tests/test_schema_normalize.py` runs the JSONSchemaBench check over every schema (slow).
"""

from __future__ import annotations

import copy
import glob
import json
import os
import re
import signal
import sys
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from jsonschema.validators import validator_for

from mcp_llm.schema.normalize import SCHEMA_2020_12, to_2020_12

D3 = "http://json-schema.org/draft-03/schema#"
D4 = "http://json-schema.org/draft-04/schema#"
D6 = "http://json-schema.org/draft-06/schema#"
D7 = "http://json-schema.org/draft-07/schema#"
D2019 = "https://json-schema.org/draft/2019-09/schema"

SUITE = Path(os.environ.get("JSON_SCHEMA_TEST_SUITE", "/work/ext/json-schema-org+JSON-Schema-Test-Suite/tests"))
BENCH = Path(os.environ.get("JSONSCHEMABENCH_DATA", "/work/ext/guidance-ai+jsonschemabench/data"))


def verdicts(schema: Any, instances: list[Any]) -> tuple[list[bool], list[bool], Any, list[str]]:
    """(the original draft's verdicts, 2020-12's verdicts on the normalized schema, it, its rewrites)."""
    normalized, rewrites = to_2020_12(schema)
    original = validator_for(schema)(schema, format_checker=None)
    result = jsonschema.Draft202012Validator(normalized, format_checker=None)
    return ([original.is_valid(i) for i in instances], [result.is_valid(i) for i in instances], normalized,
            rewrites)


def normalize_object(schema: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    normalized, rewrites = to_2020_12(schema)
    assert isinstance(normalized, dict)
    return normalized, rewrites


def assert_same_meaning(schema: Any, instances: list[Any]) -> tuple[Any, str]:
    """The normalized schema is valid 2020-12 and agrees with the original on every instance; the
    original's verdicts must not all be equal (else the instances prove nothing)."""
    before, after, normalized, rewrites = verdicts(schema, instances)
    assert after == before, (before, after, normalized)
    assert len(set(before)) == 2, f"the instances do not tell valid from invalid: {before}"
    jsonschema.Draft202012Validator.check_schema(normalized)
    assert len(rewrites) == 1
    return normalized, rewrites[0]


# --- schemas that are already 2020-12 ---------------------------------------------------------------


@pytest.mark.parametrize("schema", [
    {"type": "object", "properties": {"a": {"$ref": "#/definitions/x"}}, "definitions": {"x": {"items": [{}]}}},
    {"$schema": SCHEMA_2020_12, "prefixItems": [{"type": "integer"}]},
    {"$schema": "https://json-schema.org/draft/2020-12/schema#", "type": "string"},
    {"$schema": "https://example.com/not-a-dialect", "type": "string"},
    True,
    False,
])
def test_a_schema_without_an_older_schema_comes_back_as_the_same_object_with_no_rewrites(schema: Any) -> None:
    normalized, rewrites = to_2020_12(schema)
    assert normalized is schema and rewrites == []


def test_only_dollar_schema_changes_when_no_keyword_changed_meaning() -> None:
    schema = {"$schema": D7, "type": "object", "properties": {"a": {"type": "string", "format": "date"}}}
    normalized, rewrites = to_2020_12(schema)
    assert normalized == {**schema, "$schema": SCHEMA_2020_12}
    assert rewrites == ["read as draft 2020-12 from draft-07: nothing else changed"]


# --- one rule at a time -------------------------------------------------------------------------------


def test_definitions_become_defs_and_every_pointer_into_them_follows_escapes_included() -> None:
    schema = {"$schema": D7, "definitions": {"tilde~field": {"type": "integer"}, "slash/field": {"type": "integer"},
                                              "percent%field": {"type": "integer"},
                                              "quote\"field": {"type": "integer"}},
              "properties": {"t": {"$ref": "#/definitions/tilde~0field"}, "s": {"$ref": "#/definitions/slash~1field"},
                             "p": {"$ref": "#/definitions/percent%25field"},
                             "q": {"$ref": "#/definitions/quote%22field"}}}
    normalized, summary = assert_same_meaning(schema, [{"t": 1, "s": 2, "p": 3, "q": 4}, {"t": "x"}, {"s": "x"},
                                                       {"p": "x"}, {"q": "x"}])
    assert "definitions" not in normalized and set(normalized["$defs"]) == set(schema["definitions"])
    refs = [sub["$ref"] for sub in normalized["properties"].values()]
    assert refs == ["#/$defs/tilde~0field", "#/$defs/slash~1field", "#/$defs/percent%25field", "#/$defs/quote%22field"]
    assert "`definitions` became `$defs` (1)" in summary


def test_a_pointer_resolved_against_a_nested_id_is_rewritten_in_that_resource() -> None:
    schema = {"$schema": D4, "id": "http://example.com/a/root.json",
              "definitions": {"n": {"id": "http://example.com/b/n.json", "definitions": {"m": {"type": "string"}},
                                    "properties": {"v": {"$ref": "#/definitions/m"}}},
                              "m": {"type": "integer"}},
              "properties": {"n": {"$ref": "http://example.com/b/n.json"}, "m": {"$ref": "#/definitions/m"}}}
    normalized, summary = assert_same_meaning(schema, [{"n": {"v": "x"}, "m": 1}, {"n": {"v": 1}}, {"m": "x"}])
    inner = normalized["$defs"]["n"]
    assert inner["$id"] == "http://example.com/b/n.json" and inner["properties"]["v"] == {"$ref": "#/$defs/m"}
    assert normalized["properties"] == {"n": {"$ref": "http://example.com/b/n.json"}, "m": {"$ref": "#/$defs/m"}}
    assert "`id` became `$id` (2)" in summary


def test_definitions_and_defs_in_one_draft7_node_merge_and_clash_stays_apart() -> None:
    merged = {"$schema": D7, "$defs": {"a": {"type": "string"}}, "definitions": {"b": {"type": "integer"}},
              "properties": {"a": {"$ref": "#/$defs/a"}, "b": {"$ref": "#/definitions/b"}}}
    normalized, _ = assert_same_meaning(merged, [{"a": "x", "b": 1}, {"a": 1}, {"b": "x"}])
    assert list(normalized["$defs"]) == ["a", "b"] and normalized["properties"]["b"] == {"$ref": "#/$defs/b"}
    clash = {"$schema": D7, "$defs": {"a": {"type": "string"}}, "definitions": {"a": {"type": "integer"}},
             "properties": {"s": {"$ref": "#/$defs/a"}, "i": {"$ref": "#/definitions/a"}}}
    normalized, _ = assert_same_meaning(clash, [{"s": "x", "i": 1}, {"s": 1}, {"i": "x"}])
    assert normalized["definitions"] == {"a": {"type": "integer"}}  # pointers into it still resolve in 2020-12


def test_ref_siblings_draft7_ignores_are_dropped_annotations_and_containers_kept() -> None:
    schema = {"$schema": D7, "properties": {"foo": {
        "$ref": "#/definitions/reffed", "maxItems": 2, "type": "string", "title": "Foo", "description": "d",
        "default": [], "$comment": "c", "$id": "http://example.com/elsewhere/", "x-extension": {"keep": True},
        "definitions": {"inner": {"type": "integer"}}}, "bar": {"$ref": "#/properties/foo/definitions/inner"}},
        "definitions": {"reffed": {"type": "array"}}}
    normalized, summary = assert_same_meaning(schema, [{"foo": [1, 2, 3]}, {"foo": "x"}, {"bar": 1}, {"bar": "x"}])
    assert normalized["properties"]["foo"] == {
        "$ref": "#/$defs/reffed", "title": "Foo", "description": "d", "default": [], "$comment": "c",
        "x-extension": {"keep": True}, "$defs": {"inner": {"type": "integer"}}}
    assert normalized["properties"]["bar"] == {"$ref": "#/properties/foo/$defs/inner"}
    assert "siblings of `$ref`, which draft-07 ignores, were dropped (3)" in summary


def test_a_sibling_id_beside_ref_does_not_change_the_base_uri() -> None:
    schema = {"$schema": D7, "$id": "http://localhost:1234/sibling_id/base/",
              "definitions": {"foo": {"$id": "http://localhost:1234/sibling_id/foo.json", "type": "string"},
                              "base_foo": {"$id": "foo.json", "type": "number"}},
              "allOf": [{"$id": "http://localhost:1234/sibling_id/", "$ref": "foo.json"}]}
    normalized, _ = assert_same_meaning(schema, [5, "a"])
    assert normalized["allOf"] == [{"$ref": "foo.json"}]


def test_ref_siblings_apply_in_2019_09_and_stay() -> None:
    schema = {"$schema": D2019, "$defs": {"a": {"type": "array"}},
              "properties": {"foo": {"$ref": "#/$defs/a", "maxItems": 2}}}
    normalized, summary = assert_same_meaning(schema, [{"foo": [1, 2]}, {"foo": [1, 2, 3]}, {"foo": "x"}])
    assert normalized["properties"]["foo"] == {"$ref": "#/$defs/a", "maxItems": 2}
    assert summary == "read as draft 2020-12 from draft 2019-09: nothing else changed"


def test_a_dropped_sibling_that_a_reference_points_into_is_kept_reachable_under_defs() -> None:
    schema = {"$schema": D7, "definitions": {"x": {"type": "array"}},
              "properties": {"p": {"$ref": "#/definitions/x", "items": {"type": "integer"}},
                             "q": {"$ref": "#/properties/p/items"}}}
    normalized, summary = assert_same_meaning(schema, [{"p": ["a"], "q": 1}, {"p": "x"}, {"q": "x"}])
    assert normalized["properties"]["p"] == {"$ref": "#/$defs/x", "$defs": {"ignored-items": {"type": "integer"}}}
    assert normalized["properties"]["q"] == {"$ref": "#/properties/p/$defs/ignored-items"}
    assert "kept under `$defs` (1)" in summary


def test_a_dropped_sibling_holding_an_id_a_reference_names_stays_a_resource() -> None:
    schema = {"$schema": D7, "allOf": [{"$ref": "http://example.com/ref/if",
                                        "if": {"$id": "http://example.com/ref/if", "type": "integer"}}]}
    normalized, _ = assert_same_meaning(schema, [1, "a"])
    assert normalized["allOf"] == [{"$ref": "http://example.com/ref/if", "$defs": {
        "ignored-if": {"$id": "http://example.com/ref/if", "type": "integer"}}}]


def test_fragment_ids_become_anchors_and_anchors_2020_12_refuses_are_renamed() -> None:
    draft4 = {"$schema": D4, "definitions": {"a": {"id": "#foo", "type": "integer"}}, "allOf": [{"$ref": "#foo"}]}
    normalized, summary = assert_same_meaning(draft4, [1, "a"])
    assert normalized["$defs"]["a"] == {"$anchor": "foo", "type": "integer"}
    assert '`id: "#name"` became `$anchor: "name"` (1)' in summary
    draft6 = {"$schema": D6, "$id": "http://example.com/root.json",
              "definitions": {"a": {"$id": "#1st:item", "type": "integer"}},
              "allOf": [{"$ref": "http://example.com/root.json#1st:item"}]}
    normalized, summary = assert_same_meaning(draft6, [1, "a"])
    anchor = normalized["$defs"]["a"]["$anchor"]
    assert anchor != "1st:item" and normalized["allOf"] == [{"$ref": f"http://example.com/root.json#{anchor}"}]
    assert "anchors 2020-12 would not take were renamed (1)" in summary


def test_an_id_with_a_base_uri_and_a_fragment_keeps_the_base_uri() -> None:
    schema = {"$schema": D4, "id": "http://example.com/root.json#",
              "definitions": {"a": {"type": "integer"}}, "properties": {"a": {"$ref": "#/definitions/a"}}}
    normalized, _ = assert_same_meaning(schema, [{"a": 1}, {"a": "x"}])
    assert normalized["$id"] == "http://example.com/root.json"


def test_dependencies_split_into_dependent_required_and_dependent_schemas_in_the_same_node() -> None:
    schema = {"$schema": D6, "type": "object", "dependencies": {
        "a": ["b"], "c": {"required": ["d"]}, "e": False, "f": []}, "title": "t"}
    normalized, summary = assert_same_meaning(
        schema, [{"a": 1, "b": 2}, {"a": 1}, {"c": 1}, {"c": 1, "d": 2}, {"e": 1}, {"f": 1}, {}])
    assert list(normalized) == ["$schema", "type", "dependentRequired", "dependentSchemas", "title"]
    assert normalized["dependentRequired"] == {"a": ["b"], "f": []}
    assert normalized["dependentSchemas"] == {"c": {"required": ["d"]}, "e": False}
    assert "`dependencies` became `dependentRequired` (1)" in summary
    assert "`dependencies` became `dependentSchemas` (1)" in summary


def test_tuple_items_become_prefix_items_and_additional_items_becomes_items() -> None:
    schema = {"$schema": D4, "items": [{"type": "integer"}, {"type": "string"}], "additionalItems": False}
    normalized, summary = assert_same_meaning(schema, [[1, "a"], [1], [1, "a", 2], ["a"]])
    assert normalized == {"$schema": SCHEMA_2020_12, "prefixItems": [{"type": "integer"}, {"type": "string"}],
                          "items": False}
    assert "`items` lists became `prefixItems` (1)" in summary and "`additionalItems` became `items` (1)" in summary
    tuple_only = {"$schema": D7, "items": [{"type": "integer"}]}
    normalized, _ = assert_same_meaning(tuple_only, [[1, "anything"], ["a"]])
    assert normalized == {"$schema": SCHEMA_2020_12, "prefixItems": [{"type": "integer"}]}


@pytest.mark.parametrize("schema", [
    {"$schema": D7, "items": {"type": "integer"}, "additionalItems": False},
    {"$schema": D7, "additionalItems": False, "maxItems": 1},
    {"$schema": D2019, "items": {"type": "integer"}, "additionalItems": {"type": "string"}},
])
def test_additional_items_without_an_items_list_is_ignored_and_dropped(schema: dict[str, Any]) -> None:
    normalized, summary = assert_same_meaning(schema, [[1], [1, 2], ["a", "b"], []] if "items" in schema
                                              else [[1], [1, 2]])
    assert "additionalItems" not in normalized
    assert "`additionalItems` without an `items` list" in summary


def test_draft4_boolean_exclusive_bounds_become_numbers_and_false_ones_go() -> None:
    schema = {"$schema": D4, "type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": 10,
              "exclusiveMaximum": False}
    normalized, summary = assert_same_meaning(schema, [0, 0.5, 10, 10.5])
    assert normalized == {"$schema": SCHEMA_2020_12, "type": "number", "exclusiveMinimum": 0, "maximum": 10}
    assert "`exclusiveMinimum: true` became `exclusiveMinimum: <minimum>` (1)" in summary
    assert "`exclusiveMaximum: false` was dropped" in summary


def test_boolean_subschemas_stay_booleans() -> None:
    schema = {"$schema": D6, "properties": {"a": True, "b": False}, "additionalProperties": False,
              "items": [True, False], "not": False}
    normalized, _ = assert_same_meaning(schema, [{"a": 1}, {"b": 1}, {"c": 1}, [1], [1, 2]])
    assert normalized["properties"] == {"a": True, "b": False} and normalized["prefixItems"] == [True, False]
    assert normalized["not"] is False and normalized["additionalProperties"] is False


@pytest.mark.parametrize(("schema", "instances", "dropped"), [
    ({"$schema": D4, "const": 1, "contains": {"type": "string"}, "propertyNames": {"maxLength": 1},
      "if": {"type": "integer"}, "then": False, "$id": "http://example.com/x", "type": ["integer", "array"]},
     [2, [1], "a"], ["const", "contains", "if", "then", "$id", "propertyNames"]),
    ({"$schema": D6, "if": {"type": "integer"}, "then": {"minimum": 5}, "type": ["integer", "string"]},
     [1, "a", None], ["if", "then"]),
    ({"$schema": D7, "unevaluatedProperties": False, "dependentRequired": {"a": ["b"]}, "prefixItems": [False],
      "minContains": 3, "contains": {}, "type": ["object", "array"]}, [{"c": 1, "a": 1}, [1], "x"],
     ["unevaluatedProperties", "dependentRequired", "prefixItems", "minContains"]),
    ({"$schema": D2019, "prefixItems": [False], "$dynamicRef": "#x", "type": "array"}, [[1], "x"],
     ["prefixItems", "$dynamicRef"]),
])
def test_keywords_2020_12_acts_on_that_the_draft_does_not_know_are_dropped(
        schema: dict[str, Any], instances: list[Any], dropped: list[str]) -> None:
    normalized, summary = assert_same_meaning(schema, instances)
    assert not set(dropped) & set(normalized)
    assert all(f"`{key}`, which" in summary for key in dropped)


def test_recursive_ref_becomes_dynamic_ref_when_one_resource_has_recursive_anchor() -> None:
    schema = {"$schema": D2019, "$id": "https://example.com/tree", "$recursiveAnchor": True, "type": "object",
              "properties": {"data": True, "children": {"type": "array", "items": {"$recursiveRef": "#"}}}}
    normalized, summary = assert_same_meaning(schema, [{"children": [{"children": []}]}, {"children": [1]}, 1])
    assert normalized["$dynamicAnchor"] == "recursive" and "$recursiveAnchor" not in normalized
    assert normalized["properties"]["children"]["items"] == {"$dynamicRef": "#recursive"}
    assert "`$recursiveRef` became `$dynamicRef` (1)" in summary


def test_recursive_ref_without_recursive_anchor_resolves_statically() -> None:
    schema = {"$schema": D2019, "properties": {"foo": {"$recursiveRef": "#"}}, "additionalProperties": False}
    normalized, _ = assert_same_meaning(schema, [{"foo": {"foo": {}}}, {"foo": {"bar": 1}}])
    assert normalized["properties"]["foo"] == {"$dynamicRef": "#"}


def test_recursive_ref_is_left_as_it_is_when_the_dynamic_scope_could_skip_a_resource() -> None:
    """Two resources with `$recursiveAnchor`, and a resource without it that follows a reference: 2019-09
    stops the dynamic scope at that one, 2020-12's `$dynamicRef` would not. Left, and said."""
    schema = {"$schema": D2019, "$id": "https://example.com/main", "$recursiveAnchor": True,
              "$defs": {"plain": {"$id": "plain", "$ref": "inner"},
                        "inner": {"$id": "inner", "$recursiveAnchor": True,
                                  "additionalProperties": {"$recursiveRef": "#"}}},
              "anyOf": [{"type": "integer"}, {"$ref": "plain"}]}
    normalized, rewrites = normalize_object(schema)
    assert normalized["$defs"]["inner"]["additionalProperties"] == {"$recursiveRef": "#"}
    assert "`$recursiveRef` was left as it is" in rewrites[0]


def test_formats_keep_their_names_and_data_is_not_read_as_schemas() -> None:
    schema = {"$schema": D4, "definitions": {"a_string": {"type": "string", "format": "hostname-ish"}},
              "properties": {"e": {"enum": [{"$ref": "#/definitions/a_string"}, {"id": "#x", "items": [{}]}]},
                             "c": {"default": {"definitions": {"x": {}}, "exclusiveMinimum": True}}}}
    normalized, _ = assert_same_meaning(schema, [{"e": {"$ref": "#/definitions/a_string"}}, {"e": "x"}])
    assert normalized["properties"] == schema["properties"]
    assert normalized["$defs"]["a_string"]["format"] == "hostname-ish"


def test_a_reference_into_a_custom_container_is_translated_where_it_is() -> None:
    schema = {"$schema": D4, "refs": {"positive": {"type": "number", "minimum": 0, "exclusiveMinimum": True},
                                      "unused": {"exclusiveMinimum": True, "minimum": 1}},
              "properties": {"p": {"$ref": "#/refs/positive"}}}
    normalized, _ = assert_same_meaning(schema, [{"p": 1}, {"p": 0}])
    assert normalized["refs"] == {"positive": {"type": "number", "exclusiveMinimum": 0},
                                  "unused": {"exclusiveMinimum": True, "minimum": 1}}
    assert normalized["properties"]["p"] == {"$ref": "#/refs/positive"}


def test_a_reference_into_data_gets_a_translated_copy_and_the_data_stays() -> None:
    enum = [{"maximum": 3, "exclusiveMaximum": True}, 7]
    schema: dict[str, Any] = {"$schema": D4,
                              "properties": {"e": {"enum": enum}, "p": {"$ref": "#/properties/e/enum/0"}}}
    normalized, summary = assert_same_meaning(schema, [{"p": 2}, {"p": 3}, {"e": 7}, {"e": 8}])
    assert normalized["properties"]["e"]["enum"] == schema["properties"]["e"]["enum"]
    assert normalized["properties"]["p"] == {"$ref": "#/properties/e/$defs/target"}
    assert normalized["properties"]["e"]["$defs"] == {"target": {"exclusiveMaximum": 3}}
    assert "copied into `$defs` (1)" in summary


def test_an_id_draft7_does_not_read_inside_defs_is_dropped_so_pointers_resolve_alike() -> None:
    """Draft 7 does not know `$defs`: an `$id` there sets no base URI, so `#/definitions/c` below it
    means the root's. Under 2020-12 it would mean its own: the `$id` goes."""
    schema = {"$schema": D7, "$defs": {"a": {"$id": "http://example.com/a.json",
                                             "properties": {"b": {"$ref": "#/definitions/c"}},
                                             "definitions": {"c": {"type": "string"}}}},
              "definitions": {"c": {"type": "integer"}}, "allOf": [{"$ref": "#/$defs/a"}]}
    normalized, _ = assert_same_meaning(schema, [{"b": 1}, {"b": "x"}])
    assert "$id" not in normalized["$defs"]["a"]


def test_an_anchor_draft7_never_registered_is_dropped_so_it_cannot_shadow_a_real_one() -> None:
    """Draft 7 does not crawl `$defs`: `#foo` there names nothing, and the reference means the other one."""
    schema = {"$schema": D7, "$defs": {"x": {"properties": {"p": {"$id": "#foo", "type": "string"}}}},
              "definitions": {"y": {"$id": "#foo", "type": "integer"}},
              "allOf": [{"$ref": "#foo"}, {"$ref": "#/$defs/x"}]}
    normalized, summary = assert_same_meaning(schema, [1, "a", {"p": 1}])
    assert normalized["$defs"]["x"]["properties"]["p"] == {"type": "string"}
    assert normalized["$defs"]["y"] == {"$anchor": "foo", "type": "integer"}
    assert "anchors draft-07 does not register where they are" in summary


def test_a_reference_that_cannot_be_kept_pointing_at_its_target_is_reported_not_hidden() -> None:
    """Two `$id`s with one URI, one where draft 7 never registers it: under 2020-12 both are resources,
    and which one the reference finds is the crawler's choice. Either it still finds the same one, or
    the summary says it does not."""
    for first in ("$defs", "definitions"):
        parts = {"$defs": {"x": {"properties": {"p": {"$id": "http://example.com/a", "type": "string"}}}},
                 "definitions": {"y": {"$id": "http://example.com/a", "type": "integer"}}}
        schema = {"$schema": D7, **dict(sorted(parts.items(), key=lambda kv: kv[0] != first)),
                  "allOf": [{"$ref": "http://example.com/a"}, {"$ref": "#/$defs/x"}]}
        before, after, _, rewrites = verdicts(schema, [1, "a"])
        assert before == after or "references that could not be kept pointing at the same subschema (1)" in rewrites[0]


def test_draft3_keywords_become_their_2020_12_forms() -> None:
    schema = {"$schema": D3, "type": ["integer", {"type": "string", "maxLength": 2}], "divisibleBy": 2,
              "disallow": ["boolean", {"type": "string", "pattern": "^z"}],
              "extends": {"not_a_keyword": 1, "maxLength": 1}}
    normalized, summary = assert_same_meaning(schema, [2, 3, "a", "ab", "z", True, None])
    assert normalized == {"$schema": SCHEMA_2020_12,
                          "anyOf": [{"type": ["integer"]}, {"type": "string", "maxLength": 2}],
                          "multipleOf": 2,
                          "not": {"anyOf": [{"type": ["boolean"]}, {"type": "string", "pattern": "^z"}]},
                          "allOf": [{"not_a_keyword": 1, "maxLength": 1}]}
    assert "`divisibleBy` became `multipleOf` (1)" in summary and "`extends` became `allOf` (1)" in summary
    required = {"$schema": D3, "properties": {"a": {"type": "string", "required": True}, "b": {"required": False},
                                              "c": {"$ref": "#/properties/b", "required": True}}}
    normalized, _ = assert_same_meaning(required, [{"a": "x", "c": 1}, {"a": "x"}, {"c": 1}, {"a": 1, "c": 1}])
    assert normalized["properties"] == {"a": {"type": "string"}, "b": {}, "c": {"$ref": "#/properties/b"}}
    assert normalized["required"] == ["a", "c"] and list(normalized) == ["$schema", "properties", "required"]


def test_nested_dollar_schema_switches_the_draft_for_its_subtree() -> None:
    schema = {"$schema": D2019, "properties": {
        "old": {"$schema": D4, "maximum": 3, "exclusiveMaximum": True},
        "new": {"$ref": "#/$defs/n", "minimum": 1}}, "$defs": {"n": {"type": "integer"}}}
    normalized, _ = assert_same_meaning(schema, [{"old": 2, "new": 1}, {"old": 3}, {"new": 0}])
    assert normalized["properties"]["old"] == {"$schema": SCHEMA_2020_12, "exclusiveMaximum": 3}


# --- what every result must be -------------------------------------------------------------------------


RICH: dict[str, Any] = {
    "$schema": D4, "id": "http://example.com/rich.json", "title": "Rich", "type": "object",
    "properties": {"zeta": {"$ref": "#/definitions/n", "minimum": 5}, "alpha": {"items": [{"type": "string"}],
                                                                                 "additionalItems": False},
                   "mid": {"dependencies": {"a": ["b"], "c": {"required": ["d"]}}}},
    "required": ["zeta"], "definitions": {"n": {"type": "number", "maximum": 9, "exclusiveMaximum": True}},
}


def test_the_callers_schema_is_never_changed_and_shares_nothing_with_the_result() -> None:
    original = copy.deepcopy(RICH)
    normalized, _ = to_2020_12(RICH)
    assert original == RICH
    mutable_ids = {id(node) for node in _nodes(RICH)}
    assert not any(id(node) in mutable_ids for node in _nodes(normalized))


def test_key_order_is_the_callers_everywhere() -> None:
    normalized, _ = normalize_object(RICH)
    assert list(normalized) == ["$schema", "$id", "title", "type", "properties", "required", "$defs"]
    assert list(normalized["properties"]) == ["zeta", "alpha", "mid"]
    assert list(normalized["properties"]["alpha"]) == ["prefixItems", "items"]
    assert list(normalized["$defs"]["n"]) == ["type", "exclusiveMaximum"]


def _nodes(value: Any) -> Iterator[Any]:
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, dict | list):
            yield node
            stack.extend(node.values() if isinstance(node, dict) else node)


@contextmanager
def recursion_headroom(frames: int) -> Iterator[None]:
    """At most `frames` more Python frames: a walk that recursed per level would fail."""
    depth = len(_frames())
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(depth + frames)
    try:
        yield
    finally:
        sys.setrecursionlimit(limit)


def _frames() -> list[Any]:
    import inspect

    return inspect.stack(0)


def test_a_200_level_deep_schema_is_normalized_without_recursing_per_level() -> None:
    leaf: dict[str, Any] = {"$ref": "#/definitions/leaf", "maxLength": 1}
    schema: dict[str, Any] = leaf
    for _ in range(200):
        schema = {"type": "object", "properties": {"next": schema}, "dependencies": {"next": ["x"]}}
    schema = {"$schema": D7, **schema, "definitions": {"leaf": {"type": "string"}}}
    with recursion_headroom(120):
        normalized, rewrites = normalize_object(schema)
    node = normalized
    for _ in range(200):
        assert node["dependentRequired"] == {"next": ["x"]} and "dependencies" not in node
        node = node["properties"]["next"]
    assert node == {"$ref": "#/$defs/leaf"}
    assert "siblings of `$ref`, which draft-07 ignores, were dropped (1)" in rewrites[0]


def test_a_500_kb_schema_is_normalized_whole() -> None:
    count = 2500
    schema = {"$schema": D4, "type": "object",
              "properties": {f"p{i}": {"$ref": f"#/definitions/d{i}", "description": "x" * 40} for i in range(count)},
              "definitions": {f"d{i}": {"type": "integer", "minimum": i, "exclusiveMinimum": True,
                                        "items": [{"id": f"#a{i}"}], "enum": [{"definitions": i}] * 3}
                              for i in range(count)}}
    assert len(json.dumps(schema)) > 500_000
    with recursion_headroom(120):
        normalized, rewrites = normalize_object(schema)
    assert all(normalized["properties"][f"p{i}"]["$ref"] == f"#/$defs/d{i}" for i in range(count))
    assert all(normalized["$defs"][f"d{i}"]["exclusiveMinimum"] == i for i in range(count))
    assert all(normalized["$defs"][f"d{i}"]["prefixItems"] == [{"$anchor": f"a{i}"}] for i in range(count))
    assert f"references that pointed at a moved or renamed subschema were rewritten ({count})" in rewrites[0]


def test_odd_but_meta_valid_input_does_not_raise() -> None:
    for schema in ({"$schema": D4, "$ref": 5}, {"$schema": D4, "$ref": "#/nowhere"},
                   {"$schema": D7, "definitions": {"a": 1}, "properties": {"x": {"$ref": "#/definitions/a"}}},
                   {"$schema": D3, "extends": {"$ref": "#"}, "type": []},
                   {"$schema": D7, "$ref": "http://json-schema.org/draft-07/schema#", "definitions": {}}):
        normalized, rewrites = to_2020_12(schema)
        assert isinstance(normalized, dict) and len(rewrites) == 1


# --- the official JSON Schema Test Suite ---------------------------------------------------------------


SUITE_DIALECTS = {"draft3": D3, "draft4": D4, "draft6": D6, "draft7": D7, "draft2019-09": D2019}
# The only verdicts that cannot be kept: draft 3/4 read 1.0 as a number that is not an integer, which
# 2020-12 (whose data model does not tell 1.0 from 1) cannot say.
CANNOT_BE_EXACT = {("zeroTerminatedFloats.json", "a float is not an integer even without fractional part")}


def suite_verdicts(draft: str) -> Counter[str]:
    """Every case of one draft (its optional ones too, not `format`, not remote references): how many
    instances the normalized schema judges as the draft's own validator does."""
    counts: Counter[str] = Counter()
    files = sorted(glob.glob(str(SUITE / draft / "*.json")) + glob.glob(str(SUITE / draft / "optional" / "*.json")))
    for file in files:
        name = Path(file).name
        if name == "refRemote.json":
            continue
        for case in json.loads(Path(file).read_text()):
            schema = case["schema"]
            if isinstance(schema, dict) and "$schema" not in schema:
                schema = {"$schema": SUITE_DIALECTS[draft], **schema}
            original_class = validator_for(schema if isinstance(schema, dict) else {},
                                           default=validator_for({"$schema": SUITE_DIALECTS[draft]}))
            normalized, _ = to_2020_12(schema)
            for test in case["tests"]:
                try:
                    want: bool | str = original_class(schema, format_checker=None).is_valid(test["data"])
                except jsonschema.exceptions._WrappedReferencingError:  # a remote reference: not fetched
                    counts["skipped: remote reference"] += 1
                    continue
                except re.error as exc:  # an ECMA 262 pattern Python's `re` refuses: the same on both sides
                    want = f"re.error: {exc}"
                try:
                    got: bool | str = jsonschema.Draft202012Validator(normalized, format_checker=None).is_valid(
                        test["data"])
                except re.error as exc:
                    got = f"re.error: {exc}"
                if got == want:
                    counts["same verdict"] += 1
                elif want != test["valid"] and got == test["valid"]:
                    counts["jsonschema's own draft validator is wrong, the normalized schema right"] += 1
                elif (name, test["description"]) in CANNOT_BE_EXACT:
                    counts["cannot be exact (1.0 as an integer)"] += 1
                else:
                    counts[f"DIFFERENT: {name}: {case['description']}: {test['description']}"] += 1
    return counts


@pytest.mark.skipif(not SUITE.is_dir(), reason=f"the JSON Schema Test Suite is not at {SUITE} "
                    "(set JSON_SCHEMA_TEST_SUITE to its tests/ directory)")
@pytest.mark.parametrize("draft", list(SUITE_DIALECTS))
def test_the_official_test_suite_gets_the_same_verdicts(draft: str) -> None:
    counts = suite_verdicts(draft)
    different = [key for key in counts if key.startswith("DIFFERENT")]
    assert not different, different
    assert counts["same verdict"] > 400, counts


# --- JSONSchemaBench, with instances drawn by hypothesis-jsonschema ------------------------------------


class OutOfTime(BaseException):
    """A schema hypothesis-jsonschema takes too long over (a BaseException: hypothesis lets it through)."""


@contextmanager
def time_limit(seconds: int | None) -> Iterator[None]:
    """SIGALRM after `seconds` (None: no limit). Only for `main`: under pytest, an alarm that lands in a
    gc callback is an unraisable exception, which pytest turns into a failure."""
    if seconds is None:
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise OutOfTime

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def draw_instances(schema: dict[str, Any], count: int) -> list[Any]:
    """Up to `count` instances hypothesis-jsonschema draws from `schema`, and near misses of each (a key
    removed or added, an item added, a value of another type)."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis_jsonschema import from_schema

    drawn: list[Any] = []

    @settings(max_examples=count, database=None, deadline=None, suppress_health_check=list(HealthCheck),
              derandomize=True, phases=[Phase.generate])
    @given(from_schema(copy.deepcopy(schema)))  # it rewrites the schema it is given in place
    def collect(value: Any) -> None:
        drawn.append(value)

    collect()
    return [variant for value in drawn for variant in near_misses(value)]


def near_misses(value: Any) -> list[Any]:
    variants = [value, None, "text", 1.5, -1, True, [], {}]
    if isinstance(value, dict):
        variants += [{k: v for k, v in value.items() if k != key} for key in list(value)[:4]]
        variants += [{**value, "zz_extra": 1}]
        variants += [{**value, key: other} for key in list(value)[:4] for other in (None, "x", 0, [1])]
    elif isinstance(value, list):
        variants += [[*value, value[0] if value else 0], value[:-1], [*value, "x"]]
    return variants


def older_bench_schemas() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for file in sorted(glob.glob(str(BENCH / "*" / "*.json"))):
        schema = json.loads(Path(file).read_text())
        if isinstance(schema, dict) and validator_for(schema, default=None) not in (
                None, jsonschema.Draft202012Validator):
            found.append((file, schema))
    return found


def bench_verdicts(schemas: list[tuple[str, dict[str, Any]]], *, examples: int, seconds: int | None,
                   progress: bool = False) -> Counter[str]:
    import hypothesis_jsonschema  # noqa: F401 - imported before any time limit, never half-way by an alarm

    counts: Counter[str] = Counter()
    for done, (file, schema) in enumerate(schemas):
        if progress and done and done % 500 == 0:
            print(f"{done} schemas: {dict(counts.most_common(6))}", file=sys.stderr, flush=True)
        normalized, _ = to_2020_12(schema)
        try:
            with warnings.catch_warnings(), time_limit(seconds):
                warnings.simplefilter("ignore")
                instances = draw_instances(schema, examples)
        except OutOfTime:
            counts["schemas skipped: hypothesis-jsonschema too slow"] += 1
            continue
        except Exception:  # what it cannot handle (recursive references, odd patterns)
            counts["schemas skipped: hypothesis-jsonschema cannot draw from them"] += 1
            continue
        original = validator_for(schema)(schema, format_checker=None)
        result = jsonschema.Draft202012Validator(normalized, format_checker=None)
        counts["schemas checked"] += 1
        for instance in instances:
            try:
                want = original.is_valid(instance)
            except Exception:  # the original itself cannot judge it (a remote reference)
                counts["instances skipped: the original validator fails"] += 1
                continue
            try:
                got = result.is_valid(instance)
            except Exception as exc:  # the normalized schema breaks: counted as different
                got = exc
            counts["instances valid" if want else "instances invalid"] += 1
            if got != want:
                counts[f"DIFFERENT: {Path(file).parent.name}/{Path(file).name}: {json.dumps(instance)[:200]}"] += 1
    return counts


@pytest.mark.skipif(not BENCH.is_dir(), reason=f"JSONSchemaBench's data is not at {BENCH} "
                    "(set JSONSCHEMABENCH_DATA to its data/ directory)")
def test_jsonschemabench_sample_gets_the_same_verdicts_on_drawn_instances() -> None:
    """100 of the real-world schemas that name an older draft, smallest first among an even spread."""
    schemas = older_bench_schemas()
    spread = schemas[:: max(1, len(schemas) // 300)]
    sample = sorted(spread, key=lambda item: len(json.dumps(item[1])))[:100]
    counts = bench_verdicts(sample, examples=5, seconds=None)
    different = [key for key in counts if key.startswith("DIFFERENT")]
    assert not different, different
    assert counts["schemas checked"] >= 80 and counts["instances invalid"] > 100, counts


def main() -> None:
    """The JSONSchemaBench check over every schema naming an older draft (takes a while)."""
    schemas = older_bench_schemas()
    print(f"{len(schemas)} schemas name an older draft", flush=True)
    counts = bench_verdicts(schemas, examples=10, seconds=5, progress=True)
    for key, count in sorted(counts.items()):
        print(f"{count:8} {key}")


if __name__ == "__main__":
    main()
