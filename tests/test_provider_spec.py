"""A provider is one module: a spec, a settings table and an adapter, registered by one line.

This file is that module, for a made-up provider `tiny` that speaks a small JSON protocol to a fake
server on loopback. It is registered here (the specs `load_settings` is given: the built-in ones and
this one) and no source file is touched, yet everything a provider gets comes from its spec alone:
its `[providers.tiny]` table with typo errors and redacted secrets, its key from the variable its
spec names, its `tiny/` prefix, the schema dialect it is sent, its adapter built on first use, and
the four tools through a real MCP client.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from mcp_llm.adapters._errors import mark_sent, translated, transport_error
from mcp_llm.adapters.base import Capabilities, Completion, Health, LLMAdapter, ModelInfo, Request, Timeouts, probe
from mcp_llm.adapters.providers import PROVIDERS
from mcp_llm.adapters.spec import API_KEY, Prefix, ProviderSettings, ProviderSpec, Secret
from mcp_llm.config import Settings, describe, load_settings
from mcp_llm.errors import ConfigError, ProviderError
from mcp_llm.registry import Registry
from mcp_llm.server import build_server
from tests.conftest import call, call_error

pytestmark = pytest.mark.anyio

# --- the provider's module: its settings, its adapter, its spec -------------------------------------


class TinySettings(ProviderSettings):
    """`[providers.tiny]`: the shared keys, and one of its own."""

    api_key_env: str = "TINY_API_KEY"
    greeting: str = "hi"


class TinyAdapter(LLMAdapter):
    provider = "tiny"
    capabilities = Capabilities(native_schema=True, images=False)
    sdk_modules = ("httpx",)  # its "SDK", imported on first use like any other

    def __init__(self, settings: TinySettings, timeouts: Timeouts) -> None:
        self._settings = settings
        self._timeouts = timeouts

    @property
    def endpoint(self) -> str:
        return TINY.hosts(self._settings)[0]

    async def _send(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        import httpx

        key = self._settings.api_key
        headers = {"Authorization": f"Bearer {key.get_secret_value()}"} if key else {}
        where = f"Tiny at {self.endpoint}"

        def translate(exc: Exception) -> ProviderError | None:
            return transport_error(exc, provider="tiny", model=None, where=where, down_hint="Start it.")

        with translated(translate, where=where, provider="tiny", model=None):
            async with httpx.AsyncClient(timeout=self._timeouts.total_s,
                                         event_hooks={"request": [mark_sent]}) as http:
                response = await http.request(method, self.endpoint + path, json=body, headers=headers)
        return response.json()

    async def complete(self, request: Request) -> Completion:
        answer = await self._send("POST", "/generate", {"model": request.model, "schema": request.schema,
                                                        "greeting": self._settings.greeting})
        return Completion(text=answer["text"], input_tokens=3, output_tokens=4, finish_reason="stop")

    async def list_models(self) -> list[ModelInfo]:
        names = (await self._send("GET", "/models"))["models"]
        return [ModelInfo(id=f"tiny/{name}", provider="tiny", label=name, available=True, source="discovered")
                for name in names]

    async def health(self) -> Health:
        async def check(_: None) -> dict[str, Any]:
            return {"detail": f"{len(await self.list_models())} models"}

        base = Health(provider="tiny", status="down", endpoint=self.endpoint, has_api_key=self._settings.has_api_key)
        return await probe(base, lambda: None, check)


TINY = ProviderSpec(
    name="tiny",
    label="Tiny",
    settings=TinySettings,
    build=lambda settings, timeouts, name: TinyAdapter(settings, timeouts),
    prefixes=(Prefix("tiny/"),),
    secrets=(Secret(API_KEY.name, API_KEY.variable_field, fallbacks=("TINY_FALLBACK_KEY",)),),
    schema_dialect="openai",  # sent as OpenAI is: an object root, others wrapped in {"value": …}
)

# --- the one line that registers it ----------------------------------------------------------------

SPECS = (*PROVIDERS, TINY)


# --- a fake Tiny server ---------------------------------------------------------------------------


class FakeTiny:
    """Answers `POST /generate` with the configured greeting (inside `value` when the schema it was sent
    is wrapped) and `GET /models` with two names; records what it was sent."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, Any] | None, str | None]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                fake.requests.append((self.path, None, self.headers.get("Authorization")))
                self._answer({"models": ["echo", "other"]})

            def do_POST(self) -> None:
                sent = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append((self.path, sent, self.headers.get("Authorization")))
                answer: Any = {"greeting": sent["greeting"], "model": sent["model"]}
                if "value" in (sent["schema"] or {}).get("properties", {}):
                    answer = {"value": sent["greeting"]}
                self._answer({"text": json.dumps(answer)})

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakeTiny:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake() -> Iterator[FakeTiny]:
    with FakeTiny() as server:
        yield server


def tiny_settings(tmp_path: Path, fake: FakeTiny, extra: str = "", env: dict[str, str] | None = None) -> Settings:
    config = tmp_path / "config.toml"
    config.write_text(f'[defaults]\nmax_retries = 0\n[providers.tiny]\nendpoint = "{fake.url}"\ngreeting = "hello"\n'
                      f'[[providers.tiny.models]]\nid = "echo"\n{extra}', encoding="utf-8")
    return load_settings(config, env={"TINY_API_KEY": "k-tiny"} if env is None else env, specs=SPECS)


