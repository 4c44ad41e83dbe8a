"""Works the moment it is added: with no config file and no environment, a call with no model answers.

In order: the client's own model if it can sample; else the first suitable model a reachable Ollama
reports (a vision model for images); else an error naming both ways out.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp_types import CreateMessageResult, TextContent

from mcp_llm.config import Settings, load_settings
from mcp_llm.errors import UnknownModelError
from mcp_llm.registry import Registry
from mcp_llm.server import build_server
from tests.conftest import call, call_error, free_port
from tests.fakes.ollama_server import FakeModel, FakeOllama
from tests.images import png_bytes
from tests.stdio_harness import REPO_ROOT, subprocess_env

pytestmark = pytest.mark.anyio
SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}


@dataclass(frozen=True)
class EmbeddingModel(FakeModel):
    """A model that cannot chat: `/api/show` lists only `embedding`."""

    @property
    def capabilities(self) -> list[str]:
        return ["embedding"]


def fresh_install(tmp_path: Path, **env: str) -> Settings:
    """No config file at all (the user config dir is empty), and only the environment given."""
    return load_settings(env={"XDG_CONFIG_HOME": str(tmp_path / "empty-config-dir"), **env})


async def sample(_ctx: Any, _params: Any) -> CreateMessageResult:
    return CreateMessageResult(role="assistant", content=TextContent(text='{"ok": true}'), model="own-model")


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_a_fresh_install_answers_through_a_sampling_client(mode: str, tmp_path: Path) -> None:
    settings = fresh_install(tmp_path, OLLAMA_HOST=f"127.0.0.1:{free_port()}")
    assert settings.path is None and settings.defaults.model == ""
    with anyio.fail_after(10):
        async with Client(build_server(settings), mode=mode, sampling_callback=sample) as client:
            result = await call(client, "generate_structured", prompt="ok?", schema=SCHEMA)
    assert result["data"] == {"ok": True}
    assert result["model"] == "client/own-model" and result["provider"] == "client"


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_with_no_config_a_reachable_ollama_answers(mode: str, tmp_path: Path, image_root: Path) -> None:
    models = [EmbeddingModel("nomic-embed-text:latest"), FakeModel("llama3.2:3b"),
              FakeModel("llava:7b", vision=True)]
    with FakeOllama(models) as fake:
        settings = fresh_install(tmp_path, OLLAMA_HOST=fake.url)
        settings.images.roots = [image_root]
        (image_root / "a.png").write_bytes(png_bytes())
        with anyio.fail_after(15):
            async with Client(build_server(settings), mode=mode) as client:
                text = await call(client, "generate_structured", prompt="ok?", schema=SCHEMA)
                image = await call(client, "analyze_image", image=str(image_root / "a.png"), prompt="What?")
        chats = [json.loads(r.body) for r in fake.requests if r.path == "/api/chat"]
        assert not fake.errors
    assert text["model"] == "ollama/llama3.2:3b" and text["data"] == {"ok": False}
    assert image["model"] == "ollama/llava:7b"  # the vision-capable one, from /api/show
    assert [c["model"] for c in chats] == ["llama3.2:3b", "llava:7b"]


async def test_a_sampling_client_comes_before_ollama(tmp_path: Path, fake_ollama: FakeOllama) -> None:
    settings = fresh_install(tmp_path, OLLAMA_HOST=fake_ollama.url)
    with anyio.fail_after(10):
        async with Client(build_server(settings), sampling_callback=sample) as client:
            result = await call(client, "generate_structured", prompt="ok?", schema=SCHEMA)
    assert result["provider"] == "client"
    assert fake_ollama.requests == []  # not even asked for its models


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_with_neither_the_error_names_both_ways_out(mode: str, tmp_path: Path) -> None:
    port = free_port()
    settings = fresh_install(tmp_path, OLLAMA_HOST=f"127.0.0.1:{port}")
    with anyio.fail_after(10):
        async with Client(build_server(settings), mode=mode) as client:
            message = await call_error(client, "generate_structured", prompt="ok?", schema=SCHEMA)
            again = await call(client, "provider_health", provider="ollama")  # the server still serves
    assert "did not declare the sampling capability" in message
    assert f"no Ollama model was found at http://127.0.0.1:{port}" in message
    assert "defaults.model" in message and "supports sampling" in message
    assert again["providers"][0]["status"] == "down"


async def test_an_ollama_with_no_vision_model_is_no_default_for_images(tmp_path: Path, image_root: Path) -> None:
    with FakeOllama([FakeModel("llama3.2:3b")]) as fake:
        settings = fresh_install(tmp_path, OLLAMA_HOST=fake.url)
        settings.images.roots = [image_root]
        (image_root / "a.png").write_bytes(png_bytes())
        with anyio.fail_after(10):
            async with Client(build_server(settings)) as client:
                message = await call_error(client, "analyze_image", image=str(image_root / "a.png"), prompt="?")
    assert "no Ollama vision model was found" in message


async def test_as_fallback_appends_the_client_to_every_chain(make_settings: Callable[..., Settings]) -> None:
    from mcp_llm.router import Router

    settings = make_settings('[defaults]\nfallback = ["claude-haiku-4-5"]\n[providers.client]\nas_fallback = true\n')
    router = Router(Registry(settings))
    assert router.chain(router.registry.resolve("ollama/x")) == ["ollama/x", "claude-haiku-4-5", "client"]
    assert router.chain(router.registry.resolve("client")) == ["client", "claude-haiku-4-5"]


def test_hints_name_ids_that_exist_not_made_up_ones(make_settings: Callable[..., Settings]) -> None:
    empty = Registry(make_settings(""))
    with pytest.raises(UnknownModelError) as caught:
        empty.resolve("nonsense")
    assert "llama3.2" not in caught.value.user_message()
    with pytest.raises(UnknownModelError) as caught:
        empty.default_model(vision=False)
    assert "llama3.2" not in caught.value.user_message() and "supports sampling" in caught.value.user_message()

    configured = Registry(make_settings('[[providers.gemini.models]]\nid = "gemini-2.5-flash"\n'))
    configured.remember_discovered(["ollama/qwen2.5:7b"])
    with pytest.raises(UnknownModelError) as caught:
        configured.resolve("nonsense")
    assert "(e.g. 'gemini-2.5-flash', 'ollama/qwen2.5:7b')" in caught.value.user_message()


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_a_fresh_install_over_stdio_answers_through_sampling_with_a_re_ask(mode: str, tmp_path: Path) -> None:
    """`mcp-llm serve` as a desktop client starts it, no config file and no keys: the client's model answers."""
    replies = ["Sure! Here it is: ok", '{"ok": true}']

    async def model(_ctx: Any, _params: Any) -> CreateMessageResult:
        return CreateMessageResult(role="assistant", content=TextContent(text=replies.pop(0)), model="desk-model")

    env = subprocess_env({"XDG_CONFIG_HOME": str(tmp_path / "none"), "OLLAMA_HOST": f"127.0.0.1:{free_port()}"})
    params = StdioServerParameters(command=sys.executable, args=["-m", "mcp_llm", "serve"], env=env,
                                   cwd=str(REPO_ROOT))
    with anyio.fail_after(60):
        async with Client(params, mode=mode, sampling_callback=model, read_timeout_seconds=30) as client:
            result = await call(client, "generate_structured", prompt="ok?", schema=SCHEMA)
    assert result["data"] == {"ok": True} and result["model"] == "client/desk-model"
    assert [a["error"] for a in result["attempts"]] == ["not_json", None]
    assert replies == []
