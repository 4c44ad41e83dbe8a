"""Validating a reply against the caller's schema, bounded in time and never crashing.

jsonschema's own validators, for the schema's dialect, with these keyword functions changed:
- every keyword checks a deadline first, so validation that would take too long stops with
  `ValidationTimeout` (from any thread) instead of stalling the server;
- `uniqueItems` is linear (a canonical key per item), where jsonschema compares every pair of
  unhashable items: 3,000 distinct objects took 7 s;
- the keywords that match regular expressions use ECMA-262 patterns in bounded time
  (ecma_keywords.py, regex.py): Python's `re` could hold the GIL for ever on one reply.
Formats are asserted as the official test suite defines them (formats.py). The schema is read
through `quirks.crawlable`, which works around a `referencing` crash on name-list dependencies.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jsonschema.protocols import Validator

MAX_REPORTED_ERRORS = 8
MAX_ERRORS_COLLECTED = 64
MAX_MESSAGE_CHARS = 300

_deadline = threading.local()


class ValidationTimeout(Exception):
    """Checking the value took longer than the limit."""


def dialect_class(schema: dict[str, Any] | bool) -> type[Validator]:
    """The validator class for the schema's `$schema`, 2020-12 when it names none."""
    from jsonschema import Draft202012Validator
    from jsonschema.validators import validator_for

    return validator_for(schema, default=Draft202012Validator)


def dialect_of(cls: type[Validator]) -> str:
    """`draft4` … `draft2020-12` for a validator class."""
    from mcp_llm.schema.formats import dialect_name

    return dialect_name(str(cls.META_SCHEMA.get("$schema") or cls.META_SCHEMA.get("id") or ""))


@lru_cache(maxsize=256)
def compiled_validator(canonical_schema: str) -> Validator:
    """One validator per distinct schema: callers send the same few schemas again and again."""
    from mcp_llm.schema.formats import format_checker
    from mcp_llm.schema.quirks import crawlable

    schema = json.loads(canonical_schema)
    cls = dialect_class(schema)
    dialect = dialect_of(cls)
    return _bounded_class(cls)(crawlable(schema, draft3=dialect == "draft3"), format_checker=format_checker(dialect))


def errors_within(validator: Validator, instance: Any, timeout_s: float) -> list[str]:
    """Up to MAX_REPORTED_ERRORS problems, as `at $.path: message`; [] if valid.

    Raises ValidationTimeout past `timeout_s`, RecursionError when the value is too deep to walk.
    """
    from itertools import islice

    _deadline.at = time.monotonic() + timeout_s
    try:
        found = list(islice(validator.iter_errors(instance), MAX_ERRORS_COLLECTED))
    finally:
        _deadline.at = None
    found.sort(key=lambda e: ([str(p) for p in e.absolute_path], e.message))
    return [f"at {json_path(e.absolute_path)}: {_short(e.message)}" for e in found[:MAX_REPORTED_ERRORS]]


def json_path(parts: Any) -> str:
    path = "$"
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def _short(message: str) -> str:
    """jsonschema puts the whole offending value in its message: keep the error readable."""
    return message if len(message) <= MAX_MESSAGE_CHARS else message[: MAX_MESSAGE_CHARS - 1] + "…"


_BOUNDED: dict[type, type] = {}


def _bounded_class(cls: type[Validator]) -> type[Validator]:
    if cls not in _BOUNDED:
        from jsonschema.validators import extend

        from mcp_llm.schema.ecma_keywords import KEYWORDS as ECMA_KEYWORDS

        keywords = {name: _with_deadline(fn) for name, fn in cls.VALIDATORS.items()}
        for name, fn in ECMA_KEYWORDS.items():
            if name in keywords:
                keywords[name] = _with_deadline(fn)
        if "uniqueItems" in keywords:
            keywords["uniqueItems"] = _with_deadline(_unique_items)  # type: ignore[arg-type]
        _BOUNDED[cls] = extend(cls, keywords)
    return _BOUNDED[cls]


KeywordFn = Callable[[Any, Any, Any, Any], Any]


def _with_deadline(fn: KeywordFn) -> KeywordFn:
    def checked(validator: Any, value: Any, instance: Any, schema: Any) -> Any:
        at = getattr(_deadline, "at", None)
        if at is not None and time.monotonic() > at:
            raise ValidationTimeout
        return fn(validator, value, instance, schema) or ()

    return checked


def _unique_items(validator: Any, unique: Any, instance: Any, schema: Any) -> Iterator[Any]:
    from jsonschema.exceptions import ValidationError

    if not unique or not validator.is_type(instance, "array"):
        return
    seen: set[Any] = set()
    for item in instance:
        key = _canonical_key(item)
        if key in seen:
            yield ValidationError(f"{_short(repr(instance))} has non-unique elements")
            return
        seen.add(key)


def _canonical_key(value: Any) -> Any:
    """A hashable key equal for JSON-equal values: 1 and 1.0 alike, true and 1 not."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return (type(value).__name__, value)
    if isinstance(value, int | float):
        return ("number", value)  # 1 == 1.0 and hash(1) == hash(1.0)
    if isinstance(value, list):
        return ("array", tuple(_canonical_key(v) for v in value))
    if isinstance(value, dict):
        return ("object", frozenset((k, _canonical_key(v)) for k, v in value.items()))
    return ("other", repr(value))
