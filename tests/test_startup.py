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


GC_PROBE = """
import gc, json, sys
from mcp_llm.cli import main

code = main(sys.argv[1:])
sys.stderr.write("\\n" + json.dumps({"code": code, "enabled": gc.isenabled(), "frozen": gc.get_freeze_count()}) + "\\n")
"""


USAGE_PROBE = """
import gc, json, sys
from mcp_llm.cli import main

try:
    main(sys.argv[1:])
except SystemExit as exc:
    sys.stderr.write("\\n" + json.dumps({"exit": exc.code, "enabled": gc.isenabled()}) + "\\n")
"""


def test_the_collector_is_paused_only_while_starting(tmp_path: Path) -> None:
    """Start-up runs with the garbage collector paused (it found nothing in ~190 runs over the SDK's
    imports); once the server is built it collects again, with what start-up made frozen out of its sight.
    A server that never resumed it would grow without bound."""
    config = tmp_path / "config.toml"
    config.write_text('[providers.ollama]\nendpoint = "http://127.0.0.1:9"\n')
    initialize = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}})
    runs = {
        "serve": subprocess.run([sys.executable, "-c", GC_PROBE, "--config", str(config), "serve"],
                                input=initialize + "\n", capture_output=True, text=True, timeout=60),
        "config": subprocess.run([sys.executable, "-c", GC_PROBE, "--config", str(config), "config"],
                                 capture_output=True, text=True, timeout=60),
        "bad config": subprocess.run([sys.executable, "-c", GC_PROBE, "--config", str(tmp_path / "missing.toml"),
                                      "config"], capture_output=True, text=True, timeout=60),
    }
    usage = subprocess.run([sys.executable, "-c", USAGE_PROBE, "serve", "--no-such-flag"], capture_output=True,
                           text=True, timeout=60)  # argparse exits before start-up is done
    assert json.loads(usage.stderr.strip().splitlines()[-1]) == {"exit": 2, "enabled": True}
    assert '"id":1' in runs["serve"].stdout.replace(" ", "")  # initialize was answered
    for name, done in runs.items():
        report = json.loads(done.stderr.strip().splitlines()[-1])
        assert report["enabled"] is True, name
        assert report["frozen"] > 10_000, name  # what start-up made: out of the collector's sight
    assert json.loads(runs["bad config"].stderr.strip().splitlines()[-1])["code"] == 2
