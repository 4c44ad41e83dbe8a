"""The numeric tool arguments at the boundary, and errors of ours that must never count against a provider.

A client writing its own JSON can send what the SDK's client cannot: `1e309` (valid JSON, read as
infinity) and a bare `NaN` (which pydantic's parser takes). `tests.wire.JSONWire` sends each message
as JSON text, as stdio and HTTP do, so those values reach the server in-process. The rule under test:
an out-of-domain value is a clear input error before anything is sent; a value valid elsewhere but
above one provider's range is lowered for that provider and noted in `argument_rewrites`; and a
request that fails on our side before it reaches the wire is a `NotSentError`, never retried, never
counted against the provider's circuit, so one session can never get a provider skipped for another.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import pytest
from mcp import Client

from mcp_llm.adapters.base import Message, Request
from mcp_llm.app import App
from mcp_llm.config import Settings
from mcp_llm.errors import NotSentError
from mcp_llm.router import CallSpec
from mcp_llm.server import build_server
from tests.conftest import call, call_error
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.gemini_server import FakeGemini
from tests.fakes.ollama_server import FakeOllama
from tests.fakes.openai_server import FakeOpenAI
from tests.wire import JSONWire

pytestmark = pytest.mark.anyio

KEYS = {"GEMINI_API_KEY": "AIza-arguments-1", "ANTHROPIC_API_KEY": "sk-ant-arguments-2",
        "OPENAI_API_KEY": "sk-openai-arguments-3"}
SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
# What the wire turns the placeholders into: JSON text no SDK client would write, but any client may.
WIRE = {'"<1e309>"': "1e309", '"<-1e309>"': "-1e309", '"<NaN>"': "NaN"}
TEST_TIMEOUT_S = 60


@dataclass(frozen=True)
class Provider:
    name: str
    model: str
    requests: str  # the fake's list of completion requests

    def __str__(self) -> str:
        return self.name


PROVIDERS = [
    Provider("ollama", "ollama/llama3.2:3b", "chat_requests"),
    Provider("gemini", "gemini-2.5-flash", "generate_requests"),
    Provider("anthropic", "claude-haiku-4-5", "message_requests"),
    Provider("openai", "openai/gpt-4.1-mini", "chat_requests"),
]
BY_NAME = {p.name: p for p in PROVIDERS}


@dataclass
class Fakes:
    ollama: FakeOllama
    gemini: FakeGemini
    anthropic: FakeAnthropic
    openai: FakeOpenAI

    def sent(self, provider: Provider) -> int:
        return len(getattr(getattr(self, provider.name), provider.requests))

    def last(self, provider: Provider) -> dict[str, Any]:
        return getattr(getattr(self, provider.name), provider.requests)[-1].json


@pytest.fixture(scope="module")
def running() -> Iterator[Fakes]:
    with FakeOllama() as ollama, FakeGemini(api_key=KEYS["GEMINI_API_KEY"]) as gemini, \
            FakeAnthropic(api_key=KEYS["ANTHROPIC_API_KEY"]) as anthropic, \
            FakeOpenAI(api_key=KEYS["OPENAI_API_KEY"]) as openai:
        yield Fakes(ollama, gemini, anthropic, openai)


@pytest.fixture
def fakes(running: Fakes) -> Iterator[Fakes]:
    for fake in (running.ollama, running.gemini, running.anthropic, running.openai):
        fake.reset()
    yield running
    for fake in (running.ollama, running.gemini, running.anthropic, running.openai):
        assert not fake.errors, fake.errors


def config(fakes: Fakes, defaults: str = "") -> str:
    """Every provider on its fake; retries and the circuit as configured by default unless `defaults` says."""
    return f"""
[defaults]
model = "ollama/llama3.2:3b"
timeout_s = 20
{defaults}

[providers.ollama]
endpoint = "{fakes.ollama.url}"

[providers.gemini]
endpoint = "{fakes.gemini.url}"

[providers.anthropic]
endpoint = "{fakes.anthropic.url}"

