"""The fake Ollama server, driven only through the real `ollama` SDK (and httpx where the SDK has no call).

If these pass, a test of our Ollama adapter that fails is about the adapter, not the fake.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from typing import Any, Literal

import anyio
import httpx
import jsonschema
import ollama
import pytest
from pydantic import BaseModel, Field

from tests.fakes.ollama_server import FakeModel, FakeOllama, default_responder, schema_instance
from tests.images import png_bytes

TEXT, VISION = "llama3.2:3b", "llava:7b"
USER = [{"role": "user", "content": "hello"}]


@pytest.fixture
def fake() -> Iterator[FakeOllama]:
    with FakeOllama() as server:
        yield server
    assert server.errors == []


def client(fake: FakeOllama, timeout: float = 5) -> ollama.AsyncClient:
    return ollama.AsyncClient(host=fake.url, timeout=timeout)


# --- happy paths ---------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_chat_with_schema_and_image_answers_valid_json(fake: FakeOllama) -> None:
    schema = {
        "type": "object",
        "properties": {"caption": {"type": "string"}, "score": {"type": "integer", "minimum": 1}},
        "required": ["caption", "score"],
    }
    image = png_bytes(3, 2)  # the fake decodes images, as Ollama does
    async with client(fake) as c:
        reply = await c.chat(
            VISION,
            [{"role": "user", "content": "describe", "images": [image]}],
            format=schema,
            options={"temperature": 0.2, "num_predict": 64},
            stream=False,
        )
    data = json.loads(reply.message.content or "")
    jsonschema.validate(data, schema)
    assert reply.done and reply.done_reason == "stop"
    assert reply.model == VISION and reply.message.role == "assistant"
    assert reply.prompt_eval_count and reply.prompt_eval_count > 0 and reply.eval_count
    (sent,) = fake.chat_requests
    assert sent.json["format"] == schema
    assert sent.json["options"] == {"temperature": 0.2, "num_predict": 64}
    assert sent.json["messages"][0]["images"] == [base64.b64encode(image).decode()]
    assert sent.headers["content-type"] == "application/json"


@pytest.mark.anyio
async def test_streaming_chat_sends_chunks_then_a_final_line_with_counts(fake: FakeOllama) -> None:
    fake.enqueue("one two three four", prompt_tokens=11, completion_tokens=4)
    async with client(fake) as c:
        parts = [p async for p in await c.chat(TEXT, USER, stream=True)]
    assert [p.done for p in parts] == [False] * 4 + [True]
    assert "".join(p.message.content or "" for p in parts) == "one two three four"
    assert (parts[-1].prompt_eval_count, parts[-1].eval_count) == (11, 4)
    assert parts[-1].done_reason == "stop" and parts[-1].total_duration


def test_stream_is_the_default_when_the_body_omits_it(fake: FakeOllama) -> None:
    fake.enqueue({"a": 1})
    r = httpx.post(f"{fake.url}/api/chat", json={"model": TEXT, "messages": USER}, timeout=5)
    lines = [json.loads(line) for line in r.text.splitlines()]
    assert r.headers["content-type"] == "application/x-ndjson"
    assert lines[-1]["done"] is True and json.loads("".join(x["message"]["content"] for x in lines)) == {"a": 1}


def test_list_show_ps_version_and_root(fake: FakeOllama) -> None:
    with ollama.Client(host=fake.url, timeout=5) as c:
        assert [m.model for m in c.list().models] == [TEXT, VISION]
        assert c.list().models[0].details.format == "gguf"  # type: ignore[union-attr]
        shown = c.show(VISION)
        assert shown.capabilities == ["completion", "vision"]
        assert c.show(TEXT).capabilities == ["completion"]
        assert shown.details and shown.details.family == "llama" and shown.modelinfo
        assert c.ps().models == []
        c.chat(TEXT, USER, stream=False)
        assert [m.model for m in c.ps().models] == [TEXT]
    assert httpx.get(f"{fake.url}/api/version", timeout=5).json() == {"version": "0.12.3"}
    root = httpx.get(fake.url, timeout=5)
    assert (root.text, root.headers["content-type"]) == ("Ollama is running", "text/plain; charset=utf-8")


def test_custom_models_and_version() -> None:
    with FakeOllama([FakeModel("qwen2.5vl", vision=True, family="qwen25vl")], version="0.13.0") as fake:
        with ollama.Client(host=fake.url, timeout=5) as c:
            assert [m.model for m in c.list().models] == ["qwen2.5vl"]
            assert c.chat("qwen2.5vl:latest", USER, stream=False).done  # a bare name is its :latest
        assert httpx.get(f"{fake.url}/api/version", timeout=5).json()["version"] == "0.13.0"


# --- errors as Ollama sends them -------------------------------------------------------------------


@pytest.mark.anyio
async def test_unknown_model_is_a_404_and_leaves_the_queue_alone(fake: FakeOllama) -> None:
    fake.enqueue("kept for later")
    async with client(fake) as c:
        with pytest.raises(ollama.ResponseError) as chat_err:
            await c.chat("nope:1b", USER, stream=False)
        stream = await c.chat("nope:1b", USER, stream=True)  # nothing is sent until iteration
        with pytest.raises(ollama.ResponseError) as stream_err:
            await anext(stream)
        with pytest.raises(ollama.ResponseError) as show_err:
            await c.show("nope:1b")
        assert fake.queued == 1
        assert (await c.chat(TEXT, USER, stream=False)).message.content == "kept for later"
    assert chat_err.value.status_code == 404
    assert chat_err.value.error == 'model "nope:1b" not found, try pulling it first'
    assert stream_err.value.status_code == 404 and stream_err.value.error == chat_err.value.error
    assert (show_err.value.status_code, show_err.value.error) == (404, "model 'nope:1b' not found")


def test_images_sent_to_a_text_model_are_refused(fake: FakeOllama) -> None:
    with ollama.Client(host=fake.url, timeout=5) as c, pytest.raises(ollama.ResponseError) as err:
        c.chat(TEXT, [{"role": "user", "content": "x", "images": [b"img"]}], stream=False)
    assert (err.value.status_code, err.value.error) == (500, "this model is missing data required for image input")


@pytest.mark.anyio
@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(("status", "message"), [(500, "boom"), (429, "too many requests"), (503, None)])
async def test_enqueued_http_errors(fake: FakeOllama, status: int, message: str | None, stream: bool) -> None:
    fake.enqueue(status=status, error=message, headers={"Retry-After": "2"})
    async with client(fake) as c:
        with pytest.raises(ollama.ResponseError) as err:
            if stream:
                [p async for p in await c.chat(TEXT, USER, stream=True)]
            else:
                await c.chat(TEXT, USER, stream=False)
    assert err.value.status_code == status
    assert err.value.error == (message or "Service Unavailable")


def test_error_headers_reach_the_wire(fake: FakeOllama) -> None:
    fake.enqueue(status=429, error="slow down", headers={"Retry-After": "3"})
    r = httpx.post(f"{fake.url}/api/chat", json={"model": TEXT, "messages": USER, "stream": False}, timeout=5)
    assert (r.status_code, r.headers["retry-after"], r.json()) == (429, "3", {"error": "slow down"})


@pytest.mark.anyio
async def test_malformed_body_surfaces_as_a_json_error(fake: FakeOllama) -> None:
    fake.enqueue(raw_body=b'{"model": "llama3.2:3b", "message": {')
    fake.enqueue(raw_body=b"<html>502 Bad Gateway</html>")
    async with client(fake) as c:
        with pytest.raises(json.JSONDecodeError):
            await c.chat(TEXT, USER, stream=False)
        with pytest.raises(json.JSONDecodeError):
            [p async for p in await c.chat(TEXT, USER, stream=True)]


@pytest.mark.anyio
async def test_stream_error_arrives_after_some_chunks(fake: FakeOllama) -> None:
    fake.enqueue("a b c d e f", stream_error="model runner has unexpectedly stopped")
    seen: list[str] = []
    async with client(fake) as c:
        with pytest.raises(ollama.ResponseError) as err:
            async for part in await c.chat(TEXT, USER, stream=True):
                seen.append(part.message.content or "")
    assert seen == ["a ", "b ", "c "]
    assert (err.value.status_code, err.value.error) == (-1, "model runner has unexpectedly stopped")


@pytest.mark.anyio
async def test_dropped_connection_then_the_server_keeps_serving(fake: FakeOllama) -> None:
    fake.enqueue(drop_connection=True)
    fake.enqueue(drop_connection=True)
    async with client(fake) as c:
        with pytest.raises(httpx.RemoteProtocolError):
            await c.chat(TEXT, USER, stream=False)
        with pytest.raises(httpx.RemoteProtocolError):
            [p async for p in await c.chat(TEXT, USER, stream=True)]
        assert (await c.chat(TEXT, USER, stream=False)).done


# --- slowness, hangs and clients that leave ------------------------------------------------------


@pytest.mark.anyio
async def test_hang_until_the_client_times_out_records_the_disconnect(fake: FakeOllama) -> None:
    fake.enqueue(hang=True)
    async with client(fake, timeout=0.3) as c:
        with pytest.raises(httpx.ReadTimeout):
            await c.chat(TEXT, USER, stream=False)
        assert await anyio.to_thread.run_sync(fake.wait_for_disconnect)
        assert fake.disconnects == 1
        assert (await c.chat(TEXT, USER, stream=False)).done


@pytest.mark.anyio
async def test_cancelling_a_hung_call_records_the_disconnect(fake: FakeOllama) -> None:
    fake.enqueue(hang=True)
    async with client(fake) as c:
        with anyio.move_on_after(0.2) as scope:
            await c.chat(TEXT, USER, stream=False)
    assert scope.cancelled_caught
    assert await anyio.to_thread.run_sync(fake.wait_for_disconnect)


@pytest.mark.anyio
async def test_client_leaving_mid_stream_is_recorded_and_survived(fake: FakeOllama) -> None:
    fake.enqueue("a b c d e f g h", chunk_delay_s=0.1)
    async with client(fake) as c:
        stream = await c.chat(TEXT, USER, stream=True)
        async for _ in stream:
            break
        await stream.aclose()  # type: ignore[attr-defined]
        assert await anyio.to_thread.run_sync(fake.wait_for_disconnect)
        assert (await c.chat(TEXT, USER, stream=False)).done


@pytest.mark.anyio
async def test_delay_and_concurrent_requests(fake: FakeOllama) -> None:
    for _ in range(4):
        fake.enqueue("late", delay_s=0.3)
    replies: list[str] = []
    started = time.monotonic()
    async with client(fake) as c:

        async def one() -> None:
            replies.append((await c.chat(TEXT, USER, stream=False)).message.content or "")

        async with anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(one)
    elapsed = time.monotonic() - started
    assert replies == ["late"] * 4
    assert 0.3 <= elapsed < 1.0  # served side by side, not one after another


def test_stop_ends_a_hung_request_promptly() -> None:
    fake = FakeOllama().start()
    fake.enqueue(hang=True)
    outcome: list[BaseException] = []

    def call() -> None:
        with ollama.Client(host=fake.url, timeout=5) as c:
            try:
                c.chat(TEXT, USER, stream=False)
            except httpx.HTTPError as exc:
                outcome.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    assert fake.wait_for(lambda: fake.chat_requests, timeout=10), "the request never reached the fake"
    started = time.monotonic()
    fake.stop()
    caller.join(timeout=5)
    assert time.monotonic() - started < 1.5
    assert len(outcome) == 1 and isinstance(outcome[0], httpx.RemoteProtocolError)


# --- steering and recording ----------------------------------------------------------------------


def test_responder_recording_and_reset(fake: FakeOllama) -> None:
    fake.responder = lambda body: f"echo {body['messages'][-1]['content']}"
    with ollama.Client(host=fake.url, timeout=5, headers={"X-Trace": "t1"}) as c:
        assert c.chat(TEXT, USER, stream=False).message.content == "echo hello"
        fake.enqueue(["a", 1], done_reason="length")
        truncated = c.chat(TEXT, USER, stream=False)
        assert (truncated.message.content, truncated.done_reason) == ('["a", 1]', "length")
        c.list()
    assert [(r.method, r.path) for r in fake.requests] == [
        ("POST", "/api/chat"),
        ("POST", "/api/chat"),
        ("GET", "/api/tags"),
    ]
    assert fake.requests[0].headers["x-trace"] == "t1" and fake.requests[2].json is None
    assert fake.chat_requests[0].json["stream"] is False
    fake.reset()
    assert (fake.requests, fake.queued, fake.disconnects) == ([], 0, 0)
    assert fake.responder is default_responder


def test_answered_counts_replies_sent_to_the_end_and_wakes_wait_for(fake: FakeOllama) -> None:
    fake.enqueue({"a": 1}, chunk_delay_s=0.05)
    fake.enqueue(drop_connection=True)
    with ollama.Client(host=fake.url, timeout=5) as c:
        assert fake.answered == 0
        list(c.chat(TEXT, USER, stream=True))  # the streamed reply, read to its last line
        assert fake.wait_for(lambda: fake.answered == 1, timeout=5), "the streamed reply was not counted"
        with pytest.raises(httpx.HTTPError):
            c.chat(TEXT, USER, stream=False)  # the dropped connection was not an answer
    assert fake.answered == 1
    fake.reset()
    assert fake.answered == 0


def test_default_responder_by_format() -> None:
    assert default_responder({"model": TEXT, "format": "json"}) == "{}"
    assert default_responder({"model": TEXT}) == f"This is a fake reply from {TEXT}."
    assert json.loads(default_responder({"format": {"type": "array", "minItems": 2}})) == [None, None]


class _Tag(BaseModel):
    label: Literal["cat", "dog"]
    weight: float = Field(gt=0, le=1)


class _Analysis(BaseModel):
    title: str = Field(min_length=3, max_length=10)
    tags: list[_Tag] = Field(min_length=2)
    rating: int = Field(ge=1, le=5, multiple_of=2)
    note: str | None
    parent: _Analysis | None = None


SCHEMAS: list[dict[str, Any]] = [
    {"type": "string"},
    {"type": "null"},
    {"type": "boolean"},
    {"type": "integer", "minimum": 7},
    {"type": "integer", "exclusiveMinimum": 7, "maximum": 9},
    {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
    {"type": "number", "minimum": 2.5, "multipleOf": 0.5},
    {"type": ["string", "null"], "minLength": 12},
    {"type": "string", "format": "date-time"},
    {"type": "string", "maxLength": 2},
    {"enum": ["red", "green"]},
    {"const": {"fixed": True}},
    {"anyOf": [{"type": "integer"}, {"type": "string"}]},
    {"oneOf": [{"type": "string", "enum": ["a"]}, {"type": "integer"}]},
    {
        "allOf": [
            {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
            {"properties": {"b": {"type": "integer", "minimum": 3}}, "required": ["b"]},
        ]
    },
    {
        "type": "array",
        "prefixItems": [{"type": "integer"}, {"type": "string"}],
        "minItems": 3,
        "items": {"type": "boolean"},
    },
    {"type": "object", "additionalProperties": {"type": "integer", "minimum": 1}, "required": ["k"]},
    {
        "type": "object",
        "properties": {"p": {"$ref": "#/definitions/P"}},
        "required": ["p"],
        "definitions": {
            "P": {"type": "array", "items": {"$ref": "#/definitions/Q"}, "minItems": 1},
            "Q": {"type": "number", "minimum": 10},
        },
    },
    _Analysis.model_json_schema(),
    {"type": "object", "properties": {"items": {"type": "array", "items": _Tag.model_json_schema()}}},
]


@pytest.mark.parametrize("schema", SCHEMAS, ids=lambda s: json.dumps(s)[:40])
def test_schema_instance_validates(schema: dict[str, Any]) -> None:
    instance = schema_instance(schema)
    jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).validate(instance)
    assert json.loads(json.dumps(instance)) == instance


def test_pydantic_schema_round_trips_through_chat(fake: FakeOllama) -> None:
    with ollama.Client(host=fake.url, timeout=5) as c:
        reply = c.chat(TEXT, USER, format=_Analysis.model_json_schema(), stream=False)
    parsed = _Analysis.model_validate_json(reply.message.content or "")
    assert len(parsed.tags) == 2 and parsed.rating in (2, 4)


# --- loaded models: /api/ps, keep_alive, load time ----------------------------------------------


def _ps(fake: FakeOllama) -> dict[str, Any]:
    """`/api/ps` through the SDK: each loaded model's row, by name."""
    with ollama.Client(host=fake.url, timeout=5) as c:
        return {m.model: m for m in c.ps().models}


