"""Streamable HTTP: the tools over the network transport, and the bearer token rule.

Whenever a token is configured it is required on every request, loopback included; on a
non-loopback address the server refuses to start without one.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.conftest import call, free_port
from tests.fakes.ollama_server import FakeOllama
from tests.stdio_harness import subprocess_env, write_config

pytestmark = pytest.mark.anyio

TOKEN = "http-canary-token-31337"
INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}


def wait_listening(port: int, process: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server exited: {process.stderr.read().decode() if process.stderr else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("the HTTP server did not start listening")


@pytest.fixture
def http_server(fake_ollama: FakeOllama, tmp_path: Path) -> Iterator[str]:
    config = write_config(fake_ollama, tmp_path, extra='\n[server]\ntoken_env = "MCP_LLM_TOKEN"\n')
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "mcp_llm", "--config", str(config), "serve", "--transport", "http",
         "--port", str(port)],
        env=subprocess_env({"MCP_LLM_TOKEN": TOKEN}), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        wait_listening(port, process)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        try:
            _, stderr = process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            _, stderr = process.communicate(timeout=10)
        assert TOKEN.encode() not in stderr, "the token was logged"


async def test_tools_over_http_with_the_token(http_server: str) -> None:
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as http,
        Client(streamable_http_client(http_server, http_client=http)) as client,
    ):
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert names == {"generate_structured", "analyze_image", "list_models", "provider_health"}
        result = await call(client, "generate_structured", prompt="hi",
                            schema={"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]})
        assert isinstance(result["data"]["n"], int)


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token", f"Basic {TOKEN}"])
async def test_requests_without_the_right_token_are_refused(http_server: str, authorization: str | None) -> None:
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    if authorization:
        headers["Authorization"] = authorization
    async with httpx2.AsyncClient(timeout=10) as http:
        response = await http.post(http_server, json=INITIALIZE, headers=headers)
    assert response.status_code == 401
    assert TOKEN not in response.text


def test_a_non_loopback_host_without_a_token_does_not_start(fake_ollama: FakeOllama, tmp_path: Path) -> None:
    config = write_config(fake_ollama, tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "mcp_llm", "--config", str(config), "serve", "--transport", "http",
         "--host", "0.0.0.0", "--port", str(free_port())],
        env=subprocess_env(), capture_output=True, text=True, timeout=30,
    )
    assert done.returncode == 2
    assert "without a token" in done.stderr and "token_env" in done.stderr
    assert done.stdout == ""
