"""Reading a reply (mcp_llm/schema/reply.py): fenced blocks, prose, bounds and messages, exactly;
validating it against the caller's schema within its time limit; and where that work runs."""

from __future__ import annotations

import json
import signal
import time

import anyio
import pytest

from mcp_llm.errors import NotJSONError, OutputError
from mcp_llm.schema import ReplyLimits, parse_and_validate, validation_errors
from mcp_llm.schema import limits as schema_limits
from mcp_llm.schema import reply as schema_reply
from tests.on_loop import OnTheLoop

pytestmark = pytest.mark.anyio

CITY = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
STRING = {"type": "string"}  # a string answer can only come from the whole text or a fence, never from prose


# --- where the value is found: the first valid one, fences, prose ---------------------------------


def test_the_first_valid_value_wins_even_right_after_another() -> None:
    assert parse_and_validate('{"note": 1}{"city": "Lyon"}', CITY) == {"city": "Lyon"}
    assert parse_and_validate('See [1]. {"city": "Lyon"}', CITY) == {"city": "Lyon"}


def test_every_fenced_block_is_tried_in_turn() -> None:
    reply = 'First try:\n```\nnot json\n```\nThen:\n```json\n"Lyon"\n```\n'
    assert parse_and_validate(reply, {"type": "string"}) == "Lyon"


def test_only_top_level_values_in_prose_count() -> None:
    # The value inside the first one is part of it, not an answer of its own.
    with pytest.raises(OutputError, match="does not match the schema"):
        parse_and_validate('Result: {"wrapper": {"city": "Lyon"}} done.', CITY)


def test_up_to_eight_fenced_blocks_are_tried() -> None:
    misses = "".join(f"Try {i}:\n```\nnot json {i}\n```\n" for i in range(7))
    assert parse_and_validate(misses + '```json\n"Lyon"\n```', {"type": "string"}) == "Lyon"
    with pytest.raises(OutputError):
        parse_and_validate(misses + '```\nnope\n```\n```json\n"Lyon"\n```', {"type": "string"})


def test_up_to_sixteen_starting_points_in_prose_are_tried() -> None:
    misses = "".join(f"[not json {i}, " for i in range(15))  # each `[` starts a try that fails
    assert parse_and_validate(f'{misses} answer: {{"city": "Lyon"}}', CITY) == {"city": "Lyon"}
    with pytest.raises(OutputError, match="not JSON"):
        parse_and_validate(f'{misses} [nope, answer: {{"city": "Lyon"}}', CITY)


def test_brackets_inside_a_value_found_cost_no_try() -> None:
    # An example with many inner brackets, then the answer: the inner ones are part of the example,
    # not starting points of their own, so they do not use up the tries before the answer is reached.
    example = json.dumps({"cities": [{"name": f"c{i}", "tags": []} for i in range(20)]})
    assert parse_and_validate(f'For example {example}; my answer: {{"city": "Lyon"}}', CITY) == {"city": "Lyon"}


def test_a_value_at_the_very_start_followed_by_prose_is_found() -> None:
    assert parse_and_validate('{"city": "Lyon"} is my answer.', CITY) == {"city": "Lyon"}
    assert parse_and_validate('["Lyon"] (a list, as asked)', {"type": "array"}) == ["Lyon"]


@pytest.mark.parametrize(("reply", "expected"), [
    ('```json\n"Lyon"\n```', "Lyon"),  # a fence at the very start
    ('```"Lyon"```', "Lyon"),  # on one line, no label
    ('```abcdefghijabcdefghij\n"Lyon"\n```', "Lyon"),  # a label of 20 characters is a label
    ('```x``````"Lyon"```', "Lyon"),  # a fence right after another
], ids=["at-start", "one-line", "20-char-label", "adjacent"])
def test_fenced_blocks_are_read_wherever_they_are(reply: str, expected: str) -> None:
    assert parse_and_validate(reply, STRING) == expected


def test_a_first_line_over_20_characters_is_content_not_a_label() -> None:
    with pytest.raises(OutputError, match="not JSON"):
        parse_and_validate('```abcdefghijabcdefghijk\n"Lyon"\n```', STRING)


def test_a_wrapped_answer_without_its_wrapper_key_is_re_asked_for_it() -> None:
    schema = {"type": "array", "items": {"type": "string"}}
    assert parse_and_validate('{"value": ["a"]}', schema, unwrap="value") == ["a"]
    for reply in ('{"other": ["a"]}', '["a"]'):
        with pytest.raises(OutputError) as info:
            parse_and_validate(reply, schema, unwrap="value")
        assert info.value.message == "The model's JSON lacks the wrapper key."
        assert info.value.errors == ["at $: 'value' is missing"]


