"""A schema written for draft 3, 4, 6, 7 or 2019-09, rewritten as draft 2020-12 with the same meaning.

Every provider reads a schema as draft 2020-12, whatever its `$schema` says, and several keywords
changed meaning on the way there: a draft-07 `{"$ref": …, "maxItems": 2}` ignores `maxItems`, a
2020-12 one applies it; draft-04 `exclusiveMaximum: true` turned into a number; a list under `items`
became `prefixItems`, `additionalItems` became `items`, `dependencies` split in two, `$id: "#foo"`
became `$anchor`. Sent as is (the compilers only drop `$schema`), a provider would constrain its
output with a different schema from the caller's. `to_2020_12` translates the schema so that every
instance gets the same verdict (formats aside); the reply is still validated against the original.

How: one walk over the caller's schema (the keywords that hold subschemas in its draft, and in
2020-12), where every `$ref` is resolved with `referencing`, exactly as jsonschema resolves it
(base URIs from `$id`/`id`, anchors, pointers through nested resources); then one walk that builds
the 2020-12 schema top-down, recording where each subschema went; then every reference whose
target moved (`definitions` → `$defs`, `items` → `prefixItems`, a subschema kept reachable after
its keyword was dropped) is rewritten to point at the same subschema again, and all of them are
checked by resolving them in the result under 2020-12. Everything is iterative and linear in the
schema's size; data (`enum`, `const`, `default`, `examples`) is copied, never read as schemas.

What cannot be made exact is left and said: draft 3/4 count 1.0 as a non-integer (2020-12 cannot
tell 1.0 from 1), and a `$recursiveRef` whose dynamic scope could skip a resource (2019-09 stops
there, `$dynamicRef` does not) is left as it is.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote, urljoin

SCHEMA_2020_12 = "https://json-schema.org/draft/2020-12/schema"

Path = tuple[str | int, ...]

DRAFT3, DRAFT4, DRAFT6, DRAFT7, DRAFT2019, DRAFT2020 = "draft3", "draft4", "draft6", "draft7", "draft2019", "draft2020"
_NAMES = {DRAFT3: "draft-03", DRAFT4: "draft-04", DRAFT6: "draft-06", DRAFT7: "draft-07", DRAFT2019: "draft 2019-09",
          DRAFT2020: "draft 2020-12"}
_BY_VALIDATOR = {"Draft3Validator": DRAFT3, "Draft4Validator": DRAFT4, "Draft6Validator": DRAFT6,
                 "Draft7Validator": DRAFT7, "Draft201909Validator": DRAFT2019, "Draft202012Validator": DRAFT2020}
_REF_SIBLINGS_IGNORED = frozenset({DRAFT3, DRAFT4, DRAFT6, DRAFT7})  # jsonschema's `ignore_ref_siblings`

# What 2020-12 acts on: assertions, applicators, and what names a resource or an anchor.
_ACTIVE_2020 = frozenset({
    "$ref", "$dynamicRef", "additionalProperties", "allOf", "anyOf", "const", "contains", "dependentRequired",
    "dependentSchemas", "enum", "exclusiveMaximum", "exclusiveMinimum", "format", "if", "then", "else", "items",
    "maxContains", "minContains", "maxItems", "maxLength", "maxProperties", "maximum", "minItems", "minLength",
    "minProperties", "minimum", "multipleOf", "not", "oneOf", "pattern", "patternProperties", "prefixItems",
    "properties", "propertyNames", "required", "type", "unevaluatedItems", "unevaluatedProperties", "uniqueItems",
    "$id", "$anchor", "$dynamicAnchor", "contentSchema",
})
_KNOWN_4 = frozenset({
    "$ref", "additionalItems", "additionalProperties", "allOf", "anyOf", "dependencies", "enum", "format", "items",
    "maxItems", "maxLength", "maxProperties", "maximum", "minItems", "minLength", "minProperties", "minimum",
    "multipleOf", "not", "oneOf", "pattern", "patternProperties", "properties", "required", "type", "uniqueItems",
    "exclusiveMaximum", "exclusiveMinimum", "id",
})
_KNOWN_6 = (_KNOWN_4 - {"id"}) | {"$id", "const", "contains", "propertyNames"}
_KNOWN_7 = _KNOWN_6 | {"if", "then", "else"}
# What each draft acts on (jsonschema's validators for it). A keyword 2020-12 acts on that the draft
# does not know was ignored by the caller's validator: it is dropped.
_KNOWN = {
    DRAFT3: frozenset({
        "$ref", "additionalItems", "additionalProperties", "dependencies", "disallow", "divisibleBy", "enum",
        "extends", "format", "items", "maxItems", "maxLength", "maximum", "minItems", "minLength", "minimum",
        "pattern", "patternProperties", "properties", "required", "type", "uniqueItems", "exclusiveMaximum",
        "exclusiveMinimum", "id",
    }),
    DRAFT4: _KNOWN_4,
    DRAFT6: _KNOWN_6,
    DRAFT7: _KNOWN_7,
    DRAFT2019: (_KNOWN_7 - {"dependencies"}) | {
        "$anchor", "$recursiveRef", "$recursiveAnchor", "dependentRequired", "dependentSchemas", "unevaluatedItems",
        "unevaluatedProperties", "maxContains", "minContains", "contentSchema"},
    DRAFT2020: _ACTIVE_2020,
}
_DEAD = {dialect: _ACTIVE_2020 - known for dialect, known in _KNOWN.items()}
_ID_KEYWORD = {DRAFT3: "id", DRAFT4: "id", DRAFT6: "$id", DRAFT7: "$id", DRAFT2019: "$id", DRAFT2020: "$id"}
_DATA = frozenset({"enum", "const", "default", "examples"})  # values, never schemas

# Where subschemas sit: one schema, a list of them, or a map of name → schema. `items` is one or a list
# (before 2020-12); `dependencies` maps a name to a schema or to a list of names; draft 3's `extends`
# is one or a list, and its `type` and `disallow` lists mix type names and schemas.
_ONE = frozenset({"additionalItems", "additionalProperties", "contains", "contentSchema", "else", "if", "not",
                  "propertyNames", "then", "unevaluatedItems", "unevaluatedProperties"})
_MANY = frozenset({"allOf", "anyOf", "oneOf", "prefixItems"})
_MAP = frozenset({"$defs", "definitions", "dependentSchemas", "patternProperties", "properties"})
_DRAFT3_MIXED = frozenset({"type", "disallow"})
# Where referencing's crawler finds embedded resources, per draft (referencing.jsonschema): a subschema
# kept reachable under `$defs` keeps its `$id` only if its draft would have taken it.
_CRAWLED = {
    DRAFT3: frozenset({"extends", "definitions", "patternProperties", "properties", "items", "dependencies",
                       "additionalItems", "additionalProperties"}),
    DRAFT4: frozenset({"not", "allOf", "anyOf", "oneOf", "definitions", "patternProperties", "properties", "items",
                       "dependencies", "additionalItems", "additionalProperties"}),
    DRAFT6: frozenset({"additionalItems", "additionalProperties", "contains", "not", "propertyNames", "allOf", "anyOf",
                       "oneOf", "definitions", "patternProperties", "properties", "items", "dependencies"}),
    DRAFT7: frozenset({"additionalItems", "additionalProperties", "contains", "else", "if", "not", "propertyNames",
                       "then", "allOf", "anyOf", "oneOf", "definitions", "patternProperties", "properties", "items",
                       "dependencies"}),
    DRAFT2019: frozenset({"additionalItems", "additionalProperties", "contains", "contentSchema", "else", "if", "not",
                          "propertyNames", "then", "unevaluatedItems", "unevaluatedProperties", "allOf", "anyOf",
                          "oneOf", "$defs", "definitions", "dependentSchemas", "patternProperties", "properties",
                          "items"}),
}
_ANCHOR_2020 = re.compile(r"[A-Za-z_][-A-Za-z0-9._]*")
_FRAGMENT_SAFE = "!$&'()*+,;=:@-._~"


def to_2020_12(schema: dict[str, Any] | bool) -> tuple[dict[str, Any] | bool, list[str]]:
    """`schema` read as draft 2020-12 with the same meaning, and the rewrites made, as one summary
    string (no list entry when nothing changed).

    The dialect is the schema's `$schema`; without one (or naming 2020-12, or one jsonschema does not
    know) the schema is returned as it is, the same object. The caller's schema is never changed:
    the result is a new tree. Meant for a schema the gate accepted (valid for its draft, references
    resolving); for anything else it still returns, without raising.
    """
    if not isinstance(schema, dict):
        return schema, []
    dialect = _dialect_of(schema)
    if dialect is None or dialect == DRAFT2020:
        return schema, []
    try:
        return _Normalizer(schema, dialect).run()
    except Exception as exc:  # never raise for the caller: the schema goes on as it was, and says so
        return schema, [f"not read as draft 2020-12 from {_NAMES[dialect]} ({type(exc).__name__}: {exc}); "
                        "the provider gets it as written"]


def _dialect_of(node: dict[str, Any]) -> str | None:
    """The draft a schema object's own `$schema` names (None when it names none jsonschema knows)."""
    uri = node.get("$schema")
    if not isinstance(uri, str):
        return None
    from jsonschema.validators import validator_for

    validator = validator_for(node, default=None)
    return _BY_VALIDATOR.get(validator.__name__) if validator is not None else None


