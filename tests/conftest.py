"""Shared fixtures: a fake Ollama on loopback, settings pointing at it, and an MCP client on the server;
and every provider's fake behind one server (`running_fakes`, `fakes`, `serve`: see tests/fleet.py)."""

from __future__ import annotations

import importlib
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from mcp import Client

from mcp_llm.adapters.base import Timeouts
from mcp_llm.config import Settings, load_settings
from mcp_llm.server import build_server
from tests.fakes.ollama_server import FakeOllama

if TYPE_CHECKING:
    from tests.fleet import Fakes, Serve

TEXT_MODEL = "ollama/llama3.2:3b"
VISION_MODEL = "ollama/llava:7b"


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released): for servers to start, or to be refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def budget(timeout_s: float) -> Timeouts:
    """Adapter budgets for a test: a hung request times out after `timeout_s`."""
    return Timeouts(total_s=timeout_s, first_response_s=timeout_s)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def fake_ollama() -> Iterator[FakeOllama]:
    with FakeOllama() as fake:
        yield fake
        assert not fake.errors, f"the fake Ollama server itself failed: {fake.errors!r}"


def write_config(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Settings from a TOML snippet, with no environment but what the test passes."""

    def make(toml: str = "", env: dict[str, str] | None = None) -> Settings:
        config = write_config(tmp_path / "config.toml", toml)
        return load_settings(config, env=env or {})

    return make


@pytest.fixture
def image_root(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    root.mkdir()
    return root


def ollama_config(fake: FakeOllama, image_root: Path, extra: str = "", *, max_retries: int = 0) -> str:
    return f"""
[defaults]
model = "{TEXT_MODEL}"
vision_model = "{VISION_MODEL}"
max_retries = {max_retries}
max_repairs = 2
timeout_s = 20

[providers.ollama]
endpoint = "{fake.url}"

[[providers.ollama.models]]
id = "llama3.2:3b"
label = "Llama 3.2 3B"

[[providers.ollama.models]]
id = "llava:7b"
label = "LLaVA 7B"
vision = true

[images]
roots = ["{image_root}"]
{extra}
"""


@pytest.fixture
def settings(fake_ollama: FakeOllama, image_root: Path, make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(ollama_config(fake_ollama, image_root))


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[Client]:
    async with Client(build_server(settings)) as session:
        yield session


async def call(client: Client, tool: str, **arguments: Any) -> Any:
    """Call a tool; return its structured result, failing the test on a tool error."""
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content
    return result.structured_content


async def assert_sent_one_at_a_time(fake: Any, call_one: Callable[[], Any]) -> None:
    """Two calls at once to a provider with `concurrency = 1` (its first reply queued slow): the fake
    sees the second request only after the first is answered."""
    sent = lambda: len(fake.chat_requests)  # noqa: E731
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(call_one)
            tg.start_soon(call_one)
            assert await anyio.to_thread.run_sync(fake.wait_for, lambda: sent() >= 1, 20)
            second = await anyio.to_thread.run_sync(fake.wait_for, lambda: sent() >= 2, 0.8)
            assert not second, "concurrency = 1, yet a second request went out"
    assert sent() == 2


async def assert_cancelling_closes(fake: Any, complete: Callable[[], Any]) -> None:
    """An adapter's call cancelled while the fake hangs on it: the fake sees the connection closed."""
    fake.enqueue(hang=True)
    with anyio.move_on_after(0.5):
        await complete()
    assert await anyio.to_thread.run_sync(fake.wait_for_disconnect, 5), "the request was left open"


async def call_error(client: Client, tool: str, **arguments: Any) -> str:
    """Call a tool that must fail; return the error text the assistant sees."""
    result = await client.call_tool(tool, arguments)
    assert result.is_error, f"expected a tool error, got {result.structured_content!r}"
    return " ".join(getattr(block, "text", "") for block in result.content)


# --- every provider behind one server (tests/fleet.py) ----------------------------------------------


@pytest.fixture(scope="module")
def running_fakes() -> Iterator[Fakes]:
    """Every provider's fake, for the whole module (each test resets them: `fakes`). The provider SDKs
    are imported once up front, so no call's deadline pays for an import (Anthropic's takes ~2 s)."""
    from tests.fakes.anthropic_server import FakeAnthropic
    from tests.fakes.gemini_server import FakeGemini
    from tests.fakes.openai_server import FakeOpenAI
    from tests.fleet import ANTHROPIC_KEY, GEMINI_KEY, LMSTUDIO_KEY, OPENAI_KEY, Fakes

    for sdk in ("ollama", "google.genai", "anthropic", "openai"):
        importlib.import_module(sdk)
    with FakeOllama() as ollama, FakeGemini(api_key=GEMINI_KEY) as gemini, \
            FakeAnthropic(api_key=ANTHROPIC_KEY) as anthropic, FakeOpenAI(api_key=OPENAI_KEY) as openai, \
            FakeOpenAI(api_key=LMSTUDIO_KEY, models=["local-model"]) as lmstudio:
        yield Fakes(ollama, gemini, anthropic, openai, lmstudio)


@pytest.fixture
def fakes(running_fakes: Fakes) -> Iterator[Fakes]:
    for fake in running_fakes.all():
        fake.reset()
    yield running_fakes
    for fake in running_fakes.all():
        assert not fake.errors, f"the fake server itself failed: {fake.errors!r}"


@pytest.fixture
def serve(fakes: Fakes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Serve:
    """`async with serve(**config) as client:` — the server on every fake, with that config (`fleet.config_text`)."""
    from tests.fleet import config_text

    return serving(fakes, tmp_path, monkeypatch, config_text)


def serving(fakes: Fakes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
            config_text: Callable[..., str]) -> Serve:
    """`async with open_client(**options) as client:` — a server on every fake, its config
    `config_text(fakes, **options)`, with the fakes' keys in the environment."""
    from tests.fleet import ENV

    for name, value in ENV.items():  # the SDKs read some of these themselves
        monkeypatch.setenv(name, value)

    @asynccontextmanager
    async def open_client(**options: Any) -> AsyncIterator[Client]:
        path = tmp_path / "config.toml"
        path.write_text(config_text(fakes, **options), encoding="utf-8")
        async with Client(build_server(load_settings(path, env=ENV))) as client:
            yield client

    return open_client


@pytest.fixture
def fresh_health(monkeypatch: pytest.MonkeyPatch) -> None:
    """provider_health caches its probes for 5 s; a cached entry would hide the circuit's changes."""
    monkeypatch.setattr("mcp_llm.app.HEALTH_CACHE_S", 0.0)


# --- the report: the product's tests and the fakes' self-tests, counted apart ---------------------

_OUTCOMES = ("passed", "failed", "error", "skipped", "xfailed", "xpassed")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """One line per group, so the product's count is not inflated by the fakes' self-tests."""
    counts: dict[str, dict[str, set[str]]] = {"product": {}, "fakes_selftest": {}}
    for outcome in _OUTCOMES:
        for report in terminalreporter.stats.get(outcome, []):
            nodeid = getattr(report, "nodeid", "")
            if not nodeid:
                continue
            group = "fakes_selftest" if "fakes_selftest" in getattr(report, "keywords", {}) else "product"
            counts[group].setdefault(outcome, set()).add(nodeid)
    if not any(counts.values()):
        return
    terminalreporter.section("tests by group")
    for group, label in (("product", "mcp_llm (product)"), ("fakes_selftest", "fake servers' self-tests")):
        parts = [f"{len(ids)} {outcome}" for outcome in _OUTCOMES if (ids := counts[group].get(outcome))]
        terminalreporter.write_line(f"{label:26} {', '.join(parts) or 'none run'}")
