"""What the benchmarks share: fakes in their own processes, server configs, the bare baseline
server, interleaved rounds and the min/median/max summaries.

Every benchmark holds what it measures against a baseline measured in the same run, in rounds
that alternate the paths (A, B, A, B, …, and the order rotates from round to round), and prints
the ratio of each round with its min, median and max over the rounds: load on the machine then
hits both sides alike, and the spread says how much to trust the figure.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

API_KEY = "bench-key"  # what the fakes of the cloud providers accept; loopback only
PROVIDERS = ("ollama", "gemini", "anthropic")
MODELS = {"ollama": "llama3.2:3b", "gemini": "gemini-2.5-flash", "anthropic": "claude-haiku-4-5",
          "openai": "gpt-4.1-mini"}  # openai: bench/concurrency.py --provider openai, on the fast fake
MODEL_IDS = {"ollama": "ollama/llama3.2:3b", "gemini": "gemini/gemini-2.5-flash", "anthropic": "claude-haiku-4-5",
             "openai": "openai/gpt-4.1-mini"}
KEY_ENV = {"gemini": "GEMINI_API_KEY", "anthropic": "ANTHROPIC_API_KEY", "openai": "OPENAI_API_KEY"}

PROMPT = "Invent a film and describe it."
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "title": {"type": "string"},
        "year": {"type": "integer"},  # no bounds: Anthropic's dialect drops them, and its fake would answer 0
        "genres": {"type": "array", "items": {"type": "string"}, "minItems": 1},
    },
    "required": ["title", "year", "genres"],
    "additionalProperties": False,
}

BARE_SERVER = '''\
import asyncio

from mcp.server.mcpserver import MCPServer

server = MCPServer("bare")


@server.tool()
async def ping() -> str:
    """Answer pong."""
    return "pong"


@server.tool()
async def wait(ms: float) -> str:
    """Answer pong after `ms` milliseconds: the MCP hop of a call whose backend takes that long."""
    await asyncio.sleep(ms / 1000)
    return "pong"


if __name__ == "__main__":
    server.run()
'''

# Only what a process needs; no provider keys or MCP_LLM_CONFIG leak in from the caller's environment.
_INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "SYSTEMROOT", "TERM", "PYTHONPATH")


@functools.cache
def fresh_bytecode() -> None:
    """mcp_llm's modules compiled to `__pycache__` as `pip install` leaves them: the children run with
    PYTHONDONTWRITEBYTECODE, so a fresh clone (or a module edited since) would otherwise be compiled
    from source at every start, which a user's installed server never does (it cost 88 M instructions,
    3 % of a cold start, with three stale modules)."""
    import compileall

    compileall.compile_dir(REPO_ROOT / "mcp_llm", quiet=1)


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    fresh_bytecode()
    env = {key: os.environ[key] for key in _INHERITED if key in os.environ}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env | (extra or {})


@contextlib.contextmanager
def fake_process(provider: str, *, delay_s: float = 0.0, fast: bool = False) -> Iterator[str]:
    """A fake provider in its own process (see _fake_server.py / _fast_ollama.py); yields its URL."""
    script = "_fast_ollama.py" if fast else "_fake_server.py"
    command = [sys.executable, str(REPO_ROOT / "bench" / script), provider, "--delay-s", str(delay_s)]
    with subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=child_env(),
                          cwd=REPO_ROOT, text=True) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        try:
            url = proc.stdout.readline().strip()
            if not url.startswith("http://"):
                raise RuntimeError(f"the fake {provider} did not start: {url!r}")
            yield url
        finally:
            proc.stdin.close()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def config_text(provider: str, url: str, *, concurrency: int = 4) -> str:
    """A config whose default model is `provider`'s, on the fake at `url`."""
    section = f"""
[providers.{provider}]
endpoint = "{url}"
concurrency = {concurrency}
"""
    if provider == "ollama":
        section += f'\n[[providers.ollama.models]]\nid = "{MODELS["ollama"]}"\n'
    return f"""
[defaults]
model = "{MODEL_IDS[provider]}"
max_retries = 0
max_repairs = 0
timeout_s = 60
{section}"""


def server_env(provider: str) -> dict[str, str]:
    return child_env({KEY_ENV[provider]: API_KEY} if provider in KEY_ENV else {})


@contextlib.contextmanager
def scratch_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="mcp-llm-bench-") as scratch:
        yield Path(scratch)


def write_bare_server(directory: Path) -> Path:
    path = directory / "bare_server.py"
    path.write_text(BARE_SERVER, encoding="utf-8")
    return path


def write_config(directory: Path, provider: str, url: str, *, concurrency: int = 4) -> Path:
    path = directory / f"{provider}.toml"
    path.write_text(config_text(provider, url, concurrency=concurrency), encoding="utf-8")
    return path


def serve_args(config: Path) -> list[str]:
    return ["-m", "mcp_llm", "--config", str(config), "serve"]


# --- rounds and summaries ------------------------------------------------------------------------


@dataclass
class Series:
    """One figure per round (e.g. a round's median ms per call)."""

    values: list[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        self.values.append(value)

    @property
    def median(self) -> float:
        return statistics.median(self.values)


def spread(values: Sequence[float], unit: str = "", digits: int = 2) -> str:
    """`median (min–max)` of a list."""
    if not values:
        return "n/a"
    return (f"{statistics.median(values):.{digits}f}{unit} "
            f"(min {min(values):.{digits}f}, max {max(values):.{digits}f})")


def rotated(items: Sequence[Any], round_: int) -> list[Any]:
    """The paths in a different order each round, so none always runs first after a pause."""
    shift = round_ % len(items)
    return [*items[shift:], *items[:shift]]


def vm_rss_kb(pid: int | None = None) -> int | None:
    """VmRSS of a process, from /proc (Linux)."""
    try:
        with open(f"/proc/{pid or 'self'}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def child_pids() -> list[int]:
    """This process's children, from /proc (to find a stdio server's pid)."""
    me, found = os.getpid(), []
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as stat:
                    if int(stat.read().rsplit(")", 1)[1].split()[1]) == me:
                        found.append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    return found


def load_average() -> str:
    try:
        return ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def machine_line() -> str:
    import platform
    from importlib import metadata

    versions = ", ".join(f"{name} {metadata.version(name)}" for name in ("mcp", "ollama", "mcp-llm"))
    return (f"Python {platform.python_version()} on {platform.platform()}, {os.cpu_count()} CPUs; {versions}; "
            f"load average {load_average()}")


def check_result(result: Any, what: str) -> None:
    if result.is_error:
        raise RuntimeError(f"{what} failed: {result.content}")


def delay_tag(delay_s: float) -> str:
    """Put in a prompt, asks the fake to wait that long before answering (see _fake_server.py)."""
    return f"[delay_ms={round(delay_s * 1000)}]"


DELAY_TAG = re.compile(r"\[delay_ms=(\d+)\]")


def delay_in(body: Any) -> float:
    found = DELAY_TAG.search(json.dumps(body))
    return int(found.group(1)) / 1000 if found else 0.0
