"""What a schema and a reply may cost (mcp_llm/schema/limits.py): one set of numbers, as documented."""

from __future__ import annotations

import tomllib
from pathlib import Path

from mcp_llm.config import LimitSettings
from mcp_llm.schema import ReplyLimits, limits_from
from mcp_llm.schema.gate import SchemaLimits

EXAMPLE_CONFIG = Path(__file__).resolve().parent.parent / "config.example.toml"


def test_the_limits_code_uses_by_default_are_those_the_config_documents() -> None:
    # `[limits]` in config.example.toml, the config's defaults and the readers' own defaults are one set of numbers.
    documented = tomllib.loads(EXAMPLE_CONFIG.read_text(encoding="utf-8"))["limits"]
    assert LimitSettings(**documented) == LimitSettings()
    assert limits_from(LimitSettings()) == (SchemaLimits(), ReplyLimits())
