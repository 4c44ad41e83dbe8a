"""Anthropic (strict `output_config` json_schema, or a forced tool): closed objects, a small keyword set.

Strict mode needs every object closed (`additionalProperties: false`). Closing is the one narrowing
allowed, and only for keys the caller's schema never names for that value: an object is closed over
every name that any schema applying to the same value names (its properties and required names,
those of its `allOf`/`anyOf`/`oneOf` branches, `if`/`then`/`else`, `dependentSchemas`,
`dependentRequired`, the schemas its `$ref`s point at…), each name it lacks listed under
`properties` as `{}`. Those schemas, and likewise the schemas of one property of them, are found
as one *place* by unification (`_Places`): sharing a definition between two places joins them, so
a closed object may list more names than it needs (looser, never tighter). A place whose keys cannot
all be listed — a map (`patternProperties`, a schema for other keys) anywhere in it, more
`minProperties` than names — is left open, and `is_strict` then sends the schema as a forced tool,
whose input schema may be open.

Before that, `allOf` branches that only add properties (themselves, or through the definitions
their `$ref`s point at: at most MAX_INLINED_REFS, each once) are merged into their object, so a
derived object reads as one. A merged property that lives in a definition is copied in when small
(INLINE_NODES schemas at most, no `allOf` inside) and referenced at its home otherwise, so nothing
is compiled twice, a recursive definition ends, and the output stays linear in the schema's size.
The rest as the anthropic SDK's own `transform_schema` does: `type` lists → `anyOf`, `oneOf` →
`anyOf`, constraints it cannot enforce moved into the description; a non-object root wrapped in
`{"value": …}` (walker.py).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from mcp_llm.schema.walker import (
    WRAP_KEY,
    CompiledSchema,
    Prepared,
    Ref,
    Walk,
    attach_detached,
    dumps,
    loosest,
    prepare,
    schema_nodes,
    wrap_root,
)

MAX_DESCRIBED_CHARS = 600  # per node: the description is a hint to the model, not a second schema
MAX_INLINED_REFS = 16  # definitions followed for one `allOf` branch; past that it is not merged
INLINE_NODES = 8  # a merged property from a definition up to this many schemas is copied in, else referenced

ANTHROPIC_KEYWORDS = frozenset({
    "$defs", "definitions", "$ref", "type", "format", "title", "description", "enum", "const", "items",
    "anyOf", "allOf", "properties", "additionalProperties", "required", "default", "minItems",
})
ANTHROPIC_FORMATS = frozenset({"date-time", "time", "date", "duration", "email", "hostname", "uri", "ipv4", "ipv6",
                               "uuid"})
# Identifiers mean nothing once every reference is a place in the whole schema: dropped, not described.
_IDENTIFIERS = ("$id", "id", "$anchor", "$dynamicAnchor", "$recursiveAnchor", "$schema", "$vocabulary")
# Type-specific keywords, moved into the matching branch when a `type` list becomes `anyOf`.
_BY_TYPE = {
    "object": ("properties", "required", "additionalProperties", "patternProperties", "minProperties",
               "maxProperties", "propertyNames"),
    "array": ("items", "prefixItems", "minItems", "maxItems", "uniqueItems", "contains"),
    "string": ("format", "pattern", "minLength", "maxLength"),
    "number": ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"),
    "integer": ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"),
}
_MERGEABLE_OBJECT_KEYS = frozenset({"type", "properties", "required", "title", "description", "$ref", "allOf"})
_IN_PLACE_ONE = ("not", "if", "then", "else")
_IN_PLACE_LISTS = ("anyOf", "oneOf")
_ELEMENTS_ONE = ("items", "additionalItems", "contains", "unevaluatedItems")
_OTHER_KEYS = ("additionalProperties", "unevaluatedProperties")

MOVED = "(Anthropic does not enforce it; the answer is still checked for it)"
FORCED_TOOL = "(so Anthropic gets this schema as a forced tool, not strict output)"


def _is_object(node: dict[str, Any]) -> bool:
    """Whether strict mode needs `node` closed: it has properties, says it is an object (alone or in a type
    list), or says which other keys an object may hold."""
    types = node.get("type")
    return ("properties" in node or types == "object" or (isinstance(types, list) and "object" in types)
            or "additionalProperties" in node or "patternProperties" in node)


def _is_map(node: dict[str, Any]) -> bool:
    """An object whose keys are not all named: `patternProperties`, or a schema for the other keys."""
    return "patternProperties" in node or isinstance(node.get("additionalProperties"), dict)


def is_strict(schema: Any) -> bool:
    """Whether every object in a compiled schema is closed, as Anthropic's strict `output_config` needs."""
    return all(node.get("additionalProperties") is False for node in schema_nodes(schema) if _is_object(node))


