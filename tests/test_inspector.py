"""The server driven by the MCP Inspector CLI, the Node tool people reach for first.

The Inspector is pinned in package.json / package-lock.json and installed with `npm ci`
(into node_modules/, which git ignores). With Node 20 that is Inspector 0.15.x; 2.x needs
Node >= 22. If node or the installed Inspector is missing, these tests fail and say to run
`npm ci`; `MCP_LLM_SKIP_INSPECTOR=1` skips them instead.

Two quirks of the 0.15 CLI shape the command line:
- its launcher takes `--config` for itself (a JSON file of servers), so the server command
  goes after `--`: `mcp-inspector --cli -- python -m mcp_llm --config FILE serve --method …`;
- `--log-level` is its own option too, so the server is left at its default level here.
It prints the JSON result on stdout and exits 0 even when the tool result has `isError`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.conftest import TEXT_MODEL
from tests.fakes.ollama_server import FakeOllama
from tests.stdio_harness import REPO_ROOT, server_args, subprocess_env, write_config

pytestmark = pytest.mark.inspector

INSPECTOR = REPO_ROOT / "node_modules" / ".bin" / "mcp-inspector"
INSPECTOR_PACKAGE = REPO_ROOT / "node_modules" / "@modelcontextprotocol" / "inspector" / "package.json"
RUN_TIMEOUT_S = 90  # node start + a Python cold start + one call; a few seconds normally
TOOLS = {"generate_structured", "analyze_image", "list_models", "provider_health"}
TRACE_FIELDS = {"model", "provider", "attempts", "usage", "latency_ms", "schema_rewrites"}
SCHEMA = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "minLength": 3},
        "year": {"type": "integer", "minimum": 1900, "maximum": 2100},
        "genres": {"type": "array", "items": {"enum": ["drama", "comedy"]}, "minItems": 1},
    },
    "required": ["title", "year", "genres"],
    "additionalProperties": False,
}
HOW_TO_INSTALL = "Run `npm ci` in the repository root (Node 20+), or set MCP_LLM_SKIP_INSPECTOR=1 to skip."


@pytest.fixture(scope="module")
def inspector() -> str:
    """The pinned, locally installed Inspector CLI; fail (not skip) when it is missing."""
    if os.environ.get("MCP_LLM_SKIP_INSPECTOR") == "1":
        pytest.skip("MCP_LLM_SKIP_INSPECTOR=1")
    if shutil.which("node") is None:
        pytest.fail(f"node is not on PATH, so the MCP Inspector cannot run. {HOW_TO_INSTALL}")
    if not INSPECTOR.exists() or not INSPECTOR_PACKAGE.exists():
        pytest.fail(f"The MCP Inspector is not installed ({INSPECTOR} is missing). {HOW_TO_INSTALL}")
    pinned = json.loads((REPO_ROOT / "package.json").read_text())["devDependencies"]["@modelcontextprotocol/inspector"]
    installed = json.loads(INSPECTOR_PACKAGE.read_text())["version"]
    if installed != pinned:
        pytest.fail(f"node_modules has MCP Inspector {installed}, package.json pins {pinned}. {HOW_TO_INSTALL}")
    return str(INSPECTOR)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOllama]:
    with FakeOllama() as server:
        yield server
        assert not server.errors, f"the fake Ollama server itself failed: {server.errors!r}"


@pytest.fixture(scope="module")
def config(fake: FakeOllama, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_config(fake, tmp_path_factory.mktemp("inspector"))


def inspect(inspector: str, config: Path, *method: str) -> dict[str, Any]:
    """Run `mcp-inspector --cli -- <server command> <method options>`; return its parsed stdout."""
    command = [inspector, "--cli", "--", sys.executable, *server_args(config), *method]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, env=subprocess_env(), cwd=REPO_ROOT
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the Inspector did not finish in {RUN_TIMEOUT_S} s: {command}\nstderr: {exc.stderr!r}")
    report = f"command: {command}\nexit code: {done.returncode}\nstdout: {done.stdout}\nstderr: {done.stderr}"
    assert done.returncode == 0, report
    try:
        return json.loads(done.stdout)
    except ValueError:
        pytest.fail(f"the Inspector's stdout is not one JSON document\n{report}")


def call_tool(inspector: str, config: Path, tool: str, *args: str) -> dict[str, Any]:
    return inspect(inspector, config, "--method", "tools/call", "--tool-name", tool, "--tool-arg", *args)


def error_text(result: dict[str, Any]) -> str:
    return " ".join(block.get("text", "") for block in result["content"])


def test_tools_list(inspector: str, config: Path) -> None:
    listed = inspect(inspector, config, "--method", "tools/list")
    tools = {tool["name"]: tool for tool in listed["tools"]}
    assert set(tools) == TOOLS
    for tool in tools.values():
        assert tool["description"] and tool["inputSchema"]["type"] == "object", tool
        assert "outputSchema" in tool, f"{tool['name']} publishes no output schema"


def test_generate_structured(inspector: str, config: Path, fake: FakeOllama) -> None:
    result = call_tool(
        inspector, config, "generate_structured", "prompt=Invent a film.", f"schema={json.dumps(SCHEMA)}"
    )
    assert result["isError"] is False, error_text(result)
    structured = result["structuredContent"]
    jsonschema.validate(structured["data"], SCHEMA, cls=jsonschema.Draft202012Validator)
    assert TRACE_FIELDS <= structured.keys()
    assert structured["model"] == TEXT_MODEL and structured["provider"] == "ollama"
    assert [a["outcome"] for a in structured["attempts"]] == ["ok"]
    # The Inspector sends `schema` as a JSON string (its input schema is object-or-string);
    # the server parsed it, and Ollama got the object.
    assert fake.chat_requests[-1].json["format"] == SCHEMA
    # Clients that do not read structuredContent get the same result as text.
    assert json.loads(result["content"][0]["text"]) == structured


def test_bad_model_is_a_helpful_tool_error(inspector: str, config: Path) -> None:
    # The provider prefix forgotten: a common slip, and the error should point at the fix.
    result = call_tool(
        inspector, config, "generate_structured", "prompt=Hi.", 'schema={"type":"object"}', "model=llama3.2:3b"
    )
    assert result["isError"] is True, result
    message = error_text(result)
    assert "Unknown model id 'llama3.2:3b'" in message, message
    assert f"'{TEXT_MODEL}'" in message and "list_models" in message, message

    # A well-formed id the Ollama server does not have.
    result = call_tool(
        inspector, config, "generate_structured", "prompt=Hi.", 'schema={"type":"object"}', "model=ollama/no-such-model"
    )
    assert result["isError"] is True, result
    assert "ollama pull no-such-model" in error_text(result)


def test_provider_health(inspector: str, config: Path, fake: FakeOllama) -> None:
    result = call_tool(inspector, config, "provider_health", "provider=ollama")
    assert result["isError"] is False, error_text(result)
    (ollama,) = result["structuredContent"]["providers"]
    assert ollama["status"] == "ok" and ollama["version"] == fake.version and ollama["endpoint"] == fake.url
