"""Start-up imports no provider SDK and opens no connection: `initialize` is as fast as a bare server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SDKS = ("ollama", "anthropic", "google.genai", "openai", "jsonschema", "PIL", "tenacity")

PROBE = f"SDKS = {SDKS!r}\n" + """
import json, sys, anyio
from mcp import Client
from mcp_llm.config import load_settings
from mcp_llm.server import build_server

async def main():
    settings = load_settings(sys.argv[1], env={"GEMINI_API_KEY": "k", "ANTHROPIC_API_KEY": "k"})
    async with Client(build_server(settings)) as client:
        tools = await client.list_tools()
        loaded = [m for m in SDKS if m in sys.modules]
        print(json.dumps({"tools": len(tools.tools), "loaded": loaded}))

anyio.run(main)
"""


def test_initialize_and_list_tools_import_no_sdk(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    # unroutable endpoints: any connection attempt at start-up would hang or fail the probe
    config.write_text('[providers.ollama]\nendpoint = "http://127.0.0.1:9"\n'
                      '[providers.gemini]\nendpoint = "http://127.0.0.1:9"\n'
                      '[providers.anthropic]\nendpoint = "http://127.0.0.1:9"\n')
    done = subprocess.run([sys.executable, "-c", PROBE, str(config)], capture_output=True, text=True, timeout=60,
                          check=True)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["tools"] == 4
    assert report["loaded"] == []


LAZY_PROBE = """
import json, sys, anyio
from mcp import Client
from mcp_llm.config import load_settings
from mcp_llm.server import build_server

async def main():
    server = build_server(load_settings(sys.argv[1], env={}))
    async with Client(server) as client:  # initialize answered
        before = {"router": "mcp_llm.router" in sys.modules,
                  "tools built": len(server._tools_pending._manager.list_tools())}
        tools = await client.list_tools()
        after = {"router": "mcp_llm.router" in sys.modules, "tools": sorted(t.name for t in tools.tools)}
    print(json.dumps({"before": before, "after": after}))

anyio.run(main)
"""


def test_initialize_is_answered_before_the_tools_and_the_router_are_built(tmp_path: Path) -> None:
    """What `initialize` does not need waits for its first use: the tools' pydantic models and schemas are
    built at the first `tools/list` (or call), the router at the first call (issue 23's cold start)."""
    config = tmp_path / "config.toml"
    config.write_text('[providers.ollama]\nendpoint = "http://127.0.0.1:9"\n')
    done = subprocess.run([sys.executable, "-c", LAZY_PROBE, str(config)], capture_output=True, text=True,
                          timeout=60, check=True)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["before"] == {"router": False, "tools built": 0}
    assert report["after"]["tools"] == ["analyze_image", "generate_structured", "list_models", "provider_health"]
