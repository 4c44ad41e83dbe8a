"""End to end over stdio: `python -m mcp_llm --config <file> serve` as a real subprocess.

The SDK's own `Client` launches the server the way Claude Desktop or an IDE does, and the
fake Ollama runs in this process (its URL is in the config file). The assertions are about
what a user of the tools sees: schema-valid `data`, the trace fields, model listings and
health, clear tool errors, and a server that keeps answering. One test drives the wire by
hand to check that stdout carries nothing but JSON-RPC.
"""

from __future__ import annotations

import base64
import json
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import anyio
import jsonschema
import mcp_types
import pytest
from mcp import Client, StdioServerParameters

from mcp_llm.app import HEALTH_CACHE_S
from mcp_llm.presets import PRESETS
from tests.conftest import TEXT_MODEL, VISION_MODEL, call, call_error
from tests.fakes.ollama_server import FakeModel, FakeOllama, default_models
from tests.images import png_bytes
from tests.stdio_harness import REPO_ROOT, server_args, subprocess_env, write_config

TOOLS = {"generate_structured", "analyze_image", "list_models", "provider_health"}
TRACE_FIELDS = {"model", "provider", "attempts", "usage", "latency_ms", "schema_rewrites"}
SECRET = "sk-stdio-test-0123456789abcdef"  # set as OLLAMA_API_KEY; must never come back out
TEST_TIMEOUT_S = 60  # per test; a cold start is a second or two, a call a fraction of one
CALL_TIMEOUT_S = 30

# Installed on the fake but not configured → `discovered`; configured but not installed → unavailable.
DISCOVERED_ONLY = "qwen2.5:7b"
CONFIGURED_MISSING = "mistral:7b"

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "mood": {"enum": ["happy", "sad"]},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
        "address": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "zip": {"type": ["string", "null"]}},
            "required": ["city", "zip"],
            "additionalProperties": False,
        },
    },
    "required": ["name", "age", "mood", "tags", "address"],
    "additionalProperties": False,
}


@pytest.fixture
def fake() -> Iterator[FakeOllama]:
    with FakeOllama(models=[*default_models(), FakeModel(DISCOVERED_ONLY)]) as server:
        yield server
        assert not server.errors, f"the fake Ollama server itself failed: {server.errors!r}"


@pytest.fixture
def config(fake: FakeOllama, tmp_path: Path) -> Path:
    return write_config(fake, tmp_path, f'\n[[providers.ollama.models]]\nid = "{CONFIGURED_MISSING}"\n')


def connect(config: Path, mode: str = "auto") -> Client:
    params = StdioServerParameters(
        command=sys.executable,
        args=server_args(config),
        env=subprocess_env({"OLLAMA_API_KEY": SECRET}),
        cwd=str(REPO_ROOT),
    )
    return Client(params, mode=mode, read_timeout_seconds=CALL_TIMEOUT_S)  # type: ignore[arg-type]


def validate(instance: Any, schema: dict[str, Any]) -> None:
    """The test's own check, independent of the server's: `data` must satisfy the caller's schema."""
    jsonschema.validate(instance, schema, cls=jsonschema.Draft202012Validator)


def assert_trace(result: dict[str, Any], model: str, *, attempts: int = 1) -> None:
    assert TRACE_FIELDS <= result.keys(), result.keys()
    assert result["model"] == model
    assert result["provider"] == "ollama"
    assert len(result["attempts"]) == attempts, result["attempts"]
    assert result["attempts"][-1] == {**result["attempts"][-1], "model": model, "outcome": "ok", "error": None}
    assert all(a["latency_ms"] >= 0 for a in result["attempts"])
    assert result["usage"]["input_tokens"] > 0 and result["usage"]["output_tokens"] > 0, result["usage"]
    assert result["latency_ms"] >= max(a["latency_ms"] for a in result["attempts"])
    assert result["schema_rewrites"] == []
    assert SECRET not in json.dumps(result)



