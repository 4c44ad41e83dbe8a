"""GeminiAdapter through the real `google-genai` SDK, over real HTTP, against the fake Gemini API.

Both backends: the Gemini API by key, and Vertex AI with an access token (as CI and
`gcloud auth print-access-token` give), including per-model location routing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import jsonschema
import pytest

from mcp_llm.adapters.base import ImageInput, Message, Request, Timeouts
from mcp_llm.adapters.gemini import GeminiAdapter
from mcp_llm.config import Settings
from mcp_llm.errors import (
    AuthError,
    BadRequestError,
    ModelNotFoundError,
    ProviderServerError,
    ProviderTimeout,
    ProviderUnavailable,
)
from mcp_llm.schema.dialects import compile_gemini
from tests.conftest import assert_cancelling_closes, budget, free_port
from tests.fakes.gemini_server import FakeGemini
from tests.images import png_bytes

pytestmark = pytest.mark.anyio


KEY = "AIza-canary-gemini-77"
TOKEN = "ya29.canary-token-88"
SCHEMA: dict[str, Any] = {
    "$defs": {"Tag": {"type": "string", "enum": ["a", "b"]}},
    "type": "object",
    "properties": {
        "title": {"type": "string"},
        "tags": {"type": "array", "items": {"$ref": "#/$defs/Tag"}},
        "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        "extra": {"type": "object", "additionalProperties": {"type": "integer"}},
    },
    "required": ["title", "tags", "note"],
}


@pytest.fixture
def fake() -> Iterator[FakeGemini]:
    with FakeGemini(api_key=KEY, access_token=TOKEN, project="proj-1") as server:
        yield server
        assert not server.errors, server.errors


@pytest.fixture
def make_adapter(fake: FakeGemini, make_settings: Callable[..., Settings]) -> Callable[..., GeminiAdapter]:
    def make(toml: str = "", env: dict[str, str] | None = None, endpoint: str | None = None,
             timeout_s: float = 10, first_response: bool = True) -> GeminiAdapter:
        settings = make_settings(f'[providers.gemini]\nendpoint = "{endpoint or fake.url}"\n{toml}',
                                 env={"GEMINI_API_KEY": KEY} if env is None else env)
        timeouts = budget(timeout_s) if first_response else Timeouts(total_s=timeout_s)  # no first-byte budget
        return GeminiAdapter(settings.providers.gemini, timeouts=timeouts)

    return make


def ask(model: str = "gemini-2.5-flash", *, schema: dict[str, Any] | None = None, **fields: Any) -> Request:
    compiled = compile_gemini(schema).schema if schema is not None else None
    return Request(model=model, messages=[Message("user", "Name a film.")], schema=compiled, **fields)


async def test_structured_output_with_the_api_key(make_adapter, fake: FakeGemini) -> None:
    adapter = make_adapter()
    completion = await adapter.complete(ask(schema=SCHEMA, system="Be brief.", temperature=0.2, max_tokens=99))

    jsonschema.validate(json.loads(completion.text), SCHEMA)
    assert completion.input_tokens is not None and completion.output_tokens is not None
    (sent,) = fake.generate_requests
    assert sent.api == "gemini" and sent.model == "gemini-2.5-flash"
    assert sent.headers["x-goog-api-key"] == KEY
    config = sent.generation_config
    assert config["responseMimeType"] == "application/json"
    assert config["responseJsonSchema"] == compile_gemini(SCHEMA).schema  # $defs, $ref, anyOf kept
    assert config["temperature"] == 0.2 and config["maxOutputTokens"] == 99
    assert sent.system_instruction == "Be brief." or "Be brief." in json.dumps(sent.json["systemInstruction"])
    await adapter.aclose()


async def test_reask_history_and_images(make_adapter, fake: FakeGemini) -> None:
    adapter = make_adapter()
    raw = png_bytes(2, 2)
    request = Request(model="gemini-2.5-flash", messages=[
        Message("user", "Describe", [ImageInput(raw, "image/png")]),
        Message("assistant", "not json"),
        Message("user", "Again, as JSON."),
    ])
    fake.enqueue("A tiny square.")
    assert (await adapter.complete(request)).text == "A tiny square."
    (sent,) = fake.generate_requests
    assert [c["role"] for c in sent.json["contents"]] == ["user", "model", "user"]
    assert sent.images == [("image/png", raw)]
    await adapter.aclose()


async def test_vertex_with_access_token_and_per_model_location(make_adapter, fake: FakeGemini) -> None:
    toml = ('backend = "vertex"\nproject = "proj-1"\nlocation = "us-central1"\naccess_token_env = "VERTEX_TOKEN"\n'
            '[providers.gemini.locations]\n"gemini-3-pro-preview" = "global"\n')
    adapter = make_adapter(toml, env={"VERTEX_TOKEN": TOKEN})
    await adapter.complete(ask("gemini-2.5-flash", schema=SCHEMA))
    await adapter.complete(ask("gemini-3-pro-preview", schema=SCHEMA))

    first, second = fake.generate_requests
    assert (first.api, first.project, first.location) == ("vertex", "proj-1", "us-central1")
    assert (second.api, second.project, second.location) == ("vertex", "proj-1", "global")
    assert first.headers["authorization"] == f"Bearer {TOKEN}"
    health = await adapter.health()
    assert health.status == "ok" and "Vertex AI" in health.detail
    assert TOKEN not in health.model_dump_json()
    await adapter.aclose()


async def test_vertex_prefix_forces_vertex_on_an_api_key_setup(make_adapter, fake: FakeGemini) -> None:
    adapter = make_adapter('project = "proj-1"\naccess_token_env = "VERTEX_TOKEN"\n',
                           env={"GEMINI_API_KEY": KEY, "VERTEX_TOKEN": TOKEN})
    await adapter.complete(ask("gemini-2.5-flash", options={"vertex": True}))
    await adapter.complete(ask("gemini-2.5-flash"))
    assert [r.api for r in fake.generate_requests] == ["vertex", "gemini"]
    await adapter.aclose()


async def test_invalid_key_and_unknown_model(make_adapter) -> None:
    adapter = make_adapter(env={"GEMINI_API_KEY": "AIza-wrong"})
    with pytest.raises(AuthError) as caught:
        await adapter.complete(ask())
    assert "GEMINI_API_KEY" in caught.value.user_message() and "AIza-wrong" not in caught.value.user_message()
    await adapter.aclose()

    good = make_adapter()
    with pytest.raises(ModelNotFoundError):
        await good.complete(ask("gemini-9-ultra"))
    await good.aclose()


async def test_transport_faults_and_blocked_prompts(make_adapter, fake: FakeGemini) -> None:
    refused = make_adapter(endpoint=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ProviderUnavailable):
        await refused.complete(ask())
    await refused.aclose()

    adapter = make_adapter(timeout_s=1)
    fake.enqueue(hang=True)
    with pytest.raises(ProviderTimeout):
        await adapter.complete(ask())
    fake.enqueue(raw_body=b"<html>oops</html>")
    with pytest.raises(ProviderServerError, match="malformed"):
        await adapter.complete(ask())
    fake.enqueue(drop_connection=True)
    with pytest.raises(ProviderUnavailable):
        await adapter.complete(ask())
    fake.enqueue(blocked="SAFETY")
    with pytest.raises(BadRequestError, match="blocked"):
        await adapter.complete(ask())
    await adapter.aclose()


async def test_list_models_pages_and_keeps_generators_only(make_adapter, fake: FakeGemini) -> None:
    adapter = make_adapter()
    ids = {m.id for m in await adapter.list_models()}
    assert {"gemini-2.5-flash", "gemini-2.5-pro", "gemini-3-pro-preview"} <= ids
    assert "gemini-embedding-001" not in ids
    await adapter.aclose()


async def test_health_states(make_adapter) -> None:
    assert (await make_adapter(env={}).health()).status == "unconfigured"
    vertex_without_project = await make_adapter('backend = "vertex"\n', env={}).health()
    assert vertex_without_project.status == "unconfigured"
    assert "GOOGLE_CLOUD_PROJECT" in vertex_without_project.detail
    ok = make_adapter()
    health = await ok.health()
    assert health.status == "ok" and health.has_api_key and health.latency_ms is not None
    await ok.aclose()
    down = make_adapter(endpoint=f"http://127.0.0.1:{free_port()}")
    assert (await down.health()).status == "down"
    await down.aclose()


async def test_usage_counts_thinking_as_output_and_breaks_out_the_cached_prompt(make_adapter, fake: FakeGemini) -> None:
    """Gemini reports cached tokens among `promptTokenCount` (`cachedContentTokenCount`), and thinking apart
    from the answer (`thoughtsTokenCount`, billed as output): the completion's output is their sum."""
    adapter = make_adapter()
    fake.enqueue({"title": "Alien", "tags": [], "note": None}, prompt_tokens=900, cached_tokens=512,
                 completion_tokens=30, thoughts_tokens=70)
    fake.enqueue({"title": "Heat", "tags": [], "note": None}, prompt_tokens=40, completion_tokens=9)

    thought = await adapter.complete(ask(schema=SCHEMA))
    plain = await adapter.complete(ask(schema=SCHEMA))

    assert (thought.input_tokens, thought.cache_read_tokens) == (900, 512)
    assert (thought.output_tokens, thought.thinking_tokens) == (30 + 70, 70)
    assert (plain.input_tokens, plain.cache_read_tokens) == (40, None)
    assert (plain.output_tokens, plain.thinking_tokens) == (9, None)
    await adapter.aclose()


