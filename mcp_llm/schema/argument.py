"""The caller's schema argument: a schema object, its JSON text, or a preset name, checked once.

The gate (`gate.py`: limits, meta-schema, references, cycles, patterns) runs before any model is
called; a schema that passed before is not walked again. Work on large schemas runs off the loop.
`jsonschema` is imported on first use: it costs ~0.1 s, which start-up does not pay.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from functools import partial
from typing import Any, cast

from mcp_llm.errors import SchemaError
from mcp_llm.schema.canonical import canonical as _canonical
from mcp_llm.schema.canonical import clip as _clip
from mcp_llm.schema.gate import check_depth, check_limits, check_references, count_references, too_deep
from mcp_llm.schema.limits import DEFAULT_SCHEMA_LIMITS, OFF_LOOP_CHARS, SchemaLimits
from mcp_llm.schema.reply import _no_constant
from mcp_llm.schema.validation import dialect_class, dialect_of, json_path


def parse_schema_argument(
    schema: dict[str, Any] | bool | str, limits: SchemaLimits = DEFAULT_SCHEMA_LIMITS
) -> tuple[dict[str, Any] | bool, str | None]:
    """A schema object (or `true`), its JSON text, or a preset name → (checked schema, preset name or None)."""
    from mcp_llm.presets import PRESETS

    name: str | None = None
    if isinstance(schema, str):
        text = schema.strip()
        if text in PRESETS:
            name, schema = text, PRESETS[text]
        elif text in ("true", "false"):
            schema = text == "true"
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
        elif text[:1] in '["0123456789-' or text == "null":
            raise SchemaError(
                f"The schema is JSON, but not a schema: {_clip(text, 60)!r} is a JSON "
                f"{'array' if text.startswith('[') else 'string' if text.startswith(chr(34)) else 'value'}.",
                hint='A schema is a JSON object, e.g. {"type": "object", "properties": {"name": {"type": "string"}}}, '
                "or `true` for any value.",
            )
        else:
            raise SchemaError(
                f"Unknown schema preset {_clip(text, 60)!r}.",
                hint="Pass a JSON Schema object, or one of the presets: " + ", ".join(PRESETS) + ".",
            )
    check_schema(schema, limits)
    return cast("dict[str, Any] | bool", schema), name  # every string was read above, or refused


async def parse_schema_argument_off_loop(
    schema: dict[str, Any] | bool | str, limits: SchemaLimits = DEFAULT_SCHEMA_LIMITS
) -> tuple[dict[str, Any] | bool, str | None]:
    """`parse_schema_argument`, in a worker thread unless the schema is small or already checked."""
    import sys

    import anyio

    if "jsonschema._format" not in sys.modules:  # the first check imports jsonschema (~0.3 s): not on the loop
        pass
    elif isinstance(schema, bool) or (isinstance(schema, str) and len(schema) <= OFF_LOOP_CHARS
                                      and "pattern" not in schema):
        return parse_schema_argument(schema, limits)
    elif isinstance(schema, dict):
        try:
            canonical = _canonical(schema)
        except (TypeError, ValueError, RecursionError):
            canonical = None
        if canonical is not None and ((canonical, limits) in _CHECKED or _cheap(canonical)):
            check_schema(schema, limits, canonical=canonical)  # what parse_schema_argument does with a dict
            return schema, None
    return await anyio.to_thread.run_sync(partial(parse_schema_argument, schema, limits), abandon_on_cancel=True)


def _cheap(canonical: str) -> bool:
    """Small, and without a pattern to compile (a pattern such as `a{1000}{1000}` compiles for 0.1 s)."""
    return len(canonical) <= OFF_LOOP_CHARS and "pattern" not in canonical


def check_schema(schema: Any, limits: SchemaLimits = DEFAULT_SCHEMA_LIMITS, *, canonical: str | None = None) -> None:
    """Refuse anything that is not a usable JSON Schema, saying where it is wrong.

    A schema that passed before (the same canonical JSON, the same limits) is not walked again:
    the depth walk alone cost more than the serialization on a repeated 8 KB schema. `canonical`
    is the schema's `_canonical` form when the caller has it already. The boolean schema `true`
    (any value) passes; `false` admits no value at all, so no answer could ever be valid.
    """
    if schema is True:
        return
    if schema is False:
        raise SchemaError("The schema is `false`, which no value satisfies: no answer could ever be valid.",
                          hint="Pass `true` or `{}` for any JSON value, or a schema describing the answer.")
    if not isinstance(schema, dict):
        raise SchemaError(
            f"The schema must be a JSON object, not {type(schema).__name__} (or `true`, for any value).",
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
    dialect = dialect_of(cls)
    error = _meta_schema_error(cls, dialect, schema)
    if error is not None:
        raise error
    dialect_id = cls.META_SCHEMA.get("$id") or cls.META_SCHEMA.get("id")
    check_references(schema, dialect_id, limits)


PATTERN_HINT = ("Write it as a JavaScript (ECMA-262) regular expression, e.g. `^[a-z]+$` or `^\\p{L}+$`.")


def _meta_schema_error(cls: Any, dialect: str, schema: dict[str, Any]) -> SchemaError | None:
    """The first way `schema` breaks its dialect's meta-schema, as jsonschema's `check_schema` finds it,
    but with `format: regex` meaning a pattern the ECMA-262 engine runs (which takes `\\p{L}`)."""
    from jsonschema.validators import validator_for

    from mcp_llm.schema.formats import format_checker

    checker = format_checker(dialect, schema_patterns=True)
    meta = validator_for(cls.META_SCHEMA, default=cls)(cls.META_SCHEMA, format_checker=checker)
    try:
        error = next(iter(meta.iter_errors(schema)), None)
    except RecursionError:
        return SchemaError("The schema is too deeply nested to check.", hint="Flatten it with $defs and $ref.")
    if error is None:
        return None
    if error.validator == "format" and error.validator_value == "regex" and isinstance(error.instance, str):
        from mcp_llm.schema.regex import PatternError, compile_pattern

        try:
            compile_pattern(error.instance)
        except PatternError as exc:
            return SchemaError(
                f"The pattern {json.dumps(_clip(error.instance))} at {json_path(error.absolute_path)} cannot be used: "
                f"{exc}.", hint=PATTERN_HINT)
    return SchemaError(
        f"The schema is not a valid JSON Schema: {_clip(error.message)} (at {json_path(error.absolute_path)}).",
        hint="Fix that keyword; the schema is checked against the JSON Schema meta-schema "
        "(draft 2020-12 unless `$schema` names another).",
    )