def _spec(dialect: str) -> Any:
    from referencing import jsonschema as specs

    return {DRAFT3: specs.DRAFT3, DRAFT4: specs.DRAFT4, DRAFT6: specs.DRAFT6, DRAFT7: specs.DRAFT7,
            DRAFT2019: specs.DRAFT201909, DRAFT2020: specs.DRAFT202012}[dialect]


def _has_ref(node: dict[str, Any], dialect: str) -> bool:
    """Whether the draft applies only `$ref` here (jsonschema's `ignore_ref_siblings`)."""
    return dialect in _REF_SIBLINGS_IGNORED and node.get("$ref") is not None


def _schema_keys(dialect: str) -> frozenset[str]:
    """The keywords holding subschemas that the draft reads, that 2020-12 would read, and containers."""
    shapes = _ONE | _MANY | _MAP | {"items", "dependencies", "extends"}
    if dialect == DRAFT3:
        shapes |= _DRAFT3_MIXED
    return (_KNOWN[dialect] | _DEAD[dialect] | {"$defs", "definitions"}) & shapes


def _children(node: dict[str, Any], dialect: str) -> Iterator[tuple[Path, Any]]:
    """(segments below `node`, subschema) for every subschema the draft (or 2020-12) would read there."""
    keys = _SCHEMA_KEYS[dialect]
    for key, value in node.items():
        if key not in keys:
            continue
        if key in _ONE:
            if _is_schema(value):
                yield (key,), value
        elif key in _MANY:
            if isinstance(value, list):
                yield from (((key, i), sub) for i, sub in enumerate(value) if _is_schema(sub))
        elif key in _MAP or key == "dependencies":
            if isinstance(value, dict):
                yield from (((key, name), sub) for name, sub in value.items() if _is_schema(sub))
        elif key in ("items", "extends"):
            if _is_schema(value):
                yield (key,), value
            elif isinstance(value, list):
                yield from (((key, i), sub) for i, sub in enumerate(value) if _is_schema(sub))
        elif key in _DRAFT3_MIXED and dialect == DRAFT3 and isinstance(value, list):
            yield from (((key, i), sub) for i, sub in enumerate(value) if isinstance(sub, dict))


