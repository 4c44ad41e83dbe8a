"""The fake Anthropic server, driven only through the real `anthropic` SDK.

If these pass, a test of our Anthropic adapter that fails is about the adapter, not the fake.
"""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anthropic
import httpx2
import jsonschema
import pytest

from tests.fakes.anthropic_server import FakeAnthropic, FakeClaude, default_responder
from tests.images import image_bytes, png_bytes

KEY = "test-key"
HAIKU, OPUS, NO_NATIVE = "claude-haiku-4-5", "claude-opus-4-6", "claude-opus-4-1"
USER = [{"role": "user", "content": "hello"}]
SCHEMA = {
    "type": "object",
    "properties": {"caption": {"type": "string"}, "score": {"type": "integer", "minimum": 1}},
    "required": ["caption", "score"],
    "additionalProperties": False,
}
TOOL = {"name": "answer", "description": "Give the answer.", "input_schema": SCHEMA}
FORCE = {"type": "tool", "name": "answer"}


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as server:
        yield server
    assert server.errors == []


@pytest.fixture
async def client(fake: FakeAnthropic) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(api_key=KEY, base_url=fake.url, max_retries=0, timeout=5) as c:
        yield c


async def create(c: anthropic.AsyncAnthropic, **kwargs: Any) -> anthropic.types.Message:
    kwargs.setdefault("model", HAIKU)
    kwargs.setdefault("max_tokens", 256)
    kwargs.setdefault("messages", USER)
    return await c.messages.create(**kwargs)


def png_block(data: bytes, media_type: str = "image/png") -> dict[str, Any]:
    encoded = base64.b64encode(data).decode()
    return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": encoded}}


# --- happy paths ---------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_output_config_answers_schema_valid_json_text(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    reply = await create(
        client,
        system="You caption images.",
        output_config={"format": {"type": "json_schema", "schema": SCHEMA}},
        extra_body={"temperature": 0.1},
    )
    (block,) = reply.content
    assert block.type == "text"
    jsonschema.validate(json.loads(block.text), SCHEMA)
    assert reply.stop_reason == "end_turn" and reply.role == "assistant" and reply.model == HAIKU
    assert reply.id.startswith("msg_") and reply.usage.input_tokens > 0 and reply.usage.output_tokens > 0
    (sent,) = fake.message_requests
    assert sent.json["output_config"] == {"format": {"type": "json_schema", "schema": SCHEMA}}
    assert sent.json["temperature"] == 0.1 and sent.json["system"] == "You caption images."
    assert sent.headers["authorization"] == f"Bearer {KEY}" and "x-api-key" not in sent.headers
    assert sent.headers["anthropic-version"] == anthropic._constants.ANTHROPIC_API_VERSION
    assert sent.headers["content-type"] == "application/json"


@pytest.mark.anyio
async def test_forced_tool_answers_a_tool_use_block(fake: FakeAnthropic, client: anthropic.AsyncAnthropic) -> None:
    reply = await create(client, tools=[TOOL], tool_choice=FORCE)
    (block,) = reply.content
    assert block.type == "tool_use" and block.name == "answer" and block.id.startswith("toolu_")
    jsonschema.validate(block.input, SCHEMA)
    assert reply.stop_reason == "tool_use"
    fake.enqueue({"caption": "a cat", "score": 3})
    fake.enqueue('{"caption": "a dog", "score": 4}')
    first, second = await create(client, tools=[TOOL], tool_choice=FORCE), await create(client, tools=[TOOL])
    assert first.content[0].input == {"caption": "a cat", "score": 3}  # type: ignore[union-attr]
    assert second.content[0].type == "text"  # tool_choice auto: text unless as_tool says otherwise
    fake.enqueue({"caption": "picked", "score": 1}, as_tool="answer")
    picked = await create(client, tools=[TOOL], tool_choice={"type": "auto"})
    assert picked.content[0].type == "tool_use" and picked.stop_reason == "tool_use"
    fake.enqueue("I would rather talk.", as_tool=False)
    rebel = await create(client, tools=[TOOL], tool_choice=FORCE)
    assert rebel.content[0].type == "text" and rebel.stop_reason == "end_turn"


