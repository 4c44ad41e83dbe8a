"""OpenAIAdapter through the real `openai` SDK, over real HTTP, against the fake OpenAI API; and the
`openai/…` and `<endpoint>/…` routes end to end through an MCP client."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import pytest
from mcp import Client

from mcp_llm.adapters.base import ImageInput, Message, Request, Timeouts
from mcp_llm.adapters.openai import OpenAIAdapter, is_strict_compatible
from mcp_llm.config import Settings
from mcp_llm.errors import (
    AuthError,
    BadRequestError,
    ModelNotFoundError,
    ProviderServerError,
    ProviderTimeout,
    ProviderUnavailable,
)
from mcp_llm.server import build_server
from tests.conftest import assert_cancelling_closes, assert_sent_one_at_a_time, budget, call, call_error, free_port
from tests.fakes.openai_server import FakeOpenAI, response_schema
from tests.images import png_bytes

pytestmark = pytest.mark.anyio

KEY = "sk-openai-canary-0042"
LOCAL_KEY = "sk-local-canary-0077"
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"title": {"type": "string"}, "year": {"type": "integer", "minimum": 1900, "maximum": 2030}},
    "required": ["title", "year"],
}


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=KEY) as server:
        yield server
        assert not server.errors, server.errors


@pytest.fixture
def make_adapter(fake: FakeOpenAI, make_settings: Callable[..., Settings]) -> Callable[..., OpenAIAdapter]:
    def make(endpoint: str | None = None, key: str | None = KEY, timeout_s: float = 10, compatible: bool = False,
             structured_output: str = "json_schema", first_response: bool = True) -> OpenAIAdapter:
        url = endpoint or fake.base_url
        if compatible:
            toml = (f'[providers.openai_compatible.local]\nendpoint = "{url}"\napi_key_env = "LOCAL_KEY"\n'
                    f'models = ["local-model"]\nstructured_output = "{structured_output}"\n')
            settings = make_settings(toml, env={"LOCAL_KEY": key} if key else {"OPENAI_API_KEY": KEY})
            return OpenAIAdapter(settings.providers.openai_compatible["local"], timeouts=budget(timeout_s),
                                 name="local")
        toml = f'[providers.openai]\nendpoint = "{url}"\nstructured_output = "{structured_output}"\n'
        settings = make_settings(toml, env={"OPENAI_API_KEY": key} if key else {})
        timeouts = budget(timeout_s) if first_response else Timeouts(total_s=timeout_s)  # no first-byte budget
        return OpenAIAdapter(settings.providers.openai, timeouts=timeouts)

    return make


def ask(model: str = "gpt-4.1-mini", *, schema: dict[str, Any] | None = SCHEMA, **fields: Any) -> Request:
    return Request(model=model, messages=[Message("user", "Name a film.")], schema=schema, **fields)


async def test_json_schema_request_streamed_and_its_reply(make_adapter, fake: FakeOpenAI) -> None:
    adapter = make_adapter()
    fake.enqueue({"title": "Alien", "year": 1979}, prompt_tokens=21, completion_tokens=8)

    completion = await adapter.complete(ask(system="Be brief.", temperature=0.2, max_tokens=200))

    assert json.loads(completion.text) == {"title": "Alien", "year": 1979}
    assert (completion.input_tokens, completion.output_tokens, completion.finish_reason) == (21, 8, "stop")
    (sent,) = fake.chat_requests
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.json["messages"] == [{"role": "system", "content": "Be brief."},
                                     {"role": "user", "content": "Name a film."}]
    assert sent.json["stream"] is True and sent.json["stream_options"] == {"include_usage": True}
    assert sent.json["temperature"] == 0.2
    assert sent.json["max_completion_tokens"] == 200 and "max_tokens" not in sent.json  # OpenAI's own name
    assert response_schema(sent.json) == SCHEMA
    assert sent.json["response_format"]["json_schema"]["strict"] is False  # optional-free but open objects
    await adapter.aclose()


async def test_a_request_nobody_streams_is_one_plain_request_and_its_reply(make_adapter, fake: FakeOpenAI) -> None:
    """No progress asked and no first-response budget (`Request.stream` False): one plain request, the same
    answer and usage, and a cut-off JSON answer refused the same; a mid-answer failure is a 500, retryable."""
    adapter = make_adapter(first_response=False)
    fake.enqueue({"title": "Alien", "year": 1979}, prompt_tokens=21, completion_tokens=8)
    fake.enqueue({"title": "A much longer title than the limit allows"}, finish_reason="length")
    fake.enqueue({"title": "Alien"}, stream_error="server_error")

    completion = await adapter.complete(ask(max_tokens=200, stream=False))
    with pytest.raises(BadRequestError, match="cut off"):
        await adapter.complete(ask(stream=False))
    with pytest.raises(ProviderServerError):
        await adapter.complete(ask(stream=False))

    assert json.loads(completion.text) == {"title": "Alien", "year": 1979}
    assert (completion.input_tokens, completion.output_tokens, completion.finish_reason) == (21, 8, "stop")
    for sent in fake.chat_requests:
        assert not sent.json.get("stream") and "stream_options" not in sent.json, sent.json
    assert response_schema(fake.chat_requests[0].json) == SCHEMA
    await adapter.aclose()


async def test_strict_only_for_a_schema_that_meets_strict_rules(make_adapter, fake: FakeOpenAI) -> None:
    closed = {**SCHEMA, "additionalProperties": False}
    assert is_strict_compatible(closed) and not is_strict_compatible(SCHEMA)
    assert not is_strict_compatible({**closed, "required": ["title"]})  # an optional field
    adapter = make_adapter()
    await adapter.complete(ask(schema=closed))
    assert fake.chat_requests[0].json["response_format"]["json_schema"]["strict"] is True
    await adapter.aclose()


async def test_compatible_endpoint_uses_its_own_key_and_max_tokens(make_adapter, fake: FakeOpenAI) -> None:
    fake.api_key = LOCAL_KEY
    adapter = make_adapter(compatible=True, key=LOCAL_KEY)
    await adapter.complete(ask("local-model", max_tokens=50))
    (sent,) = fake.chat_requests
    assert sent.headers["authorization"] == f"Bearer {LOCAL_KEY}"
    assert sent.json["max_tokens"] == 50 and "max_completion_tokens" not in sent.json
    assert "strict" not in sent.json["response_format"]["json_schema"]
    await adapter.aclose()


async def test_keyless_endpoint_never_gets_openai_api_key(make_adapter, fake: FakeOpenAI) -> None:
    fake.api_key = None
    adapter = make_adapter(compatible=True, key=None)  # OPENAI_API_KEY is set in its environment
    await adapter.complete(ask("local-model"))
    assert KEY not in fake.chat_requests[0].headers.get("authorization", "")
    health = await adapter.health()
    assert health.status == "ok" and health.has_api_key is False
    await adapter.aclose()


async def test_refused_response_format_steps_down_and_is_remembered(make_adapter, fake: FakeOpenAI) -> None:
    fake.refuse_formats = ("json_schema",)
    adapter = make_adapter(compatible=True, key=LOCAL_KEY)
    fake.api_key = LOCAL_KEY
    completion = await adapter.complete(ask("local-model"))
    assert completion.text == "{}"  # JSON mode: the router validates it and re-asks
    kinds = [r.json.get("response_format", {}).get("type") for r in fake.chat_requests]
    assert kinds == ["json_schema", "json_object"]
    assert adapter.mode_for("local-model") == "json_object"

    fake.refuse_formats = ("json_schema", "json_object")
    fake.reset()
    await adapter.complete(ask("local-model"))
    kinds = [r.json.get("response_format", {}).get("type") for r in fake.chat_requests]
    assert kinds == ["json_object", None]  # straight to what it last accepted, then down to the prompt
    assert adapter.mode_for("local-model") == "none"
    await adapter.aclose()


@pytest.mark.parametrize("mode", ["json_object", "none"])
async def test_configured_structured_output(make_adapter, fake: FakeOpenAI, mode: str) -> None:
    adapter = make_adapter(structured_output=mode)
    await adapter.complete(ask())
    await adapter.complete(ask(schema={"type": "array", "items": {"type": "integer"}}))
    first, second = fake.chat_requests
    assert first.json.get("response_format") == ({"type": "json_object"} if mode == "json_object" else None)
    assert "response_format" not in second.json  # JSON mode makes only objects: an array root goes by prompt
    await adapter.aclose()


async def test_cut_at_max_tokens_is_a_clear_error_not_truncated_data(make_adapter, fake: FakeOpenAI) -> None:
    adapter = make_adapter()
    fake.enqueue("12345678901234567890")  # cut after 2 "tokens": "123456789012" still parses as a number
    with pytest.raises(BadRequestError, match="cut off at the max_tokens limit \\(2\\)") as caught:
        await adapter.complete(ask(schema={"type": "integer"}, max_tokens=2))
    assert "Raise max_tokens" in caught.value.user_message()
    await adapter.aclose()


async def test_images_go_as_data_uris(make_adapter, fake: FakeOpenAI) -> None:
    adapter = make_adapter()
    png = png_bytes()
    request = Request(model="gpt-4.1-mini", messages=[Message("user", "What is this?", [ImageInput(png, "image/png")])])
    completion = await adapter.complete(request)
    assert completion.text.startswith("This is a fake reply")
    (sent,) = fake.chat_requests
    text, image = sent.json["messages"][0]["content"]
    assert text == {"type": "text", "text": "What is this?"}
    assert image["image_url"]["url"] == "data:image/png;base64," + base64.b64encode(png).decode()
    assert "response_format" not in sent.json
    await adapter.aclose()


async def test_wrong_key_and_unknown_model(make_adapter, fake: FakeOpenAI) -> None:
    adapter = make_adapter(key="sk-wrong-key")
    with pytest.raises(AuthError) as caught:
        await adapter.complete(ask())
    assert "OPENAI_API_KEY" in caught.value.user_message() and "sk-wrong-key" not in caught.value.user_message()
    await adapter.aclose()

    adapter = make_adapter()
    with pytest.raises(ModelNotFoundError, match="gpt-nope") as caught:
        await adapter.complete(ask("gpt-nope"))
    assert "list_models" in caught.value.user_message()
    await adapter.aclose()


async def test_transport_faults(make_adapter, fake: FakeOpenAI) -> None:
    refused = make_adapter(endpoint=f"http://127.0.0.1:{free_port()}/v1")
    with pytest.raises(ProviderUnavailable):
        await refused.complete(ask())
    await refused.aclose()

    adapter = make_adapter(timeout_s=0.5)
    fake.enqueue(hang=True)
    with pytest.raises(ProviderTimeout):
        await adapter.complete(ask())
    assert fake.wait_for_disconnect(timeout=5)

    fake.enqueue(stall_after=2)
    with pytest.raises(ProviderTimeout):
        await adapter.complete(ask())

    fake.enqueue(stream_error="server_error", message="model crashed")
    with pytest.raises(ProviderServerError, match="mid-stream: model crashed"):
        await adapter.complete(ask())

    fake.enqueue(raw_body=b"data: {not json\n\n", headers={"Content-Type": "text/event-stream"})
    with pytest.raises(ProviderServerError):
        await adapter.complete(ask())

    fake.enqueue(drop_connection=True)
    with pytest.raises(ProviderUnavailable):
        await adapter.complete(ask())
    await adapter.aclose()


async def test_cancellation_closes_the_request(make_adapter, fake: FakeOpenAI) -> None:
    """Streamed (a first-response budget) and plain: the fake sees the connection closed either way."""
    for adapter in (make_adapter(timeout_s=30), make_adapter(timeout_s=30, first_response=False)):
        await assert_cancelling_closes(fake, lambda adapter=adapter: adapter.complete(ask(stream=False)))
        await adapter.aclose()
    assert [r.json.get("stream") for r in fake.chat_requests] == [True, None]


async def test_list_models_and_health(make_adapter, fake: FakeOpenAI) -> None:
    adapter = make_adapter()
    models = await adapter.list_models()
    assert {m.id for m in models} == {"openai/gpt-4.1-mini", "openai/local-model"}  # no embedding model
    assert all(m.source == "discovered" and m.provider == "openai" for m in models)
    health = await adapter.health()
    assert health.status == "ok" and health.has_api_key and "2 models served" in health.detail
    assert [r.path for r in fake.requests] == ["/v1/models", "/v1/models"]  # never a completion
    assert KEY not in health.model_dump_json()
    await adapter.aclose()

    assert (await make_adapter(key=None).health()).status == "unconfigured"
    down = make_adapter(endpoint=f"http://127.0.0.1:{free_port()}/v1")
    health = await down.health()
    assert health.status == "down" and "Cannot reach OpenAI" in health.detail
    await down.aclose()


# --- end to end: routing, the router's validation and re-asks, the tools ---------------------------


def _config(fake: FakeOpenAI, extra: str = "") -> str:
    return (f'[defaults]\nmax_retries = 0\n[providers.openai]\nendpoint = "{fake.base_url}"\n'
            f'[providers.openai_compatible.llamacpp]\nendpoint = "{fake.base_url}"\napi_key_env = "LOCAL_KEY"\n'
            f'models = ["local-model"]\n{extra}')


async def test_tools_through_an_mcp_client(fake: FakeOpenAI, make_settings) -> None:
    fake.api_key = None
    settings = make_settings(_config(fake), env={"OPENAI_API_KEY": KEY, "LOCAL_KEY": LOCAL_KEY})
    async with Client(build_server(settings)) as client:
        result = await call(client, "generate_structured", prompt="A film?", schema=SCHEMA,
                            model="llamacpp/local-model")
        assert result["provider"] == "llamacpp" and result["model"] == "llamacpp/local-model"
        assert set(result["data"]) == {"title", "year"}

        fake.enqueue("Sure! Here it is: no JSON")  # prose, then the re-ask gets valid JSON
        fake.enqueue({"value": [3, 4]})
        result = await call(client, "generate_structured", prompt="Two numbers", model="openai/gpt-4.1-mini",
                            schema={"type": "array", "items": {"type": "integer"}, "maxItems": 2})
        assert result["data"] == [3, 4]
        assert [a["outcome"] for a in result["attempts"]] == ["invalid_output", "ok"]
        assert any("wrapped" in r for r in result["schema_rewrites"])

        models = {m["id"]: m for m in (await call(client, "list_models"))["models"]}
        assert models["llamacpp/local-model"]["source"] == "config" and models["llamacpp/local-model"]["available"]
        assert "openai/gpt-4.1-mini" in models
        report = {h["provider"]: h for h in (await call(client, "provider_health"))["providers"]}
        assert report["llamacpp"]["status"] == "ok" and report["openai"]["status"] == "ok"
        assert report["llamacpp"]["has_api_key"] is True
        assert KEY not in json.dumps(report) and LOCAL_KEY not in json.dumps(report)

        fake.stop()
        text = await call_error(client, "generate_structured", prompt="hi", schema=SCHEMA, model="llamacpp/local-model")
        assert "Cannot reach llamacpp" in text and "providers.openai_compatible.llamacpp.endpoint" in text


async def test_a_named_endpoint_has_its_own_concurrency_bound(fake: FakeOpenAI, make_settings) -> None:
    # `[providers.openai_compatible.<name>] concurrency` bounds the requests in flight to that server.
    fake.api_key = None
    config = _config(fake).replace('models = ["local-model"]\n', 'models = ["local-model"]\nconcurrency = 1\n')
    settings = make_settings(config, env={"OPENAI_API_KEY": KEY, "LOCAL_KEY": LOCAL_KEY})
    fake.enqueue({"title": "A", "year": 2001}, delay_s=1.5)
    fake.enqueue({"title": "B", "year": 2002})
    async with Client(build_server(settings)) as client:

        async def one() -> None:
            await call(client, "generate_structured", prompt="A film?", schema=SCHEMA, model="llamacpp/local-model")

        await assert_sent_one_at_a_time(fake, one)


@pytest.mark.parametrize("mode", ["json_schema", "json_object", "none"])
async def test_the_boolean_schema_true_on_a_compatible_endpoint(make_adapter, fake: FakeOpenAI, mode: str) -> None:
    """An OpenAI-compatible endpoint gets `true` as compiled (it is not wrapped): JSON mode, which only
    makes objects, is left out rather than crashing on `true.get`."""
    adapter = make_adapter(compatible=True, structured_output=mode)
    fake.enqueue({"any": "thing"})
    try:
        completion = await adapter.complete(ask("local-model", schema=True))
    finally:
        await adapter.aclose()
    assert json.loads(completion.text) == {"any": "thing"}
    sent = fake.chat_requests[-1].json
    if mode == "json_schema":
        assert sent["response_format"]["json_schema"]["schema"] is True
    else:
        assert "response_format" not in sent


async def test_usage_breaks_out_cached_prompt_and_reasoning_tokens(make_adapter, fake: FakeOpenAI) -> None:
    """OpenAI counts cached prompt tokens among `prompt_tokens` and reasoning among `completion_tokens`,
    each broken out in its `*_details`, in the stream's last chunk (`stream_options.include_usage`)."""
    adapter = make_adapter()
    fake.enqueue({"title": "Alien", "year": 1979}, prompt_tokens=1500, cached_tokens=1024, completion_tokens=120,
                 reasoning_tokens=96)

    completion = await adapter.complete(ask())

    assert (completion.input_tokens, completion.cache_read_tokens, completion.cache_write_tokens) == (1500, 1024, None)
    assert (completion.output_tokens, completion.thinking_tokens) == (120, 96)
    await adapter.aclose()