@pytest.mark.anyio
async def test_lists_the_four_tools_with_output_schemas(config: Path) -> None:
    with anyio.fail_after(TEST_TIMEOUT_S):
        async with connect(config) as client:
            listed = await client.list_tools()
    tools = {tool.name: tool for tool in listed.tools}
    assert set(tools) == TOOLS
    for tool in tools.values():
        assert tool.output_schema is not None, f"{tool.name} has no output schema"
        assert tool.description
    assert {"prompt", "schema"} <= set(tools["generate_structured"].input_schema["required"])


@pytest.mark.anyio
async def test_generate_structured(config: Path, fake: FakeOllama) -> None:
    with anyio.fail_after(TEST_TIMEOUT_S):
        async with connect(config) as client:
            result = await call(client, "generate_structured", prompt="Describe a person.", schema=PERSON)
            validate(result["data"], PERSON)
            assert_trace(result, TEXT_MODEL)
            sent = fake.chat_requests[-1].json
            assert sent["model"] == "llama3.2:3b" and sent["stream"] is False  # no progress asked: one plain request
            assert sent["format"] == PERSON, "Ollama constrains output natively: the schema goes out as is"

            # A wrong answer is re-asked with the errors; the trace shows both attempts.
            fake.enqueue({"name": "Ann"})
            result = await call(client, "generate_structured", prompt="Again.", schema=PERSON, model=TEXT_MODEL)
            validate(result["data"], PERSON)
            assert_trace(result, TEXT_MODEL, attempts=2)
            assert result["attempts"][0]["outcome"] == "invalid_output"
            repair = fake.chat_requests[-1].json["messages"]
            assert [m["role"] for m in repair][-2:] == ["assistant", "user"]
            assert "age" in repair[-1]["content"], "the re-ask names what was missing"

            # A preset by name: validated against the preset's schema.
            result = await call(client, "generate_structured", prompt="Score it.", schema="visual_prompt_score")
            validate(result["data"], PRESETS["visual_prompt_score"])
            assert_trace(result, TEXT_MODEL)

            # Bad input is a tool error that says what to do, and the server keeps answering.
            message = await call_error(client, "generate_structured", prompt="x", schema={"type": "strnig"})
            assert "schema" in message.lower(), message
            result = await call(client, "generate_structured", prompt="Still there?", schema={"type": "object"})
            assert result["data"] == {}


@pytest.mark.anyio
async def test_analyze_image(config: Path, fake: FakeOllama) -> None:
    image = config.parent / "images" / "red.png"
    image.write_bytes(png_bytes(16, 12))
    with anyio.fail_after(TEST_TIMEOUT_S):
        async with connect(config) as client:
            result = await call(client, "analyze_image", image=str(image), prompt="What colour is it?")
            assert result["text"] == "This is a fake reply from llava:7b."
            assert result["data"] is None
            assert_trace(result, VISION_MODEL)
            (sent,) = fake.chat_requests[-1].json["messages"][-1]["images"]
            assert base64.b64decode(sent) == image.read_bytes()

            data_uri = "data:image/png;base64," + base64.b64encode(png_bytes(16, 12)).decode()
            schema = PRESETS["reverse_prompt"]
            result = await call(client, "analyze_image", image=data_uri, prompt="Reverse it.", schema="reverse_prompt")
            validate(result["data"], schema)
            assert result["text"] is None
            assert_trace(result, VISION_MODEL)

            message = await call_error(client, "analyze_image", image="/etc/passwd", prompt="x")
            assert "/etc/passwd" in message, message
            message = await call_error(client, "analyze_image", image=str(image), prompt="x", model=TEXT_MODEL)
            assert "image" in message.lower(), message  # a text-only model was given an image


