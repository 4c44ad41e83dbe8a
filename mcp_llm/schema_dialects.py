"""Per-provider schema compilation: the caller's JSON Schema → what each provider accepts.

Each provider constrains decoding with its own subset of JSON Schema. Rather than let a
provider refuse a schema (or silently ignore part of it), the schema is rewritten into that
subset here, and every change is reported (`CompiledSchema.rewrites`, shown to the caller as
`schema_rewrites`). Nothing is lost for the caller: the answer is still validated against the
original schema, and re-asked if it breaks a constraint the provider could not enforce. So when
a constraint cannot be expressed, the provider gets a LOOSER schema, never a tighter one: a
tighter one could forbid every answer the caller's schema allows.

- Ollama: sent as is (its `format` turns the schema into a grammar).
- Gemini (`response_json_schema`): the documented keywords pass; `oneOf` → `anyOf`,
  `const` → `enum`, `definitions` → `$defs`, one-item `allOf` merged, the rest dropped
  (with `additionalProperties` when `patternProperties` had to go).
- Anthropic (strict `output_config` json_schema): objects closed (`additionalProperties: false`)
  after `allOf` object branches are merged in (local `$ref`s followed, a bounded number of
  them) and every required name (its own or a kept `allOf` branch's) is a property; an object
  that must hold together with an `allOf` branch that cannot be merged is left open instead
  (closed apart, they would admit nothing), and such a schema goes to Anthropic as a forced tool
  rather than strict output;
  `type` lists → `anyOf`, `oneOf` → `anyOf`, constraints it cannot enforce moved into the
  description (as the anthropic SDK's own `transform_schema` does), and a non-object root
  wrapped in `{"value": …}` (unwrapped again before validation; references to the root follow it).

The walk is top-down and each node of the caller's schema is either compiled once or written
once into a description (clipped), so compilation is linear in the schema's size (times the
definitions an `allOf` branch inlines: at most MAX_INLINED_REFS each). A final pass
removes any `$ref` a rewrite left pointing nowhere.
"""

from __future__ import annotations

import copy
import functools
import itertools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

WRAP_KEY = "value"
MAX_DESCRIBED_CHARS = 600  # per node: the description is a hint to the model, not a second schema
MAX_INLINED_REFS = 16  # definitions followed for one `allOf` branch; past that it is not merged (and stays open)

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
_MERGEABLE_OBJECT_KEYS = frozenset({"type", "properties", "required", "title", "description"})


@dataclass
class CompiledSchema:
    """What a provider is sent, the changes made to get it, and the key to unwrap if the root was wrapped."""

    schema: dict[str, Any]
    rewrites: list[str] = field(default_factory=list)
    wrapped_in: str | None = None


Rule = Callable[[dict[str, Any], str, list[str]], dict[str, Any]]  # gets the caller's node; returns a new one


def _compile(node: Any, path: str, rule: Rule, rewrites: list[str]) -> Any:
    """Fix `node`'s own keywords with `rule` (it sees the caller's children, so what it moves into a
    description is the original text), then compile the children it kept. Top-down, so linear."""
    if not isinstance(node, dict):
        return node
    node = rule(node, path, rewrites)
    for key in _SCHEMA_MAPS:
        if isinstance(node.get(key), dict):
            node[key] = {name: _compile(sub, f"{path}.{key}.{name}" if key != "properties" else f"{path}.{name}",
                                        rule, rewrites) for name, sub in node[key].items()}
    for key in _SCHEMA_VALUES:
        if isinstance(node.get(key), dict):
            node[key] = _compile(node[key], f"{path}.{key}" if key != "items" else f"{path}[]", rule, rewrites)
    for key in _SCHEMA_LISTS:
        if isinstance(node.get(key), list):
            node[key] = [_compile(sub, f"{path}.{key}[{i}]", rule, rewrites) for i, sub in enumerate(node[key])]
    return node


def _schema_nodes(node: Any) -> Iterator[dict[str, Any]]:
    """Every schema object in a tree (not the data inside `enum`, `const`, `default`, `examples`)."""
    stack = [node]
    while stack:
        current = stack.pop()
        if not isinstance(current, dict):
            continue
        yield current
        for key in _SCHEMA_MAPS:
            if isinstance(current.get(key), dict):
                stack.extend(current[key].values())
        for key in _SCHEMA_VALUES:
            if isinstance(current.get(key), dict):
                stack.append(current[key])
        for key in _SCHEMA_LISTS:
            if isinstance(current.get(key), list):
                stack.extend(current[key])