def test_ps_shows_what_a_chat_loaded_with_its_expiry_and_vram() -> None:
    big = FakeModel("big:70b", size=40_000_000_000, vram=24_000_000_000)  # partly offloaded to RAM
    with FakeOllama([FakeModel(TEXT), big]) as fake, ollama.Client(host=fake.url, timeout=5) as c:
        assert c.ps().models == []
        c.chat(TEXT, USER, stream=False)
        c.chat("big:70b", USER, stream=False, keep_alive="10m")
        rows = _ps(fake)
        assert set(rows) == {TEXT, "big:70b"}
        now = time.time()
        left = {name: row.expires_at.timestamp() - now for name, row in rows.items()}  # type: ignore[union-attr]
        assert 290 < left[TEXT] <= 300  # Ollama's default keep_alive, 5m
        assert 590 < left["big:70b"] <= 600
        assert rows[TEXT].size_vram == rows[TEXT].size == FakeModel(TEXT).size  # all of it on the GPU
        assert rows["big:70b"].size_vram == 24_000_000_000 < rows["big:70b"].size  # type: ignore[operator]
        raw = httpx.get(f"{fake.url}/api/ps", timeout=5).json()["models"][0]
        assert {"name", "model", "size", "digest", "details", "expires_at", "size_vram"} <= set(raw)
        assert raw["expires_at"].endswith("Z") and len(raw["expires_at"].split(".")[1]) == 10  # RFC3339Nano


