"""Streamable HTTP: the tools over the network transport, and the bearer token rule.

Whenever a token is configured it is required on every request, loopback included; on a
non-loopback address the server refuses to start without one.
"""

from __future__ import annotations

import base64
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


def wait_listening(port: int, process: subprocess.Popen[bytes], timeout_s: float = 30, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server exited: {process.stderr.read().decode() if process.stderr else ''}")
        try:
            with socket.create_connection((host, port), timeout=0.2):
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


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


def stop(process: subprocess.Popen[bytes]) -> bytes:
    process.terminate()
    try:
        return process.communicate(timeout=10)[1]
    except subprocess.TimeoutExpired:
        process.kill()
        return process.communicate()[1]


@pytest.mark.parametrize("host", [
    "127.0.0.2",
    pytest.param("[::1]", marks=pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback on this machine")),
])
async def test_tokenless_loopback_refuses_a_foreign_host_and_origin(fake_ollama: FakeOllama, tmp_path: Path,
                                                                     host: str) -> None:
    """DNS rebinding: a page on evil.example resolving to our address must not reach the tools, on
    every loopback address (the SDK guards only 127.0.0.1, localhost and ::1 by itself)."""
    config = write_config(fake_ollama, tmp_path)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "mcp_llm", "serve", "--config", str(config), "--transport", "http",
         "--host", host, "--port", str(port)],
        env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    url = f"http://{host}:{port}/mcp"
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    try:
        wait_listening(port, process, host=host.strip("[]"))
        async with httpx2.AsyncClient(timeout=10) as http:
            foreign_host = await http.post(url, json=INITIALIZE, headers=headers | {
                "Host": "evil.example", "Origin": "http://evil.example"})
            foreign_origin = await http.post(url, json=INITIALIZE, headers=headers | {"Origin": "http://evil.example"})
            own_origin = await http.post(url, json=INITIALIZE, headers=headers | {"Origin": f"http://{host}:{port}"})
            plain = await http.post(url, json=INITIALIZE, headers=headers)
        assert foreign_host.status_code == 421
        assert foreign_origin.status_code == 403
        assert own_origin.status_code == 200, own_origin.text
        assert plain.status_code == 200, plain.text
    finally:
        stderr = stop(process)
    assert b"Traceback" not in stderr


async def test_allowed_hosts_from_the_config_are_accepted(fake_ollama: FakeOllama, tmp_path: Path) -> None:
    """A name in front of the server (a proxy, a DNS name) is accepted once listed, and only then."""
    config = write_config(fake_ollama, tmp_path, extra='\n[server]\nallowed_hosts = ["mcp.internal:*"]\n'
                          'allowed_origins = ["https://app.internal"]\n')
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "mcp_llm", "--config", str(config), "serve", "--transport", "http",
         "--port", str(port)],
        env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}/mcp"
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    try:
        wait_listening(port, process)
        async with httpx2.AsyncClient(timeout=10) as http:
            named = await http.post(url, json=INITIALIZE, headers=headers | {
                "Host": f"mcp.internal:{port}", "Origin": "https://app.internal"})
            other = await http.post(url, json=INITIALIZE, headers=headers | {"Host": f"mcp.other:{port}"})
        assert named.status_code == 200, named.text
        assert other.status_code == 421
    finally:
        stop(process)


# --- the request body limit follows images.max_bytes (issue 18) --------------------------------------


def noise_png(side: int) -> bytes:
    """A PNG that does not compress: about 3 × side² bytes."""
    import io
    import os

    from PIL import Image

    buffer = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(3 * side * side)).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


async def test_an_image_over_4_mb_passes_over_http(http_server: str, fake_ollama: FakeOllama) -> None:
    """The SDK refuses bodies over 4 MiB with a bare 413, which its client shows as "Server returned an
    error response": a base64 image over ~3 MB could not pass, far below images.max_bytes (20 MiB)."""
    import anyio

    png = noise_png(1300)  # ~5 MB, ~6.8 MB as base64
    assert len(png) > 4_500_000
    image = "data:image/png;base64," + base64.b64encode(png).decode()
    fake_ollama.enqueue("Static, all of it.")
    with anyio.fail_after(90):
        async with (
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60) as http,
            Client(streamable_http_client(http_server, http_client=http)) as client,
        ):
            result = await call(client, "analyze_image", image=image, prompt="What is it?")
    assert result["text"] == "Static, all of it."
    (sent,) = fake_ollama.chat_requests[-1].json["messages"][-1]["images"]
    assert len(base64.b64decode(sent)) > 4_500_000


def test_the_body_limit_follows_images_max_bytes(make_settings) -> None:
    from mcp_llm.transport import SDK_BODY_LIMIT, http_body_limit

    default = make_settings("")
    assert http_body_limit(default) >= 4 * default.images.max_bytes // 3 + default.limits.schema_max_bytes
    small = make_settings("[images]\nmax_bytes = 100_000\n[limits]\nschema_max_bytes = 4096\n")
    assert http_body_limit(small) == SDK_BODY_LIMIT  # never below the SDK's own
    big = make_settings("[images]\nmax_bytes = 60_000_000\n")
    assert http_body_limit(big) > 80_000_000


async def test_a_body_over_the_limit_is_still_refused(fake_ollama: FakeOllama, tmp_path: Path) -> None:
    """With images.max_bytes = 1 MiB the limit stays the SDK's 4 MiB (plus room): 6 MiB is refused."""
    config = write_config(fake_ollama, tmp_path, extra="max_bytes = 1_048_576\n")
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "mcp_llm", "--config", str(config), "serve", "--transport", "http", "--port", str(port)],
        env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    try:
        wait_listening(port, process)
        async with httpx2.AsyncClient(timeout=30) as http:
            big = await http.post(f"http://127.0.0.1:{port}/mcp", content=b" " * (6 * 1024 * 1024), headers=headers)
            fine = await http.post(f"http://127.0.0.1:{port}/mcp", json=INITIALIZE, headers=headers)
        assert big.status_code == 413
        assert fine.status_code == 200
    finally:
        stop(process)
