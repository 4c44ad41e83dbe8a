"""The four tools end to end with all three providers at once: Ollama, Gemini and Anthropic fakes.

Also the promise that no key ever leaves the adapter: canary keys in the environment must not
appear in any result, error, log line or printed config.
"""

from __future__ import annotations

import base64
import json
import logging
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import jsonschema
import pytest
from mcp import Client

from mcp_llm.config import load_settings
from mcp_llm.server import build_server
from tests.conftest import call, call_error
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.gemini_server import FakeGemini
from tests.fakes.ollama_server import FakeOllama
from tests.images import png_bytes

pytestmark = pytest.mark.anyio

GEMINI_KEY = "AIza-canary-e2e-gemini-1234"
ANTHROPIC_KEY = "sk-ant-canary-e2e-5678"
OLLAMA_KEY = "ollama-canary-e2e-9012"
CANARIES = (GEMINI_KEY, ANTHROPIC_KEY, OLLAMA_KEY)
MOVIE = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "maxLength": 60},
        "year": {"type": "integer", "minimum": 1888},
        "genres": {"type": "array", "items": {"enum": ["drama", "comedy", "sci-fi"]}},
        "sequel": {"type": ["string", "null"]},
    },
    "required": ["title", "year", "genres", "sequel"],
}


@pytest.fixture
def fakes() -> Iterator[tuple[FakeOllama, FakeGemini, FakeAnthropic]]:
    with FakeOllama() as ollama, FakeGemini(api_key=GEMINI_KEY) as gemini, \
            FakeAnthropic(api_key=ANTHROPIC_KEY) as anthropic:
        yield ollama, gemini, anthropic


@pytest.fixture
def config_file(tmp_path: Path, fakes: tuple[FakeOllama, FakeGemini, FakeAnthropic]) -> Path:
    ollama, gemini, anthropic = fakes
    path = tmp_path / "config.toml"
    path.write_text(f"""
[defaults]
model = "ollama/llama3.2:3b"
max_retries = 0

[providers.ollama]
endpoint = "{ollama.url}"

[providers.gemini]
endpoint = "{gemini.url}"

[[providers.gemini.models]]
id = "gemini-2.5-flash"
label = "Gemini Flash"
vision = true

[providers.anthropic]
endpoint = "{anthropic.url}"

[[providers.anthropic.models]]
id = "claude-haiku-4-5"
vision = true

[images]
roots = ["{tmp_path}"]
""")
    return path


ENV = {"GEMINI_API_KEY": GEMINI_KEY, "ANTHROPIC_API_KEY": ANTHROPIC_KEY, "OLLAMA_API_KEY": OLLAMA_KEY}


@pytest.fixture
async def client(config_file: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Client]:
    for name, value in ENV.items():  # the SDKs read some of these themselves
        monkeypatch.setenv(name, value)
    async with Client(build_server(load_settings(config_file, env=ENV))) as session:
        yield session


def assert_no_canary(text: str) -> None:
    for canary in CANARIES:
        assert canary not in text


@pytest.mark.parametrize(
    ("model", "provider"),
    [("gemini-2.5-flash", "gemini"), ("gemini/gemini-2.5-pro", "gemini"), ("claude-haiku-4-5", "anthropic"),
     ("anthropic/claude-opus-4-1", "anthropic"), ("ollama/llama3.2:3b", "ollama")],
)
async def test_generate_structured_on_each_provider(client: Client, fakes, model: str, provider: str) -> None:
    if provider == "anthropic":  # `minimum` is not enforced by Anthropic: a year 0 is re-asked
        fakes[2].enqueue({"title": "Metropolis", "year": 0, "genres": ["sci-fi"], "sequel": None})
        fakes[2].enqueue({"title": "Metropolis", "year": 1927, "genres": ["sci-fi"], "sequel": None})
    result = await call(client, "generate_structured", prompt="A film, please", schema=MOVIE, model=model)
    jsonschema.validate(result["data"], MOVIE)
    assert result["provider"] == provider and result["model"] == model
    assert_no_canary(json.dumps(result))
    if provider == "gemini":
        assert any("maxLength" in r or "minimum" in r for r in result["schema_rewrites"]) is False  # kept
    if provider == "anthropic":
        assert [a["outcome"] for a in result["attempts"]] == ["invalid_output", "ok"]
        assert any("moved `minimum` into the description at $.year" in r for r in result["schema_rewrites"])
        assert any("type list" in r for r in result["schema_rewrites"])
        assert any("`additionalProperties` set to false at $" in r for r in result["schema_rewrites"])
    if provider == "ollama":
        assert result["schema_rewrites"] == []


async def test_non_object_root_is_wrapped_and_unwrapped_for_anthropic(
    client: Client, fakes: tuple[FakeOllama, FakeGemini, FakeAnthropic]
) -> None:
    schema = {"type": "array", "items": {"type": "string", "maxLength": 10}, "maxItems": 3}
    fakes[2].enqueue({"value": ["a", "b"]})
    result = await call(client, "generate_structured", prompt="Letters", schema=schema, model="claude-haiku-4-5")
    assert result["data"] == ["a", "b"]
    assert any("root was wrapped" in r for r in result["schema_rewrites"])


