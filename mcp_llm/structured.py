"""JSON Schema in, schema-valid JSON out: checking, per-provider compilation, extraction, validation.

The caller's schema passes the gate (`schema_gate.py`: limits, meta-schema, references, cycles)
before any model is called. What each provider is sent may differ from it (`compile_for`), and
every such change is reported as a rewrite; but the reply is always validated against the
caller's original schema, within a time limit (`validation.py`).

A reply is read strictly: the JSON standard has no NaN or Infinity, a number too large for a
double is refused rather than turned into infinity, integers are bounded in length, and nesting
is bounded in depth (so `data` always serializes). Every way a reply can fail is an
`OutputError`, which the router re-asks. Work over a few kilobytes runs off the event loop.
`jsonschema` is imported on first use: it costs ~0.1 s, which start-up does not pay.
"""

from __future__ import annotations

import json
import math
import re
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import TYPE_CHECKING, Any

from mcp_llm.errors import NotJSONError, OutputError, SchemaError
from mcp_llm.schema_dialects import CompiledSchema, compile_anthropic, compile_gemini, compile_openai
from mcp_llm.schema_gate import (
    SchemaLimits,
    check_depth,
    check_limits,
    check_references,
    count_references,
    json_depth,
    too_deep,
)
from mcp_llm.validation import ValidationTimeout, compiled_validator, dialect_class, errors_within, json_path

if TYPE_CHECKING:
    from mcp_llm.config import LimitSettings

MAX_INTEGER_DIGITS = 64
MAX_FENCED_BLOCKS = 8
MAX_LABEL_CHARS = 20  # a longer first line in a fence is content, not a language label
MAX_PROSE_STARTS = 16
OFF_LOOP_CHARS = 1_024  # replies (and schemas) larger than this are parsed and checked in a worker thread
_BRACKET = re.compile(r"[\[{]")


@dataclass(frozen=True)
class ReplyLimits:
    max_bytes: int = 1_000_000
    max_depth: int = 64
    timeout_s: float = 5.0


DEFAULT_SCHEMA_LIMITS = SchemaLimits()
DEFAULT_REPLY_LIMITS = ReplyLimits()


def limits_from(settings: LimitSettings) -> tuple[SchemaLimits, ReplyLimits]:
    """The `[limits]` config section, split into what the schema gate and the reply reader need."""
    return (
        SchemaLimits(settings.schema_max_bytes, settings.schema_max_depth, settings.schema_max_refs,
                     settings.schema_max_expansion),
        ReplyLimits(settings.reply_max_bytes, settings.reply_max_depth, settings.validation_timeout_s),
    )


# --- the caller's schema ------------------------------------------------------------------------


def parse_schema_argument(
    schema: dict[str, Any] | str, limits: SchemaLimits = DEFAULT_SCHEMA_LIMITS
) -> tuple[dict[str, Any], str | None]:
    """A schema object, its JSON text, or a preset name → (checked schema, preset name or None)."""
    from mcp_llm.presets import PRESETS

    name: str | None = None
    if isinstance(schema, str):
        text = schema.strip()
        if text in PRESETS:
            name, schema = text, PRESETS[text]
        elif text.startswith("{"):
            if len(text) > limits.max_bytes:
                raise SchemaError(f"The schema is {len(text):,} bytes, over the {limits.max_bytes:,}-byte limit.",
                                  hint="Send a smaller schema, or raise limits.schema_max_bytes.")
            try:
                schema = json.loads(text, parse_constant=_no_constant)
            except RecursionError:  # valid JSON, perhaps, but far deeper than any limit allows
                raise too_deep(limits) from None
            except ValueError as exc:  # JSONDecodeError, or NaN and its kin
                where = f" at line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
                raise SchemaError(
                    f"The schema is not valid JSON: {getattr(exc, 'msg', None) or exc}{where}.",
                    hint="Pass a JSON Schema object, or a preset name: " + ", ".join(PRESETS) + ".",
                ) from None
        else:
            raise SchemaError(
                f"Unknown schema preset {text!r}.",
                hint="Pass a JSON Schema object, or one of the presets: " + ", ".join(PRESETS) + ".",
            )
    check_schema(schema, limits)
    return schema, name


