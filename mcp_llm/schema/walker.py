"""The walk every provider's compiler shares: a copy of the caller's schema, compiled once per node,
with every reference following its target to wherever that target ends up.

Why a shared walker: each compiler moves schemas about (a type list split into `anyOf` branches,
`definitions` renamed `$defs`, an `allOf` branch merged into its object, a non-object root
wrapped in `{"value": …}`), and a `$ref` written as a path into the caller's schema would then
point at the wrong place, or nowhere. So, before any rule runs:

1. `prepare` copies the schema (never changing the caller's) and resolves every `$ref` once, as the
   validator would (`$id` scopes, anchors, percent-encoding; `referencing` only when the schema has
   nested identifiers or non-pointer references, a plain JSON pointer otherwise), replacing its text
   with a `Ref` that holds the copied target itself.
2. `Walk.run` compiles the copy top-down with a provider's rule, iteratively (no recursion, whatever
   the depth), each copied node once: its output place is its *home*; a node met a second time (a
   schema shared by identity, or one a rule merges elsewhere) becomes a reference to its home.
3. `Walk.finish` writes each `Ref` as a JSON pointer to its target's home (keeping the caller's
   text when it still means that), and drops, saying so, a reference whose target was not sent
   (it lay inside a keyword the provider does not take): dropping a reference is looser, never
   tighter. Nested `$id`s go (a pointer is read from the document's root), each one reported. A
   referenced schema that lies outside every keyword (`definitions.group.name`, a custom root key)
   is copied too and sent under `$defs` (`attach_detached`), so neither it nor its names are lost.

All of it is linear in the schema's size.
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote

WRAP_KEY = "value"

# Keywords whose value is a map of name → schema, a schema, or a list of schemas (`items` is either).
SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas", "dependencies")
SCHEMA_VALUES = ("items", "additionalProperties", "not", "if", "then", "else", "contains", "propertyNames",
                 "unevaluatedItems", "unevaluatedProperties", "additionalItems", "contentSchema")
SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems", "items")
_POINTER_SAFE = "/?:@!$&'()*+,;=~"  # what a URI fragment may hold unescaped (RFC 3986 pchar)


@dataclass
class CompiledSchema:
    """What a provider is sent, the changes made to get it, and the key to unwrap if the root was wrapped."""

    schema: dict[str, Any]
    rewrites: list[str] = field(default_factory=list)
    wrapped_in: str | None = None


class Ref:
    """A `$ref` whose target is known: the copied schema it points at (a dict, a boolean, or None when it
    points outside the schema), and the caller's text (None for a reference a compiler made)."""

    __slots__ = ("target", "text")

    def __init__(self, target: Any, text: str | None = None) -> None:
        self.target = target
        self.text = text

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"Ref({self.text!r})"


def as_text(value: Any) -> Any:
    """For `json.dumps(default=…)`: a `Ref` in a schema written into a description reads as the caller wrote it."""
    if isinstance(value, Ref):
        return value.text if value.text is not None else "(a reference)"
    raise TypeError(f"{type(value).__name__} is not JSON")


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=as_text)


_KIND = {**{key: "map" for key in SCHEMA_MAPS}, **{key: "value" for key in SCHEMA_VALUES},
         **{key: "list" for key in SCHEMA_LISTS if key != "items"}, "items": "items"}
_RANK = {key: rank for rank, key in enumerate(dict.fromkeys([*SCHEMA_MAPS, *SCHEMA_VALUES, *SCHEMA_LISTS]))}