@pytest.mark.anyio
async def test_list_models_shows_configured_and_discovered(config: Path, fake: FakeOllama) -> None:
    with anyio.fail_after(TEST_TIMEOUT_S):
        async with connect(config) as client:
            result = await call(client, "list_models")
    models = {m["id"]: m for m in result["models"]}
    assert set(models) == {TEXT_MODEL, VISION_MODEL, f"ollama/{CONFIGURED_MISSING}", f"ollama/{DISCOVERED_ONLY}",
                           "client"}
    assert models["client"]["available"] is False  # this client declared no sampling
    assert models[TEXT_MODEL] == {
        "id": TEXT_MODEL,
        "provider": "ollama",
        "label": "Llama 3.2 3B",
        "vision": False,
        "structured": True,
        "enabled": True,
        "available": True,
        "source": "config",
        "hosts": [fake.url],
    }
    assert models[VISION_MODEL]["vision"] is True and models[VISION_MODEL]["available"] is True
    assert models[f"ollama/{CONFIGURED_MISSING}"]["source"] == "config"
    assert models[f"ollama/{CONFIGURED_MISSING}"]["available"] is False
    assert models[f"ollama/{DISCOVERED_ONLY}"]["source"] == "discovered"
    assert models[f"ollama/{DISCOVERED_ONLY}"]["available"] is True


@pytest.mark.anyio
async def test_provider_health_ok_then_down_and_the_server_stays_up(config: Path, fake: FakeOllama) -> None:
    url = fake.url
    with anyio.fail_after(TEST_TIMEOUT_S):
        async with connect(config) as client:
            report = await call(client, "provider_health")
            rows = {row["provider"]: row for row in report["providers"]}
            ollama = rows["ollama"]
            assert ollama["status"] == "ok", ollama
            assert ollama["version"] == fake.version
            assert ollama["endpoint"] == url
            assert ollama["has_api_key"] is True  # OLLAMA_API_KEY is set ...
            assert SECRET not in json.dumps(report)  # ... and never shown
            assert not any(r.headers.get("authorization") for r in fake.requests), "a local Ollama got the key"
            assert {row["status"] for name, row in rows.items() if name != "ollama"} == {"unconfigured"}

            fake.stop()

            message = await call_error(client, "generate_structured", prompt="x", schema={"type": "object"})
            assert f"Cannot reach Ollama at {url}" in message, message
            # Health is cached for a few seconds: poll until the cached "ok" has expired.
            deadline = time.monotonic() + HEALTH_CACHE_S + 10
            while True:
                (ollama,) = (await call(client, "provider_health", provider="ollama"))["providers"]
                if ollama["status"] != "ok" or time.monotonic() > deadline:
                    break
                await anyio.sleep(0.5)
            assert ollama["status"] == "down", ollama
            assert f"Cannot reach Ollama at {url}" in ollama["detail"], ollama
            assert "ollama serve" in ollama["detail"], "the detail says what to do"
            assert ollama["version"] is None

            # The server still answers: the listing comes back with the configured models.
            result = await call(client, "list_models", refresh=True)
            configured = [m for m in result["models"] if m["source"] == "config"]
            assert {m["id"] for m in configured} >= {TEXT_MODEL, VISION_MODEL}
            # the provider cannot be reached: whether it has them is unknown (not "missing")
            assert all(m["available"] is None for m in configured), configured


@pytest.mark.anyio
async def test_legacy_protocol(config: Path, fake: FakeOllama) -> None:
    """A 2025-11-25 client (initialize handshake, JSON-RPC framing) gets the same answers."""
    with anyio.fail_after(TEST_TIMEOUT_S):
        async with connect(config, mode="legacy") as client:
            assert client.protocol_version == "2025-11-25"
            assert {tool.name for tool in (await client.list_tools()).tools} == TOOLS
            result = await call(client, "generate_structured", prompt="Describe a person.", schema=PERSON)
            validate(result["data"], PERSON)
            assert_trace(result, TEXT_MODEL)

            message = await call_error(client, "generate_structured", prompt="x", schema=PERSON, model="nope/x")
            assert "Unknown model id 'nope/x'" in message and "list_models" in message, message
            message = await call_error(client, "generate_structured", prompt="x", schema=PERSON, model="ollama/nope")
            assert "ollama pull nope" in message, message

            (ollama,) = (await call(client, "provider_health", provider="ollama"))["providers"]
            assert ollama["status"] == "ok" and ollama["version"] == fake.version
            models = (await call(client, "list_models"))["models"]
            assert {m["source"] for m in models} == {"config", "discovered"}


