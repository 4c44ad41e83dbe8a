"""The MCP client's own model through sampling, end to end through the MCP SDK `Client`.

A `sampling_callback` plays the client's model. Every test runs in both protocol generations:
2025-11-25 (`mode="legacy"`: the server sends `sampling/createMessage` mid-call) and 2026-07-28
(`mode="auto"`: the tool answers with an input request and is called again with the answer).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, MCPError
from mcp_types import (
    CreateMessageRequestParams,
    CreateMessageResult,
    ErrorData,
    ImageContent,
    InputRequiredResult,
    TextContent,
)

from mcp_llm.config import Settings
from mcp_llm.server import build_server
from tests.conftest import call, call_error, free_port
from tests.fakes.ollama_server import FakeOllama
from tests.images import png_bytes

pytestmark = pytest.mark.anyio
MODES = pytest.mark.parametrize("mode", ["legacy", "auto"])
SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "population": {"type": "integer", "minimum": 0}},
    "required": ["city", "population"],
    "additionalProperties": False,
}
GOOD = json.dumps({"city": "Lyon", "population": 522000})


class ClientModel:
    """Plays the client's own model: answers from a queue (else `GOOD`), records every request."""

    def __init__(self, *replies: str, model: str = "fake-sonnet", decline: bool = False) -> None:
        self.replies = list(replies)
        self.model = model
        self.decline = decline
        self.requests: list[CreateMessageRequestParams] = []

    async def __call__(self, _ctx: Any, params: CreateMessageRequestParams) -> CreateMessageResult | ErrorData:
        self.requests.append(params)
        if self.decline:
            return ErrorData(code=-1, message="User rejected the sampling request")
        text = self.replies.pop(0) if self.replies else GOOD
        return CreateMessageResult(role="assistant", content=TextContent(text=text), model=self.model,
                                   stop_reason="endTurn")


def client_config(extra: str = "", model: str = "client") -> str:
    return f"""
[defaults]
model = "{model}"
max_retries = 0
max_repairs = 2
timeout_s = 20
{extra}
"""


@pytest.fixture
def make_server(make_settings: Callable[..., Settings]) -> Callable[..., Any]:
    def make(toml: str = client_config()) -> Any:
        return build_server(make_settings(toml))

    return make


@MODES
async def test_schema_valid_data_comes_back_from_the_clients_model(mode: str, make_server: Any) -> None:
    model = ClientModel()
    config = client_config('[providers.client]\nhints = ["sonnet"]\nintelligence_priority = 0.9\n')
    with anyio.fail_after(10):
        async with Client(make_server(config), mode=mode, sampling_callback=model) as client:
            result = await call(client, "generate_structured", prompt="The largest city of the Rhône?",
                                schema=SCHEMA, model="client/opus", system="Be terse.", temperature=0.2,
                                max_tokens=300)
    assert result["data"] == {"city": "Lyon", "population": 522000}
    assert result["provider"] == "client"
    assert result["model"] == "client/fake-sonnet"  # the model the client reports
    assert [(a["model"], a["outcome"]) for a in result["attempts"]] == [("client/opus", "ok")]
    [request] = model.requests
    assert request.messages[0].content.text == "The largest city of the Rhône?"
    assert request.system_prompt.startswith("Be terse.")
    assert '"population"' in request.system_prompt  # the caller's schema is in the prompt
    assert (request.temperature, request.max_tokens) == (0.2, 300)
    preferences = request.model_preferences
    assert [hint.name for hint in preferences.hints] == ["opus", "sonnet"]
    assert preferences.intelligence_priority == 0.9


@MODES
async def test_an_invalid_first_reply_is_re_asked_and_the_second_accepted(mode: str, make_server: Any) -> None:
    model = ClientModel('{"city": "Lyon", "population": "many"}', GOOD)
    with anyio.fail_after(10):
        async with Client(make_server(), mode=mode, sampling_callback=model) as client:
            result = await call(client, "generate_structured", prompt="Lyon?", schema=SCHEMA)
    assert result["data"]["population"] == 522000
    assert [a["outcome"] for a in result["attempts"]] == ["invalid_output", "ok"]
    assert len(model.requests) == 2  # each question asked once, in both generations
    repair = model.requests[1].messages
    assert [m.role for m in repair] == ["user", "assistant", "user"]
    assert repair[1].content.text == '{"city": "Lyon", "population": "many"}'
    assert "population" in repair[2].content.text


