"""Run the server the way a user does: `python -m mcp_llm --config <file> serve`, a real subprocess.

The helpers here write a config file that points the subprocess at a fake Ollama running in
the calling process, and build the command line and a minimal environment for it. They are
shared by tests/test_stdio.py, tests/test_inspector.py and bench/cold_start.py.

As a script it is a playground for poking the server by hand (with the MCP Inspector, say):

    python -m tests.stdio_harness [DIR]

starts a fake Ollama, writes DIR/config.toml pointing at it (DIR defaults to a temp dir),
prints the commands to try, and serves until Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import sys
import tempfile
import threading
from pathlib import Path

from tests.conftest import ollama_config
from tests.fakes.ollama_server import FakeOllama

REPO_ROOT = Path(__file__).resolve().parents[1]

# TEST-NET-1 (RFC 5737): nothing answers there, so a connection attempt would hang until its
# timeout instead of failing fast. A server that touched the network at startup would show it.
UNREACHABLE_ENDPOINT = "http://192.0.2.1:11434"

# Only what a process needs to run; no provider keys, OLLAMA_HOST or MCP_LLM_CONFIG leak in.
_INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "SYSTEMROOT", "TERM")


def write_config(fake: FakeOllama, directory: Path, extra: str = "") -> Path:
    """`directory/config.toml` routing Ollama to `fake` (the same config the in-process tests use)."""
    directory.mkdir(parents=True, exist_ok=True)
    image_root = directory / "images"
    image_root.mkdir(exist_ok=True)
    path = directory / "config.toml"
    path.write_text(ollama_config(fake, image_root, extra), encoding="utf-8")
    return path


def write_unreachable_config(directory: Path) -> Path:
    """A config whose only provider points where nothing answers (for cold-start timing)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "unreachable.toml"
    path.write_text(
        f"""
[defaults]
model = "ollama/llama3.2:3b"

[providers.ollama]
endpoint = "{UNREACHABLE_ENDPOINT}"

[[providers.ollama.models]]
id = "llama3.2:3b"
""",
        encoding="utf-8",
    )
    return path


def server_args(config: Path, *options: str) -> list[str]:
    """Arguments for `sys.executable`: run the server on stdio with `config`."""
    return ["-m", "mcp_llm", *options, "--config", str(config), "serve"]


def subprocess_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """A minimal environment for the server subprocess, plus `extra`."""
    env = {key: os.environ[key] for key in _INHERITED if key in os.environ}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    # No looking for model servers on this machine's usual ports (a developer's llama-server on 8080
    # would answer a test's call); Ollama is still looked for at the config's own endpoint.
    env["MCP_LLM_DISCOVERY"] = "llamacpp=http://127.0.0.1:9/v1"
    return env | (extra or {})


def main(argv: list[str]) -> int:
    directory = Path(argv[0]) if argv else Path(tempfile.mkdtemp(prefix="mcp-llm-harness-"))
    with FakeOllama() as fake:
        config = write_config(fake, directory)
        command = shlex.join([sys.executable, *server_args(config)])
        print(f"fake Ollama on {fake.url}; config written to {config}")
        print(f"  server:     {command}")
        print(f"  inspector:  npx --no-install mcp-inspector --cli -- {command} --method tools/list")
        print("Ctrl-C to stop.", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