# --- stdout is JSON-RPC's alone -------------------------------------------------------------------


class _LineReader:
    """Lines from a pipe, read in a thread so every wait can have a timeout."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.lines: queue.Queue[bytes | None] = queue.Queue()
        self.seen: list[bytes] = []
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: IO[bytes]) -> None:
        for line in iter(stream.readline, b""):
            self.seen.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def until_response(self, request_id: int, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                raise AssertionError(f"stdout closed before the response to request {request_id}")
            message = json.loads(line)
            if message.get("id") == request_id:
                return message
        raise AssertionError(f"no response to request {request_id} within {timeout} s")

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the pipe stayed open after the server exited"


def test_stdout_carries_only_json_rpc(config: Path) -> None:
    """Raw JSON-RPC lines in, every stdout line checked; DEBUG logging on, to give stray output a chance."""
    with subprocess.Popen(
        [sys.executable, *server_args(config, "--log-level", "DEBUG")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=subprocess_env({"OLLAMA_API_KEY": SECRET}),
        cwd=REPO_ROOT,
    ) as proc:
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        out, err = _LineReader(proc.stdout), _LineReader(proc.stderr)  # drain stderr too: DEBUG is chatty
        try:
            _session(proc.stdin, out)
            proc.stdin.close()  # end of session: the server exits, flushing whatever it had buffered
            assert proc.wait(timeout=10) == 0
            out.join(timeout=5)
            err.join(timeout=5)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=5)

    assert out.seen, "nothing on stdout at all"
    for line in out.seen:
        try:
            message = json.loads(line)
            mcp_types.jsonrpc_message_adapter.validate_json(line)
        except ValueError as exc:
            pytest.fail(f"stdout carried a line that is not JSON-RPC: {line!r} ({exc})")
        assert message.get("jsonrpc") == "2.0", line
    stderr = b"".join(err.seen).decode(errors="replace")
    assert "DEBUG" in stderr, "the logs should have gone to stderr"
    assert SECRET not in stderr and all(SECRET.encode() not in line for line in out.seen), "the key leaked"


def _session(stdin: IO[bytes], out: _LineReader) -> None:
    """initialize, initialized, tools/list, then a good and a bad tool call."""

    def send(message: dict[str, Any]) -> None:
        stdin.write(json.dumps({"jsonrpc": "2.0", **message}).encode() + b"\n")
        stdin.flush()

    client_info = {"name": "raw-json-rpc", "version": "0"}
    send(
        {
            "id": 1,
            "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": client_info},
        }
    )
    reply = out.until_response(1, TEST_TIMEOUT_S)
    assert reply["result"]["protocolVersion"] == "2025-11-25", reply
    assert reply["result"]["serverInfo"]["name"] == "mcp-llm"
    send({"method": "notifications/initialized"})
    send({"id": 2, "method": "tools/list"})
    reply = out.until_response(2, CALL_TIMEOUT_S)
    assert {tool["name"] for tool in reply["result"]["tools"]} == TOOLS
    # The first completion imports the ollama SDK and talks HTTP, with DEBUG logs all the way.
    send(
        {
            "id": 3,
            "method": "tools/call",
            "params": {"name": "generate_structured", "arguments": {"prompt": "hi", "schema": PERSON}},
        }
    )
    reply = out.until_response(3, CALL_TIMEOUT_S)
    assert reply["result"]["isError"] is False, reply
    validate(reply["result"]["structuredContent"]["data"], PERSON)
    send({"id": 4, "method": "tools/call", "params": {"name": "list_models", "arguments": {"provider": "nope"}}})
    reply = out.until_response(4, CALL_TIMEOUT_S)
    assert reply["result"]["isError"] is True, reply
    # JSON-RPC parsers (pydantic's among them) take a bare NaN: the schema is refused, the server serves on.
    nan_schema = {"type": "object", "properties": {"x": {"type": "number", "maximum": float("nan")}}}
    send({"id": 5, "method": "tools/call", "params": {"name": "generate_structured",
                                                      "arguments": {"prompt": "hi", "schema": nan_schema}}})
    reply = out.until_response(5, CALL_TIMEOUT_S)
    assert reply["result"]["isError"] is True, reply
    assert "The schema holds a value JSON cannot express" in reply["result"]["content"][0]["text"], reply
    send({"id": 6, "method": "tools/call",
          "params": {"name": "generate_structured", "arguments": {"prompt": "hi", "schema": PERSON}}})
    reply = out.until_response(6, CALL_TIMEOUT_S)
    assert reply["result"]["isError"] is False, reply


# --- lines the SDK cannot read are answered (issue 18) ----------------------------------------------


class _RawSession:
    """A server subprocess driven by raw JSON-RPC lines: `send_line` writes one exactly as given."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        self.proc = proc
        self.out = _LineReader(proc.stdout)
        self.err = _LineReader(proc.stderr)

    def send_line(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode("utf-8") + b"\n")
        self.proc.stdin.flush()

    def send(self, message: dict[str, Any]) -> None:
        self.send_line(json.dumps({"jsonrpc": "2.0", **message}))

    def next_message(self, timeout: float) -> dict[str, Any]:
        line = self.out.lines.get(timeout=timeout)
        assert line is not None, "stdout closed"
        return json.loads(line)


