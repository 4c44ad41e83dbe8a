"""Replicas: two `mcp-llm serve --transport http --stateless` behind nginx, with the bearer token.

nginx (the Debian package; `.ci/run` installs it) runs in the foreground with everything in
tmp_path, on loopback, configured with the snippet README.md shows, so the README is tested too.
200 tools/call go through it; each replica's own `mcp-llm://stats` says it served some.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.conftest import free_port
from tests.fakes.ollama_server import FakeOllama
from tests.stdio_harness import REPO_ROOT, subprocess_env, write_config
from tests.test_http import INITIALIZE, stop, wait_listening
from tests.test_stats import stats_of

pytestmark = pytest.mark.anyio

TOKEN = "replica-canary-token-4242"
CALLS = 200
CONCURRENCY = 8
NGINX = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)


def readme_snippet() -> str:
    """The ```nginx block of README.md."""
    found = re.search(r"```nginx\n(.*?)```", (REPO_ROOT / "README.md").read_text(encoding="utf-8"), re.S)
    assert found, "README.md shows no nginx snippet"
    return found.group(1)


def nginx_conf(directory: Path, replicas: tuple[int, int], port: int) -> Path:
    snippet = readme_snippet()
    for default, actual in (("127.0.0.1:8765", replicas[0]), ("127.0.0.1:8766", replicas[1]),
                            ("127.0.0.1:8070", port)):
        assert default in snippet, f"the README snippet no longer has {default}"
        snippet = snippet.replace(default, f"127.0.0.1:{actual}")
    temp = {name: directory / name for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
    for path in temp.values():
        path.mkdir(parents=True, exist_ok=True)
    path = directory / "nginx.conf"
    path.write_text(f"""
daemon off;
master_process off;  # one process, as the user running the test: nothing needs root
pid {directory}/nginx.pid;
error_log {directory}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log {directory}/access.log;
    client_body_temp_path {temp['body']};
    proxy_temp_path {temp['proxy']};
    fastcgi_temp_path {temp['fastcgi']};
    uwsgi_temp_path {temp['uwsgi']};
    scgi_temp_path {temp['scgi']};
{snippet}
}}
""", encoding="utf-8")
    return path


@pytest.fixture
def replicas(fake_ollama: FakeOllama, tmp_path: Path) -> Iterator[tuple[int, int]]:
    config = write_config(fake_ollama, tmp_path, extra='\n[server]\ntoken_env = "MCP_LLM_TOKEN"\n')
    ports = (free_port(), free_port())
    processes = [subprocess.Popen(
        [sys.executable, "-m", "mcp_llm", "serve", "--config", str(config), "--transport", "http", "--stateless",
         "--port", str(port)],
        env=subprocess_env({"MCP_LLM_TOKEN": TOKEN}), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    ) for port in ports]
    try:
        for port, process in zip(ports, processes, strict=True):
            wait_listening(port, process, timeout_s=60)
        yield ports
    finally:
        for process in processes:
            stderr = stop(process)
            assert TOKEN.encode() not in stderr
            assert b"Traceback" not in stderr, stderr.decode()[-2000:]


@pytest.fixture
def nginx(replicas: tuple[int, int], tmp_path: Path) -> Iterator[str]:
    if NGINX is None:
        pytest.skip("nginx is not installed (apt-get install nginx; .ci/run installs it)")
    port = free_port()
    directory = tmp_path / "nginx"
    conf = nginx_conf(directory, replicas, port)
    process = subprocess.Popen([NGINX, "-p", str(directory), "-e", str(directory / "error.log"), "-c", str(conf)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_listening(port, process, timeout_s=20)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        stop(process)


async def test_two_stateless_replicas_behind_nginx(nginx: str, replicas: tuple[int, int]) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    answered: list[Any] = []

    async def worker(count: int) -> None:
        async with (httpx2.AsyncClient(headers=auth, timeout=30) as http,
                    Client(streamable_http_client(nginx, http_client=http)) as client):
            for _ in range(count):
                result = await client.call_tool("generate_structured", {"prompt": "n?", "schema": schema})
                assert not result.is_error, result.content
                answered.append(result.structured_content)

    with anyio.fail_after(240):
        async with anyio.create_task_group() as tg:
            for _ in range(CONCURRENCY):
                tg.start_soon(worker, CALLS // CONCURRENCY)
    assert len(answered) == CALLS
    assert all(isinstance(r["data"]["n"], int) and r["provider"] == "ollama" for r in answered)

    served = []
    for port in replicas:  # each replica's own count, read from it directly
        async with (httpx2.AsyncClient(headers=auth, timeout=30) as http,
                    Client(streamable_http_client(f"http://127.0.0.1:{port}/mcp", http_client=http)) as client):
            served.append((await stats_of(client))["calls"]["successes"])
    assert sum(served) == CALLS and all(count > 0 for count in served), served

    async with httpx2.AsyncClient(timeout=10) as http:  # without the token, nginx passes on the 401
        refused = await http.post(nginx, json=INITIALIZE, headers={
            "Accept": "application/json, text/event-stream", "Content-Type": "application/json"})
    assert refused.status_code == 401


async def test_the_status_page_behind_nginx_keeps_the_token_out_of_its_log(nginx: str, tmp_path: Path) -> None:
    """README's `location /status`: the page, its data with the token (401 without), and the token in no line
    of nginx's access log (the page sends it as a header, never in a URL)."""
    base = nginx.removesuffix("/mcp")
    async with httpx2.AsyncClient(timeout=30) as http:
        page = await http.get(f"{base}/status")
        refused = await http.get(f"{base}/status.json")
        data = await http.get(f"{base}/status.json", headers={"Authorization": f"Bearer {TOKEN}"})
        chart = await http.get(f"{base}/status/chart/calls.svg", headers={"Authorization": f"Bearer {TOKEN}"})
    assert page.status_code == 200 and "content-security-policy" in page.headers
    assert refused.status_code == 401
    assert data.status_code == 200 and {row["provider"] for row in data.json()["providers"]} >= {"ollama"}
    assert chart.status_code == 200 and chart.text.startswith("<svg")
    access = tmp_path / "nginx" / "access.log"
    with anyio.fail_after(10):  # nginx writes a request's line once the response is sent: it may come after
        while "GET /status/chart/calls.svg" not in (log := access.read_text(encoding="utf-8")):
            await anyio.sleep(0.05)
    assert "GET /status.json" in log and "GET /status/chart/calls.svg" in log
    assert TOKEN not in log
