"""A cancelled tool call cancels its provider request: the fake server sees the connection closed.

The client cancels structurally (a cancel scope around `call_tool`), which sends
`notifications/cancelled`; the server cancels the tool's task, and the streamed HTTP request
under it is closed. Nothing is left running, and the next call is answered.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import anyio
import pytest
from mcp import Client

from mcp_llm.config import load_settings
from mcp_llm.server import build_server
from tests.conftest import call
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.gemini_server import FakeGemini
from tests.fakes.ollama_server import FakeOllama

pytestmark = pytest.mark.anyio

SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
MODELS = {"ollama": "ollama/llama3.2:3b", "gemini": "gemini-2.5-flash", "anthropic": "claude-haiku-4-5"}
DISCONNECT_BOUND_S = 5.0  # generous: the disconnect is expected within milliseconds


@pytest.fixture
def fakes() -> Iterator[dict[str, Any]]:
    with FakeOllama() as ollama, FakeGemini(api_key="g-key") as gemini, FakeAnthropic(api_key="a-key") as anthropic:
        yield {"ollama": ollama, "gemini": gemini, "anthropic": anthropic}


@pytest.fixture
def settings(tmp_path: Path, fakes: dict[str, Any]):
    config = tmp_path / "config.toml"
    config.write_text(
        "[defaults]\nmax_retries = 0\ntimeout_s = 60\n"
        + "".join(f'[providers.{name}]\nendpoint = "{fake.url}"\n' for name, fake in fakes.items())
    )
    return load_settings(config, env={"GEMINI_API_KEY": "g-key", "ANTHROPIC_API_KEY": "a-key"})


def _generation_requests(fake: Any) -> list[Any]:
    return [r for r in fake.requests if r.method == "POST"]


def _streamed(provider: str, request: Any) -> bool:
    """Whether the SDK asked for a stream: `stream` in Ollama's and Anthropic's body, Gemini's method."""
    return request.stream if provider == "gemini" else bool(request.json.get("stream"))


@pytest.mark.parametrize("mode", ["auto", "legacy"])
@pytest.mark.parametrize("provider", sorted(MODELS))
async def test_cancelled_call_closes_the_provider_request(
    settings, fakes: dict[str, Any], provider: str, mode: Literal["auto", "legacy"]
) -> None:
    fake = fakes[provider]
    fake.enqueue(hang=True)
    async with Client(build_server(settings), mode=mode) as client:
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.call_tool, "generate_structured",
                          {"prompt": "wait", "schema": SCHEMA, "model": MODELS[provider]})
            # The first call may import the provider's SDK (~2 s for anthropic). Once the fake has
            # the request, it is in flight, and the fake is hanging on it.
            arrived = await anyio.to_thread.run_sync(fake.wait_for, lambda: _generation_requests(fake), 30)
            assert arrived, f"{provider}: the request never reached the fake"
            tg.cancel_scope.cancel()
        cancelled_at = time.monotonic()
        closed = await anyio.to_thread.run_sync(fake.wait_for_disconnect, DISCONNECT_BOUND_S)
        assert closed, f"{provider}: the backend request was left open after the client cancelled"
        assert not _streamed(provider, _generation_requests(fake)[0]), "no progress asked: one plain request"
        print(f"{provider}/{mode}: backend saw the close {1000 * (time.monotonic() - cancelled_at):.0f} ms after")

        result = await call(client, "generate_structured", prompt="again", schema=SCHEMA, model=MODELS[provider])
        assert result["data"] in ({"ok": True}, {"ok": False})


async def test_cancelled_call_over_stdio_closes_the_provider_request(tmp_path: Path) -> None:
    import sys

    from mcp import StdioServerParameters

    from tests.stdio_harness import server_args, subprocess_env, write_config

    with FakeOllama() as fake:
        fake.enqueue(hang=True)
        params = StdioServerParameters(command=sys.executable, args=server_args(write_config(fake, tmp_path)),
                                       env=subprocess_env())
        async with Client(params) as client:
            async with anyio.create_task_group() as tg:
                tg.start_soon(client.call_tool, "generate_structured", {"prompt": "wait", "schema": SCHEMA})
                arrived = await anyio.to_thread.run_sync(fake.wait_for, lambda: fake.chat_requests, 30)
                assert arrived, "the request never reached the fake"
                tg.cancel_scope.cancel()
            assert await anyio.to_thread.run_sync(fake.wait_for_disconnect, DISCONNECT_BOUND_S)
            assert fake.chat_requests[0].json["stream"] is False  # no progress asked: one plain request, closed too
            result = await call(client, "generate_structured", prompt="again", schema=SCHEMA)
            assert set(result["data"]) == {"ok"}