@MODES
async def test_replies_that_stay_invalid_fail_clearly_after_max_repairs(mode: str, make_server: Any) -> None:
    model = ClientModel("no idea", "still prose", "nope")
    with anyio.fail_after(10):
        async with Client(make_server(), mode=mode, sampling_callback=model) as client:
            message = await call_error(client, "generate_structured", prompt="Lyon?", schema=SCHEMA)
    assert len(model.requests) == 3
    assert "3 attempts with client" in message and "not_json" in message


@MODES
async def test_an_image_reaches_the_client_as_image_content(mode: str, make_server: Any, image_root: Path) -> None:
    png = png_bytes(24, 16)
    (image_root / "shot.png").write_bytes(png)
    model = ClientModel("A small test image.")
    config = client_config(f'[images]\nroots = ["{image_root}"]\n')
    with anyio.fail_after(10):
        async with Client(make_server(config), mode=mode, sampling_callback=model) as client:
            result = await call(client, "analyze_image", image=str(image_root / "shot.png"),
                                prompt="What is this?")
    assert result["text"] == "A small test image." and result["model"] == "client/fake-sonnet"
    [request] = model.requests
    image, text = request.messages[0].content
    assert isinstance(image, ImageContent) and image.mime_type == "image/png"
    assert base64.b64decode(image.data) == png
    assert text.text == "What is this?"


@MODES
async def test_a_client_without_sampling_gets_a_clear_error(mode: str, make_server: Any) -> None:
    with anyio.fail_after(10):
        async with Client(make_server(), mode=mode) as client:
            message = await call_error(client, "generate_structured", prompt="Lyon?", schema=SCHEMA)
            health = await call(client, "provider_health", provider="client")
            models = await call(client, "list_models", provider="client")
    assert "did not declare the sampling capability" in message
    assert "supports sampling" in message
    [entry] = health["providers"]
    assert entry["status"] == "unconfigured" and "sampling capability" in entry["detail"]
    [listed] = models["models"]
    assert listed["id"] == "client" and listed["available"] is False and "not available" in listed["label"]


async def test_a_declining_client_is_a_clear_error_within_a_second_legacy(make_server: Any) -> None:
    """2025-11-25: the server gets the refusal; it is not retried (max_retries is 3 here)."""
    model = ClientModel(decline=True)
    config = client_config().replace("max_retries = 0", "max_retries = 3")
    async with Client(make_server(config), mode="legacy", sampling_callback=model) as client:
        started = time.perf_counter()
        with anyio.fail_after(5):
            message = await call_error(client, "generate_structured", prompt="Lyon?", schema=SCHEMA)
        elapsed = time.perf_counter() - started
    assert elapsed < 1.0, elapsed
    assert len(model.requests) == 1
    assert "did not run the sampling request" in message and "User rejected" in message
    assert "declined" in message


async def test_a_declining_client_fails_its_own_call_within_a_second_modern(make_server: Any) -> None:
    """2026-07-28: a refused input request fails on the client's side; the server never sees it."""
    model = ClientModel(decline=True)
    async with Client(make_server(), sampling_callback=model) as client:
        started = time.perf_counter()
        with anyio.fail_after(5), pytest.raises(MCPError, match="User rejected"):
            await client.call_tool("generate_structured", {"prompt": "Lyon?", "schema": SCHEMA})
        elapsed = time.perf_counter() - started
    assert elapsed < 1.0, elapsed
    assert len(model.requests) == 1


async def test_a_decline_moves_on_to_the_next_model_of_the_chain(make_server: Any, fake_ollama: FakeOllama) -> None:
    model = ClientModel(decline=True)
    config = client_config(f'fallback = ["ollama/llama3.2:3b"]\n[providers.ollama]\nendpoint = "{fake_ollama.url}"\n')
    with anyio.fail_after(10):
        async with Client(make_server(config), mode="legacy", sampling_callback=model) as client:
            result = await call(client, "generate_structured", prompt="Lyon?", schema=SCHEMA)
    assert result["model"] == "ollama/llama3.2:3b"
    assert [(a["model"], a["error"]) for a in result["attempts"]] == [("client", "declined"),
                                                                       ("ollama/llama3.2:3b", None)]