def _drop_dollar_schema(schema: dict[str, Any], rewrites: list[str]) -> dict[str, Any]:
    if "$schema" in schema:
        schema = {k: v for k, v in schema.items() if k != "$schema"}
        rewrites.append("dropped `$schema` at $")
    return schema


def _repair_refs(schema: dict[str, Any], rewrites: list[str]) -> None:
    """Drop any `$ref` that a rewrite left pointing nowhere (the answer is still checked against the original)."""
    from referencing import Registry
    from referencing.exceptions import Unresolvable
    from referencing.jsonschema import DRAFT202012

    root = Registry().resolver_with_root(DRAFT202012.create_resource(schema))
    for node in _schema_nodes(schema):
        ref = node.get("$ref")
        if not isinstance(ref, str):
            continue
        try:
            target = root.lookup(ref).contents
        except Unresolvable:
            target = None
        if not isinstance(target, dict | bool):
            del node["$ref"]
            rewrites.append(f"dropped the $ref {json.dumps(ref)}: it pointed at a part of the schema this provider "
                            "does not take (the answer is still checked against it)")


def _add_all_of(node: dict[str, Any], branch: dict[str, Any]) -> None:
    node["allOf"] = [*node.get("allOf", []), branch]


# --- Gemini -------------------------------------------------------------------------------------


def _gemini_rule(node: dict[str, Any], path: str, rewrites: list[str]) -> dict[str, Any]:
    node = dict(node)
    if "oneOf" in node and "anyOf" not in node:
        node["anyOf"] = node.pop("oneOf")
        rewrites.append(f"`oneOf` became `anyOf` at {path}")
    if "const" in node and "enum" not in node:
        node["enum"] = [node.pop("const")]
        rewrites.append(f"`const` became a one-value `enum` at {path}")
    if "definitions" in node and "$defs" not in node:
        node["$defs"] = node.pop("definitions")
        rewrites.append(f"`definitions` became `$defs` at {path}")
    all_of = node.get("allOf")
    if isinstance(all_of, list) and len(all_of) == 1 and isinstance(all_of[0], dict):
        node.pop("allOf")
        node = {**all_of[0], **node}
        rewrites.append(f"a one-schema `allOf` was merged at {path}")
    if "patternProperties" in node and "additionalProperties" in node:
        node.pop("additionalProperties")
        rewrites.append(f"dropped `additionalProperties` at {path}: without `patternProperties` (which Gemini does "
                        "not take) it would refuse keys the schema allows")
    for key in [k for k in node if k not in GEMINI_KEYWORDS]:
        node.pop(key)
        rewrites.append(f"dropped `{key}` at {path} (Gemini does not take it; the answer is still checked for it)")
    return node


def _rename_definition_refs(schema: dict[str, Any]) -> None:
    """`#/definitions/…` references follow the root's `definitions`, now `$defs`."""
    for node in _schema_nodes(schema):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/definitions/"):
            node["$ref"] = "#/$defs/" + ref[len("#/definitions/") :]


def compile_gemini(schema: dict[str, Any]) -> CompiledSchema:
    rewrites: list[str] = []
    renames_definitions = "definitions" in schema and "$defs" not in schema
    compiled = _compile(_drop_dollar_schema(schema, rewrites), "$", _gemini_rule, rewrites)
    if renames_definitions:
        _rename_definition_refs(compiled)
    _repair_refs(compiled, rewrites)
    return CompiledSchema(compiled, rewrites)


# --- Anthropic ----------------------------------------------------------------------------------


def _describe_constraints(node: dict[str, Any], keys: list[str], path: str, rewrites: list[str]) -> None:
    """Move constraints the provider cannot enforce into the description, so the model still reads them."""
    if not keys:
        return
    moved = {key: node.pop(key) for key in keys}
    note = "{" + ", ".join(f"{k}: {json.dumps(v, ensure_ascii=False)}" for k, v in moved.items()) + "}"
    if len(note) > MAX_DESCRIBED_CHARS:
        note = note[: MAX_DESCRIBED_CHARS - 1] + "…"
    node["description"] = f"{node['description']}\n\n{note}" if node.get("description") else note
    rewrites.append(f"moved {', '.join(f'`{k}`' for k in moved)} into the description at {path} "
                    "(Anthropic does not enforce it; the answer is still checked for it)")


