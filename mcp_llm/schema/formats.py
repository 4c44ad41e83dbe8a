"""Formats as the JSON Schema Test Suite defines them, per dialect.

jsonschema's own format checkers disagree with the official suite on hundreds of cases (an
`email` without a domain dot, an `idn-hostname` with a disallowed character, a `date-time` with a
trailing newline, a `duration` of `P1`…). The checks here are those of `jsonschema-rs`, which
agrees with every case of the suite's optional/format tests for drafts 4 to 2020-12: each format
a dialect defines is asserted with that dialect's own rules, and `regex` means ECMA-262 (regex.py).
A format no dialect defines (OpenAPI's `int32`, `byte`, `password`…, or a name of your own) is an
annotation, as the specification says: it is not checked. Draft 3 keeps jsonschema's checkers for
the names only it has (`color`, `date`, `time`, `utc-millisec`).
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

from mcp_llm.schema.regex import is_pattern, is_schema_pattern

if TYPE_CHECKING:
    from jsonschema import FormatChecker

# What jsonschema-rs asserts per dialect (probed with a value no format admits); `regex` is ours.
FORMATS_BY_DIALECT: dict[str, tuple[str, ...]] = {
    "draft4": ("date", "date-time", "email", "hostname", "idn-email", "ipv4", "ipv6", "time", "uri"),
    "draft6": ("date", "date-time", "email", "hostname", "idn-email", "ipv4", "ipv6", "json-pointer", "time", "uri",
               "uri-reference", "uri-template"),
    "draft7": ("date", "date-time", "email", "hostname", "idn-email", "idn-hostname", "ipv4", "ipv6", "iri",
               "iri-reference", "json-pointer", "relative-json-pointer", "time", "uri", "uri-reference",
               "uri-template"),
    "draft2019-09": ("date", "date-time", "duration", "email", "hostname", "idn-email", "idn-hostname", "ipv4",
                     "ipv6", "iri", "iri-reference", "json-pointer", "relative-json-pointer", "time", "uri",
                     "uri-reference", "uri-template", "uuid"),
}
FORMATS_BY_DIALECT["draft2020-12"] = FORMATS_BY_DIALECT["draft2019-09"]
# Draft 3's names for what later drafts call otherwise, checked as those are in draft 4.
_DRAFT3_AS_DRAFT4 = {"date-time": "date-time", "email": "email", "host-name": "hostname", "ip-address": "ipv4",
                     "ipv6": "ipv6", "uri": "uri"}


def dialect_name(meta_schema_id: str) -> str:
    """`draft4` … `draft2020-12` from a meta-schema's URI (jsonschema's `META_SCHEMA` id)."""
    for name, marker in (("draft2020-12", "2020-12"), ("draft2019-09", "2019-09"), ("draft7", "draft-07"),
                         ("draft6", "draft-06"), ("draft4", "draft-04"), ("draft3", "draft-03")):
        if marker in meta_schema_id:
            return name
    return "draft2020-12"


@lru_cache(maxsize=16)
def format_checker(dialect: str, *, schema_patterns: bool = False) -> FormatChecker:
    """The checker for one dialect (`dialect_name`'s names); formats it does not define pass.
    `schema_patterns`: for the meta-schema check of a schema, whose own patterns need only be
    ones the engine runs (regex.compile_pattern), not strict ECMA-262."""
    from jsonschema import Draft3Validator, FormatChecker

    checker = FormatChecker(formats=())
    checker.checks("regex")(is_schema_pattern if schema_patterns else is_pattern)
    if dialect == "draft3":
        for name, function in Draft3Validator.FORMAT_CHECKER.checkers.items():
            if name not in _DRAFT3_AS_DRAFT4 and name != "regex":
                checker.checkers[name] = function
        for name, later in _DRAFT3_AS_DRAFT4.items():
            checker.checks(name)(_engine_check("draft4", later))
        return checker
    for name in FORMATS_BY_DIALECT.get(dialect, FORMATS_BY_DIALECT["draft2020-12"]):
        checker.checks(name)(_engine_check(dialect, name))
    return checker


def _engine_check(dialect: str, name: str) -> Any:
    import jsonschema_rs

    engine = {"draft4": jsonschema_rs.Draft4Validator, "draft6": jsonschema_rs.Draft6Validator,
              "draft7": jsonschema_rs.Draft7Validator, "draft2019-09": jsonschema_rs.Draft201909Validator,
              }.get(dialect, jsonschema_rs.Draft202012Validator)
    validator = engine({"format": name}, validate_formats=True)

    def check(instance: object) -> bool:
        if not isinstance(instance, str):
            return True  # formats apply to strings only
        try:
            return bool(validator.is_valid(instance))
        except ValueError:  # a lone surrogate cannot reach the engine; the reply reader refuses those anyway
            return False

    check.__name__ = f"is_{name.replace('-', '_')}"
    return check