def _raw_server(config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, *server_args(config)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=subprocess_env(), cwd=REPO_ROOT)


def _initialize(session: _RawSession, capabilities: dict[str, Any] | None = None) -> None:
    session.send({"id": 1, "method": "initialize", "params": {"protocolVersion": "2025-11-25",
                  "capabilities": capabilities or {}, "clientInfo": {"name": "raw", "version": "0"}}})
    assert session.out.until_response(1, TEST_TIMEOUT_S)["result"]["protocolVersion"] == "2025-11-25"
    session.send({"method": "notifications/initialized"})


def _call_line(request_id: int, arguments: str) -> str:
    """A tools/call line for generate_structured with `arguments` written as raw JSON text."""
    return (f'{{"jsonrpc":"2.0","id":{request_id},"method":"tools/call","params":{{"name":"generate_structured",'
            f'"arguments":{arguments}}}}}')


def test_unreadable_lines_get_an_answer_not_silence(config: Path) -> None:
    """Before the fix the SDK dropped a line with a lone surrogate escape (or any line it could not
    parse) without a word, and the client waited for its own timeout."""
    with _raw_server(config) as proc:
        session = _RawSession(proc)
        try:
            _initialize(session)
            # a lone surrogate escape: valid JSON grammar, no Unicode character; the id is recovered
            session.send_line(_call_line(2, '{"prompt":"half a pair: \\ud800","schema":{"type":"object"}}'))
            reply = session.out.until_response(2, 10)
            assert reply["error"]["code"] == -32700, reply
            assert "lone UTF-16 surrogate escape" in reply["error"]["message"], reply
            # a reversed pair is two lone halves; a proper pair is one character and goes through
            session.send_line(_call_line(3, '{"prompt":"\\udc00\\ud800","schema":{"type":"object"}}'))
            assert session.out.until_response(3, 10)["error"]["code"] == -32700
            session.send_line(_call_line(4, '{"prompt":"a pair: \\ud83d\\ude00","schema":{"type":"object"}}'))
            assert session.out.until_response(4, CALL_TIMEOUT_S)["result"]["isError"] is False

            # not JSON at all: a parse error with a null id, as JSON-RPC says
            session.send_line('{"jsonrpc":"2.0","id":5,"method":"tools/list"')
            reply = session.next_message(10)
            assert reply["id"] is None and reply["error"]["code"] == -32700, reply
            # JSON, but no JSON-RPC message: an invalid request, with its id
            session.send_line('{"jsonrpc":"1.0","id":6,"method":"tools/list"}')
            reply = session.out.until_response(6, 10)
            assert reply["error"]["code"] == -32600, reply
            # a notification cannot be answered: nothing comes back, and the server serves on
            session.send_line('{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"reason":"\\ud800"}}')

            # the numbers JSON has and a double does not: a tool error naming the argument
            session.send_line(_call_line(7, '{"prompt":"hi","schema":{"type":"object"},"temperature":1e309}'))
            reply = session.out.until_response(7, CALL_TIMEOUT_S)
            assert reply["result"]["isError"] is True, reply
            assert "temperature must be a number from 0 to 2, not inf" in reply["result"]["content"][0]["text"]
            session.send_line(_call_line(8, '{"prompt":"hi","schema":{"type":"object"},"timeout_s":NaN}'))
            reply = session.out.until_response(8, CALL_TIMEOUT_S)
            assert "timeout_s must be a number of seconds" in reply["result"]["content"][0]["text"], reply

            session.send({"id": 9, "method": "tools/call",
                          "params": {"name": "generate_structured", "arguments": {"prompt": "hi", "schema": PERSON}}})
            reply = session.out.until_response(9, CALL_TIMEOUT_S)
            assert reply["result"]["isError"] is False, reply
            proc.stdin.close()
            assert proc.wait(timeout=10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=5)


