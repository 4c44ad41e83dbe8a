"""`GET /status`, `/status.json` and the charts over real HTTP, on a running `mcp-llm serve --transport http`.

What a script or a browser gets: the data only with the bearer token (whenever one is configured),
the page without it and with no data in it, a Content-Security-Policy that allows the page's own
inline script and style by hash and nothing else, the same Host/Origin checks as /mcp, and no
secret anywhere (keys only as `has_api_key`, endpoints without their credentials). The page in a
real browser is tests/test_status_browser.py.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.fleet import ENV, Fakes
from tests.redis_server import REDIS_SERVER, RedisServer
from tests.status_harness import TOKEN, StatusServer, status_server

pytestmark = pytest.mark.timeout(180)

PASSWORD = "hunter2-in-the-url"


@pytest.fixture(scope="module")
def server(running_fakes: Fakes, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StatusServer]:
    for fake in running_fakes.all():
        fake.reset()
    with status_server(running_fakes, tmp_path_factory.mktemp("status")) as running:
        running.generate("ollama/llama3.2:3b", 2)
        yield running
    assert TOKEN not in running.stderr()


def get(server: StatusServer, path: str, **headers: str) -> httpx.Response:
    return httpx.get(f"{server.origin}{path}", headers=headers, timeout=60)


@pytest.mark.parametrize("path", ["/status.json", "/status/chart/latency.svg"])
@pytest.mark.parametrize("authorization", [None, "Bearer not-the-token", f"Basic {TOKEN}", TOKEN, f"Bearer {TOKEN}x"])
def test_the_data_is_refused_without_the_token(server: StatusServer, path: str, authorization: str | None) -> None:
    response = get(server, path, **({"Authorization": authorization} if authorization else {}))
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert "#token=" in response.json()["error"]
    assert "llama" not in response.text and TOKEN not in response.text


def test_the_data_with_the_token(server: StatusServer) -> None:
    response = get(server, "/status.json", **server.auth())
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    data = response.json()
    providers = {row["provider"]: row for row in data["providers"]}
    assert set(providers) == {"ollama", "gemini", "anthropic", "openai", "lmstudio"}  # not the per-session client
    assert providers["ollama"]["status"] == "ok" and providers["ollama"]["circuit"] == "closed"
    assert providers["ollama"]["usage"]["calls"] >= 2
    assert providers["anthropic"]["has_api_key"] is True and providers["ollama"]["has_api_key"] is False
    assert data["summary"]["ok"] == 5 and data["summary"]["circuits_not_closed"] == {}
    (model,) = [m for m in data["models"] if m["id"] == "ollama/llama3.2:3b"]
    assert model["calls"] >= 2 and model["success_rate"] == 1.0 and model["latency_ms"]["p95"] > 0
    minutes = data["history"]["minutes"]
    assert len(minutes) == 60 and data["history"]["minute_s"] == 60
    now = minutes[-1]["models"]["ollama/llama3.2:3b"]
    assert now["calls"] >= 2 and now["failures"] == 0 and now["latency_ms"]["p50"] > 0
    assert minutes[-1]["providers"]["ollama"]["calls"] >= 2


def test_no_secret_in_the_data(running_fakes: Fakes, tmp_path: Path) -> None:
    """Keys only as `has_api_key`; an endpoint written with a user, a password or a query shows without them."""
    lmstudio = urlsplit(running_fakes.lmstudio.base_url)
    with_credentials = f"http://user:{PASSWORD}@{lmstudio.netloc}{lmstudio.path}?api_key={PASSWORD}"
    with status_server(running_fakes, tmp_path, endpoints={"lmstudio": with_credentials}) as server:
        text = get(server, "/status.json", **server.auth()).text
        chart = get(server, "/status/chart/calls.svg", **server.auth()).text
    for secret in (*ENV.values(), TOKEN, PASSWORD):
        assert secret not in text, text[max(0, text.find(secret) - 300):text.find(secret) + 50]
        assert secret not in chart
    (row,) = [row for row in httpx.Response(200, text=text).json()["providers"] if row["provider"] == "lmstudio"]
    assert row["endpoint"] == f"http://{lmstudio.netloc}{lmstudio.path}"
    assert row["has_api_key"] is True


def test_a_chart_is_svg_and_an_unknown_one_is_not_found(server: StatusServer) -> None:
    for name in ("latency", "calls", "failures", "cost"):
        response = get(server, f"/status/chart/{name}.svg", **server.auth())
        assert response.status_code == 200 and response.headers["content-type"].startswith("image/svg+xml")
        assert response.text.startswith("<svg") and "<script" not in response.text
        assert not re.search(r'(?:href|src)="(?:https?:)?//', response.text), "the chart points elsewhere"
    assert "ollama/llama3.2:3b p50" in get(server, "/status/chart/latency.svg", **server.auth()).text
    missing = get(server, "/status/chart/nope.svg", **server.auth())
    assert missing.status_code == 404 and "latency" in missing.json()["error"]


def test_the_page_holds_no_data_and_allows_only_itself(server: StatusServer) -> None:
    response = get(server, "/status")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    html = response.text
    for data in ("llama3.2", "ollama", "gemini", "anthropic", "127.0.0.1"):
        assert data not in html
    assert '<meta name="mcp-llm-token-required" content="true">' in html
    policy = dict(part.strip().split(" ", 1) for part in response.headers["content-security-policy"].split(";"))
    assert policy["default-src"] == "'none'" and policy["connect-src"] == "'self'"
    assert policy["img-src"] == "'self' blob:" and policy["frame-ancestors"] == "'none'"
    assert policy["base-uri"] == "'none'" and policy["form-action"] == "'none'"
    for tag, directive in (("script", "script-src"), ("style", "style-src")):
        blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", html, re.S)
        expected = " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(b.encode()).digest()).decode()}'"
                            for b in blocks)
        assert policy[directive] == expected, f"{directive} allows more, or other, than the page's own {tag}"
    assert not re.search(r'(?:href|src)="(?:https?:)?//', html), "the page names another host"
    assert response.headers["x-frame-options"] == "DENY" and response.headers["referrer-policy"] == "no-referrer"
    icon = get(server, "/status/favicon.svg")
    assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg+xml")


@pytest.mark.parametrize("path", ["/status", "/status.json", "/status/chart/calls.svg", "/status/favicon.svg"])
def test_the_host_and_origin_checks_of_mcp_apply(server: StatusServer, path: str) -> None:
    """DNS rebinding: a page on evil.example resolving to us gets nothing, token or not."""
    port = urlsplit(server.origin).port
    rebound = get(server, path, Host=f"evil.example:{port}", **server.auth())
    foreign = get(server, path, Origin="http://evil.example", **server.auth())
    own = get(server, path, Origin=server.origin, **server.auth())
    assert rebound.status_code == 421 and foreign.status_code == 403
    assert own.status_code == 200
    assert "llama" not in rebound.text + foreign.text


def test_an_open_circuit_and_failures_show(server: StatusServer, running_fakes: Fakes) -> None:
    for _ in range(2):
        running_fakes.openai.enqueue(status=500, message="simulated outage")
    assert all("error" in r for r in server.generate("openai/gpt-4.1-mini", 3))
    data = get(server, "/status.json", **server.auth()).json()
    assert data["summary"]["circuits_not_closed"] == {"openai": "open"}
    minute = data["history"]["minutes"][-1]
    assert minute["providers"]["openai"] == {"calls": 3, "failures": 3}
    assert "openai" in get(server, "/status/chart/failures.svg", **server.auth()).text


def test_without_a_configured_token_the_data_is_open_on_loopback(running_fakes: Fakes, tmp_path: Path) -> None:
    with status_server(running_fakes, tmp_path, token=None) as tokenless:
        page = get(tokenless, "/status")
        data = get(tokenless, "/status.json")
        assert '<meta name="mcp-llm-token-required" content="false">' in page.text
        assert data.status_code == 200 and "providers" in data.json()
        log = tokenless.stderr()
    assert f"status page at {tokenless.origin}/status\n" in log


@pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed (apt-get install redis-server)")
def test_with_shared_state_each_replica_shows_the_fleet(running_fakes: Fakes, tmp_path: Path) -> None:
    """Two replicas sharing state in Redis (issue 20): calls through one, the other's page has them all, in
    the usage since start and in the last hour, and says the state is shared."""
    shared = '\n[state]\nredis_url_env = "MCP_LLM_REDIS_URL"\n'
    redis = RedisServer(tmp_path / "redis").start()
    try:
        env = {"MCP_LLM_REDIS_URL": redis.url}
        with status_server(running_fakes, tmp_path / "a", extra=shared, env=env) as first, \
                status_server(running_fakes, tmp_path / "b", extra=shared, env=env) as second:
            first.generate("openai/gpt-4.1-mini", 3)
            second.generate("openai/gpt-4.1-mini", 1)
            deadline = time.monotonic() + 30  # each replica hands its counts to Redis in the background
            while True:
                data = get(second, "/status.json", **second.auth()).json()
                minute = data["history"]["minutes"][-1]["models"].get("openai/gpt-4.1-mini", {})
                model = next((m for m in data["models"] if m["id"] == "openai/gpt-4.1-mini"), {})
                if minute.get("calls") == 4 and model.get("calls") == 4:
                    break
                assert time.monotonic() < deadline, (minute, model)
                time.sleep(0.2)
            assert data["server"]["state"] == "shared"
            assert data["history"]["minutes"][-1]["providers"]["openai"]["calls"] == 4
            assert "openai/gpt-4.1-mini p50" in get(second, "/status/chart/latency.svg", **second.auth()).text
    finally:
        redis.stop()
