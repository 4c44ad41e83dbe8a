"""Every provider's fake behind one server: the providers, their faults, and calling through a real MCP client.

The providers: Ollama, Gemini, Anthropic, OpenAI, and a named OpenAI-compatible endpoint
(`lmstudio`, on a second fake OpenAI API). The fixtures over this (`running_fakes`, `fakes`,
`serve`, `fresh_health`) are in conftest.py; tests/test_faults.py runs the fault matrix on them,
and the provider-level rules of test_router.py, test_circuit.py and test_stats.py run on every
provider listed here.

Each test builds the server with every fake behind it, as in test_cloud_e2e.py, injects one fault
into one provider's fake with `enqueue(...)` (or points the provider at a closed port), calls
`generate_structured` through `mcp.Client`, and asserts the outcome from the tool result (`data`,
`model`, `provider`, `attempts`) or from the tool error.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import jsonschema
import pytest
from mcp import Client

from tests.conftest import call, call_error
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.gemini_server import FakeGemini
from tests.fakes.ollama_server import FakeOllama
from tests.fakes.openai_server import FakeOpenAI

GEMINI_KEY = "AIza-faults-gemini-1234"
ANTHROPIC_KEY = "sk-ant-faults-5678"
OPENAI_KEY = "sk-openai-faults-9012"
LMSTUDIO_KEY = "sk-lmstudio-faults-3456"  # a named endpoint's key, from the variable its table names
ENV = {"GEMINI_API_KEY": GEMINI_KEY, "ANTHROPIC_API_KEY": ANTHROPIC_KEY, "OPENAI_API_KEY": OPENAI_KEY,
       "LMSTUDIO_KEY": LMSTUDIO_KEY}

SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
    "required": ["city", "population"],
}
GOOD = {"city": "Lyon", "population": 522250}  # four streamed pieces: a mid-stream error cuts it after two
SCHEMA_VIOLATION = {"city": 42}  # wrong type, and `population` missing
PROSE = "The city is Lyon, and a little over half a million people live there."


# --- providers and faults -------------------------------------------------------------------------


@dataclass(frozen=True)
class Provider:
    name: str  # as in `provider` of a result, and `providers.<name>` in config
    model: str
    label: str  # how its errors name it ("Cannot reach Gemini at ...")
    fallback: str  # a model on another provider
    fallback_provider: str
    message_key: str = "error"  # the keyword its fake's `enqueue` takes an error's message as
    stream_error: str | None = None  # the error event type its fake sends mid-stream (None: it takes the message)
    table: str = ""  # its config table, `providers.<name>` unless said
    own_fallback: bool = True  # whether its models can name their own fallback (a named endpoint's cannot)

    def __str__(self) -> str:
        return self.name

    @property
    def config_table(self) -> str:
        return self.table or f"providers.{self.name}"


OLLAMA = Provider("ollama", "ollama/llama3.2:3b", "Ollama", "claude-haiku-4-5", "anthropic")
GEMINI = Provider("gemini", "gemini-2.5-flash", "Gemini", "ollama/llama3.2:3b", "ollama")
ANTHROPIC = Provider("anthropic", "claude-haiku-4-5", "Anthropic", "gemini-2.5-flash", "gemini", message_key="message",
                     stream_error="api_error")
OPENAI = Provider("openai", "openai/gpt-4.1-mini", "OpenAI", "ollama/llama3.2:3b", "ollama", message_key="message",
                  stream_error="server_error")
LMSTUDIO = Provider("lmstudio", "lmstudio/local-model", "lmstudio", "openai/gpt-4.1-mini", "openai",
                    message_key="message", stream_error="server_error", table="providers.openai_compatible.lmstudio",
                    own_fallback=False)
PROVIDERS = [OLLAMA, GEMINI, ANTHROPIC, OPENAI, LMSTUDIO]
BY_NAME = {p.name: p for p in PROVIDERS}


def fault_kwargs(provider: Provider, fault: str, *, retry_after: str = "1") -> dict[str, Any]:
    """`enqueue(...)` arguments for one fault, in that provider's fake's dialect."""
    message_key = provider.message_key
    if fault in ("500", "503"):
        return {"status": int(fault), message_key: f"simulated {fault}"}
    if fault == "429":
        return {"status": 429, message_key: "simulated 429, slow down", "headers": {"Retry-After": retry_after}}
    if fault == "read_timeout":
        return {"hang": True}
    if fault == "malformed_body":
        return {"raw_body": b"<html>oops</html>"}
    if fault == "mid_stream":
        if provider.stream_error:  # the fake takes the error event's type, and its message
            return {"content": GOOD, "stream_error": provider.stream_error, "message": "simulated mid-stream failure"}
        return {"content": GOOD, "stream_error": "simulated mid-stream failure"}
    raise AssertionError(f"unknown fault {fault!r}")


# The fault → the error kind its failed attempt must show.
TRANSIENT = {
    "500": "server_error",
    "503": "server_error",
    "429": "rate_limited",
    "read_timeout": "timeout",
    "malformed_body": "server_error",
    "mid_stream": "server_error",
}
INVALID = {"schema_violation": (SCHEMA_VIOLATION, "invalid_output"), "prose": (PROSE, "not_json")}
# The status a provider answers → the error kind its attempt shows. None of them is transient.
NON_TRANSIENT = {400: "bad_request", 401: "auth", 403: "auth", 404: "model_not_found"}


def non_transient(provider: Provider, status: int) -> dict[str, Any]:
    """`enqueue(...)` arguments for a non-transient HTTP error, in that provider's fake's dialect."""
    return {"status": status, provider.message_key: f"simulated {status}"}


def matrix(cases: Sequence[Any]) -> list[Any]:
    """Every provider × every case, with ids such as `gemini-429`."""
    return [pytest.param(p, c, id=f"{p.name}-{c}") for p in PROVIDERS for c in cases]


def per_provider(*, own_fallback: bool = False) -> list[Any]:
    """Every provider (`own_fallback`: those whose models can name their own fallback)."""
    return [pytest.param(p, id=p.name) for p in PROVIDERS if p.own_fallback or not own_fallback]


# --- fakes, config, server ------------------------------------------------------------------------


@dataclass
class Fakes:
    ollama: FakeOllama
    gemini: FakeGemini
    anthropic: FakeAnthropic
    openai: FakeOpenAI
    lmstudio: FakeOpenAI

    def all(self) -> tuple[Any, ...]:
        return self.ollama, self.gemini, self.anthropic, self.openai, self.lmstudio

    def of(self, provider: Provider | str) -> Any:
        return getattr(self, str(provider))

    def url(self, provider: Provider | str) -> str:
        """The endpoint its config table names (an OpenAI-style API's base URL ends in /v1)."""
        fake = self.of(provider)
        return fake.base_url if isinstance(fake, FakeOpenAI) else fake.url

    def _completion_requests(self, provider: Provider | str) -> list[Any]:
        kind = {"ollama": "chat_requests", "gemini": "generate_requests", "anthropic": "message_requests",
                "openai": "chat_requests", "lmstudio": "chat_requests"}
        return getattr(self.of(provider), kind[str(provider)])

    def completions(self, provider: Provider | str) -> int:
        """How many completion requests reached that provider's fake."""
        return len(self._completion_requests(provider))

    def last_completion(self, provider: Provider | str) -> str:
        """The last completion request's body, as JSON text."""
        return json.dumps(self._completion_requests(provider)[-1].json)


def toml_list(ids: list[str]) -> str:
    return json.dumps(ids)


def config_text(
    fakes: Fakes,
    *,
    max_retries: int = 1,
    max_repairs: int = 1,
    timeout_s: float = 10,
    defaults: str = "",
    fallback: Sequence[str] = (),
    model_fallback: dict[str, list[str]] | None = None,
    endpoints: dict[str, str] | None = None,
) -> str:
    urls = {name: fakes.url(name) for name in BY_NAME} | (endpoints or {})
    own = model_fallback or {}
    return f"""
[defaults]
model = "{OLLAMA.model}"
max_retries = {max_retries}
max_repairs = {max_repairs}
timeout_s = {timeout_s}
fallback = {toml_list(list(fallback))}
{defaults}

[providers.ollama]
endpoint = "{urls["ollama"]}"

[[providers.ollama.models]]
id = "llama3.2:3b"
fallback = {toml_list(own.get("ollama", []))}

[providers.gemini]
endpoint = "{urls["gemini"]}"

[[providers.gemini.models]]
id = "gemini-2.5-flash"
fallback = {toml_list(own.get("gemini", []))}

[providers.anthropic]
endpoint = "{urls["anthropic"]}"

[[providers.anthropic.models]]
id = "claude-haiku-4-5"
fallback = {toml_list(own.get("anthropic", []))}

[providers.openai]
endpoint = "{urls["openai"]}"

[[providers.openai.models]]
id = "gpt-4.1-mini"
fallback = {toml_list(own.get("openai", []))}

[providers.openai_compatible.lmstudio]
endpoint = "{urls["lmstudio"]}"
api_key_env = "LMSTUDIO_KEY"
models = ["local-model"]
"""


# `async with serve(**config) as client:` — the server on every fake, with that config (conftest.py).
Serve = Callable[..., AbstractAsyncContextManager[Client]]


# --- calling --------------------------------------------------------------------------------------


async def generate(client: Client, model: str, **arguments: Any) -> tuple[dict[str, Any], float]:
    """A call that must succeed: its result (validated against SCHEMA here) and its wall time."""
    started = time.perf_counter()
    result = await call(client, "generate_structured", prompt="A French city, please.", schema=SCHEMA,
                        model=model, **arguments)
    elapsed = time.perf_counter() - started
    jsonschema.validate(result["data"], SCHEMA)
    return result, elapsed


async def generate_error(client: Client, model: str, **arguments: Any) -> tuple[str, float]:
    """A call that must fail: the tool error's text and the call's wall time."""
    started = time.perf_counter()
    text = await call_error(client, "generate_structured", prompt="A French city, please.", schema=SCHEMA,
                            model=model, **arguments)
    return text, time.perf_counter() - started


def tries(result: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    """The attempts as (model, outcome, error kind)."""
    return [(a["model"], a["outcome"], a["error"]) for a in result["attempts"]]


async def assert_next_call_ok(client: Client, model: str, provider: str) -> None:
    """The same session answers the next call, first time, from the provider asked."""
    result, _ = await generate(client, model, timeout_s=5)
    assert (result["model"], result["provider"]) == (model, provider)
    assert tries(result) == [(model, "ok", None)], "the call after the faulty one did not go through cleanly"


async def health(client: Client, provider: Provider) -> dict[str, Any]:
    report = await call(client, "provider_health", provider=provider.name)
    (entry,) = report["providers"]
    return entry


# --- a schema Gemini gets rewritten: schema_rewrites end to end -----------------------------------


# Gemini takes none of `$schema`, `oneOf`, `const`, `patternProperties`: each is rewritten, and said so.
REWRITTEN = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "population": {"oneOf": [{"type": "integer", "minimum": 0}, {"type": "null"}]},
        "country": {"const": "France"},
    },
    "patternProperties": {"^x-": {"type": "string"}},
    "required": ["city", "population", "country"],
}
GEMINI_REWRITES = [
    "dropped `$schema` at $",
    "dropped `patternProperties` at $ (Gemini does not take it; the answer is still checked for it)",
    "`oneOf` became `anyOf` at $.population",
    "`const` became a one-value `enum` at $.country",
]
ANSWER = {"city": "Lyon", "population": 522250, "country": "France"}


async def generate_with(client: Any, model: str, schema: dict[str, Any]) -> tuple[dict[str, Any], float]:
    started = time.perf_counter()
    result = await call(client, "generate_structured", prompt="A French city, please.", schema=schema, model=model)
    jsonschema.validate(result["data"], schema)
    return result, time.perf_counter() - started


def sent_schema(servers: Fakes, provider: Provider) -> Any:
    body = json.loads(servers.last_completion(provider))
    if provider.name == "gemini":
        return body["generationConfig"]["responseJsonSchema"]
    return body["format"]
