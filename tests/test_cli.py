"""The command line: `call`, `models`, `health` against the fake Ollama, as a user runs them."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import jsonschema
import pytest

from mcp_llm.presets import PRESETS
from tests.conftest import free_port
from tests.fakes.ollama_server import FakeOllama
from tests.images import png_bytes
from tests.stdio_harness import subprocess_env, write_config
from tests.test_http import wait_listening

INITIALIZE = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
NO_DISCOVERY = {"MCP_LLM_DISCOVERY": "off"}  # no looking for local model servers on this machine's usual ports


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
    done = run(config, "call", "What is it?", "--image", str(image))  # no --schema: the answer is text
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["text"] == "A grey pixel field."


def test_call_errors_go_to_stderr_with_exit_1(fake_ollama: FakeOllama, tmp_path: Path) -> None:
    done = run(write_config(fake_ollama, tmp_path), "call", "hi", "--model", "nope/model")
    assert done.returncode == 1
    assert done.stdout == ""
    assert "Unknown model id 'nope/model'" in done.stderr
    assert "`mcp-llm models`" in done.stderr and "list_models" not in done.stderr  # the CLI's words


def test_models_and_health(fake_ollama: FakeOllama, tmp_path: Path) -> None:
    config = write_config(fake_ollama, tmp_path)
    models = json.loads(run(config, "models", "--json").stdout)
    assert {"ollama/llama3.2:3b", "ollama/llava:7b"} <= {m["id"] for m in models}
    health = {h["provider"]: h for h in json.loads(run(config, "health", "--json").stdout)}
    assert health["ollama"]["status"] == "ok" and health["ollama"]["version"] == "0.12.3"
    plain = run(config, "health").stdout
    assert "ollama" in plain and "ok" in plain


def mcp_llm(*args: str, input: str | None = "", timeout: float = 60,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m mcp_llm ARGS` exactly as given (no --config added)."""
    return subprocess.run([sys.executable, "-m", "mcp_llm", *args], capture_output=True, text=True,
                          timeout=timeout, input=input, env=subprocess_env(env))


def down_config(tmp_path: Path) -> Path:
    """Ollama configured where nothing listens: connections are refused at once."""
    path = tmp_path / "down.toml"
    path.write_text(f"""
[defaults]
model = "ollama/llama3.2:3b"
connect_timeout_s = 2

[providers.ollama]
endpoint = "http://127.0.0.1:{free_port()}"

[[providers.ollama.models]]
id = "llama3.2:3b"
""", encoding="utf-8")
    return path


def test_no_command_serves_stdio_and_ends_at_end_of_input(fake_ollama: FakeOllama, tmp_path: Path) -> None:
    """A client config with `"args": []`: serve is the default command."""
    config = write_config(fake_ollama, tmp_path)
    done = mcp_llm("--config", str(config), input=INITIALIZE + "\n")
    assert done.returncode == 0, done.stderr
    reply = json.loads(done.stdout.splitlines()[0])
    assert reply["id"] == 1 and reply["result"]["serverInfo"]["name"] == "mcp-llm"
    assert "Traceback" not in done.stderr


def test_options_go_before_or_after_the_command(fake_ollama: FakeOllama, tmp_path: Path) -> None:
    config = write_config(fake_ollama, tmp_path)
    after = mcp_llm("serve", "--config", str(config), input=INITIALIZE + "\n")
    assert after.returncode == 0, after.stderr
    assert json.loads(after.stdout.splitlines()[0])["result"]["serverInfo"]["name"] == "mcp-llm"
    missing = mcp_llm("serve", "--config", str(tmp_path / "missing.toml"))
    assert missing.returncode == 2 and "missing.toml does not exist" in missing.stderr and missing.stdout == ""
    models = mcp_llm("models", "--json", "--config", str(config))
    assert models.returncode == 0 and "ollama/llama3.2:3b" in {m["id"] for m in json.loads(models.stdout)}


def test_help_documents_the_exit_codes() -> None:
    for args in (("--help",), ("health", "--help")):
        done = mcp_llm(*args)
        assert done.returncode == 0
        for line in ("0    ok", "1    the call failed", "2    usage or config error", "3    every configured"):
            assert line in done.stdout
    bad = mcp_llm("serve", "--port", "70000")
    assert bad.returncode == 2 and "a port is 0-65535" in bad.stderr