# --- the bounds, and what is said, exactly --------------------------------------------------------


def test_integers_are_bounded_at_64_digits_sign_apart() -> None:
    schema = {"type": "integer"}
    assert parse_and_validate("9" * 64, schema) == int("9" * 64)
    assert parse_and_validate("-" + "9" * 64, schema) == -int("9" * 64)
    for too_long in ("9" * 65, "-" + "9" * 65):
        with pytest.raises(OutputError, match="an integer of 65 digits"):
            parse_and_validate(too_long, schema)


def test_a_number_too_large_for_a_double_is_refused_and_named() -> None:
    for reply, shown in (("1e999", "1e999"), ("-" + "9" * 400 + ".5", "-" + "9" * 23)):
        with pytest.raises(OutputError) as info:
            parse_and_validate(reply, {"type": "number"})
        assert info.value.message == f"The model's JSON cannot be used: the number {shown} is too large for a double."


def test_a_refused_value_in_prose_is_named_in_the_error() -> None:
    # Not "no JSON": the value was there, and why it cannot be used is what the model is told.
    for reply, problem in (('The answer: {"n": 1e999} ok', "the number 1e999 is too large for a double"),
                           ('Here: [NaN] done', "NaN is not a JSON number")):
        with pytest.raises(OutputError) as info:
            parse_and_validate(reply, {"type": "object"})
        assert info.value.message == f"The model's JSON cannot be used: {problem}."
        assert info.value.errors == [f"at $: {problem}"]


def test_an_empty_answer_is_said_to_be_empty() -> None:
    for reply in ("", "  \n\t "):
        with pytest.raises(NotJSONError) as info:
            parse_and_validate(reply, STRING)
        assert info.value.message == "The model returned an empty answer."
        assert info.value.errors == ["the answer is empty"]


def test_an_answer_is_bounded_in_length_exactly() -> None:
    limits = ReplyLimits(max_bytes=1_024)
    at_limit = json.dumps("x" * 1_022)
    assert parse_and_validate(at_limit, STRING, limits=limits) == "x" * 1_022
    with pytest.raises(OutputError) as info:
        parse_and_validate(at_limit + " ", STRING, limits=limits)
    assert info.value.message == "The model's answer is 1,025 characters, over the 1,024 limit."
    assert info.value.errors == ["the answer is too long: answer with at most 1,024 characters of JSON"]


def test_an_answer_is_bounded_in_depth_exactly() -> None:
    limits = ReplyLimits(max_depth=5)
    at_limit = [[[[["deep"]]]]]
    assert parse_and_validate(json.dumps(at_limit), {"type": "array"}, limits=limits) == at_limit
    with pytest.raises(OutputError) as info:
        parse_and_validate(json.dumps([at_limit]), {"type": "array"}, limits=limits)
    assert info.value.message == "The model's JSON cannot be used: the JSON is nested more than 5 levels deep."


def test_an_answer_too_deep_to_decode_says_so() -> None:
    with pytest.raises(OutputError) as info:
        parse_and_validate("[" * 100_000, {"type": "array"})
    assert info.value.message == "The model's JSON cannot be used: the JSON is nested more than 64 levels deep."


def test_at_most_three_problems_are_listed() -> None:
    reply = "Values: [NaN] [Infinity] [-Infinity] [1e999] [NaN]"
    with pytest.raises(OutputError) as info:
        parse_and_validate(reply, {"type": "array"})
    assert info.value.errors == ["at $: NaN is not a JSON number", "at $: Infinity is not a JSON number",
                                 "at $: -Infinity is not a JSON number"]


# --- validation: bounded in time and depth, never fooled ------------------------------------------


def test_a_pattern_the_engine_gives_up_on_is_named_as_written_and_clipped_at_80_characters() -> None:
    """A pattern of 80 characters is shown whole; a longer one as its first 79 and "…"; its own
    characters as they are (not JSON escapes such as \\u00e9), in the message and in the re-ask."""
    text = json.dumps("xyzabcd" * 10_000)  # long enough for the backreference to exceed the backtracking bound
    for pattern, shown in (("(.)\\1|" + "é" * 74, '"(.)\\\\1|' + "é" * 74 + '"'),
                           ("(.)\\1|" + "é" * 75, '"(.)\\\\1|' + "é" * 73 + '…"')):
        with pytest.raises(OutputError) as info:
            parse_and_validate(text, {"type": "string", "pattern": pattern})
        assert info.value.message == (f"The model's JSON could not be checked against the pattern {shown}: the regex "
                                      "engine gave up on it within its backtracking bound.")
        assert info.value.errors == [f"at $: a value is too complex to check against the pattern {shown}: answer "
                                     "with a shorter, simpler value"]


