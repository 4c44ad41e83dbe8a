"""What each answer cost: every attempt priced from the usage its provider reported (cost.py), summed in
the trace, per provider and per model in the stats, through the real SDKs against the fakes, end to end
through an MCP client."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest

from mcp_llm.config import load_settings
from mcp_llm.cost import price_data_version
from tests.conftest import call, call_error
from tests.fleet import Fakes
from tests.priced import (
    BAD,
    CLAUDE,
    GEMINI,
    GOOD,
    GPT,
    LMSTUDIO,
    LOCAL,
    SCHEMA,
    Priced,
    config,
    library_price,
    per_mtok,
    priced,
)

pytestmark = pytest.mark.anyio
__all__ = ["priced"]  # the fixture, used by name


async def generate(client: Any, model: str, **arguments: Any) -> dict[str, Any]:
    with anyio.fail_after(30):
        return await call(client, "generate_structured", prompt="A French city, please.", schema=SCHEMA, model=model,
                          **arguments)


async def test_anthropic_cost_is_the_librarys_figure_for_cache_reads_writes_and_thinking(
    priced: Priced, fakes: Fakes
) -> None:
    fakes.anthropic.enqueue(GOOD, input_tokens=120, cache_read_input_tokens=3000, cache_creation_input_tokens=500,
                            output_tokens=400, thinking_tokens=250)
    async with priced() as client:
        result = await generate(client, CLAUDE)
    expected = library_price(CLAUDE, "anthropic", input_tokens=3620, cache_read_tokens=3000, cache_write_tokens=500,
                             output_tokens=400, output_reasoning_tokens=250)
    assert result["attempts"][0]["cost_usd"] == pytest.approx(expected, rel=0.01)
    assert result["cost_usd"] == pytest.approx(expected, rel=0.01)
    # $1/M in, $0.10/M cache read, $1.25/M cache write, $5/M out: the cache is priced apart, not as input
    assert expected == pytest.approx(per_mtok(120, 1) + per_mtok(3000, 0.1) + per_mtok(500, 1.25) + per_mtok(400, 5))
    assert result["usage"] == {"input_tokens": 3620, "output_tokens": 400, "cached_input_tokens": 3000,
                               "cache_write_tokens": 500, "thinking_tokens": 250}


async def test_gemini_and_openai_costs_are_the_librarys_figures(priced: Priced, fakes: Fakes) -> None:
    fakes.gemini.enqueue(GOOD, prompt_tokens=2000, cached_tokens=1024, completion_tokens=60, thoughts_tokens=300)
    fakes.openai.enqueue(GOOD, prompt_tokens=1800, cached_tokens=1280, completion_tokens=50, reasoning_tokens=0)
    async with priced() as client:
        gemini = await generate(client, GEMINI)
        openai = await generate(client, GPT)
    assert gemini["cost_usd"] == pytest.approx(library_price(
        GEMINI, "google", input_tokens=2000, cache_read_tokens=1024, output_tokens=360, output_reasoning_tokens=300),
        rel=0.01)
    assert gemini["usage"]["output_tokens"] == 360  # thinking is billed as output
    assert openai["cost_usd"] == pytest.approx(library_price(
        "gpt-4.1-mini", "openai", input_tokens=1800, cache_read_tokens=1280, output_tokens=50), rel=0.01)


async def test_a_reask_and_a_fallback_are_each_paid_and_summed(priced: Priced, fakes: Fakes) -> None:
    fakes.anthropic.enqueue(BAD, input_tokens=1000, output_tokens=200)  # invalid: re-asked
    fakes.anthropic.enqueue(BAD, input_tokens=1300, output_tokens=210)  # invalid again: the next model
    fakes.openai.enqueue(GOOD, prompt_tokens=900, completion_tokens=40)
    async with priced(model=CLAUDE, fallback=[GPT], max_repairs=1) as client:
        result = await generate(client, CLAUDE)
    costs = [a["cost_usd"] for a in result["attempts"]]
    assert [a["outcome"] for a in result["attempts"]] == ["invalid_output", "invalid_output", "ok"]
    assert costs == pytest.approx([library_price(CLAUDE, "anthropic", input_tokens=1000, output_tokens=200),
                                   library_price(CLAUDE, "anthropic", input_tokens=1300, output_tokens=210),
                                   library_price("gpt-4.1-mini", "openai", input_tokens=900, output_tokens=40)])
    assert result["cost_usd"] == pytest.approx(sum(costs))
    assert result["model"] == GPT


async def test_an_unknown_price_is_null_never_a_guess(priced: Priced, fakes: Fakes) -> None:
    fakes.ollama.enqueue(GOOD, prompt_tokens=100, completion_tokens=10)
    fakes.lmstudio.enqueue(GOOD, prompt_tokens=100, completion_tokens=10)
    fakes.openai.enqueue(GOOD, prompt_tokens=100, completion_tokens=10)
    async with priced() as client:
        local = await generate(client, LOCAL)  # Ollama: no price anywhere
        server = await generate(client, LMSTUDIO)  # a server on loopback: the library knows no such URL
        unknown = await generate(client, "openai/local-model")  # a model the library does not list
    for result in (local, server, unknown):
        assert result["cost_usd"] is None and result["attempts"][0]["cost_usd"] is None, result


async def test_a_local_model_is_free_only_where_the_config_says_so(priced: Priced, fakes: Fakes) -> None:
    fakes.ollama.enqueue(GOOD, prompt_tokens=100, completion_tokens=10)
    fakes.lmstudio.enqueue(GOOD, prompt_tokens=1000, completion_tokens=500)
    fakes.anthropic.enqueue(GOOD, input_tokens=2000, output_tokens=100)
    tables = {"providers.ollama": "cost_per_mtok = 0",
              "providers.openai_compatible.lmstudio": "cost_per_mtok = {input = 0.2, output = 0.8}",
              "providers.anthropic": "cost_per_mtok = 0.5"}  # a rate of one's own replaces the library's
    async with priced(tables=tables) as client:
        local = await generate(client, LOCAL)
        server = await generate(client, LMSTUDIO)
        claude = await generate(client, CLAUDE)
    assert local["cost_usd"] == 0.0
    assert server["cost_usd"] == pytest.approx(per_mtok(1000, 0.2) + per_mtok(500, 0.8))
    assert claude["cost_usd"] == pytest.approx(per_mtok(2100, 0.5))


async def test_a_refused_request_costs_nothing_and_a_timeout_is_unknown(priced: Priced, fakes: Fakes) -> None:
    """A provider's error status bills nothing; a request cut off while the model may have been answering
    cannot be known, so the call's total is unknown too."""
    fakes.anthropic.enqueue(status=500, message="simulated 500")
    fakes.anthropic.enqueue(GOOD, input_tokens=100, output_tokens=10)
    fakes.openai.enqueue(GOOD, hang=True)
    fakes.openai.enqueue(GOOD, prompt_tokens=100, completion_tokens=10)
    async with priced(max_retries=1, timeout_s=20, tables={"defaults": "first_response_timeout_s = 1"}) as client:
        retried = await generate(client, CLAUDE)
        timed_out = await generate(client, GPT)
    assert [a["error"] for a in retried["attempts"]] == ["server_error", None]
    assert retried["attempts"][0]["cost_usd"] == 0.0
    assert retried["cost_usd"] == pytest.approx(library_price(CLAUDE, "anthropic", input_tokens=100,
                                                              output_tokens=10))
    assert [a["error"] for a in timed_out["attempts"]] == ["timeout", None]
    assert timed_out["attempts"][0]["cost_usd"] is None and timed_out["cost_usd"] is None
    assert timed_out["attempts"][1]["cost_usd"] == pytest.approx(library_price(
        "gpt-4.1-mini", "openai", input_tokens=100, output_tokens=10))


