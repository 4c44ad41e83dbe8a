"""The budget holds, whatever happens: over random chains of priced models, random prices, replies and
failures, what the providers bill never adds up to more than the call's budget, nor the day's.

Each example is a server with `[budget]` limits and a chain of OpenAI-compatible endpoints, each with its
own `cost_per_mtok` (some free), all served by one fake; a few calls go through an MCP client. The fake
answers each request with the next of a random list of replies: a valid answer, an invalid one (re-asked),
an error status (billed nothing), a stream broken mid-answer (billed, but never reported: the most it could
have been). Calls ask for progress in some examples, so their answers stream; the others go as plain
requests, on which the fake's mid-answer failure is an error status (a 500, billed nothing), as the API's.
Usage is random, up to the most a provider could bill (`MOST`: every byte of the prompt a
token, the whole max_tokens). What was billed is worked out here, from what the fake received and answered,
independently of the server's own accounting.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp import Client

from mcp_llm.config import load_settings
from mcp_llm.server import build_server
from tests.fakes.openai_server import MOST, FakeOpenAI, most_prompt_tokens

SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
ENDPOINTS = 4  # e0 … e3, model m0 … m3
EXAMPLES = int(os.environ.get("BUDGET_EXAMPLES", "40"))  # 40 take about 20 s here; 200 passed too


@dataclass(frozen=True)
class Planned:
    """One reply the fake will give: its kind, and the usage it reports (an int, or MOST)."""

    kind: str  # ok, invalid, error, broken
    prompt: int | str
    completion: int | str


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=None, models=[f"m{i}" for i in range(ENDPOINTS)]) as server:
        yield server


prices = st.one_of(st.just(0.0), st.floats(min_value=0.01, max_value=40.0))
usage = st.one_of(st.just(MOST), st.integers(min_value=0, max_value=400))
replies = st.lists(st.builds(Planned, st.sampled_from(["ok", "ok", "invalid", "error", "broken"]), usage, usage),
                   min_size=1, max_size=24)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    chain=st.lists(st.integers(0, ENDPOINTS - 1), min_size=1, max_size=4, unique=True),
    price_table=st.lists(st.tuples(prices, prices), min_size=ENDPOINTS, max_size=ENDPOINTS),
    per_call=st.one_of(st.none(), st.floats(min_value=0.0, max_value=0.02)),
    daily=st.one_of(st.none(), st.floats(min_value=0.0, max_value=0.05)),
    max_tokens=st.one_of(st.none(), st.integers(1, 1500)),
    default_max_tokens=st.integers(1, 1500),
    calls=st.integers(1, 4),
    planned=replies,
    repairs=st.integers(0, 2),
    retries=st.integers(0, 1),
    streamed=st.booleans(),
)
def test_what_is_billed_never_exceeds_the_budget(
    fake: FakeOpenAI, chain: list[int], price_table: list[tuple[float, float]], per_call: float | None,
    daily: float | None, max_tokens: int | None, default_max_tokens: int, calls: int, planned: list[Planned],
    repairs: int, retries: int, streamed: bool,
) -> None:
    if per_call is None and daily is None:
        daily = 0.02
    fake.reset()
    planned = [*planned, *[Planned("ok", MOST, MOST)] * 80]  # every request gets a planned reply
    for reply in planned:
        fake.enqueue(**_enqueued(reply))
    with TemporaryDirectory() as directory:
        path = Path(directory) / "config.toml"
        path.write_text(_config(fake, chain, price_table, per_call, daily, default_max_tokens, repairs, retries),
                        encoding="utf-8")
        results = anyio.run(_calls, fake, load_settings(path, env={}), chain, max_tokens, calls, streamed)

    billed = _billed(fake.chat_requests, planned, price_table)
    per_request = iter(billed)
    spent_by_call = []
    for result in results:  # the calls ran one after another: each took the next requests
        spent_by_call.append(sum(next(per_request) for _ in range(result["sent"])))
    slack = 1e-9 * (len(billed) + 1)  # the server rounds every charge up to the nano-dollar
    if per_call is not None:
        assert all(spent <= per_call + slack for spent in spent_by_call), (spent_by_call, per_call, results)
    if daily is not None:
        assert sum(billed) <= daily + slack, (billed, daily, results)
    for result in results:  # what the trace says was spent is what was billed, when it knows
        if result.get("cost_usd") is not None and result["sent"]:
            assert result["cost_usd"] <= (per_call if per_call is not None else daily or 0) + slack


async def _calls(fake: FakeOpenAI, settings: Any, chain: list[int], max_tokens: int | None,
                 calls: int, streamed: bool) -> list[dict[str, Any]]:
    """Each call in turn, with how many requests reached the fake during it (`sent`); with `streamed`, each
    asks for progress, so that its answers stream."""

    async def progress(done: float, total: float | None, message: str | None) -> None:
        pass

    out = []
    async with Client(build_server(settings)) as client:
        for _ in range(calls):
            arguments: dict[str, Any] = {"prompt": "How many? Answer with n.", "schema": SCHEMA,
                                         "model": f"e{chain[0]}/m{chain[0]}"}
            if max_tokens is not None:
                arguments["max_tokens"] = max_tokens
            before = len(fake.chat_requests)
            with anyio.fail_after(60):
                result = await client.call_tool("generate_structured", arguments,
                                                progress_callback=progress if streamed else None)
            trace = result.structured_content or {}
            out.append({"ok": not result.is_error, "cost_usd": trace.get("cost_usd"),
                        "sent": len(fake.chat_requests) - before})
    return out


def _enqueued(reply: Planned) -> dict[str, Any]:
    if reply.kind == "error":  # transient and retried; Retry-After 0 keeps the example fast
        return {"status": 429, "message": "simulated 429", "headers": {"Retry-After": "0"}}
    content = {"n": 1} if reply.kind != "invalid" else {"n": "many"}
    broken = reply.kind == "broken"
    extra = {"stream_error": "server_error", "message": "simulated mid-stream failure"} if broken else {}
    return {"content": content, "prompt_tokens": reply.prompt, "completion_tokens": reply.completion, **extra}


def _billed(requests: list[Any], planned: list[Planned], price_table: list[tuple[float, float]]) -> list[float]:
    """What the provider billed for each request it received, in order: its reply's usage at its model's price;
    nothing for an error status (a plain request's failure is one); for a broken stream, the most it could have
    billed."""
    billed = []
    chats = [r for r in requests if r.path == "/v1/chat/completions"]
    for request, reply in zip(chats, planned, strict=False):
        body = request.json
        index = int(body["model"][1:])
        price_in, price_out = price_table[index]
        limit = body.get("max_tokens") or body.get("max_completion_tokens")
        if reply.kind == "error" or (reply.kind == "broken" and not body.get("stream")):
            billed.append(0.0)  # an error status, before any answer (a plain request's failure is a 500)
            continue
        most_in, most_out = most_prompt_tokens(body), limit
        tokens_in = most_in if reply.kind == "broken" or reply.prompt == MOST else int(reply.prompt)
        tokens_out = most_out if reply.kind == "broken" or reply.completion == MOST else int(reply.completion)
        if limit is not None and tokens_out is not None:
            tokens_out = min(tokens_out, limit)
        if tokens_out is None:  # no max_tokens sent: only a free model goes unbounded
            assert price_out == 0.0 and price_in == 0.0, body
            tokens_out = 0
        assert limit is None or tokens_out <= limit  # a provider never bills more than max_tokens
        billed.append((tokens_in * price_in + tokens_out * price_out) / 1_000_000)
    return billed


def _config(fake: FakeOpenAI, chain: list[int], price_table: list[tuple[float, float]], per_call: float | None,
            daily: float | None, default_max_tokens: int, repairs: int, retries: int) -> str:
    lines = ["[defaults]", f"fallback = {json.dumps([f'e{i}/m{i}' for i in chain[1:]])}",
             f"max_repairs = {repairs}", f"max_retries = {retries}", "timeout_s = 60", "", "[budget]",
             f"default_max_tokens = {default_max_tokens}"]
    if per_call is not None:
        lines.append(f"max_cost_per_call_usd = {per_call!r}")
    if daily is not None:
        lines.append(f"daily_usd = {daily!r}")
    lines += ["", "[cache]", "enabled = false", "", "[discovery]", "enabled = false"]
    for i, (price_in, price_out) in enumerate(price_table):
        lines += ["", f"[providers.openai_compatible.e{i}]", f'endpoint = "{fake.base_url}"', f'models = ["m{i}"]',
                  f"cost_per_mtok = {{input = {price_in!r}, output = {price_out!r}}}"]
    return "\n".join(lines) + "\n"