def test_keep_alive_zero_unloads_negative_keeps_and_expired_models_leave_ps(fake: FakeOllama) -> None:
    with ollama.Client(host=fake.url, timeout=5) as c:
        c.chat(TEXT, USER, stream=False, keep_alive=0)
        assert _ps(fake) == {}
        c.chat(TEXT, USER, stream=False, keep_alive=-1)
        forever = _ps(fake)[TEXT].expires_at
        assert forever is not None and forever.year > 2300  # Go's longest duration, as Ollama sets it
        c.chat(VISION, USER, stream=False, keep_alive="1h30m")
        assert 5390 < _ps(fake)[VISION].expires_at.timestamp() - time.time() <= 5400  # type: ignore[union-attr]
        c.chat(VISION, USER, stream=False, keep_alive=0.3)  # seconds, as a number
        assert VISION in _ps(fake)
        time.sleep(0.4)
        assert set(_ps(fake)) == {TEXT}
        with pytest.raises(ollama.ResponseError) as refused:
            c.chat(TEXT, USER, stream=False, keep_alive="soon")  # type: ignore[arg-type]
        assert refused.value.status_code == 400
    fake.unload(TEXT)
    assert _ps(fake) == {}
    fake.load(VISION)
    assert set(_ps(fake)) == {VISION} and fake.loaded == {VISION}


