"""The four tools end to end through the MCP SDK's in-process Client, against the fake Ollama."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import anyio
import jsonschema
import pytest
from mcp import Client

from mcp_llm.config import Settings
from mcp_llm.presets import PRESETS
from mcp_llm.server import build_server
from tests.conftest import TEXT_MODEL, VISION_MODEL, call, call_error, ollama_config
from tests.fakes.ollama_server import FakeOllama
from tests.images import png_bytes

pytestmark = pytest.mark.anyio

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
        "address": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "zip": {"type": ["string", "null"]}},
            "required": ["city", "zip"],
        },
        "kind": {"enum": ["human", "robot"]},
    },
    "required": ["name", "age", "address", "kind"],
    "additionalProperties": False,
}
TRACE_FIELDS = {"model", "provider", "attempts", "usage", "latency_ms", "schema_rewrites"}


async def test_tools_are_listed_with_schemas_and_annotations(client: Client) -> None:
    tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert set(tools) == {"generate_structured", "analyze_image", "list_models", "provider_health"}
    for tool in tools.values():
        assert tool.description and tool.title
        assert tool.output_schema is not None
        assert tool.annotations is not None and tool.annotations.read_only_hint is True
    assert set(tools["generate_structured"].input_schema["required"]) == {"prompt", "schema"}
    assert set(tools["analyze_image"].input_schema["required"]) == {"image", "prompt"}
    assert TRACE_FIELDS | {"data"} <= set(tools["generate_structured"].output_schema["properties"])


async def test_generate_structured_returns_valid_data_and_trace(client: Client, fake_ollama: FakeOllama) -> None:
    reply = {"name": "Ada", "age": 36, "tags": ["math"], "address": {"city": "London", "zip": None}, "kind": "human"}
    fake_ollama.enqueue(reply, prompt_tokens=55, completion_tokens=21)

    result = await call(client, "generate_structured", prompt="Describe Ada Lovelace", schema=PERSON)

    jsonschema.validate(result["data"], PERSON)
    assert result["data"] == reply
    assert TRACE_FIELDS <= set(result)
    assert result["model"] == TEXT_MODEL and result["provider"] == "ollama"
    assert result["usage"] == {"input_tokens": 55, "output_tokens": 21, "cached_input_tokens": 0,
                               "cache_write_tokens": 0, "thinking_tokens": 0}
    assert result["cost_usd"] is None and result["attempts"][0]["cost_usd"] is None  # Ollama has no price
    assert result["cached"] is False
    assert [a["outcome"] for a in result["attempts"]] == ["ok"]
    assert result["latency_ms"] >= result["attempts"][0]["latency_ms"] > 0
    assert result["schema_rewrites"] == []
    sent = fake_ollama.chat_requests[-1].json
    assert sent["model"] == "llama3.2:3b"
    assert sent["format"] == PERSON
    assert sent["messages"][-1] == {"role": "user", "content": "Describe Ada Lovelace"}


async def test_schema_given_as_json_text_and_options_pass_through(client: Client, fake_ollama: FakeOllama) -> None:
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    result = await call(
        client,
        "generate_structured",
        prompt="Is it?",
        schema=json.dumps(schema),
        system="Be terse.",
        temperature=0.2,
        max_tokens=64,
    )
    jsonschema.validate(result["data"], schema)
    sent = fake_ollama.chat_requests[-1].json
    assert sent["options"] == {"temperature": 0.2, "num_predict": 64}
    assert sent["messages"][0]["role"] == "system"
    assert sent["messages"][0]["content"].startswith("Be terse.")


@pytest.mark.parametrize("preset", sorted(PRESETS))
async def test_presets_by_name(client: Client, fake_ollama: FakeOllama, preset: str) -> None:
    result = await call(client, "generate_structured", prompt="Score this", schema=preset)
    jsonschema.validate(result["data"], PRESETS[preset])
    assert fake_ollama.chat_requests[-1].json["format"] == PRESETS[preset]


async def test_invalid_json_is_reasked_with_the_error(client: Client, fake_ollama: FakeOllama) -> None:
    fake_ollama.enqueue("Sure! Here is the person you asked for: name Ada, age 36.")
    fake_ollama.enqueue({"name": "Ada", "age": 36, "address": {"city": "London", "zip": "N1"}, "kind": "human"})

    result = await call(client, "generate_structured", prompt="Describe Ada", schema=PERSON)

    jsonschema.validate(result["data"], PERSON)
    assert [a["outcome"] for a in result["attempts"]] == ["invalid_output", "ok"]
    assert result["attempts"][0]["error"] == "not_json"  # prose: the model ignored the schema
    second = fake_ollama.chat_requests[-1].json["messages"]
    assert second[-2] == {"role": "assistant", "content": "Sure! Here is the person you asked for: name Ada, age 36."}
    assert "not JSON" in second[-1]["content"] or "no JSON value" in second[-1]["content"]


async def test_schema_violating_json_is_reasked_with_the_validation_errors(
    client: Client, fake_ollama: FakeOllama
) -> None:
    fake_ollama.enqueue({"name": "Ada", "age": "thirty-six", "address": {"city": "London", "zip": None}, "kind": "cat"})
    fake_ollama.enqueue(
        "```json\n" + json.dumps({"name": "Ada", "age": 36, "address": {"city": "L", "zip": None}, "kind": "human"})
        + "\n```"
    )

    result = await call(client, "generate_structured", prompt="Describe Ada", schema=PERSON)

    jsonschema.validate(result["data"], PERSON)
    assert result["data"]["age"] == 36
    repair = fake_ollama.chat_requests[-1].json["messages"][-1]["content"]
    assert "at $.age" in repair and "is not of type 'integer'" in repair
    assert "at $.kind" in repair


async def test_output_still_invalid_after_repairs_is_a_clear_error(client: Client, fake_ollama: FakeOllama) -> None:
    for _ in range(3):  # the first answer and max_repairs = 2 re-asks
        fake_ollama.enqueue({"name": 7})
    text = await call_error(client, "generate_structured", prompt="Describe Ada", schema=PERSON)
    assert "does not match the schema" in text
    assert "'age' is a required property" in text
    assert "stronger model" in text
    assert len(fake_ollama.chat_requests) == 3
    # the server still answers
    result = await call(client, "generate_structured", prompt="Again", schema={"type": "object"})
    assert result["data"] == {}


async def test_analyze_image_from_path_returns_text(client: Client, fake_ollama: FakeOllama, image_root: Path) -> None:
    image = image_root / "cat.png"
    image.write_bytes(png_bytes(8, 6))
    fake_ollama.enqueue("A small grey square.")

    result = await call(client, "analyze_image", image=str(image), prompt="What is this?")

    assert result["text"] == "A small grey square."
    assert result["data"] is None
    assert result["model"] == VISION_MODEL
    sent = fake_ollama.chat_requests[-1].json
    assert sent["model"] == "llava:7b"
    assert "format" not in sent or sent["format"] is None
    assert base64.b64decode(sent["messages"][-1]["images"][0]) == image.read_bytes()


@pytest.mark.parametrize("form", ["data_uri", "base64"])
async def test_analyze_image_inline_with_schema(client: Client, fake_ollama: FakeOllama, form: str) -> None:
    raw = png_bytes(4, 4)
    encoded = base64.b64encode(raw).decode()
    image = f"data:image/png;base64,{encoded}" if form == "data_uri" else encoded

    result = await call(client, "analyze_image", image=image, prompt="Score it", schema="visual_prompt_score")

    jsonschema.validate(result["data"], PRESETS["visual_prompt_score"])
    assert result["text"] is None
    assert base64.b64decode(fake_ollama.chat_requests[-1].json["messages"][-1]["images"][0]) == raw


async def test_list_models_merges_config_and_discovery(
    fake_ollama: FakeOllama, image_root: Path, make_settings
) -> None:
    extra = '\n[[providers.ollama.models]]\nid = "qwen2.5:7b"\nlabel = "Qwen"\n'
    config = ollama_config(fake_ollama, image_root).replace("[images]", extra + "\n[images]")
    async with Client(build_server(make_settings(config))) as client:
        models = {m["id"]: m for m in (await call(client, "list_models"))["models"]}

    assert models["ollama/llama3.2:3b"] | {} == {
        "id": "ollama/llama3.2:3b", "provider": "ollama", "label": "Llama 3.2 3B", "vision": False,
        "structured": True, "enabled": True, "available": True, "source": "config",
        "hosts": [fake_ollama.url],
    }
    assert models["ollama/llava:7b"]["vision"] is True and models["ollama/llava:7b"]["available"] is True
    assert models["ollama/qwen2.5:7b"]["available"] is False  # configured, but the server lacks it
    assert models["ollama/qwen2.5:7b"]["source"] == "config"


async def test_list_models_shows_discovered_models_with_vision_from_show(
    fake_ollama: FakeOllama, image_root: Path, make_settings
) -> None:
    config = f'[providers.ollama]\nendpoint = "{fake_ollama.url}"\n[images]\nroots = ["{image_root}"]\n'
    async with Client(build_server(make_settings(config))) as client:
        models = (await call(client, "list_models", provider="ollama"))["models"]
    assert {(m["id"], m["vision"], m["source"], m["available"]) for m in models} == {
        ("ollama/llama3.2:3b", False, "discovered", True),
        ("ollama/llava:7b", True, "discovered", True),
    }


async def test_provider_health_ok_then_down(client: Client, fake_ollama: FakeOllama) -> None:
    report = await call(client, "provider_health", provider="ollama")
    (ollama,) = report["providers"]
    assert ollama["status"] == "ok"
    assert ollama["version"] == "0.12.3"
    assert ollama["endpoint"] == fake_ollama.url
    assert ollama["has_api_key"] is False
    assert ollama["latency_ms"] >= 0

    everyone = {p["provider"]: p for p in (await call(client, "provider_health"))["providers"]}
    assert set(everyone) == {"ollama", "gemini", "anthropic", "openai", "client"}
    assert everyone["gemini"]["status"] == "unconfigured"


async def test_provider_health_down_with_clear_detail(fake_ollama: FakeOllama, image_root: Path, make_settings) -> None:
    settings = make_settings(ollama_config(fake_ollama, image_root))
    fake_ollama.stop()
    async with Client(build_server(settings)) as client:
        (ollama,) = (await call(client, "provider_health", provider="ollama"))["providers"]
        assert ollama["status"] == "down"
        assert "Cannot reach Ollama" in ollama["detail"] and "ollama serve" in ollama["detail"]
        text = await call_error(client, "generate_structured", prompt="hi", schema={"type": "object"})
        assert "Cannot reach Ollama" in text and "ollama serve" in text
        models = (await call(client, "list_models"))["models"]
        # unreachable: whether it has them is unknown, not "missing"; this client cannot sample
        assert {m["id"]: m["available"] for m in models} == {"ollama/llama3.2:3b": None, "ollama/llava:7b": None,
                                                             "client": False}


BAD_INPUTS = [
    pytest.param(
        "generate_structured", {"prompt": "hi", "schema": {"type": "objekt"}}, "not a valid JSON Schema", id="schema"
    ),
    pytest.param(
        "generate_structured", {"prompt": "hi", "schema": '{"type": "object",'}, "not valid JSON", id="schema-text"
    ),
    pytest.param("generate_structured", {"prompt": "hi", "schema": "no_such_preset"}, "Unknown schema preset",
                 id="preset"),
    pytest.param(
        "generate_structured",
        {"prompt": "hi", "schema": {"$ref": "#/$defs/Missing"}},
        "points nowhere",
        id="dangling-ref",
    ),
    pytest.param(
        "generate_structured",
        {"prompt": "hi", "schema": {"type": "object"}, "model": "llama3.2:3b"},
        "Did you mean 'ollama/llama3.2:3b'",
        id="unknown-model",
    ),
    pytest.param(
        "generate_structured",
        {"prompt": "hi", "schema": {"type": "object"}, "model": "ollama/mistral:7b"},
        "ollama pull mistral:7b",
        id="model-not-pulled",
    ),
    pytest.param(
        "generate_structured",
        {"prompt": "hi", "schema": {"type": "object"}, "model": "claude-haiku-4-5"},
        "Set ANTHROPIC_API_KEY",
        id="provider-without-key",
    ),
    pytest.param(
        "generate_structured",
        {"prompt": "hi", "schema": {"type": "object"}, "model": "openai/gpt-4o"},
        "OpenAI needs an API key, and none is set.",
        id="provider-not-ready",
    ),
    pytest.param("analyze_image", {"prompt": "hi", "image": "{root}/missing.png"}, "No file at", id="missing-file"),
    pytest.param("analyze_image", {"prompt": "hi", "image": "{root}/notes.txt"}, "not an image", id="non-image"),
    pytest.param("analyze_image", {"prompt": "hi", "image": "/etc/hostname"}, "outside the allowed roots",
                 id="outside-roots"),
    pytest.param("analyze_image", {"prompt": "hi", "image": "https://example.com/a.png"}, "URLs are disabled",
                 id="url"),
    pytest.param("list_models", {"provider": "mistral"}, "Unknown provider", id="unknown-provider"),
]


@pytest.mark.parametrize(("tool", "arguments", "expected"), BAD_INPUTS)
async def test_bad_input_is_a_clear_tool_error_and_the_server_keeps_serving(
    client: Client, fake_ollama: FakeOllama, image_root: Path, tool: str, arguments: dict, expected: str
) -> None:
    (image_root / "notes.txt").write_text("not an image, just some notes\n")
    arguments = {k: v.replace("{root}", str(image_root)) if isinstance(v, str) else v for k, v in arguments.items()}

    text = await call_error(client, tool, **arguments)

    assert expected in text
    result = await call(client, "generate_structured", prompt="still there?", schema={"type": "object"})
    assert result["data"] == {}


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_preset_names_complete_in_the_resource_template(settings: Settings, mode: str) -> None:
    from mcp_types import PromptReference, ResourceTemplateReference

    with anyio.fail_after(30):
        async with Client(build_server(settings), mode=mode) as session:  # type: ignore[arg-type]
            template = ResourceTemplateReference(type="ref/resource", uri="mcp-llm://presets/{name}")
            done = await session.complete(template, {"name": "name", "value": "vis"})
            assert done.completion.values == ["visual_prompt_score"]
            everything = await session.complete(template, {"name": "name", "value": ""})
            assert everything.completion.values == list(PRESETS)
            other = await session.complete(PromptReference(type="ref/prompt", name="nope"), {"name": "x", "value": ""})
            assert other.completion.values == []


# --- caller text echoed in errors is clipped (issue 18) ---------------------------------------------

HUGE = 1_000_000


@pytest.mark.parametrize("model", [
    pytest.param("a" * HUGE, id="no-prefix"),
    pytest.param("ollama/" + "a" * HUGE, id="ollama-prefix"),
    pytest.param("llama3.2:3" + "b" * 100_000, id="near-a-known-id"),
    pytest.param("x/" * (HUGE // 2), id="slashes"),
])
async def test_a_huge_model_id_gets_a_short_error_fast(client: Client, fake_ollama: FakeOllama, model: str) -> None:
    """Before the fix the id came back whole (1 MB errors), and "did you mean" ran difflib on it."""
    with anyio.fail_after(30):
        started = time.perf_counter()
        text = await call_error(client, "generate_structured", prompt="hi", schema={"type": "object"}, model=model)
        elapsed = time.perf_counter() - started
    assert len(text) < 600, len(text)
    assert f"({len(model):,} characters)" in text and "is too long to be one (at most 256 characters)" in text
    assert repr(model[:20])[:-1] in text  # it begins as the id did
    assert elapsed < 2, elapsed
    assert fake_ollama.chat_requests == []


async def test_a_long_unknown_id_under_the_limit_is_clipped_and_still_gets_suggestions(client: Client) -> None:
    model = "local/llama3.2:3b" + "-x" * 60  # 137 characters: a possible id, with no such endpoint
    with anyio.fail_after(30):
        text = await call_error(client, "generate_structured", prompt="hi", schema={"type": "object"}, model=model)
    assert "Unknown model id 'local/llama3.2:3b-x-x" in text and "(137 characters)" in text and model not in text
    model = "lama3.2:3b"
    text = await call_error(client, "generate_structured", prompt="hi", schema={"type": "object"}, model=model)
    assert "Unknown model id 'lama3.2:3b'." in text and "Did you mean 'ollama/llama3.2:3b'" in text


@pytest.mark.parametrize("tool", ["list_models", "provider_health"])
async def test_a_huge_provider_name_gets_a_short_error(client: Client, tool: str) -> None:
    with anyio.fail_after(30):
        text = await call_error(client, tool, provider="p" * HUGE)
    assert len(text) < 600 and "Unknown provider 'ppp" in text and "(1,000,000 characters)" in text


async def test_a_huge_preset_name_gets_a_short_error(client: Client) -> None:
    from mcp import MCPError

    with anyio.fail_after(30), pytest.raises(MCPError) as caught:
        await client.read_resource("mcp-llm://presets/" + "q" * 10_000)
    assert "No preset 'qqq" in caught.value.error.message and "(10,000 characters)" in caught.value.error.message
    assert len(caught.value.error.message) < 400


# --- what the assistant's model reads: every parameter described, the instructions true (issue 18) --


async def test_every_tool_parameter_has_its_own_description(client: Client) -> None:
    """Before the fix no parameter had one: system, temperature and max_tokens were never explained,
    the provider names never listed, and analyze_image never said what happens with no vision model."""
    tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    for tool in tools.values():
        for name, prop in tool.input_schema["properties"].items():
            assert len(prop.get("description", "")) > 20, f"{tool.name}.{name} has no description"
    generate = tools["generate_structured"].input_schema["properties"]
    assert "system message" in generate["system"]["description"]
    assert "0 (most deterministic" in generate["temperature"]["description"]
    assert (generate["temperature"]["minimum"], generate["temperature"]["maximum"]) == (0, 2)
    assert (generate["max_tokens"]["minimum"], generate["max_tokens"]["maximum"]) == (1, 1_000_000)
    assert generate["timeout_s"]["exclusiveMinimum"] == 0
    assert {"type": "boolean"} in generate["schema"]["anyOf"]
    for tool in ("list_models", "provider_health"):
        described = tools[tool].input_schema["properties"]["provider"]["description"]
        assert "ollama, gemini, anthropic, openai, client" in described
        assert "Providers of this server: ollama, gemini, anthropic, openai, client." in tools[tool].description
    assert "refused before the image is sent" in tools["analyze_image"].description
    assert "defaults.vision_model" in tools["analyze_image"].description


async def test_the_provider_names_of_this_server_are_listed(fake_ollama: FakeOllama, image_root: Path,
                                                             make_settings) -> None:
    extra = '\n[providers.openai_compatible.lmstudio]\nendpoint = "http://127.0.0.1:9/v1"\nmodels = ["m"]\n'
    settings = make_settings(ollama_config(fake_ollama, image_root).replace("[images]", extra + "\n[images]"))
    async with Client(build_server(settings)) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert "Providers of this server: ollama, gemini, anthropic, openai, lmstudio, client." \
        in tools["list_models"].description


async def test_the_instructions_promise_only_what_is_configured(fake_ollama: FakeOllama, image_root: Path,
                                                                make_settings) -> None:
    """They said 'local Ollama models first, cloud models as fallback', true only if configured so."""
    plain = make_settings(ollama_config(fake_ollama, image_root))
    with_fallback = make_settings(ollama_config(fake_ollama, image_root).replace(
        "[defaults]\n", '[defaults]\nfallback = ["claude-haiku-4-5"]\n', 1))
    texts = []
    for settings in (plain, with_fallback):
        async with Client(build_server(settings), mode="legacy") as client:
            texts.append(client.instructions or "")
    assert "cloud models as fallback" not in texts[0]
    assert "No fallback models are configured" in texts[0]
    assert "else your own model through sampling if you support it, else the call fails" in texts[0]
    assert "only when their key is configured and they are named" in texts[0]
    assert "the configured fallbacks are tried (claude-haiku-4-5)" in texts[1]


@pytest.mark.parametrize("tool", ["generate_structured", "analyze_image"])
async def test_the_boolean_schema_true_is_accepted_and_false_refused(client: Client, fake_ollama: FakeOllama,
                                                                     tool: str) -> None:
    """`schema: true` was refused by the parameter's type (dict | str) before our code saw it."""
    image = {"image": base64.b64encode(png_bytes(4, 4)).decode()} if tool == "analyze_image" else {}
    fake_ollama.enqueue({"anything": ["goes", 1]})
    result = await call(client, tool, prompt="Anything.", schema=True, **image)
    assert result["data"] == {"anything": ["goes", 1]}
    text = await call_error(client, tool, prompt="Anything.", schema=False, **image)
    assert "The schema is `false`, which no value satisfies" in text
