"""A copy of a schema that the `referencing` library can crawl, with the same meaning.

`referencing` 0.37 takes every value of a `dependencies` map (drafts 3 to 7) for a subschema and
draft 3's `extends` for a list, so a name list (`"dependencies": {"b": ["a"]}`, valid since draft
4) or a single `extends` schema crashes it with an AttributeError as soon as anchors or ids are
looked up: SchemaStore's `tmlanguage.json` crashed the gate, and a reply to such a schema could
never be checked. Both shapes have an exact equivalent the library reads:
- drafts 4-7: a name list → `{"required": [...]}` (an empty list → `{}`), which is what it means;
- draft 3: a name or a name list → `{"properties": {name: {"required": true}}}`, and a single
  `extends` schema → a one-item list.
And a `$schema` inside a subschema that is not a resource of its own (no `$id`) is dropped:
drafts up to 7 say it must not appear there, 2019-09 and later honour it only beside `$id`, yet
`referencing` switches dialect on it and crashes on a draft-04 subschema holding `true`
(SchemaStore's `config.json` nests 229 of them); the root's dialect then applies, as it should.
Only the validator and the gate's reference check see the copy; error messages may then say
"is a required property" where jsonschema would have said "is a dependency of".
"""

from __future__ import annotations

from typing import Any

_SUBSCHEMA_VALUES = ("additionalItems", "additionalProperties", "not", "items", "extends", "contains",
                     "propertyNames", "if", "then", "else")
_SUBSCHEMA_MAPS = ("properties", "patternProperties", "definitions", "$defs", "dependencies")
_SUBSCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "items", "extends", "disallow", "type")


def crawlable(schema: Any, draft3: bool = False) -> Any:
    """`schema` itself when nothing needs changing (the common case), else a fixed copy."""
    if not _needs_fix(schema, draft3):
        return schema
    return _fixed(schema, draft3)


def _names_as_schema(names: Any, draft3: bool) -> Any:
    names = [names] if isinstance(names, str) else list(names)
    if draft3:
        return {"properties": {name: {"required": True} for name in names}} if names else {}
    return {"required": names} if names else {}


def _children(node: dict[str, Any]) -> list[Any]:
    found: list[Any] = []
    for key in _SUBSCHEMA_VALUES:
        if isinstance(node.get(key), dict):
            found.append(node[key])
    for key in _SUBSCHEMA_MAPS:
        if isinstance(node.get(key), dict):
            found.extend(v for v in node[key].values() if isinstance(v, dict))
    for key in _SUBSCHEMA_LISTS:
        if isinstance(node.get(key), list):
            found.extend(v for v in node[key] if isinstance(v, dict))
    return found


def _stray_dialect(node: dict[str, Any]) -> bool:
    return "$schema" in node and not isinstance(node.get("$id"), str) and not isinstance(node.get("id"), str)


def _broken_here(node: dict[str, Any], draft3: bool, *, root: bool) -> bool:
    if not root and _stray_dialect(node):
        return True
    dependencies = node.get("dependencies")
    if isinstance(dependencies, dict) and any(not isinstance(v, dict | bool) for v in dependencies.values()):
        return True
    return draft3 and isinstance(node.get("extends"), dict)


def _needs_fix(schema: Any, draft3: bool) -> bool:
    if not isinstance(schema, dict):
        return False
    stack = [schema]
    while stack:
        node = stack.pop()
        if _broken_here(node, draft3, root=node is schema):
            return True
        stack.extend(_children(node))
    return False


def _fixed(schema: Any, draft3: bool) -> Any:
    """A copy with every broken shape replaced; iterative, so any depth the gate admits is fine."""
    root = dict(schema)
    stack = [root]
    while stack:
        node = stack.pop()
        if node is not root and _stray_dialect(node):
            del node["$schema"]
        dependencies = node.get("dependencies")
        if isinstance(dependencies, dict):
            node["dependencies"] = {k: v if isinstance(v, dict | bool) else _names_as_schema(v, draft3)
                                    for k, v in dependencies.items()}
        if draft3 and isinstance(node.get("extends"), dict):
            node["extends"] = [node["extends"]]
        for key in _SUBSCHEMA_VALUES:
            if isinstance(node.get(key), dict):
                node[key] = dict(node[key])
                stack.append(node[key])
        for key in _SUBSCHEMA_MAPS:
            if isinstance(node.get(key), dict):
                node[key] = {k: dict(v) if isinstance(v, dict) else v for k, v in node[key].items()}
                stack.extend(v for v in node[key].values() if isinstance(v, dict))
        for key in _SUBSCHEMA_LISTS:
            if isinstance(node.get(key), list):
                node[key] = [dict(v) if isinstance(v, dict) else v for v in node[key]]
                stack.extend(v for v in node[key] if isinstance(v, dict))
    return root