def test_a_reply_too_slow_to_check_is_refused_not_let_through() -> None:
    schema = {"type": "array", "items": {"type": "object", "properties": {"a": {"type": "string", "pattern": "^x+$"}}}}
    reply = json.dumps([{"a": "x" * 20} for _ in range(10_000)])
    with pytest.raises(OutputError) as info:
        parse_and_validate(reply, schema, limits=ReplyLimits(timeout_s=0.001))
    assert info.value.message == "The model's JSON could not be checked within 0.001 s."
    assert info.value.errors == ["at $: the answer is too large or too complex to check: answer briefly"]
    assert info.value.reply == reply, "the final error could not show how the answer began"


def test_an_answer_too_deep_for_the_validator_is_refused_not_crashed() -> None:
    # reply_max_depth goes up to 200; a recursive schema makes the validator recurse further than
    # Python allows before that: the answer is refused (and re-asked), never an internal error.
    node = {"anyOf": [{"type": "string"}, {"allOf": [{"type": "array", "items": {"$ref": "#/$defs/node"}}]}]}
    schema = {"$defs": {"node": node}, "$ref": "#/$defs/node"}
    reply = "[" * 190 + "]" * 190
    with pytest.raises(OutputError) as info:
        parse_and_validate(reply, schema, limits=ReplyLimits(max_depth=200))
    assert info.value.message == "The model's JSON is too deeply nested to check."
    assert info.value.errors == ["at $: the answer is nested too deeply"]
    assert info.value.reply == reply


def test_an_interrupt_during_validation_is_never_taken_for_a_valid_answer() -> None:
    # Ctrl-C (or any BaseException but a pyo3 panic) while an answer is checked passes through:
    # swallowed, the unchecked answer would come back as valid.
    schema = {"type": "array", "items": {"type": "object", "properties": {"a": {"type": "string", "pattern": "^x+$"}}}}
    value = [{"a": "x" * 20} for _ in range(200_000)]  # about 2 s to check, 50 ms to decode
    validation_errors(value[:10], schema)  # the validator is built before the clock starts

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 0.3)
    try:
        with pytest.raises(KeyboardInterrupt):
            validation_errors(value, schema, timeout_s=60)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# --- where the work runs: on the event loop only when it is small ---------------------------------


async def test_small_replies_are_read_on_the_loop_and_larger_ones_in_a_worker() -> None:
    limit = schema_limits.OFF_LOOP_CHARS
    for length, on_loop in ((limit, True), (limit + 1, False)):
        reply = json.dumps("x" * (length - 2))
        assert len(reply) == length
        with OnTheLoop(schema_reply.parse_and_validate) as seen:
            assert await schema_reply.parse_and_validate_off_loop(reply, STRING) == "x" * (length - 2)
        assert (seen.called == ["parse_and_validate"]) is on_loop, (length, seen.called)


async def test_a_cancelled_call_does_not_wait_for_the_check_of_a_large_reply() -> None:
    # The worker thread cannot be stopped, but the call it belongs to returns at once (it is abandoned).
    schema = {"type": "array", "items": {"type": "object", "properties": {"a": {"type": "string", "pattern": "^x+$"}}}}
    reply = json.dumps([{"a": "x" * 20} for _ in range(100_000)])
    limits = ReplyLimits(max_bytes=len(reply), timeout_s=60)
    started = time.perf_counter()
    await schema_reply.parse_and_validate_off_loop(reply, schema, limits=limits)
    whole = time.perf_counter() - started
    started = time.perf_counter()
    with anyio.move_on_after(whole / 10):  # the check is under way in its worker by then
        await schema_reply.parse_and_validate_off_loop(reply, schema, limits=limits)
    cancelled = time.perf_counter() - started
    # returned long before the check could end (a margin for a loaded machine: the worker holds the GIL,
    # so the loop itself runs slower while it checks)
    assert cancelled < whole / 2, f"the cancelled call waited {cancelled:.2f} s of the check's {whole:.2f} s"
