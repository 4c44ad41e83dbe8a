"""The gate a caller's schema passes before any model is called: nothing that passes can crash
or stall validation of the reply later.

Checked, in order, each failure a `SchemaError` that says what to change:
1. size (`limits.schema_max_bytes`) and nesting depth (`limits.schema_max_depth`);
2. the dialect (`$schema` must name one jsonschema knows) and the meta-schema;
3. every `$ref` / `$dynamicRef` / `$recursiveRef` (at most `limits.schema_max_refs`), resolved
   exactly as the validator will (with `referencing`, from the right base URI), and landing on a
   schema, not on a list or a string;
4. the graph of "in place" applications (`allOf`, `anyOf`, `oneOf`, `not`, `if`/`then`/`else`,
   `dependentSchemas`, references): a cycle there means validating one value never ends
   (`{"not": {"$ref": "#"}}`), so it is refused; and the number of schemas applied to one value,
   references followed (`limits.schema_max_expansion`), is bounded, so a chain of references
   cannot make validation exponential. Cycles through a keyword that descends into the value
   (`properties`, `items`, …) are fine: they end with the value;
5. every `pattern` (and `patternProperties` key) is an ECMA-262 regular expression that the
   bounded-time engine of regex.py can run, so no reply can stall the validator on a pattern.

`$dynamicRef` is taken to point at every `$dynamicAnchor` of its name (what the dynamic scope
may pick), so the cycle check is sound for it too. All the walking is iterative.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from mcp_llm.errors import SchemaError
from mcp_llm.schema.canonical import clip as _clip
from mcp_llm.schema.limits import SchemaLimits

# Keywords whose subschemas apply to the same value ("in place"), or to parts of it ("descending").
_IN_PLACE_ONE = ("not", "if", "then", "else")
_IN_PLACE_LISTS = ("allOf", "anyOf", "oneOf")
_IN_PLACE_MAPS = ("dependentSchemas",)
_DESCENDING_ONE = ("additionalProperties", "contains", "propertyNames", "unevaluatedItems",
                   "unevaluatedProperties", "additionalItems")
_DESCENDING_MAPS = ("properties", "patternProperties")
_DESCENDING_LISTS = ("prefixItems",)
_CONTAINERS = ("$defs", "definitions")  # schemas that apply only when referenced
_REF_KEYWORDS = ("$ref", "$dynamicRef", "$recursiveRef")


def check_limits(schema: Any, limits: SchemaLimits, canonical: str) -> None:
    """Size and nesting depth, before anything else looks at the schema."""
    if len(canonical) > limits.max_bytes:
        raise SchemaError(
            f"The schema is {len(canonical):,} bytes, over the {limits.max_bytes:,}-byte limit.",
            hint="Send a smaller schema (describe long lists in the prompt), or raise limits.schema_max_bytes.",
        )
    check_depth(schema, limits)


def check_depth(schema: Any, limits: SchemaLimits) -> None:
    if json_depth(schema, limits.max_depth + 1) > limits.max_depth:
        raise too_deep(limits)


def too_deep(limits: SchemaLimits) -> SchemaError:
    return SchemaError(
        f"The schema is nested more than {limits.max_depth} levels deep.",
        hint="Flatten it with $defs and $ref, or raise limits.schema_max_depth.",
    )


def json_depth(value: Any, stop_at: int) -> int:
    """The nesting depth of plain JSON data (a scalar is 0), counting no further than `stop_at`."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        depth += 1
        if depth > deepest:
            deepest = depth
            if deepest >= stop_at:
                return deepest
        stack.extend((child, depth) for child in children if isinstance(child, dict | list))
    return deepest


def count_references(schema: dict[str, Any], limits: SchemaLimits) -> None:
    """Refuse too many references before anything costly (the meta-schema check of a schema with
    thousands of references takes seconds)."""
    refs = 0
    stack: list[tuple[Any, str]] = [(schema, "$")]
    while stack:
        node, path = stack.pop()
        if not isinstance(node, dict):
            continue
        refs += sum(1 for keyword in _REF_KEYWORDS if isinstance(node.get(keyword), str))
        if refs > limits.max_refs:
            raise SchemaError(
                f"The schema has more than {limits.max_refs} references.",
                hint="Reuse fewer $defs, or raise limits.schema_max_refs.",
            )
        stack.extend((child, child_path) for child, child_path, _ in _subschemas(node, path, ""))


