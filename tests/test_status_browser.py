"""The status page in a real browser: Debian's chromium, driven by Playwright, on a running server.

`mcp-llm serve --transport http` runs as a subprocess on every provider's fake (tests/status_harness.py),
with a bearer token. The page is opened as a user opens it, `/status#token=…`; the test makes calls
through a real MCP client between two looks at it, and checks what a user sees: the providers, drawn
charts, the numbers moving without a reload, an open circuit; and what a user cannot see: that the
page asks no host but its own, logs no console error, and holds no data without the token; and that
the token is in no line the server logged.

The screenshot of the page lands in `test-artifacts/status-page.png` (git-ignored);
`MCP_LLM_UPDATE_SCREENSHOT=1` also writes it to `docs/status-page.png`, the one README shows.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.ollama_server import FakeModel, FakeOllama
from tests.fleet import Fakes
from tests.status_harness import CIRCUIT_FAILURES, TOKEN, StatusServer, status_server
from tests.stdio_harness import REPO_ROOT

CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if Path(p).exists()), None)
ARTIFACTS = REPO_ROOT / "test-artifacts"
SCREENSHOT = REPO_ROOT / "docs" / "status-page.png"
WAIT_MS = 30_000

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium; .ci/run does)"),
]


@pytest.fixture(scope="module")
def second_ollama() -> Iterator[FakeOllama]:
    """Ollama's second host (the first is the fleet's fake), stopped by the test that takes it down."""
    with FakeOllama([FakeModel("llama3.2:3b")]) as fake:
        yield fake


@pytest.fixture(scope="module")
def server(running_fakes: Fakes, second_ollama: FakeOllama,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[StatusServer]:
    for fake in running_fakes.all():
        fake.reset()
    hosts = [running_fakes.ollama.url, second_ollama.url]
    with status_server(running_fakes, tmp_path_factory.mktemp("status"), ollama_hosts=hosts) as running:
        yield running
    log = running.stderr()
    assert f"status page at {running.origin}/status#token=<the token in $MCP_LLM_TOKEN>" in log
    assert "GET /status.json" in log, "the access log is off: the token check below would prove nothing"
    assert TOKEN not in log, "the token is in the server's log"
    assert "Traceback" not in log, log[-3000:]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield launched
        launched.close()


@dataclass
class Watched:
    """A page with everything it asked for and every console error or uncaught exception it had."""

    page: Any
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def foreign(self, origin: str) -> list[str]:
        return [url for url in self.requests if not url.startswith((f"{origin}/", "blob:"))]


@pytest.fixture
def watched(browser: Any) -> Iterator[Watched]:
    context = browser.new_context(viewport={"width": 1360, "height": 900}, device_scale_factor=1)
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    seen = Watched(page)
    page.on("request", lambda request: seen.requests.append(request.url))
    page.on("console", lambda message: seen.errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: seen.errors.append(f"uncaught: {error}"))
    yield seen
    context.close()


def until(page: Any, expression: str, timeout_s: float = WAIT_MS / 1000) -> None:
    """Poll a JavaScript expression until it is true. Not `page.wait_for_function`: that evaluates its
    string inside the page, which the page's Content-Security-Policy rightly forbids (no eval)."""
    deadline = time.monotonic() + timeout_s
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"still false after {timeout_s} s: {expression}"
        page.wait_for_timeout(100)


def refreshes(page: Any) -> int:
    return int(page.evaluate("Number(document.body.dataset.refreshed || 0)"))


def wait_refreshed_after(page: Any, count: int) -> None:
    until(page, f"Number(document.body.dataset.refreshed || 0) > {count}")


def cell_texts(page: Any, row_selector: str) -> list[str]:
    return [text.strip() for text in page.locator(f"{row_selector} td").all_inner_texts()]


def host_row(page: Any, url: str) -> list[str]:
    return cell_texts(page, f'tr.host[data-host="{url}"]')


