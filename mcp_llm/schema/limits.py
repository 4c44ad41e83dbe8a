"""What a caller's schema and a model's reply may cost: the `[limits]` config section, split into
what the schema gate and the reply reader need, and where work moves off the event loop."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mcp_llm.config import LimitSettings

OFF_LOOP_CHARS = 1_024  # replies (and schemas) larger than this are parsed and checked in a worker thread


@dataclass(frozen=True)
class SchemaLimits:
    max_bytes: int = 2_097_152
    max_depth: int = 64
    max_refs: int = 20_000
    max_expansion: int = 2_000
    max_in_place_chain: int = 128  # schemas applied in place one inside another; bounds the validator's stack


@dataclass(frozen=True)
class ReplyLimits:
    max_bytes: int = 1_000_000
    max_depth: int = 64
    timeout_s: float = 5.0


DEFAULT_SCHEMA_LIMITS = SchemaLimits()
DEFAULT_REPLY_LIMITS = ReplyLimits()


def limits_from(settings: LimitSettings) -> tuple[SchemaLimits, ReplyLimits]:
    """The `[limits]` config section, split into what the schema gate and the reply reader need."""
    return (
        SchemaLimits(settings.schema_max_bytes, settings.schema_max_depth, settings.schema_max_refs,
                     settings.schema_max_expansion),
        ReplyLimits(settings.reply_max_bytes, settings.reply_max_depth, settings.validation_timeout_s),
    )


