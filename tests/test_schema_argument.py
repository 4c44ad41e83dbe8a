"""The caller's schema argument (mcp_llm/schema/argument.py): text bounded before it is parsed, what is
refused and what it says, the cache of schemas that passed, and where the check runs."""

from __future__ import annotations

import json
import time
from typing import Any

import anyio
import pytest

from mcp_llm.errors import SchemaError
from mcp_llm.schema import argument as schema_argument
from mcp_llm.schema import canonical as schema_canonical
from mcp_llm.schema import check_schema, parse_schema_argument
from mcp_llm.schema import limits as schema_limits
from mcp_llm.schema.gate import SchemaLimits
from tests.on_loop import OnTheLoop, schema_of

pytestmark = pytest.mark.anyio

# --- what is refused, and what it says ------------------------------------------------------------


def test_a_schema_that_is_not_json_says_where() -> None:
    with pytest.raises(SchemaError) as info:
        parse_schema_argument('{"type": ')
    assert "The schema is not valid JSON: Expecting value at line 1 column 9." in info.value.user_message()


def test_a_schema_given_as_text_is_bounded_before_it_is_parsed() -> None:
    limits = SchemaLimits(max_bytes=300)
    padded = '{"type": "object"' + " " * 300
    at_limit = padded[: 300 - 1] + "}"
    assert parse_schema_argument(at_limit, limits) == ({"type": "object"}, None)
    with pytest.raises(SchemaError) as info:
        parse_schema_argument(at_limit[:-1] + " }", limits)
    assert info.value.message == "The schema is 301 bytes, over the 300-byte limit."
    assert info.value.hint == "Send a smaller schema, or raise limits.schema_max_bytes."


def test_a_schema_text_too_deep_to_parse_is_refused_as_too_deep() -> None:
    with pytest.raises(SchemaError) as info:
        parse_schema_argument('{"items": ' * 3_000 + "{}" + "}" * 3_000)
    assert info.value.message == "The schema is nested more than 64 levels deep."


def test_a_schema_holding_what_json_cannot_express_is_refused() -> None:
    # Through the Python API (`mcp-llm` as a library): NaN, or a Python object JSON has no form for.
    for value in (float("nan"), float("inf"), {1, 2}):
        with pytest.raises(SchemaError) as info:
            check_schema({"type": "number", "const": value})
        assert info.value.message.startswith("The schema holds a value JSON cannot express: ")
        assert info.value.hint is not None and "finite numbers" in info.value.hint


def test_a_schema_too_deep_to_serialize_is_refused_as_too_deep() -> None:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(5_000):
        schema = {"type": "array", "items": schema}
    with pytest.raises(SchemaError) as info:
        check_schema(schema)
    assert info.value.message == "The schema is nested more than 64 levels deep."


def test_a_schema_within_raised_limits_but_too_deep_to_check_is_refused_clearly() -> None:
    # `limits.schema_max_depth` goes up to 256; the meta-schema check recurses further than Python
    # allows before that: a clear refusal, never a RecursionError.
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(200):
        schema = {"type": "array", "items": schema}
    with pytest.raises(SchemaError) as info:
        check_schema(schema, SchemaLimits(max_depth=256))
    assert info.value.message == "The schema is too deeply nested to check."
    assert info.value.hint == "Flatten it with $defs and $ref."


@pytest.mark.parametrize(("length", "clipped"), [(300, False), (301, True)])
def test_a_meta_schema_error_is_clipped_at_300_characters(length: int, clipped: bool) -> None:
    problem = "' is not valid under any of the given schemas"
    name = "x" * (length - len(problem) - 1)  # the problem reads 'xxx…' is not valid…
    with pytest.raises(SchemaError) as info:
        check_schema({"type": name})
    shown = info.value.message.removeprefix("The schema is not a valid JSON Schema: ").removesuffix(" (at $.type).")
    full = f"'{name}{problem}"
    assert len(full) == length
    assert shown == (full[:299] + "…" if clipped else full)


# --- a schema that passed is not checked again: the cache -----------------------------------------