def subschemas(node: dict[str, Any]) -> Iterator[tuple[str, str | int | None, Any]]:
    """(keyword, name or index or None, subschema) for each schema-valued place of `node`, maps first.
    Looks only at the keys the node has (most have two or three): this runs for every node, several times."""
    keys = [key for key in node if key in _KIND]
    if len(keys) > 1:
        keys.sort(key=_RANK.__getitem__)
    for key in keys:
        value = node[key]
        kind = _KIND[key]
        if kind == "items":
            kind = "list" if isinstance(value, list) else "value"
        if kind == "map":
            if isinstance(value, dict):
                for name, sub in value.items():
                    if isinstance(sub, dict | bool | Ref):
                        yield key, name, sub
        elif kind == "value":
            if isinstance(value, dict | bool | Ref):
                yield key, None, value
        elif isinstance(value, list):
            for i, sub in enumerate(value):
                if isinstance(sub, dict | bool | Ref):
                    yield key, i, sub


def schema_nodes(node: Any) -> Iterator[dict[str, Any]]:
    """Every schema object in a tree (not the data inside `enum`, `const`, `default`, `examples`)."""
    stack = [node]
    seen: set[int] = set()
    while stack:
        current = stack.pop()
        if not isinstance(current, dict) or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        stack.extend(sub for _, _, sub in subschemas(current))


def child_path(path: str, key: str, name: str | int | None) -> str:
    """How rewrites name a place: `$.a` for a property, `$[]` for items, `$.anyOf[0]`, `$.$defs.X`."""
    if name is None:
        return f"{path}[]" if key == "items" else f"{path}.{key}"
    if isinstance(name, int):
        return f"{path}.{key}[{name}]"
    return f"{path}.{name}" if key == "properties" else f"{path}.{key}.{name}"


def _segment(value: str | int) -> str:
    return str(value).replace("~", "~0").replace("/", "~1")


def child_pointer(pointer: str, key: str, name: str | int | None) -> str:
    return f"{pointer}/{_segment(key)}" + ("" if name is None else f"/{_segment(name)}")


def fragment(pointer: str) -> str:
    return "#" + quote(pointer, safe=_POINTER_SAFE)


# --- prepare: the copy, with references resolved ------------------------------------------------------------------


@dataclass
class Prepared:
    """The caller's schema, copied: `root`, every copied schema object (`nodes`, root first, and their ids in
    `copies`), every `Ref` made, the keyword that names a resource (`id` up to draft 4, else `$id`), and the
    referenced schemas that lie outside every schema keyword (`detached`, with the first reference's text)."""

    root: Any
    nodes: list[dict[str, Any]]
    copies: set[int]
    refs: list[Ref]
    id_key: str
    detached: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


def id_keyword(dialect: Any) -> str:
    return "id" if isinstance(dialect, str) and ("draft-03" in dialect or "draft-04" in dialect) else "$id"


def prepare(schema: Any, rewrites: list[str]) -> Prepared:
    """Copy `schema` (its schema objects; the data in `enum`, `default`… is shared, and never changed) and
    resolve its references. The root's `$schema` goes: what is sent is read as draft 2020-12."""
    if not isinstance(schema, dict):
        return Prepared(schema, [], set(), [], "$id")
    copier = _Copier(id_keyword(schema.get("$schema")))
    root = copier.copy(schema, is_root=True)
    if "$schema" in root:
        del root["$schema"]
        rewrites.append("dropped `$schema` at $")
    refs = copier.resolve(schema)
    return Prepared(root, copier.nodes, {id(n) for n in copier.nodes}, refs, copier.id_key, copier.detached)


