"""Per-provider schema compilation: the caller's JSON Schema → what each provider accepts.

Each provider constrains decoding with its own subset of JSON Schema. Rather than let a
provider refuse a schema (or silently ignore part of it), the schema is rewritten into that
subset here, and every change is reported (`CompiledSchema.rewrites`, shown to the caller as
`schema_rewrites`). Nothing is lost for the caller: the answer is still validated against the
original schema, and re-asked if it breaks a constraint the provider could not enforce.

- Ollama: sent as is (its `format` turns the schema into a grammar).
- Gemini (`response_json_schema`): the documented keywords pass; `oneOf` → `anyOf`,
  `const` → `enum`, `definitions` → `$defs`, one-item `allOf` merged, the rest dropped.
- Anthropic (strict `output_config` json_schema): objects closed (`additionalProperties: false`),
  `type` lists → `anyOf`, `oneOf` → `anyOf`, constraints it cannot enforce moved into the
  description (as the anthropic SDK's own `transform_schema` does), and a non-object root
  wrapped in `{"value": …}` (unwrapped again before validation).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

WRAP_KEY = "value"

# Keywords whose value is a map of name → schema, a schema, or a list of schemas.
_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_SCHEMA_VALUES = ("items", "additionalProperties", "not", "if", "then", "else", "contains", "propertyNames",
                  "unevaluatedItems", "unevaluatedProperties", "additionalItems")
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")

GEMINI_KEYWORDS = frozenset({
    "$id", "$defs", "$ref", "$anchor", "type", "format", "title", "description", "enum", "items", "prefixItems",
    "minItems", "maxItems", "minimum", "maximum", "anyOf", "properties", "additionalProperties", "required",
    "propertyOrdering", "nullable", "minLength", "maxLength", "pattern", "minProperties", "maxProperties", "default",
})  # the fields of Gemini's own Schema type (google.genai.types.Schema), in JSON Schema spelling

ANTHROPIC_KEYWORDS = frozenset({
    "$defs", "definitions", "$ref", "type", "format", "title", "description", "enum", "const", "items",
    "anyOf", "allOf", "properties", "additionalProperties", "required", "default", "minItems",
})
ANTHROPIC_FORMATS = frozenset({"date-time", "time", "date", "duration", "email", "hostname", "uri", "ipv4", "ipv6",
                               "uuid"})
# Type-specific keywords, moved into the matching branch when a `type` list becomes `anyOf`.
_BY_TYPE = {
    "object": ("properties", "required", "additionalProperties", "patternProperties", "minProperties",
               "maxProperties", "propertyNames"),
    "array": ("items", "prefixItems", "minItems", "maxItems", "uniqueItems", "contains"),
    "string": ("format", "pattern", "minLength", "maxLength"),
    "number": ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"),
    "integer": ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"),
}


@dataclass
class CompiledSchema:
    """What a provider is sent, the changes made to get it, and the key to unwrap if the root was wrapped."""

    schema: dict[str, Any]
    rewrites: list[str] = field(default_factory=list)
    wrapped_in: str | None = None


Rule = Callable[[dict[str, Any], str, list[str]], dict[str, Any]]


def _walk(node: Any, path: str, rule: Rule, rewrites: list[str]) -> Any:
    """Apply `rule` to every schema in the tree, children first."""
    if not isinstance(node, dict):
        return node
    node = dict(node)
    for key in _SCHEMA_MAPS:
        if isinstance(node.get(key), dict):
            node[key] = {name: _walk(sub, f"{path}.{key}.{name}" if key != "properties" else f"{path}.{name}",
                                     rule, rewrites) for name, sub in node[key].items()}
    for key in _SCHEMA_VALUES:
        if isinstance(node.get(key), dict):
            node[key] = _walk(node[key], f"{path}.{key}" if key != "items" else f"{path}[]", rule, rewrites)
    for key in _SCHEMA_LISTS:
        if isinstance(node.get(key), list):
            node[key] = [_walk(sub, f"{path}.{key}[{i}]", rule, rewrites) for i, sub in enumerate(node[key])]
    return rule(node, path, rewrites)


def _drop_dollar_schema(schema: dict[str, Any], rewrites: list[str]) -> dict[str, Any]:
    if "$schema" in schema:
        schema = {k: v for k, v in schema.items() if k != "$schema"}
        rewrites.append("dropped `$schema` at $")
    return schema


# --- Gemini -------------------------------------------------------------------------------------


def _gemini_rule(node: dict[str, Any], path: str, rewrites: list[str]) -> dict[str, Any]:
    if "oneOf" in node and "anyOf" not in node:
        node["anyOf"] = node.pop("oneOf")
        rewrites.append(f"`oneOf` became `anyOf` at {path}")
    if "const" in node and "enum" not in node:
        node["enum"] = [node.pop("const")]
        rewrites.append(f"`const` became a one-value `enum` at {path}")
    if "definitions" in node and "$defs" not in node:
        node["$defs"] = node.pop("definitions")
        rewrites.append(f"`definitions` became `$defs` at {path}")
    if isinstance(node.get("$ref"), str) and node["$ref"].startswith("#/definitions/"):
        node["$ref"] = "#/$defs/" + node["$ref"][len("#/definitions/") :]
    all_of = node.get("allOf")
    if isinstance(all_of, list) and len(all_of) == 1 and isinstance(all_of[0], dict):
        node.pop("allOf")
        node = {**all_of[0], **node}
        rewrites.append(f"a one-schema `allOf` was merged at {path}")
    for key in [k for k in node if k not in GEMINI_KEYWORDS]:
        node.pop(key)
        rewrites.append(f"dropped `{key}` at {path} (Gemini does not take it; the answer is still checked for it)")
    return node


def compile_gemini(schema: dict[str, Any]) -> CompiledSchema:
    rewrites: list[str] = []
    compiled = _walk(_drop_dollar_schema(schema, rewrites), "$", _gemini_rule, rewrites)
    return CompiledSchema(compiled, rewrites)


# --- Anthropic ----------------------------------------------------------------------------------


def _describe_constraints(node: dict[str, Any], keys: list[str], path: str, rewrites: list[str]) -> None:
    """Move constraints the provider cannot enforce into the description, so the model still reads them."""
    if not keys:
        return
    moved = {key: node.pop(key) for key in keys}
    note = "{" + ", ".join(f"{k}: {json.dumps(v)}" for k, v in moved.items()) + "}"
    node["description"] = f"{node['description']}\n\n{note}" if node.get("description") else note
    rewrites.append(f"moved {', '.join(f'`{k}`' for k in moved)} into the description at {path} "
                    "(Anthropic does not enforce it; the answer is still checked for it)")


def _split_type_list(node: dict[str, Any], path: str, rewrites: list[str]) -> dict[str, Any]:
    types = node.pop("type")
    branches = []
    for type_ in types:
        branch: dict[str, Any] = {"type": type_}
        for key in _BY_TYPE.get(type_, ()):
            if key in node:
                branch[key] = node[key]
        branches.append(_anthropic_rule(branch, path, rewrites))
    for keys in _BY_TYPE.values():
        for key in keys:
            node.pop(key, None)
    node["anyOf"] = branches
    rewrites.append(f"the type list {json.dumps(types)} became `anyOf` at {path}")
    return node


def _anthropic_rule(node: dict[str, Any], path: str, rewrites: list[str]) -> dict[str, Any]:
    if isinstance(node.get("type"), list):
        return _split_type_list(node, path, rewrites)
    if "oneOf" in node and "anyOf" not in node:
        node["anyOf"] = node.pop("oneOf")
        rewrites.append(f"`oneOf` became `anyOf` at {path}")
    is_object = node.get("type") == "object" or "properties" in node
    if is_object and node.get("additionalProperties") is not False:
        had = node.get("additionalProperties", "absent")
        node["additionalProperties"] = False
        rewrites.append(f"`additionalProperties` set to false at {path} (was {json.dumps(had)}): "
                        "Anthropic's strict mode needs closed objects")
    unsupported = [k for k in node if k not in ANTHROPIC_KEYWORDS]
    if node.get("format") is not None and node.get("format") not in ANTHROPIC_FORMATS:
        unsupported.append("format")
    if isinstance(node.get("minItems"), int) and node["minItems"] > 1:
        unsupported.append("minItems")
    _describe_constraints(node, unsupported, path, rewrites)
    return node


def compile_anthropic(schema: dict[str, Any]) -> CompiledSchema:
    rewrites: list[str] = []
    schema = _drop_dollar_schema(schema, rewrites)
    wrapped_in = None
    if schema.get("type") != "object":
        defs = {k: schema[k] for k in ("$defs", "definitions") if k in schema}
        inner = {k: v for k, v in schema.items() if k not in defs}
        schema = {"type": "object", "properties": {WRAP_KEY: inner}, "required": [WRAP_KEY], **defs}
        wrapped_in = WRAP_KEY
        rewrites.append(f"the root was wrapped as {{\"{WRAP_KEY}\": …}} (Anthropic needs an object root); "
                        "the answer is unwrapped again")
    compiled = _walk(copy.deepcopy(schema), "$", _anthropic_rule, rewrites)
    if wrapped_in:  # the wrapper's own closing is ours, not a change to the caller's schema
        rewrites[:] = [r for r in rewrites if not r.startswith("`additionalProperties` set to false at $ ")]
    return CompiledSchema(compiled, rewrites, wrapped_in)


# --- OpenAI -------------------------------------------------------------------------------------


def compile_openai(schema: dict[str, Any]) -> CompiledSchema:
    """OpenAI's response_format json_schema needs an object root: anything else is wrapped in
    `{"value": …}` (unwrapped again before validation). The rest goes as is; `strict` is asked
    only for a schema that already meets strict mode's rules (adapters/openai.py). OpenAI-compatible
    endpoints (llama-server, vLLM…) are not compiled: their grammars take any root."""
    rewrites: list[str] = []
    schema = _drop_dollar_schema(schema, rewrites)
    if schema.get("type") == "object":
        return CompiledSchema(schema, rewrites)
    defs = {k: schema[k] for k in ("$defs", "definitions") if k in schema}
    inner = {k: v for k, v in schema.items() if k not in defs}
    wrapped = {"type": "object", "properties": {WRAP_KEY: inner}, "required": [WRAP_KEY],
               "additionalProperties": False, **defs}
    rewrites.append(f"the root was wrapped as {{\"{WRAP_KEY}\": …}} (OpenAI needs an object root); "
                    "the answer is unwrapped again")
    return CompiledSchema(wrapped, rewrites, WRAP_KEY)
