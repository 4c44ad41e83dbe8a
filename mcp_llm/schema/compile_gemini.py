"""Gemini (`response_json_schema`): the keywords of its own Schema type pass; the rest is made looser.

`oneOf` → `anyOf`, `const` → a one-value `enum`, `definitions` → `$defs` (references follow, as
for every rewrite: walker.py), a one-schema `allOf` merged into its node (properties and required
names joined; for anything both state, the node's own wins, which is looser), and every other
keyword dropped — with `additionalProperties` when `patternProperties` had to go, since without
the patterns it would refuse keys the schema allows. A boolean root gets the loosest schema, `{}`.
"""

from __future__ import annotations

from typing import Any

from mcp_llm.schema.walker import CompiledSchema, Prepared, Rule, Walk, attach_detached, loosest, prepare

GEMINI_KEYWORDS = frozenset({
    "$id", "$defs", "$ref", "$anchor", "type", "format", "title", "description", "enum", "items", "prefixItems",
    "minItems", "maxItems", "minimum", "maximum", "anyOf", "properties", "additionalProperties", "required",
    "propertyOrdering", "nullable", "minLength", "maxLength", "pattern", "minProperties", "maxProperties", "default",
})  # the fields of Gemini's own Schema type (google.genai.types.Schema), in JSON Schema spelling


def _merge_one_all_of(node: dict[str, Any], branch: dict[str, Any], id_key: str) -> dict[str, Any]:
    """`node` and its only `allOf` branch as one schema, no tighter than both holding: each property of
    either is kept (a name in both keeps the node's schema), required names of both hold, and any other
    keyword both state keeps the node's. The branch's `$id` goes: it would rebase the node's references."""
    merged = {**{k: v for k, v in branch.items() if k != id_key}, **node}
    for key in ("properties", "$defs"):
        if isinstance(node.get(key), dict) and isinstance(branch.get(key), dict):
            merged[key] = {**branch[key], **node[key]}
            merged[key] = {name: merged[key][name] for name in dict.fromkeys([*node[key], *branch[key]])}
    if isinstance(node.get("required"), list) and isinstance(branch.get("required"), list):
        merged["required"] = list(dict.fromkeys([*node["required"], *branch["required"]]))
    return merged


def _rule(prepared: Prepared, rewrites: list[str]) -> Rule:
    def rule(node: dict[str, Any], path: str, origin: dict[str, Any] | None, own: bool) -> dict[str, Any]:
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
            node = _merge_one_all_of(node, all_of[0], prepared.id_key)
            rewrites.append(f"a one-schema `allOf` was merged at {path}")
        if "patternProperties" in node and "additionalProperties" in node:
            node.pop("additionalProperties")
            rewrites.append(f"dropped `additionalProperties` at {path}: without `patternProperties` (which Gemini "
                            "does not take) it would refuse keys the schema allows")
        for key in [k for k in node if k not in GEMINI_KEYWORDS]:
            node.pop(key)
            rewrites.append(f"dropped `{key}` at {path} (Gemini does not take it; the answer is still checked for it)")
        return node

    return rule


def compile_gemini(schema: Any) -> CompiledSchema:
    if not isinstance(schema, dict):
        return loosest("gemini", f"the schema is `{str(schema).lower()}`, not an object")
    rewrites: list[str] = []
    prepared = prepare(schema, rewrites)
    attach_detached(prepared.root, prepared, rewrites)
    walk = Walk(prepared, _rule(prepared, rewrites), rewrites)
    return CompiledSchema(walk.finish(walk.run(prepared.root)), rewrites)