_SCHEMA_KEYS = {dialect: _schema_keys(dialect) for dialect in _KNOWN}


def _applies_id(keyword: str, dialect: str) -> bool:
    """Whether a subschema's own `$id` (or `id`) sets its base URI under `keyword`, as jsonschema reads it:
    where the validator descends, or referencing's pointer walk enters (a draft-07 `$defs` is neither)."""
    return dialect == DRAFT2020 or keyword in _CRAWLED[dialect] or (dialect == DRAFT3 and keyword in _DRAFT3_MIXED)


def _crawls(keyword: str, node: dict[str, Any], dialect: str) -> bool:
    """Whether referencing's crawler (which registers anchors and `$id`s) enters `node[keyword]`: only
    where the draft's specification lists it, and `dependencies` only when its first value is a schema."""
    if dialect == DRAFT2020:
        return keyword in _SCHEMA_KEYS[DRAFT2020]
    if keyword not in _CRAWLED[dialect]:
        return False
    if keyword == "dependencies":
        first = next(iter(node["dependencies"].values()), None) if isinstance(node.get("dependencies"), dict) else None
        return isinstance(first, dict)
    return True


def _is_schema(value: Any) -> bool:
    return isinstance(value, dict | bool)


def _copy(value: Any) -> Any:
    """A deep copy of JSON data, without recursion."""
    if not isinstance(value, dict | list):
        return value
    root: Any = {} if isinstance(value, dict) else []
    stack: list[tuple[Any, Any]] = [(value, root)]
    while stack:
        source, target = stack.pop()
        items = source.items() if isinstance(source, dict) else enumerate(source)
        for key, item in items:
            if isinstance(item, dict | list):
                copied: Any = {} if isinstance(item, dict) else []
                stack.append((item, copied))
            else:
                copied = item
            if isinstance(target, dict):
                target[key] = copied
            else:
                target.append(copied)
    return root


def _pointer(segments: Path) -> str:
    """A JSON pointer fragment for `segments`, escaped and percent-encoded as a URI fragment."""
    return "".join("/" + quote(str(s).replace("~", "~0").replace("/", "~1"), safe=_FRAGMENT_SAFE) for s in segments)


@dataclass
class _Position:
    """A subschema of the caller's schema: where it is, its draft, and the base URI its references use."""

    node: Any
    dialect: str
    resolver: Any
    base: str
    own_id: bool = True  # whether its own `$id` set that base (not for one reached only by a pointer into data)
    crawled: bool = True  # whether referencing's crawler reaches it, so its anchors (and `$id`) are registered


@dataclass
class _Ref:
    """One `$ref`: where it is, what it says, and where its target is (None: left as it is)."""

    path: Path
    ref: str
    target: Path | None = None
    resource: Path | None = None  # the resource its URI part names
    pointer: Path | None = None  # the pointer's segments, for a `#/...` fragment
    anchor: bool = False


@dataclass
class _Task:
    """A subschema to build: where it was, where it goes, and what to put it in."""

    node: Any
    path: Path
    new_path: Path
    dialect: str
    container: Any
    key: str | int
    own_id: bool = True


