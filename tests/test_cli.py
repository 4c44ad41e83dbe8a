"""The command line: `call`, `models`, `health` against the fake Ollama, as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema

from mcp_llm.presets import PRESETS
from tests.fakes.ollama_server import FakeOllama
from tests.images import png_bytes
from tests.stdio_harness import subprocess_env, write_config


def run(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mcp_llm", "--config", str(config), *args], capture_output=True,
                          text=True, timeout=60, env=subprocess_env())


def test_call_prints_valid_data_and_trace(fake_ollama: FakeOllama, tmp_path: Path) -> None:
    done = run(write_config(fake_ollama, tmp_path), "call", "Score this", "--schema", "visual_prompt_score")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    jsonschema.validate(result["data"], PRESETS["visual_prompt_score"])
    assert result["provider"] == "ollama" and result["attempts"][0]["outcome"] == "ok"


def test_call_with_an_image_returns_text(fake_ollama: FakeOllama, tmp_path: Path) -> None:
    config = write_config(fake_ollama, tmp_path)
    image = tmp_path / "images" / "x.png"  # the harness's image root
    image.write_bytes(png_bytes())
    fake_ollama.enqueue("A grey pixel field.")
    done = run(config, "call", "What is it?", "--image", str(image), "--schema", "none")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["text"] == "A grey pixel field."


def test_call_errors_go_to_stderr_with_exit_1(fake_ollama: FakeOllama, tmp_path: Path) -> None:
    done = run(write_config(fake_ollama, tmp_path), "call", "hi", "--model", "nope/model")
    assert done.returncode == 1
    assert done.stdout == ""
    assert "Unknown model id 'nope/model'" in done.stderr


def test_models_and_health(fake_ollama: FakeOllama, tmp_path: Path) -> None:
    config = write_config(fake_ollama, tmp_path)
    models = json.loads(run(config, "models", "--json").stdout)
    assert {"ollama/llama3.2:3b", "ollama/llava:7b"} <= {m["id"] for m in models}
    health = {h["provider"]: h for h in json.loads(run(config, "health", "--json").stdout)}
    assert health["ollama"]["status"] == "ok" and health["ollama"]["version"] == "0.12.3"
    plain = run(config, "health").stdout
    assert "ollama" in plain and "ok" in plain
