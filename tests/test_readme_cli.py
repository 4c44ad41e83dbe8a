"""README.md's client and Inspector snippets, run against the real command line.

Each way the README tells a user to start the server (the JSON client configs, Claude Code's
`claude mcp add`, VS Code, the MCP Inspector) is taken from the README text, its
`/path/to/.venv/bin/mcp-llm` replaced by this Python's `-m mcp_llm`, and run as a subprocess
that must answer `initialize` on stdout. Every `mcp-llm <command>` the README names must exist.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fakes.ollama_server import FakeOllama
from tests.stdio_harness import REPO_ROOT, subprocess_env, write_config

README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
BINARY = "/path/to/.venv/bin/mcp-llm"
CONFIG = "/path/to/config.toml"
INITIALIZE = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})


def snippet_commands() -> dict[str, list[str]]:
    """The mcp-llm argument lists of each client snippet in the README, by client."""
    found: dict[str, list[str]] = {}
    for match in re.finditer(r'"command": "' + re.escape(BINARY) + r'",\s*"args": (\[[^\]]*\])', README):
        found[f"json config {len(found) + 1}"] = json.loads(match.group(1))
    claude = re.search(r"`claude mcp add llm -- " + re.escape(BINARY) + r"([^`]*)`", README)
    inspector = re.search(r"`npx @modelcontextprotocol/inspector -- " + re.escape(BINARY) + r"([^`]*)`", README)
    assert claude and inspector, "the README lost its Claude Code or Inspector snippet"
    found["claude code"] = shlex.split(claude.group(1))
    found["inspector"] = shlex.split(inspector.group(1))
    return found


COMMANDS = snippet_commands()


def test_the_readme_has_the_snippets() -> None:
    assert len(COMMANDS) >= 4  # Claude Desktop / Cursor JSON, VS Code JSON, Claude Code, Inspector
    assert COMMANDS["inspector"] == ["serve", "--config", CONFIG]  # the option after the command


@pytest.mark.parametrize("client", list(COMMANDS))
def test_each_snippet_starts_a_server_that_answers(client: str, fake_ollama: FakeOllama, tmp_path: Path) -> None:
    config = write_config(fake_ollama, tmp_path)
    args = [str(config) if arg == CONFIG else arg for arg in COMMANDS[client]]
    env = subprocess_env({"MCP_LLM_CONFIG": str(config)})  # the JSON configs' "env", for those without --config
    done = subprocess.run([sys.executable, "-m", "mcp_llm", *args], input=INITIALIZE + "\n", capture_output=True,
                          text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    reply = json.loads(done.stdout.splitlines()[0])
    assert reply["result"]["serverInfo"]["name"] == "mcp-llm", reply


def test_every_command_the_readme_names_exists() -> None:
    named = set(re.findall(r"`mcp-llm ([a-z]+)", README))
    assert {"serve", "config", "models", "health", "call", "stats"} <= named
    for command in sorted(named):
        done = subprocess.run([sys.executable, "-m", "mcp_llm", command, "--help"], capture_output=True, text=True,
                              timeout=60, env=subprocess_env())
        assert done.returncode == 0, f"`mcp-llm {command}` is in the README but not in the CLI: {done.stderr}"


def readme_call_commands() -> list[list[str]]:
    """Every `mcp-llm call …` the README shows, inline or in a shell block, as argument lists."""
    found = []
    for match in re.finditer(r"(?:^[ \t]*|`)mcp-llm (call (?:[^`\n\\]|\\\n)*)", README, re.M):
        text = match.group(1).replace("\\\n", " ")
        if "[" in text.split("call", 1)[1].split("'")[0]:  # the usage line: `call "prompt" [--schema …]`
            continue
        found.append(shlex.split(text))
    return found


def test_each_call_the_readme_shows_parses_and_has_a_prompt() -> None:
    """`mcp-llm call generate_structured` made the tool's name the prompt; every call shown must be a real one."""
    from mcp_llm.cli import _parser

    calls = readme_call_commands()
    assert calls, "the README shows no `mcp-llm call`"
    parser, _ = _parser()
    for argv in calls:
        args = parser.parse_args(argv)
        assert args.prompt not in ("generate_structured", "analyze_image", "prompt"), argv
        assert len(args.prompt.split()) > 1, f"{argv}: the prompt should be a sentence"
        if args.schema is not None:
            json.loads(args.schema)


def first_screen() -> str:
    """README's opening section, up to its next heading: what a newcomer reads first."""
    start = README.index("## First answer in five minutes")
    return README[start:README.index("\n## ", start + 3)]


def first_screen_call() -> list[str]:
    found = re.search(r"^[ \t]*mcp-llm (call [^\n]*)$", first_screen(), re.M)
    assert found, "README's first screen shows no `mcp-llm call`"
    return shlex.split(found.group(1))


def test_the_first_screen_leads_to_a_local_server_and_the_assistant() -> None:
    screen = first_screen()
    assert README.index("## First answer in five minutes") < README.index("## Install and run")
    for step in ("pip install -e .", "llama-server -hf ", "brew install llama.cpp", "winget install llama.cpp",
                 "ollama serve", "claude mcp add llm"):
        assert step in screen, step


def test_the_first_screens_call_answers_with_no_config_from_a_local_server(tmp_path: Path) -> None:
    """The README's own command, as a newcomer runs it: no config file, no key, no sampling client; a
    llama-server on its port (here a fake one, where MCP_LLM_DISCOVERY points). `data` validates."""
    import jsonschema

    from tests.conftest import free_port
    from tests.fakes.openai_server import FakeOpenAI

    argv = first_screen_call()
    schema = json.loads(argv[argv.index("--schema") + 1])
    with FakeOpenAI(api_key=None, models=["SmolLM2-135M-Instruct.Q4_1.gguf"]) as fake:
        fake.responder = lambda body: {"name": "Alice", "age": 30, "city": "Paris"}
        env = subprocess_env({"XDG_CONFIG_HOME": str(tmp_path / "no-config"), "OLLAMA_HOST": f"127.0.0.1:{free_port()}",
                              "MCP_LLM_DISCOVERY": f"llamacpp={fake.base_url}"})
        done = subprocess.run([sys.executable, "-m", "mcp_llm", *argv], capture_output=True, text=True, timeout=60,
                              env=env)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    jsonschema.validate(result["data"], schema)
    assert result["model"] == "llamacpp/SmolLM2-135M-Instruct.Q4_1.gguf" and result["provider"] == "llamacpp"
    assert "no model given or configured: using llamacpp/SmolLM2-135M-Instruct.Q4_1.gguf, served by the " \
           "llama-server found at " in done.stderr