# --- merging `allOf` branches --------------------------------------------------------------------------------------


@dataclass
class _Flat:
    """What an `allOf` branch adds to its object: properties (each with every schema given for it, and whether
    it was reached through a `$ref`), required names, whether it says `type: object`, the references followed."""

    properties: dict[str, list[tuple[Any, bool]]] = field(default_factory=dict)
    required: list[str] = field(default_factory=list)
    typed: bool = False
    refs: list[str] = field(default_factory=list)
    absorbed: list[dict[str, Any]] = field(default_factory=list)  # the branch's own schemas: never sent

    def adds(self) -> bool:
        return bool(self.properties or self.required or self.typed)


def _flatten(branch: Any) -> _Flat | None:
    """The branch as what it adds, its own `allOf` members and `$ref` targets followed (each target once: a
    second time is a cycle or a diamond; at most MAX_INLINED_REFS in all); None if it adds anything else."""
    flat = _Flat()
    seen: set[int] = set()
    stack: list[tuple[Any, bool]] = [(branch, False)]
    while stack:
        part, via_ref = stack.pop()
        if not (isinstance(part, dict) and part.get("type", "object") == "object"
                and set(part) <= _MERGEABLE_OBJECT_KEYS and isinstance(part.get("properties", {}), dict)
                and isinstance(part.get("required", []), list) and isinstance(part.get("allOf", []), list)):
            return None
        flat.typed = flat.typed or "type" in part
        if not via_ref:
            flat.absorbed.append(part)
        for name, sub in part.get("properties", {}).items():
            flat.properties.setdefault(name, []).append((sub, via_ref))
        flat.required.extend(name for name in part.get("required", []) if isinstance(name, str))
        parts = [(member, via_ref) for member in part.get("allOf", [])]
        if "$ref" in part:
            ref = part["$ref"]
            if not isinstance(ref, Ref) or not isinstance(ref.target, dict) or id(ref.target) in seen \
                    or len(flat.refs) == MAX_INLINED_REFS:
                return None
            seen.add(id(ref.target))
            flat.refs.append(ref.text or "")
            parts.append((ref.target, True))
        stack.extend(reversed(parts))
    return flat


def _small(node: Any) -> bool:
    """Whether a definition's property can be copied where it is merged: few schemas, none that merges more."""
    return all(count <= INLINE_NODES and "allOf" not in sub for count, sub in enumerate(schema_nodes(node), 1))


# --- places: which schemas apply to one value ----------------------------------------------------------------------


@dataclass
class _Place:
    names: dict[str, None] = field(default_factory=dict)  # every key named for the value, in the caller's order
    required: set[str] = field(default_factory=set)
    open: str | None = None  # why its keys cannot all be listed
    min_properties: int = 0
    props: dict[str, int] = field(default_factory=dict)  # name → a node for that property's value
    elements: int | None = None  # a node for the value's items
    others: int | None = None  # a node for the value's other keys (`additionalProperties`, patterns…)