[providers.openai]
endpoint = "{fakes.openai.base_url}"
"""


@pytest.fixture
def settings_for(fakes: Fakes, make_settings: Callable[..., Settings],
                 monkeypatch: pytest.MonkeyPatch) -> Callable[..., Settings]:
    for name, value in KEYS.items():  # the SDKs read some of these themselves
        monkeypatch.setenv(name, value)
    return lambda defaults="": make_settings(config(fakes, defaults), env=KEYS)


Sessions = Callable[..., AbstractAsyncContextManager[tuple[Client, Client]]]


@pytest.fixture
def two_sessions(settings_for: Callable[..., Settings]) -> Sessions:
    """Two sessions on one server (its circuits shared, as over HTTP), each writing JSON text."""

    @asynccontextmanager
    async def open_two(defaults: str = "") -> AsyncIterator[tuple[Client, Client]]:
        server = build_server(settings_for(defaults))
        async with Client(JSONWire(server, WIRE)) as first, Client(JSONWire(server, WIRE)) as second:
            yield first, second

    return open_two


async def circuit(client: Client, provider: Provider) -> str:
    (row,) = (await call(client, "provider_health", provider=provider.name))["providers"]
    return row["circuit"]


# --- the boundary ---------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS, ids=str)
async def test_non_finite_temperatures_from_one_session_never_get_a_provider_skipped_for_another(
        two_sessions: Sessions, fakes: Fakes, provider: Provider) -> None:
    """Before the fix: nothing could be encoded, yet each call blamed the provider ("sent a malformed
    response"), was retried and counted; two calls with the default retries opened the circuit, and
    every session then got "<provider> is skipped" for 30 s."""
    with anyio.fail_after(TEST_TIMEOUT_S):
        async with two_sessions() as (alice, bob):
            for value in ["<1e309>", "<NaN>", "<-1e309>", "<1e309>", "<NaN>"]:
                text = await call_error(alice, "generate_structured", prompt="n?", schema=SCHEMA,
                                        model=provider.model, temperature=value)
                assert "temperature must be a number from 0 to 2, not " in text, text
                assert "malformed" not in text and "attempt" not in text, text
            assert fakes.sent(provider) == 0, "a value JSON cannot carry was sent"
            result = await call(bob, "generate_structured", prompt="n?", schema=SCHEMA, model=provider.model,
                                temperature=0.5)
            assert [(a["provider"], a["outcome"]) for a in result["attempts"]] == [(provider.name, "ok")]
            assert result["argument_rewrites"] == []
            assert await circuit(bob, provider) == "closed"


@pytest.mark.parametrize(("arguments", "expected"), [
    pytest.param({"temperature": "<NaN>"}, "temperature must be a number from 0 to 2, not nan", id="temperature-nan"),
    pytest.param({"temperature": -0.5}, "temperature must be a number from 0 to 2, not -0.5", id="temperature-neg"),
    pytest.param({"temperature": 2.5}, "temperature must be a number from 0 to 2, not 2.5", id="temperature-big"),
    pytest.param({"max_tokens": 0}, "max_tokens must be a whole number from 1 to 1,000,000, not 0",
                 id="max_tokens-zero"),
    pytest.param({"max_tokens": -20}, "max_tokens must be a whole number from 1 to 1,000,000, not -20",
                 id="max_tokens-negative"),
    pytest.param({"max_tokens": 10**12}, "not 1,000,000,000,000", id="max_tokens-huge"),
    pytest.param({"timeout_s": "<NaN>"}, "timeout_s must be a number of seconds above 0 and at most 86,400, not nan",
                 id="timeout-nan"),
    pytest.param({"timeout_s": "<1e309>"}, "not inf (a number too large for a double, such as 1e309",
                 id="timeout-inf"),
    pytest.param({"timeout_s": 0}, "timeout_s must be a number of seconds above 0", id="timeout-zero"),
    pytest.param({"timeout_s": -3}, "not -3", id="timeout-negative"),
    pytest.param({"timeout_s": 1e12}, "not 1e+12", id="timeout-huge"),
    pytest.param({"max_cost_usd": "<NaN>"}, "max_cost_usd must be US dollars from 0 to 1,000,000, not nan",
                 id="max_cost-nan"),
    pytest.param({"max_cost_usd": "<1e309>"}, "not inf (a number too large for a double", id="max_cost-inf"),
    pytest.param({"max_cost_usd": -0.5}, "max_cost_usd must be US dollars from 0 to 1,000,000, not -0.5",
                 id="max_cost-negative"),
])
@pytest.mark.parametrize("tool", ["generate_structured", "analyze_image"])
async def test_out_of_domain_numbers_are_a_clear_input_error_and_nothing_is_sent(
        two_sessions: Sessions, fakes: Fakes, tool: str, arguments: dict[str, Any], expected: str) -> None:
    """Before the fix: `timeout_s: NaN` ended in "failed unexpectedly", max_tokens 0 or -20 was sent
    as is, and a temperature out of range went to the provider."""
    image = {"image": "iVBORw0KGgo="} if tool == "analyze_image" else {"schema": SCHEMA}
    with anyio.fail_after(TEST_TIMEOUT_S):
        async with two_sessions() as (alice, _):
            text = await call_error(alice, tool, prompt="n?", **image, **arguments)
            assert expected in text, text
            assert "unexpectedly" not in text
            assert fakes.sent(BY_NAME["ollama"]) == 0
            result = await call(alice, "generate_structured", prompt="n?", schema=SCHEMA)  # the session goes on
            assert result["data"] == {"n": 0}


async def test_a_temperature_above_one_providers_range_is_lowered_there_and_noted(
        two_sessions: Sessions, fakes: Fakes) -> None:
    """1.5 is valid for Ollama, and above Anthropic's 0..1: the Anthropic fallback gets 1, and the
    trace says so (before the fix Anthropic refused the request with a 400)."""
    ollama, anthropic = BY_NAME["ollama"], BY_NAME["anthropic"]
    fakes.ollama.enqueue(status=503, error="busy")
    with anyio.fail_after(TEST_TIMEOUT_S):
        async with two_sessions('max_retries = 0\nfallback = ["claude-haiku-4-5"]') as (alice, _):
            direct = await call(alice, "generate_structured", prompt="n?", schema=SCHEMA, model=anthropic.model,
                                temperature=1.5)
            assert fakes.last(anthropic)["temperature"] == 1.0
            assert direct["argument_rewrites"] == ["temperature 1.5 lowered to 1, the highest anthropic takes"]

            fallen = await call(alice, "generate_structured", prompt="n?", schema=SCHEMA, temperature=1.5)
            assert fakes.last(ollama)["options"]["temperature"] == 1.5
            assert fakes.last(anthropic)["temperature"] == 1.0
            assert fallen["provider"] == "anthropic"
            assert fallen["argument_rewrites"] == ["temperature 1.5 lowered to 1, the highest anthropic takes"]

            plain = await call(alice, "generate_structured", prompt="n?", schema=SCHEMA, temperature=1.5)
            assert plain["provider"] == "ollama" and plain["argument_rewrites"] == []
            assert fakes.last(ollama)["options"]["temperature"] == 1.5


# --- errors of ours never count against a provider ---------------------------------------------------


def unencodable_requests(provider: Provider) -> list[Request]:
    """Requests that cannot be encoded for this provider's SDK: a schema holding a value JSON has no
    form for (all four; our own bug, were it to happen), a non-finite temperature and a lone
    surrogate in the prompt (all but google-genai, which writes `NaN` and escapes surrogates)."""
    native = provider.model.split("/", 1)[-1]
    ask = lambda **fields: Request(model=native, messages=[Message("user", fields.pop("prompt", "n?"))],  # noqa: E731
                                   timeout_s=10, **fields)
    requests = [ask(schema={"type": "object", "default": object()})]
    if provider.name != "gemini":
        requests += [ask(temperature=float("nan")), ask(temperature=float("inf")), ask(prompt="lone \ud800 half")]
    return requests


@pytest.mark.parametrize("provider", PROVIDERS, ids=str)
async def test_a_request_that_cannot_be_encoded_is_not_sent_and_not_the_providers_fault(
        settings_for: Callable[..., Settings], fakes: Fakes, provider: Provider) -> None:
    """Before the fix each of these left the adapter as a retryable "malformed response" from the
    provider (or, on Gemini, as an unexpected TypeError)."""
    app = App(settings_for())
    try:
        with anyio.fail_after(TEST_TIMEOUT_S):
            adapter = await app.registry.ready_adapter(provider.name)
            for request in unencodable_requests(provider):
                with pytest.raises(NotSentError) as caught:
                    await adapter.complete(request)
                assert not caught.value.retryable and caught.value.kind == "not_sent"
                message = caught.value.message
                assert "could not be sent" in message and "does not count against it" in message
            assert fakes.sent(provider) == 0
            completion = await adapter.complete(Request(model=provider.model.split("/", 1)[-1],
                                                        messages=[Message("user", "n?")], timeout_s=10))
            assert completion.text and fakes.sent(provider) == 1  # the same client still sends what it can
    finally:
        await app.aclose()


@pytest.mark.parametrize("provider", [p for p in PROVIDERS if p.name != "gemini"], ids=str)
async def test_unencodable_prompts_from_one_session_never_open_the_circuit_for_another(
        settings_for: Callable[..., Settings], fakes: Fakes, provider: Provider) -> None:
    """In-process (and from the command line, whose argv can hold lone surrogates) a prompt that is not
    valid Unicode reaches the adapter: with the circuit opening at the first failure and retries on,
    it is one attempt, not retried, and the other session's call still goes through. (google-genai
    escapes surrogates, so Gemini sends such a prompt: nothing of ours fails there.)"""
    server = build_server(settings_for("max_retries = 2\ncircuit_failures = 1"))
    with anyio.fail_after(TEST_TIMEOUT_S):
        async with Client(server) as alice, Client(server) as bob:
            for _ in range(3):
                text = await call_error(alice, "generate_structured", prompt="lone \ud800 half", schema=SCHEMA,
                                        model=provider.model)
                assert "could not be sent (UnicodeEncodeError" in text, text
                assert f"(1 attempt with {provider.model}: not_sent)" in text, text
            assert fakes.sent(provider) == 0
            result = await call(bob, "generate_structured", prompt="n?", schema=SCHEMA, model=provider.model)
            assert [(a["provider"], a["outcome"]) for a in result["attempts"]] == [(provider.name, "ok")]
            assert await circuit(bob, provider) == "closed"


async def test_the_clients_own_model_has_no_circuit_shared_between_sessions(
        settings_for: Callable[..., Settings]) -> None:
    """Each session's `client` is its own MCP client: one whose model keeps missing the deadline must
    not get `client` skipped for the others (before the fix it shared one circuit)."""
    from mcp_types import CreateMessageResult, TextContent

    async def slow(_ctx: Any, _params: Any) -> CreateMessageResult:
        await anyio.sleep(5)
        raise AssertionError("the deadline should have ended the call")

    async def quick(_ctx: Any, _params: Any) -> CreateMessageResult:
        return CreateMessageResult(role="assistant", content=TextContent(text=json.dumps({"n": 3})), model="m")

    server = build_server(settings_for("max_retries = 0\ncircuit_failures = 1"))
    with anyio.fail_after(TEST_TIMEOUT_S):
        async with Client(server, mode="legacy", sampling_callback=slow) as alice, \
                Client(server, mode="legacy", sampling_callback=quick) as bob:
            for _ in range(2):
                text = await call_error(alice, "generate_structured", prompt="n?", schema=SCHEMA, model="client",
                                        timeout_s=0.5)
                assert "did not answer within the call's deadline" in text, text
            result = await call(bob, "generate_structured", prompt="n?", schema=SCHEMA, model="client")
            assert result["data"] == {"n": 3}
            assert [(a["provider"], a["outcome"]) for a in result["attempts"]] == [("client", "ok")]


async def test_the_router_never_counts_a_not_sent_error(settings_for: Callable[..., Settings], fakes: Fakes) -> None:
    """The router's side of the rule, directly: a NotSentError leaves every circuit closed."""
    app = App(settings_for("max_retries = 2\ncircuit_failures = 1"))
    try:
        with anyio.fail_after(TEST_TIMEOUT_S):
            for _ in range(2):
                with pytest.raises(Exception, match="could not be sent"):
                    await app.router.run(CallSpec(prompt="\udcff", schema=SCHEMA, model="ollama/llama3.2:3b"))
            assert app.router.breakers.state("ollama") == "closed"
            assert fakes.sent(BY_NAME["ollama"]) == 0
    finally:
        await app.aclose()
