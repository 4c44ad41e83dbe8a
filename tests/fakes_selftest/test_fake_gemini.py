"""The fake Gemini / Vertex AI server, driven only through the real `google-genai` SDK.

If these pass, a test of our Gemini adapter that fails is about the adapter, not the fake.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from typing import Any, Literal

import anyio
import google.oauth2.credentials
import httpx2
import jsonschema
import pytest
from google import genai
from google.genai import errors, types
from pydantic import BaseModel, Field

from tests.fakes.gemini_server import (
    FakeGemini,
    GeminiModel,
    default_responder,
    from_gemini_schema,
    requested_schema,
)
from tests.fakes.ollama_server import schema_instance
from tests.images import png_bytes

FLASH = "gemini-2.5-flash"
GLOBAL_ONLY = "gemini-3-pro-preview"
SCHEMA = {
    "type": "object",
    "properties": {"caption": {"type": "string"}, "score": {"type": "integer", "minimum": 1}},
    "required": ["caption", "score"],
}


@pytest.fixture
def fake() -> Iterator[FakeGemini]:
    with FakeGemini() as server:
        yield server
    assert server.errors == []


def gemini(fake: FakeGemini, key: str = "test-key", timeout_ms: int = 5000, **options: Any) -> genai.client.AsyncClient:
    http = types.HttpOptions(base_url=fake.url, timeout=timeout_ms, **options)
    return genai.Client(api_key=key, http_options=http).aio


def vertex(
    fake: FakeGemini, location: str = "us-central1", project: str = "p", token: str = "test-token"
) -> genai.client.AsyncClient:
    return genai.Client(
        vertexai=True,
        project=project,
        location=location,
        credentials=google.oauth2.credentials.Credentials(token=token),
        http_options=types.HttpOptions(base_url=fake.url, timeout=5000),
    ).aio


async def stream_texts(client: genai.client.AsyncClient, model: str = FLASH, contents: Any = "hi") -> list[str]:
    return [
        chunk.text or "" async for chunk in await client.models.generate_content_stream(model=model, contents=contents)
    ]


# --- Gemini API happy paths ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_generate_with_json_schema_image_and_config(fake: FakeGemini) -> None:
    image = png_bytes(3, 2)  # the fake decodes images, as the API does
    async with gemini(fake) as c:
        reply = await c.models.generate_content(
            model=FLASH,
            contents=["describe this", types.Part.from_bytes(data=image, mime_type="image/png")],
            config=types.GenerateContentConfig(
                system_instruction="You are terse.",
                response_mime_type="application/json",
                response_json_schema=SCHEMA,
                temperature=0.2,
                max_output_tokens=64,
            ),
        )
    jsonschema.validate(json.loads(reply.text or ""), SCHEMA)
    assert reply.candidates and reply.candidates[0].finish_reason == types.FinishReason.STOP
    assert reply.candidates[0].content and reply.candidates[0].content.role == "model"
    assert reply.model_version == FLASH and reply.response_id
    usage = reply.usage_metadata
    assert usage and usage.prompt_token_count == 3 + 258 and usage.candidates_token_count
    assert usage.total_token_count == usage.prompt_token_count + usage.candidates_token_count
    (sent,) = fake.generate_requests
    assert (sent.method, sent.path, sent.query) == ("POST", f"/v1/models/{FLASH}:generateContent", {})
    assert (sent.api, sent.api_version, sent.model, sent.project, sent.location) == ("gemini", "v1", FLASH, None, None)
    assert sent.headers["x-goog-api-key"] == "test-key" and "authorization" not in sent.headers
    assert sent.headers["content-type"] == "application/json"
    assert sent.headers["x-server-timeout"] == "5"  # the SDK tells the server its timeout, in seconds
    assert sent.headers["x-goog-api-client"].startswith("google-genai-sdk/")
    assert sent.json["generationConfig"] == {
        "temperature": 0.2,
        "maxOutputTokens": 64,
        "responseMimeType": "application/json",
        "responseJsonSchema": SCHEMA,
    }
    assert sent.json["systemInstruction"] == {"parts": [{"text": "You are terse."}], "role": "user"}
    assert sent.system_instruction == "You are terse."
    assert sent.texts == ["describe this"] and sent.images == [("image/png", image)]
    # The SDK sends the blob URL-safe base64 and with a snake_case `mime_type`; the API takes both.
    blob = sent.json["contents"][0]["parts"][1]["inlineData"]
    assert blob == {"data": base64.urlsafe_b64encode(image).decode(), "mime_type": "image/png"}


class _Tag(BaseModel):
    label: Literal["cat", "dog"]
    weight: float = Field(ge=0, le=1)  # `gt` (exclusiveMinimum) makes response_schema raise


class _Analysis(BaseModel):
    title: str = Field(min_length=3, max_length=10)
    tags: list[_Tag] = Field(min_length=2)
    note: str | None


@pytest.mark.anyio
async def test_response_schema_in_gemini_types_is_answered(fake: FakeGemini) -> None:
    async with gemini(fake) as c:
        reply = await c.models.generate_content(
            model=FLASH,
            contents="analyse",
            config=types.GenerateContentConfig(response_mime_type="application/json", response_schema=_Analysis),
        )
        json_reply = await c.models.generate_content(
            model=FLASH,
            contents="analyse",
            config=types.GenerateContentConfig(
                response_mime_type="application/json", response_json_schema=_Analysis.model_json_schema()
            ),
        )
    parsed = _Analysis.model_validate_json(reply.text or "")
    assert len(parsed.tags) == 2 and parsed.tags[0].label == "cat"
    assert reply.parsed == parsed  # the SDK parses it back into the class
    assert _Analysis.model_validate_json(json_reply.text or "") == parsed
    sent = fake.generate_requests[0].generation_config["responseSchema"]
    assert sent["type"] == "OBJECT" and sent["properties"]["tags"]["type"] == "ARRAY"
    assert "$defs" not in json.dumps(sent)  # the SDK inlined the refs
    assert "$defs" in fake.generate_requests[1].generation_config["responseJsonSchema"]


@pytest.mark.anyio
async def test_streaming_sends_sse_chunks_with_usage_on_the_last(fake: FakeGemini) -> None:
    fake.enqueue("one two three four", prompt_tokens=11, completion_tokens=4)
    async with gemini(fake) as c:
        chunks = [ch async for ch in await c.models.generate_content_stream(model=FLASH, contents="count")]
    assert [ch.text for ch in chunks] == ["one ", "two ", "three ", "four"]
    assert [ch.candidates[0].finish_reason for ch in chunks if ch.candidates] == [None] * 3 + [types.FinishReason.STOP]
    last = chunks[-1].usage_metadata
    assert last and (last.prompt_token_count, last.candidates_token_count, last.total_token_count) == (11, 4, 15)
    assert chunks[0].usage_metadata and chunks[0].usage_metadata.candidates_token_count is None
    assert len({ch.response_id for ch in chunks}) == 1
    (sent,) = fake.generate_requests
    assert (sent.path, sent.query, sent.stream) == (f"/v1/models/{FLASH}:streamGenerateContent", {"alt": "sse"}, True)
    assert chunks[0].sdk_http_response and chunks[0].sdk_http_response.headers
    assert chunks[0].sdk_http_response.headers["content-type"] == "text/event-stream"


@pytest.mark.anyio
async def test_list_models_pages_and_get(fake: FakeGemini) -> None:
    async with gemini(fake) as c:
        pager = await c.models.list(config={"page_size": 2})
        assert len(pager.page) == 2
        models = [m async for m in pager]
        flash = await c.models.get(model=FLASH)
        with pytest.raises(errors.ClientError) as err:
            await c.models.get(model="gemini-0")
    assert [m.name for m in models] == [f"models/{m.id}" for m in fake.models]
    listed = [r for r in fake.requests if r.path == "/v1/models"]
    assert [r.query.get("pageSize") for r in listed] == ["2", "2", "2"]
    assert "pageToken" not in listed[0].query and listed[1].query["pageToken"] != listed[2].query["pageToken"]
    assert flash.name == f"models/{FLASH}" and flash.display_name == "Gemini 2.5 Flash"
    assert flash.input_token_limit == 1_048_576 and flash.output_token_limit == 65_536
    assert flash.supported_actions == ["generateContent", "countTokens"] and flash.version == "001"
    assert models[-1].supported_actions and "generateContent" not in models[-1].supported_actions
    assert fake.requests[-2].path == f"/v1/models/{FLASH}"
    assert err.value.code == 404 and err.value.status == "NOT_FOUND"


@pytest.mark.anyio
async def test_v1beta_and_custom_models(fake: FakeGemini) -> None:
    with FakeGemini(api_key="k2", models=["gemini-x", GeminiModel("gemini-y", input_token_limit=10)]) as custom:
        async with gemini(custom, key="k2", api_version="v1beta") as c:
            assert [m.name async for m in await c.models.list()] == ["models/gemini-x", "models/gemini-y"]
            reply = await c.models.generate_content(model="models/gemini-y", contents="hi")
        assert reply.text == "This is a fake reply from Gemini."
        assert custom.generate_requests[0].path == "/v1beta/models/gemini-y:generateContent"
        assert custom.requests[0].query == {}  # no pageSize unless asked; the server's default is 50
        assert custom.errors == []


# --- Vertex AI -------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_vertex_generate_records_project_and_location(fake: FakeGemini) -> None:
    fake.enqueue("kept")
    async with vertex(fake) as regional, vertex(fake, location="global") as global_:
        with pytest.raises(errors.ClientError) as err:  # not served in us-central1: refused, queue untouched
            await regional.models.generate_content(model=GLOBAL_ONLY, contents="hi")
        assert fake.queued == 1
        assert (await global_.models.generate_content(model=GLOBAL_ONLY, contents="hi")).text == "kept"
        reply = await regional.models.generate_content(
            model=FLASH,
            contents="hi",
            config=types.GenerateContentConfig(response_mime_type="application/json", response_json_schema=SCHEMA),
        )
        streamed = await stream_texts(global_, FLASH)
    jsonschema.validate(json.loads(reply.text or ""), SCHEMA)
    assert "".join(streamed) == "This is a fake reply from Gemini."
    assert reply.create_time is not None and reply.usage_metadata
    assert reply.usage_metadata.traffic_type == types.TrafficType.ON_DEMAND
    assert err.value.code == 404 and err.value.status == "NOT_FOUND"
    assert err.value.message and err.value.message.startswith(
        f"Publisher Model `projects/p/locations/us-central1/publishers/google/models/{GLOBAL_ONLY}` was not found"
    )
    routes = [(r.api, r.api_version, r.project, r.location, r.model, r.action) for r in fake.generate_requests]
    assert routes == [
        ("vertex", "v1beta1", "p", "us-central1", GLOBAL_ONLY, "generateContent"),
        ("vertex", "v1beta1", "p", "global", GLOBAL_ONLY, "generateContent"),
        ("vertex", "v1beta1", "p", "us-central1", FLASH, "generateContent"),
        ("vertex", "v1beta1", "p", "global", FLASH, "streamGenerateContent"),
    ]
    sent = fake.generate_requests[2]
    assert sent.path == f"/v1beta1/projects/p/locations/us-central1/publishers/google/models/{FLASH}:generateContent"
    assert sent.headers["authorization"] == "Bearer test-token" and "x-goog-api-key" not in sent.headers
    assert sent.json["generationConfig"]["responseJsonSchema"] == SCHEMA
    assert fake.generate_requests[3].query == {"alt": "sse"}


@pytest.mark.anyio
async def test_vertex_model_listing(fake: FakeGemini) -> None:
    async with vertex(fake) as c:
        base = [m async for m in await c.models.list(config={"page_size": 3})]
        tuned = [m async for m in await c.models.list(config={"query_base": False})]
        got = await c.models.get(model=FLASH)
    assert [m.name for m in base] == [f"publishers/google/models/{m.id}" for m in fake.models]
    assert base[0].version == "default" and tuned == []
    assert got.name == f"publishers/google/models/{FLASH}"
    paths = [(r.path, r.query) for r in fake.requests]
    assert paths[0] == ("/v1beta1/publishers/google/models", {"pageSize": "3"})  # no project in the path
    assert paths[2] == ("/v1beta1/projects/p/locations/us-central1/models", {"filter": "labels.tune-type:*"})
    assert paths[3] == (f"/v1beta1/publishers/google/models/{FLASH}", {})
    assert all(r.headers["authorization"] == "Bearer test-token" for r in fake.requests)


@pytest.mark.anyio
async def test_vertex_express_mode_uses_the_key_and_no_project(fake: FakeGemini) -> None:
    http = types.HttpOptions(base_url=fake.url, timeout=5000)
    async with genai.Client(vertexai=True, api_key="test-key", http_options=http).aio as c:
        reply = await c.models.generate_content(model=FLASH, contents="hi")
    assert reply.text
    (sent,) = fake.generate_requests
    assert sent.path == f"/v1beta1/publishers/google/models/{FLASH}:generateContent"
    assert (sent.api, sent.project, sent.location) == ("vertex", None, None)
    assert sent.headers["x-goog-api-key"] == "test-key" and "authorization" not in sent.headers


# --- refusals as Google sends them -----------------------------------------------------------------


@pytest.mark.anyio
async def test_auth_failures(fake: FakeGemini) -> None:
    fake.enqueue("kept for later")
    async with gemini(fake, key="wrong") as bad_key, vertex(fake, token="wrong") as bad_token:
        with pytest.raises(errors.ClientError) as key_err:
            await bad_key.models.generate_content(model=FLASH, contents="hi")
        with pytest.raises(errors.ClientError) as list_err:
            await bad_key.models.list()
        with pytest.raises(errors.ClientError) as token_err:
            await bad_token.models.generate_content(model=FLASH, contents="hi")
    async with gemini(fake, key=" ") as blank_key:  # the SDK strips it and sends an empty header
        with pytest.raises(errors.ClientError) as no_key:
            await blank_key.models.generate_content(model=FLASH, contents="hi")
    assert (no_key.value.code, no_key.value.status) == (403, "PERMISSION_DENIED")
    assert no_key.value.message and no_key.value.message.startswith("Method doesn't allow unregistered callers")
    assert (key_err.value.code, key_err.value.status) == (400, "INVALID_ARGUMENT")
    assert key_err.value.message == "API key not valid. Please pass a valid API key."
    details = key_err.value.details["error"]["details"]
    assert details[0]["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"
    assert details[0]["reason"] == "API_KEY_INVALID"
    assert list_err.value.code == 400
    assert (token_err.value.code, token_err.value.status) == (401, "UNAUTHENTICATED")
    assert token_err.value.message and "invalid authentication credentials" in token_err.value.message
    assert fake.queued == 1


@pytest.mark.anyio
async def test_wrong_project_is_forbidden() -> None:
    with FakeGemini(project="right") as fake:
        async with vertex(fake, project="wrong") as c:
            with pytest.raises(errors.ClientError) as err:
                await c.models.generate_content(model=FLASH, contents="hi")
        assert (err.value.code, err.value.status) == (403, "PERMISSION_DENIED")
        assert err.value.message and "aiplatform.endpoints.predict" in err.value.message


@pytest.mark.anyio
async def test_unknown_and_non_generating_models_are_404s(fake: FakeGemini) -> None:
    fake.enqueue("kept")
    async with gemini(fake) as c:
        with pytest.raises(errors.ClientError) as unknown:
            await c.models.generate_content(model="gemini-0", contents="hi")
        with pytest.raises(errors.ClientError) as embedder:
            await stream_texts(c, "gemini-embedding-001")
        assert fake.queued == 1
        assert (await c.models.generate_content(model=FLASH, contents="hi")).text == "kept"
    assert unknown.value.code == 404 and unknown.value.status == "NOT_FOUND"
    assert unknown.value.message == (
        "models/gemini-0 is not found for API version v1, or is not supported for generateContent. "
        "Call ListModels to see the list of available models and their supported methods."
    )
    assert embedder.value.message and "not supported for streamGenerateContent" in embedder.value.message


ERRORS = [
    (400, errors.ClientError, "INVALID_ARGUMENT"),
    (401, errors.ClientError, "UNAUTHENTICATED"),
    (403, errors.ClientError, "PERMISSION_DENIED"),
    (404, errors.ClientError, "NOT_FOUND"),
    (429, errors.ClientError, "RESOURCE_EXHAUSTED"),
    (500, errors.ServerError, "INTERNAL"),
    (503, errors.ServerError, "UNAVAILABLE"),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("code", "kind", "status"), ERRORS)
async def test_enqueued_http_errors(fake: FakeGemini, code: int, kind: type[errors.APIError], status: str) -> None:
    fake.enqueue(status=code, error=f"failure {code}")
    fake.enqueue(status=code, error=f"failure {code}")
    async with gemini(fake) as c:
        with pytest.raises(kind) as plain:
            await c.models.generate_content(model=FLASH, contents="hi")
        with pytest.raises(kind) as streamed:
            await stream_texts(c)
    for err in (plain, streamed):
        assert (err.value.code, err.value.status, err.value.message) == (code, status, f"failure {code}")
        assert err.value.details == {"error": {"code": code, "message": f"failure {code}", "status": status}}
    assert len(fake.generate_requests) == 2  # no retries of the SDK's own


@pytest.mark.anyio
async def test_error_status_alone_details_headers_and_default_messages(fake: FakeGemini) -> None:
    retry = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "3s"}
    fake.enqueue(error_status="RESOURCE_EXHAUSTED", details=[retry], headers={"Retry-After": "3"})
    fake.enqueue(status=503)
    async with gemini(fake) as c, vertex(fake) as v:
        with pytest.raises(errors.ClientError) as quota:
            await c.models.generate_content(model=FLASH, contents="hi")
        with pytest.raises(errors.ServerError) as overloaded:
            await v.models.generate_content(model=FLASH, contents="hi")
    assert (quota.value.code, quota.value.status) == (429, "RESOURCE_EXHAUSTED")
    assert quota.value.message and quota.value.message.startswith("You exceeded your current quota")
    assert quota.value.details["error"]["details"] == [retry]
    assert quota.value.response.headers["retry-after"] == "3"
    assert (overloaded.value.code, overloaded.value.message) == (503, "The service is currently unavailable.")


@pytest.mark.anyio
async def test_sdk_retries_only_when_told_to(fake: FakeGemini) -> None:
    fake.enqueue(status=503)
    fake.enqueue(error_status="RESOURCE_EXHAUSTED")
    fake.enqueue("third time lucky")
    retry = types.HttpRetryOptions(attempts=3, initial_delay=0.01, max_delay=0.01, jitter=0)
    async with gemini(fake, retry_options=retry) as c:
        assert (await c.models.generate_content(model=FLASH, contents="hi")).text == "third time lucky"
    assert len(fake.generate_requests) == 3


@pytest.mark.anyio
async def test_malformed_bodies(fake: FakeGemini) -> None:
    fake.enqueue(raw_body=b'{"candidates": [{"content": ')
    fake.enqueue(raw_body=b'data: {"candidates": [\r\n\r\n')
    fake.enqueue(status=502, raw_body=b"<html>502 Bad Gateway</html>", headers={"Content-Type": "text/html"})
    async with gemini(fake) as c:
        with pytest.raises(json.JSONDecodeError):  # not wrapped by the SDK
            await c.models.generate_content(model=FLASH, contents="hi")
        with pytest.raises(errors.UnknownApiResponseError):
            await stream_texts(c)
        with pytest.raises(errors.ServerError) as gateway:
            await c.models.generate_content(model=FLASH, contents="hi")
    assert (gateway.value.code, gateway.value.status) == (502, "Bad Gateway")
    assert gateway.value.message == "<html>502 Bad Gateway</html>"


@pytest.mark.anyio
async def test_stream_error_arrives_after_some_chunks(fake: FakeGemini) -> None:
    fake.enqueue("a b c d e f", stream_error="model overloaded mid-stream", error_status="UNAVAILABLE")
    fake.enqueue("a b c d", stream_error="boom")
    seen: list[str] = []
    async with gemini(fake) as c:
        with pytest.raises(errors.ServerError) as err:
            async for chunk in await c.models.generate_content_stream(model=FLASH, contents="hi"):
                seen.append(chunk.text or "")
        with pytest.raises(errors.ServerError) as internal:
            await stream_texts(c)
    assert seen == ["a ", "b ", "c "]
    assert (err.value.code, err.value.status, err.value.message) == (503, "UNAVAILABLE", "model overloaded mid-stream")
    assert (internal.value.code, internal.value.status) == (500, "INTERNAL")


@pytest.mark.anyio
async def test_blocked_prompt_and_safety_stop(fake: FakeGemini) -> None:
    fake.enqueue(blocked=True)
    fake.enqueue(blocked="PROHIBITED_CONTENT")
    fake.enqueue(finish_reason="SAFETY")
    fake.enqueue("cut sho", finish_reason="MAX_TOKENS", completion_tokens=64)
    async with gemini(fake) as c:
        blocked = await c.models.generate_content(model=FLASH, contents="hi")
        (streamed,) = [ch async for ch in await c.models.generate_content_stream(model=FLASH, contents="hi")]
        unsafe = await c.models.generate_content(model=FLASH, contents="hi")
        truncated = await c.models.generate_content(model=FLASH, contents="hi")
    assert blocked.candidates is None and blocked.text is None
    assert blocked.prompt_feedback and blocked.prompt_feedback.block_reason == types.BlockedReason.SAFETY
    assert streamed.prompt_feedback and streamed.prompt_feedback.block_reason == "PROHIBITED_CONTENT"
    assert unsafe.candidates and unsafe.candidates[0].content is None and unsafe.text is None
    assert unsafe.candidates[0].finish_reason == types.FinishReason.SAFETY
    assert truncated.text == "cut sho" and truncated.candidates
    assert truncated.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    assert truncated.usage_metadata and truncated.usage_metadata.candidates_token_count == 64


@pytest.mark.anyio
async def test_dropped_connections_then_the_server_keeps_serving(fake: FakeGemini) -> None:
    fake.enqueue(drop_connection=True)
    fake.enqueue(drop_connection=True)
    fake.enqueue("a b c d", drop_mid_stream=True)
    seen: list[str] = []
    async with gemini(fake) as c:
        with pytest.raises(httpx2.RemoteProtocolError):
            await c.models.generate_content(model=FLASH, contents="hi")
        with pytest.raises(httpx2.RemoteProtocolError):
            await stream_texts(c)
        with pytest.raises(httpx2.RemoteProtocolError):
            async for chunk in await c.models.generate_content_stream(model=FLASH, contents="hi"):
                seen.append(chunk.text or "")
        assert (await c.models.generate_content(model=FLASH, contents="hi")).text
    assert seen == ["a ", "b "]


# --- slowness, hangs and clients that leave ------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("stream", [False, True])
async def test_hang_until_the_client_times_out_records_the_disconnect(fake: FakeGemini, stream: bool) -> None:
    fake.enqueue(hang=True)
    async with gemini(fake, timeout_ms=300) as c:
        started = time.monotonic()
        with pytest.raises(httpx2.ReadTimeout):
            if stream:
                await stream_texts(c)
            else:
                await c.models.generate_content(model=FLASH, contents="hi")
        assert time.monotonic() - started < 1.5
        assert await anyio.to_thread.run_sync(fake.wait_for_disconnect)
        assert fake.disconnects == 1
        assert (await c.models.generate_content(model=FLASH, contents="hi")).text
    assert fake.generate_requests[0].headers["x-server-timeout"] == "1"  # 0.3 s, rounded up


@pytest.mark.anyio
async def test_cancelling_a_hung_call_records_the_disconnect(fake: FakeGemini) -> None:
    fake.enqueue(hang=True)
    async with gemini(fake) as c:
        with anyio.move_on_after(0.2) as scope:
            await c.models.generate_content(model=FLASH, contents="hi")
        assert scope.cancelled_caught
        assert await anyio.to_thread.run_sync(fake.wait_for_disconnect)


@pytest.mark.anyio
async def test_cancelling_mid_stream_hangs_up_and_is_survived(fake: FakeGemini) -> None:
    fake.enqueue("a b c d e f g h i j k l m n o p", chunk_delay_s=0.1)
    seen: list[str] = []
    async with gemini(fake) as c:
        with anyio.move_on_after(0.25):
            async for chunk in await c.models.generate_content_stream(model=FLASH, contents="hi"):
                seen.append(chunk.text or "")
        assert await anyio.to_thread.run_sync(fake.wait_for_disconnect)
        assert (await c.models.generate_content(model=FLASH, contents="hi")).text
    assert 1 <= len(seen) < 16


@pytest.mark.anyio
async def test_an_abandoned_stream_keeps_its_connection_until_the_client_closes(fake: FakeGemini) -> None:
    """SDK quirk: `aclose()` on the stream does not close the HTTP response (its inner generators are
    left to the GC); only cancellation or closing the client hangs up."""
    fake.enqueue("a b c d e f g h i j k l m n o p", chunk_delay_s=0.1)
    async with gemini(fake) as c:
        stream = await c.models.generate_content_stream(model=FLASH, contents="hi")
        async for _ in stream:
            break
        await stream.aclose()  # type: ignore[attr-defined]
        assert not await anyio.to_thread.run_sync(fake.wait_for_disconnect, 0.3)
    assert await anyio.to_thread.run_sync(fake.wait_for_disconnect)


@pytest.mark.anyio
async def test_delay_and_concurrent_requests(fake: FakeGemini) -> None:
    for _ in range(4):
        fake.enqueue("late", delay_s=0.3)
    replies: list[str] = []
    started = time.monotonic()
    async with gemini(fake) as c:

        async def one() -> None:
            replies.append((await c.models.generate_content(model=FLASH, contents="hi")).text or "")

        async with anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(one)
    elapsed = time.monotonic() - started
    assert replies == ["late"] * 4
    assert 0.3 <= elapsed < 1.0  # served side by side, not one after another


def test_stop_ends_a_hung_request_promptly() -> None:
    fake = FakeGemini().start()
    fake.enqueue(hang=True)
    outcome: list[BaseException] = []

    def call() -> None:
        http = types.HttpOptions(base_url=fake.url, timeout=5000)
        with genai.Client(api_key="test-key", http_options=http) as client:
            try:
                client.models.generate_content(model=FLASH, contents="hi")
            except httpx2.HTTPError as exc:
                outcome.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    assert fake.wait_for(lambda: fake.generate_requests, timeout=10), "the request never reached the fake"
    started = time.monotonic()
    fake.stop()
    caller.join(timeout=5)
    assert time.monotonic() - started < 1.5
    assert len(outcome) == 1 and isinstance(outcome[0], httpx2.RemoteProtocolError)


# --- steering and recording ----------------------------------------------------------------------


@pytest.mark.anyio
async def test_responder_recording_and_reset(fake: FakeGemini) -> None:
    fake.responder = lambda body: "echo " + body["contents"][-1]["parts"][0]["text"]
    async with gemini(fake) as c:
        assert (await c.models.generate_content(model=FLASH, contents="hello")).text == "echo hello"
        fake.enqueue(["a", 1])
        fake.enqueue({"b": 2})
        assert (await c.models.generate_content(model=FLASH, contents="x")).text == '["a", 1]'
        assert json.loads("".join(await stream_texts(c))) == {"b": 2}
        await c.models.list()
    assert [(r.method, r.path.rsplit(":", 1)[-1]) for r in fake.requests] == [
        ("POST", "generateContent"),
        ("POST", "generateContent"),
        ("POST", "streamGenerateContent"),
        ("GET", "/v1/models"),
    ]
    assert fake.requests[-1].json is None and fake.requests[-1].action is None
    assert len(fake.generate_requests) == 3
    fake.reset()
    assert (fake.requests, fake.queued, fake.disconnects) == ([], 0, 0)
    assert fake.responder is default_responder


def test_default_responder_by_config() -> None:
    def body(**config: Any) -> dict[str, Any]:
        return {"contents": [{"role": "user", "parts": [{"text": "hi"}]}], "generationConfig": config}

    assert default_responder(body()) == "This is a fake reply from Gemini."
    assert default_responder(body(responseMimeType="application/json")) == "{}"
    assert json.loads(default_responder(body(responseJsonSchema={"type": "array", "minItems": 2}))) == [None, None]
    enum = {"type": "STRING", "format": "enum", "enum": ["positive", "negative"]}
    assert default_responder(body(responseMimeType="text/x.enum", responseSchema=enum)) == "positive"
    assert requested_schema(body()) is None


def test_gemini_schema_conversion() -> None:
    gemini_schema = {
        "type": "OBJECT",
        "properties": {
            "tags": {"type": "ARRAY", "items": {"type": "STRING"}, "min_items": "2"},
            "maybe": {"anyOf": [{"type": "INTEGER", "minimum": 3}], "nullable": True},
            "TYPE": {"type": "BOOLEAN"},
        },
        "required": ["tags", "maybe", "TYPE"],
        "propertyOrdering": ["tags", "maybe", "TYPE"],
    }
    converted = from_gemini_schema(gemini_schema)
    assert converted["properties"]["tags"] == {"type": "array", "items": {"type": "string"}, "minItems": 2}
    instance = schema_instance(converted)
    jsonschema.validate(instance, converted)
    assert instance == {"tags": ["fake", "fake"], "maybe": 3, "TYPE": False}
