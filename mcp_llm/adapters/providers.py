"""Every provider this server knows, one line each, in the order they are listed, routed and shown.

A provider states its own facts in its module's `SPEC` (see spec.py); this tuple is the one place
that says which providers there are. The order matters where users see it: the `[providers]` table
and `mcp-llm config`, the prefixes an unknown id's error lists (and tries, first match wins), the
rows of `provider_health`. Importing this module imports no SDK: each adapter imports its own on
first use.
"""

from __future__ import annotations

from mcp_llm.adapters import anthropic, gemini, ollama, openai, sampling
from mcp_llm.adapters.spec import ProviderSpec

PROVIDERS: tuple[ProviderSpec, ...] = (
    ollama.SPEC,
    gemini.SPEC,
    anthropic.SPEC,
    openai.SPEC,
    openai.COMPATIBLE_SPEC,
    sampling.SPEC,
)


def spec_named(name: str, specs: tuple[ProviderSpec, ...] = PROVIDERS) -> ProviderSpec:
    """The spec of the provider table `name` (KeyError when there is none)."""
    for spec in specs:
        if spec.name == name:
            return spec
    raise KeyError(name)