def test_an_unreadable_sampling_response_fails_the_call_at_once(config: Path) -> None:
    """A client's answer to our sampling request that the SDK cannot read (a lone surrogate in the
    model's text) used to be dropped: the tool waited for its deadline. It now fails at once."""
    with _raw_server(config) as proc:
        session = _RawSession(proc)
        try:
            _initialize(session, {"sampling": {}})
            session.send({"id": 2, "method": "tools/call", "params": {"name": "generate_structured", "arguments": {
                "prompt": "hi", "schema": {"type": "object"}, "model": "client", "timeout_s": 60}}})
            request = session.next_message(CALL_TIMEOUT_S)
            assert request["method"] == "sampling/createMessage", request
            started = time.monotonic()
            session.send_line(f'{{"jsonrpc":"2.0","id":{json.dumps(request["id"])},"result":{{"role":"assistant",'
                              '"model":"m","content":{"type":"text","text":"\\ud800"}}}')
            reply = session.out.until_response(2, 20)
            assert time.monotonic() - started < 10, "the call waited for its deadline"
            assert reply["result"]["isError"] is True, reply
            text = reply["result"]["content"][0]["text"]
            assert "did not run the sampling request" in text and "could not be read" in text, text
        finally:
            proc.kill()
            proc.wait(timeout=5)


@pytest.mark.anyio
async def test_a_text_answer_with_a_lone_surrogate_reaches_the_client(config: Path, fake: FakeOllama) -> None:
    """A model's `"\\ud800"` decodes to a lone surrogate, which the SDK cannot write to stdout: the call
    ended in an opaque "Error executing tool analyze_image". It now comes with U+FFFD in its place."""
    image = "data:image/png;base64," + base64.b64encode(png_bytes(8, 8)).decode()
    fake.enqueue("a lone \ud800 half, and a whole \U0001f600")
    with anyio.fail_after(TEST_TIMEOUT_S):
        async with connect(config) as client:
            result = await call(client, "analyze_image", image=image, prompt="What is it?")
    assert result["text"] == "a lone \ufffd half, and a whole \U0001f600"