@pytest.mark.anyio
async def test_image_blocks_are_checked_like_the_api(fake: FakeAnthropic, client: anthropic.AsyncAnthropic) -> None:
    png = png_bytes()
    content = [png_block(png), {"type": "text", "text": "describe"}]
    reply = await create(client, messages=[{"role": "user", "content": content}])
    assert reply.content[0].type == "text"
    sent = fake.message_requests[0].json["messages"][0]["content"]
    assert sent[0]["source"] == {"type": "base64", "media_type": "image/png", "data": base64.b64encode(png).decode()}
    bad = [
        (png_block(image_bytes(4, 4, "JPEG")), "does not match the provided media type image/png"),
        (png_block(b"not an image"), "Could not process image"),
        (png_block(png, "image/bmp"), "media_type"),
        ({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "%%%"}}, "base64"),
    ]
    for block, words in bad:
        with pytest.raises(anthropic.BadRequestError) as err:
            await create(client, messages=[{"role": "user", "content": [block]}])
        assert words in str(err.value.api_message) and err.value.type == "invalid_request_error"
    with FakeAnthropic(strict_images=False) as lax:
        async with anthropic.AsyncAnthropic(api_key=KEY, base_url=lax.url, max_retries=0, timeout=5) as c:
            await create(c, messages=[{"role": "user", "content": [png_block(b"not an image")]}])