async def test_an_answer_cut_off_at_max_tokens_is_paid_for_its_reported_usage(priced: Priced, fakes: Fakes) -> None:
    """OpenAI bills a cut-off answer; the error it is on this side keeps that usage, so the cost is known."""
    fakes.openai.enqueue(GOOD, prompt_tokens=700, completion_tokens=3, finish_reason="length")
    async with priced(max_retries=0, model=GPT) as client:
        text = await call_error(client, "generate_structured", prompt="A French city, please.", schema=SCHEMA,
                                model=GPT, max_tokens=3)
        resource = await client.read_resource("mcp-llm://stats")
    assert "cut off at the max_tokens limit" in text
    stats = json.loads(resource.contents[0].text)  # type: ignore[union-attr]
    assert stats["models"][GPT]["cost_usd"] == pytest.approx(library_price("gpt-4.1-mini", "openai",
                                                                           input_tokens=700, output_tokens=3))
    assert stats["models"][GPT]["unpriced_attempts"] == 0


async def test_stats_show_cost_per_provider_and_model(priced: Priced, fakes: Fakes) -> None:
    fakes.anthropic.enqueue(BAD, input_tokens=1000, output_tokens=100)
    fakes.anthropic.enqueue(GOOD, input_tokens=1100, output_tokens=120)
    fakes.openai.enqueue(GOOD, prompt_tokens=500, completion_tokens=50)
    fakes.ollama.enqueue(GOOD, prompt_tokens=50, completion_tokens=5)
    async with priced() as client:
        claude = await generate(client, CLAUDE)
        gpt = await generate(client, GPT)
        local = await generate(client, LOCAL)
        resource = await client.read_resource("mcp-llm://stats")
        health = await call(client, "provider_health", provider="anthropic")
    stats = json.loads(resource.contents[0].text)  # type: ignore[union-attr]
    assert stats["models"][CLAUDE]["cost_usd"] == pytest.approx(claude["cost_usd"])
    assert stats["providers"]["anthropic"]["cost_usd"] == pytest.approx(claude["cost_usd"])
    assert stats["models"][GPT]["cost_usd"] == pytest.approx(gpt["cost_usd"])
    assert stats["calls"]["cost_usd"] == pytest.approx(claude["cost_usd"] + gpt["cost_usd"])
    assert local["cost_usd"] is None
    assert stats["models"][LOCAL]["cost_usd"] == 0.0 and stats["models"][LOCAL]["unpriced_attempts"] == 1
    assert health["providers"][0]["stats"]["cost_usd"] == pytest.approx(claude["cost_usd"])


