"""The real engine for tests/real: one llama-server for the whole session (built and cached on first use).

If the engine cannot be had on this machine, every test here skips with the reason (the same
reason `.ci/run` prints after `python -m tests.real.backend prepare`).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters

from tests.real.backend import MODEL_ALIAS, LlamaServer, Prepared, Unavailable, prepare
from tests.stdio_harness import REPO_ROOT, server_args, subprocess_env

ANTHROPIC_KEY = "sk-ant-local-unused-0099"  # llama-server takes any key; the SDK wants one
CALL_TIMEOUT_S = 180.0
LOCAL_ID = f"llamacpp/{MODEL_ALIAS}"
ANTHROPIC_ID = f"anthropic/{MODEL_ALIAS}"


REAL_TEST_TIMEOUT_S = 3600


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).is_relative_to(here):
            item.add_marker(pytest.mark.real)
            # a real model on a busy 2-core machine, and on a fresh one the first test's fixture builds
            # llama-server (minutes): the suite's 120 s per test is too short here
            item.add_marker(pytest.mark.timeout(REAL_TEST_TIMEOUT_S))


@pytest.fixture(scope="session")
def prepared() -> Prepared:
    started = time.perf_counter()
    try:
        found = prepare()
    except Unavailable as exc:
        pytest.skip(f"real engine unavailable: {exc}")
    print(f"\nreal engine ready in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return found


@pytest.fixture(scope="session")
def llama(prepared: Prepared, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    log = tmp_path_factory.mktemp("llama") / "llama-server.log"
    try:
        server = LlamaServer(prepared, parallel=2, context=2048, log_path=log).start()
    except Unavailable as exc:
        pytest.skip(f"real engine unavailable: {exc}")
    yield server
    server.stop()


def real_config(directory: Path, url: str, extra: str = "", *, defaults: str = "") -> Path:
    """A config routing `llamacpp/…` (OpenAI-compatible) and `anthropic/…` (Messages API) to `url`."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "config.toml"
    path.write_text(f"""
[defaults]
model = "{LOCAL_ID}"
timeout_s = 120
max_retries = 2
max_repairs = 2
{defaults}

[providers.openai_compatible.llamacpp]
endpoint = "{url}/v1"
models = ["{MODEL_ALIAS}"]
concurrency = 8

[providers.anthropic]
endpoint = "{url}"
concurrency = 8
{extra}
""", encoding="utf-8")
    return path


def connect(config: Path) -> Client:
    """An MCP client on `python -m mcp_llm serve` over stdio, as an assistant runs it."""
    params = StdioServerParameters(command=sys.executable, args=server_args(config),
                                   env=subprocess_env({"ANTHROPIC_API_KEY": ANTHROPIC_KEY}), cwd=str(REPO_ROOT))
    return Client(params, read_timeout_seconds=CALL_TIMEOUT_S)  # type: ignore[arg-type]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say how long the real-engine tests took (CI's output shows it), or why they skipped."""
    reports = [r for found in terminalreporter.stats.values() for r in found
               if "tests/real/" in getattr(r, "nodeid", "") and hasattr(r, "duration")]
    if not reports:
        return
    seconds = sum(r.duration for r in reports)  # setup (server start, a build if not prepared), calls, teardown
    ran = {r.nodeid for r in reports if r.when == "call"}
    skipped = [r for r in reports if r.skipped]
    line = f"real-engine tests (tests/real): {len(ran)} ran, {len(skipped)} skipped, {seconds:.1f} s in all"
    terminalreporter.write_line(line)
    if skipped and isinstance(skipped[0].longrepr, tuple):
        terminalreporter.write_line(f"  skipped because: {skipped[0].longrepr[2]}")
