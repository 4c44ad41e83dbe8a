"""AnthropicAdapter through the real `anthropic` SDK, over real HTTP, against the fake Anthropic API."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mcp_llm.adapters.anthropic import AnthropicAdapter
from mcp_llm.adapters.base import ImageInput, Message, Request, Timeouts
from mcp_llm.config import Settings
from mcp_llm.errors import (
    AuthError,
    BadRequestError,
    ProviderServerError,
    ProviderTimeout,
    ProviderUnavailable,
)
from mcp_llm.schema.dialects import compile_anthropic
from tests.conftest import assert_cancelling_closes, budget, free_port
from tests.fakes.anthropic_server import FakeAnthropic, forced_tool, output_schema
from tests.images import png_bytes

pytestmark = pytest.mark.anyio


KEY = "sk-ant-canary-0042"
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"title": {"type": "string"}, "tags": {"type": "array", "items": {"type": "string"}}},
    "required": ["title", "tags"],
}


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(api_key=KEY) as server:
        yield server
        assert not server.errors, server.errors


@pytest.fixture
def make_adapter(fake: FakeAnthropic, make_settings: Callable[..., Settings]) -> Callable[..., AnthropicAdapter]:
    def make(endpoint: str | None = None, key: str | None = KEY, timeout_s: float = 10,
             first_response: bool = True) -> AnthropicAdapter:
        settings = make_settings(f'[providers.anthropic]\nendpoint = "{endpoint or fake.url}"\n',
                                 env={"ANTHROPIC_API_KEY": key} if key else {})
        timeouts = budget(timeout_s) if first_response else Timeouts(total_s=timeout_s)  # no first-byte budget
        return AnthropicAdapter(settings.providers.anthropic, timeouts=timeouts)

    return make


def ask(model: str = "claude-haiku-4-5", *, schema: dict[str, Any] | None = None, **fields: Any) -> Request:
    compiled = compile_anthropic(schema).schema if schema is not None else None
    return Request(model=model, messages=[Message("user", "Name a film.")], schema=compiled, **fields)


async def test_native_structured_output_request_and_reply(make_adapter, fake: FakeAnthropic) -> None:
    adapter = make_adapter()
    fake.enqueue({"title": "Alien", "tags": ["sci-fi"]}, input_tokens=12, output_tokens=9)

    completion = await adapter.complete(ask(schema=SCHEMA, system="Be brief.", temperature=0.3, max_tokens=200))

    assert json.loads(completion.text) == {"title": "Alien", "tags": ["sci-fi"]}
    assert (completion.input_tokens, completion.output_tokens) == (12, 9)
    (sent,) = fake.message_requests
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.json["system"] == "Be brief."
    assert sent.json["temperature"] == 0.3
    assert sent.json["max_tokens"] == 200
    assert output_schema(sent.json) == compile_anthropic(SCHEMA).schema
    assert output_schema(sent.json)["additionalProperties"] is False
    assert forced_tool(sent.json) is None
    await adapter.aclose()


async def test_model_without_native_output_falls_back_to_a_forced_tool_and_remembers(
    make_adapter, fake: FakeAnthropic
) -> None:
    adapter = make_adapter()
    first = await adapter.complete(ask("claude-opus-4-1", schema=SCHEMA))
    second = await adapter.complete(ask("claude-opus-4-1", schema=SCHEMA))

    assert set(json.loads(first.text)) == {"title", "tags"}
    assert set(json.loads(second.text)) == {"title", "tags"}
    bodies = [r.json for r in fake.message_requests]
    assert output_schema(bodies[0]) is not None  # tried natively once…
    assert forced_tool(bodies[1])["input_schema"] == compile_anthropic(SCHEMA).schema  # …then the tool
    assert output_schema(bodies[2]) is None and forced_tool(bodies[2]) is not None  # and remembered
    assert len(bodies) == 3
    await adapter.aclose()


async def test_an_inherited_base_goes_as_strict_output_and_one_that_cannot_be_merged_as_a_forced_tool(
    make_adapter, fake: FakeAnthropic
) -> None:
    """Closed apart, an object and an `allOf` branch that cannot be merged into it would admit nothing:
    such a schema is left open, so it cannot be strict `output_config`; a mergeable base can."""
    base = {"type": "object", "properties": {"title": {"type": "string"}}, "required": ["title"]}
    merged = {"$defs": {"Base": base}, "type": "object", "properties": {"tags": SCHEMA["properties"]["tags"]},
              "allOf": [{"$ref": "#/$defs/Base"}]}
    # a base whose keys cannot all be listed (a map of `x-` keys): closing the object would forbid them
    # (a `oneOf` of `required` lists no longer leaves it open: its names are listed, and it goes strict)
    left_open = {**merged, "$defs": {"Base": {**base, "patternProperties": {"^x-": {}}}}}
    adapter = make_adapter()
    for schema in (merged, left_open):
        fake.enqueue({"title": "Alien", "tags": ["sci-fi"]})
        completion = await adapter.complete(ask(schema=schema))
        assert json.loads(completion.text) == {"title": "Alien", "tags": ["sci-fi"]}
    strict, tool = (r.json for r in fake.message_requests)
    assert output_schema(strict) == compile_anthropic(merged).schema and forced_tool(strict) is None
    assert output_schema(tool) is None and forced_tool(tool)["input_schema"] == compile_anthropic(left_open).schema
    await adapter.aclose()


async def test_free_text_and_image_blocks(make_adapter, fake: FakeAnthropic) -> None:
    adapter = make_adapter()
    raw = png_bytes(3, 3)
    fake.enqueue("A grey square.", stop_reason="end_turn")
    request = Request(model="claude-haiku-4-5",
                      messages=[Message("user", "What is it?", [ImageInput(raw, "image/png")])])
    completion = await adapter.complete(request)
    assert completion.text == "A grey square." and completion.finish_reason == "end_turn"
    content = fake.message_requests[-1].json["messages"][0]["content"]
    assert content[0]["type"] == "image"
    assert content[0]["source"]["media_type"] == "image/png"
    assert base64.b64decode(content[0]["source"]["data"]) == raw
    assert content[-1] == {"type": "text", "text": "What is it?"}
    await adapter.aclose()


async def test_wrong_key_is_an_auth_error_naming_the_variable(make_adapter) -> None:
    adapter = make_adapter(key="sk-ant-wrong-key")
    with pytest.raises(AuthError) as caught:
        await adapter.complete(ask())
    assert "ANTHROPIC_API_KEY" in caught.value.user_message()
    assert "sk-ant-wrong-key" not in caught.value.user_message()
    await adapter.aclose()


async def test_transport_faults(make_adapter, fake: FakeAnthropic) -> None:
    refused = make_adapter(endpoint=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ProviderUnavailable):
        await refused.complete(ask())
    await refused.aclose()

    slow = make_adapter(timeout_s=0.5)
    fake.enqueue(hang=True)
    with pytest.raises(ProviderTimeout):
        await slow.complete(ask())
    assert fake.wait_for_disconnect(timeout=5)

    fake.enqueue(raw_body=b'{"id": "msg_1", "content": [')
    with pytest.raises(ProviderServerError, match="malformed"):
        await slow.complete(ask())

    fake.enqueue(drop_connection=True)
    with pytest.raises(ProviderUnavailable):
        await slow.complete(ask())
    await slow.aclose()


async def test_list_models_and_health(make_adapter, fake: FakeAnthropic) -> None:
    adapter = make_adapter()
    models = await adapter.list_models()
    assert {m.id for m in models} >= {"claude-haiku-4-5-20251001", "claude-opus-4-1-20250805"}
    assert all(m.source == "discovered" and m.provider == "anthropic" and m.vision for m in models)

    health = await adapter.health()
    assert health.status == "ok" and health.has_api_key is True
    assert health.endpoint == fake.url and health.latency_ms is not None
    assert KEY not in health.model_dump_json()
    await adapter.aclose()


async def test_health_without_a_key_is_unconfigured(make_adapter) -> None:
    health = await make_adapter(key=None).health()
    assert health.status == "unconfigured" and health.has_api_key is False
    assert "ANTHROPIC_API_KEY" in health.detail


async def test_health_down_when_unreachable(make_adapter) -> None:
    adapter = make_adapter(endpoint=f"http://127.0.0.1:{free_port()}")
    health = await adapter.health()
    assert health.status == "down" and "Cannot reach Anthropic" in health.detail
    await adapter.aclose()


async def test_usage_adds_the_prompt_cache_back_into_the_input_and_breaks_out_thinking(
    make_adapter, fake: FakeAnthropic
) -> None:
    """The Messages API counts in `input_tokens` only what follows the last cache breakpoint; the tokens
    read from and written to the prompt cache come apart, and `output_tokens` include the thinking. The
    completion has every input token in `input_tokens`, each part also counted apart (priced apart)."""
    adapter = make_adapter()
    fake.enqueue({"title": "Alien", "tags": []}, input_tokens=12, cache_read_input_tokens=2048,
                 cache_creation_input_tokens=300, output_tokens=90, thinking_tokens=64)
    fake.enqueue({"title": "Heat", "tags": []}, input_tokens=7, output_tokens=5)

    cached = await adapter.complete(ask(schema=SCHEMA))
    plain = await adapter.complete(ask(schema=SCHEMA))

    assert (cached.input_tokens, cached.cache_read_tokens, cached.cache_write_tokens) == (12 + 2048 + 300, 2048, 300)
    assert (cached.output_tokens, cached.thinking_tokens) == (90, 64)
    assert (plain.input_tokens, plain.cache_read_tokens, plain.cache_write_tokens) == (7, 0, 0)
    assert (plain.output_tokens, plain.thinking_tokens) == (5, None)  # not reported: unknown, not 0
    await adapter.aclose()


# --- one plain request when nobody streams ----------------------------------------------------------


def _answers(fake: FakeAnthropic) -> None:
    """The same three answers queued: JSON text with every usage field, a forced tool's input, a cut-off."""
    fake.enqueue({"title": "Alien", "tags": ["sci-fi"]}, input_tokens=12, cache_read_input_tokens=2048,
                 cache_creation_input_tokens=300, output_tokens=90, thinking_tokens=64)
    fake.enqueue({"title": "Heat", "tags": []}, input_tokens=7, output_tokens=5)
    fake.enqueue("{\"title\": \"A much longer", stop_reason="max_tokens", input_tokens=7, output_tokens=3)


