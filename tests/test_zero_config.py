"""Works the moment it is added: with no config file and no environment, a call with no model answers.

In order: a local model server found on this machine (Ollama, llama-server, LM Studio, vLLM on their
usual ports; a vision model for images); else the client's own model if it can sample; else an error
naming every way out. The tests cannot bind the well-known ports, so MCP_LLM_DISCOVERY points the
looking at the fakes (and, where none is wanted, at a port where nothing listens).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp_types import CreateMessageResult, TextContent

from mcp_llm import zero_config
from mcp_llm.config import Settings, load_settings
from mcp_llm.errors import UnknownModelError
from mcp_llm.registry import Registry
from mcp_llm.server import build_server
from mcp_llm.zero_config import DefaultPicker
from tests.conftest import call, call_error, free_port
from tests.fakes.ollama_server import FakeModel, FakeOllama
from tests.fakes.openai_server import FakeOpenAI
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


def nowhere() -> str:
    """A discovery list whose one server is a loopback port where nothing listens."""
    return f"llamacpp=http://127.0.0.1:{free_port()}/v1"


def fresh_install(tmp_path: Path, **env: str) -> Settings:
    """No config file at all (the user config dir is empty), and only the environment given; the local
    servers looked for are only those MCP_LLM_DISCOVERY names (by default, one where nothing listens)."""
    return load_settings(env={"XDG_CONFIG_HOME": str(tmp_path / "empty-config-dir"),
                              "MCP_LLM_DISCOVERY": nowhere(), **env})


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


async def test_a_local_server_comes_before_the_clients_own_model(tmp_path: Path, fake_ollama: FakeOllama) -> None:
    """A model the user runs on this machine beats asking the assistant to sample (zero_config's docstring)."""
    sampled: list[Any] = []

    async def model(ctx: Any, params: Any) -> CreateMessageResult:
        sampled.append(params)
        return await sample(ctx, params)

    settings = fresh_install(tmp_path, OLLAMA_HOST=fake_ollama.url)
    with anyio.fail_after(10):
        async with Client(build_server(settings), sampling_callback=model) as client:
            result = await call(client, "generate_structured", prompt="ok?", schema=SCHEMA)
    assert result["provider"] == "ollama" and result["model"] == "ollama/llama3.2:3b"
    assert sampled == []
    with anyio.fail_after(10):  # no local server: the client's own model, as before
        async with Client(build_server(fresh_install(tmp_path, OLLAMA_HOST=f"127.0.0.1:{free_port()}")),
                          sampling_callback=model) as client:
            result = await call(client, "generate_structured", prompt="ok?", schema=SCHEMA)
    assert result["provider"] == "client" and len(sampled) == 1


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_with_neither_the_error_names_both_ways_out(mode: str, tmp_path: Path) -> None:
    port = free_port()
    settings = fresh_install(tmp_path, OLLAMA_HOST=f"127.0.0.1:{port}")
    with anyio.fail_after(10):
        async with Client(build_server(settings), mode=mode) as client:
            message = await call_error(client, "generate_structured", prompt="ok?", schema=SCHEMA)
            again = await call(client, "provider_health", provider="ollama")  # the server still serves
    assert "did not declare the sampling capability" in message
    assert f"no local model was found (Ollama at http://127.0.0.1:{port}: nothing answered; llama-server at" in message
    assert "defaults.model" in message and "supports sampling" in message and "llama-server -hf" in message
    assert again["providers"][0]["status"] == "down"


async def test_an_ollama_with_no_vision_model_is_no_default_for_images(tmp_path: Path, image_root: Path) -> None:
    with FakeOllama([FakeModel("llama3.2:3b")]) as fake:
        settings = fresh_install(tmp_path, OLLAMA_HOST=fake.url)
        settings.images.roots = [image_root]
        (image_root / "a.png").write_bytes(png_bytes())
        with anyio.fail_after(10):
            async with Client(build_server(settings)) as client:
                message = await call_error(client, "analyze_image", image=str(image_root / "a.png"), prompt="?")
    assert "no local vision model was found" in message
    assert "Ollama at " in message and "no model known to take images among ollama/llama3.2:3b" in message


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

    env = subprocess_env({"XDG_CONFIG_HOME": str(tmp_path / "none"), "OLLAMA_HOST": f"127.0.0.1:{free_port()}",
                          "MCP_LLM_DISCOVERY": nowhere()})
    params = StdioServerParameters(command=sys.executable, args=["-m", "mcp_llm", "serve"], env=env,
                                   cwd=str(REPO_ROOT))
    with anyio.fail_after(60):
        async with Client(params, mode=mode, sampling_callback=model, read_timeout_seconds=30) as client:
            result = await call(client, "generate_structured", prompt="ok?", schema=SCHEMA)
    assert result["data"] == {"ok": True} and result["model"] == "client/desk-model"
    assert [a["error"] for a in result["attempts"]] == ["not_json", None]
    assert replies == []


# --- local discovery: llama-server, LM Studio, vLLM (OpenAI-compatible), Ollama -----------------------


@contextmanager
def black_hole() -> Iterator[str]:
    """A loopback port that accepts connections (the kernel's backlog) and never answers: a hung server."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"


def models_listings(fake: FakeOpenAI) -> int:
    return sum(1 for r in fake.requests if r.path == "/v1/models")


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_with_no_config_a_local_llama_server_answers_and_is_listed(mode: str, tmp_path: Path) -> None:
    """A llama-server on its port (here: a fake OpenAI-compatible server where MCP_LLM_DISCOVERY says)."""
    with FakeOpenAI(api_key=None, models=["smollm2-135m"]) as fake:
        settings = fresh_install(tmp_path, OLLAMA_HOST=f"127.0.0.1:{free_port()}",
                                 MCP_LLM_DISCOVERY=f"llamacpp={fake.base_url},vllm=http://127.0.0.1:{free_port()}/v1")
        with anyio.fail_after(20):
            async with Client(build_server(settings), mode=mode) as client:
                result = await call(client, "generate_structured", prompt="ok?", schema=SCHEMA)
                models = await call(client, "list_models")
                health = await call(client, "provider_health", provider="llamacpp")
        [chat] = fake.chat_requests
        url = fake.base_url
    assert result["model"] == "llamacpp/smollm2-135m" and result["provider"] == "llamacpp"
    assert result["data"] == {"ok": False} and chat.json["model"] == "smollm2-135m"
    assert chat.json["response_format"]["type"] == "json_schema"  # the server's grammar enforces the schema
    listed = {m["id"]: m for m in models["models"]}
    assert listed["llamacpp/smollm2-135m"]["source"] == "discovered" and listed["llamacpp/smollm2-135m"]["available"]
    assert listed["llamacpp/smollm2-135m"]["hosts"] == [url]  # where it is served
    assert result["attempts"][0]["host"] == url
    assert health["providers"][0]["status"] == "ok"
    assert [h["host"] for h in health["providers"][0]["hosts"]] == [url]


async def test_the_places_are_probed_at_once_within_their_timeout(tmp_path: Path) -> None:
    """Four hung servers and one that answers: the pick takes one timeout, not four."""
    with (black_hole() as a, black_hole() as b, black_hole() as c, black_hole() as d,
          FakeOpenAI(api_key=None, models=["m"]) as fake):
        settings = fresh_install(tmp_path, OLLAMA_HOST=f"127.0.0.1:{free_port()}",
                                 MCP_LLM_DISCOVERY=f"a={a},b={b},c={c},d={d},lmstudio={fake.base_url}")
        settings.discovery.timeout_s = 1.0
        picker = DefaultPicker(Registry(settings))
        started = time.monotonic()
        with anyio.fail_after(10):
            picked = await picker.pick(vision=False, client=None)
        elapsed = time.monotonic() - started
        await picker.aclose()
        url = fake.base_url
    assert picked == "lmstudio/m"
    assert 0.9 <= elapsed < 3.0, elapsed  # one-by-one would take over 4 s
    assert picker.last is not None and "LM Studio found at " + url in picker.last.describe()


async def test_a_hit_is_cached_then_refreshed_off_the_call_path(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zero_config, "HIT_CACHE_S", 0.3)
    with FakeOpenAI(api_key=None, models=["m"]) as fake:
        settings = fresh_install(tmp_path, OLLAMA_HOST=f"127.0.0.1:{free_port()}",
                                 MCP_LLM_DISCOVERY=f"vllm={fake.base_url}")
        picker = DefaultPicker(Registry(settings))
        with anyio.fail_after(10):
            assert await picker.pick(vision=False, client=None) == "vllm/m"
            assert await picker.pick(vision=False, client=None) == "vllm/m"
            assert models_listings(fake) == 1  # the second call was served from the cache
            await anyio.sleep(0.4)
            started = time.monotonic()
            fake.stop()  # gone: the refresh will find nothing, but the call does not wait for it
            assert await picker.pick(vision=False, client=None) == "vllm/m"
            assert time.monotonic() - started < 0.2
            while picker.discovery._refreshing is not None:
                await anyio.sleep(0.05)
            with pytest.raises(UnknownModelError, match="nothing answered"):
                await picker.pick(vision=False, client=None)
        await picker.aclose()


async def test_a_miss_is_cached_briefly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zero_config, "MISS_CACHE_S", 0.3)
    with FakeOllama([]) as fake:  # Ollama is there, with no model pulled: a miss
        settings = fresh_install(tmp_path, OLLAMA_HOST=fake.url)
        registry = Registry(settings)
        picker = DefaultPicker(registry)
        with anyio.fail_after(10):
            for _ in range(2):
                with pytest.raises(UnknownModelError, match="Ollama answered, with no model pulled"):
                    await picker.pick(vision=False, client=None)
            assert sum(r.path == "/api/tags" for r in fake.requests) == 1
            await anyio.sleep(0.4)
            fake.models.append(FakeModel("qwen2.5:0.5b"))  # the user pulls one meanwhile
            assert await picker.pick(vision=False, client=None) == "ollama/qwen2.5:0.5b"
        await picker.aclose()
        await registry.aclose()  # the Ollama adapter that listed the models


async def test_discovered_names_never_take_a_configured_endpoints_place(
        make_settings: Callable[..., Settings]) -> None:
    with (FakeOpenAI(api_key=None, models=["theirs"]) as configured,
          FakeOpenAI(api_key=None, models=["found"]) as local, FakeOpenAI(api_key=None, models=["same"]) as same):
        settings = make_settings(f"""
[providers.openai_compatible.llamacpp]
endpoint = "{configured.base_url}"
[providers.openai_compatible.mine]
endpoint = "{same.base_url}/"
[providers.ollama]
endpoint = "http://127.0.0.1:{free_port()}"
""", env={"MCP_LLM_DISCOVERY": f"llamacpp={local.base_url},vllm={same.base_url}"})
        registry = Registry(settings)
        picker = DefaultPicker(registry)
        with anyio.fail_after(10):
            assert await picker.pick(vision=False, client=None) == "llamacpp-local/found"
            servers = await picker.discovery.servers()
        await picker.aclose()
        configured_url = configured.base_url
    assert [(s.endpoint, s.inserted) for s in servers] == [("llamacpp-local", True), ("mine", False)]
    assert settings.providers.openai_compatible["llamacpp"].endpoint == configured_url  # untouched
    assert registry.route_for("llamacpp/theirs").provider == "llamacpp"  # type: ignore[union-attr]
    assert registry.route_for("llamacpp-local/found").provider == "llamacpp-local"  # type: ignore[union-attr]


@pytest.mark.parametrize(("listed", "picked"), [
    (["/home/me/models/SmolLM2-135M-Instruct.Q4_1.gguf"], "llamacpp/SmolLM2-135M-Instruct.Q4_1.gguf"),
    (["text-embedding-nomic-embed-text-v1.5", "qwen2.5-7b-instruct"], "llamacpp/qwen2.5-7b-instruct"),
    (["Qwen/Qwen2.5-0.5B-Instruct"], "llamacpp/Qwen/Qwen2.5-0.5B-Instruct"),
], ids=["llama-server-path", "lm-studio-embedding-first", "vllm-repo-name"])
async def test_what_a_server_lists_becomes_an_id(tmp_path: Path, listed: list[str], picked: str) -> None:
    """llama-server without --alias lists its file's path, which no id may hold: the file name stands in."""
    with FakeOpenAI(api_key=None, models=listed) as fake:
        settings = fresh_install(tmp_path, OLLAMA_HOST=f"127.0.0.1:{free_port()}",
                                 MCP_LLM_DISCOVERY=f"llamacpp={fake.base_url}")
        registry = Registry(settings)
        picker = DefaultPicker(registry)
        with anyio.fail_after(10):
            assert await picker.pick(vision=False, client=None) == picked
        await picker.aclose()
    registry.resolve(picked)  # a routable id


async def test_discovery_off_looks_nowhere(tmp_path: Path, fake_ollama: FakeOllama) -> None:
    settings = fresh_install(tmp_path, OLLAMA_HOST=fake_ollama.url, MCP_LLM_DISCOVERY="off")
    picker = DefaultPicker(Registry(settings))
    with anyio.fail_after(10), pytest.raises(UnknownModelError, match=r"looking for local model servers is off"):
        await picker.pick(vision=False, client=None)
    assert fake_ollama.requests == []


def test_a_discovered_id_given_as_model_routes_in_a_fresh_process(tmp_path: Path) -> None:
    """`mcp-llm models` shows `llamacpp/<model>`; `mcp-llm call --model llamacpp/<model>` must then work."""
    with FakeOpenAI(api_key=None, models=["smollm2-135m"]) as fake:
        env = subprocess_env({"XDG_CONFIG_HOME": str(tmp_path / "none"), "OLLAMA_HOST": f"127.0.0.1:{free_port()}",
                              "MCP_LLM_DISCOVERY": f"llamacpp={fake.base_url}"})
        done = subprocess.run([sys.executable, "-m", "mcp_llm", "call", "Is it ok?", "--model", "llamacpp/smollm2-135m",
                               "--schema", json.dumps(SCHEMA)], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["model"] == "llamacpp/smollm2-135m"
    assert "no model given" not in done.stderr  # it was given