class _Copier:
    """The copy `prepare` makes: schema objects copied (each once, by identity), their `$ref`s resolved."""

    def __init__(self, id_key: str) -> None:
        self.id_key = id_key
        self.memo: dict[int, dict[str, Any]] = {}  # id(caller's node) → its copy
        self.nodes: list[dict[str, Any]] = []
        self.with_ref: list[tuple[dict[str, Any], dict[str, Any]]] = []  # (copy, caller's node) holding a `$ref`
        self.nested_ids = False
        self.detached: list[tuple[str, dict[str, Any]]] = []  # (caller's text, copy) of targets outside keywords

    def copy(self, schema: dict[str, Any], is_root: bool = False) -> dict[str, Any]:
        holder: dict[str, Any] = {}
        stack: list[tuple[dict[str, Any], Any, Any, bool]] = [(schema, holder, "root", is_root)]
        while stack:
            original, container, key, at_root = stack.pop()
            if id(original) in self.memo:
                container[key] = self.memo[id(original)]
                continue
            node = dict(original)
            self.memo[id(original)] = node
            self.nodes.append(node)
            container[key] = node
            if isinstance(node.get("$ref"), str):
                self.with_ref.append((node, original))
            if not at_root and (isinstance(node.get(self.id_key), str) or isinstance(node.get("$anchor"), str)):
                self.nested_ids = True
            children: list[tuple[dict[str, Any], Any, Any]] = []
            for keyword, name, sub in subschemas(original):
                if name is None:
                    if isinstance(sub, dict):
                        children.append((sub, node, keyword))
                    continue
                if not isinstance(node[keyword], dict | list) or node[keyword] is original[keyword]:
                    node[keyword] = copy.copy(original[keyword])  # a fresh container for the copied children
                if isinstance(sub, dict):
                    children.append((sub, node[keyword], name))
            stack.extend((sub, place, name, False) for sub, place, name in reversed(children))
        return holder["root"]

    def resolve(self, schema: dict[str, Any]) -> list[Ref]:
        """Each copy's `$ref` text becomes a `Ref` to the copied target. A plain pointer (`#`, `#/…`) in a
        schema without nested identifiers is followed directly (the common case, and fast on a 1 MB schema);
        anything else goes through `referencing`, scope by scope; what cannot be resolved points at None
        (dropped later). A target that is a schema object but outside every keyword the walk knows (under
        `definitions.group.name`, or a custom key at the root) is copied too: the compilers send it under
        `$defs` (`attach_detached`), so the reference, and the names its target gives an object, are kept."""
        any_other = any(not _is_pointer(o["$ref"]) for _, o in self.with_ref)
        scopes = _scopes(schema, self.id_key) if self.nested_ids or any_other else None
        refs = []
        i = 0
        while i < len(self.with_ref):  # grows as detached targets are copied
            node, original = self.with_ref[i]
            i += 1
            text = original["$ref"]
            target: Any = None
            try:
                direct = scopes is None or (_is_pointer(text) and not self.nested_ids)
                if direct or scopes is None:
                    target = _pointer(schema, unquote(text[1:]))
                else:
                    target = scopes(original).lookup(text).contents
            except Exception:  # unresolvable, or a shape `referencing` cannot crawl: looser, never fatal
                target = None
            if isinstance(target, dict):
                if id(target) not in self.memo:
                    self.detached.append((text, self.copy(target)))
                target = self.memo[id(target)]
            elif not isinstance(target, bool):
                target = None
            ref = Ref(target, text)
            node["$ref"] = ref
            refs.append(ref)
        return refs


def _is_pointer(text: str) -> bool:
    return text == "#" or text.startswith("#/")


def _pointer(document: Any, pointer: str) -> Any:
    """The value at a JSON pointer (already unquoted), or None."""
    if pointer == "":
        return document
    if not pointer.startswith("/"):
        return None
    node = document
    for raw in pointer[1:].split("/"):
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def _scopes(schema: dict[str, Any], id_key: str) -> Callable[[dict[str, Any]], Any]:
    """A function: the caller's node holding a `$ref` → the `referencing` resolver of its `$id` scope."""
    from referencing import Registry
    from referencing.jsonschema import DRAFT202012, specification_with

    try:
        specification = specification_with(schema.get("$schema") or "", default=DRAFT202012)
    except Exception:  # an unknown dialect: read as 2020-12
        specification = DRAFT202012
    resource = specification.create_resource(schema)
    base = resource.id() or ""
    try:  # crawled once, so each anchor lookup is a dict hit
        registry = Registry().with_resource(base, resource).crawl()
    except Exception:  # a shape it cannot crawl: anchors and nested ids then stay unresolved
        registry = Registry().with_resource(base, resource)
    root = registry.resolver(base)
    resolver_of: dict[int, Any] = {}
    stack: list[tuple[Any, Any]] = [(schema, root)]
    while stack:
        node, resolver = stack.pop()
        if not isinstance(node, dict) or id(node) in resolver_of:
            continue
        if node is not schema and isinstance(node.get(id_key), str):
            with contextlib.suppress(Exception):  # a shape it cannot read: the outer scope stays
                resolver = resolver.in_subresource(specification.create_resource(node))
        resolver_of[id(node)] = resolver
        stack.extend((sub, resolver) for _, _, sub in subschemas(node) if isinstance(sub, dict))
    return lambda node: resolver_of.get(id(node), root)