async def _read(adapter: AnthropicAdapter, stream: bool) -> list[Any]:
    native = await adapter.complete(ask(schema=SCHEMA, max_tokens=200, stream=stream))
    tool = await adapter.complete(ask("claude-opus-4-1", schema=SCHEMA, stream=stream))  # refuses native: a tool
    with pytest.raises(BadRequestError, match="cut off at the max_tokens limit \\(3\\)") as caught:
        await adapter.complete(ask(schema=SCHEMA, max_tokens=3, stream=stream))
    return [native, tool, caught.value.answered]


async def test_a_request_nobody_streams_is_one_plain_request_read_as_the_streamed_one(
    make_adapter, fake: FakeAnthropic
) -> None:
    """No progress asked and no first-response budget: `messages.create` unstreamed (no `stream` sent), and
    the same Completions as streamed: text, the forced tool's input, stop reason, usage with the prompt
    cache and thinking, and an answer cut off at max_tokens refused with its usage kept."""
    first, second = make_adapter(first_response=False), make_adapter(first_response=False)
    _answers(fake)
    plain = await _read(first, stream=False)
    plain_bodies = [r.json for r in fake.message_requests]
    _answers(fake)
    streamed = await _read(second, stream=True)
    streamed_bodies = [r.json for r in fake.message_requests][len(plain_bodies):]

    assert plain == streamed
    native, tool, cut = plain
    assert json.loads(native.text) == {"title": "Alien", "tags": ["sci-fi"]} and native.finish_reason == "end_turn"
    assert (native.input_tokens, native.cache_read_tokens, native.cache_write_tokens) == (12 + 2048 + 300, 2048, 300)
    assert (native.output_tokens, native.thinking_tokens) == (90, 64)
    assert json.loads(tool.text) == {"title": "Heat", "tags": []} and tool.finish_reason == "tool_use"
    assert (cut.text, cut.finish_reason, cut.input_tokens, cut.output_tokens) == (
        '{"title": "A much longer', "max_tokens", 7, 3)
    assert all("stream" not in body for body in plain_bodies), plain_bodies
    assert all(body["stream"] is True for body in streamed_bodies)
    assert len(plain_bodies) == len(streamed_bodies) == 4  # the opus model's native try, refused, then its tool
    await first.aclose()
    await second.aclose()


