"""Budgets that hold before money is spent (budget.py): each attempt is checked against its worst case
before it is sent; one that could exceed is not made, and the chain moves on (to a free local model,
say) or the call fails with budget_exceeded. Through an MCP client, the real SDKs and the fakes."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import anyio
import pytest

from mcp_llm.adapters.base import ImageInput, Message, Request
from mcp_llm.budget import (
    MESSAGE_OVERHEAD_TOKENS,
    REQUEST_OVERHEAD_TOKENS,
    LocalLedger,
    image_tokens_bound,
    prompt_tokens_bound,
    to_nano,
)
from tests.conftest import call, call_error
from tests.fleet import Fakes
from tests.priced import BAD, CLAUDE, GOOD, GPT, LMSTUDIO, LOCAL, SCHEMA, Priced, library_price, per_mtok, priced

pytestmark = pytest.mark.anyio
__all__ = ["priced"]

FREE_LOCAL = {"providers.ollama": "cost_per_mtok = 0"}
# Claude Haiku 4.5: $1/M in, $5/M out. 4,096 answer tokens at worst are $0.02048; the prompt's bound (its bytes,
# the schema's, the request's overheads) adds $0.001 to $0.002.
ONE_CALL_AT_WORST = 0.0225


async def generate(client: Any, model: str | None = None, **arguments: Any) -> dict[str, Any]:
    with anyio.fail_after(30):
        return await call(client, "generate_structured", prompt="A French city, please.", schema=SCHEMA,
                          **({"model": model} if model else {}), **arguments)


async def generate_error(client: Any, model: str, **arguments: Any) -> str:
    with anyio.fail_after(30):
        return await call_error(client, "generate_structured", prompt="A French city, please.", schema=SCHEMA,
                                model=model, **arguments)


async def test_a_budget_below_one_calls_cost_sends_nothing_and_says_budget_exceeded(
    priced: Priced, fakes: Fakes
) -> None:
    async with priced(tables={"budget": "max_cost_per_call_usd = 0.01"}) as client:
        text = await generate_error(client, CLAUDE)
    assert fakes.completions("anthropic") == 0
    assert "budget_exceeded" in text
    assert "at worst it would cost $0.02" in text and "$0.01 is left of this call's budget" in text, text


async def test_the_call_succeeds_on_a_free_local_model_of_the_chain(priced: Priced, fakes: Fakes) -> None:
    fakes.ollama.enqueue(GOOD, prompt_tokens=300, completion_tokens=20)
    async with priced(model=CLAUDE, fallback=[LOCAL], tables={"budget": "daily_usd = 0.001", **FREE_LOCAL}) as client:
        result = await generate(client, CLAUDE)
    assert fakes.completions("anthropic") == 0
    assert [(a["model"], a["outcome"], a["error"], a["cost_usd"]) for a in result["attempts"]] == [
        (CLAUDE, "skipped", "budget_exceeded", 0.0), (LOCAL, "ok", None, 0.0)]
    assert result["model"] == LOCAL and result["data"] == GOOD and result["cost_usd"] == 0.0
    assert "num_predict" not in fakes.ollama.chat_requests[-1].json.get("options", {})  # free: no bound needed


async def test_a_cloud_model_answers_within_the_budget_and_the_day_keeps_its_real_cost(
    priced: Priced, fakes: Fakes
) -> None:
    """Each call holds its worst case, then is charged what it really cost: here two fit in a day's $0.05
    (at worst $0.0205 each), and a third, with $0.05 minus two real costs left, fits again."""
    for _ in range(3):
        fakes.anthropic.enqueue(GOOD, input_tokens=500, output_tokens=30)
    async with priced(tables={"budget": "daily_usd = 0.05"}) as client:
        results = [await generate(client, CLAUDE) for _ in range(3)]
        stats = json.loads((await client.read_resource("mcp-llm://stats")).contents[0].text)  # type: ignore[union-attr]
    one = library_price(CLAUDE, "anthropic", input_tokens=500, output_tokens=30)
    assert [r["cost_usd"] for r in results] == pytest.approx([one] * 3)
    assert stats["budget"]["spent_today_usd"] == pytest.approx(3 * one, abs=1e-9)
    assert stats["budget"]["daily_usd"] == 0.05


async def test_the_daily_budget_refuses_what_would_overrun_it(priced: Priced, fakes: Fakes) -> None:
    fakes.anthropic.enqueue(GOOD, input_tokens=2000, output_tokens=4000)  # $0.022: what is left is then < 1 worst
    async with priced(tables={"budget": "daily_usd = 0.03"}) as client:
        first = await generate(client, CLAUDE)
        text = await generate_error(client, CLAUDE)
    assert first["cost_usd"] == pytest.approx(per_mtok(2000, 1) + per_mtok(4000, 5))
    assert fakes.completions("anthropic") == 1
    assert "budget_exceeded" in text and "of today's budget (budget.daily_usd $0.03" in text, text
    assert "$0.008 is left" in text, text


async def test_calls_at_once_cannot_overrun_the_day_together(priced: Priced, fakes: Fakes) -> None:
    """Each holds its worst case while it runs: with room for two worst cases, two of five calls at once go."""
    for _ in range(5):
        fakes.anthropic.enqueue(GOOD, input_tokens=100, output_tokens=10, delay_s=0.3)
    outcomes: list[bool] = []
    async with priced(tables={"budget": f"daily_usd = {2 * ONE_CALL_AT_WORST + 0.001}"}) as client:

        async def one() -> None:
            result = await client.call_tool("generate_structured", {"prompt": "A French city, please.",
                                                                    "schema": SCHEMA, "model": CLAUDE})
            outcomes.append(not result.is_error)

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for _ in range(5):
                    tg.start_soon(one)
    assert sorted(outcomes) == [False, False, False, True, True]
    assert fakes.completions("anthropic") == 2


async def test_the_calls_own_max_cost_usd_lowers_the_budget_never_raises_it(priced: Priced, fakes: Fakes) -> None:
    fakes.anthropic.enqueue(GOOD, input_tokens=100, output_tokens=10)
    async with priced(tables={"budget": "max_cost_per_call_usd = 1"}) as client:
        lowered = await generate_error(client, CLAUDE, max_cost_usd=0.001)
        assert "$0.001 is left of this call's budget" in lowered, lowered
        allowed = await generate(client, CLAUDE, max_cost_usd=0.5)
    assert allowed["data"] == GOOD and fakes.completions("anthropic") == 1
    async with priced(tables={"budget": "max_cost_per_call_usd = 0.001"}) as client:
        kept = await generate_error(client, CLAUDE, max_cost_usd=10)
    assert "budget_exceeded" in kept and fakes.completions("anthropic") == 1


async def test_a_reask_that_could_exceed_is_not_made_and_the_chain_moves_on(priced: Priced, fakes: Fakes) -> None:
    """The first answer is invalid and cost $0.0165; a re-ask would again risk $0.0205 of the $0.025 left:
    not made; the free local model answers."""
    fakes.anthropic.enqueue(BAD, input_tokens=500, output_tokens=3200)
    fakes.ollama.enqueue(GOOD)
    async with priced(model=CLAUDE, fallback=[LOCAL], tables={"budget": "max_cost_per_call_usd = 0.025",
                                                               **FREE_LOCAL}) as client:
        result = await generate(client, CLAUDE)
    assert [(a["model"], a["outcome"], a["error"]) for a in result["attempts"]] == [
        (CLAUDE, "invalid_output", "invalid_output"), (CLAUDE, "skipped", "budget_exceeded"), (LOCAL, "ok", None)]
    assert fakes.completions("anthropic") == 1
    assert result["cost_usd"] == pytest.approx(per_mtok(500, 1) + per_mtok(3200, 5))


async def test_an_unknown_price_is_not_asked_under_a_budget(priced: Priced, fakes: Fakes) -> None:
    async with priced(tables={"budget": "daily_usd = 100"}) as client:
        text = await generate_error(client, LMSTUDIO)
    assert fakes.completions("lmstudio") == 0
    assert "budget_exceeded" in text and "its price is not" in text
    assert "Set cost_per_mtok in [providers.openai_compatible.lmstudio]" in text, text


async def test_a_call_with_no_max_tokens_is_sent_the_budgets_bound(priced: Priced, fakes: Fakes) -> None:
    fakes.openai.enqueue(GOOD, prompt_tokens=100, completion_tokens=10)
    fakes.openai.enqueue(GOOD, prompt_tokens=100, completion_tokens=10)
    async with priced(tables={"budget": "daily_usd = 1\ndefault_max_tokens = 1500"}) as client:
        bounded = await generate(client, GPT)
        own = await generate(client, GPT, max_tokens=300)
    first, second = fakes.openai.chat_requests[-2:]
    assert first.json["max_completion_tokens"] == 1500 and second.json["max_completion_tokens"] == 300
    assert bounded["argument_rewrites"] == ["max_tokens set to 1,500 (budget.default_max_tokens): under a budget "
                                            "every priced attempt has a bound"]
    assert own["argument_rewrites"] == []


async def test_no_budget_changes_nothing(priced: Priced, fakes: Fakes) -> None:
    fakes.openai.enqueue(GOOD, prompt_tokens=100, completion_tokens=10)
    async with priced() as client:
        result = await generate(client, GPT)
    assert "max_completion_tokens" not in fakes.openai.chat_requests[-1].json
    assert result["argument_rewrites"] == []


def test_the_prompt_bound_counts_every_byte_and_the_overheads() -> None:
    request = Request(model="m", messages=[Message("user", "héllo"), Message("assistant", "ok"),
                                           Message("user", "fix it", [ImageInput(b"x", "image/png")])],
                      system="Be brief.", schema={"type": "object"})
    text = len("héllo".encode()) + 2 + 6 + len("Be brief.") + len('{"type": "object"}')
    assert prompt_tokens_bound(request) == text + REQUEST_OVERHEAD_TOKENS + 3 * MESSAGE_OVERHEAD_TOKENS + 8192
    assert image_tokens_bound(1568, 1568) == 3780 or image_tokens_bound(1568, 1568) >= 1568 * 1568 // 750
    assert image_tokens_bound(3072, 3072) == max(3072 * 3072 // 750 + 1, 85 + 170 * 36, 258 * 16)


async def test_the_local_ledger_never_takes_more_than_its_limit() -> None:
    ledger = LocalLedger()
    assert await ledger.reserve("2026-01-01", 60, 100) == (True, 100)
    assert await ledger.reserve("2026-01-01", 50, 100) == (False, 40)
    await ledger.adjust("2026-01-01", -30)  # settled at a real cost below its worst case
    assert await ledger.reserve("2026-01-01", 50, 100) == (True, 70)
    assert await ledger.reserve("2026-01-02", 100, 100) == (True, 100)  # a new day
    assert await ledger.spent("2026-01-01") == 0  # the day before is forgotten
    assert to_nano(Decimal("0.0000000001")) == 1  # rounded up: a charge is never below the cost


async def test_the_readmes_example_chain_runs_as_it_says(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """README.md's local-then-cloud chain under a daily budget, its config block as written, pointed at fakes."""
    import re

    from mcp import Client

    from mcp_llm.config import load_settings
    from mcp_llm.server import build_server
    from tests.fakes.anthropic_server import FakeAnthropic
    from tests.fakes.ollama_server import FakeModel, FakeOllama
    from tests.stdio_harness import REPO_ROOT

    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"An example: a local model first.*?```toml\n(.*?)```", readme, re.S)
    assert block, "the README lost its budget example"
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-readme-1")
    with FakeOllama(models=[FakeModel("qwen2.5:7b")]) as ollama, FakeAnthropic(api_key="sk-ant-readme-1") as claude:
        text = block.group(1).replace("[providers.ollama]\n", f'[providers.ollama]\nendpoint = "{ollama.url}"\n')
        text += f'\n[providers.anthropic]\nendpoint = "{claude.url}"\n'
        (tmp_path / "config.toml").write_text(text, encoding="utf-8")
        settings = load_settings(tmp_path / "config.toml", env={"ANTHROPIC_API_KEY": "sk-ant-readme-1"})
        ollama.enqueue(GOOD, prompt_tokens=200, completion_tokens=20)
        ollama.enqueue(status=400, error="simulated: the model cannot follow the schema")
        claude.enqueue(GOOD, input_tokens=900, output_tokens=80)
        async with Client(build_server(settings)) as client:
            local = await generate(client)
            fell_back = await generate(client)
    assert local["model"] == "ollama/qwen2.5:7b" and local["cost_usd"] == 0.0
    assert [(a["model"], a["outcome"]) for a in fell_back["attempts"]] == [
        ("ollama/qwen2.5:7b", "error"), (CLAUDE, "ok")]
    assert fell_back["cost_usd"] == pytest.approx(per_mtok(900, 1) + per_mtok(80, 5))
    assert settings.budget.daily_usd == 5 and settings.budget.max_cost_per_call_usd == 0.05
