"""Every provider's fake behind one server, with prices, budgets and the response cache configured.

`async with priced(...) as client:` builds the server from `config(...)` (each fake as in tests/fleet.py,
plus the tables a test adds: `[budget]`, `[cache]`, a provider's `cost_per_mtok`) and opens an
in-process `mcp.Client` on it. The tests of cost.py, budget.py and response_cache.py use it
(tests/test_cost.py, test_budget.py, test_response_cache.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from decimal import Decimal
from pathlib import Path

import pytest
from mcp import Client

from tests.conftest import serving
from tests.fleet import Fakes

SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
    "required": ["city", "population"],
}
GOOD = {"city": "Lyon", "population": 522250}
BAD = {"city": 42}  # breaks SCHEMA: re-asked

# Our model id → (the provider, its native name, the library's provider id).
CLAUDE = "claude-haiku-4-5"
GEMINI = "gemini-2.5-flash"
GPT = "openai/gpt-4.1-mini"
LOCAL = "ollama/llama3.2:3b"
LMSTUDIO = "lmstudio/local-model"


def config(fakes: Fakes, *, model: str = LOCAL, fallback: Sequence[str] = (), max_retries: int = 0,
           max_repairs: int = 1, timeout_s: float = 10, tables: dict[str, str] | None = None) -> str:
    """The config text: every fake, and `tables` (`{"budget": "daily_usd = 1", "providers.ollama":
    "cost_per_mtok = 0"}`) added to their tables."""
    extra = dict(tables or {})

    def table(name: str, body: str) -> str:
        return f"[{name}]\n{body}\n{extra.pop(name, '')}\n"

    text = (
        table("defaults", f'model = "{model}"\nfallback = {json.dumps(list(fallback))}\nmax_retries = {max_retries}\n'
              f"max_repairs = {max_repairs}\ntimeout_s = {timeout_s}")
        + table("providers.ollama", f'endpoint = "{fakes.url("ollama")}"')
        + '[[providers.ollama.models]]\nid = "llama3.2:3b"\n'
        + table("providers.gemini", f'endpoint = "{fakes.url("gemini")}"')
        + table("providers.anthropic", f'endpoint = "{fakes.url("anthropic")}"')
        + table("providers.openai", f'endpoint = "{fakes.url("openai")}"')
        + table("providers.openai_compatible.lmstudio", f'endpoint = "{fakes.url("lmstudio")}"\n'
                'api_key_env = "LMSTUDIO_KEY"\nmodels = ["local-model"]')
    )
    return text + "".join(f"[{name}]\n{body}\n" for name, body in extra.items())


Priced = Callable[..., AbstractAsyncContextManager[Client]]


@pytest.fixture
def priced(fakes: Fakes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Priced:
    return serving(fakes, tmp_path, monkeypatch, config)


def library_price(model: str, provider_id: str, **usage: int) -> float:
    """The price library's own figure for a usage (what a result's cost_usd must equal)."""
    import genai_prices

    total = genai_prices.calc_price(genai_prices.Usage(**usage), model, provider_id=provider_id).total_price
    return float(Decimal(total))


def per_mtok(tokens: int, price: float) -> float:
    return tokens * price / 1_000_000
