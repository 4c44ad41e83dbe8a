"""Which functions ran on the event loop's own thread: for the tests of where schema work runs
(test_schema_argument.py, test_schema_reply.py, test_schema_compile.py)."""

from __future__ import annotations

import sys
from typing import Any

from mcp_llm.schema import canonical as schema_canonical


class OnTheLoop:
    """Which of `functions` were called in this (the event loop's) thread, by a profile hook on it alone."""

    def __init__(self, *functions: Any) -> None:
        self.codes = {f.__code__: f.__name__ for f in functions}
        self.called: list[str] = []

    def _profile(self, frame: Any, event: str, arg: Any) -> None:
        if event == "call" and frame.f_code in self.codes:
            self.called.append(self.codes[frame.f_code])

    def __enter__(self) -> OnTheLoop:
        sys.setprofile(self._profile)
        return self

    def __exit__(self, *exc: object) -> None:
        sys.setprofile(None)


def schema_of(canonical_length: int, tag: str) -> dict[str, Any]:
    base = {"title": "", "type": "object", "x-tag": tag}
    padding = canonical_length - len(schema_canonical.canonical(base))
    return {**base, "title": "t" * padding}