@MODES
async def test_with_ollama_down_the_call_falls_back_to_the_clients_model(mode: str, make_server: Any) -> None:
    model = ClientModel()
    config = client_config(f'[providers.ollama]\nendpoint = "http://127.0.0.1:{free_port()}"\n'
                           "[providers.client]\nas_fallback = true\n", model="ollama/llama3.2:3b")
    with anyio.fail_after(15):
        async with Client(make_server(config), mode=mode, sampling_callback=model) as client:
            result = await call(client, "generate_structured", prompt="Lyon?", schema=SCHEMA)
    assert result["data"]["city"] == "Lyon"
    assert result["provider"] == "client" and result["model"] == "client/fake-sonnet"
    assert [(a["model"], a["outcome"], a["error"]) for a in result["attempts"]] == [
        ("ollama/llama3.2:3b", "error", "unavailable"),
        ("client", "ok", None),
    ]


@MODES
async def test_a_resumed_call_does_not_ask_the_failed_models_again(mode: str, make_server: Any,
                                                                   fake_ollama: FakeOllama) -> None:
    """The failed Ollama try is carried between rounds, not repeated on each one; re-asks still work."""
    fake_ollama.enqueue(status=404, error="model 'llama3.2:3b' not found")
    model = ClientModel("prose, not JSON", GOOD)
    config = client_config(f'[providers.ollama]\nendpoint = "{fake_ollama.url}"\n'
                           "[providers.client]\nas_fallback = true\n", model="ollama/llama3.2:3b")
    with anyio.fail_after(15):
        async with Client(make_server(config), mode=mode, sampling_callback=model) as client:
            result = await call(client, "generate_structured", prompt="Lyon?", schema=SCHEMA, timeout_s=30)
    chats = [r for r in fake_ollama.requests if r.path == "/api/chat"]
    assert len(chats) == 1
    assert [(a["model"], a["outcome"]) for a in result["attempts"]] == [
        ("ollama/llama3.2:3b", "error"), ("client", "invalid_output"), ("client", "ok")]
    assert result["latency_ms"] >= sum(a["latency_ms"] for a in result["attempts"][:1])


@MODES
async def test_provider_health_and_list_models_never_sample(mode: str, make_server: Any) -> None:
    model = ClientModel()
    with anyio.fail_after(10):
        async with Client(make_server(), mode=mode, sampling_callback=model) as client:
            health = await call(client, "provider_health")
            models = await call(client, "list_models", provider="client")
    assert model.requests == []
    [entry] = [p for p in health["providers"] if p["provider"] == "client"]
    assert entry["status"] == "ok" and "declared sampling" in entry["detail"]
    assert models["models"][0]["available"] is True


@MODES
async def test_concurrent_calls_from_two_clients_each_get_their_own_model(mode: str, make_server: Any) -> None:
    """The sampling handle is per call: two sessions on one server never cross."""
    server = make_server()
    alice, bob = ClientModel(model="alice-model"), ClientModel(model="bob-model")
    results: dict[str, Any] = {}

    async def ask(name: str, model: ClientModel) -> None:
        async with Client(server, mode=mode, sampling_callback=model) as client:
            for i in range(3):
                results[f"{name}{i}"] = await call(client, "generate_structured", prompt=name, schema=SCHEMA)

    with anyio.fail_after(15):
        async with anyio.create_task_group() as tg:
            tg.start_soon(ask, "alice", alice)
            tg.start_soon(ask, "bob", bob)
    assert {results[f"alice{i}"]["model"] for i in range(3)} == {"client/alice-model"}
    assert {results[f"bob{i}"]["model"] for i in range(3)} == {"client/bob-model"}
    assert {r.messages[0].content.text for r in alice.requests} == {"alice"}