# --- the tests ------------------------------------------------------------------------------------

ANSWER = {"type": "object", "properties": {"greeting": {"type": "string"}, "model": {"type": "string"}},
          "required": ["greeting", "model"]}


async def test_a_registered_spec_is_routed_through_the_router_and_the_mcp_client(tmp_path: Path,
                                                                                fake: FakeTiny) -> None:
    async with Client(build_server(tiny_settings(tmp_path, fake))) as client:
        result = await call(client, "generate_structured", prompt="Greet.", schema=ANSWER, model="tiny/echo")
        assert result["data"] == {"greeting": "hello", "model": "echo"}  # its own config key reached it
        assert (result["model"], result["provider"]) == ("tiny/echo", "tiny")
        assert [(a["model"], a["outcome"]) for a in result["attempts"]] == [("tiny/echo", "ok")]
        assert result["usage"] == {"input_tokens": 3, "output_tokens": 4, "cached_input_tokens": 0,
                                   "cache_write_tokens": 0, "thinking_tokens": 0}
        assert result["schema_rewrites"] == []

        # the dialect its spec names: a string root goes wrapped, as OpenAI's does, and comes back unwrapped
        wrapped = await call(client, "generate_structured", prompt="Greet.", schema={"type": "string"},
                             model="tiny/echo")
        assert wrapped["data"] == "hello" and wrapped["schema_rewrites"]
        assert fake.requests[-1][1]["schema"]["properties"]["value"] == {"type": "string"}  # type: ignore[index]
        assert {auth for _, _, auth in fake.requests} == {"Bearer k-tiny"}  # the key from the variable it names

        listed = (await call(client, "list_models", provider="tiny"))["models"]
        assert [(m["id"], m["source"], m["available"]) for m in listed] == [
            ("tiny/echo", "config", True), ("tiny/other", "discovered", True)]
        (health,) = (await call(client, "provider_health", provider="tiny"))["providers"]
        assert (health["status"], health["endpoint"], health["has_api_key"]) == ("ok", fake.url, True)

        message = await call_error(client, "generate_structured", prompt="x", schema=ANSWER, model="tny/echo")
        assert "tiny/" in message  # an unknown id's error lists its prefix among the others


async def test_its_table_redacts_its_secret_and_names_its_source(tmp_path: Path, fake: FakeTiny) -> None:
    settings = tiny_settings(tmp_path, fake)
    described = describe(settings)["providers"]["tiny"]
    assert described["api_key"] == "<set>" and "k-tiny" not in json.dumps(describe(settings))
    assert described["greeting"] == "hello"
    assert settings.source_of("providers.tiny.api_key") == "env:TINY_API_KEY"
    assert settings.source_of("providers.tiny.greeting") == "file"
    fallback = tiny_settings(tmp_path, fake, env={"TINY_FALLBACK_KEY": "k-fallback"})
    assert fallback.source_of("providers.tiny.api_key") == "env:TINY_FALLBACK_KEY"
    assert describe(tiny_settings(tmp_path, fake, env={}))["providers"]["tiny"]["api_key"] == "<not set>"


async def test_a_typo_in_its_table_is_an_error_with_a_suggestion(tmp_path: Path, fake: FakeTiny) -> None:
    with pytest.raises(ConfigError) as caught:
        tiny_settings(tmp_path, fake, extra="[providers.tiny.extra]\n")
    assert "`providers.tiny.extra` is not a config key" in caught.value.user_message()
    config = tmp_path / "typo.toml"
    config.write_text('[providers.tiny]\ngreetin = "x"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="did you mean `greeting`"):
        load_settings(config, env={}, specs=SPECS)
    config.write_text('[providers.openai_compatible.tiny]\nendpoint = "http://127.0.0.1:9/v1"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="built-in provider prefix"):  # its prefix is reserved like the others
        load_settings(config, env={}, specs=SPECS)


async def test_without_its_registration_nothing_knows_it(tmp_path: Path, fake: FakeTiny) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[providers.tiny]\ngreeting = "x"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape("`providers.tiny` is not a config key")):
        load_settings(config, env={})
    registry = Registry(tiny_settings(tmp_path, fake))
    assert registry.route_for("tiny/echo") is not None and "tiny" in registry.provider_names()
    assert Registry(load_settings(None, env={"XDG_CONFIG_HOME": str(tmp_path)})).route_for("tiny/echo") is None


async def test_its_adapter_speaks_our_errors(tmp_path: Path) -> None:
    config = tmp_path / "refused.toml"
    config.write_text('[providers.tiny]\nendpoint = "http://127.0.0.1:9"\n', encoding="utf-8")
    adapter = Registry(load_settings(config, env={}, specs=SPECS)).adapter("tiny")
    assert isinstance(adapter, TinyAdapter)
    with pytest.raises(ProviderError, match=re.escape("Cannot reach Tiny at http://127.0.0.1:9")):  # nothing there
        await adapter.complete(Request(model="echo", messages=[]))