def test_a_chat_waits_for_its_model_to_load_once() -> None:
    with FakeOllama(load_s=0.4) as fake, ollama.Client(host=fake.url, timeout=5) as c:
        started = time.perf_counter()
        first = c.chat(TEXT, USER, stream=False)
        cold = time.perf_counter() - started
        started = time.perf_counter()
        c.chat(TEXT, USER, stream=False)
        warm = time.perf_counter() - started
    assert cold >= 0.4 > warm
    assert first.load_duration is not None and first.load_duration >= 400_000_000


def test_max_loaded_evicts_the_least_recently_used() -> None:
    models = [FakeModel("a:1"), FakeModel("b:1"), FakeModel("c:1")]
    with FakeOllama(models, max_loaded=2) as fake, ollama.Client(host=fake.url, timeout=5) as c:
        for name in ("a:1", "b:1", "a:1", "c:1"):
            c.chat(name, USER, stream=False)
        assert set(_ps(fake)) == {"a:1", "c:1"}  # b was used longest ago


def test_a_fake_listens_where_it_is_told() -> None:
    from tests.conftest import free_port

    port = free_port()
    with FakeOllama(bind=("127.0.0.1", port)) as fake:
        assert fake.url == f"http://127.0.0.1:{port}"
        assert httpx.get(f"{fake.url}/api/version", timeout=5).status_code == 200