# --- the walk ------------------------------------------------------------------------------------------------------

# A rule gets a node (a fresh dict it may change), its path, the copied node it stands for (None for one a
# compiler made, such as a wrapper), and whether it IS that node (False for, say, an `anyOf` branch a type
# list was split into); it returns the node to send, whose subschemas are then walked in turn.
Rule = Callable[[dict[str, Any], str, "dict[str, Any] | None", bool], dict[str, Any]]


class Walk:
    """One compilation: the rule applied to each copied node once, top-down; then references written."""

    def __init__(self, prepared: Prepared, rule: Rule | None, rewrites: list[str]) -> None:
        self.prepared = prepared
        self.rule = rule
        self.rewrites = rewrites
        self.home: dict[int, str] = {}  # id(copied node) → the JSON pointer of its compiled form
        self.origin: dict[int, dict[str, Any]] = {}  # id(node a rule made) → the copied node it stands for
        self.fresh: set[int] = set()  # nodes copied again to be compiled in a second place (see `inline`)
        self.found: list[tuple[dict[str, Any], Any, Any, str, str]] = []  # placed nodes whose `$ref` is a `Ref`

    def run(self, top: Any, *, rule_on_top: bool = True) -> Any:
        holder: dict[str, Any] = {}
        self._walk([(top, holder, "top", "$", "", None, rule_on_top)])
        return holder["top"]

    def inline(self, node: Any) -> Any:
        """A fresh copy of a small subtree, to be compiled where a rule puts it as well as at its home:
        each copied dict stands for (has as origin) the node it copies. Its references stay `Ref`s."""
        if not isinstance(node, dict):
            return node
        holder: dict[str, Any] = {}
        stack: list[tuple[dict[str, Any], Any, Any]] = [(node, holder, "x")]
        while stack:
            source, container, key = stack.pop()
            twin = dict(source)
            self.origin[id(twin)] = self.origin.get(id(source), source)
            self.fresh.add(id(twin))
            container[key] = twin
            for keyword, name, sub in subschemas(source):
                if name is not None and twin[keyword] is source[keyword]:
                    twin[keyword] = copy.copy(source[keyword])
                if isinstance(sub, dict):
                    stack.append((sub, twin if name is None else twin[keyword], keyword if name is None else name))
        return holder["x"]

    def _walk(self, stack: list[tuple[Any, Any, Any, str, str, dict[str, Any] | None, bool]]) -> None:
        copies = self.prepared.copies
        while stack:
            node, container, key, path, pointer, origin, apply = stack.pop()
            if isinstance(node, Ref):
                container[key] = placed = {"$ref": node}
                self.found.append((placed, container, key, path, pointer))
                continue
            if not isinstance(node, dict):
                container[key] = node
                continue
            own = False
            if id(node) in copies:
                if id(node) in self.home:  # met again: a reference to where it was compiled
                    container[key] = placed = {"$ref": Ref(node)}
                    self.found.append((placed, container, key, path, pointer))
                    continue
                self.home[id(node)] = pointer
                origin, own = node, True
                node = _tuple_items(self._without_nested_id(node, path), path, self.rewrites)
            elif id(node) in self.fresh:
                origin, own = self.origin[id(node)], True
                node = _tuple_items(self._without_nested_id(node, path, report=False), path, [])
            else:
                origin = self.origin.get(id(node), origin)
            out = self.rule(dict(node), path, origin, own) if apply and self.rule else dict(node)
            container[key] = out
            if isinstance(out.get("$ref"), Ref):
                self.found.append((out, container, key, path, pointer))
            children = []
            containers: dict[str, Any] = {}  # a fresh map or list per keyword: the rule's may be the copy's own
            for keyword, name, sub in subschemas(out):
                if name is None:
                    place: Any = out
                    slot: Any = keyword
                else:
                    if keyword not in containers:
                        containers[keyword] = out[keyword] = copy.copy(out[keyword])
                    place, slot = containers[keyword], name
                if isinstance(sub, dict | Ref):
                    children.append((sub, place, slot, child_path(path, keyword, name),
                                     child_pointer(pointer, keyword, name), origin, True))
            stack.extend(reversed(children))

    def _without_nested_id(self, node: dict[str, Any], path: str, report: bool = True) -> dict[str, Any]:
        """A nested `$id` would make every pointer inside it relative to itself: it goes (the root's may stay).
        What is sent is read as 2020-12, where `$id` is an identifier even if the caller's draft-04 did not
        read it; the dialect's own `id` goes too."""
        keys = [k for k in dict.fromkeys(("$id", self.prepared.id_key)) if isinstance(node.get(k), str)]
        if node is self.prepared.root or not keys:
            return node
        if report:
            self.rewrites.extend(f"dropped `{key}` at {path}: references into it are sent as places in the whole "
                                 "schema" for key in keys)
        return {k: v for k, v in node.items() if k not in keys}

    def finish(self, out: Any) -> Any:
        """Write every `Ref` the walk placed as a pointer to its target's home, and drop (with a rewrite) a
        reference whose target was not sent. A node merged elsewhere whose home was never compiled (it lay
        inside a keyword the provider does not take) is compiled where it was merged, first."""
        holder = {"top": out}
        written = []
        i = 0
        while i < len(self.found):  # grows while merged nodes are compiled in place
            node, container, key, path, pointer = self.found[i]
            i += 1
            ref = node["$ref"]
            target = ref.target
            if ref.text is None and len(node) == 1 and isinstance(target, dict) \
                    and id(target) in self.prepared.copies and id(target) not in self.home:
                self._walk([(target, container, key, path, pointer, None, True)])  # its first place
                continue
            written.append((node, ref))
        for node, ref in written:
            self._write(node, ref, holder["top"])
        try:
            json.dumps(holder["top"])
        except (TypeError, ValueError):  # a `Ref` a rule left where the walk does not look: never sent
            _scrub(holder["top"], self.rewrites)
        return holder["top"]

    def _write(self, node: dict[str, Any], ref: Ref, out: Any) -> None:
        target, text = ref.target, ref.text
        if isinstance(target, dict) and id(target) in self.home:
            home = self.home[id(target)]
            keeps = text is not None and text.startswith("#") and unquote(text[1:]) == home
            node["$ref"] = text if keeps else fragment(home)
            return
        if isinstance(target, bool) and text is not None and _is_pointer(text) \
                and _pointer(out, unquote(text[1:])) is target:
            node["$ref"] = text  # a boolean schema still where the caller's text says
            return
        del node["$ref"]
        shown = json.dumps(text) if text is not None else "made for a merged schema"
        self.rewrites.append(f"dropped the $ref {shown}: it pointed at a part of the schema this provider does not "
                             "take (the answer is still checked against it)")