async def parse_schema_argument_off_loop(
    schema: dict[str, Any] | str, limits: SchemaLimits = DEFAULT_SCHEMA_LIMITS
) -> tuple[dict[str, Any], str | None]:
    """`parse_schema_argument`, in a worker thread unless the schema is small or already checked."""
    import sys

    import anyio

    if "jsonschema._format" not in sys.modules:  # the first check imports jsonschema (~0.3 s): not on the loop
        pass
    elif isinstance(schema, str) and len(schema) <= OFF_LOOP_CHARS:
        return parse_schema_argument(schema, limits)
    elif isinstance(schema, dict):
        try:
            canonical = _canonical(schema)
        except (TypeError, ValueError, RecursionError):
            canonical = None
        if canonical is not None and (len(canonical) <= OFF_LOOP_CHARS or (canonical, limits) in _CHECKED):
            check_schema(schema, limits, canonical=canonical)  # what parse_schema_argument does with a dict
            return schema, None
    return await anyio.to_thread.run_sync(partial(parse_schema_argument, schema, limits), abandon_on_cancel=True)


def check_schema(schema: Any, limits: SchemaLimits = DEFAULT_SCHEMA_LIMITS, *, canonical: str | None = None) -> None:
    """Refuse anything that is not a usable JSON Schema object, saying where it is wrong.

    A schema that passed before (the same canonical JSON, the same limits) is not walked again:
    the depth walk alone cost more than the serialization on a repeated 8 KB schema. `canonical`
    is the schema's `_canonical` form when the caller has it already.
    """
    if not isinstance(schema, dict):
        raise SchemaError(
            f"The schema must be a JSON object, not {type(schema).__name__}.",
            hint='For example {"type": "object", "properties": {"name": {"type": "string"}}}.',
        )
    try:
        canonical = _canonical(schema) if canonical is None else canonical
    except (TypeError, ValueError, RecursionError) as exc:
        check_depth(schema, limits)  # too deep to serialize: say so, as for any schema too deep
        raise SchemaError(f"The schema holds a value JSON cannot express: {exc}.",
                          hint="Use strings, finite numbers, booleans, null, arrays and objects only.") from None
    key = (canonical, limits)
    if key in _CHECKED:
        _CHECKED.move_to_end(key)
        return
    _check_canonical_schema(schema, canonical, limits)
    _CHECKED[key] = None
    if len(_CHECKED) > CHECKED_SCHEMAS_KEPT:
        _CHECKED.popitem(last=False)


CHECKED_SCHEMAS_KEPT = 256
_CHECKED: OrderedDict[tuple[str, SchemaLimits], None] = OrderedDict()  # schemas that passed, most recent last


def _check_canonical_schema(schema: dict[str, Any], canonical: str, limits: SchemaLimits) -> None:
    """The meta-schema check and the reference gate (most of a call's own overhead: done once per schema)."""
    from jsonschema.exceptions import SchemaError as MetaSchemaError
    from jsonschema.validators import validator_for

    check_limits(schema, limits, canonical)
    dialect = schema.get("$schema")
    if dialect is not None and (not isinstance(dialect, str) or validator_for(schema, default=None) is None):
        raise SchemaError(
            f"The schema's $schema {dialect!r} is not a JSON Schema dialect this server knows.",
            hint="Leave $schema out (draft 2020-12 is used), or name draft 2020-12, 2019-09, 7, 6, 4 or 3.",
        )
    count_references(schema, limits)
    cls = dialect_class(schema)
    try:
        cls.check_schema(schema)
    except MetaSchemaError as exc:
        where = json_path(exc.absolute_path)
        raise SchemaError(
            f"The schema is not a valid JSON Schema: {_clip(exc.message)} (at {where}).",
            hint="Fix that keyword; the schema is checked against the JSON Schema meta-schema "
            "(draft 2020-12 unless `$schema` names another).",
        ) from None
    except RecursionError:
        raise SchemaError("The schema is too deeply nested to check.",
                          hint="Flatten it with $defs and $ref.") from None
    dialect_id = cls.META_SCHEMA.get("$id") or cls.META_SCHEMA.get("id")
    check_references(schema, dialect_id, limits)


