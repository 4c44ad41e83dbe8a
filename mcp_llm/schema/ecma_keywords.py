"""jsonschema's keywords that match regular expressions, with ECMA-262 patterns in bounded time.

jsonschema calls Python's `re` for `pattern`, `patternProperties`, and inside `additionalProperties`
and `unevaluatedProperties` (which must know the keys a pattern matched). These are the same
keywords with `regex.compile_pattern(…).search` instead, so a pattern means what JSON Schema says
and cannot stall the server; everything else, messages included, is jsonschema's. A match the
engine gives up on raises `PatternUndecided` out of the validation: the value is not accepted.

`_evaluated_keys` follows jsonschema's `find_evaluated_property_keys_by_schema`
(jsonschema/_utils.py and _legacy_keywords.py, 4.26), which reaches the validator's private
`_resolver` as jsonschema itself does; the official suite's unevaluatedProperties tests pin it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from mcp_llm.schema.regex import compile_pattern


def search(pattern: str, text: str) -> bool:
    return compile_pattern(pattern).search(text)


def pattern(validator: Any, patrn: str, instance: Any, schema: Any) -> Iterator[Any]:
    from jsonschema.exceptions import ValidationError

    if validator.is_type(instance, "string") and not search(patrn, instance):
        yield ValidationError(f"{instance!r} does not match {patrn!r}")


def pattern_properties(validator: Any, patterns: dict[str, Any], instance: Any, schema: Any) -> Iterator[Any]:
    if not validator.is_type(instance, "object"):
        return
    for patrn, subschema in patterns.items():
        for key, value in instance.items():
            if search(patrn, key):
                yield from validator.descend(value, subschema, path=key, schema_path=patrn)


def _additional_keys(instance: dict[str, Any], schema: dict[str, Any]) -> Iterator[str]:
    properties = schema.get("properties", {})
    patterns = schema.get("patternProperties", {})
    for key in instance:
        if key not in properties and not any(search(p, key) for p in patterns):
            yield key


def additional_properties(validator: Any, additional: Any, instance: Any, schema: Any) -> Iterator[Any]:
    from jsonschema._utils import extras_msg
    from jsonschema.exceptions import ValidationError

    if not validator.is_type(instance, "object"):
        return
    extras = set(_additional_keys(instance, schema))
    if validator.is_type(additional, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], additional, path=extra)
    elif not additional and extras:
        if "patternProperties" in schema:
            verb = "does" if len(extras) == 1 else "do"
            joined = ", ".join(repr(each) for each in sorted(extras))
            patterns = ", ".join(repr(each) for each in sorted(schema["patternProperties"]))
            yield ValidationError(f"{joined} {verb} not match any of the regexes: {patterns}")
        else:
            names, verb = extras_msg(sorted(extras, key=str))
            yield ValidationError(f"Additional properties are not allowed ({names} {verb} unexpected)")


def unevaluated_properties(validator: Any, unevaluated: Any, instance: Any, schema: Any) -> Iterator[Any]:
    from jsonschema._utils import extras_msg
    from jsonschema.exceptions import ValidationError

    if not validator.is_type(instance, "object"):
        return
    evaluated = set(_evaluated_keys(validator, instance, schema))
    failing = [key for key in instance
               if key not in evaluated
               and next(iter(validator.descend(instance[key], unevaluated, path=key, schema_path=key)), None)]
    if failing:
        if unevaluated is False:
            names, verb = extras_msg(sorted(failing, key=str))
            yield ValidationError(f"Unevaluated properties are not allowed ({names} {verb} unexpected)")
        else:
            names, verb = extras_msg(failing)
            yield ValidationError(f"Unevaluated properties are not valid under the given schema "
                                  f"({names} {verb} unevaluated and invalid)")


def _valid(errors: Iterable[Any]) -> bool:
    return next(iter(errors), None) is None


def _evaluated_keys(validator: Any, instance: dict[str, Any], schema: Any) -> list[str]:
    """The keys of `instance` that `schema` evaluates (JSON Schema 2020-12 §11.3; 2019-09 alike)."""
    if validator.is_type(schema, "boolean"):
        return []
    keys: list[str] = []
    for keyword in ("$ref", "$dynamicRef", "$recursiveRef"):
        if keyword not in schema:
            continue
        if keyword == "$recursiveRef":
            from referencing.jsonschema import lookup_recursive_ref

            resolved = lookup_recursive_ref(validator._resolver)
        else:
            resolved = validator._resolver.lookup(schema[keyword])
        keys += _evaluated_keys(validator.evolve(schema=resolved.contents, _resolver=resolved.resolver), instance,
                                resolved.contents)
    properties = schema.get("properties")
    if validator.is_type(properties, "object"):
        keys += properties.keys() & instance.keys()
    for keyword in ("additionalProperties", "unevaluatedProperties"):
        if (subschema := schema.get(keyword)) is not None:
            keys += (key for key, value in instance.items() if _valid(validator.descend(value, subschema)))
    for patrn in schema.get("patternProperties", {}):
        keys += (key for key in instance if search(patrn, key))
    for name, subschema in schema.get("dependentSchemas", {}).items():
        if name in instance:
            keys += _evaluated_keys(validator, instance, subschema)
    for keyword in ("allOf", "oneOf", "anyOf"):
        for subschema in schema.get(keyword, []):
            if _valid(validator.descend(instance, subschema)):
                keys += _evaluated_keys(validator, instance, subschema)
    if "if" in schema:
        if validator.evolve(schema=schema["if"]).is_valid(instance):
            keys += _evaluated_keys(validator, instance, schema["if"])
            if "then" in schema:
                keys += _evaluated_keys(validator, instance, schema["then"])
        elif "else" in schema:
            keys += _evaluated_keys(validator, instance, schema["else"])
    return keys


KEYWORDS: dict[str, Callable[[Any, Any, Any, Any], Iterator[Any]]] = {
    "pattern": pattern,
    "patternProperties": pattern_properties,
    "additionalProperties": additional_properties,
    "unevaluatedProperties": unevaluated_properties,
}
