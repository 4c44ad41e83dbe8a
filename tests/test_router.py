"""The router through the tools: retries of transient errors, fallback chains, the deadline."""

from __future__ import annotations

import time
from pathlib import Path

import jsonschema
import pytest
from mcp import Client

from mcp_llm.server import build_server
from tests.conftest import call, call_error, ollama_config
from tests.fakes.ollama_server import FakeOllama

pytestmark = pytest.mark.anyio

SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}


def config(fake: FakeOllama, root: Path, defaults: str = "", *, max_retries: int = 0) -> str:
    text = ollama_config(fake, root, max_retries=max_retries)
    return text.replace("[defaults]\n", "[defaults]\n" + defaults, 1)


async def test_transient_errors_are_retried_and_recorded(fake_ollama: FakeOllama, image_root: Path,
                                                         make_settings) -> None:
    fake_ollama.enqueue(status=503, error="server busy")
    fake_ollama.enqueue({"n": 1})
    async with Client(build_server(make_settings(config(fake_ollama, image_root, max_retries=2)))) as client:
        result = await call(client, "generate_structured", prompt="n?", schema=SCHEMA)
    assert result["data"] == {"n": 1}
    assert [(a["outcome"], a["error"]) for a in result["attempts"]] == [("error", "server_error"), ("ok", None)]


async def test_client_errors_are_not_retried(fake_ollama: FakeOllama, image_root: Path, make_settings) -> None:
    fake_ollama.enqueue(status=400, error="invalid JSON schema in format")
    async with Client(build_server(make_settings(config(fake_ollama, image_root, max_retries=2)))) as client:
        text = await call_error(client, "generate_structured", prompt="n?", schema=SCHEMA)
    assert "invalid JSON schema in format" in text and "(1 attempt with" in text
    assert len(fake_ollama.chat_requests) == 1


async def test_fallback_to_the_next_model_when_one_fails(fake_ollama: FakeOllama, image_root: Path,
                                                         make_settings) -> None:
    defaults = 'fallback = ["ollama/llava:7b"]\n'
    async with Client(build_server(make_settings(config(fake_ollama, image_root, defaults)))) as client:
        result = await call(client, "generate_structured", prompt="n?", schema=SCHEMA, model="ollama/mistral:7b")
    jsonschema.validate(result["data"], SCHEMA)
    assert result["model"] == "ollama/llava:7b"
    assert [(a["model"], a["outcome"], a["error"]) for a in result["attempts"]] == [
        ("ollama/mistral:7b", "error", "model_not_found"),
        ("ollama/llava:7b", "ok", None),
    ]


async def test_fallback_when_output_stays_invalid(fake_ollama: FakeOllama, image_root: Path, make_settings) -> None:
    defaults = 'fallback = ["ollama/llava:7b"]\nmax_repairs = 1\n'
    for _ in range(2):
        fake_ollama.enqueue("I think n is probably seven.")
    fake_ollama.enqueue({"n": 7})
    settings = make_settings(config(fake_ollama, image_root, defaults).replace("max_repairs = 2\n", ""))
    async with Client(build_server(settings)) as client:
        result = await call(client, "generate_structured", prompt="n?", schema=SCHEMA)
    assert result["data"] == {"n": 7}
    assert [(a["model"], a["outcome"]) for a in result["attempts"]] == [
        ("ollama/llama3.2:3b", "invalid_output"),
        ("ollama/llama3.2:3b", "invalid_output"),
        ("ollama/llava:7b", "ok"),
    ]


async def test_every_model_failing_lists_each(fake_ollama: FakeOllama, image_root: Path, make_settings) -> None:
    defaults = 'fallback = ["ollama/qwen2.5:7b"]\n'
    fake_ollama.enqueue(status=500, error="out of memory")
    async with Client(build_server(make_settings(config(fake_ollama, image_root, defaults)))) as client:
        text = await call_error(client, "generate_structured", prompt="n?", schema=SCHEMA)
    assert "Every model in the fallback chain failed (2 attempts)" in text
    assert "ollama/llama3.2:3b: Ollama at" in text and "out of memory" in text
    assert "ollama/qwen2.5:7b: Ollama at" in text and "no model 'qwen2.5:7b'" in text


async def test_a_backend_that_never_answers_fails_at_the_deadline(fake_ollama: FakeOllama, image_root: Path,
                                                                  make_settings) -> None:
    settings = make_settings(config(fake_ollama, image_root).replace("timeout_s = 20", "timeout_s = 1"))
    fake_ollama.enqueue(hang=True)
    async with Client(build_server(settings)) as client:
        started = time.perf_counter()
        text = await call_error(client, "generate_structured", prompt="n?", schema=SCHEMA)
        elapsed = time.perf_counter() - started
        assert "did not answer" in text
        assert elapsed < 5  # bounded by the deadline, not by the hung backend
        assert fake_ollama.wait_for_disconnect(timeout=5), "the hung request was left open"
        result = await call(client, "generate_structured", prompt="n?", schema=SCHEMA)
    jsonschema.validate(result["data"], SCHEMA)