class _Places:
    """Unification (as in Steensgaard's points-to analysis) over the caller's schemas: two schemas that apply
    to one value share a place, and then so do their schemas for one property, for items, for other keys.
    Near-linear, iterative, and bounded: past UNIFY_BUDGET steps every object is left open instead."""

    def __init__(self, budget: int) -> None:
        self.parent: dict[int, int] = {}
        self.place: dict[int, _Place] = {}
        self.budget = budget
        self.overrun = False

    def add(self, node: dict[str, Any]) -> _Place:
        self.parent[id(node)] = id(node)
        place = self.place[id(node)] = _Place()
        return place

    def find(self, key: int) -> int:
        root = key
        while self.parent.get(root, root) != root:
            root = self.parent[root]
        while key != root:
            key, self.parent[key] = self.parent[key], root
        return root

    def of(self, node: Any) -> _Place | None:
        return self.place.get(self.find(id(node))) if isinstance(node, dict) and id(node) in self.parent else None

    def unify(self, a: int, b: int) -> None:
        pending = [(a, b)]
        while pending:
            self.budget -= 1
            if self.budget < 0:
                self.overrun = True
                return
            x, y = (self.find(k) for k in pending.pop())
            if x == y or x not in self.place or y not in self.place:
                continue
            px, py = self.place[x], self.place[y]
            if len(px.names) + len(px.props) < len(py.names) + len(py.props):
                x, y, px, py = y, x, py, px
            self.parent[y] = x
            del self.place[y]
            px.names.update(py.names)
            px.required |= py.required
            px.open = px.open or py.open
            px.min_properties = max(px.min_properties, py.min_properties)
            if py.others is not None:  # one schema's other keys are another's properties
                pending.extend((py.others, p) for p in px.props.values())
            if px.others is not None:
                pending.extend((px.others, p) for p in py.props.values())
            for name, p in py.props.items():
                if name in px.props:
                    pending.append((px.props[name], p))
                else:
                    px.props[name] = p
            for slot in ("elements", "others"):
                mine, theirs = getattr(px, slot), getattr(py, slot)
                if mine is None:
                    setattr(px, slot, theirs)
                elif theirs is not None:
                    pending.append((mine, theirs))


