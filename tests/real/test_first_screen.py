"""README's first screen on a newcomer's machine: no config file, no key, no sampling client, no Ollama;
a llama-server started as the README says (a model file, no alias), then the README's own `mcp-llm call`.

The server goes on llama-server's default port, 8080, when that port is free here, and then nothing
tells mcp-llm where it is: it finds it by itself. When 8080 is taken, it goes on a free port and
MCP_LLM_DISCOVERY says where (the one thing the test cannot do as a user would). Times are printed.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import jsonschema

from tests.conftest import free_port
from tests.real.backend import LlamaServer, Prepared
from tests.stdio_harness import REPO_ROOT, subprocess_env
from tests.test_readme_cli import first_screen_call

LLAMA_SERVER_PORT = 8080


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_the_readmes_first_screen_gives_valid_data_with_nothing_configured(prepared: Prepared, tmp_path: Path) -> None:
    argv = first_screen_call()
    schema = json.loads(argv[argv.index("--schema") + 1])
    on_default_port = port_is_free(LLAMA_SERVER_PORT)
    port = LLAMA_SERVER_PORT if on_default_port else free_port()
    started = time.perf_counter()
    server = LlamaServer(prepared, port=port, alias=None, log_path=tmp_path / "llama-server.log").start()
    ready_s = time.perf_counter() - started
    env = {"XDG_CONFIG_HOME": str(tmp_path / "no-config"), "HOME": str(tmp_path)}  # no ~/.config/mcp-llm either
    if not on_default_port:
        env["MCP_LLM_DISCOVERY"] = f"llamacpp={server.url}/v1"
    call_env = subprocess_env(env)
    if on_default_port:  # as a user has it: nothing says where to look
        call_env.pop("MCP_LLM_DISCOVERY", None)
    try:
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "mcp_llm", *argv], capture_output=True, text=True, timeout=300,
                              env=call_env, cwd=str(REPO_ROOT))
        call_s = time.perf_counter() - started
    finally:
        server.stop()
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    jsonschema.validate(result["data"], schema, cls=jsonschema.Draft202012Validator)
    model = f"llamacpp/{prepared.model.name}"  # llama-server lists the file's path; its name stands in
    assert result["model"] == model and result["provider"] == "llamacpp"
    assert f"no model given or configured: using {model}, served by the llama-server found at " in done.stderr
    print(f"\nfirst screen: llama-server ready in {ready_s:.1f} s on port {port}"
          f"{' (found by itself)' if on_default_port else ' (MCP_LLM_DISCOVERY)'}; `mcp-llm call` took {call_s:.1f} s "
          f"(the model: {result['latency_ms'] / 1000:.1f} s); data {json.dumps(result['data'])}")