def test_the_page_shows_the_fleet_moves_by_itself_and_shows_an_open_circuit(
        server: StatusServer, watched: Watched, running_fakes: Fakes, second_ollama: FakeOllama) -> None:
    for model, times in (("ollama/llama3.2:3b", 3), ("openai/gpt-4.1-mini", 2), ("claude-haiku-4-5", 2),
                         ("lmstudio/local-model", 1)):
        results = server.generate(model, times)
        assert all("error" not in r for r in results), results
    page = watched.page
    page.goto(f"{server.page}#token={TOKEN}")
    wait_refreshed_after(page, 0)

    assert "#token" not in page.url and TOKEN not in page.url, "the token stays in the address bar"
    shown = {row.get_attribute("data-provider") for row in page.locator("tr.provider").all()}
    assert shown == {"ollama", "gemini", "anthropic", "openai", "lmstudio"}
    assert cell_texts(page, 'tr[data-provider="ollama"]')[1] == "ok"
    first, second = running_fakes.ollama.url, second_ollama.url
    assert host_row(page, first)[1] == "ok" and host_row(page, second)[1] == "ok"  # a row per host
    loaded = [url for url, fake in ((first, running_fakes.ollama), (second, second_ollama)) if fake.loaded]
    assert loaded, "no host loaded the model"
    until(page, f"document.querySelector('tr.host[data-host=\"{loaded[0]}\"] td.loaded').textContent"
                ".includes('llama3.2:3b')")
    assert cell_texts(page, 'tr[data-model="ollama/llama3.2:3b"]')[2] == "3"
    for name in ("latency", "calls", "failures", "cost"):  # every chart is an image the browser drew
        until(page, f"document.getElementById('chart-{name}').naturalWidth > 0")
        assert page.get_attribute(f"#chart-{name}", "src").startswith("blob:")
    priced = cell_texts(page, 'tr[data-model="claude-haiku-4-5"]')[8]  # the price library knows this model
    assert priced.startswith("$") and priced != "$0", priced
    assert "cost since start" in page.inner_text("#tiles")
    cost = httpx.get(f"{server.page}/chart/cost.svg", headers=server.auth(), timeout=30).text
    assert "claude-haiku-4-5" in cost and "$0.0" in cost  # a bar per priced model, dollars on the axis
    latency = httpx.get(f"{server.page}/chart/latency.svg", headers=server.auth(), timeout=30).text
    assert 'class="dot reactive' in latency and "ollama/llama3.2:3b p95" in latency  # a point per model and minute
    page.evaluate("window.notReloaded = true")

    before = refreshes(page)
    server.generate("ollama/llama3.2:3b", 4)
    until(page, "document.querySelector('tr[data-model=\"ollama/llama3.2:3b\"] td:nth-child(3)').textContent === '7'")
    wait_refreshed_after(page, before)
    assert page.evaluate("window.notReloaded === true"), "the page reloaded"

    second_ollama.stop()  # a host goes away: its row says so, the provider is degraded, calls go to the other
    until(page, f"document.querySelector('tr.host[data-host=\"{second}\"] td:nth-child(2)').textContent === 'down'")
    assert "1 / 2" in page.inner_text("#tiles") and "hosts up" in page.inner_text("#tiles")
    assert cell_texts(page, 'tr[data-provider="ollama"]')[1] == "degraded"
    assert all("error" not in r for r in server.generate("ollama/llama3.2:3b", 2))

    for _ in range(CIRCUIT_FAILURES):
        running_fakes.gemini.enqueue(status=500, error="simulated outage")
    failed = server.generate("gemini-2.5-flash", CIRCUIT_FAILURES + 1)
    assert all("error" in r for r in failed)
    until(page, "document.querySelector('tr[data-provider=\"gemini\"] td:nth-child(3)').textContent === 'open'")
    assert "circuits open: gemini" in page.inner_text("#tiles")
    assert page.locator('tr[data-provider="gemini"] td:nth-child(3) .pill.open').count() == 1

    # The charts drawn again by a refresh that began after the outage (at most 15 s after the data changed)
    after_outage = refreshes(page)
    until(page, f"Number(document.body.dataset.chartsInRefresh || -1) >= {after_outage}", timeout_s=45)
    until(page, "document.getElementById('chart-failures').naturalWidth > 0")
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "status-page.png"
    page.screenshot(path=str(shot), full_page=True)
    if os.environ.get("MCP_LLM_UPDATE_SCREENSHOT") == "1":  # README's copy: 64 colours, a fraction of the bytes
        from PIL import Image

        SCREENSHOT.parent.mkdir(exist_ok=True)
        with Image.open(shot) as image:
            image.convert("RGB").quantize(colors=64, method=Image.Quantize.FASTOCTREE).save(SCREENSHOT, optimize=True)

    assert watched.foreign(server.origin) == []
    assert f"{server.origin}/status.json" in watched.requests
    assert not [url for url in watched.requests if TOKEN in url], "the token went out in a URL"
    assert watched.errors == []


def test_without_the_token_the_page_holds_no_data(server: StatusServer, watched: Watched) -> None:
    server.generate("ollama/llama3.2:3b", 1)
    page = watched.page
    page.goto(server.page)
    page.wait_for_selector("#notice:not([hidden])")
    text = page.inner_text("body")
    assert "needs the server's token" in text and "#token=" in text
    html = page.content()
    for data in ("llama3.2", "ollama", "gpt-4.1-mini", "gemini"):  # no provider, no model, nothing of the fleet
        assert data not in html, f"{data} is on the tokenless page"
    assert page.locator("#providers tr").count() == 0
    page.wait_for_timeout(500)  # give a wrong page time to ask anyway
    assert [url for url in watched.requests if "/status.json" in url or "/chart/" in url] == []
    assert watched.foreign(server.origin) == []
    assert watched.errors == []

    page.evaluate("window.notReloaded = true")  # the user adds the token to the address: no reload happens
    page.goto(f"{server.page}#token={TOKEN}")
    wait_refreshed_after(page, 0)
    assert page.evaluate("window.notReloaded === true") and TOKEN not in page.url
    assert page.locator("tr.provider").count() == 5 and page.is_hidden("#notice")
    assert watched.errors == []


def test_a_wrong_token_is_refused_and_forgotten(server: StatusServer, watched: Watched) -> None:
    page = watched.page
    page.goto(f"{server.page}#token=not-the-token")
    page.wait_for_selector("#notice.error:not([hidden])")
    assert "refused this token" in page.inner_text("#notice")
    assert page.locator("#providers tr").count() == 0
    assert page.evaluate("sessionStorage.getItem('mcp-llm-status-token')") is None
    page.goto(f"{server.page}#token={TOKEN}")  # then the right one, typed into the address
    wait_refreshed_after(page, 0)
    assert page.locator("tr.provider").count() == 5 and page.is_hidden("#notice")
    assert watched.foreign(server.origin) == []