def test_models_when_ollama_is_down_says_so_and_does_not_claim_missing(tmp_path: Path) -> None:
    config = down_config(tmp_path)
    plain = mcp_llm("--config", str(config), "models")
    assert plain.returncode == 0, plain.stderr
    lines = plain.stdout.splitlines()
    assert lines[0].split() == ["MODEL", "PROVIDER", "SOURCE", "AVAILABLE", "FLAGS"]
    assert lines[1].split()[:4] == ["ollama/llama3.2:3b", "ollama", "config", "unknown"]
    assert "missing" not in plain.stdout and "ollama pull" not in plain.stdout + plain.stderr
    assert "ollama: could not list its models" in plain.stderr and "ollama serve" in plain.stderr
    as_json = json.loads(mcp_llm("--config", str(config), "models", "--json").stdout)
    assert [(m["id"], m["available"]) for m in as_json] == [("ollama/llama3.2:3b", None)]


def test_models_table_has_a_header_and_says_what_is_missing(fake_ollama: FakeOllama, tmp_path: Path) -> None:
    config = write_config(fake_ollama, tmp_path, extra='\n[[providers.ollama.models]]\nid = "not-pulled:1b"\n')
    done = mcp_llm("--config", str(config), "models")
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line.split() for line in done.stdout.splitlines()}
    assert rows["MODEL"] == ["MODEL", "PROVIDER", "SOURCE", "AVAILABLE", "FLAGS"]
    assert rows["ollama/llama3.2:3b"][3] == "yes"
    assert rows["ollama/not-pulled:1b"][3] == "missing"
    assert done.stderr == ""


def test_health_exits_3_when_every_provider_is_down(fake_ollama: FakeOllama, tmp_path: Path) -> None:
    down = mcp_llm("--config", str(down_config(tmp_path)), "health")
    assert down.returncode == 3, down.stderr
    assert down.stdout.splitlines()[0].split() == ["PROVIDER", "STATUS", "LATENCY", "VERSION", "DETAIL"]
    assert "every configured provider is down" in down.stderr
    as_json = mcp_llm("--config", str(down_config(tmp_path)), "health", "--json")
    assert as_json.returncode == 3
    assert {h["provider"]: h["status"] for h in json.loads(as_json.stdout)}["ollama"] == "down"
    up = mcp_llm("--config", str(write_config(fake_ollama, tmp_path)), "health")
    assert up.returncode == 0, up.stderr


def test_models_and_health_import_no_sdk_of_an_unconfigured_provider(fake_ollama: FakeOllama,
                                                                      tmp_path: Path) -> None:
    """No key for Gemini or Anthropic: their SDKs (seconds to import) are not loaded at all."""
    config = write_config(fake_ollama, tmp_path)
    probe = ("import sys\nfrom mcp_llm.cli import main\n"
             f"code = main(['--config', {str(config)!r}, sys.argv[1], '--json'])\n"
             "loaded = [m for m in ('anthropic', 'google.genai', 'ollama') if m in sys.modules]\n"
             "sys.stderr.write('LOADED=' + ','.join(loaded))\nraise SystemExit(code)\n")
    for command in ("models", "health"):
        done = subprocess.run([sys.executable, "-c", probe, command], capture_output=True, text=True, timeout=60,
                              env=subprocess_env())
        assert done.returncode == 0, done.stderr
        assert done.stderr.rsplit("LOADED=", 1)[1] == "ollama"
        if command == "health":
            rows = {h["provider"]: h for h in json.loads(done.stdout)}
            assert rows["anthropic"]["status"] == rows["gemini"]["status"] == "unconfigured"
            assert "ANTHROPIC_API_KEY" in rows["anthropic"]["detail"]


def test_errors_speak_the_command_line(tmp_path: Path) -> None:
    config = tmp_path / "empty.toml"
    config.write_text("", encoding="utf-8")
    done = mcp_llm("--config", str(config), "call", "hi")
    assert done.returncode == 1
    assert "Pass --model" in done.stderr and "`model`" not in done.stderr
    bad_timeout = mcp_llm("--config", str(config), "call", "hi", "--timeout", "0")
    assert bad_timeout.returncode == 2 and "--timeout must be positive" in bad_timeout.stderr