def test_schemas_equal_but_for_key_order_are_checked_once() -> None:
    schema_argument._CHECKED.clear()
    check_schema({"type": "object", "title": "order", "properties": {"a": {"type": "string"}}})
    check_schema({"properties": {"a": {"type": "string"}}, "title": "order", "type": "object"})
    assert len(schema_argument._CHECKED) == 1


def test_a_schema_that_passed_is_checked_again_under_other_limits() -> None:
    schema = {"$defs": {"a": {"type": "string"}}, "properties": {"x": {"$ref": "#/$defs/a"}}, "title": "limits-key"}
    check_schema(schema)  # passes, and is remembered as passing under the default limits
    with pytest.raises(SchemaError, match="more than 0 references"):
        check_schema(schema, SchemaLimits(max_refs=0))
    deep = {"properties": {"x": {"properties": {"y": {"type": "string"}}}}, "title": "depth-key"}
    check_schema(deep)
    with pytest.raises(SchemaError, match="nested more than 4 levels"):
        check_schema(deep, SchemaLimits(max_depth=4))


def test_the_checked_schema_cache_keeps_the_most_recently_used() -> None:
    # A bounded memory of schemas that passed (a stream of distinct schemas cannot grow it), least
    # recently used out first: a schema used on every call stays remembered.
    schema_argument._CHECKED.clear()
    kept = schema_argument.CHECKED_SCHEMAS_KEPT
    favourite = {"type": "object", "title": "favourite"}
    check_schema(favourite)
    for i in range(kept + 50):
        check_schema({"type": "object", "title": f"schema {i}"})
        check_schema(favourite)  # in use all along
    titles = [json.loads(canonical)["title"] for canonical, _ in schema_argument._CHECKED]
    assert kept == 256 and len(titles) == kept
    assert titles[-1] == "favourite", "the schema used last is not the most recent"
    assert titles[:-1] == [f"schema {i}" for i in range(51, kept + 50)]


# --- where the work runs: on the event loop only when it is small ---------------------------------


def _schema_text_of(length: int) -> str:
    return '{"type": "object"' + " " * (length - len('{"type": "object"}')) + "}"


async def test_small_schemas_are_checked_on_the_loop_and_larger_ones_in_a_worker() -> None:
    check_schema({"type": "object"})  # jsonschema is loaded: only size decides now
    limit = schema_limits.OFF_LOOP_CHARS
    assert limit == 1_024
    for length, on_loop in ((limit, True), (limit + 1, False)):
        text = _schema_text_of(length)
        assert len(text) == length
        with OnTheLoop(schema_argument.parse_schema_argument) as seen:
            assert await schema_argument.parse_schema_argument_off_loop(text) == ({"type": "object"}, None)
        assert (seen.called == ["parse_schema_argument"]) is on_loop, (length, seen.called)

        schema = schema_of(length, f"dict-{length}")
        assert len(schema_canonical.canonical(schema)) == length
        with OnTheLoop(schema_argument.check_schema, schema_argument.parse_schema_argument) as seen:
            assert await schema_argument.parse_schema_argument_off_loop(schema) == (schema, None)
        assert (seen.called == ["check_schema"]) is on_loop, (length, seen.called)
        with OnTheLoop(schema_argument.check_schema) as seen:  # checked before: a cache hit, on the loop
            await schema_argument.parse_schema_argument_off_loop(schema)
        assert seen.called == ["check_schema"], (length, seen.called)


async def test_a_cancelled_call_does_not_wait_for_the_check_of_a_large_schema() -> None:
    limits = SchemaLimits(max_bytes=10_000_000)

    def large(tag: str) -> dict[str, Any]:  # distinct each time: a schema checked before is not checked again
        properties = {f"p{i}": {"type": "string", "pattern": "^a+$", "description": tag} for i in range(5_000)}
        return {"type": "object", "properties": properties}

    started = time.perf_counter()
    await schema_argument.parse_schema_argument_off_loop(large("whole"), limits)
    whole = time.perf_counter() - started
    started = time.perf_counter()
    with anyio.move_on_after(whole / 10):  # the check is under way in its worker by then
        await schema_argument.parse_schema_argument_off_loop(large("cancelled"), limits)
    cancelled = time.perf_counter() - started
    assert cancelled < whole / 3, f"the cancelled call waited {cancelled:.2f} s of the check's {whole:.2f} s"
