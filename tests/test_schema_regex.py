"""Patterns and formats as JSON Schema means them (ECMA-262, the official suite's formats), and the
library quirks the validator works around; each case a small schema a real user might send."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mcp_llm.errors import OutputError, SchemaError
from mcp_llm.schema import check_schema, parse_and_validate, parse_schema_argument
from mcp_llm.schema.regex import PatternError, PatternUndecided, compile_pattern, is_pattern

DRAFT3 = "http://json-schema.org/draft-03/schema#"
DRAFT4 = "http://json-schema.org/draft-04/schema#"
DRAFT7 = "http://json-schema.org/draft-07/schema#"


def accepts(schema: Any, value: Any) -> bool:
    """What the reply reader says of `value` as a model's whole answer."""
    check_schema(schema)
    try:
        return parse_and_validate(json.dumps(value), schema) == value
    except OutputError:
        return False


# --- ECMA-262 semantics (the suite's optional/ecmascript-regex cases, where Python's `re` differs) ---

@pytest.mark.parametrize(("pattern", "text", "matches"), [
    ("^\\d$", "\u07c0", False),  # NKO DIGIT ZERO: `\d` is ASCII in ECMA-262, any digit in Python
    ("^\\d$", "7", True),
    ("^\\w$", "\u00e9", False),  # e-acute is not a word character in ECMA-262
    ("^\\s$", "\u00a0", True),  # but a non-breaking space is whitespace
    ("^abc$", "abc\n", False),  # `$` does not match before a final newline
    ("^\\p{L}+$", "Zoë", True),  # Unicode property escapes, which real schemas use for names
    ("^\\p{Lu}", "émile", False),
    ("^\\p{Script=Greek}+$", "αβγ", True),
])
def test_patterns_match_as_ecma_262_says(pattern: str, text: str, matches: bool) -> None:
    assert compile_pattern(pattern).search(text) is matches
    assert accepts({"type": "string", "pattern": pattern}, text) is matches


def test_a_pattern_is_searched_not_anchored() -> None:
    assert compile_pattern("b").search("abc") and not compile_pattern("^b").search("abc")


@pytest.mark.parametrize("pattern", ["(?P<name>x)", "(?i)abc", "(?#comment)a", "\\a"])
def test_python_only_syntax_is_not_an_ecma_regex_in_a_reply(pattern: str) -> None:
    assert not is_pattern(pattern)
    assert not accepts({"type": "string", "format": "regex"}, pattern)


@pytest.mark.parametrize("pattern", ["(?<name>x)", "\\cA", "(?<=a+)b", "^\\p{L}$"])
def test_ecma_syntax_is_a_regex_in_a_reply(pattern: str) -> None:
    assert accepts({"type": "string", "format": "regex"}, pattern)


@pytest.mark.parametrize("pattern", ["^PUBMED:\\{d}", "^[[a-z]*[-]?[a-z]*]*$", "(?i)^abc$"])
def test_schemas_may_spell_patterns_as_real_schemas_do(pattern: str) -> None:
    """Annex B and Python spellings that ECMA-262's strict syntax refuses are taken in a schema's own
    patterns (GitHub schemas hold them), with their usual meaning."""
    parse_schema_argument({"type": "string", "pattern": pattern})


def test_a_pattern_the_engine_cannot_run_is_refused_clearly() -> None:
    with pytest.raises(SchemaError, match=r"cannot be used.*bounded-time engine"):
        parse_schema_argument({"type": "string", "pattern": "(?<n>a)\\k<n>"})
    with pytest.raises(SchemaError, match="not a regular expression"):
        parse_schema_argument({"type": "object", "patternProperties": {"(": {}}})


def test_draft_04_pattern_property_keys_are_checked_as_regexes() -> None:
    """Draft 4's meta-schema does not say its keys are regexes: the gate must, or every reply fails."""
    with pytest.raises(SchemaError, match="patternProperties"):
        parse_schema_argument({"$schema": DRAFT4, "type": "object", "patternProperties": {"[": {}}})