def _tuple_items(node: dict[str, Any], path: str, rewrites: list[str]) -> dict[str, Any]:
    """A list under `items` (drafts before 2020-12: one schema per position, `additionalItems` for the rest)
    is `prefixItems` in what is sent, which is read as 2020-12, where a list there is no schema at all.
    normalize.py does this for a caller's older draft; this is for one left in a place it does not read."""
    if not isinstance(node.get("items"), list) or "prefixItems" in node:
        return node
    node = dict(node)
    node["prefixItems"] = node.pop("items")
    if "additionalItems" in node:
        node["items"] = node.pop("additionalItems")
    rewrites.append(f"the list under `items` became `prefixItems` at {path}")
    return node


def _scrub(out: Any, rewrites: list[str]) -> None:
    """Last guard: no `Ref` may reach a provider, wherever a rule left it."""
    stack = [out]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            for key, item in list(value.items()):
                if isinstance(item, Ref):
                    del value[key]
                    rewrites.append(f"dropped the $ref {json.dumps(item.text)}: it was left where it cannot be "
                                    "followed (the answer is still checked against it)")
                else:
                    stack.append(item)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, Ref):
                    value[i] = {}
                else:
                    stack.append(item)


def attach_detached(top: dict[str, Any], prepared: Prepared, rewrites: list[str]) -> None:
    """Send each referenced schema that lay outside every keyword under the top's `$defs` (or its
    `definitions`, when it has those alone), under a free name: its references then point there."""
    if not prepared.detached:
        return
    key = "definitions" if "definitions" in top and "$defs" not in top else "$defs"
    container = dict(top[key]) if isinstance(top.get(key), dict) else {}
    for text, node in prepared.detached:
        name = next(n for n in (f"ref{i or ''}" for i in range(len(container) + 1)) if n not in container)
        container[name] = node
        rewrites.append(f"the schema {json.dumps(text)} points at lies outside every keyword, so it is sent as "
                        f"`{key}.{name}`")
    top[key] = container


