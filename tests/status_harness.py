"""A running `mcp-llm serve --transport http` on every provider's fake, for the status page's tests.

The server is a real subprocess, started as a user starts it, with the bearer token in the variable
`server.token_env` names; its stderr (logs, uvicorn's access lines at INFO) goes to a file the test
reads afterwards, to check that the token is in no line. Calls go through a real MCP client over
streamable HTTP, each batch in a thread of its own with its own event loop, so that a test driving a
browser with Playwright's sync API (which keeps an event loop of its own in the main thread) can
make calls between two looks at the page.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.conftest import free_port
from tests.fleet import ENV, SCHEMA, Fakes, config_text
from tests.stdio_harness import subprocess_env
from tests.test_http import wait_listening

TOKEN = "status-canary-token-5150"
CIRCUIT_FAILURES = 2


@dataclass
class StatusServer:
    origin: str  # http://127.0.0.1:<port>
    token: str | None
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def page(self) -> str:
        return f"{self.origin}/status"

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def generate(self, model: str, times: int = 1) -> list[dict[str, Any]]:
        """`times` calls of `generate_structured` on `model`; each result's structured content, or its
        error text under `error` (a failing provider is part of what the page must show)."""
        out: list[dict[str, Any]] = []

        async def run() -> None:
            with anyio.fail_after(60):
                async with (httpx2.AsyncClient(headers=self.auth(), timeout=30) as http,
                            Client(streamable_http_client(f"{self.origin}/mcp", http_client=http)) as client):
                    for _ in range(times):
                        result = await client.call_tool("generate_structured", {
                            "prompt": "A French city, please.", "schema": SCHEMA, "model": model})
                        out.append({"error": str(result.content)} if result.is_error else result.structured_content)

        failure: list[BaseException] = []

        def thread() -> None:
            try:
                anyio.run(run)
            except BaseException as exc:
                failure.append(exc)

        worker = threading.Thread(target=thread)
        worker.start()
        worker.join(90)
        assert not worker.is_alive(), "the MCP calls did not finish"
        if failure:
            raise failure[0]
        return out

    def stderr(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


@contextmanager
def status_server(fakes: Fakes, directory: Path, *, token: str | None = TOKEN, extra: str = "",
                  endpoints: dict[str, str] | None = None,
                  ollama_hosts: list[str] | None = None, env: dict[str, str] | None = None) -> Iterator[StatusServer]:
    """The server on every fake (tests/fleet.py's config, `endpoints` replacing some providers' URLs) with a
    circuit that opens after two failures; `ollama_hosts` puts Ollama on several hosts (each asked every 0.5 s)."""
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "config.toml"
    defaults = f"circuit_failures = {CIRCUIT_FAILURES}\ncircuit_cooldown_s = 600"
    text = config_text(fakes, max_retries=0, max_repairs=1, defaults=defaults, endpoints=endpoints)
    if ollama_hosts:
        single = f'[providers.ollama]\nendpoint = "{fakes.url("ollama")}"\n'
        assert single in text
        listed = ", ".join(f'"{host}"' for host in ollama_hosts)
        text = text.replace(single, f"[providers.ollama]\nhosts = [{listed}]\nhosts_refresh_s = 0.5\n")
    if token is not None:
        text += '\n[server]\ntoken_env = "MCP_LLM_TOKEN"\n'
    config.write_text(text + extra, encoding="utf-8")
    port = free_port()
    log = directory / "server.stderr"
    env = subprocess_env({**ENV, **({"MCP_LLM_TOKEN": token} if token else {}), **(env or {})})
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "mcp_llm", "--config", str(config), "--log-level", "INFO", "serve",
             "--transport", "http", "--port", str(port)],
            env=env, stdout=subprocess.PIPE, stderr=sink,
        )
    server = StatusServer(f"http://127.0.0.1:{port}", token, process, log)
    try:
        wait_listening(port, process, timeout_s=60)
        yield server
    finally:
        process.terminate()
        try:
            stdout, _ = process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, _ = process.communicate(timeout=10)
        assert stdout == b"", f"the HTTP server wrote to stdout: {stdout[:200]!r}"
