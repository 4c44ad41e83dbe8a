"""OllamaAdapter through the real `ollama` SDK, over real HTTP, against the fake Ollama.

Settings come from `load_settings(path, env={...})` like in production; nothing of ours or the
SDK's is patched. Each test looks at what reached the wire (`fake.requests`) or at what the
adapter's caller gets back (a Completion, a ModelInfo list, a Health, one of our errors).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import pytest

from mcp_llm.adapters.base import ImageInput, Message, Request, Timeouts
from mcp_llm.adapters.ollama import OllamaAdapter
from mcp_llm.config import Settings
from mcp_llm.errors import (
    BadRequestError,
    LLMError,
    ModelNotFoundError,
    ProviderError,
    ProviderNotReady,
    ProviderServerError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimitedError,
    TransientError,
)
from mcp_llm.registry import Registry
from tests.conftest import budget, free_port
from tests.fakes.ollama_server import FakeModel, FakeOllama
from tests.images import png_bytes

pytestmark = pytest.mark.anyio


CANARY = "sk-canary-ollama-123"
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"title": {"type": "string"}, "score": {"type": "integer", "minimum": 1}},
    "required": ["title", "score"],
    "additionalProperties": False,
}

MakeAdapter = Callable[..., OllamaAdapter]


def ask(model: str = "llama3.2:3b", prompt: str = "Say hi.", **fields: Any) -> Request:
    return Request(model=model, messages=[Message("user", prompt)], **fields)


def error_chain(exc: BaseException) -> str:
    """Every message in the exception and its causes, as a user or a log could see them."""
    parts: list[str] = []
    seen: BaseException | None = exc
    while seen is not None:
        parts += [str(seen), repr(seen)]
        if isinstance(seen, LLMError):
            parts.append(seen.user_message())
        seen = seen.__cause__ or seen.__context__
    return "\n".join(parts)


@pytest.fixture
async def make_adapter(make_settings: Callable[..., Settings]) -> AsyncIterator[MakeAdapter]:
    """Build adapters from a `[providers.ollama]` body and an env; every one is closed afterwards."""
    built: list[OllamaAdapter] = []

    def make(provider_toml: str, env: dict[str, str] | None = None, timeout_s: float = 10.0) -> OllamaAdapter:
        settings = make_settings(f"[providers.ollama]\n{provider_toml}\n", env)
        adapter = OllamaAdapter(settings.providers.ollama, timeouts=budget(timeout_s))
        built.append(adapter)
        return adapter

    yield make
    for adapter in built:
        await adapter.aclose()


@pytest.fixture
def adapter(make_adapter: MakeAdapter, fake_ollama: FakeOllama) -> OllamaAdapter:
    return make_adapter(f'endpoint = "{fake_ollama.url}"')


# --- request shapes -------------------------------------------------------------------------------


async def test_request_shape_schema_system_images_and_options(adapter: OllamaAdapter, fake_ollama: FakeOllama) -> None:
    image = png_bytes(3, 2)
    request = Request(
        model="llava:7b",
        messages=[Message("user", "Describe the picture.", [ImageInput(image, "image/png")])],
        system="You answer in JSON.",
        schema=SCHEMA,
        temperature=0.2,
        max_tokens=64,
    )
    await adapter.complete(request)

    body = fake_ollama.chat_requests[-1].json
    assert body["model"] == "llava:7b"
    assert body["stream"] is True
    assert body["format"] == SCHEMA
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert body["messages"][0]["content"] == "You answer in JSON."
    user = body["messages"][1]
    assert user["content"] == "Describe the picture."
    assert all(isinstance(item, str) for item in user["images"])
    assert [base64.b64decode(item, validate=True) for item in user["images"]] == [image]
    assert body["options"] == {"temperature": 0.2, "num_predict": 64}


async def test_no_schema_no_system_no_options_when_not_given(adapter: OllamaAdapter, fake_ollama: FakeOllama) -> None:
    await adapter.complete(ask())

    body = fake_ollama.chat_requests[-1].json
    assert body["stream"] is True
    assert body.get("format") in (None, "")
    assert [m["role"] for m in body["messages"]] == ["user"]
    assert "images" not in body["messages"][0] or not body["messages"][0]["images"]
    options = body.get("options") or {}
    assert "temperature" not in options
    assert "num_predict" not in options


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"temperature": 0.0}, {"temperature": 0.0}),  # a zero temperature is a setting, not "unset"
        ({"max_tokens": 5}, {"num_predict": 5}),
        ({"temperature": 1.5, "max_tokens": 1}, {"temperature": 1.5, "num_predict": 1}),
    ],
)
async def test_options_carry_exactly_what_was_given(
    adapter: OllamaAdapter, fake_ollama: FakeOllama, fields: dict[str, Any], expected: dict[str, Any]
) -> None:
    await adapter.complete(ask(**fields))
    assert fake_ollama.chat_requests[-1].json["options"] == expected


async def test_model_id_reaches_ollama_without_its_prefix(
    fake_ollama: FakeOllama, make_settings: Callable[..., Settings]
) -> None:
    registry = Registry(make_settings(f'[providers.ollama]\nendpoint = "{fake_ollama.url}"\n'))
    try:
        route = registry.resolve("ollama/llama3.2:3b")
        completion = await registry.adapter(route.provider).complete(ask(route.native))
    finally:
        await registry.aclose()
    assert fake_ollama.chat_requests[-1].json["model"] == "llama3.2:3b"
    assert completion.text == "This is a fake reply from llama3.2:3b."


# --- completion fields ----------------------------------------------------------------------------


async def test_completion_carries_text_tokens_and_finish_reason(
    adapter: OllamaAdapter, fake_ollama: FakeOllama
) -> None:
    fake_ollama.enqueue("cut off mid", prompt_tokens=11, completion_tokens=7, done_reason="length")
    completion = await adapter.complete(ask())
    assert completion.text == "cut off mid"
    assert completion.input_tokens == 11
    assert completion.output_tokens == 7
    assert completion.finish_reason == "length"


@pytest.mark.parametrize("streamed", [True, False])
async def test_a_json_answer_cut_at_num_predict_is_a_clear_error_not_a_prefix(
    make_settings: Callable[..., Settings], fake_ollama: FakeOllama, streamed: bool
) -> None:
    """Streamed or plain, a schema answer Ollama stopped at the token limit (`done_reason: length`) ends in
    the cut-off error the other providers give, which the router does not re-ask with the same budget:
    "12345" of "1234567890" still parses as an integer."""
    settings = make_settings(f'[providers.ollama]\nendpoint = "{fake_ollama.url}"\n')
    # a first-response budget streams every call; without one, a call nobody streams is one plain request
    adapter = OllamaAdapter(settings.providers.ollama, timeouts=budget(10) if streamed else Timeouts(total_s=10))
    fake_ollama.enqueue("12345", prompt_tokens=5, completion_tokens=2, done_reason="length")
    try:
        cut_off = pytest.raises(BadRequestError, match="cut off at the max_tokens limit \\(2\\)")
        with anyio.fail_after(10), cut_off as caught:
            await adapter.complete(ask(schema={"type": "integer"}, max_tokens=2, stream=False))
    finally:
        await adapter.aclose()
    assert "Raise max_tokens" in caught.value.user_message()
    assert caught.value.answered.output_tokens == 2  # the usage it was billed for stays with the error
    (sent,) = fake_ollama.chat_requests
    assert sent.json["stream"] is streamed and sent.json["options"]["num_predict"] == 2


async def test_schema_reply_text_is_the_json_the_model_sent(adapter: OllamaAdapter, fake_ollama: FakeOllama) -> None:
    fake_ollama.enqueue({"title": "ok", "score": 3})
    completion = await adapter.complete(ask(schema=SCHEMA))
    assert json.loads(completion.text) == {"title": "ok", "score": 3}
    assert completion.finish_reason == "stop"


# --- error translation (every status, every SDK exception class: tests/test_provider_errors.py) ---------


async def test_unknown_model_says_how_to_get_it(adapter: OllamaAdapter) -> None:
    with pytest.raises(ModelNotFoundError) as caught:
        await adapter.complete(ask("mistral:7b"))
    assert caught.value.status == 404
    assert "mistral:7b" in str(caught.value)
    assert "ollama pull mistral:7b" in caught.value.user_message()


async def test_rate_limit_keeps_retry_after(adapter: OllamaAdapter, fake_ollama: FakeOllama) -> None:
    fake_ollama.enqueue(status=429, error="slow down", headers={"Retry-After": "3"})
    with pytest.raises(RateLimitedError) as caught:
        await adapter.complete(ask())
    assert caught.value.retry_after == 3


async def test_connection_refused_is_provider_unavailable(make_adapter: MakeAdapter) -> None:
    adapter = make_adapter(f'endpoint = "http://127.0.0.1:{free_port()}"')
    with pytest.raises(ProviderUnavailable) as caught:
        await adapter.complete(ask())
    exc = caught.value
    assert exc.retryable is True
    assert exc.provider == "ollama"
    assert adapter.endpoint in str(exc)
    assert "ollama serve" in exc.user_message()


async def test_read_timeout_is_provider_timeout(make_adapter: MakeAdapter, fake_ollama: FakeOllama) -> None:
    adapter = make_adapter(f'endpoint = "{fake_ollama.url}"', timeout_s=0.3)
    fake_ollama.enqueue(hang=True)
    started = time.monotonic()
    with pytest.raises(ProviderTimeout) as caught:
        await adapter.complete(ask())
    assert time.monotonic() - started < 3
    exc = caught.value
    assert exc.retryable is True
    assert exc.provider == "ollama"
    assert adapter.endpoint in str(exc)
    assert fake_ollama.wait_for_disconnect()


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"<html>502 Bad Gateway</html>", id="html"),
        pytest.param(b'{"model": "llama3.2:3b", "message": {', id="truncated-json"),
        pytest.param(b'{"model": "llama3.2:3b", "message": "not an object"}', id="wrong-shape"),
        pytest.param(
            b"null",
            id="json-null",
        ),
        pytest.param(
            b"[1, 2]",
            id="json-list",
        ),
    ],
)
async def test_malformed_body_is_a_retryable_server_error(
    adapter: OllamaAdapter, fake_ollama: FakeOllama, body: bytes
) -> None:
    fake_ollama.enqueue(raw_body=body)
    with pytest.raises(LLMError) as caught:
        await adapter.complete(ask())
    exc = caught.value
    assert type(exc) is ProviderServerError
    assert exc.retryable is True
    assert exc.provider == "ollama"
    assert adapter.endpoint in str(exc)


async def test_dropped_connection_is_retryable_and_the_next_call_works(
    adapter: OllamaAdapter, fake_ollama: FakeOllama
) -> None:
    fake_ollama.enqueue(drop_connection=True)
    fake_ollama.enqueue("back again")
    with pytest.raises(TransientError) as caught:
        await adapter.complete(ask())
    assert caught.value.retryable is True
    assert caught.value.provider == "ollama"
    assert adapter.endpoint in str(caught.value)
    assert (await adapter.complete(ask())).text == "back again"


# --- list_models ----------------------------------------------------------------------------------


async def test_list_models_discovers_ids_and_vision(adapter: OllamaAdapter) -> None:
    models = {m.id: m for m in await adapter.list_models()}
    assert set(models) == {"ollama/llama3.2:3b", "ollama/llava:7b"}
    assert models["ollama/llava:7b"].vision is True
    assert models["ollama/llama3.2:3b"].vision is False
    for model in models.values():
        assert model.provider == "ollama"
        assert model.source == "discovered"
        assert model.available is True


class _ShowFails(FakeModel):
    """A model the fake lists in /api/tags but whose /api/show fails with a 500."""

    @property
    def capabilities(self) -> list[str]:
        raise RuntimeError("show is broken for this model")


async def test_one_failing_show_does_not_sink_the_listing(make_adapter: MakeAdapter) -> None:
    models = [FakeModel("llama3.2:3b"), _ShowFails("broken:1b"), FakeModel("llava:7b", vision=True)]
    with FakeOllama(models=models) as fake:
        adapter = make_adapter(f'endpoint = "{fake.url}"')
        listed = {m.id: m for m in await adapter.list_models()}
        shows = [r for r in fake.requests if r.path == "/api/show"]
        fake_errors = [str(e) for e in fake.errors]
    assert set(listed) == {"ollama/llama3.2:3b", "ollama/broken:1b", "ollama/llava:7b"}
    assert listed["ollama/llava:7b"].vision is True
    assert listed["ollama/broken:1b"].vision is False
    assert {r.json["model"] for r in shows} == {"llama3.2:3b", "broken:1b", "llava:7b"}
    assert fake_errors == ["show is broken for this model"]  # the fake answered that /api/show with a 500


async def test_list_models_when_ollama_is_down(make_adapter: MakeAdapter) -> None:
    adapter = make_adapter(f'endpoint = "http://127.0.0.1:{free_port()}"')
    with pytest.raises(ProviderUnavailable) as caught:
        await adapter.list_models()
    assert adapter.endpoint in str(caught.value)


# --- health ---------------------------------------------------------------------------------------


async def test_health_ok_with_version_latency_and_model_count(adapter: OllamaAdapter) -> None:
    health = await adapter.health()
    assert health.provider == "ollama"
    assert health.status == "ok"
    assert health.version == "0.12.3"
    assert health.latency_ms is not None and health.latency_ms >= 0
    assert health.endpoint == adapter.endpoint
    assert health.has_api_key is False
    assert health.detail == "2 models installed"


async def test_health_counts_one_model_in_the_singular(make_adapter: MakeAdapter) -> None:
    with FakeOllama(models=[FakeModel("llama3.2:3b")], version="0.13.0") as fake:
        health = await make_adapter(f'endpoint = "{fake.url}"').health()
    assert (health.status, health.version, health.detail) == ("ok", "0.13.0", "1 model installed")


async def test_health_down_says_where_and_how_to_start_ollama(make_adapter: MakeAdapter) -> None:
    adapter = make_adapter(f'endpoint = "http://127.0.0.1:{free_port()}"')
    health = await adapter.health()
    assert health.status == "down"
    assert health.endpoint == adapter.endpoint
    assert adapter.endpoint in health.detail
    assert "ollama serve" in health.detail


async def test_cloud_without_a_key_is_unconfigured_and_costs_nothing(
    make_adapter: MakeAdapter, fake_ollama: FakeOllama
) -> None:
    adapter = make_adapter(f'use_cloud = true\nendpoint = "{fake_ollama.url}"', env={})
    health = await adapter.health()
    assert health.status == "unconfigured"
    assert health.has_api_key is False
    assert "OLLAMA_API_KEY" in health.detail
    with pytest.raises(ProviderNotReady) as caught:
        await adapter.complete(ask())
    assert caught.value.provider == "ollama"
    assert "OLLAMA_API_KEY" in caught.value.user_message()
    assert fake_ollama.requests == []


# --- keys -----------------------------------------------------------------------------------------


async def test_local_endpoint_never_receives_the_api_key(
    make_adapter: MakeAdapter, fake_ollama: FakeOllama, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OLLAMA_API_KEY", CANARY)  # the SDK reads os.environ by itself
    adapter = make_adapter(f'endpoint = "{fake_ollama.url}"', env={"OLLAMA_API_KEY": CANARY})
    await adapter.complete(ask())
    await adapter.list_models()
    assert (await adapter.health()).has_api_key is True

    assert {r.path for r in fake_ollama.requests} >= {"/api/chat", "/api/tags", "/api/show", "/api/version"}
    for recorded in fake_ollama.requests:
        assert "authorization" not in recorded.headers, recorded.path
        assert CANARY not in json.dumps(recorded.headers)


async def test_cloud_endpoint_receives_the_bearer_key(
    make_adapter: MakeAdapter, fake_ollama: FakeOllama, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OLLAMA_API_KEY", CANARY)
    adapter = make_adapter(f'use_cloud = true\nendpoint = "{fake_ollama.url}"', env={"OLLAMA_API_KEY": CANARY})
    await adapter.complete(ask())
    await adapter.list_models()
    assert (await adapter.health()).status == "ok"

    assert fake_ollama.requests
    for recorded in fake_ollama.requests:
        assert recorded.headers.get("authorization") == f"Bearer {CANARY}", recorded.path


async def test_cloud_sends_the_key_from_api_key_env_not_the_process_one(
    make_adapter: MakeAdapter, fake_ollama: FakeOllama, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OLLAMA_API_KEY", "sk-canary-process-456")
    adapter = make_adapter(
        f'use_cloud = true\nendpoint = "{fake_ollama.url}"\napi_key_env = "MY_OLLAMA_CLOUD_KEY"',
        env={"MY_OLLAMA_CLOUD_KEY": CANARY},
    )
    await adapter.complete(ask())
    assert fake_ollama.chat_requests[-1].headers.get("authorization") == f"Bearer {CANARY}"


@pytest.mark.parametrize(
    "fault",
    [
        {"status": 401, "error": "unauthorized"},
        {"status": 403, "error": "forbidden"},
        {"status": 404, "error": "not found"},
        {"status": 429, "error": "too many requests"},
        {"status": 500, "error": "boom"},
        {"raw_body": b"<html>oops</html>"},
        {"drop_connection": True},
        {"hang": True},
    ],
    ids=lambda fault: "-".join(f"{k}={v}" for k, v in fault.items()),
)
async def test_cloud_key_never_appears_in_errors(
    make_adapter: MakeAdapter, fake_ollama: FakeOllama, monkeypatch: pytest.MonkeyPatch, fault: dict[str, Any]
) -> None:
    monkeypatch.setenv("OLLAMA_API_KEY", CANARY)
    adapter = make_adapter(
        f'use_cloud = true\nendpoint = "{fake_ollama.url}"', env={"OLLAMA_API_KEY": CANARY}, timeout_s=0.3
    )
    fake_ollama.enqueue(**fault)
    with pytest.raises(ProviderError) as caught:
        await adapter.complete(ask())
    assert fake_ollama.chat_requests[-1].headers.get("authorization") == f"Bearer {CANARY}"  # it was sent
    assert CANARY not in error_chain(caught.value)
    assert CANARY not in (caught.value.hint or "")


async def test_cloud_key_never_appears_in_health_or_connection_errors(
    make_adapter: MakeAdapter, fake_ollama: FakeOllama, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OLLAMA_API_KEY", CANARY)
    env = {"OLLAMA_API_KEY": CANARY}
    up = make_adapter(f'use_cloud = true\nendpoint = "{fake_ollama.url}"', env=env)
    down = make_adapter(f'use_cloud = true\nendpoint = "http://127.0.0.1:{free_port()}"', env=env)

    healthy, unreachable = await up.health(), await down.health()
    assert (healthy.status, healthy.has_api_key) == ("ok", True)
    assert (unreachable.status, unreachable.has_api_key) == ("down", True)
    for health in (healthy, unreachable):
        assert CANARY not in health.model_dump_json()
        assert CANARY not in repr(health)
    with pytest.raises(ProviderUnavailable) as caught:
        await down.complete(ask())
    assert CANARY not in error_chain(caught.value)


# --- lifecycle ------------------------------------------------------------------------------------


async def test_aclose_closes_the_client_twice_harmlessly_and_the_adapter_rebuilds(
    adapter: OllamaAdapter, fake_ollama: FakeOllama
) -> None:
    await adapter.aclose()  # before any use: nothing to close, no error
    await adapter.complete(ask())
    shards = adapter._clients.get(fake_ollama.url)  # no public handle on the SDK client: look, do not touch
    assert shards is not None
    (sdk_client,) = shards.all()  # one call in flight at most: one client (adapters/shards.py)

    await adapter.aclose()
    assert sdk_client._client.is_closed
    await adapter.aclose()

    fake_ollama.enqueue("after close")
    assert (await adapter.complete(ask())).text == "after close"
    assert len(fake_ollama.chat_requests) == 2


async def test_the_boolean_schema_true_goes_as_json_mode(adapter: OllamaAdapter, fake_ollama: FakeOllama) -> None:
    """`true` (any JSON value) compiles to itself for Ollama, and the SDK takes only '', 'json' or an
    object as `format`: it used to refuse the request (and blame the server for it)."""
    fake_ollama.enqueue([1, "two"])
    completion = await adapter.complete(ask(schema=True))
    assert json.loads(completion.text) == [1, "two"]
    assert fake_ollama.chat_requests[-1].json["format"] == "json"