def test_a_match_the_engine_gives_up_on_is_neither_a_match_nor_a_miss() -> None:
    """A backreference against a long string exceeds the backtracking bound: the engine stops, and the
    value is not checkable, so it is re-asked, never let through either way (`not` included)."""
    pattern = "(.)\\1"
    text = "xyzabcd" * 100_000
    with pytest.raises(PatternUndecided):
        compile_pattern(pattern).search(text)
    for schema in ({"type": "string", "pattern": pattern}, {"type": "string", "not": {"pattern": pattern}}):
        with pytest.raises(OutputError, match="could not be checked against the pattern"):
            parse_and_validate(json.dumps(text), schema)


def test_backtracking_patterns_are_decided_quickly_both_ways() -> None:
    """Patterns Python's `re` backtracks on for ever, against the reply that froze the server."""
    text = "a" * 40 + "!"
    assert compile_pattern("(a|a?)+$").search(text)  # an empty match at the end
    assert not compile_pattern("^(a+)+$").search(text)
    assert not compile_pattern("^(([a-z])+.)+[A-Z]([a-z])+$").search(text)
    assert compile_pattern("(.*a){12}!").search(text)


def test_a_lone_surrogate_is_not_a_pattern() -> None:
    with pytest.raises(PatternError):
        compile_pattern("\ud800")


# --- formats, as the official suite defines them ----------------------------------------------------

@pytest.mark.parametrize(("fmt", "value", "valid"), [
    ("date-time", "1963-06-19T08:30:06.283185Z\n", False),  # a trailing newline (jsonschema took it)
    ("date-time", "1963-06-19T08:30:06Z", True),
    ("duration", "P1", False),
    ("duration", "P4Y", True),
    ("uuid", "2eb8aa08-aa98-11ea-b4aa-73b441d1638", False),
    ("email", "te..st@example.com", False),
    ("hostname", "-a-host-name-that-starts-with--", False),
    ("time", "08:30:06Z", True),
    ("time", "08:30:06", False),  # RFC 3339 needs the offset
    ("ipv4", "087.10.0.1", False),  # leading zeroes
    ("int32", "anything", True),  # not a JSON Schema format: an annotation
])
def test_formats_are_asserted_as_the_suite_defines_them(fmt: str, value: str, valid: bool) -> None:
    assert accepts({"type": "string", "format": fmt}, value) is valid


def test_formats_follow_the_schemas_own_draft() -> None:
    # `duration` and `uuid` are 2019-09 formats; in draft 7 they are annotations
    assert accepts({"$schema": DRAFT7, "type": "string", "format": "duration"}, "P1")
    assert not accepts({"type": "string", "format": "duration"}, "P1")


# --- shapes `referencing` cannot crawl, and boolean schemas ------------------------------------------

def test_a_name_list_dependency_beside_a_schema_one_is_checked() -> None:
    """SchemaStore's tmlanguage.json: a schema value, then a list value, crashed the gate and the validator."""
    schema = {"$schema": DRAFT7, "dependencies": {"a": {}, "b": ["c"]},
              "properties": {"x": {"$ref": "#word"}}, "definitions": {"w": {"$id": "#word", "type": "string"}}}
    parse_schema_argument(schema)
    assert accepts(schema, {"b": 1, "c": 2, "x": "ok"})
    assert not accepts(schema, {"b": 1})
    assert not accepts(schema, {"x": 3})


def test_draft_03_extends_with_one_schema_is_checked() -> None:
    schema = {"$schema": DRAFT3, "extends": {"type": "object", "properties": {"n": {"type": "integer"}}}}
    parse_schema_argument(schema)
    assert accepts(schema, {"n": 1}) and not accepts(schema, {"n": "one"})


def test_a_dialect_named_inside_a_subschema_does_not_crash_the_gate() -> None:
    """SchemaStore's config.json nests 229 draft-04 `$schema`s in a draft-07 schema, with `true` subschemas."""
    schema = {"$schema": DRAFT7, "type": "object",
              "properties": {"spec": {"$schema": DRAFT4, "type": "object", "properties": {"on": True}}}}
    parse_schema_argument(schema)
    assert accepts(schema, {"spec": {"on": 1}})


def test_the_true_schema_takes_any_value_and_false_is_refused() -> None:
    assert parse_schema_argument(True)[0] is True  # type: ignore[arg-type]
    assert accepts(True, [1, {"a": None}])
    with pytest.raises(SchemaError, match="no value satisfies"):
        parse_schema_argument(False)  # type: ignore[arg-type]