def test_serve_on_a_terminal_says_it_waits_on_stdin_and_ctrl_c_is_quiet(fake_ollama: FakeOllama,
                                                                       tmp_path: Path) -> None:
    config = write_config(fake_ollama, tmp_path)
    controller, terminal = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "mcp_llm", "--config", str(config), "serve"],
                               stdin=terminal, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env=subprocess_env())
    os.close(terminal)
    try:
        assert process.stderr is not None
        notice = read_until(process.stderr, "Ctrl-C to stop.", 30)
        assert "waiting for an MCP client on stdin" in notice
        assert "npx @modelcontextprotocol/inspector -- mcp-llm serve" in notice
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        os.close(controller)
    assert stdout == b""  # nothing but JSON-RPC ever goes there
    assert process.returncode == 130
    assert b"Traceback" not in stderr and stderr.strip().endswith(b"mcp-llm: interrupted")


@pytest.mark.parametrize("transport", ["stdio", "http"])
def test_ctrl_c_while_serving_is_a_quiet_exit(fake_ollama: FakeOllama, tmp_path: Path, transport: str) -> None:
    config = write_config(fake_ollama, tmp_path)
    port = free_port()
    extra = ["--transport", "http", "--port", str(port)] if transport == "http" else []
    process = subprocess.Popen([sys.executable, "-m", "mcp_llm", "serve", "--config", str(config), *extra],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env=subprocess_env())
    try:
        assert process.stdin is not None and process.stdout is not None
        if transport == "stdio":  # a live session: initialize answered, stdin still open
            process.stdin.write((INITIALIZE + "\n").encode())
            process.stdin.flush()
            assert '"serverInfo"' in read_until(process.stdout, "\n", 30)
        else:
            wait_listening(port, process)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130, stderr.decode()
    assert b"Traceback" not in stderr and b"KeyboardInterrupt" not in stderr
    assert stderr.decode().rstrip().endswith("mcp-llm: interrupted")


