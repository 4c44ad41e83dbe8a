"""Progress while a model streams: what an MCP client with a progress callback receives.

Every fake provider streams its answer in pieces with a pause between them (`chunk_delay_s`), as
a slow local model does; the client passes a progress callback (so the request carries a
progress token) in both protocol generations.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from mcp_llm.config import load_settings
from mcp_llm.progress import Progress
from mcp_llm.server import build_server
from mcp_llm.trace import Attempt
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.gemini_server import FakeGemini
from tests.fakes.ollama_server import FakeOllama

pytestmark = pytest.mark.anyio

ENV = {"GEMINI_API_KEY": "AIza-progress-test", "ANTHROPIC_API_KEY": "sk-ant-progress-test"}
STORY = {"type": "object", "properties": {"story": {"type": "string"}}, "required": ["story"]}
ANSWER = {"story": " ".join(f"word{i}" for i in range(40))}
PAUSE_S = 0.03  # between streamed pieces: ~40 pieces make a 1.2 s answer


Fakes = tuple[FakeOllama, FakeGemini, FakeAnthropic]


@pytest.fixture
def fakes() -> Iterator[Fakes]:
    with FakeOllama() as ollama, FakeGemini(api_key=ENV["GEMINI_API_KEY"]) as gemini, \
            FakeAnthropic(api_key=ENV["ANTHROPIC_API_KEY"]) as anthropic:
        yield ollama, gemini, anthropic


def config(tmp_path: Path, fakes: Fakes, extra: str = "") -> Path:
    ollama, gemini, anthropic = fakes
    path = tmp_path / "config.toml"
    path.write_text(f"""
[defaults]
model = "ollama/llama3.2:3b"
max_retries = 1
max_repairs = 1
timeout_s = 30
{extra}
[providers.ollama]
endpoint = "{ollama.url}"

[providers.gemini]
endpoint = "{gemini.url}"

[providers.anthropic]
endpoint = "{anthropic.url}"
""", encoding="utf-8")
    return path


@pytest.fixture(params=["auto", "legacy"])
async def client(request: pytest.FixtureRequest, tmp_path: Path, fakes: Fakes,
                 monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Client]:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    server = build_server(load_settings(config(tmp_path, fakes), env=ENV))
    async with Client(server, mode=request.param) as session:
        yield session


class Received:
    """What the client's progress callback got."""

    def __init__(self) -> None:
        self.events: list[tuple[float, float | None, str | None]] = []

    async def __call__(self, progress: float, total: float | None, message: str | None) -> None:
        self.events.append((progress, total, message))

    @property
    def values(self) -> list[float]:
        return [progress for progress, _, _ in self.events]

    @property
    def messages(self) -> list[str]:
        return [message or "" for _, _, message in self.events]


def enqueue(fakes: Fakes, provider: str, content: Any, **options: Any) -> None:
    fake = {"ollama": fakes[0], "gemini": fakes[1], "anthropic": fakes[2]}[provider]
    fake.enqueue(content, **options)


MODELS = {"ollama": "ollama/llama3.2:3b", "gemini": "gemini-2.5-flash", "anthropic": "claude-haiku-4-5"}


@pytest.mark.parametrize("provider", list(MODELS))
async def test_a_streamed_generation_reports_increasing_progress(client: Client, fakes: Fakes,
                                                                 provider: str) -> None:
    model = MODELS[provider]
    received = Received()
    enqueue(fakes, provider, ANSWER, chunk_delay_s=PAUSE_S)
    with anyio.fail_after(30):
        with_progress = await client.call_tool("generate_structured", {"prompt": "A story", "schema": STORY,
                                                                       "model": model}, progress_callback=received)
    assert not with_progress.is_error, with_progress.content
    assert len(received.events) >= 2, received.events
    assert received.values == sorted(set(received.values)), "progress must strictly increase"
    assert all(total is None for _, total, _ in received.events)
    assert all(message.startswith(f"{model}, attempt 1: ") for message in received.messages)
    assert received.values[-1] <= len(str(ANSWER)) * 2  # characters of the answer, not a made-up scale
    # a rate of a few per second at most: ~1.2 s of streaming gives a handful, not one per piece
    assert len(received.events) <= 12

    enqueue(fakes, provider, ANSWER, chunk_delay_s=PAUSE_S)
    with anyio.fail_after(30):
        without = await client.call_tool("generate_structured", {"prompt": "A story", "schema": STORY,
                                                                 "model": model})
    assert without.structured_content is not None and with_progress.structured_content is not None
    assert without.structured_content["data"] == with_progress.structured_content["data"] == ANSWER
    assert [a["outcome"] for a in without.structured_content["attempts"]] == ["ok"]


