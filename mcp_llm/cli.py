"""`mcp-llm [serve|config|models|health|call|stats]`: argument parsing and stderr logging.

Nothing here writes to stdout while serving over stdio: stdout is JSON-RPC's. The other
commands print their answer (human-readable, or `--json`) to stdout and exit; messages go to
stderr, in the words of this command line (`--model`, `mcp-llm models`), not the tools'.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import math
import os
import re
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from mcp_llm import __version__

if TYPE_CHECKING:
    from mcp_llm.config import Settings

log = logging.getLogger("mcp_llm")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_ALL_DOWN, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

EPILOG = """\
exit codes:
  0    ok
  1    the call failed (call), or the server could not be reached (stats)
  2    usage or config error (a wrong option, a --schema or --image that cannot be used)
  3    every configured provider is down (health)
  130  interrupted (Ctrl-C)

With no command, `serve` runs with its defaults. Options such as --config may come before or
after the command: `mcp-llm serve --config f.toml` is `mcp-llm --config f.toml serve`."""


def _emit(text: str) -> None:
    """The answer of a one-shot command (`config`, `models`, `health`, `call`, `stats`) on stdout.

    Never used by `serve`: while serving, stdout belongs to JSON-RPC.
    """
    sys.stdout.write(text + "\n")


def _fail(message: str) -> None:
    sys.stderr.write(f"mcp-llm: {message}\n")


class _Parser(argparse.ArgumentParser):
    """argparse, with the closest name suggested for a mistyped command."""

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        found = re.match(r"argument COMMAND: invalid choice: '([^']*)'", message)
        if found:
            message += _did_you_mean(found.group(1), [c for c in self._commands()])
        super().error(message)

    def _commands(self) -> list[str]:
        return [name for action in self._actions if isinstance(action, argparse._SubParsersAction)
                for name in action.choices]

    def reject_unknown(self, extras: list[str]) -> NoReturn:
        """Arguments this (sub)command does not take: its own usage, and the option meant if one is close."""
        options = [option for action in self._actions for option in action.option_strings if option.startswith("--")]
        typed = next((extra.split("=", 1)[0] for extra in extras if extra.startswith("-")), None)
        self.error(f"unrecognized arguments: {' '.join(extras)}" + (_did_you_mean(typed, options) if typed else ""))


def _did_you_mean(word: str, choices: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def _common() -> _Parser:
    """Options every command takes, before or after the command's name (SUPPRESS: a later
    occurrence overrides an earlier one, and an absent one leaves the top-level default)."""
    common = _Parser(add_help=False)
    common.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS,
                        help="config file (default: $MCP_LLM_CONFIG, then the user config dir)")
    common.add_argument("--log-level", default=argparse.SUPPRESS, choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="log level on stderr (default: WARNING)")
    return common


def _parser() -> tuple[_Parser, dict[str, _Parser]]:
    """The top-level parser, and each command's own (for its usage when it is given a wrong option)."""
    common = _common()
    parser = _Parser(prog="mcp-llm", parents=[common], epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     description="An MCP server for schema-valid LLM answers.")
    parser.add_argument("--version", action="version", version=f"mcp-llm {__version__}")
    # Not config / log_level: their actions are shared with every command's parser (argparse
    # `parents`), so a default set here would also override a value given before the command.
    parser.set_defaults(transport=None, host=None, port=None, stateless=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def command(name: str, text: str) -> _Parser:
        made: _Parser = commands.add_parser(name, parents=[common], help=text, description=text, epilog=EPILOG,
                                            formatter_class=argparse.RawDescriptionHelpFormatter)
        return made

    serve = command("serve", "run the MCP server (the default command)")
    serve.add_argument("--transport", choices=["stdio", "http"], help="default: server.transport, else stdio")
    serve.add_argument("--host", help="HTTP host (default: server.host, 127.0.0.1); [::1] for IPv6 loopback")
    serve.add_argument("--port", type=_port, help="HTTP port (default: server.port, 8765)")
    serve.add_argument("--stateless", action="store_true",
                       help="HTTP: no session state between requests (for replicas behind a load balancer)")
    call = command("call", "one generate_structured call (analyze_image with --image), printed as JSON")
    call.add_argument("prompt")
    call.add_argument("--schema", help="a JSON Schema, or a preset name (default: any JSON object; "
                      "with --image: none, the answer is text)")
    call.add_argument("--model", help="a model id (default: defaults.model; `mcp-llm models` lists them)")
    call.add_argument("--image", help="an image path, data: URI or base64: calls analyze_image")
    call.add_argument("--system", help="a system prompt")
    call.add_argument("--max-tokens", type=_positive_int, metavar="N",
                      help="the answer's token limit (default: the provider's)")
    call.add_argument("--temperature", type=_temperature, metavar="T",
                      help="sampling temperature, 0 for the most likely answer (default: the provider's)")
    call.add_argument("--timeout", type=float, help="seconds for the whole call (default: defaults.timeout_s)")
    call.add_argument("--max-cost", type=_dollars, metavar="USD",
                      help="the most this call may spend, in US dollars (default: budget.max_cost_per_call_usd)")
    call.add_argument("--no-cache", action="store_true",
                      help="do not answer from the response cache (temperature 0 calls are cached)")
    for name, text in (
        ("config", "print the effective config, each value's source, secrets redacted"),
        ("models", "list configured and discovered models"),
        ("health", "probe each provider (exit 3 when every configured provider is down)"),
    ):
        command(name, text).add_argument("--json", action="store_true", help="machine-readable output")
    stats = command("stats", "usage since start of a running HTTP server (its mcp-llm://stats resource)")
    stats.add_argument("--url", help="the server's MCP endpoint (default: http://server.host:server.port/mcp); "
                       "the token from server.token_env is sent")
    stats.add_argument("--json", action="store_true", help="machine-readable output")
    return parser, dict(commands.choices)  # type: ignore[arg-type]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _temperature(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value <= 2:  # every provider's range (OpenAI's and Gemini's are 0-2, Anthropic's 0-1)
        raise argparse.ArgumentTypeError(f"a temperature is 0-2, not {value}")
    return value


def _dollars(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of dollars: {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be 0 or more US dollars, not {text}")
    return value


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0-65535, not {port}")
    return port


def main(argv: list[str] | None = None) -> int:
    """Ctrl-C at any point (even while the heavy imports below run) ends quietly, with 130."""
    gc.disable()  # until start-up is done (`_started`)
    try:
        return _main(argv)
    except KeyboardInterrupt:
        sys.stderr.write("mcp-llm: interrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `mcp-llm config | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    finally:
        gc.enable()  # however it ended (`--help`, a usage error): main() may be called in a longer process


def _started() -> None:
    """Start-up is done: collect garbage from here on, and never again look at what start-up made.

    Importing the MCP SDK and pydantic makes ~90,000 objects and frees almost none, yet the collector,
    counting allocations, ran ~190 times over them (66 ms of a 0.6 s start, 11 %, on this machine),
    finding nothing. Paused until the server is built, then `gc.freeze()` moves everything start-up
    made out of the collector's sight, so that each later full collection during calls only walks what
    the calls made."""
    gc.freeze()
    gc.enable()


def _main(argv: list[str] | None) -> int:
    parser, commands = _parser()
    args, extras = parser.parse_known_args(argv)
    if extras:
        commands.get(args.command, parser).reject_unknown(extras)
    args.command = args.command or "serve"
    args.config = getattr(args, "config", None)
    _setup_logging(getattr(args, "log_level", "WARNING"))
    from mcp_llm.config import load_settings
    from mcp_llm.errors import ConfigError

    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        _started()
        _fail(exc.user_message())
        return EXIT_USAGE
    if args.command == "serve":
        return _serve(settings, args)
    _started()
    if args.command == "config":
        return _print_config(settings, as_json=args.json)
    if args.command == "call":
        return _call(settings, args)
    if args.command == "stats":
        return _stats(settings, args)
    return _run_query(settings, args.command, as_json=args.json)


class _PublicUrls(logging.Filter):
    """Every URL in a log line shown as `public_url` shows it: an HTTP library logs each request's URL
    (httpx at INFO), and an endpoint's query may hold a gateway's key."""

    def filter(self, record: logging.LogRecord) -> bool:
        from mcp_llm.adapters.spec import public_text

        message = record.getMessage()
        if "://" in message:
            record.msg, record.args = public_text(message), None
        return True


def _setup_logging(level: str) -> None:
    """Logs go to stderr, set up before MCPServer() would run its own basicConfig."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_PublicUrls())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    from mcp_llm.http_security import bind_address, header_host, is_loopback, transport_security
    from mcp_llm.server import build_server

    transport = args.transport or settings.server.transport
    if transport == "stdio":
        server = build_server(settings)
        # Ctrl-C ends a stdio server at once. asyncio's own handler would cancel the main task and
        # wait for it, but the SDK reads stdin in a worker thread that only a line or the end of
        # input wakes (on a terminal, neither comes): the process would hang, or print a traceback
        # at the second Ctrl-C. Nothing is lost: every answer is flushed when it is written.
        # Installed before the notice, so a Ctrl-C as soon as it shows takes the same path.
        signal.signal(signal.SIGINT, _exit_interrupted)
        if sys.stdin.isatty():
            sys.stderr.write(
                f"mcp-llm {__version__}: waiting for an MCP client on stdin (this is a stdio MCP server; "
                "an assistant or IDE starts it).\n"
                "  To try it: npx @modelcontextprotocol/inspector -- mcp-llm serve\n"
                "  or one call from a shell: mcp-llm call \"Say hi\" --schema '{\"type\": \"object\"}'\n"
                "  Ctrl-C to stop.\n")
        _started()
        server.run()
        return EXIT_OK
    _started()  # (the HTTP server imports what it serves with at run)
    host = args.host or settings.server.host
    port = args.port if args.port is not None else settings.server.port
    token = settings.server.token
    if _token_unset(settings):
        return EXIT_USAGE
    if token is None and not is_loopback(host):
        _fail(f"refusing to serve HTTP on {host} without a token. Set server.token_env to the name of "
              "an environment variable holding one (clients send it as `Authorization: Bearer …`), "
              "or bind to 127.0.0.1.")
        return EXIT_USAGE
    url = f"http://{header_host(host)}:{port}"
    server = build_server(settings, http_token=token.get_secret_value() if token else None, http_url=url)
    sys.stderr.write(f"mcp-llm {__version__}: serving MCP at {url}/mcp"
                     f"{' (bearer token required)' if token else ''}{' (stateless)' if args.stateless else ''}; "
                     "Ctrl-C to stop.\n")
    # The page's address, never the token: a fragment is what the browser keeps to itself (status/http.py)
    fragment = f"#token=<the token in ${settings.server.token_env}>" if token else ""
    sys.stderr.write(f"mcp-llm: status page at {url}/status{fragment}\n")
    server.run("streamable-http", host=bind_address(host), port=port, stateless_http=args.stateless,
               transport_security=transport_security(host, settings.server))
    return EXIT_OK


def _token_unset(settings: Settings) -> bool:
    """`server.token_env` names a variable that is not set: the user asked for a token, so say so rather
    than serve (or call a server) without one."""
    variable = settings.server.token_env
    if not variable or settings.server.token is not None:
        return False
    _fail(f"server.token_env names the environment variable {variable}, which is not set (or is empty). "
          f"Set {variable} to the bearer token HTTP clients must send, or remove server.token_env "
          "to serve without a token (loopback only).")
    return True


def _exit_interrupted(signum: int, frame: object) -> None:
    os.write(2, b"mcp-llm: interrupted\n")
    os._exit(EXIT_INTERRUPTED)


def _print_config(settings: Settings, *, as_json: bool) -> int:
    from mcp_llm.config import describe, dotted_items

    def _leaves(data: dict[str, Any]) -> list[tuple[str, Any]]:
        return [(key, value) for key, value in dotted_items(data) if not (isinstance(value, dict) and value)]

    from mcp_llm.cost import PRICES_DISTRIBUTION, price_data_version

    described = describe(settings)
    prices = {"library": PRICES_DISTRIBUTION, "version": price_data_version()}
    if as_json:
        sources = {key: settings.source_of(key) for key, _ in _leaves(described)}
        _emit(json.dumps({"path": str(settings.path) if settings.path else None, "config": described,
                          "sources": {k: v for k, v in sources.items() if v != "default"}, "prices": prices},
                         indent=2))
        return EXIT_OK
    _emit(f"# config file: {settings.path or '(none: defaults and environment only)'}")
    _emit(f"# prices: {PRICES_DISTRIBUTION} {prices['version'] or '(not installed: every cost is unknown)'} "
          "(its bundled price data; cost_per_mtok in a provider's table overrides it)")
    for key, value in _leaves(described):
        source = settings.source_of(key)
        _emit(f"{key} = {json.dumps(value)}" + (f"    # {source}" if source != "default" else ""))
    return EXIT_OK


def _call(settings: Settings, args: argparse.Namespace) -> int:
    """What the tools do, from a shell: the result (data or text, and the trace) as JSON, or the error on stderr.

    The tool service does the work (`tools.Tools`, speaking the command line's words); this maps
    options to its arguments and its errors to exit codes. A --schema, --image or number that cannot
    be used is a usage error (exit 2), found before any model is asked; a call that fails is exit 1.
    """
    import anyio

    from mcp_llm.app import App
    from mcp_llm.errors import ArgumentError, ImageError, LLMError, SchemaError
    from mcp_llm.tools import Tools
    from mcp_llm.words import CLI_WORDS

    if args.timeout is not None and args.timeout <= 0:
        _fail(f"--timeout must be positive, not {args.timeout}.")
        return EXIT_USAGE
    text_answer = args.schema in ("", "none") or (args.schema is None and args.image)
    try:
        schema = None if text_answer else _schema_argument(args.schema or '{"type": "object"}')
    except SchemaError as exc:
        _fail("--schema: " + exc.user_message())
        return EXIT_USAGE

    async def run() -> dict[str, Any]:
        app = App(settings)
        tools = Tools(app, words=CLI_WORDS)
        asked: dict[str, Any] = {"model": args.model, "temperature": args.temperature,
                                 "max_tokens": args.max_tokens, "timeout_s": args.timeout,
                                 "max_cost_usd": args.max_cost, "cache": not args.no_cache}
        try:
            result: Any
            if args.image:  # analyze_image, which takes a --system here (the MCP tool has no such parameter)
                result = await tools.analyze_image(args.image, args.prompt, schema, system=args.system, **asked)
            elif schema is None:  # `--schema none`: text, with no image
                result = await tools.generate_text(args.prompt, system=args.system, **asked)
            else:
                result = await tools.generate_structured(args.prompt, schema, system=args.system, **asked)
            _say_what_was_picked(app, args.model, result.model)
        finally:
            await app.aclose()
        trace = result.model_dump()
        answer = {"data": trace.pop("data")} if schema is not None else {"text": trace.pop("text")}
        trace.pop("data", None)
        trace.pop("text", None)
        return answer | trace

    try:
        result = anyio.run(run)
    except SchemaError as exc:
        _fail("--schema: " + exc.user_message())
        return EXIT_USAGE
    except ImageError as exc:
        _fail("--image: " + exc.user_message())
        return EXIT_USAGE
    except ArgumentError as exc:
        _fail(exc.user_message())
        return EXIT_USAGE
    except LLMError as exc:
        _fail(exc.user_message())
        return EXIT_FAILED
    _emit(json.dumps(result, indent=2, ensure_ascii=False))
    return EXIT_OK


def _schema_argument(text: str) -> Any:
    """--schema's text as the tool takes it, except JSON that is not a schema: an array, a number, a
    string (`'[1]'` would otherwise be looked up as a preset name, and reported as an unknown preset)."""
    from mcp_llm.errors import SchemaError

    stripped = text.strip()
    if stripped.startswith("{") or not stripped or (stripped[0] not in '["-0123456789' and stripped != "null"):
        return text  # an object's JSON text (its errors are reported with their line), a preset name, true/false
    try:
        value = json.loads(stripped)
    except ValueError as exc:
        raise SchemaError(f"The schema is not valid JSON: {exc}.",
                          hint="Pass a JSON Schema object, e.g. '{\"type\": \"object\"}', or a preset name.") from None
    from mcp_llm.presets import PRESETS

    kind = {list: "a JSON array", str: "a JSON string", type(None): "JSON null"}.get(type(value), "a JSON number")
    raise SchemaError(f"The schema is {kind} ({_shorten(stripped)}), and a JSON Schema is an object (or true).",
                      hint="For an array of integers, say, pass '{\"type\": \"array\", \"items\": {\"type\": "
                      "\"integer\"}}'; or a preset name: " + ", ".join(PRESETS) + ".")


def _shorten(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _say_what_was_picked(app: Any, asked: str | None, answered: str) -> None:
    """With no --model and none configured, a model found on this machine answered: say which, and where."""
    picked = app.router.picker.last
    if asked or picked is None or picked.model_id != answered:
        return
    _fail(f"no model given or configured: using {picked.describe()}. "
          "Pass --model, or set defaults.model in the config file, to choose another.")


def _run_query(settings: Settings, command: str, *, as_json: bool) -> int:
    """`models` and `health`: the tools `list_models` and `provider_health`, printed for a person or a script.

    Messages speak the command line's words, except in `health --json`, whose `detail`s are what the
    `provider_health` tool returns (scripts may read either)."""
    import anyio

    from mcp_llm.app import App
    from mcp_llm.tools import Tools
    from mcp_llm.words import CLI_WORDS, TOOL_WORDS

    problems: dict[str, str] = {}
    places: list[tuple[str, str]] = []

    async def run() -> list[Any]:
        app = App(settings)
        tools = Tools(app, words=TOOL_WORDS if command == "health" and as_json else CLI_WORDS)
        places.extend(app.router.picker.discovery.places() if settings.discovery.enabled else [])
        try:
            if command == "models":
                rows = (await tools.list_models(None, refresh=True)).models
                problems.update(app.discovery_errors)
                return rows
            return (await tools.provider_health(None)).providers
        finally:
            await app.aclose()

    rows = anyio.run(run)
    if command == "models":
        _print_models(rows, problems, settings, places, as_json=as_json)
        return EXIT_OK
    _print_health(rows, as_json=as_json)
    usable = [h for h in rows if h.status in ("ok", "degraded")]
    if not usable:
        _fail("every configured provider is down or unconfigured (see above).")
        return EXIT_ALL_DOWN
    return EXIT_OK


def _print_models(rows: list[Any], problems: dict[str, str], settings: Settings, places: list[tuple[str, str]],
                  *, as_json: bool) -> None:
    if as_json:
        _emit(json.dumps([row.model_dump(mode="json") for row in rows], indent=2))
    else:
        fleet = any(len(m.hosts) > 1 for m in rows)  # a provider with several hosts: which serve each model
        table = [("MODEL", "PROVIDER", "SOURCE", "AVAILABLE", "FLAGS", *(("HOSTS",) if fleet else ()))]
        for m in rows:
            flags = ",".join(f for f, on in (("vision", m.vision), ("disabled", not m.enabled)) if on)
            available = {True: "yes", False: "missing", None: "unknown"}[m.available]
            table.append((m.id, m.provider, m.source, available, flags or "-",
                          *((", ".join(m.hosts) or "-",) if fleet else ())))
        _emit_table(table)
    listed = {row.provider for row in rows}
    for provider, why in sorted(problems.items()):
        # A provider with models in the table, or an Ollama set up by hand: its failure matters. An Ollama
        # that is merely the default endpoint, with nothing of it configured, is no one's concern.
        if provider in listed or (provider == "ollama" and _ollama_set_up(settings)):
            _fail(f"{provider}: could not list its models, so their availability is unknown: {why}")
    if not rows:
        from mcp_llm.zero_config import LABELS

        looked = ", ".join(f"{LABELS.get(name, name)} at {url}" for name, url in places)
        _fail("no models: none is configured, and no local model server was found"
              + (f" (looked for {looked})" if looked else " (discovery is off)")
              + ". Start one (e.g. `llama-server -hf ggml-org/gemma-3-1b-it-GGUF`, or `ollama serve`), or "
              "configure one under [providers.<name>]; `mcp-llm health` shows each provider's state.")


def _ollama_set_up(settings: Settings) -> bool:
    ollama = settings.providers.ollama
    return bool(ollama.models or ollama.use_cloud or settings.source_of("providers.ollama.endpoint") != "default")


def _print_health(rows: list[Any], *, as_json: bool) -> None:
    if as_json:  # a one-shot process has no usage to show: `stats` is the server's (`mcp-llm stats`)
        _emit(json.dumps([row.model_dump(mode="json", exclude={"stats"}) for row in rows], indent=2))
        return
    table = [("PROVIDER", "STATUS", "LATENCY", "VERSION", "DETAIL")]
    for h in rows:
        latency = f"{h.latency_ms:.0f} ms" if h.latency_ms is not None else "-"
        table.append((h.provider, h.status, latency, h.version or "-", h.detail or "-"))
    _emit_table(table)
    if rows and rows[0].state != "local":  # [state]: the circuits shown are the fleet's, or why they are not
        _emit(f"\nstate: {rows[0].state}")
    for h in rows:
        if len(h.hosts) > 1:  # a provider with several hosts: each one, with what it has loaded
            _emit(f"\n{h.provider} hosts:")
            hosts = [("  HOST", "STATUS", "LATENCY", "CIRCUIT", "IN FLIGHT", "LOADED")]
            for host in h.hosts:
                latency = f"{host.latency_ms:.0f} ms" if host.latency_ms is not None else "-"
                loaded = ", ".join(host.loaded) if host.loaded else "-"
                hosts.append((f"  {host.host}", host.status, latency, host.circuit, str(host.in_flight),
                              loaded + (f" ({host.detail})" if host.status != "ok" else "")))
            _emit_table(hosts)


def _emit_table(rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        _emit("  ".join([*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[-1]]).rstrip())


def _stats(settings: Settings, args: argparse.Namespace) -> int:
    """Read `mcp-llm://stats` from a running HTTP server, as an MCP client."""
    import anyio

    from mcp_llm.http_security import header_host

    url = args.url or f"http://{header_host(settings.server.host)}:{settings.server.port}/mcp"
    token = settings.server.token
    if _token_unset(settings):
        return EXIT_USAGE

    async def fetch() -> dict[str, Any]:
        import httpx2
        from mcp import Client
        from mcp.client.streamable_http import streamable_http_client

        headers = {"Authorization": f"Bearer {token.get_secret_value()}"} if token else {}
        with anyio.fail_after(30):
            async with (httpx2.AsyncClient(headers=headers, timeout=10) as http,
                        Client(streamable_http_client(url, http_client=http)) as client):
                result = await client.read_resource("mcp-llm://stats")
        return json.loads(getattr(result.contents[0], "text", "") or "{}")

    try:
        stats = anyio.run(fetch)
    except Exception as exc:  # the command's boundary: any failure to reach or read the server is one answer
        _fail(f"could not read the stats of the server at {url}: {_reason(exc)}. Is `mcp-llm serve --transport "
              "http` running there (and server.token_env set as for the server)? Pass its endpoint with --url.")
        return EXIT_FAILED
    if args.json:
        _emit(json.dumps(stats, indent=2))
        return EXIT_OK
    calls = stats["calls"]
    _emit(f"since {stats['since']}: {calls['calls']} calls, {calls['successes']} answered, "
          f"failures {calls['failures'] or 'none'}, cost {_usd(calls.get('cost_usd'))}")
    cache, budget = stats.get("cache"), stats.get("budget")
    if cache:
        _emit(f"cache: {cache['hits']} hits, {cache['misses']} misses, {_usd(cache['saved_usd'])} saved, "
              f"{cache.get('entries', '?')} answers kept" + ("" if cache["enabled"] else " (disabled)"))
    if budget and (budget.get("daily_usd") is not None or budget.get("max_cost_per_call_usd") is not None):
        daily = budget.get("daily_usd")
        _emit(f"budget: {_usd(budget['spent_today_usd'])} spent on {budget['day']} (UTC)"
              + (f" of {_usd(daily)} a day" if daily is not None else "")
              + (f", at most {_usd(budget['max_cost_per_call_usd'])} a call"
                 if budget.get("max_cost_per_call_usd") is not None else ""))
    table = [("MODEL", "CALLS", "OK", "RETRIES", "REASKS", "FALLBACKS", "TOKENS IN/OUT", "COST", "P50/P95 MS",
              "FAILURES")]
    for model_id, row in stats["models"].items():
        latency = row["latency_ms"]
        table.append((model_id, str(row["calls"]), str(row["successes"]), str(row["retries"]), str(row["reasks"]),
                      str(row["fallbacks"]), f"{row['input_tokens']}/{row['output_tokens']}", _row_cost(row),
                      f"{_ms(latency['p50'])}/{_ms(latency['p95'])}",
                      ", ".join(f"{k} {v}" for k, v in row["failures"].items()) or "-"))
    _emit_table(table)
    providers = stats.get("providers") or {}
    if providers:
        _emit("")
        rows: list[tuple[str, ...]] = [("PROVIDER", "CALLS", "OK", "TOKENS IN/OUT", "COST")]
        for name, row in providers.items():
            rows.append((name, str(row["calls"]), str(row["successes"]),
                         f"{row['input_tokens']}/{row['output_tokens']}", _row_cost(row)))
        _emit_table(rows)
    return EXIT_OK


def _usd(value: float | None) -> str:
    if value is None:
        return "unknown"
    return f"${value:.2f}" if value >= 1 or value == 0 else f"${value:.6f}".rstrip("0")


def _row_cost(row: dict[str, Any]) -> str:
    """A model's or provider's cost: unknown when no attempt was priced, `+?` when some were not."""
    unpriced, priced = row.get("unpriced_attempts", 0), row.get("cost_usd", 0.0)
    if unpriced and unpriced == row.get("attempts"):
        return "unknown"
    return _usd(priced) + (f" (+{unpriced} unpriced)" if unpriced else "")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _reason(exc: BaseException) -> str:
    """The innermost cause of a failure, however deep in exception groups, without a traceback."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
