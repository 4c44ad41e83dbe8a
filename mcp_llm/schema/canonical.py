"""The canonical text of a schema (the key of every cache here), and clipping for messages."""

from __future__ import annotations

import json
from typing import Any


def canonical(schema: Any) -> str:
    """Sorted keys, no spaces: equal for schemas that differ only in key order (a cache key, never
    what is sent: providers get the caller's own key order)."""
    return json.dumps(schema, sort_keys=True, separators=(",", ":"), allow_nan=False)


def ordered_text(schema: Any) -> str:
    """The schema's JSON text in the caller's own key order (what compiled schemas are built from)."""
    return json.dumps(schema, separators=(",", ":"), allow_nan=False, ensure_ascii=False)


def clip(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
