"""Every path against a real llama-server with a real small model (SmolLM2-135M-Instruct), through a real
MCP client over stdio. Each returned `data` is validated here, by the test itself, against the
caller's schema; a call that cannot get valid data must end in a clear tool error.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import anyio
import jsonschema
import pytest
from mcp import Client

from tests.real.backend import MODEL_ALIAS, LlamaServer, Prepared
from tests.real.conftest import ANTHROPIC_ID, LOCAL_ID, connect, real_config
from tests.real.schemas import SCHEMAS

pytestmark = pytest.mark.anyio

BY_NAME = {name: schema for name, schema, _ in SCHEMAS}
PERSON = BY_NAME["person"]
OUTPUT_TOKENS = 160  # ample for every bounded schema here, and a ceiling on a model that runs on


def valid(instance: Any, schema: dict[str, Any]) -> None:
    jsonschema.validate(instance, schema, cls=jsonschema.Draft202012Validator)


async def generate(client: Client, schema: dict[str, Any], prompt: str, model: str = LOCAL_ID,
                   max_tokens: int = OUTPUT_TOKENS, cache: bool = True) -> tuple[dict[str, Any] | None, str]:
    """(result, "") on success, (None, error text) on a tool error; `cache=False` skips the response cache."""
    result = await client.call_tool("generate_structured", {"prompt": prompt, "schema": schema, "model": model,
                                                            "temperature": 0, "max_tokens": max_tokens,
                                                            **({} if cache else {"cache": False})})
    if result.is_error:
        return None, " ".join(getattr(block, "text", "") for block in result.content)
    return result.structured_content, ""


async def test_twenty_schemas_on_the_openai_compatible_path(llama: LlamaServer, tmp_path: Path) -> None:
    async with connect(real_config(tmp_path, llama.url)) as client:
        with anyio.fail_after(400):
            for name, schema, prompt in SCHEMAS:
                result, error = await generate(client, schema, prompt)
                assert result is not None, f"{name}: {error}"
                valid(result["data"], schema)
                assert result["provider"] == "llamacpp" and result["model"] == LOCAL_ID
                print(f"{name}: {json.dumps(result['data'])} ({len(result['attempts'])} attempt(s))")


async def test_anthropic_messages_path_ends_valid_or_in_a_clear_error(llama: LlamaServer, tmp_path: Path) -> None:
    """llama-server's /v1/messages ignores output_config and forced tools and may answer prose: the router
    must then re-ask until the data validates, or say clearly that it could not; never pass prose on."""
    outcomes = []
    async with connect(real_config(tmp_path, llama.url)) as client:
        with anyio.fail_after(400):
            for name, schema, prompt in SCHEMAS[:5]:
                result, error = await generate(client, schema, prompt, model=ANTHROPIC_ID, max_tokens=120)
                if result is not None:
                    valid(result["data"], schema)
                    assert result["provider"] == "anthropic"
                    outcomes.append(f"{name}: valid after {len(result['attempts'])} attempt(s)")
                else:
                    assert "attempt" in error and "anthropic/" in error, error  # what each attempt got
                    outcomes.append(f"{name}: clear error: {error[:160]}")
    print("\n".join(outcomes))


async def test_extraction_at_temperature_zero(llama: LlamaServer, tmp_path: Path,
                                              record_property: Any) -> None:
    async with connect(real_config(tmp_path, llama.url)) as client:
        with anyio.fail_after(120):
            result, error = await generate(client, PERSON, SCHEMAS[0][2])
    assert result is not None, error
    valid(result["data"], PERSON)
    right = result["data"] == {"name": "Alice", "age": 30, "city": "Paris"}
    note = f"extraction: {json.dumps(result['data'])} — values {'right' if right else 'WRONG'}"
    record_property("extraction", note)
    print(note)  # reported, not asserted: a 135M model's reading is what is measured


async def test_max_tokens_too_small_is_a_clear_error_never_truncated_data(llama: LlamaServer, tmp_path: Path) -> None:
    schema = SCHEMAS[0][1]
    async with connect(real_config(tmp_path, llama.url)) as client:
        with anyio.fail_after(120):
            for model in (LOCAL_ID, ANTHROPIC_ID):
                result, error = await generate(client, schema, SCHEMAS[0][2], model=model, max_tokens=6)
                if result is not None:  # a re-ask may still fit: then it is whole and valid
                    valid(result["data"], schema)
                else:
                    assert "max_tokens" in error or "not valid JSON" in error or "JSON" in error, error
                print(f"{model}: {error[:200] if error else 'valid'}")
            # the OpenAI-compatible path sees finish_reason `length` and names the cause itself
            result, error = await generate(client, schema, SCHEMAS[0][2], max_tokens=6)
            assert result is None and "cut off at the max_tokens limit (6)" in error, error


async def test_eight_calls_in_parallel_against_two_slots(llama: LlamaServer, tmp_path: Path) -> None:
    picks = [SCHEMAS[i % len(SCHEMAS)] for i in (0, 2, 3, 6, 9, 10, 12, 16)]
    results: list[tuple[str, dict[str, Any] | None, str]] = []
    async with connect(real_config(tmp_path, llama.url)) as client:

        async def one(name: str, schema: dict[str, Any], prompt: str) -> None:
            result, error = await generate(client, schema, prompt)
            results.append((name, result, error))

        started = time.perf_counter()
        with anyio.fail_after(240):
            async with anyio.create_task_group() as tg:
                for name, schema, prompt in picks:
                    tg.start_soon(one, name, schema, prompt)
    assert len(results) == 8
    for name, result, error in results:
        assert result is not None, f"{name}: {error}"
        valid(result["data"], BY_NAME[name])
    print(f"8 parallel calls on -np 2: all valid in {time.perf_counter() - started:.1f} s")


async def test_list_models_and_provider_health_show_the_server(llama: LlamaServer, tmp_path: Path) -> None:
    async with connect(real_config(tmp_path, llama.url)) as client:
        with anyio.fail_after(60):
            models = (await client.call_tool("list_models", {"provider": "llamacpp"})).structured_content["models"]
            health = (await client.call_tool("provider_health", {})).structured_content["providers"]
    (entry,) = [m for m in models if m["id"] == LOCAL_ID]
    assert entry["available"] is True and entry["provider"] == "llamacpp"
    by_name = {h["provider"]: h for h in health}
    assert by_name["llamacpp"]["status"] == "ok"
    assert MODEL_ALIAS in by_name["llamacpp"]["detail"] and by_name["llamacpp"]["endpoint"] == f"{llama.url}/v1"
    print(f"anthropic (Messages API on llama-server): {by_name['anthropic']['status']}: "
          f"{by_name['anthropic']['detail']}")


async def test_server_killed_between_calls(prepared: Prepared, llama: LlamaServer, tmp_path: Path) -> None:
    """A second server, killed after one good call: retries, then the configured fallback (the shared
    server) answers; without a fallback, a clear error; provider_health shows it down."""
    doomed = LlamaServer(prepared, parallel=1, context=1024).start()
    doomed_id = f"doomed/{MODEL_ALIAS}"
    extra = f'\n[providers.openai_compatible.doomed]\nendpoint = "{doomed.url}/v1"\nmodels = ["{MODEL_ALIAS}"]\n'
    schema, prompt = SCHEMAS[2][1], SCHEMAS[2][2]
    try:
        with_fallback = real_config(tmp_path / "fallback", llama.url, extra, defaults=f'fallback = ["{LOCAL_ID}"]')
        alone_config = real_config(tmp_path / "alone", llama.url, extra)
        async with connect(with_fallback) as client, connect(alone_config) as alone:
            with anyio.fail_after(240):
                first, error = await generate(client, schema, prompt, model=doomed_id)
                assert first is not None and first["model"] == doomed_id, error
                doomed.kill()

                # The same temperature-0 call: the response cache would answer it, and nothing would be sent
                result, error = await generate(client, schema, prompt, model=doomed_id, cache=False)
                assert result is not None, error
                valid(result["data"], schema)
                assert result["model"] == LOCAL_ID
                tried = [(a["model"], a["error"]) for a in result["attempts"]]
                assert tried[:3] == [(doomed_id, "unavailable")] * 3 and tried[-1] == (LOCAL_ID, None)

                _, error = await generate(alone, schema, prompt, model=doomed_id)
                assert "Cannot reach doomed" in error and "3 attempts" in error, error

                health = (await client.call_tool("provider_health", {"provider": "doomed"})).structured_content
                (state,) = health["providers"]
                assert state["status"] == "down" and "Cannot reach doomed" in state["detail"]
    finally:
        doomed.stop()
