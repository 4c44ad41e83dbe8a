"""`mcp-llm [serve|config|models|health|call]`: argument parsing and stderr logging.

Nothing here writes to stdout while serving over stdio: stdout is JSON-RPC's. The other
commands print their answer (human-readable, or `--json`) to stdout and exit.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import sys
from typing import Any

from mcp_llm import __version__
from mcp_llm.config import Settings, dotted_items, load_settings
from mcp_llm.errors import ConfigError

log = logging.getLogger("mcp_llm")


def _emit(text: str) -> None:
    """The answer of a one-shot command (`config`, `models`, `health`, `call`) on stdout.

    Never used by `serve`: while serving, stdout belongs to JSON-RPC.
    """
    sys.stdout.write(text + "\n")


def _fail(message: str) -> None:
    sys.stderr.write(f"mcp-llm: {message}\n")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mcp-llm", description="An MCP server for schema-valid LLM answers.")
    parser.add_argument("--version", action="version", version=f"mcp-llm {__version__}")
    parser.add_argument("--config", metavar="PATH", help="config file (default: $MCP_LLM_CONFIG, then the user dir)")
    parser.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    commands = parser.add_subparsers(dest="command")
    serve = commands.add_parser("serve", help="run the MCP server (the default command)")
    serve.add_argument("--transport", choices=["stdio", "http"], help="default: server.transport, else stdio")
    serve.add_argument("--host", help="HTTP host (default: server.host, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="HTTP port (default: server.port, 8765)")
    serve.add_argument("--stateless", action="store_true", help="HTTP: no session state between requests")
    call = commands.add_parser("call", help="one generate_structured (or analyze_image) call, printed as JSON")
    call.add_argument("prompt")
    call.add_argument("--schema", default='{"type": "object"}', help="a JSON Schema, or a preset name")
    call.add_argument("--model", help="a model id (default: defaults.model)")
    call.add_argument("--image", help="an image path, data: URI or base64: calls analyze_image")
    call.add_argument("--system")
    call.add_argument("--timeout", type=float, help="seconds for the whole call")
    for name, text in (
        ("config", "print the effective config, each value's source, secrets redacted"),
        ("models", "list configured and discovered models"),
        ("health", "probe each provider"),
    ):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _setup_logging(args.log_level)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        _fail(exc.user_message())
        return 2
    command = args.command or "serve"
    if command == "serve":
        return _serve(settings, args)
    if command == "config":
        return _print_config(settings, as_json=args.json)
    if command == "call":
        return _call(settings, args)
    return _run_query(settings, command, as_json=args.json)


def _setup_logging(level: str) -> None:
    """Logs go to stderr, set up before MCPServer() would run its own basicConfig."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    from mcp_llm.server import build_server

    transport = args.transport or settings.server.transport
    if transport == "stdio":
        build_server(settings).run()
        return 0
    host = args.host or settings.server.host
    port = args.port if args.port is not None else settings.server.port
    token = settings.server.token
    if token is None and not _is_loopback(host):
        _fail(f"refusing to serve HTTP on {host} without a token. Set server.token_env to the name of "
              "an environment variable holding one (clients send it as `Authorization: Bearer …`), "
              "or bind to 127.0.0.1.")
        return 2
    server = build_server(settings, http_token=token.get_secret_value() if token else None,
                          http_url=f"http://{host}:{port}")
    server.run("streamable-http", host=host, port=port, stateless_http=args.stateless)
    return 0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _print_config(settings: Settings, *, as_json: bool) -> int:
    from mcp_llm.config import describe

    described = describe(settings)
    if as_json:
        sources = {key: settings.source_of(key) for key, _ in _leaves(described)}
        _emit(json.dumps({"path": str(settings.path) if settings.path else None, "config": described,
                          "sources": {k: v for k, v in sources.items() if v != "default"}}, indent=2))
        return 0
    _emit(f"# config file: {settings.path or '(none: defaults and environment only)'}")
    for key, value in _leaves(described):
        source = settings.source_of(key)
        _emit(f"{key} = {json.dumps(value)}" + (f"    # {source}" if source != "default" else ""))
    return 0


def _leaves(data: dict[str, Any]) -> list[tuple[str, Any]]:
    return [(key, value) for key, value in dotted_items(data) if not (isinstance(value, dict) and value)]


def _call(settings: Settings, args: argparse.Namespace) -> int:
    """What the tools do, from a shell: the result (data and trace) as JSON, or the error on stderr."""
    import anyio

    from mcp_llm.app import App
    from mcp_llm.errors import LLMError
    from mcp_llm.images import load_image
    from mcp_llm.router import CallSpec
    from mcp_llm.structured import parse_schema_argument

    async def run() -> dict[str, Any]:
        app = App(settings)
        try:
            schema = None if args.image and args.schema in ("", "none") else parse_schema_argument(args.schema)[0]
            images = (await load_image(args.image, settings.images),) if args.image else ()
            outcome = await app.router.run(CallSpec(prompt=args.prompt, schema=schema, model=args.model,
                                                    system=args.system, images=images, timeout_s=args.timeout))
            answer = {"data": outcome.data} if schema is not None else {"text": outcome.text}
            return answer | outcome.trace.model_dump()
        finally:
            await app.aclose()

    try:
        result = anyio.run(run)
    except LLMError as exc:
        _fail(exc.user_message())
        return 1
    _emit(json.dumps(result, indent=2, ensure_ascii=False))
    return 0


def _run_query(settings: Settings, command: str, *, as_json: bool) -> int:
    import anyio

    from mcp_llm.app import App

    async def run() -> list[Any]:
        app = App(settings)
        try:
            return await (app.models(None, refresh=True) if command == "models" else app.health(None))
        finally:
            await app.aclose()

    rows = anyio.run(run)
    if as_json:
        _emit(json.dumps([row.model_dump(mode="json") for row in rows], indent=2))
    elif command == "models":
        for m in rows:
            flags = ",".join(f for f, on in (("vision", m.vision), ("disabled", not m.enabled)) if on)
            available = {True: "available", False: "missing", None: "unknown"}[m.available]
            _emit(f"{m.id:40} {m.source:10} {available:9} {flags}")
    else:
        for h in rows:
            latency = f"{h.latency_ms:.0f} ms" if h.latency_ms is not None else "-"
            _emit(f"{h.provider:10} {h.status:12} {latency:>8}  {h.version or '-':10} {h.detail}")
    return 0