# --- one plain request when nobody streams ----------------------------------------------------------

ANSWER = {"title": "Alien", "tags": ["a"], "note": None}


def _answers(fake: FakeGemini) -> None:
    """The same answers queued: one with every usage field, one cut off at max_tokens, one stopped by safety
    with no text, one whose prompt was blocked."""
    fake.enqueue(ANSWER, prompt_tokens=900, cached_tokens=512, completion_tokens=30, thoughts_tokens=70)
    fake.enqueue('{"title": "A much', finish_reason="MAX_TOKENS", prompt_tokens=40, completion_tokens=3)
    fake.enqueue(finish_reason="SAFETY")
    fake.enqueue(blocked="PROHIBITED_CONTENT")


async def _read(adapter: GeminiAdapter, stream: bool) -> list[Any]:
    whole = await adapter.complete(ask(schema=SCHEMA, max_tokens=300, stream=stream))
    with pytest.raises(BadRequestError, match="cut off at the max_tokens limit \\(3\\)") as cut:
        await adapter.complete(ask(schema=SCHEMA, max_tokens=3, stream=stream))
    with pytest.raises(BadRequestError, match="SAFETY") as safety:
        await adapter.complete(ask(schema=SCHEMA, stream=stream))
    with pytest.raises(BadRequestError, match="blocked: PROHIBITED_CONTENT") as blocked:
        await adapter.complete(ask(schema=SCHEMA, stream=stream))
    return [whole, cut.value.answered, safety.value.message, blocked.value.message]