async def test_a_tampered_request_state_is_refused(make_server: Any) -> None:
    """2026-07-28: `request_state` comes back from the client, so it is checked before use."""
    model = ClientModel()
    arguments = {"prompt": "Lyon?", "schema": SCHEMA}
    with anyio.fail_after(10):
        async with Client(make_server(), sampling_callback=model) as client:
            first = await client.session.call_tool("generate_structured", arguments, allow_input_required=True)
            assert isinstance(first, InputRequiredResult) and first.request_state
            [key] = first.input_requests
            answer = CreateMessageResult(role="assistant", content=TextContent(text=GOOD), model="m")
            forged = first.request_state[:-4] + ("AAAA" if not first.request_state.endswith("AAAA") else "BBBB")
            with pytest.raises(MCPError, match="requestState"):
                await client.session.call_tool("generate_structured", arguments, input_responses={key: answer},
                                               request_state=forged, allow_input_required=True)
            # the state is bound to the call's arguments: it cannot be replayed for another prompt
            with pytest.raises(MCPError, match="requestState"):
                await client.session.call_tool("generate_structured", {**arguments, "prompt": "Paris?"},
                                               input_responses={key: answer}, request_state=first.request_state,
                                               allow_input_required=True)
            # an answer under a key that was not asked is not taken: the question is asked again
            again = await client.session.call_tool("generate_structured", arguments,
                                                   input_responses={"other": answer},
                                                   request_state=first.request_state, allow_input_required=True)
            assert isinstance(again, InputRequiredResult) and list(again.input_requests) == [key]
            done = await client.session.call_tool("generate_structured", arguments, input_responses={key: answer},
                                                  request_state=again.request_state, allow_input_required=True)
    assert not done.is_error and done.structured_content["data"]["city"] == "Lyon"


def test_our_own_signature_refuses_a_forged_state() -> None:
    from mcp_llm.client_call import STATE_VERSION, StateCodec, _State
    from mcp_llm.errors import InputError

    codec = StateCodec()
    token = codec.seal(_State(v=STATE_VERSION, started=time.time()))
    assert codec.unseal(token).v == STATE_VERSION
    signature, body = token.split(".")
    forged = base64.urlsafe_b64encode(json.dumps({"v": 1, "started": 0, "done": []}).encode()).decode()
    for bad in (f"{signature}.{forged}", "x" * 10, f"{signature}.{body}x", StateCodec().seal(codec.unseal(token))):
        with pytest.raises(InputError, match="refused"):
            codec.unseal(bad)


async def test_a_resumed_call_keeps_the_deadline_it_started_with(make_server: Any, fake_ollama: FakeOllama) -> None:
    """2026-07-28: the time before the client's answer counts; the resumed call does not get a fresh timeout_s."""
    fake_ollama.enqueue(status=404, error="model 'llama3.2:3b' not found", delay_s=1.5)
    model = ClientModel(GOOD)

    async def slow_model(ctx: Any, params: CreateMessageRequestParams) -> CreateMessageResult | ErrorData:
        await anyio.sleep(1.0)  # the client's model answers after the call's 2 s are over
        return await model(ctx, params)

    config = client_config(f'[providers.ollama]\nendpoint = "{fake_ollama.url}"\n'
                           "[providers.client]\nas_fallback = true\n", model="ollama/llama3.2:3b")
    with anyio.fail_after(15):
        async with Client(make_server(config), mode="auto", sampling_callback=slow_model) as client:
            message = await call_error(client, "generate_structured", prompt="Lyon?", schema=SCHEMA, timeout_s=2)
    assert len(model.requests) == 1, "the client's model was not asked"
    assert "did not answer within the call's deadline" in message, message


@MODES
async def test_one_cap_on_the_clients_answer_in_both_generations(mode: str, make_server: Any) -> None:
    """On 2025-11-25 a huge answer was read whole, found too long by the reply reader, and sent back to
    the client in each re-ask (a 20 MB answer took 14.5 s over stdio); 2026-07-28 refused it at 500,000
    characters. Both now refuse it at once, asking once."""
    model = ClientModel("x" * 5_000_000)
    with anyio.fail_after(15):
        async with Client(make_server(), mode=mode, sampling_callback=model) as client:
            started = time.perf_counter()
            message = await call_error(client, "generate_structured", prompt="Lyon?", schema=SCHEMA)
            elapsed = time.perf_counter() - started
            again = await call(client, "generate_structured", prompt="Lyon?", schema=SCHEMA)
    assert "answered with 5,000,000 characters, over 500,000" in message, message
    assert "(1 attempt with client: bad_request)" in message, message
    assert len(model.requests) == 2, "the long answer was re-asked"
    assert elapsed < 5, elapsed
    assert again["data"]["city"] == "Lyon"