def read_until(stream: IO[bytes], marker: str, timeout_s: float) -> str:
    """What a subprocess pipe gives until `marker` (unbuffered reads), or a test failure after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    seen = b""
    while marker.encode() not in seen:
        ready, _, _ = select.select([stream], [], [], max(deadline - time.monotonic(), 0))
        assert ready, f"no {marker!r} within {timeout_s} s; got {seen!r}"
        chunk = os.read(stream.fileno(), 65536)
        assert chunk, f"the pipe closed before {marker!r}; got {seen!r}"
        seen += chunk
    return seen.decode()


def test_output_into_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    empty = tmp_path / "empty.toml"
    empty.write_text("", encoding="utf-8")
    reader = subprocess.Popen([sys.executable, "-m", "mcp_llm", "--config", str(empty), "config"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=subprocess_env())
    assert reader.stdout is not None and reader.stderr is not None
    reader.stdout.readline()
    reader.stdout.close()  # like `| head -1`: the reader is gone before the rest is written
    _, stderr = reader.communicate(timeout=60)
    errors = stderr.decode()
    assert reader.returncode == 0
    assert "Traceback" not in errors and "BrokenPipe" not in errors, errors


def test_http_with_token_env_naming_an_unset_variable_refuses_to_start(fake_ollama: FakeOllama,
                                                                       tmp_path: Path) -> None:
    """The user asked for a token: serving HTTP without one, silently, is not what they meant."""
    config = write_config(fake_ollama, tmp_path, extra='\n[server]\ntoken_env = "MCP_LLM_TEST_TOKEN"\n')
    port = free_port()
    for env in ({}, {"MCP_LLM_TEST_TOKEN": ""}):  # unset, and set but empty
        done = mcp_llm("--config", str(config), "serve", "--transport", "http", "--port", str(port), timeout=30,
                       env=env)
        assert done.returncode == 2, done.stderr
        assert "MCP_LLM_TEST_TOKEN, which is not set" in done.stderr and "Set MCP_LLM_TEST_TOKEN" in done.stderr
        assert done.stdout == "" and "Traceback" not in done.stderr
    stats = mcp_llm("--config", str(config), "stats", timeout=30)
    assert stats.returncode == 2 and "MCP_LLM_TEST_TOKEN, which is not set" in stats.stderr


@pytest.mark.parametrize(("schema", "expected"), [
    ('{"type": "objec"}', "is not a valid JSON Schema"),
    ("[1]", "is a JSON array ([1]), and a JSON Schema is an object"),
    ('{"type": ', "is not valid JSON"),
    ("visual_promt_score", "Unknown schema preset 'visual_promt_score'"),
    ("false", "no value satisfies"),
], ids=["invalid", "array", "broken-json", "preset-typo", "false"])
def test_a_bad_schema_is_a_usage_error(fake_ollama: FakeOllama, tmp_path: Path, schema: str, expected: str) -> None:
    """Exit 2 (usage), found before any model is asked; it was exit 1, and '[1]' was an "unknown preset"."""
    done = run(write_config(fake_ollama, tmp_path), "call", "hi", "--schema", schema)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("mcp-llm: --schema: ") and expected in done.stderr, done.stderr
    assert "Unknown schema preset" not in done.stderr or schema == "visual_promt_score"
    assert done.stdout == "" and fake_ollama.chat_requests == []


def test_a_bad_image_is_a_usage_error(fake_ollama: FakeOllama, tmp_path: Path) -> None:
    done = run(write_config(fake_ollama, tmp_path), "call", "What?", "--image", str(tmp_path / "images" / "no.png"))
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("mcp-llm: --image: ") and fake_ollama.chat_requests == []


@pytest.mark.parametrize(("args", "usage", "suggestion"), [
    (("call", "hi", "--shema", "{}"), "usage: mcp-llm call", "(did you mean --schema?)"),
    (("call", "hi", "--maxtokens=5"), "usage: mcp-llm call", "(did you mean --max-tokens?)"),
    (("models", "--jsn"), "usage: mcp-llm models", "(did you mean --json?)"),
    (("serve", "--trasport", "http"), "usage: mcp-llm serve", "(did you mean --transport?)"),
    (("cal", "hi"), "usage: mcp-llm [-h]", "(did you mean call?)"),
])
def test_a_mistyped_option_prints_the_commands_usage_and_the_closest_option(
        args: tuple[str, ...], usage: str, suggestion: str) -> None:
    done = mcp_llm(*args, timeout=30)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(usage), done.stderr
    assert suggestion in done.stderr
    assert "unrecognized arguments" in done.stderr or "invalid choice" in done.stderr
    assert done.stdout == ""


def test_call_passes_max_tokens_temperature_and_system(fake_ollama: FakeOllama, tmp_path: Path) -> None:
    """The error for a cut-off answer says to raise --max-tokens: `call` must take it (and --temperature)."""
    done = run(write_config(fake_ollama, tmp_path), "call", "hi", "--max-tokens", "77", "--temperature", "0",
               "--system", "Be terse.", "--timeout", "30")
    assert done.returncode == 0, done.stderr
    sent = json.loads(fake_ollama.chat_requests[0].body)
    assert sent["options"]["num_predict"] == 77 and sent["options"]["temperature"] == 0
    assert sent["messages"][0]["role"] == "system" and sent["messages"][0]["content"].startswith("Be terse.")
    bad = mcp_llm("call", "hi", "--max-tokens", "0", timeout=30)
    assert bad.returncode == 2 and "--max-tokens: must be at least 1" in bad.stderr


def test_models_with_only_an_openai_compatible_endpoint_says_nothing_of_ollama(tmp_path: Path) -> None:
    from tests.fakes.openai_server import FakeOpenAI

    with FakeOpenAI(api_key=None, models=["local-model"]) as fake:
        config = tmp_path / "lm.toml"
        config.write_text(f'[providers.openai_compatible.lm]\nendpoint = "{fake.base_url}"\n'
                          'models = ["local-model"]\n', encoding="utf-8")
        done = mcp_llm("--config", str(config), "models", timeout=60, env=NO_DISCOVERY)
    assert done.returncode == 0, done.stderr
    rows = [line.split() for line in done.stdout.splitlines()]
    assert rows[1][:4] == ["lm/local-model", "lm", "config", "yes"]
    assert "ollama" not in done.stderr, done.stderr  # Ollama was never set up: its absence is no one's concern