def _split_type_list(node: dict[str, Any], path: str, rewrites: list[str]) -> list[dict[str, Any]]:
    types = node.pop("type")
    branches = []
    for type_ in types:
        branch: dict[str, Any] = {"type": type_}
        for key in _BY_TYPE.get(type_, ()):
            if key in node:
                branch[key] = node[key]
        branches.append(branch)
    for keys in _BY_TYPE.values():
        for key in keys:
            node.pop(key, None)
    if "anyOf" in node:  # keep the caller's own alternatives: both must hold
        _add_all_of(node, {"anyOf": branches})
    else:
        node["anyOf"] = branches
    rewrites.append(f"the type list {json.dumps(types)} became `anyOf` at {path}")
    return branches


Lookup = Callable[[Any], Any]


def _definitions(schema: dict[str, Any]) -> Lookup:
    """What a local `$ref` points at (found from the root: a nested `$id` is not taken into account, as in
    `_repair_refs`); None for what it cannot find."""
    from referencing import Registry
    from referencing.exceptions import Unresolvable
    from referencing.jsonschema import DRAFT202012

    root = Registry().resolver_with_root(DRAFT202012.create_resource(schema))

    def lookup(ref: Any) -> Any:
        if not isinstance(ref, str):
            return None
        try:
            return root.lookup(ref).contents
        except Unresolvable:
            return None

    return lookup


def _merge_into(node: dict[str, Any], branch: dict[str, Any]) -> None:
    """Add an object branch's properties, required names and `type` to `node` (both must hold)."""
    properties = dict(node.get("properties", {}))
    for name, sub in branch.get("properties", {}).items():
        properties[name] = {"allOf": [properties[name], sub]} if name in properties else sub
    node["properties"] = properties
    required = list(dict.fromkeys([*node.get("required", []), *branch.get("required", [])]))
    if required:
        node["required"] = required
    if "type" in branch:  # the branch demands an object; one without `type` lets anything else through
        node.setdefault("type", "object")


def _flatten(branch: Any, lookup: Lookup, refs: list[str]) -> dict[str, Any] | None:
    """An `allOf` branch as the properties, required names and `type` it adds, with its own `allOf` and
    what its `$ref` points at followed (each reference once: a second time is a cycle, or not worth the
    guess; at most MAX_INLINED_REFS in all, listed in `refs`). None if it adds anything else."""
    if not (isinstance(branch, dict) and branch.get("type", "object") == "object"
            and set(branch) <= _MERGEABLE_OBJECT_KEYS | {"$ref", "allOf"}):
        return None
    flat = {key: branch[key] for key in ("type", "properties", "required") if key in branch}
    parts = list(branch.get("allOf", []))
    if "$ref" in branch:
        target = lookup(branch["$ref"])
        if target is None or branch["$ref"] in refs or len(refs) == MAX_INLINED_REFS:
            return None
        refs.append(branch["$ref"])
        parts.append(target)
    for part in parts:
        added = _flatten(part, lookup, refs)
        if added is None:
            return None
        _merge_into(flat, added)
    return flat


def _merge_object_branches(node: dict[str, Any], path: str, rewrites: list[str], lookup: Lookup) -> list[Any]:
    """`allOf` branches that only add properties (themselves or through the schemas their `$ref`s point at) are
    merged into the node, so closing it does not forbid what they add (a closed node beside an `allOf`
    that requires more keys admits nothing). The definitions stay as they are for other uses. Returns
    the branches kept."""
    kept = []
    for i, branch in enumerate(node.get("allOf", [])):
        refs: list[str] = []
        flat = _flatten(branch, lookup, refs)
        if not flat:  # cannot be merged, or adds nothing (`{}`, a title): kept as it is
            kept.append(branch)
            continue
        _merge_into(node, flat)
        inlined = ", inlining " + ", ".join(f"`{ref}`" for ref in refs) if refs else ""
        rewrites.append(f"`allOf[{i}]` was merged into the object at {path}{inlined}")
    if kept:
        node["allOf"] = kept
    else:
        node.pop("allOf", None)
    return kept


def _is_object(node: dict[str, Any]) -> bool:
    """Whether the rule closes `node` (or, for a `type` list with "object", its object branch)."""
    types = node.get("type")
    return "properties" in node or types == "object" or (isinstance(types, list) and "object" in types)


