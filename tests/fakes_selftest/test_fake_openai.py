"""The fake OpenAI server, driven through the real `openai` SDK (and raw HTTP for the wire format).

If these pass, a test of our OpenAI adapter that fails is about the adapter, not the fake.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator

import httpx2
import jsonschema
import openai
import pytest

from tests.fakes.openai_server import FakeOpenAI

pytestmark = pytest.mark.anyio

KEY = "test-key"
USER = [{"role": "user", "content": "hello"}]
SCHEMA = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 3}}, "required": ["n"]}


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=KEY) as server:
        yield server
    assert server.errors == []


@pytest.fixture
async def client(fake: FakeOpenAI) -> AsyncIterator[openai.AsyncOpenAI]:
    sdk = openai.AsyncOpenAI(api_key=KEY, base_url=fake.base_url, max_retries=0, timeout=10)
    yield sdk
    await sdk.close()


async def test_json_schema_reply_validates_and_json_mode_is_an_object(client: openai.AsyncOpenAI) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "a", "schema": SCHEMA}}
    reply = await client.chat.completions.create(model="gpt-4.1-mini", messages=USER, response_format=fmt)
    jsonschema.validate(json.loads(reply.choices[0].message.content or ""), SCHEMA)
    assert reply.choices[0].finish_reason == "stop" and reply.usage and reply.usage.completion_tokens > 0
    reply = await client.chat.completions.create(model="gpt-4.1-mini", messages=USER,
                                                 response_format={"type": "json_object"})
    assert json.loads(reply.choices[0].message.content or "") == {}


async def test_stream_deltas_then_finish_then_usage(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    fake.enqueue("one two three four", completion_tokens=4)
    stream = await client.chat.completions.create(model="gpt-4.1-mini", messages=USER, stream=True,
                                                  stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two three four"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage and chunks[-1].usage.completion_tokens == 4


async def test_max_tokens_cuts_with_finish_reason_length(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    fake.enqueue("abcdefghijklmnopqrstuvwxyz")
    reply = await client.chat.completions.create(model="gpt-4.1-mini", messages=USER, max_tokens=2)
    assert reply.choices[0].message.content == "abcdefghijkl" and reply.choices[0].finish_reason == "length"


async def test_errors_in_openai_shape(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    fake.enqueue(status=429, message="slow down", headers={"retry-after": "3"})
    with pytest.raises(openai.RateLimitError) as caught:
        await client.chat.completions.create(model="gpt-4.1-mini", messages=USER)
    assert caught.value.code == "rate_limit_exceeded" and caught.value.response.headers["retry-after"] == "3"
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        await client.chat.completions.create(model="nope", messages=USER)
    assert fake.queued == 0
    wrong = openai.AsyncOpenAI(api_key="bad", base_url=fake.base_url, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as auth:
        await wrong.models.list()
    assert auth.value.code == "invalid_api_key"
    await wrong.close()


async def test_refused_format_and_mid_stream_error(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    fake.refuse_formats = ("json_object",)
    with pytest.raises(openai.BadRequestError, match="response_format"):
        await client.chat.completions.create(model="gpt-4.1-mini", messages=USER,
                                             response_format={"type": "json_object"})
    fake.enqueue("a b c d e f g h i j k l", stream_error="server_error", message="boom")
    stream = await client.chat.completions.create(model="gpt-4.1-mini", messages=USER, stream=True)
    with pytest.raises(openai.APIError, match="boom"):
        async for _ in stream:
            pass


async def test_raw_sse_lines_end_with_done(fake: FakeOpenAI) -> None:
    async with httpx2.AsyncClient(timeout=10) as http:
        response = await http.post(fake.base_url + "/chat/completions", headers={"Authorization": f"Bearer {KEY}"},
                                   json={"model": "local-model", "messages": USER, "stream": True})
    lines = [line for line in response.text.split("\n") if line]
    assert response.headers["content-type"].startswith("text/event-stream")
    assert all(line.startswith("data: ") for line in lines) and lines[-1] == "data: [DONE]"
    assert json.loads(lines[0][6:])["object"] == "chat.completion.chunk"