@pytest.mark.anyio
async def test_model_without_native_structured_output_refuses_output_config_but_takes_a_tool(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    fake.enqueue("kept for later")
    with pytest.raises(anthropic.BadRequestError) as err:
        await create(client, model=NO_NATIVE, output_config={"format": {"type": "json_schema", "schema": SCHEMA}})
    assert err.value.status_code == 400 and "output_config" in str(err.value.api_message)
    assert fake.queued == 1
    fake.reset()
    reply = await create(client, model=NO_NATIVE, tools=[TOOL], tool_choice=FORCE)
    jsonschema.validate(reply.content[0].input, SCHEMA)  # type: ignore[union-attr]


@pytest.mark.anyio
async def test_x_api_key_header_and_responder_override(fake: FakeAnthropic) -> None:
    seen: list[dict[str, Any]] = []

    def responder(body: dict[str, Any]) -> str:
        seen.append(body)
        return default_responder(body) + " (custom)"

    fake.responder = responder
    async with anthropic.AsyncAnthropic(
        api_key=None, auth_token=None, base_url=fake.url, max_retries=0, timeout=5, default_headers={"x-api-key": KEY}
    ) as c:
        reply = await create(c)
    assert reply.content[0].text.endswith("(custom)")  # type: ignore[union-attr]
    assert seen[0]["model"] == HAIKU and fake.requests[-1].headers["x-api-key"] == KEY


@pytest.mark.anyio
async def test_max_tokens_cuts_text_and_explicit_blocks_pass_verbatim(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    fake.enqueue("one two three four five")
    cut = await create(client, max_tokens=2)
    assert cut.content[0].text == "one two " and cut.stop_reason == "max_tokens"  # type: ignore[union-attr]
    assert cut.usage.output_tokens == 2
    blocks = [
        {"type": "text", "text": "Let me answer."},
        {"type": "tool_use", "id": "toolu_x", "name": "answer", "input": {"caption": "c", "score": 2}},
    ]
    fake.enqueue(blocks=blocks, input_tokens=7, output_tokens=9)
    reply = await create(client, tools=[TOOL])
    assert [b.type for b in reply.content] == ["text", "tool_use"]
    assert (reply.usage.input_tokens, reply.usage.output_tokens, reply.stop_reason) == (7, 9, "tool_use")


@pytest.mark.anyio
async def test_count_tokens(client: anthropic.AsyncAnthropic) -> None:
    counted = await client.messages.count_tokens(model=HAIKU, messages=[{"role": "user", "content": "x" * 400}])
    assert counted.input_tokens == 100


# --- streaming ---------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_streamed_text_events_in_order(fake: FakeAnthropic, client: anthropic.AsyncAnthropic) -> None:
    fake.enqueue("one two three", input_tokens=11, output_tokens=3)
    stream = await create(client, stream=True)
    events = [event async for event in stream]
    assert [e.type for e in events] == [
        "message_start",
        "content_block_start",
        *["content_block_delta"] * 3,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert "".join(e.delta.text for e in events if e.type == "content_block_delta") == "one two three"  # type: ignore[union-attr]
    start, delta = events[0], events[-2]
    assert start.message.usage.input_tokens == 11 and start.message.content == []  # type: ignore[union-attr]
    assert delta.delta.stop_reason == "end_turn" and delta.usage.output_tokens == 3  # type: ignore[union-attr]
    assert fake.message_requests[0].json["stream"] is True


@pytest.mark.anyio
async def test_raw_sse_carries_a_ping_and_named_events(client: anthropic.AsyncAnthropic) -> None:
    async with client.messages.with_streaming_response.create(
        model=HAIKU, max_tokens=64, messages=USER, stream=True
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["request-id"].startswith("req_")
        lines = [line async for line in response.iter_lines()]
    names = [line.removeprefix("event: ") for line in lines if line.startswith("event: ")]
    assert names[:3] == ["message_start", "content_block_start", "ping"] and names[-1] == "message_stop"
    data = [json.loads(line.removeprefix("data: ")) for line in lines if line.startswith("data: ")]
    assert [d["type"] for d in data] == names


@pytest.mark.anyio
async def test_stream_helper_accumulates_a_tool_call(client: anthropic.AsyncAnthropic) -> None:
    async with client.messages.stream(
        model=OPUS, max_tokens=256, messages=USER, tools=[TOOL], tool_choice=FORCE
    ) as stream:
        partial = [e.partial_json async for e in stream if e.type == "input_json"]
        final = await stream.get_final_message()
    assert partial[0] == "" and len(partial) > 2
    jsonschema.validate(final.content[0].input, SCHEMA)  # type: ignore[union-attr]
    assert final.stop_reason == "tool_use"


@pytest.mark.anyio
async def test_stream_helper_text_and_output_config(client: anthropic.AsyncAnthropic) -> None:
    async with client.messages.stream(
        model=HAIKU,
        max_tokens=256,
        messages=USER,
        output_config={"format": {"type": "json_schema", "schema": SCHEMA}},
    ) as stream:
        text = "".join([t async for t in stream.text_stream])
    jsonschema.validate(json.loads(text), SCHEMA)


@pytest.mark.anyio
async def test_error_event_mid_stream(fake: FakeAnthropic, client: anthropic.AsyncAnthropic) -> None:
    fake.enqueue("a b c d e f g h", stream_error="overloaded_error")
    stream = await create(client, stream=True)
    seen = []
    with pytest.raises(anthropic.APIStatusError) as err:
        async for event in stream:
            seen.append(event.type)
    assert type(err.value) is anthropic.APIStatusError and err.value.status_code == 200
    assert err.value.type == "overloaded_error" and err.value.api_message == "Overloaded"
    assert seen[0] == "message_start" and "message_stop" not in seen


# --- models ------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_models_list_pages_and_retrieve(fake: FakeAnthropic, client: anthropic.AsyncAnthropic) -> None:
    ids = [m.id async for m in client.models.list(limit=2)]
    assert ids == [m.id for m in fake.models]
    pages = [r.query for r in fake.requests if r.path == "/v1/models"]
    assert pages == [{"limit": "2"}, {"limit": "2", "after_id": ids[1]}]
    first = await client.models.list(limit=1)
    assert (first.has_more, first.first_id, first.last_id) == (True, ids[0], ids[0])
    before = await client.models.list(before_id=ids[2], limit=1)
    assert [m.id for m in before.data] == [ids[1]] and before.has_more
    info = await client.models.retrieve(HAIKU)  # an alias resolves to the dated id
    assert info.id == "claude-haiku-4-5-20251001" and info.display_name == "Claude Haiku 4.5"
    assert info.type == "model" and info.created_at.year == 2025
    assert info.capabilities and info.capabilities.structured_outputs.supported
    assert not (await client.models.retrieve(NO_NATIVE)).capabilities.structured_outputs.supported  # type: ignore[union-attr]
    with pytest.raises(anthropic.NotFoundError):
        await client.models.retrieve("claude-nope")


def test_custom_models() -> None:
    with FakeAnthropic(api_key=None, models=[FakeClaude("claude-test-1", "Test", native_structured=False)]) as fake:
        assert fake.find("claude-test-1") and not fake.find("claude-haiku-4-5")
        assert fake.find("claude-test-1").info()["capabilities"]["structured_outputs"] == {"supported": False}  # type: ignore[union-attr]


# --- errors as Anthropic sends them ----------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("status", "cls", "kind"),
    [
        (400, anthropic.BadRequestError, "invalid_request_error"),
        (401, anthropic.AuthenticationError, "authentication_error"),
        (403, anthropic.PermissionDeniedError, "permission_error"),
        (404, anthropic.NotFoundError, "not_found_error"),
        (413, anthropic.RequestTooLargeError, "request_too_large"),
        (429, anthropic.RateLimitError, "rate_limit_error"),
        (500, anthropic.InternalServerError, "api_error"),
        (503, anthropic.ServiceUnavailableError, "api_error"),
        (529, anthropic.OverloadedError, "overloaded_error"),
    ],
)
async def test_enqueued_status_errors_map_to_sdk_classes(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic, status: int, cls: type, kind: str
) -> None:
    fake.enqueue(status=status, headers={"retry-after": "7"} if status == 429 else None)
    with pytest.raises(cls) as err:
        await create(client)
    exc = err.value
    assert exc.status_code == status and exc.type == kind and exc.api_message
    assert exc.request_id.startswith("req_") and exc.body["request_id"] == exc.request_id
    assert exc.body["type"] == "error" and exc.body["error"]["type"] == kind
    if status >= 500:
        assert isinstance(exc, anthropic.InternalServerError)
    if status == 429:
        assert exc.response.headers["retry-after"] == "7"


@pytest.mark.anyio
async def test_error_type_message_and_code(fake: FakeAnthropic, client: anthropic.AsyncAnthropic) -> None:
    fake.enqueue(error_type="overloaded_error", message="Busy")
    fake.enqueue(status=429, error_code="enforced_spend_limit_reached", message="Spend limit reached")
    with pytest.raises(anthropic.OverloadedError) as overloaded:
        await create(client)
    assert overloaded.value.api_message == "Busy"
    with pytest.raises(anthropic.RateLimitError) as limited:
        await create(client)
    assert limited.value.error_code == "enforced_spend_limit_reached"


@pytest.mark.anyio
async def test_refusals_the_api_makes_itself(fake: FakeAnthropic, client: anthropic.AsyncAnthropic) -> None:
    fake.enqueue("never used")
    cases: list[tuple[dict[str, Any], type, str]] = [
        ({"model": "claude-nope"}, anthropic.NotFoundError, "model: claude-nope"),
        ({"extra_body": {"response_format": {}}}, anthropic.BadRequestError, "Extra inputs are not permitted"),
        ({"extra_body": {"temperature": 1.5}}, anthropic.BadRequestError, "temperature"),
        ({"messages": []}, anthropic.BadRequestError, "at least one message"),
        ({"max_tokens": 10**6}, anthropic.BadRequestError, "max_tokens"),
        ({"tools": [TOOL], "tool_choice": {"type": "tool", "name": "other"}}, anthropic.BadRequestError, "other"),
        (
            {"tools": [{**TOOL, "input_schema": {"type": "array"}}], "tool_choice": FORCE},
            anthropic.BadRequestError,
            "input_schema.type",
        ),
        (
            {"tools": [TOOL], "tool_choice": FORCE, "thinking": {"type": "enabled", "budget_tokens": 1024}},
            anthropic.BadRequestError,
            "Thinking may not be enabled",
        ),
    ]
    for kwargs, cls, words in cases:
        with pytest.raises(cls) as err:
            await create(client, **kwargs)
        assert words in str(err.value.api_message)
    assert fake.queued == 1
    async with anthropic.AsyncAnthropic(api_key="wrong", base_url=fake.url, max_retries=0, timeout=5) as c:
        with pytest.raises(anthropic.AuthenticationError) as auth:
            await create(c)
    assert auth.value.status_code == 401 and auth.value.api_message == "invalid x-api-key"
    async with anthropic.AsyncAnthropic(
        api_key=KEY, base_url=fake.url, max_retries=0, timeout=5, default_headers={"anthropic-version": anthropic.omit}
    ) as c:
        with pytest.raises(anthropic.BadRequestError, match="anthropic-version"):
            await create(c)


@pytest.mark.anyio
async def test_strict_schemas_and_request_size_limit() -> None:
    loose = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    with FakeAnthropic(strict_schemas=True, max_request_bytes=2_000) as fake:
        async with anthropic.AsyncAnthropic(api_key=KEY, base_url=fake.url, max_retries=0, timeout=5) as c:
            with pytest.raises(anthropic.BadRequestError, match="additionalProperties"):
                await create(c, output_config={"format": {"type": "json_schema", "schema": loose}})
            await create(c, output_config={"format": {"type": "json_schema", "schema": SCHEMA}})
            with pytest.raises(anthropic.RequestTooLargeError) as err:
                await create(c, messages=[{"role": "user", "content": "x" * 5_000}])
    assert err.value.type == "request_too_large"


@pytest.mark.anyio
async def test_malformed_bodies(fake: FakeAnthropic, client: anthropic.AsyncAnthropic) -> None:
    fake.enqueue(raw_body=b'{"id": "msg_1", "content": [')
    with pytest.raises(json.JSONDecodeError):  # the SDK lets a bad 200 body through unwrapped
        await create(client)
    fake.enqueue(status=502, raw_body=b"<html>Bad gateway</html>", headers={"Content-Type": "text/html"})
    with pytest.raises(anthropic.InternalServerError) as err:
        await create(client)
    assert err.value.status_code == 502 and err.value.body == "<html>Bad gateway</html>" and err.value.type is None


# --- transport failures ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_hang_times_out_and_the_fake_sees_the_hang_up(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    fake.enqueue(hang=True)
    with pytest.raises(anthropic.APITimeoutError):
        await create(client, timeout=0.3)
    assert fake.wait_for_disconnect() and fake.disconnects == 1


@pytest.mark.anyio
async def test_stall_mid_stream_is_a_read_timeout(fake: FakeAnthropic, client: anthropic.AsyncAnthropic) -> None:
    fake.enqueue("a b c d e f", stall_after=2)
    stream = await create(client, stream=True, timeout=0.3)
    seen = []
    with pytest.raises(httpx2.ReadTimeout):  # mid-stream the SDK does not wrap transport errors
        async for event in stream:
            seen.append(event.type)
    assert seen.count("content_block_delta") == 2


@pytest.mark.anyio
async def test_dropped_and_refused_connections(fake: FakeAnthropic, client: anthropic.AsyncAnthropic) -> None:
    fake.enqueue(drop_connection=True)
    with pytest.raises(anthropic.APIConnectionError) as dropped:
        await create(client)
    assert not isinstance(dropped.value, anthropic.APITimeoutError)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with anthropic.AsyncAnthropic(
        api_key=KEY, base_url=f"http://127.0.0.1:{port}", max_retries=0, timeout=5
    ) as c:
        with pytest.raises(anthropic.APIConnectionError) as refused:
            await create(c)
    assert isinstance(refused.value.__cause__, httpx2.ConnectError)