@dataclass
class _Normalizer:
    schema: dict[str, Any]
    dialect: str
    rename_definitions: bool = True
    positions: dict[Path, _Position] = field(default_factory=dict)
    path_of: dict[int, Path] = field(default_factory=dict)
    refs: list[_Ref] = field(default_factory=list)
    anchors: set[str] = field(default_factory=set)
    extra_roots: dict[Path, _Position] = field(default_factory=dict)
    recursive_refs: dict[Path, Path | None] = field(default_factory=dict)  # site → resource it starts from
    recursive_anchored: dict[Path, str] = field(default_factory=dict)  # resource root → its base URI
    ref_bases: set[str] = field(default_factory=set)
    # built
    new_path_of: dict[Path, Path] = field(default_factory=dict)
    built: dict[Path, Any] = field(default_factory=dict)
    verbatim: dict[Path, set[str]] = field(default_factory=dict)
    anchor_names: dict[Path, str] = field(default_factory=dict)
    rewrites: dict[str, int] = field(default_factory=dict)
    needed: set[Path] = field(default_factory=set)
    dynamic_name: str = "recursive"
    translate_recursion: bool = False

    # --- reading the caller's schema ------------------------------------------------------------

    def run(self) -> tuple[dict[str, Any], list[str]]:
        result, broken = self._attempt()
        if broken and self.rename_definitions:  # keep `definitions` where it is (pointers into it still resolve)
            retry = _Normalizer(self.schema, self.dialect, rename_definitions=False)
            again, broken_again = retry._attempt()
            if broken_again < broken:
                return again, retry._summary(broken_again)
        return result, self._summary(broken)

    def _attempt(self) -> tuple[dict[str, Any], int]:
        from jsonschema_specifications import REGISTRY as SPECIFICATIONS

        root = _spec(self.dialect).create_resource(self.schema)
        base = root.id() or ""
        registry = SPECIFICATIONS.with_resource(base, root)
        # crawled once, so each anchor or `$id` lookup is a dict hit; referencing reads a draft-03
        # `extends: {…}` as a list and fails, and then lookups crawl as they go
        with contextlib.suppress(AttributeError):
            registry = registry.crawl()
        resolver = registry.resolver(base)
        self._read(self.schema, (), self.dialect, resolver, base, own_id=True, crawled=True)
        pending = 0
        while pending < len(self.refs):  # targets outside the walked subschemas are walked in turn
            ref = self.refs[pending]
            pending += 1
            self._resolve(ref)
        self._decide_recursion()
        self.needed = {ref.target[:i] for ref in self.refs if ref.target is not None
                       for i in range(len(ref.target) + 1)}
        result = self._build()
        self._fix_refs()
        return result, self._check(result)

    def _read(self, node: Any, path: Path, dialect: str, resolver: Any, base: str, *, own_id: bool,
              crawled: bool) -> None:
        """Record every subschema below `node` (iteratively), with the base URI jsonschema gives it."""
        stack: list[tuple[Any, Path, str, Any, str, bool, bool]] = [(node, path, dialect, resolver, base, own_id,
                                                                     crawled)]
        while stack:
            node, path, dialect, resolver, base, own_id, crawled = stack.pop()
            if path in self.positions:
                continue
            if isinstance(node, dict):
                dialect = _dialect_of(node) or dialect
                if own_id:
                    resource = _spec(dialect).create_resource(node)
                    if resource.id() is not None:
                        resolver = resolver.in_subresource(resource)
                        base = urljoin(base, resource.id())
                        if dialect == DRAFT2019 and node.get("$recursiveAnchor"):
                            self.recursive_anchored[path] = base
                if path == () and dialect == DRAFT2019 and node.get("$recursiveAnchor"):
                    self.recursive_anchored[path] = base
                self.path_of.setdefault(id(node), path)
                self._read_anchor(node, dialect)
                if isinstance(node.get("$ref"), str):
                    self.refs.append(_Ref(path, node["$ref"]))
                    self.ref_bases.add(base)
                if dialect == DRAFT2019 and "$recursiveRef" in node:
                    self.ref_bases.add(base)
                    try:
                        start = resolver.lookup("#").contents
                    except Exception:  # unresolvable: left as it is
                        start = None
                    self.recursive_refs[path] = self.path_of.get(id(start)) if isinstance(start, dict) else None
                stack.extend((child, path + segments, dialect, resolver, base, _applies_id(str(segments[0]), dialect),
                              crawled and _crawls(str(segments[0]), node, dialect))
                             for segments, child in reversed(list(_children(node, dialect))))
            self.positions[path] = _Position(node, dialect, resolver, base, own_id, crawled)

    def _read_anchor(self, node: dict[str, Any], dialect: str) -> None:
        value = node.get(_ID_KEYWORD[dialect])
        if isinstance(value, str) and value.startswith("#") and dialect in (DRAFT3, DRAFT4, DRAFT6, DRAFT7):
            self.anchors.add(value[1:])
        for key in ("$anchor", "$dynamicAnchor"):
            if isinstance(node.get(key), str):
                self.anchors.add(node[key])

    def _resolve(self, ref: _Ref) -> None:
        """Where `ref` lands in the caller's schema, as jsonschema resolves it; a target outside the
        walked subschemas (in data, or under a keyword no draft reads) is walked as a schema too."""
        from referencing.exceptions import Unresolvable

        position = self.positions[ref.path]
        try:
            resolved = position.resolver.lookup(ref.ref)
            resource = position.resolver.lookup(ref.ref.partition("#")[0]).contents
        except (Unresolvable, ValueError, TypeError, LookupError, AttributeError):  # left as it is
            return
        resource_path = self.path_of.get(id(resource)) if isinstance(resource, dict) else None
        if resource_path is None or self.positions[resource_path].node is not resource:
            return  # another document (a meta-schema): left as it is
        fragment = ref.ref.partition("#")[2]
        if fragment.startswith("/"):
            segments = self._walk_pointer(resource, fragment, resolved.contents)
            if segments is None:
                return
            target = resource_path + segments
            ref.pointer = segments
        elif fragment:
            found = self.path_of.get(id(resolved.contents)) if isinstance(resolved.contents, dict) else None
            if found is None or self.positions[found].node is not resolved.contents:
                return
            target, ref.anchor = found, True
        else:
            target = resource_path
        ref.target, ref.resource = target, resource_path
        if target not in self.positions:
            ancestor = self._ancestor(target, self.positions)
            dialect = self.positions[ancestor].dialect
            base = getattr(resolved.resolver, "_base_uri", self.positions[ancestor].base)
            self._read(resolved.contents, target, dialect, resolved.resolver, base, own_id=False, crawled=False)
            self.extra_roots[target] = self.positions[target]

    @staticmethod
    def _walk_pointer(resource: Any, fragment: str, target: Any) -> Path | None:
        """The segments of a JSON pointer as referencing reads it (percent-decoded, then `~1`, `~0`), if it
        leads to `target` (None if not)."""
        segments: list[str | int] = []
        node = resource
        for raw in unquote(fragment[1:]).split("/"):
            if isinstance(node, list):
                try:
                    index = int(raw)
                    node = node[index]
                except (ValueError, IndexError):
                    return None
                segments.append(index if index >= 0 else index + len(node))
            elif isinstance(node, dict):
                key = raw.replace("~1", "/").replace("~0", "~")
                if key not in node:
                    return None
                node = node[key]
                segments.append(key)
            else:
                return None
        return tuple(segments) if node is target else None

    @staticmethod
    def _ancestor(path: Path, known: dict[Path, Any]) -> Path:
        """The longest proper prefix of `path` in `known` (the root always is)."""
        for end in range(len(path) - 1, -1, -1):
            if path[:end] in known:
                return path[:end]
        return ()

    def _decide_recursion(self) -> None:
        """2019-09's `$recursiveRef` becomes `$dynamicRef` when the two resolve alike: with at most one
        resource holding `$recursiveAnchor: true`, or when every resource a reference is followed from is
        one (2019-09 stops at the first resource in the dynamic scope without it; 2020-12 does not)."""
        if not self.recursive_refs and not self.recursive_anchored:
            return
        anchored_bases = set(self.recursive_anchored.values())
        self.translate_recursion = (len(self.recursive_anchored) <= 1
                                    or all(not base or base in anchored_bases for base in self.ref_bases))
        while self.dynamic_name in self.anchors:
            self.dynamic_name += "_"

    # --- building the 2020-12 schema ------------------------------------------------------------

    def _note(self, message: str, count: int = 1) -> None:
        self.rewrites[message] = self.rewrites.get(message, 0) + count

    def _build(self) -> dict[str, Any]:
        holder: dict[str, Any] = {}
        self._build_from(_Task(self.schema, (), (), self.dialect, holder, "root"))
        for path in sorted(self.extra_roots, key=len):
            if path in self.new_path_of:
                continue  # inside a target built before
            self._build_extra_root(path)
        result: dict[str, Any] = holder["root"]
        return result

    def _build_extra_root(self, path: Path) -> None:
        """A target that no keyword of its draft reads as a schema: built where it is when it sits in a
        keyword 2020-12 ignores too (it stays as unread there), else put in the `$defs` of the nearest
        subschema."""
        position = self.extra_roots[path]
        ancestor = self._ancestor(path, self.new_path_of)
        rest = path[len(ancestor):]
        parent = self.built[ancestor]
        if not isinstance(parent, dict):
            return  # under a boolean schema: nothing to point at
        if rest[0] in self.verbatim.get(ancestor, set()):
            container: Any = parent
            with contextlib.suppress(LookupError, TypeError):
                for segment in rest[:-1]:
                    container = container[segment]
                container[rest[-1]]  # it is there, as copied (else LookupError)
                self._build_from(_Task(position.node, path, self.new_path_of[ancestor] + rest, position.dialect,
                                       container, rest[-1]))
                return
        defs = parent.get("$defs")
        if not isinstance(defs, dict):
            if "$defs" in parent:
                return  # not a map here: left as it is (the check reports the reference)
            defs = parent["$defs"] = {}
        name = self._fresh(defs, "target")
        defs[name] = None
        self._build_from(_Task(position.node, path, (*self.new_path_of[ancestor], "$defs", name), position.dialect,
                               defs, name, own_id=False))
        self._note("subschemas that references point at in data or in unread keywords were copied into `$defs`")

    @staticmethod
    def _fresh(defs: dict[str, Any], stem: str) -> str:
        name, n = stem, 1
        while name in defs:
            n += 1
            name = f"{stem}-{n}"
        return name

    def _build_from(self, first: _Task) -> None:
        stack = [first]
        while stack:
            task = stack.pop()
            if not isinstance(task.node, dict):
                built: Any = task.node
                children: list[_Task] = []
            else:
                built, children = self._translate(task)
            task.container[task.key] = built
            self.new_path_of.setdefault(task.path, task.new_path)
            self.built.setdefault(task.path, built)
            stack.extend(reversed(children))

    def _translate(self, task: _Task) -> tuple[dict[str, Any], list[_Task]]:
        """One schema object in 2020-12 terms, keys in the caller's order; its subschemas become tasks."""
        node, path, new_path = task.node, task.path, task.new_path
        dialect = _dialect_of(node) or task.dialect
        name = _NAMES[dialect]
        known, dead = _KNOWN[dialect], _DEAD[dialect]
        out: dict[str, Any] = {}
        tasks: list[_Task] = []
        verbatim: set[str] = set()
        relocate: list[str] = []
        only_ref = _has_ref(node, dialect)
        id_keyword = _ID_KEYWORD[dialect]
        items_list = isinstance(node.get("items"), list) and dialect != DRAFT2020
        definitions, defs = node.get("definitions"), node.get("$defs")
        merge_defs = (self.rename_definitions and dialect != DRAFT2020 and isinstance(definitions, dict)
                      and (defs is None or (isinstance(defs, dict) and not set(defs) & set(definitions))))

        def child(segments: Path, value: Any, new_segments: Path, container: Any, key: str | int) -> None:
            container[key] = None  # keeps the caller's order; the task fills it in
            tasks.append(_Task(value, path + segments, new_path + new_segments, dialect, container, key,
                               _applies_id(str(segments[0]), dialect)))

        def schemas(key: str, value: Any, new_key: str) -> Any:
            """The same shape (one schema, a list, a map), each subschema built as a task."""
            if key in _MAP or key == "dependencies":
                if not isinstance(value, dict):
                    return _copy(value)
                mapped: dict[str, Any] = {}
                for sub_name, sub in value.items():
                    if _is_schema(sub):
                        child((key, sub_name), sub, (new_key, sub_name), mapped, sub_name)
                    else:
                        mapped[sub_name] = _copy(sub)
                return mapped
            if isinstance(value, list) and key not in _ONE:
                copied: list[Any] = []
                for i, sub in enumerate(value):
                    if _is_schema(sub):
                        copied.append(None)
                        child((key, i), sub, (new_key, i), copied, i)
                    else:
                        copied.append(_copy(sub))
                return copied
            if _is_schema(value) and key not in _MANY:
                child((key,), value, (new_key,), out, new_key)
                return out[new_key]
            return _copy(value)

        for key, value in node.items():
            if key == "$schema":
                out[key] = SCHEMA_2020_12
            elif dialect == DRAFT2020:
                out[key] = schemas(key, value, key) if key in _SCHEMA_KEYS[DRAFT2020] else _copy(value)
                if key not in _SCHEMA_KEYS[DRAFT2020]:
                    verbatim.add(key)
            elif key == id_keyword and isinstance(value, str):
                self._translate_id(out, path, value, key, dialect, only_ref, task.own_id)
            elif only_ref and key != "$ref" and (key in known or key in dead):
                self._note(f"siblings of `$ref`, which {name} ignores, were dropped")
                relocate.append(key)
            elif key in dead:
                self._note(f"`{key}`, which {name} does not know, was dropped")
                relocate.append(key)
            elif key in ("definitions", "$defs"):
                if merge_defs:
                    if "$defs" not in out:
                        out["$defs"] = {}
                        if definitions:
                            self._note("`definitions` became `$defs`")
                    for sub_name, sub in value.items():
                        if _is_schema(sub):
                            child((key, sub_name), sub, ("$defs", sub_name), out["$defs"], sub_name)
                        else:
                            out["$defs"][sub_name] = _copy(sub)
                else:
                    out[key] = schemas(key, value, key)
            elif key == "items" and items_list:
                if value:
                    out["prefixItems"] = schemas(key, value, "prefixItems")
                self._note("`items` lists became `prefixItems`")
            elif key == "additionalItems":
                if items_list:
                    out["items"] = schemas(key, value, "items")
                    self._note("`additionalItems` became `items`")
                else:
                    self._note(f"`additionalItems` without an `items` list, which {name} ignores, was dropped")
                    relocate.append(key)
            elif key == "dependencies" and dialect in (DRAFT3, DRAFT4, DRAFT6, DRAFT7) and isinstance(value, dict):
                self._translate_dependencies(out, value, child)
            elif key in ("maximum", "minimum") and dialect in (DRAFT3, DRAFT4):
                exclusive = "exclusiveMaximum" if key == "maximum" else "exclusiveMinimum"
                if node.get(exclusive):
                    out[exclusive] = value
                    self._note(f"`{exclusive}: true` became `{exclusive}: <{key}>`")
                else:
                    out[key] = value
            elif key in ("exclusiveMaximum", "exclusiveMinimum") and dialect in (DRAFT3, DRAFT4):
                if not (value and ("maximum" if key == "exclusiveMaximum" else "minimum") in node):
                    self._note(f"`{key}: {str(value).lower()}` was dropped (no effect in {name})")
            elif key == "$anchor" and isinstance(value, str):
                if self._crawled(path):
                    out["$anchor"] = self._anchor_name(path, value)
                else:
                    self._note(f"anchors {name} does not register where they are (in `$defs`, or in data) were dropped")
            elif dialect == DRAFT2019 and key in ("$recursiveRef", "$recursiveAnchor"):
                self._translate_recursion(out, path, key, value)
            elif dialect == DRAFT3 and key == "required":
                pass  # read by the parent's `properties`
            elif dialect == DRAFT3 and key in ("type", "disallow", "extends", "divisibleBy"):
                self._translate_draft3(out, node, key, value, child, schemas)
            elif key in _SCHEMA_KEYS[dialect]:
                out[key] = schemas(key, value, key)
            else:
                out[key] = _copy(value)
                if key not in known and key not in _DATA:
                    verbatim.add(key)
            if dialect == DRAFT3 and key == "properties" and isinstance(value, dict) and not only_ref:
                required = [n for n, sub in value.items() if isinstance(sub, dict) and sub.get("required")]
                if required:
                    out["required"] = required
                    self._note("`required: true` in properties became the object's `required` list")
        self._relocate(node, path, new_path, dialect, out, relocate, tasks)
        self.verbatim[path] = verbatim
        return out, tasks

    def _translate_id(self, out: dict[str, Any], path: Path, value: str, key: str, dialect: str, only_ref: bool,
                      own_id: bool) -> None:
        """`id`/`$id`: a plain-name fragment becomes `$anchor`; a URI stays `$id` (its fragment, which
        2020-12 does not allow, dropped); one beside a `$ref` that ignores it goes."""
        name = _NAMES[dialect]
        if value.startswith("#"):
            if not value[1:] or dialect == DRAFT2019:
                return
            if not self._crawled(path):
                self._note(f"anchors {name} does not register where they are (in `$defs`, or in data) were dropped")
                return
            out["$anchor"] = self._anchor_name(path, value[1:])
            self._note(f"`{key}: \"#name\"` became `$anchor: \"name\"`")
            return
        if not own_id:
            self._note(f"`{key}` where {name} does not read it (in `$defs`, or in data) was dropped")
            return
        if only_ref:
            self._note(f"siblings of `$ref`, which {name} ignores, were dropped")
            return
        uri, hash_, fragment = value.partition("#")
        out["$id"] = uri
        if key != "$id":
            self._note("`id` became `$id`")
        if hash_ and fragment:
            self._note("the fragment of a `$id`, which 2020-12 does not allow, was dropped")

    def _crawled(self, path: Path) -> bool:
        position = self.positions.get(path)
        return position is None or position.crawled

    def _anchor_name(self, path: Path, name: str) -> str:
        """The anchor's name, or a new one where 2020-12 would not take it (references follow)."""
        if _ANCHOR_2020.fullmatch(name):
            return name
        stem = re.sub(r"[^-A-Za-z0-9._]", "_", name)
        stem = stem if stem[:1].isalpha() or stem[:1] == "_" else f"a_{stem}"
        fresh, n = stem, 1
        while fresh in self.anchors:
            n += 1
            fresh = f"{stem}_{n}"
        self.anchors.add(fresh)
        self.anchor_names[path] = fresh
        self._note("anchors 2020-12 would not take were renamed")
        return fresh

    def _translate_dependencies(self, out: dict[str, Any], value: dict[str, Any], child: Any) -> None:
        for sub_name, sub in value.items():
            if _is_schema(sub):
                if "dependentSchemas" not in out:
                    out["dependentSchemas"] = {}
                    self._note("`dependencies` became `dependentSchemas`")
                child(("dependencies", sub_name), sub, ("dependentSchemas", sub_name), out["dependentSchemas"],
                      sub_name)
            elif isinstance(sub, list | str):
                if "dependentRequired" not in out:
                    out["dependentRequired"] = {}
                    self._note("`dependencies` became `dependentRequired`")
                out["dependentRequired"][sub_name] = _copy(sub) if isinstance(sub, list) else [sub]

    def _translate_recursion(self, out: dict[str, Any], path: Path, key: str, value: Any) -> None:
        if not self.translate_recursion:
            out[key] = _copy(value)
            if key == "$recursiveRef":
                self._note("`$recursiveRef` was left as it is (2020-12 ignores it): its dynamic scope could skip "
                           "a resource without `$recursiveAnchor`, which `$dynamicRef` would not")
            return
        if key == "$recursiveAnchor":
            if value and path in self.recursive_anchored:
                out["$dynamicAnchor"] = self.dynamic_name
                self._note("`$recursiveAnchor: true` became `$dynamicAnchor`")
            else:
                self._note("`$recursiveAnchor` with no effect was dropped")
            return
        start = self.recursive_refs.get(path)
        anchored = start is not None and start in self.recursive_anchored
        out["$dynamicRef"] = f"#{self.dynamic_name}" if anchored else "#"
        self._note("`$recursiveRef` became `$dynamicRef`")

    def _translate_draft3(self, out: dict[str, Any], node: dict[str, Any], key: str, value: Any, child: Any,
                          schemas: Any) -> None:
        """Draft 3's own keywords: `type` lists holding schemas → `anyOf`, `disallow` → `not`, `extends` →
        `allOf`, `divisibleBy` → `multipleOf`; `required: true` is read by the parent (see `properties`)."""
        if key == "divisibleBy":
            out["multipleOf"] = value
            self._note("`divisibleBy` became `multipleOf`")
        elif key == "extends":
            if isinstance(value, dict):
                out["allOf"] = [None]
                child(("extends",), value, ("allOf", 0), out["allOf"], 0)
            elif isinstance(value, list):
                out["allOf"] = schemas("extends", value, "allOf")
            self._note("`extends` became `allOf`")
        elif key == "type":
            types = value if isinstance(value, list) else [value]
            if "any" in types:
                self._note("`type: \"any\"` was dropped")
            elif not types:
                out["not"] = {}
                self._note("an empty `type` list became `not: {}`")
            elif not any(isinstance(t, dict) for t in types):
                out["type"] = _copy(value)
            else:
                out["anyOf"] = self._draft3_branches(types, "type", ("anyOf",), child)
                self._note("a `type` list holding schemas became `anyOf`")
        elif key == "disallow":
            types = value if isinstance(value, list) else [value]
            if node.get("type") == [] or not types:
                return  # nothing passes `type` already, or nothing is disallowed
            if "any" in types:
                out["not"] = {}
            elif not any(isinstance(t, dict) for t in types):
                out["not"] = {"type": _copy(types)}
            else:
                out["not"] = {"anyOf": None}
                out["not"]["anyOf"] = self._draft3_branches(types, "disallow", ("not", "anyOf"), child)
            self._note("`disallow` became `not`")

    @staticmethod
    def _draft3_branches(types: list[Any], key: str, new_segments: Path, child: Any) -> list[Any]:
        """Draft 3 `type`/`disallow` names and schemas as `anyOf` branches: the names in one `type`."""
        names = [t for t in types if isinstance(t, str)]
        branches: list[Any] = [{"type": names}] if names else []
        for i, sub in enumerate(types):
            if isinstance(sub, dict):
                branches.append(None)
                child((key, i), sub, (*new_segments, len(branches) - 1), branches, len(branches) - 1)
        return branches

    def _relocate(self, node: dict[str, Any], path: Path, new_path: Path, dialect: str, out: dict[str, Any],
                  dropped: list[str], tasks: list[_Task]) -> None:
        """Dropped keywords holding a subschema a reference points into: kept under `$defs`, unread there,
        so the reference still finds it (it was read only through the reference before too)."""
        for key in dropped:
            if (*path, key) not in self.needed:
                continue
            entries = [(segments, sub) for segments, sub in _children({key: node[key]}, dialect)
                       if path + segments in self.needed]
            if not entries:
                continue
            defs = out.get("$defs")
            if not isinstance(defs, dict):
                defs = out["$defs"] = {}
            name = self._fresh(defs, f"ignored-{key.lstrip('$')}")
            own_id = key in _CRAWLED.get(dialect, frozenset())
            if len(entries) == 1 and len(entries[0][0]) == 1:
                defs[name] = None
                tasks.append(_Task(entries[0][1], path + entries[0][0], (*new_path, "$defs", name), dialect, defs,
                                   name, own_id))
            else:
                inner: dict[str, Any] = {}
                defs[name] = {"$defs": inner}
                for segments, sub in entries:
                    inner[str(segments[1])] = None
                    tasks.append(_Task(sub, path + segments, (*new_path, "$defs", name, "$defs", str(segments[1])),
                                       dialect, inner, str(segments[1]), own_id))
            self._note("subschemas of dropped keywords that references point into were kept under `$defs`")

    # --- references -----------------------------------------------------------------------------

    def _fix_refs(self) -> None:
        """Point every reference whose target moved at it again (same URI part, new pointer or anchor)."""
        for ref in self.refs:
            if ref.target is None or ref.path not in self.built or ref.target not in self.new_path_of:
                continue
            node = self.built[ref.path]
            if not isinstance(node, dict) or node.get("$ref") != ref.ref:
                continue
            uri = ref.ref.partition("#")[0]
            if ref.anchor:
                new_name = self.anchor_names.get(ref.target)
                if new_name is not None:
                    node["$ref"] = f"{uri}#{new_name}"
                    self._note("references that pointed at a moved or renamed subschema were rewritten")
                continue
            assert ref.resource is not None
            resource, target = self.new_path_of[ref.resource], self.new_path_of[ref.target]
            if target[:len(resource)] != resource:
                continue
            relative = target[len(resource):]
            if relative == (ref.pointer or ()):
                continue
            node["$ref"] = f"{uri}#{_pointer(relative)}"
            self._note("references that pointed at a moved or renamed subschema were rewritten")

    def _check(self, result: dict[str, Any]) -> int:
        """How many references would land elsewhere in the result, resolved under 2020-12 (0: none)."""
        from jsonschema_specifications import REGISTRY as SPECIFICATIONS
        from referencing.exceptions import Unresolvable
        from referencing.jsonschema import DRAFT202012

        expected: dict[int, Any] = {}
        for ref in self.refs:
            if ref.target is not None and ref.path in self.built and ref.target in self.built:
                expected[id(self.built[ref.path])] = self.built[ref.target]
        if not expected:
            return 0
        root = DRAFT202012.create_resource(result)
        base = root.id() or ""
        stack: list[tuple[Any, Any]] = [(result, SPECIFICATIONS.with_resource(base, root).crawl().resolver(base))]
        broken = 0
        while stack:
            node, resolver = stack.pop()
            if not isinstance(node, dict):
                continue
            resolver = resolver.in_subresource(DRAFT202012.create_resource(node))
            if id(node) in expected and isinstance(node.get("$ref"), str):
                want = expected[id(node)]
                try:
                    got = resolver.lookup(node["$ref"]).contents
                except (Unresolvable, ValueError, TypeError, LookupError):
                    got = object()
                if got is not want:
                    broken += 1
            stack.extend((child, resolver) for _, child in _children(node, DRAFT2020))
        return broken

    def _summary(self, broken: int) -> list[str]:
        parts = [f"{message} ({count})" for message, count in self.rewrites.items()]
        if broken:
            parts.append(f"references that could not be kept pointing at the same subschema ({broken})")
        return [f"read as draft 2020-12 from {_NAMES[self.dialect]}: " + (", ".join(parts) or "nothing else changed")]