def _same_value(branches: list[Any], lookup: Lookup) -> list[dict[str, Any]]:
    """`branches` and every schema that applies to the same value with them: `allOf`/`anyOf`/`oneOf` members
    and the schemas their `$ref`s point at, followed through (each once)."""
    reached: dict[int, dict[str, Any]] = {}
    stack = list(branches)
    while stack:
        node = stack.pop()
        if not isinstance(node, dict) or id(node) in reached:
            continue
        reached[id(node)] = node
        for key in ("allOf", "anyOf", "oneOf"):
            stack.extend(node.get(key, []))
        stack.append(lookup(node.get("$ref")))
    return list(reached.values())


def _leave_open(parts: list[dict[str, Any]], keep_open: dict[int, dict[str, Any]]) -> bool:
    """If one of `parts` (what the kept `allOf` branches of a node apply to its value) is an object, they all
    stay open, and so does the node (True): each closed to its own properties, they would admit nothing
    the caller's schema allows beyond the keys they share."""
    opens = any(_is_object(part) for part in parts)
    if opens:
        keep_open.update((id(part), part) for part in parts)
    return opens


def _open_objects(schema: dict[str, Any], lookup: Lookup) -> dict[int, dict[str, Any]]:
    """Before the walk, the caller's schemas (by id) to leave open, as `_leave_open` finds them: the walk
    finds them again where it meets their node, but a definition may be compiled before that."""
    keep_open: dict[int, dict[str, Any]] = {}
    for node in _schema_nodes(schema):
        all_of = node.get("allOf") if isinstance(node.get("allOf"), list) else []
        _leave_open(_same_value([branch for branch in all_of if not _flatten(branch, lookup, [])], lookup), keep_open)
    return keep_open


def _is_map(node: dict[str, Any]) -> bool:
    """An object whose keys are not all named: `patternProperties`, or a schema for the other keys."""
    return "patternProperties" in node or isinstance(node.get("additionalProperties"), dict)


def _loosen_map(node: dict[str, Any], path: str, rewrites: list[str]) -> None:
    """Closing a map would forbid the keys it exists for: it stays open. When the other keys were
    bound anyway (`additionalProperties` false or a schema), its patterns' schemas apply to any other
    key (looser: the answer is still checked against the patterns); when they were free, binding them
    to the patterns would be tighter, so the patterns go into the description instead. Such a schema
    cannot go out as strict `output_config`; the adapter sends it as a forced tool instead."""
    if "patternProperties" not in node or node.get("additionalProperties", True) is True:
        return
    patterns = node.pop("patternProperties")
    others = [node["additionalProperties"]] if isinstance(node.get("additionalProperties"), dict) else []
    values = [*patterns.values(), *others]
    node["additionalProperties"] = values[0] if len(values) == 1 else {"anyOf": values}
    rewrites.append(f"`patternProperties` at {path} became `additionalProperties` for any other key "
                    "(Anthropic does not take patterns; the answer is still checked for them)")


def is_strict(schema: Any) -> bool:
    """Whether every object in a compiled schema is closed, as Anthropic's strict `output_config` needs."""
    return all(node.get("additionalProperties") is False for node in _schema_nodes(schema) if _is_object(node))


