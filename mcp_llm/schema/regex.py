"""Regular expressions as JSON Schema means them: ECMA-262, matched in bounded time.

`pattern`, `patternProperties` and the `regex` format are ECMA-262 regular expressions (JSON
Schema 2020-12, section 6.4). Python's `re` is not that dialect: `\\d` matches any Unicode digit,
`$` matches before a final newline, `(?P<name>…)` is accepted and `\\p{L}` is refused. Worse, it
backtracks without bound while holding the GIL, so one 40-character reply against `(a|a?)+$`
froze the whole server: no deadline or worker thread can interrupt it.

So matching goes through the engine of `jsonschema-rs` (Rust), which ships the ECMA-262
translation its validator uses: a pattern without lookaround or backreferences runs on Rust's
`regex` crate, in time linear in the input; only a pattern that needs them runs on `fancy-regex`'s
backtracking VM, stopped after `BACKTRACK_LIMIT` steps. A match the engine gives up on is
`PatternUndecided`, never a guess either way: the caller treats the value as not checkable.
Each pattern is compiled once (`compile_pattern`, cached) and costs about a microsecond a match.

The engine is reached through a one-keyword schema (`{"pattern": P}`) because that is the API
the package exposes; a test pins that a give-up is told apart from a plain mismatch.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

# fancy-regex steps before it gives up; at this bound a pathological pattern against a 1 MB
# string returns within ~50 ms (bench/hostile.py), and real patterns never come near it.
BACKTRACK_LIMIT = 20_000
PATTERNS_KEPT = 4_096


class PatternError(ValueError):
    """Not an ECMA-262 regular expression, or too large for the engine's bounds."""


class PatternUndecided(Exception):
    """The engine gave up on one match (its backtracking limit): neither a match nor a mismatch."""

    def __init__(self, pattern: str) -> None:
        super().__init__(pattern)
        self.pattern = pattern


class Pattern:
    """A compiled ECMA-262 pattern; `search` is JavaScript's `RegExp.prototype.test` (unanchored)."""

    __slots__ = ("_matches", "_misses", "source")

    def __init__(self, source: str, matches: Any) -> None:
        self.source = source
        self._matches = matches  # the engine's validator for {"pattern": source}
        self._misses: Any = None  # for {"not": {"pattern": source}}, built on the first mismatch

    def search(self, text: str) -> bool:
        if self._matches.is_valid(text):
            return True
        if self._misses is None:
            self._misses = _validator({"not": {"pattern": self.source}})
        if self._misses.is_valid(text):  # both refuse a value only when the engine gave up on it
            return False
        raise PatternUndecided(self.source)


def _validator(schema: dict[str, Any]) -> Any:
    import jsonschema_rs

    return jsonschema_rs.Draft202012Validator(
        schema, pattern_options=jsonschema_rs.FancyRegexOptions(backtrack_limit=BACKTRACK_LIMIT)
    )


@lru_cache(maxsize=1)
def _regex_format() -> Any:
    """The engine's check of the `regex` format: ECMA-262 syntax, which its matcher does not quite
    follow (it takes Python's `(?P<name>…)` and `(?i)`, and refuses `[^]` and `\\k<name>`)."""
    import jsonschema_rs

    return jsonschema_rs.Draft202012Validator({"format": "regex"}, validate_formats=True)


@lru_cache(maxsize=PATTERNS_KEPT)
def compile_pattern(source: str) -> Pattern:
    """The compiled pattern; PatternError, saying why, if the engine cannot run it.

    Patterns in schemas are taken as real schemas write them: ECMA-262, and also the Annex B
    and Python spellings that ECMA-262's strict (`u`) syntax refuses but every other reader takes
    (`\\{` for a brace, a `]` outside a class, `(?P<name>…)`, `(?i)`), with their usual meaning.
    Whether a string in a reply is a regex (`format: regex`) is the strict question: `is_pattern`.
    """
    import jsonschema_rs

    try:
        return Pattern(source, _validator({"pattern": source}))
    except ValueError as exc:  # e.g. a lone surrogate: not UTF-8
        if isinstance(exc, jsonschema_rs.ValidationError):
            strict = is_pattern(source)
            raise PatternError(
                "it uses a construct the bounded-time engine cannot run (named backreferences \\k<…>, "
                "empty classes [] and [^], or a size past its limits)" if strict
                else "it is not a regular expression (ECMA-262, the dialect JSON Schema uses)"
            ) from None
        raise PatternError(f"it cannot be read ({_reason(exc)})") from None


def is_schema_pattern(source: object) -> bool:
    """The `regex` format as the gate reads a schema's own patterns: one the engine can run."""
    if not isinstance(source, str):
        return True
    try:
        compile_pattern(source)
    except PatternError:
        return False
    return True


def is_pattern(source: object) -> bool:
    """The `regex` format: whether a string is an ECMA-262 regular expression."""
    if not isinstance(source, str):
        return True  # formats apply to strings only
    try:
        return bool(_regex_format().is_valid(source))
    except ValueError:
        return False


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:300]