async def test_progress_names_the_attempt_on_re_asks_and_fallbacks(tmp_path: Path, fakes: Fakes,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    settings = load_settings(config(tmp_path, fakes, 'fallback = ["gemini-2.5-flash"]'), env=ENV)
    ollama, gemini, _ = fakes
    bad = {"story": 42, "padding": " ".join(["x"] * 30)}
    ollama.enqueue(bad, chunk_delay_s=PAUSE_S)  # invalid: re-asked
    ollama.enqueue(bad, chunk_delay_s=PAUSE_S)  # invalid again: max_repairs reached, fall back
    gemini.enqueue(ANSWER, chunk_delay_s=PAUSE_S)
    received = Received()
    async with Client(build_server(settings), mode="legacy") as client:
        with anyio.fail_after(30):
            result = await client.call_tool("generate_structured", {"prompt": "A story", "schema": STORY},
                                            progress_callback=received)
    assert not result.is_error, result.content
    assert result.structured_content is not None and result.structured_content["data"] == ANSWER
    assert received.values == sorted(set(received.values))
    joined = "\n".join(received.messages)
    assert "ollama/llama3.2:3b, attempt 1:" in joined
    assert "ollama/llama3.2:3b, attempt 2 (re-ask):" in joined
    assert "gemini-2.5-flash, attempt 3 (fallback):" in joined


async def test_notifications_are_throttled_and_strictly_increasing() -> None:
    now = [0.0]
    sent: list[tuple[float, str | None]] = []

    async def report(progress: float, total: float | None, message: str | None) -> None:
        sent.append((progress, message))

    progress = Progress(report, interval_s=0.25, clock=lambda: now[0])
    on_chunk = progress.listener("m", [])
    for _ in range(10):  # ten pieces within 0.09 s: the first is sent, the rest wait
        await on_chunk("abc")
        now[0] += 0.01
    assert sent == [(3.0, "m, attempt 1: 3 characters")]
    now[0] += 0.3
    await on_chunk("")  # the interval is over: what arrived meanwhile is reported
    assert sent[-1] == (30.0, "m, attempt 1: 30 characters")
    await on_chunk("de")  # too soon after that
    now[0] += 0.3
    await on_chunk("")
    await on_chunk("")  # nothing new: nothing sent, however long since the last
    retry = progress.listener("m", [Attempt(model="m", provider="p", outcome="error", latency_ms=1)])
    await retry("f")
    assert sent[1:] == [(30.0, "m, attempt 1: 30 characters"), (32.0, "m, attempt 1: 32 characters")]
    now[0] += 0.3
    await retry("")
    assert sent[-1] == (33.0, "m, attempt 2 (retry): 33 characters")


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_call_without_progress_is_one_plain_request_unless_a_first_response_budget_needs_a_stream(
    tmp_path: Path, fakes: Fakes, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """Streaming buys progress and a bound on the first byte (a cold model load); a call that asks for
    neither goes as one plain request, the cheaper one (issue 23), and answers the same."""
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    ollama = fakes[0]
    arguments = {"prompt": "A story", "schema": STORY}
    sent: dict[str, bool] = {}
    for budget in ("", "first_response_timeout_s = 20"):
        server = build_server(load_settings(config(tmp_path, fakes, budget), env=ENV))
        async with Client(server, mode=mode) as client:
            for label, options in (("progress", {"progress_callback": Received()}), ("none", {})):
                enqueue(fakes, "ollama", ANSWER)
                with anyio.fail_after(30):
                    result = await client.call_tool("generate_structured", arguments, **options)
                assert not result.is_error, result.content
                assert result.structured_content is not None and result.structured_content["data"] == ANSWER
                sent[f"{label}, {budget or 'no budget'}"] = ollama.chat_requests[-1].json["stream"]
    assert sent == {"progress, no budget": True, "none, no budget": False,
                    "progress, first_response_timeout_s = 20": True, "none, first_response_timeout_s = 20": True}
