"""The model's reply: the JSON value in it, read strictly, validated against the caller's schema.

A reply is read strictly: the JSON standard has no NaN or Infinity, a number too large for a
double is refused rather than turned into infinity, integers are bounded in length, and nesting
is bounded in depth (so `data` always serializes). Every way a reply can fail is an
`OutputError`, which the router re-asks. Work over a kilobyte runs off the event loop.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

from mcp_llm.errors import NotJSONError, OutputError
from mcp_llm.schema.canonical import canonical as _canonical
from mcp_llm.schema.canonical import clip as _clip
from mcp_llm.schema.gate import json_depth
from mcp_llm.schema.limits import DEFAULT_REPLY_LIMITS, OFF_LOOP_CHARS, ReplyLimits
from mcp_llm.schema.regex import PatternUndecided
from mcp_llm.schema.validation import ValidationTimeout, compiled_validator, errors_within
from mcp_llm.words import words

MAX_INTEGER_DIGITS = 64
MAX_FENCED_BLOCKS = 8
MAX_LABEL_CHARS = 20  # a longer first line in a fence is content, not a language label
MAX_PROSE_STARTS = 16
_BRACKET = re.compile(r"[\[{]")


class _Refused(ValueError):
    """A JSON value our reader will not accept (NaN, an overflowing number, a huge integer)."""


def _no_constant(name: str) -> Any:
    raise _Refused(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"the number {text[:24]} is too large for a double")
    return value


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INTEGER_DIGITS:  # the sign is not a digit
        raise _Refused(f"an integer of {len(text.lstrip('-')):,} digits (at most {MAX_INTEGER_DIGITS})")
    return int(text)


_DECODER = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite_float, parse_int=_bounded_int)


@dataclass
class _Candidate:
    value: Any = None
    problem: str | None = None  # why this piece of the reply could not be used


def _candidates(text: str, limits: ReplyLimits) -> Iterator[_Candidate]:
    """The JSON values in a reply, best first: the whole text, fenced blocks, then values in prose.

    Linear in the reply's length: fences are found with `str.find` (a regex over "```" plus
    40,000 spaces backtracked for 15 s), and at most MAX_PROSE_STARTS starting points are tried.
    """
    stripped = text.strip()
    whole = _decode(stripped, limits)
    yield whole
    if whole.problem is None:
        return
    for block in _fenced_blocks(stripped):
        yield _decode(block.strip(), limits)
    covered_until, tried = 0, 0
    for match in _BRACKET.finditer(stripped):
        if match.start() < covered_until:
            continue  # inside a value already found: only top-level values count (and cost no try)
        if tried == MAX_PROSE_STARTS:
            break
        tried += 1
        try:
            value, end = _DECODER.raw_decode(stripped, match.start())
        except (ValueError, RecursionError) as exc:
            if isinstance(exc, _Refused | RecursionError):
                yield _Candidate(problem=_problem(exc, limits))
            continue
        covered_until = end
        yield _checked(value, limits)


def _fenced_blocks(text: str) -> Iterator[str]:
    """The bodies of the first MAX_FENCED_BLOCKS fenced blocks, without their label (```json)."""
    start = text.find("```")
    for _ in range(MAX_FENCED_BLOCKS):
        if start < 0:
            return
        body = start + 3
        label, newline, _ = text[body : body + MAX_LABEL_CHARS + 1].partition("\n")
        if newline and label.strip().isalnum():
            body += len(label)  # its newline is left to the body, whose whitespace is stripped
        try:
            end = text.index("```", body)
        except ValueError:
            return  # never closed
        yield text[body:end]
        start = text.find("```", end + 3)


def _decode(candidate: str, limits: ReplyLimits) -> _Candidate:
    try:
        value, end = _DECODER.raw_decode(candidate)
    except (ValueError, RecursionError) as exc:
        return _Candidate(problem=_problem(exc, limits) if isinstance(exc, _Refused | RecursionError) else "")
    if candidate[end:].strip():
        return _Candidate(problem="")
    return _checked(value, limits)


def _checked(value: Any, limits: ReplyLimits) -> _Candidate:
    if json_depth(value, limits.max_depth + 1) > limits.max_depth:
        return _Candidate(problem=f"the JSON is nested more than {limits.max_depth} levels deep")
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return _Candidate(problem="a string holds a lone UTF-16 surrogate escape such as \\ud800")
    return _Candidate(value)


def _problem(exc: BaseException, limits: ReplyLimits) -> str:
    if isinstance(exc, RecursionError):
        return f"the JSON is nested more than {limits.max_depth} levels deep"
    return str(exc)


def _check_size(text: str, limits: ReplyLimits) -> None:
    if not text.strip():
        raise NotJSONError("The model returned an empty answer.", errors=["the answer is empty"], reply="")
    if len(text) > limits.max_bytes:
        raise OutputError(
            f"The model's answer is {len(text):,} characters, over the {limits.max_bytes:,} limit.",
            errors=[f"the answer is too long: answer with at most {limits.max_bytes:,} characters of JSON"],
            reply=text,
        )


def _not_json(text: str, problems: list[str]) -> OutputError:
    if problems:
        return OutputError("The model's JSON cannot be used: " + problems[0] + ".",
                           errors=[f"at $: {p}" for p in problems[:3]], reply=text)
    return NotJSONError(
        f"The model's answer is not JSON (prose, or JSON cut off by {words().max_tokens}).",
        errors=["the answer holds no JSON value: answer with JSON only, no prose"],
        reply=text,
    )


def validation_errors(instance: Any, schema: dict[str, Any], timeout_s: float = ReplyLimits.timeout_s) -> list[str]:
    """Every way `instance` breaks `schema` (at most a few), as lines naming the JSON path; [] if valid.

    Never raises anything but OutputError: a value that cannot be checked in time, or that is
    too deep to walk, or that trips the validator in any other way is not accepted.
    """
    validator = compiled_validator(_canonical(schema))
    try:
        return errors_within(validator, instance, timeout_s)
    except PatternUndecided as exc:
        shown = json.dumps(_clip(exc.pattern, 80), ensure_ascii=False)  # as written: "…", not "\u2026"
        raise OutputError(
            f"The model's JSON could not be checked against the pattern {shown}: "
            "the regex engine gave up on it within its backtracking bound.",
            errors=[f"at $: a value is too complex to check against the pattern {shown}: "
                    "answer with a shorter, simpler value"]) from None
    except ValidationTimeout:
        raise OutputError(f"The model's JSON could not be checked within {timeout_s:g} s.",
                          errors=["at $: the answer is too large or too complex to check: answer briefly"]) from None
    except RecursionError:
        raise OutputError("The model's JSON is too deeply nested to check.",
                          errors=["at $: the answer is nested too deeply"]) from None
    except Exception as exc:  # a validator bug or an arithmetic edge: never let the value through
        raise OutputError(f"The model's JSON could not be checked ({type(exc).__name__}).",
                          errors=[f"at $: the answer could not be checked: {_clip(str(exc))}"]) from None
    except BaseException as exc:
        if type(exc).__name__ == "PanicException":  # pyo3 (rpds, under `referencing`) at the recursion limit
            raise OutputError("The model's JSON is too deeply nested to check.",
                              errors=["at $: the answer is nested too deeply"]) from None
        raise


def parse_and_validate(
    text: str, schema: dict[str, Any], *, unwrap: str | None = None, limits: ReplyLimits = DEFAULT_REPLY_LIMITS
) -> Any:
    """The first JSON value in the reply that validates against `schema`; else OutputError saying why.

    `unwrap` names the key a non-object root was wrapped in for the provider (schema_dialects).
    Prose may hold several JSON values ("See [1]. Answer: {…}"): the first valid one wins, and when
    none is valid the errors are those of the first.
    """
    _check_size(text, limits)
    first_error: OutputError | None = None
    problems: list[str] = []
    for candidate in _candidates(text, limits):
        if candidate.problem is not None:
            if candidate.problem:
                problems.append(candidate.problem)
            continue
        value = candidate.value
        if unwrap is not None:
            if not isinstance(value, dict) or unwrap not in value:
                first_error = first_error or OutputError("The model's JSON lacks the wrapper key.",
                                                         errors=[f"at $: '{unwrap}' is missing"], reply=text)
                continue
            value = value[unwrap]
        try:
            errors = validation_errors(value, schema, limits.timeout_s)
        except OutputError as exc:
            exc.reply = text
            raise
        if not errors:
            return value
        first_error = first_error or OutputError("The model's JSON does not match the schema.", errors=errors,
                                                 reply=text)
    if first_error is not None:
        raise first_error
    raise _not_json(text, problems)


async def parse_and_validate_off_loop(
    text: str, schema: dict[str, Any], *, unwrap: str | None = None, limits: ReplyLimits = DEFAULT_REPLY_LIMITS
) -> Any:
    """`parse_and_validate`, in a worker thread for any reply over a kilobyte, so the server stays responsive."""
    if len(text) <= OFF_LOOP_CHARS:
        return parse_and_validate(text, schema, unwrap=unwrap, limits=limits)
    import anyio

    return await anyio.to_thread.run_sync(
        partial(parse_and_validate, text, schema, unwrap=unwrap, limits=limits), abandon_on_cancel=True
    )