def test_the_price_library_is_not_imported_until_a_price_is_needed(tmp_path: Any) -> None:
    """Start-up never pays for it (about 0.3 s): building the server, and a free model's cost, leave it out."""
    import subprocess
    import sys

    path = tmp_path / "config.toml"
    path.write_text('[providers.ollama]\ncost_per_mtok = 0\n[budget]\ndaily_usd = 1\n', encoding="utf-8")
    probe = ("import sys, anyio\n"
             "from mcp_llm.config import load_settings\nfrom mcp_llm.server import build_server\n"
             "from mcp_llm.cost import Prices, Tokens\n"
             f"settings = load_settings({str(path)!r}, env={{}})\nbuild_server(settings)\n"
             "print(anyio.run(Prices(settings).cost, 'ollama', 'llama3.2', Tokens(10, 10)))\n"
             "print('genai_prices' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert [float(done.stdout.split()[0]), done.stdout.split()[1]] == [0.0, "False"], done.stderr


def test_the_library_is_imported_off_the_event_loop(tmp_path: Any) -> None:
    """The first price imports the library (0.3 s and more) in a worker thread, not on the event loop's."""
    import subprocess
    import sys

    probe = """
import sys, threading, anyio
from mcp_llm.config import load_settings
from mcp_llm.cost import Prices, Tokens

seen = []

class Watch:
    def find_spec(self, name, path=None, target=None):
        if name == "genai_prices":
            seen.append(threading.current_thread() is threading.main_thread())
        return None

sys.meta_path.insert(0, Watch())
print(anyio.run(Prices(load_settings(None, env={})).cost, "anthropic", "claude-haiku-4-5", Tokens(1000, 100)))
print(seen)
"""
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    cost, seen = done.stdout.split("\n")[:2]
    assert float(cost) == pytest.approx(per_mtok(1000, 1) + per_mtok(100, 5)), done.stderr
    assert seen == "[False]", done.stderr  # imported once, and not on the main thread (the event loop's)


def test_the_config_command_reports_the_price_datas_version(make_settings: Any, tmp_path: Any) -> None:
    import subprocess
    import sys

    from tests.stdio_harness import subprocess_env

    path = tmp_path / "empty.toml"
    path.write_text("", encoding="utf-8")
    version = price_data_version()
    assert version
    text = subprocess.run([sys.executable, "-m", "mcp_llm", "--config", str(path), "config"], capture_output=True,
                          text=True, timeout=60, env=subprocess_env())
    assert f"# prices: genai-prices {version} " in text.stdout, text.stdout
    as_json = subprocess.run([sys.executable, "-m", "mcp_llm", "--config", str(path), "config", "--json"],
                             capture_output=True, text=True, timeout=60, env=subprocess_env())
    assert json.loads(as_json.stdout)["prices"] == {"library": "genai-prices", "version": version}


def test_a_bad_price_in_the_config_says_what_a_price_is(tmp_path: Any) -> None:
    from mcp_llm.errors import ConfigError

    for bad in ('"free"', "-1", "{input = 1}", "nan"):
        path = tmp_path / "config.toml"
        path.write_text(f"[providers.ollama]\ncost_per_mtok = {bad}\n", encoding="utf-8")
        with pytest.raises(ConfigError) as caught:
            load_settings(path, env={})
        assert "providers.ollama.cost_per_mtok" in caught.value.message
        assert "per million tokens" in caught.value.message, caught.value.message


def test_config_helper_is_valid_toml(fakes: Fakes) -> None:
    import tomllib

    tomllib.loads(config(fakes, tables={"budget": "daily_usd = 1", "providers.ollama": "cost_per_mtok = 0"}))


async def test_mcp_llm_stats_shows_cost_per_model_and_provider_and_the_cache(tmp_path: Any) -> None:
    """`mcp-llm stats` against a running HTTP server: the COST columns, the cache's hits and savings."""
    import subprocess
    import sys

    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    from tests.conftest import free_port
    from tests.fakes.openai_server import FakeOpenAI
    from tests.stdio_harness import subprocess_env
    from tests.test_http import wait_listening

    with FakeOpenAI(api_key=None, models=["small"]) as fake:
        fake.enqueue(GOOD, prompt_tokens=2000, completion_tokens=500)
        port = free_port()
        path = tmp_path / "config.toml"
        path.write_text(f'[server]\nport = {port}\n[providers.openai_compatible.vps]\nendpoint = "{fake.base_url}"\n'
                        'models = ["small"]\ncost_per_mtok = {input = 2, output = 8}\n', encoding="utf-8")
        server = subprocess.Popen([sys.executable, "-m", "mcp_llm", "--config", str(path), "serve", "--transport",
                                   "http"], env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            await anyio.to_thread.run_sync(wait_listening, port, server)
            with anyio.fail_after(30):
                async with (httpx2.AsyncClient(timeout=20) as http,
                            Client(streamable_http_client(f"http://127.0.0.1:{port}/mcp", http_client=http)) as client):
                    for _ in range(2):
                        await generate(client, "vps/small", temperature=0)
            shown = await anyio.to_thread.run_sync(lambda: subprocess.run(
                [sys.executable, "-m", "mcp_llm", "--config", str(path), "stats"], capture_output=True, text=True,
                timeout=60, env=subprocess_env()))
        finally:
            server.terminate()
            server.communicate(timeout=20)
    cost = per_mtok(2000, 2) + per_mtok(500, 8)  # $0.008
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert f"cost ${cost:.6f}".rstrip("0") in lines[0], shown.stdout
    assert lines[1] == "cache: 1 hits, 1 misses, $0.008 saved, 1 answers kept", shown.stdout
    model_row = next(line for line in lines if line.startswith("vps/small"))
    provider_row = next(line for line in lines if line.startswith("vps "))
    assert "$0.008" in model_row and "$0.008" in provider_row, shown.stdout