# --- the wrapper, and the loosest schema ---------------------------------------------------------------------------


def wrap_root(prepared: Prepared, provider: str, rewrites: list[str]) -> dict[str, Any]:
    """A non-object root becomes `{"value": root}` (OpenAI and Anthropic need an object root), closed; its
    `$defs`/`definitions` move up to the wrapper, where their references still find them. A root that
    references point at moves into `$defs` (under a free name) and `value` refers to it there; either way
    every reference follows its target (`Walk.finish`), and the root's own `$id` goes."""
    root = prepared.root
    defs = {key: root.pop(key) for key in ("$defs", "definitions") if isinstance(root.get(key), dict)}
    rewrites.append(f"the root was wrapped as {{\"{WRAP_KEY}\": …}} ({provider} needs an object root); "
                    "the answer is unwrapped again")
    for key in dict.fromkeys(("$id", prepared.id_key)):  # read as 2020-12, `$id` is one even in a draft-04 schema
        if isinstance(root.get(key), str):
            del root[key]
            rewrites.append(f"dropped `{key}` at $: the wrapper is the document now")
    value: Any = root
    if any(ref.target is root for ref in prepared.refs):
        taken = defs.get("$defs", {})
        name = next(n for n in (f"root{i or ''}" for i in range(len(taken) + 1)) if n not in taken)
        defs["$defs"] = {**taken, name: root}
        value = Ref(root)
        rewrites.append(f"the root moved to `$defs.{name}`, and references to it with it")
    return {"type": "object", "properties": {WRAP_KEY: value}, "required": [WRAP_KEY], "additionalProperties": False,
            **defs}


def loosest(provider: str, why: str) -> CompiledSchema:
    """The loosest schema `provider` takes (any JSON value, or any inside the object root it needs), for a
    schema it could not be compiled from: the answer is still checked against the caller's schema."""
    rewrite = f"{why}: {provider} gets the loosest schema it takes (the answer is still checked against yours)"
    if provider == "gemini":
        return CompiledSchema({}, [rewrite])
    wrapper = {"type": "object", "properties": {WRAP_KEY: {}}, "required": [WRAP_KEY], "additionalProperties": False}
    return CompiledSchema(wrapper, [rewrite], WRAP_KEY)
