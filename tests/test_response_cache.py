"""The exact response cache (response_cache.py): a deterministic call asked again is answered from it, with
nothing sent; anything else never is. Through an MCP client, the real SDKs and the fakes."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest
from mcp import Client

from mcp_llm.config import CacheSettings
from mcp_llm.response_cache import MemoryStore, ResponseCache, cache_key
from mcp_llm.schema import DEFAULT_REPLY_LIMITS
from mcp_llm.trace import Trace
from tests.conftest import call
from tests.fleet import Fakes
from tests.images import png_bytes
from tests.priced import CLAUDE, GOOD, GPT, SCHEMA, Priced, library_price, priced

pytestmark = pytest.mark.anyio
__all__ = ["priced"]


async def generate(client: Client, model: str = CLAUDE, **arguments: Any) -> dict[str, Any]:
    arguments = {"prompt": "A French city, please.", "schema": SCHEMA, "model": model, **arguments}
    with anyio.fail_after(30):
        return await call(client, "generate_structured", **arguments)


async def stats_of(client: Client) -> dict[str, Any]:
    return json.loads((await client.read_resource("mcp-llm://stats")).contents[0].text)  # type: ignore[union-attr]


async def test_a_second_identical_temperature_0_call_is_answered_from_the_cache(priced: Priced, fakes: Fakes) -> None:
    fakes.anthropic.enqueue(GOOD, input_tokens=800, output_tokens=60)
    async with priced() as client:
        first = await generate(client, temperature=0)
        second = await generate(client, temperature=0)
        stats = await stats_of(client)
    assert fakes.completions("anthropic") == 1
    assert first["cached"] is False and first["cost_usd"] > 0
    assert second["data"] == first["data"] == GOOD
    assert second["cached"] is True and second["cost_usd"] == 0.0 and second["attempts"] == []
    assert second["model"] == CLAUDE and second["provider"] == "anthropic"
    assert second["usage"]["input_tokens"] == 0  # nothing was sent
    assert stats["cache"]["hits"] == 1 and stats["cache"]["misses"] == 1 and stats["cache"]["entries"] == 1
    assert stats["cache"]["saved_usd"] == pytest.approx(library_price(CLAUDE, "anthropic", input_tokens=800,
                                                                      output_tokens=60))
    assert stats["calls"]["calls"] == 2 and stats["calls"]["successes"] == 2
    assert stats["models"][CLAUDE]["calls"] == 1  # the hit asked no model


async def test_only_temperature_0_is_cached(priced: Priced, fakes: Fakes) -> None:
    async with priced() as client:
        for temperature in (0.7, 0.7, None, None):
            result = await generate(client, **({"temperature": temperature} if temperature is not None else {}))
            assert result["cached"] is False
    assert fakes.completions("anthropic") == 4


async def test_cache_false_sends_a_request_and_its_answer_replaces_the_stored_one(
    priced: Priced, fakes: Fakes
) -> None:
    fakes.anthropic.enqueue({"city": "Lyon", "population": 1})
    fakes.anthropic.enqueue({"city": "Lyon", "population": 2})
    async with priced() as client:
        await generate(client, temperature=0)
        fresh = await generate(client, temperature=0, cache=False)
        again = await generate(client, temperature=0)
        stats = await stats_of(client)
    assert fakes.completions("anthropic") == 2
    assert fresh["cached"] is False and fresh["data"]["population"] == 2
    assert again["cached"] is True and again["data"]["population"] == 2
    assert stats["cache"]["skipped"] == 1


async def test_an_entry_expires_after_ttl_s(priced: Priced, fakes: Fakes) -> None:
    async with priced(tables={"cache": "ttl_s = 0.5"}) as client:
        await generate(client, temperature=0)
        assert (await generate(client, temperature=0))["cached"] is True
        await anyio.sleep(0.6)
        expired = await generate(client, temperature=0)
    assert expired["cached"] is False and fakes.completions("anthropic") == 2


async def test_the_key_is_every_argument_that_fixes_the_answer(priced: Priced, fakes: Fakes) -> None:
    reordered = {"required": SCHEMA["required"], "properties": SCHEMA["properties"], "type": "object"}
    async with priced() as client:
        await generate(client, temperature=0)
        assert (await generate(client, temperature=0, schema=reordered))["cached"] is True  # key order aside
        for changed in ({"prompt": "Another city?"}, {"system": "Be brief."}, {"max_tokens": 500},
                        {"model": GPT}, {"schema": {**SCHEMA, "properties": {**SCHEMA["properties"],
                                                                             "country": {"type": "string"}}}}):
            assert (await generate(client, temperature=0, **changed))["cached"] is False, changed
    assert fakes.completions("anthropic") == 5 and fakes.completions("openai") == 1


async def test_an_image_is_keyed_by_its_bytes(priced: Priced, fakes: Fakes, tmp_path: Any) -> None:
    import base64

    small, large = (base64.b64encode(png_bytes(side, side)).decode() for side in (4, 8))
    async with priced() as client:
        async def ask(image: str) -> dict[str, Any]:
            with anyio.fail_after(30):
                return await call(client, "analyze_image", image=image, prompt="What colour?", model=CLAUDE,
                                  temperature=0)

        first, same, other = await ask(small), await ask(small), await ask(large)
    assert (first["cached"], same["cached"], other["cached"]) == (False, True, False)
    assert same["text"] == first["text"]


async def test_the_clients_own_model_is_never_cached(make_settings: Any) -> None:
    from mcp_llm.server import build_server
    from tests.test_sampling import SCHEMA as CLIENT_SCHEMA
    from tests.test_sampling import ClientModel, client_config

    model = ClientModel()
    server = build_server(make_settings(client_config()))
    with anyio.fail_after(20):
        async with Client(server, mode="legacy", sampling_callback=model) as client:
            for _ in range(2):
                result = await call(client, "generate_structured", prompt="City?", schema=CLIENT_SCHEMA,
                                    model="client", temperature=0)
                assert result["cached"] is False
    assert len(model.requests) == 2


async def test_memory_stays_within_max_entries(priced: Priced, fakes: Fakes) -> None:
    async with priced(tables={"cache": "max_entries = 2"}) as client:
        for prompt in ("a?", "b?", "c?"):
            await generate(client, temperature=0, prompt=prompt)
        stats = await stats_of(client)
        oldest = await generate(client, temperature=0, prompt="a?")
        newest = await generate(client, temperature=0, prompt="c?")
    assert stats["cache"]["entries"] == 2
    assert oldest["cached"] is False and newest["cached"] is True  # the least recently used went first


async def test_the_cache_can_be_switched_off(priced: Priced, fakes: Fakes) -> None:
    async with priced(tables={"cache": "enabled = false"}) as client:
        await generate(client, temperature=0)
        assert (await generate(client, temperature=0))["cached"] is False
        assert (await stats_of(client))["cache"]["enabled"] is False
    assert fakes.completions("anthropic") == 2


async def test_a_hit_is_validated_again_and_one_that_fails_is_dropped() -> None:
    """A stored answer is served only if it validates against the caller's schema now; one that does not (a
    store another version of the server wrote, say) is a miss, and is dropped."""
    cache = ResponseCache(CacheSettings())
    key = cache_key(["m"], "p", None, SCHEMA, [], None)
    await cache.put(key, '{"city": 1}', {"city": 1}, Trace(model="m", provider="p", attempts=[],
                                                          usage={}, latency_ms=1))  # type: ignore[arg-type]
    assert await cache.get(key, SCHEMA, DEFAULT_REPLY_LIMITS) is None
    assert cache.store.usage()["entries"] == 0 and cache.misses == 1


async def test_the_memory_store_keeps_within_its_bytes() -> None:
    now = [0.0]
    store = MemoryStore(max_entries=100, max_bytes=1000, clock=lambda: now[0])
    for i in range(20):
        await store.set(f"k{i}", b"x" * 90, ttl_s=10)
    assert store.usage()["bytes"] <= 1000 and await store.get("k19") == b"x" * 90 and await store.get("k0") is None
    await store.set("big", b"x" * 101, ttl_s=10)  # over a tenth of max_bytes: not kept
    assert await store.get("big") is None
    now[0] = 11.0
    assert await store.get("k19") is None  # expired
