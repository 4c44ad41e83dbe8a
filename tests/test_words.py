"""Messages name the caller's controls in the words of the surface that called (mcp_llm/words.py).

An assistant reads "Pass `model`" and "list_models"; a shell user reads "Pass --model" and
"`mcp-llm models`". Until issue 19 the command line rewrote the tools' messages with regexes; now
each message takes the names from the vocabulary in effect where it is built. `OLD_CLI_REWRITE` is
that regex table, kept here as the oracle: the command line's messages must be exactly what it
made of the tools' messages, byte for byte.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from mcp_llm.adapters.base import Message, Request
from mcp_llm.adapters.sampling import client_health
from mcp_llm.config import Settings
from mcp_llm.errors import LLMError
from mcp_llm.registry import Registry
from mcp_llm.tools import check_arguments
from mcp_llm.words import CLI_WORDS, TOOL_WORDS, speaking, words

PACKAGE = Path(__file__).resolve().parent.parent / "mcp_llm"

OLD_CLI_REWRITE = (  # cli.py's `_CLI_WORDS` before issue 19
    (re.compile(r"Pass `model`"), "Pass --model"),
    (re.compile(r"\blist_models\b"), "`mcp-llm models`"),
    (re.compile(r"\bprovider_health\b"), "`mcp-llm health`"),
    (re.compile(r"(?<![.\w])timeout_s\b"), "--timeout"),
    (re.compile(r"(?<![.\w])max_tokens\b"), "--max-tokens"),
)


def old_cli_words(message: str) -> str:
    for pattern, replacement in OLD_CLI_REWRITE:
        message = pattern.sub(replacement, message)
    return message


def _message(make: Callable[[], object]) -> str:
    try:
        result = make()
    except LLMError as exc:
        return exc.user_message()
    return str(result)


def _sampling_without_client() -> None:
    from mcp_llm.adapters.sampling import SamplingAdapter

    settings = Settings()
    adapter = SamplingAdapter(settings.providers.client)
    anyio.run(adapter.complete, Request(model="", messages=[Message("user", "hi")]))


MESSAGES: dict[str, Callable[[], object]] = {
    "max_tokens out of range": lambda: check_arguments(None, 0, None),
    "timeout_s not a number": lambda: check_arguments(None, None, math.nan),
    "temperature out of range": lambda: check_arguments(5.0, None, None),
    "no model and no default": lambda: Registry(Settings()).resolve(None),
    "unknown model id": lambda: Registry(Settings()).resolve("nope/model"),
    "model id too long": lambda: Registry(Settings()).resolve("x" * 300),
    "client cannot sample (health)": lambda: client_health(None).detail,
    "client cannot sample (call)": _sampling_without_client,
}


@pytest.mark.parametrize("name", MESSAGES)
def test_the_command_line_says_what_its_regexes_used_to_make_of_the_tools_message(name: str) -> None:
    with speaking(TOOL_WORDS):
        tool = _message(MESSAGES[name])
    with speaking(CLI_WORDS):
        cli = _message(MESSAGES[name])
    assert cli == old_cli_words(tool)
    assert words() is TOOL_WORDS  # back to the tools' words on leaving


def test_messages_differ_by_surface_where_they_name_a_control() -> None:
    with speaking(CLI_WORDS):
        cli = _message(MESSAGES["unknown model id"])
    tool = _message(MESSAGES["unknown model id"])  # outside any call: the tools' words
    assert "list_models" in tool and "`mcp-llm models`" not in tool
    assert "`mcp-llm models`" in cli and "list_models" not in cli
    with speaking(CLI_WORDS):
        timeout = _message(MESSAGES["timeout_s not a number"])
    assert timeout.startswith("--timeout must be") and "defaults.timeout_s" in timeout  # a config key stays


def test_the_vocabulary_follows_the_call_into_worker_threads_and_tasks() -> None:
    async def main() -> list[str]:
        seen: list[str] = []
        with speaking(CLI_WORDS):
            seen.append(await anyio.to_thread.run_sync(lambda: words().list_models))
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: _append(seen))
        return seen

    async def _append(seen: list[str]) -> None:
        seen.append(words().list_models)

    assert anyio.run(main) == ["`mcp-llm models`", "`mcp-llm models`"]


# Where a tool's name or parameter may be written out as it is: the MCP wiring (tool names, the
# instructions and parameter descriptions only an assistant reads), the command line's own text,
# and the vocabulary itself.
SURFACE_FILES = {"server.py", "cli.py", "words.py"}


def test_no_message_writes_a_control_of_one_surface_out() -> None:
    """A new message that says "list_models" or "max_tokens" literally would reach the command line
    in the tools' words: every message names them through `words()` instead."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name in SURFACE_FILES:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
                      and node.body and isinstance(node.body[0], ast.Expr)
                      and isinstance(node.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Constant) and isinstance(node.value, str)) or id(node) in docstrings:
                continue
            text = re.sub(r"\{[^{}]*\}", "", node.value)  # a `{list_models}` placeholder is filled from words()
            if re.fullmatch(r"\w+", text):
                continue  # an identifier (a request field, a dict key), not prose
            if any(pattern.search(text) for pattern, _ in OLD_CLI_REWRITE):
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {node.value[:80]!r}")
    assert not offenders, "write these with words(): " + "; ".join(offenders)