async def test_an_endpoints_credentials_and_query_are_in_no_result_error_or_log_line(
    fake: FakeOpenAI, make_settings, caplog: pytest.LogCaptureFixture
) -> None:
    """`user:password@` is sent as Basic auth and a query may hold a gateway's key: results, errors and
    log lines (httpx logs each request's URL) show the endpoint without them (`public_url`)."""
    import logging

    from mcp_llm.cli import _PublicUrls

    secret = "pw-canary-0099"
    answering = fake.base_url.replace("http://", f"http://box:{secret}@")
    down = f"http://box:{secret}@127.0.0.1:{free_port()}/v1?key={secret}"
    fake.api_key = None
    settings = make_settings(
        f'[defaults]\nmax_retries = 0\n[providers.openai_compatible.box]\nendpoint = "{answering}"\n'
        f'api_key_env = ""\nmodels = ["local-model"]\n'
        f'[providers.openai_compatible.gone]\nendpoint = "{down}"\napi_key_env = ""\nmodels = ["m"]\n')
    handler = caplog.handler
    handler.addFilter(_PublicUrls())  # the command line's handler has it (cli._setup_logging)
    caplog.set_level(logging.DEBUG)
    try:
        with anyio.fail_after(30):
            async with Client(build_server(settings)) as client:
                result = await call(client, "generate_structured", prompt="A film?", schema=SCHEMA,
                                    model="box/local-model")
                failed = await client.call_tool("generate_structured", {"prompt": "x", "schema": SCHEMA,
                                                                        "model": "gone/m"})
                health = await call(client, "provider_health")
                models = await call(client, "list_models")
    finally:
        handler.removeFilter(handler.filters[-1])
    assert fake.chat_requests[-1].headers["authorization"] == "Basic " + base64.b64encode(
        f"box:{secret}".encode()).decode()  # the credentials were sent, as a header
    assert failed.is_error and "Cannot reach gone at http://127.0.0.1:" in failed.content[0].text
    shown = json.dumps([result, health, models]) + failed.content[0].text + "\n".join(
        handler.format(record) for record in caplog.records)
    assert secret not in shown