def check_references(schema: dict[str, Any], dialect_id: str, limits: SchemaLimits) -> None:
    """Every reference resolves to a schema; no in-place cycle; bounded expansion; safe patterns."""
    from jsonschema_specifications import REGISTRY as SPECIFICATIONS
    from referencing.exceptions import Unresolvable
    from referencing.jsonschema import specification_with

    from mcp_llm.schema.quirks import crawlable

    draft3 = "draft-03" in dialect_id
    schema = crawlable(schema, draft3=draft3)  # the same meaning, in shapes `referencing` can crawl
    specification = specification_with(dialect_id)
    root = specification.create_resource(schema)
    base_uri = root.id() or ""
    # crawled once, so each anchor lookup is a dict hit (an uncrawled registry crawls on every lookup)
    resolver = SPECIFICATIONS.with_resource(base_uri, root).crawl().resolver(base_uri)

    in_place: dict[int, list[int]] = {}
    nodes: dict[int, Any] = {}
    dynamic_anchors: dict[str, list[int]] = {}
    recursive_anchors: list[int] = []
    dynamic_refs: list[tuple[int, str]] = []
    refs = 0
    stack: list[tuple[Any, Any, str]] = [(schema, resolver, "$")]
    while stack:
        node, node_resolver, path = stack.pop()
        if not isinstance(node, dict) or id(node) in nodes:
            continue
        nodes[id(node)] = node
        _check_patterns(node, path)
        if isinstance(node.get("$id"), str) or isinstance(node.get("id"), str):
            node_resolver = node_resolver.in_subresource(specification.create_resource(node))
        edges = in_place.setdefault(id(node), [])
        if isinstance(node.get("$dynamicAnchor"), str):
            dynamic_anchors.setdefault(node["$dynamicAnchor"], []).append(id(node))
        if node.get("$recursiveAnchor") is True:
            recursive_anchors.append(id(node))
        for keyword in _REF_KEYWORDS:
            ref = node.get(keyword)
            if not isinstance(ref, str):
                continue
            refs += 1
            if refs > limits.max_refs:
                raise SchemaError(
                    f"The schema has more than {limits.max_refs} references.",
                    hint="Reuse fewer $defs, or raise limits.schema_max_refs.",
                )
            try:
                resolved = node_resolver.lookup(ref)
            except Unresolvable:
                raise SchemaError(
                    f"The schema's {keyword} {ref!r} points nowhere (at {path}).",
                    hint="Use local references such as '#/$defs/Name' (percent-encoded where needed) or "
                    "'#anchor' that exist in the schema; remote references are not fetched.",
                ) from None
            target = resolved.contents
            if not isinstance(target, dict | bool):
                raise SchemaError(
                    f"The schema's {keyword} {ref!r} points at a {type(target).__name__}, not a schema (at {path}).",
                    hint="Point it at a schema object, such as an entry of $defs.",
                )
            if isinstance(target, dict):
                edges.append(id(target))
                stack.append((target, resolved.resolver, f"{path}.{keyword}"))
            if keyword == "$dynamicRef" and "#" in ref:
                dynamic_refs.append((id(node), ref.rsplit("#", 1)[1]))
            if keyword == "$recursiveRef":
                dynamic_refs.append((id(node), "\0recursive"))
        for child, child_path, place in _subschemas(node, path, dialect_id):
            if place == "in_place" and isinstance(child, dict):
                edges.append(id(child))
            if isinstance(child, dict):
                stack.append((child, node_resolver, child_path))
    for source, name in dynamic_refs:
        targets = recursive_anchors if name == "\0recursive" else dynamic_anchors.get(name, [])
        in_place[source].extend(targets)
    _check_in_place_graph(in_place, id(schema), limits)