@pytest.mark.parametrize("model", ["gemini-2.5-flash", "claude-haiku-4-5"])
async def test_analyze_image_on_cloud_providers(client: Client, model: str, tmp_path: Path) -> None:
    image = tmp_path / "pic.png"
    image.write_bytes(png_bytes(6, 6))
    text = await call(client, "analyze_image", image=str(image), prompt="What is it?", model=model)
    assert text["text"] and text["data"] is None
    scored = await call(client, "analyze_image", image=base64.b64encode(png_bytes()).decode(), prompt="Score",
                        schema="visual_prompt_score", model=model)
    assert set(scored["data"]) == {"visual_quality", "prompt_adherence"}


async def test_list_models_merges_the_three_providers(client: Client) -> None:
    models = (await call(client, "list_models", refresh=True))["models"]
    by_provider: dict[str, set[str]] = {}
    for model in models:
        by_provider.setdefault(model["provider"], set()).add(model["id"])
    assert "ollama/llama3.2:3b" in by_provider["ollama"]
    assert "gemini-2.5-flash" in by_provider["gemini"]
    assert "claude-opus-4-6" in by_provider["anthropic"]
    configured = {m["id"]: m for m in models if m["source"] == "config"}
    assert configured["gemini-2.5-flash"]["available"] is True
    assert configured["claude-haiku-4-5"]["label"] == "claude-haiku-4-5"
    assert_no_canary(json.dumps(models))


async def test_provider_health_for_each(client: Client) -> None:
    report = {p["provider"]: p for p in (await call(client, "provider_health"))["providers"]}
    assert report["ollama"]["status"] == "ok"
    assert report["gemini"]["status"] == "ok" and report["gemini"]["has_api_key"] is True
    assert report["anthropic"]["status"] == "ok" and report["anthropic"]["has_api_key"] is True
    assert report["openai"]["status"] == "unconfigured"
    assert report["ollama"]["has_api_key"] is True  # set, though a local server is never sent it
    assert_no_canary(json.dumps(report))


async def test_health_down_and_unconfigured(tmp_path: Path, fakes) -> None:
    path = tmp_path / "down.toml"
    path.write_text('[providers.gemini]\nendpoint = "http://127.0.0.1:9"\n'
                    '[providers.anthropic]\nendpoint = "http://127.0.0.1:9"\n')
    settings = load_settings(path, env={"GEMINI_API_KEY": GEMINI_KEY})
    async with Client(build_server(settings)) as session:
        report = {p["provider"]: p for p in (await call(session, "provider_health"))["providers"]}
        assert report["gemini"]["status"] == "down"
        assert report["anthropic"]["status"] == "unconfigured"
        assert "ANTHROPIC_API_KEY" in report["anthropic"]["detail"]
        text = await call_error(session, "generate_structured", prompt="x", schema=MOVIE, model="claude-haiku-4-5")
        assert "ANTHROPIC_API_KEY" in text


async def test_no_key_in_errors_or_logs(client: Client, fakes, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    _, gemini, anthropic = fakes
    gemini.enqueue(status=401, error=f"API key not valid: {GEMINI_KEY[:6]}…")
    anthropic.enqueue(status=403, message="permission denied")
    texts = [
        await call_error(client, "generate_structured", prompt="x", schema=MOVIE, model="gemini-2.5-flash"),
        await call_error(client, "generate_structured", prompt="x", schema=MOVIE, model="claude-haiku-4-5"),
        await call_error(client, "generate_structured", prompt="x", schema=MOVIE, model="claude-nonexistent-9"),
    ]
    assert "GEMINI_API_KEY" in texts[0] and "ANTHROPIC_API_KEY" in texts[1]
    for text in texts:
        assert_no_canary(text)
    assert_no_canary(caplog.text)


def test_no_key_in_printed_config(config_file: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", **ENV}
    for extra in ([], ["--json"]):
        done = subprocess.run([sys.executable, "-m", "mcp_llm", "--config", str(config_file), "config", *extra],
                              capture_output=True, text=True, env=env, timeout=60, check=True)
        assert_no_canary(done.stdout + done.stderr)
        assert "env:GEMINI_API_KEY" in done.stdout and "env:ANTHROPIC_API_KEY" in done.stdout


async def test_an_image_over_a_providers_limit_is_shrunk_to_fit_it(
    client: Client, fakes: tuple[FakeOllama, FakeGemini, FakeAnthropic], tmp_path: Path
) -> None:
    import io
    import os

    from PIL import Image

    noise = Image.frombytes("RGB", (1400, 1400), os.urandom(1400 * 1400 * 3))  # ~5.9 MB as PNG
    buffer = io.BytesIO()
    noise.save(buffer, format="PNG")
    image = tmp_path / "noise.png"
    image.write_bytes(buffer.getvalue())

    claude = await call(client, "analyze_image", image=str(image), prompt="What is it?", model="claude-haiku-4-5")

    (report,) = claude["images"]
    assert report["original"] == {"width": 1400, "height": 1400, "bytes": len(buffer.getvalue()),
                                  "mime_type": "image/png"}
    assert report["sent"]["bytes"] <= 5 * 1024 * 1024 and max(report["sent"]["width"], report["sent"]["height"]) <= 1568
    assert any("re-encoded" in step for step in report["steps"])
    gemini = await call(client, "analyze_image", image=str(image), prompt="What is it?", model="gemini-2.5-flash")
    assert gemini["text"] and gemini["images"][0]["sent"]["width"] == 1400  # within Gemini's limits: as it was