async def test_a_request_nobody_streams_is_one_plain_request_read_as_the_streamed_one(
    make_adapter, fake: FakeGemini
) -> None:
    """No progress asked and no first-response budget: `generate_content` (`:generateContent`), and the same
    reading as streamed: the text, finish reason, usage (prompt, cached, answer and thoughts), an answer cut
    off at MAX_TOKENS refused with its usage kept, safety stops and blocked prompts."""
    adapter = make_adapter(first_response=False)
    _answers(fake)
    plain = await _read(adapter, stream=False)
    _answers(fake)
    streamed = await _read(adapter, stream=True)

    assert plain == streamed
    whole, cut = plain[:2]
    assert json.loads(whole.text) == ANSWER and whole.finish_reason == "stop"
    assert (whole.input_tokens, whole.cache_read_tokens, whole.output_tokens, whole.thinking_tokens) == (
        900, 512, 30 + 70, 70)
    assert (cut.text, cut.finish_reason, cut.input_tokens, cut.output_tokens) == ('{"title": "A much', "max_tokens",
                                                                                  40, 3)
    assert [r.stream for r in fake.generate_requests] == [False] * 4 + [True] * 4
    await adapter.aclose()


async def test_a_plain_request_failing_mid_answer_is_the_apis_error_status(make_adapter, fake: FakeGemini) -> None:
    """Unstreamed, a failure while the model answers is the API's error status (500 INTERNAL, 503
    UNAVAILABLE): retryable, as the stream's error event is."""
    adapter = make_adapter(first_response=False)
    fake.enqueue(ANSWER, stream_error="Internal error encountered.")
    fake.enqueue(ANSWER, stream_error="The model is overloaded.", error_status="UNAVAILABLE")
    for expected in ("500", "503"):
        with pytest.raises(ProviderServerError, match=expected) as failed:
            await adapter.complete(ask(schema=SCHEMA, stream=False))
        assert failed.value.retryable
    assert [r.stream for r in fake.generate_requests] == [False, False]
    await adapter.aclose()


async def test_progress_or_a_first_response_budget_still_streams(make_adapter, fake: FakeGemini) -> None:
    pieces: list[str] = []

    async def on_chunk(piece: str) -> None:
        pieces.append(piece)

    plain = make_adapter(first_response=False)
    await plain.complete(ask(on_chunk=on_chunk, stream=True))
    await plain.complete(ask(on_chunk=on_chunk, stream=False))  # nobody asked for progress: one piece
    budgeted = make_adapter()  # a first-response budget: only a stream can bound the wait for the first byte
    await budgeted.complete(ask(stream=False))

    streamed_pieces = len(pieces) - 1
    assert streamed_pieces > 1 and "".join(pieces[:-1]) == pieces[-1]
    assert [r.stream for r in fake.generate_requests] == [True, False, True]
    await plain.aclose()
    await budgeted.aclose()


async def test_cancelling_a_plain_request_closes_it(make_adapter, fake: FakeGemini) -> None:
    adapter = make_adapter(timeout_s=30, first_response=False)
    await assert_cancelling_closes(fake, lambda: adapter.complete(ask(stream=False)))
    assert [r.stream for r in fake.generate_requests] == [False]
    await adapter.aclose()