async def test_a_plain_request_refused_or_failing_is_the_error_the_stream_gives(
    make_adapter, fake: FakeAnthropic
) -> None:
    """A refusal is the model's answer, not worth asking again; a failure mid-answer is, unstreamed, the
    API's error status (529 overloaded): retryable, as the stream's error event is."""
    adapter = make_adapter(first_response=False)
    for stream in (False, True):
        fake.enqueue("I can't help with that", stop_reason="refusal", input_tokens=9, output_tokens=4)
        fake.enqueue({"title": "Alien", "tags": []}, stream_error="overloaded_error")
        with pytest.raises(BadRequestError, match="declined to answer") as refused:
            await adapter.complete(ask(schema=SCHEMA, stream=stream))
        with pytest.raises(ProviderServerError) as failed:
            await adapter.complete(ask(schema=SCHEMA, stream=stream))
        assert refused.value.answered.output_tokens == 4 and not refused.value.retryable
        assert failed.value.retryable and "Overloaded" in failed.value.message
    assert ["stream" in r.json for r in fake.message_requests] == [False, False, True, True]
    await adapter.aclose()


async def test_progress_a_first_response_budget_or_a_long_answer_still_stream(
    make_adapter, fake: FakeAnthropic
) -> None:
    """A stream is kept where it buys something: pieces someone reads, a first-response budget (the first
    byte of a plain answer is its last), and a max_tokens the API could take over 10 minutes to send
    unstreamed (the SDK's own rule: an hour per 128,000 tokens)."""
    pieces: list[str] = []

    async def on_chunk(piece: str) -> None:
        pieces.append(piece)

    plain = make_adapter(first_response=False)
    await plain.complete(ask(schema=SCHEMA, on_chunk=on_chunk, stream=True))
    await plain.complete(ask(schema=SCHEMA, max_tokens=21_334, stream=False))
    await plain.complete(ask(schema=SCHEMA, max_tokens=21_333, stream=False))  # ten minutes: still plain
    budgeted = make_adapter()  # a first-response budget
    await budgeted.complete(ask(schema=SCHEMA, stream=False))

    assert len(pieces) > 1 and json.loads("".join(pieces)) == {"title": "fake", "tags": []}
    assert [r.json.get("stream") for r in fake.message_requests] == [True, True, None, True]
    await plain.aclose()
    await budgeted.aclose()


async def test_cancelling_a_plain_request_closes_it(make_adapter, fake: FakeAnthropic) -> None:
    adapter = make_adapter(timeout_s=30, first_response=False)
    await assert_cancelling_closes(fake, lambda: adapter.complete(ask(stream=False)))
    assert "stream" not in fake.message_requests[0].json
    await adapter.aclose()