def _anthropic_rule(node: dict[str, Any], path: str, rewrites: list[str], lookup: Lookup,
                    keep_open: dict[int, dict[str, Any]]) -> dict[str, Any]:
    stays_open = id(node) in keep_open
    node = dict(node)
    kept = []
    if isinstance(node.get("allOf"), list):  # first: what it merges in is then split by type like the rest
        kept = _merge_object_branches(node, path, rewrites, lookup)
    parts = _same_value(kept, lookup)
    stays_open = _leave_open(parts, keep_open) or stays_open  # also for the `allOf` a merge writes
    if isinstance(node.get("type"), list):
        branches = _split_type_list(node, path, rewrites)
        if stays_open:  # its object branch holds its properties now
            keep_open.update((id(branch), branch) for branch in branches)
    if "oneOf" in node:
        one_of = node.pop("oneOf")
        if "anyOf" in node:
            _add_all_of(node, {"anyOf": one_of})
        else:
            node["anyOf"] = one_of
        rewrites.append(f"`oneOf` became `anyOf` at {path}")
    is_object = _is_object(node)
    if is_object and _is_map(node):
        _loosen_map(node, path, rewrites)
    elif is_object and stays_open and node.get("additionalProperties") is not False:
        rewrites.append(f"the object at {path} was left open: it meets an `allOf` branch that cannot be merged into "
                        "one object with it, and closed apart they would admit nothing (so Anthropic gets this "
                        "schema as a forced tool, not strict output)")
    elif is_object and node.get("additionalProperties") is not False:
        required = [*node.get("required", []), *(name for part in parts for name in part.get("required", []))]
        missing = [name for name in dict.fromkeys(required) if name not in node.get("properties", {})]
        if missing:  # closing would forbid a required name (here or in a kept `allOf` branch) that only
            # `additionalProperties` or patterns allowed
            node["properties"] = {**node.get("properties", {}), **{name: {} for name in missing}}
            rewrites.append(f"required {', '.join(f'`{n}`' for n in missing)} listed under `properties` at {path}")
        had = node.get("additionalProperties", "absent")
        node["additionalProperties"] = False
        rewrites.append(f"`additionalProperties` set to false at {path} (was {json.dumps(had)}): "
                        "Anthropic's strict mode needs closed objects")
    unsupported = [k for k in node if k not in ANTHROPIC_KEYWORDS]
    if "prefixItems" in unsupported and "items" in node:
        unsupported.append("items")  # `items` only applies after the prefix: alone it would bind every item
    if node.get("format") is not None and node.get("format") not in ANTHROPIC_FORMATS:
        unsupported.append("format")
    if isinstance(node.get("minItems"), int) and node["minItems"] > 1:
        unsupported.append("minItems")
    _describe_constraints(node, unsupported, path, rewrites)
    return node


def _root_refs(schema: dict[str, Any]) -> bool:
    """Whether some `$ref` points at the root or into it outside `$defs`/`definitions`."""
    return any(isinstance(ref := node.get("$ref"), str) and (ref in ("#", "") or (
        ref.startswith("#/") and not ref.startswith(("#/$defs/", "#/definitions/")))) for node in _schema_nodes(schema))


def _wrap_root(schema: dict[str, Any], rewrites: list[str]) -> dict[str, Any]:
    """A non-object root becomes `{"value": root}`. References to the root (or into it) would then
    point at the wrapper, so such a root moves into `$defs` and its references follow it."""
    defs = {k: schema[k] for k in ("$defs", "definitions") if k in schema}
    inner = {k: v for k, v in schema.items() if k not in defs}
    rewrites.append(f"the root was wrapped as {{\"{WRAP_KEY}\": …}} (Anthropic needs an object root); "
                    "the answer is unwrapped again")
    if not _root_refs(schema):
        return {"type": "object", "properties": {WRAP_KEY: inner}, "required": [WRAP_KEY], **defs}
    taken = set(defs.get("$defs", {}))
    name = next(n for n in (f"root{i or ''}" for i in itertools.count()) if n not in taken)
    inner = copy.deepcopy(inner)
    new_defs = {k: copy.deepcopy(v) for k, v in defs.items()}
    new_defs["$defs"] = {**new_defs.get("$defs", {}), name: inner}
    wrapper = {"type": "object", "properties": {WRAP_KEY: {"$ref": f"#/$defs/{name}"}}, "required": [WRAP_KEY],
               **new_defs}
    for node in _schema_nodes(wrapper):
        ref = node.get("$ref")
        if not isinstance(ref, str) or node is wrapper["properties"][WRAP_KEY]:
            continue
        if ref in ("#", ""):
            node["$ref"] = f"#/$defs/{name}"
        elif ref.startswith("#/") and not ref.startswith(("#/$defs/", "#/definitions/")):
            node["$ref"] = f"#/$defs/{name}/" + ref[2:]
    rewrites.append(f"the root moved to `$defs.{name}`, and references to it with it")
    return wrapper


def compile_anthropic(schema: dict[str, Any]) -> CompiledSchema:
    rewrites: list[str] = []
    schema = _drop_dollar_schema(schema, rewrites)
    wrapped_in = None
    if schema.get("type") != "object":
        schema = _wrap_root(schema, rewrites)
        wrapped_in = WRAP_KEY
    lookup = _definitions(schema)
    rule = functools.partial(_anthropic_rule, lookup=lookup, keep_open=_open_objects(schema, lookup))
    compiled = _compile(schema, "$", rule, rewrites)
    if wrapped_in:  # the wrapper's own closing is ours, not a change to the caller's schema
        rewrites[:] = [r for r in rewrites if not r.startswith("`additionalProperties` set to false at $ ")]
    _repair_refs(compiled, rewrites)
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