# --- per-provider compilation ------------------------------------------------------------------

Compiler = Callable[[dict[str, Any]], CompiledSchema]


def _as_is(schema: dict[str, Any]) -> CompiledSchema:
    return CompiledSchema(schema)


# Ollama takes the schema verbatim (its `format` turns it into a grammar); the cloud providers
# take their own subsets of JSON Schema (see schema_dialects.py).
COMPILERS: dict[str, Compiler] = {"ollama": _as_is, "gemini": compile_gemini, "anthropic": compile_anthropic,
                                   "openai": compile_openai}


def compile_for(provider: str, schema: dict[str, Any]) -> CompiledSchema:
    """What `provider` is sent for `schema`, with every change listed (compiled once per schema;
    callers must not change what they get)."""
    compiler = COMPILERS.get(provider, _as_is)
    if compiler is _as_is:
        return _as_is(schema)
    return _compiled(provider, _canonical(schema))


async def compile_for_off_loop(provider: str, schema: dict[str, Any]) -> CompiledSchema:
    """`compile_for`, in a worker thread the first time a schema over a kilobyte is compiled: an
    Anthropic compile follows each `allOf` branch's references, and a hostile 50 KB schema takes
    most of a second. Compiled before (or small), it is answered on the loop."""
    if COMPILERS.get(provider, _as_is) is _as_is:
        return _as_is(schema)
    key = (provider, _canonical(schema))
    if len(key[1]) <= OFF_LOOP_CHARS or key in _COMPILED_BEFORE:
        return _compiled(*key)
    import anyio

    compiled = await anyio.to_thread.run_sync(_compiled, *key, abandon_on_cancel=True)
    if len(_COMPILED_BEFORE) >= COMPILED_SCHEMAS_KEPT:  # the cache below evicts on its own: start over
        _COMPILED_BEFORE.clear()
    _COMPILED_BEFORE.add(key)
    return compiled


COMPILED_SCHEMAS_KEPT = 256
_COMPILED_BEFORE: set[tuple[str, str]] = set()  # large schemas `_compiled` has seen (it may have evicted some)


@lru_cache(maxsize=COMPILED_SCHEMAS_KEPT)
def _compiled(provider: str, canonical_schema: str) -> CompiledSchema:
    return COMPILERS[provider](json.loads(canonical_schema))


def schema_instruction(schema: dict[str, Any]) -> str:
    """Told to every model, native schema support or not: weak models follow `format` better with it."""
    return (
        "Answer with a single JSON value, and nothing else, that validates against this JSON Schema:\n"
        + json.dumps(schema, ensure_ascii=False, separators=(",", ":"))
    )


# --- the model's reply -------------------------------------------------------------------------


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
        "The model's answer is not JSON (prose, or JSON cut off by max_tokens).",
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


def repair_message(error: OutputError) -> str:
    """The follow-up a model gets after an invalid answer: what was wrong, and to answer again."""
    lines = "\n".join(f"- {line}" for line in error.errors) or f"- {error.message}"
    return (
        "Your previous answer was not valid:\n"
        f"{lines}\n"
        "Answer again with only the corrected JSON, which must validate against the schema."
    )


# --- helpers -----------------------------------------------------------------------------------


def _canonical(schema: dict[str, Any]) -> str:
    return json.dumps(schema, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _clip(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
