"""JSON Schema in, schema-valid JSON out: checking, per-provider compilation, extraction, validation.

The caller's schema is checked against its meta-schema before any model is called. What
each provider is sent may differ from it (`compile_for`), and every such change is reported
as a rewrite; but the reply is always validated against the caller's original schema.
`jsonschema` is imported on first use: it costs ~0.1 s, which start-up does not pay.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from mcp_llm.errors import NotJSONError, OutputError, SchemaError
from mcp_llm.schema_dialects import CompiledSchema, compile_anthropic, compile_gemini, compile_openai

if TYPE_CHECKING:
    from jsonschema.protocols import Validator

MAX_REPORTED_ERRORS = 8
_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)


# --- the caller's schema ------------------------------------------------------------------------


def parse_schema_argument(schema: dict[str, Any] | str) -> tuple[dict[str, Any], str | None]:
    """A schema object, its JSON text, or a preset name → (checked schema, preset name or None)."""
    from mcp_llm.presets import PRESETS

    name: str | None = None
    if isinstance(schema, str):
        text = schema.strip()
        if text in PRESETS:
            name, schema = text, PRESETS[text]
        elif text.startswith("{"):
            try:
                schema = json.loads(text)
            except json.JSONDecodeError as exc:
                raise SchemaError(
                    f"The schema is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}.",
                    hint="Pass a JSON Schema object, or a preset name: " + ", ".join(PRESETS) + ".",
                ) from None
        else:
            raise SchemaError(
                f"Unknown schema preset {text!r}.",
                hint="Pass a JSON Schema object, or one of the presets: " + ", ".join(PRESETS) + ".",
            )
    check_schema(schema)
    return schema, name


def check_schema(schema: Any) -> None:
    """Refuse anything that is not a valid JSON Schema object, saying where it is wrong."""
    if not isinstance(schema, dict):
        raise SchemaError(
            f"The schema must be a JSON object, not {type(schema).__name__}.",
            hint='For example {"type": "object", "properties": {"name": {"type": "string"}}}.',
        )
    _check_canonical_schema(_canonical(schema))


@lru_cache(maxsize=256)
def _check_canonical_schema(canonical_schema: str) -> None:
    """The meta-schema check, once per distinct schema (it is most of a call's own overhead)."""
    schema = json.loads(canonical_schema)
    from jsonschema.exceptions import SchemaError as MetaSchemaError
    from jsonschema.validators import validator_for

    cls = validator_for(schema, default=_default_validator_class())
    try:
        cls.check_schema(schema)
    except MetaSchemaError as exc:
        where = _json_path(exc.absolute_path)
        raise SchemaError(
            f"The schema is not a valid JSON Schema: {exc.message} (at {where}).",
            hint="Fix that keyword; the schema is checked against the JSON Schema meta-schema "
            "(draft 2020-12 unless `$schema` names another).",
        ) from None
    for ref in _refs(schema):
        if not _resolves(schema, ref):
            raise SchemaError(
                f"The schema's $ref {ref!r} points nowhere.",
                hint="Use local references such as '#/$defs/Name' that exist in the schema; "
                "remote references are not fetched.",
            )


# --- per-provider compilation ------------------------------------------------------------------

Compiler = Callable[[dict[str, Any]], CompiledSchema]


def _as_is(schema: dict[str, Any]) -> CompiledSchema:
    return CompiledSchema(schema)


# Ollama takes the schema verbatim (its `format` turns it into a grammar); the cloud providers
# take their own subsets of JSON Schema (see schema_dialects.py).
COMPILERS: dict[str, Compiler] = {"ollama": _as_is, "gemini": compile_gemini, "anthropic": compile_anthropic,
                                   "openai": compile_openai}


def compile_for(provider: str, schema: dict[str, Any]) -> CompiledSchema:
    """What `provider` is sent for `schema`, with every change listed."""
    return COMPILERS.get(provider, _as_is)(schema)


def schema_instruction(schema: dict[str, Any]) -> str:
    """Told to every model, native schema support or not: weak models follow `format` better with it."""
    return (
        "Answer with a single JSON value, and nothing else, that validates against this JSON Schema:\n"
        + json.dumps(schema, ensure_ascii=False, separators=(",", ":"))
    )


# --- the model's reply -------------------------------------------------------------------------


def extract_json(text: str) -> Any:
    """The JSON value in a reply: the whole text, a fenced block, or the first object/array in prose."""
    stripped = text.strip()
    if not stripped:
        raise NotJSONError("The model returned an empty answer.", errors=["the answer is empty"], reply=text)
    candidates = [stripped, *(m.group(1).strip() for m in _FENCE.finditer(stripped))]
    for candidate in candidates:
        try:
            return _ensure_encodable(json.loads(candidate), text)
        except json.JSONDecodeError:
            continue
    decoder = json.JSONDecoder()
    for match in re.finditer(r"[\[{]", stripped):
        try:
            value, _ = decoder.raw_decode(stripped, match.start())
        except json.JSONDecodeError:
            continue
        return _ensure_encodable(value, text)
    raise NotJSONError(
        "The model's answer is not JSON (prose, or JSON cut off by max_tokens).",
        errors=["the answer holds no JSON value: answer with JSON only, no prose"],
        reply=text,
    )


def _ensure_encodable(value: Any, reply: str) -> Any:
    """Valid JSON may hold a lone surrogate (`\\ud800`), which cannot be sent on as UTF-8."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise OutputError(
            "The model's JSON holds an invalid Unicode escape (a lone surrogate).",
            errors=["a string holds a lone UTF-16 surrogate escape such as \\ud800"],
            reply=reply,
        ) from None
    return value


def validation_errors(instance: Any, schema: dict[str, Any]) -> list[str]:
    """Every way `instance` breaks `schema`, as short lines naming the JSON path; [] if valid."""
    validator = _validator(_canonical(schema))
    errors = sorted(validator.iter_errors(instance), key=lambda e: (list(e.absolute_path), e.message))
    return [f"at {_json_path(e.absolute_path)}: {e.message}" for e in errors[:MAX_REPORTED_ERRORS]]


def parse_and_validate(text: str, schema: dict[str, Any], *, unwrap: str | None = None) -> Any:
    """The reply's JSON if it validates against `schema`; else OutputError listing what is wrong.

    `unwrap` names the key a non-object root was wrapped in for the provider (schema_dialects).
    """
    value = extract_json(text)
    if unwrap is not None:
        if not isinstance(value, dict) or unwrap not in value:
            raise OutputError("The model's JSON lacks the wrapper key.", errors=[f"at $: '{unwrap}' is missing"],
                              reply=text)
        value = value[unwrap]
    errors = validation_errors(value, schema)
    if errors:
        raise OutputError("The model's JSON does not match the schema.", errors=errors, reply=text)
    return value


def repair_message(error: OutputError) -> str:
    """The follow-up a model gets after an invalid answer: what was wrong, and to answer again."""
    lines = "\n".join(f"- {line}" for line in error.errors) or f"- {error.message}"
    return (
        "Your previous answer was not valid:\n"
        f"{lines}\n"
        "Answer again with only the corrected JSON, which must validate against the schema."
    )


# --- helpers -----------------------------------------------------------------------------------


def _default_validator_class() -> type[Validator]:
    from jsonschema import Draft202012Validator

    return Draft202012Validator


def _canonical(schema: dict[str, Any]) -> str:
    return json.dumps(schema, sort_keys=True, separators=(",", ":"))


@lru_cache(maxsize=256)
def _validator(canonical_schema: str) -> Validator:
    """One compiled validator per distinct schema: callers send the same few schemas again and again."""
    from jsonschema.validators import validator_for

    schema = json.loads(canonical_schema)
    cls = validator_for(schema, default=_default_validator_class())
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        for key, value in node.items():
            if key not in ("const", "enum", "default", "examples"):
                found += _refs(value)
        return found
    if isinstance(node, list):
        return [ref for item in node for ref in _refs(item)]
    return []


def _resolves(schema: dict[str, Any], ref: str) -> bool:
    """A local `#/a/b` pointer (or an `$anchor`/`$id` match) lands on something in the schema."""
    if ref in ("#", ""):
        return True
    if not ref.startswith("#/"):
        return any(isinstance(node, dict) and ref in (f"#{node.get('$anchor')}", node.get("$id"))
                   for node in _nodes(schema))
    node: Any = schema
    for raw in ref[2:].split("/"):
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False
    return True


def _nodes(node: Any) -> list[Any]:
    if isinstance(node, dict):
        return [node, *(n for value in node.values() for n in _nodes(value))]
    if isinstance(node, list):
        return [n for item in node for n in _nodes(item)]
    return []


def _json_path(parts: Any) -> str:
    path = "$"
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path