def _names_of(node: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(every key `node` names for its value, those it requires)."""
    names: list[str] = []
    required = [n for n in node.get("required", []) if isinstance(n, str)] if isinstance(node.get("required"),
                                                                                        list) else []
    if isinstance(node.get("properties"), dict):
        names.extend(node["properties"])
    names.extend(required)
    for key in ("dependentRequired", "dependencies", "dependentSchemas"):
        if isinstance(node.get(key), dict):
            for name, value in node[key].items():
                names.append(name)
                if isinstance(value, list):
                    names.extend(v for v in value if isinstance(v, str))
    names_only = node.get("propertyNames")
    if isinstance(names_only, dict):
        listed = names_only.get("enum")
        values = listed if isinstance(listed, list) else [names_only.get("const")]
        names.extend(v for v in values if isinstance(v, str))
    return names, required


def _open_reason(node: dict[str, Any]) -> str | None:
    if isinstance(node.get("patternProperties"), dict) and node["patternProperties"]:
        return ("a schema for the same value takes keys by pattern (`patternProperties`), which cannot all be "
                "listed")
    for key in _OTHER_KEYS:
        if isinstance(node.get(key), dict):
            return f"a schema for the same value takes keys it does not name (`{key}` is a schema)"
    return None


class _Closing:
    """What the walk needs to close objects: the `allOf` branches each object merges, and each place's names."""

    def __init__(self, prepared: Prepared) -> None:
        nodes = prepared.nodes
        self.merges: dict[int, list[tuple[int, _Flat]]] = {}
        self.places = _Places(budget=40 * len(nodes) + 10_000)
        budget = 2 * len(nodes) + 2_000  # property entries merges may add, in all: the output stays linear
        for node in nodes:
            all_of = node.get("allOf")
            if not isinstance(all_of, list) or not isinstance(node.get("properties", {}), dict):
                continue
            merged = []
            for i, branch in enumerate(all_of):
                flat = _flatten(branch)
                if flat is None or not flat.adds():
                    continue
                budget -= len(flat.properties) + len(flat.required)
                if budget < 0:
                    break
                merged.append((i, flat))
            if merged:
                self.merges[id(node)] = merged
        # a merged branch is never sent: its schemas are not linked to what their `$ref`s point at
        absorbed = {id(part) for merged in self.merges.values() for _, flat in merged for part in flat.absorbed}
        for node in nodes:
            self._add(node)
        for node in nodes:
            if id(node) not in absorbed:
                self._join(node)
        self.too_costly = self._list_budget(nodes, budget=2 * len(nodes) + 2_000)

    def _add(self, node: dict[str, Any]) -> None:
        place = self.places.add(node)
        names, required = _names_of(node)
        for _, flat in self.merges.get(id(node), []):
            names.extend(flat.properties)
            names.extend(flat.required)
            required.extend(flat.required)
        place.names.update(dict.fromkeys(names))
        place.required.update(required)
        place.open = _open_reason(node)
        if isinstance(node.get("minProperties"), int) and not isinstance(node["minProperties"], bool):
            place.min_properties = node["minProperties"]

    def _join(self, node: dict[str, Any]) -> None:
        """Link `node`'s place to the schemas applying with it, and its children to their places."""
        places = self.places
        place = places.of(node)
        if place is None:
            return
        me = id(node)
        by_name: dict[str, list[int]] = {}
        if isinstance(node.get("properties"), dict):
            for name, sub in node["properties"].items():
                if isinstance(sub, dict):
                    by_name.setdefault(name, []).append(id(sub))
        for _, flat in self.merges.get(me, []):
            for name, contributions in flat.properties.items():
                by_name.setdefault(name, []).extend(id(sub) for sub, _ in contributions if isinstance(sub, dict))
        for name, ids in by_name.items():
            if not ids:
                continue
            current = places.place.get(places.find(me))
            if current is None:
                return
            if name in current.props:
                places.unify(current.props[name], ids[0])
            else:
                current.props[name] = ids[0]
            for other in ids[1:]:
                places.unify(ids[0], other)
        elements = [sub for key in _ELEMENTS_ONE if isinstance(sub := node.get(key), dict)]
        for key in ("prefixItems", "items"):
            if isinstance(node.get(key), list):
                elements.extend(sub for sub in node[key] if isinstance(sub, dict))
        others = [sub for key in _OTHER_KEYS if isinstance(sub := node.get(key), dict)]
        patterns = node.get("patternProperties")
        if not isinstance(patterns, dict):
            patterns = {}
        others.extend(sub for sub in patterns.values() if isinstance(sub, dict))
        for slot, subs in (("elements", elements), ("others", others)):
            for sub in subs:
                current = places.place[places.find(me)]
                if getattr(current, slot) is None:
                    setattr(current, slot, id(sub))
                else:
                    places.unify(getattr(current, slot), id(sub))
        for pattern, sub in patterns.items():  # a pattern's schema applies to the properties it matches too
            if isinstance(sub, dict):
                for name, ids in by_name.items():
                    if ids and _matches(pattern, name):
                        places.unify(id(sub), ids[0])
        merged = {i for i, _ in self.merges.get(me, [])}
        with_it = [sub for i, sub in enumerate(node.get("allOf", []) if isinstance(node.get("allOf"), list) else [])
                   if i not in merged]
        with_it.extend(sub for key in _IN_PLACE_ONE if isinstance(sub := node.get(key), dict))
        for key in _IN_PLACE_LISTS:
            if isinstance(node.get(key), list):
                with_it.extend(node[key])
        for key in ("dependentSchemas", "dependencies"):
            if isinstance(node.get(key), dict):
                with_it.extend(node[key].values())
        ref = node.get("$ref")
        if isinstance(ref, Ref):
            with_it.append(ref.target)
        for sub in with_it:
            if isinstance(sub, dict) and id(sub) in places.parent:
                places.unify(me, id(sub))

    def _list_budget(self, nodes: list[dict[str, Any]], budget: int) -> set[int]:
        """Places whose listing would cost more than the rest of `budget` allows (most costly first): left open."""
        cost: dict[int, int] = {}
        for node in nodes:
            place = self.places.of(node)
            if place is None or place.open or node.get("additionalProperties") is False:
                continue
            own = set(node.get("properties", {})) if isinstance(node.get("properties"), dict) else set()
            for _, flat in self.merges.get(id(node), []):
                own.update(flat.properties)
            if _is_object(node) or own:
                key = self.places.find(id(node))
                cost[key] = cost.get(key, 0) + max(len(place.names) - len(own), 0)
        total = sum(cost.values())
        costly: set[int] = set()
        for key, spent in sorted(cost.items(), key=lambda item: -item[1]):
            if total <= budget:
                break
            costly.add(key)
            total -= spent
        return costly

    def why_open(self, origin: dict[str, Any] | None) -> str | None:
        """Why the objects of `origin`'s place must stay open (None: they can be closed)."""
        if self.places.overrun:
            return "the schema is too entangled to work out every key its objects may hold"
        place = self.places.of(origin)
        if place is None:
            return None
        if place.open:
            return place.open
        if place.min_properties > len(place.names):
            return "`minProperties` asks for more keys than the schema names for this value"
        if self.places.find(id(origin)) in self.too_costly:
            return "listing every key the schemas for this value name, in each of its objects, would cost too much"
        return None


def _matches(pattern: str, name: str) -> bool:
    try:
        return re.search(pattern, name) is not None
    except (re.error, RecursionError, OverflowError):
        return True  # unknown: as if it matched (one more place joined is looser)


# --- the rule ------------------------------------------------------------------------------------------------------


def _describe_constraints(node: dict[str, Any], keys: list[str], path: str, rewrites: list[str]) -> None:
    """Move constraints the provider cannot enforce into the description, so the model still reads them."""
    if not keys:
        return
    moved = {key: node.pop(key) for key in keys}
    note = "{" + ", ".join(f"{k}: {dumps(v)}" for k, v in moved.items()) + "}"
    if len(note) > MAX_DESCRIBED_CHARS:
        note = note[: MAX_DESCRIBED_CHARS - 1] + "…"
    description = node.get("description")
    node["description"] = f"{description}\n\n{note}" if description and isinstance(description, str) else note
    rewrites.append(f"moved {', '.join(f'`{k}`' for k in moved)} into the description at {path} {MOVED}")


def _add_all_of(node: dict[str, Any], branch: dict[str, Any]) -> None:
    node["allOf"] = [*node.get("allOf", []), branch]


def _split_type_list(node: dict[str, Any], path: str, rewrites: list[str]) -> None:
    types = node.pop("type")
    branches = []
    for type_ in types:
        branch: dict[str, Any] = {"type": type_}
        for key in _BY_TYPE.get(type_, ()) if isinstance(type_, str) else ():
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
    rewrites.append(f"the type list {json.dumps(types, default=str)} became `anyOf` at {path}")


def _loosen_map(node: dict[str, Any], path: str, rewrites: list[str]) -> None:
    """Closing a map would forbid the keys it exists for: it stays open. When the other keys were
    bound anyway (`additionalProperties` false or a schema), its patterns' schemas apply to any other
    key (looser: the answer is still checked against the patterns); when they were free, binding them
    to the patterns would be tighter, so the patterns go into the description instead."""
    if "patternProperties" not in node or node.get("additionalProperties", True) is True \
            or not isinstance(node["patternProperties"], dict):
        return
    patterns = node.pop("patternProperties")
    others = [node["additionalProperties"]] if isinstance(node.get("additionalProperties"), dict) else []
    values = [*patterns.values(), *others]
    if not values:  # `{}` patterns and a closed object: closed it stays
        return
    node["additionalProperties"] = values[0] if len(values) == 1 else {"anyOf": values}
    rewrites.append(f"`patternProperties` at {path} became `additionalProperties` for any other key "
                    "(Anthropic does not take patterns; the answer is still checked for them)")


class _Rule:
    def __init__(self, prepared: Prepared, closing: _Closing, walk: Walk | None, rewrites: list[str]) -> None:
        self.prepared = prepared
        self.closing = closing
        self.walk = walk
        self.rewrites = rewrites

    def __call__(self, node: dict[str, Any], path: str, origin: dict[str, Any] | None, own: bool) -> dict[str, Any]:
        rewrites = self.rewrites
        if own and origin is not None and id(origin) in self.closing.merges:
            self._merge(node, self.closing.merges[id(origin)], path)
        if isinstance(node.get("type"), list):
            _split_type_list(node, path, rewrites)
        if "oneOf" in node:
            one_of = node.pop("oneOf")
            if "anyOf" in node:
                _add_all_of(node, {"anyOf": one_of})
            else:
                node["anyOf"] = one_of
            rewrites.append(f"`oneOf` became `anyOf` at {path}")
        if _is_object(node):
            self._close(node, path, origin)
        for key in [k for k in _IDENTIFIERS if k in node and (k != "id" or self.prepared.id_key == "id")]:
            del node[key]
            rewrites.append(f"dropped `{key}` at {path}: references are sent as places in the whole schema")
        unsupported = [k for k in node if k not in ANTHROPIC_KEYWORDS]
        if "prefixItems" in unsupported and "items" in node:
            unsupported.append("items")  # `items` only applies after the prefix: alone it would bind every item
        if node.get("format") is not None and node.get("format") not in ANTHROPIC_FORMATS:
            unsupported.append("format")
        min_items = node.get("minItems")
        if min_items is not None and not (isinstance(min_items, int) and min_items in (0, 1)):
            unsupported.append("minItems")
        _describe_constraints(node, unsupported, path, rewrites)
        return node

    def _merge(self, node: dict[str, Any], merges: list[tuple[int, _Flat]], path: str) -> None:
        """Merge the branches `_Closing` chose into the node (its `allOf` keeps the others, in order)."""
        properties = dict(node.get("properties", {}))
        required = list(node.get("required", [])) if isinstance(node.get("required"), list) else []
        for i, flat in merges:
            for name, contributions in flat.properties.items():
                values = [self._merged(sub, via_ref) for sub, via_ref in contributions]
                if name in properties:
                    properties[name] = {"allOf": [properties[name], *values]}
                else:
                    properties[name] = values[0] if len(values) == 1 else {"allOf": values}
            required.extend(flat.required)
            if flat.typed:  # the branch demands an object; one without `type` lets anything else through
                node.setdefault("type", "object")
            inlined = ", inlining " + ", ".join(f"`{ref}`" for ref in flat.refs) if flat.refs else ""
            self.rewrites.append(f"`allOf[{i}]` was merged into the object at {path}{inlined}")
        node["properties"] = properties
        if required:
            node["required"] = list(dict.fromkeys(required))
        merged = {i for i, _ in merges}
        kept = [branch for i, branch in enumerate(node["allOf"]) if i not in merged]
        if kept:
            node["allOf"] = kept
        else:
            del node["allOf"]

    def _merged(self, sub: Any, via_ref: bool) -> Any:
        """A merged property's schema: the branch's own, moved; a definition's, copied when small, else a
        reference to where the definition's is compiled (so a recursive definition ends)."""
        if not via_ref or not isinstance(sub, dict):
            return sub
        if _small(sub) and self.walk is not None:
            return self.walk.inline(sub)
        return Ref(sub)

    def _close(self, node: dict[str, Any], path: str, origin: dict[str, Any] | None) -> None:
        rewrites = self.rewrites
        if _is_map(node):
            _loosen_map(node, path, rewrites)
            return
        if node.get("additionalProperties") is False:
            return
        why = self.closing.why_open(origin)
        if why:
            rewrites.append(f"the object at {path} was left open: {why} {FORCED_TOOL}")
            return
        place = self.closing.places.of(origin)
        properties = node.get("properties", {}) if isinstance(node.get("properties"), dict) else {}
        names = place.names if place is not None else dict.fromkeys(
            n for n in node.get("required", []) if isinstance(n, str))
        missing = [name for name in names if name not in properties]
        if missing:
            node["properties"] = {**properties, **{name: {} for name in missing}}
            required = place.required if place is not None else set(missing)
            needed = [n for n in missing if n in required]
            named = [n for n in missing if n not in required]
            if needed:
                rewrites.append(f"required {', '.join(f'`{n}`' for n in needed)} listed under `properties` at {path}")
            if named:
                rewrites.append(f"{', '.join(f'`{n}`' for n in named)} listed under `properties` at {path}: other "
                                "schemas for this value name them, and closed without them it would refuse them")
        had = node.get("additionalProperties", "absent")
        node["additionalProperties"] = False
        rewrites.append(f"`additionalProperties` set to false at {path} (was {dumps(had)}): "
                        "Anthropic's strict mode needs closed objects")


def compile_anthropic(schema: Any) -> CompiledSchema:
    if not isinstance(schema, dict):
        return loosest("anthropic", f"the schema is `{str(schema).lower()}`, not an object")
    rewrites: list[str] = []
    prepared = prepare(schema, rewrites)
    wrapped = prepared.root.get("type") != "object"
    top = wrap_root(prepared, "Anthropic", rewrites) if wrapped else prepared.root
    attach_detached(top, prepared, rewrites)
    rule = _Rule(prepared, _Closing(prepared), None, rewrites)
    walk = Walk(prepared, rule, rewrites)
    rule.walk = walk
    compiled = walk.finish(walk.run(top, rule_on_top=not wrapped))
    return CompiledSchema(compiled, rewrites, WRAP_KEY if wrapped else None)