def _subschemas(node: dict[str, Any], path: str, dialect_id: str) -> Iterator[tuple[Any, str, str]]:
    """(subschema, its path, "in_place" | "descending" | "container") for each schema-valued keyword."""
    for key in _IN_PLACE_ONE:
        if key in node:
            yield node[key], f"{path}.{key}", "in_place"
    for key in _IN_PLACE_LISTS:
        if isinstance(node.get(key), list):
            for i, sub in enumerate(node[key]):
                yield sub, f"{path}.{key}[{i}]", "in_place"
    for key in _IN_PLACE_MAPS:
        if isinstance(node.get(key), dict):
            for name, sub in node[key].items():
                yield sub, f"{path}.{key}.{name}", "in_place"
    if "draft-03" in dialect_id:  # `extends` (one schema or a list), and schemas inside `type` / `disallow`
        extends = node.get("extends")
        for i, sub in enumerate(extends if isinstance(extends, list) else [extends] if extends is not None else []):
            yield sub, f"{path}.extends[{i}]", "in_place"
        for key in ("type", "disallow"):
            if isinstance(node.get(key), list):
                for i, sub in enumerate(node[key]):
                    if isinstance(sub, dict):
                        yield sub, f"{path}.{key}[{i}]", "in_place"
    if isinstance(node.get("dependencies"), dict):  # drafts 4-7: a schema (in place) or a list of names
        for name, sub in node["dependencies"].items():
            yield sub, f"{path}.dependencies.{name}", "in_place"
    for key in _DESCENDING_ONE:
        if key in node:
            yield node[key], f"{path}.{key}", "descending"
    for key in _DESCENDING_MAPS:
        if isinstance(node.get(key), dict):
            for name, sub in node[key].items():
                yield sub, f"{path}.{key}.{name}", "descending"
    for key in _DESCENDING_LISTS:
        if isinstance(node.get(key), list):
            for i, sub in enumerate(node[key]):
                yield sub, f"{path}.{key}[{i}]", "descending"
    items = node.get("items")
    if isinstance(items, list):  # drafts before 2020-12: a list of schemas
        for i, sub in enumerate(items):
            yield sub, f"{path}.items[{i}]", "descending"
    elif items is not None:
        yield items, f"{path}.items", "descending"
    for key in _CONTAINERS:
        if isinstance(node.get(key), dict):
            for name, sub in node[key].items():
                yield sub, f"{path}.{key}.{name}", "container"


def _check_in_place_graph(edges: dict[int, list[int]], root: int, limits: SchemaLimits) -> None:
    """Refuse an in-place cycle; bound how many schemas (and how deep a chain) apply to one value."""
    state: dict[int, int] = {}  # 1: on the current path, 2: done
    expansion: dict[int, int] = {}
    chain: dict[int, int] = {}
    for start in edges:
        if state.get(start):
            continue
        stack: list[tuple[int, int]] = [(start, 0)]
        state[start] = 1
        while stack:
            node, index = stack[-1]
            children = edges.get(node, [])
            if index < len(children):
                stack[-1] = (node, index + 1)
                child = children[index]
                mark = state.get(child)
                if mark == 1:
                    raise SchemaError(
                        "The schema refers back to itself without descending into the value (for example "
                        '{"not": {"$ref": "#"}}), so checking any answer against it would never end.',
                        hint="Make every recursive $ref go through properties or items, as a tree's "
                        "children do.",
                    )
                if not mark:
                    state[child] = 1
                    stack.append((child, 0))
                continue
            stack.pop()
            state[node] = 2
            expansion[node] = min(1 + sum(expansion.get(c, 1) for c in children), 1 << 40)
            chain[node] = 1 + max((chain.get(c, 1) for c in children), default=0)
    for node, count in expansion.items():
        if count > limits.max_expansion:
            raise SchemaError(
                f"Checking one value against this schema would apply {count:,} subschemas "
                f"(the limit is {limits.max_expansion:,}): its references multiply.",
                hint="Reference each definition once per level instead of in several branches, "
                "or raise limits.schema_max_expansion.",
            )
        if chain[node] > limits.max_in_place_chain:
            raise SchemaError(
                f"The schema chains {chain[node]} references or combinators inside one another "
                f"(the limit is {limits.max_in_place_chain}).",
                hint="Inline some of the chain, or point references straight at their final definition.",
            )


def _check_patterns(node: dict[str, Any], path: str) -> None:
    """Every `pattern` and `patternProperties` key must be an ECMA-262 regular expression the bounded
    engine can run (regex.py): found now, it is a clear error; found on a reply, it would be a
    reply nobody can check."""
    from mcp_llm.schema.regex import PatternError, compile_pattern

    patterns = []
    if isinstance(node.get("pattern"), str):
        patterns.append((node["pattern"], f"{path}.pattern"))
    if isinstance(node.get("patternProperties"), dict):
        patterns.extend((p, f"{path}.patternProperties") for p in node["patternProperties"])
    for pattern, where in patterns:
        try:
            compile_pattern(pattern)
        except PatternError as exc:
            raise SchemaError(
                f"The pattern {json.dumps(_clip(pattern))} at {where} cannot be used: {exc}.",
                hint="Write it as a JavaScript (ECMA-262) regular expression, e.g. `^[a-z]+$` or `^\\p{L}+$`.",
            ) from None
