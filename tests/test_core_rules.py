"""The core rules that mutation testing (bench/mutation.py) found untested, each through the real interfaces.

- A non-transient error (auth 401/403, 404, 400) is never retried, falls back at once, and never
  counts toward opening the provider's circuit: it is the request's fault, not the provider's health.
- A half-open circuit lets one trial call through at a time; the others are skipped meanwhile. A
  trial that ends without a verdict (a non-transient error) frees the next trial.
- `schema_rewrites` in the trace are the rewrites for the model that answered: Gemini's end to end,
  and none after a fallback to a provider that takes the schema as is.
- `mcp-llm config` shows every secret, the Vertex access token included, only as `<set>`.

Provider-level tests run on every provider of tests/test_faults.py (its fixtures serve all three fakes).
"""

from __future__ import annotations

import base64
import io
import json
import logging
import random
import signal
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import anyio
import jsonschema
import pytest
from mcp import Client
from PIL import Image

from mcp_llm.circuit import CircuitBreakers
from mcp_llm.cli import main as cli_main
from mcp_llm.config import ImageSettings, LimitSettings, load_settings
from mcp_llm.errors import ImageError, NotJSONError, OutputError, SchemaError
from mcp_llm.images import load_image
from mcp_llm.schema import (
    ReplyLimits,
    check_schema,
    limits_from,
    parse_and_validate,
    parse_schema_argument,
    validation_errors,
)
from mcp_llm.schema import argument as schema_argument
from mcp_llm.schema import canonical as schema_canonical
from mcp_llm.schema import compile as schema_compile
from mcp_llm.schema import limits as schema_limits
from mcp_llm.schema import reply as schema_reply
from mcp_llm.schema.dialects import compile_anthropic
from mcp_llm.schema.gate import SchemaLimits, json_depth
from mcp_llm.server import build_server
from tests.conftest import assert_sent_one_at_a_time, call, call_error, ollama_config
from tests.fakes.ollama_server import FakeOllama
from tests.images import png_bytes
from tests.test_faults import (  # noqa: F401  (fakes, running_fakes and serve are fixtures)
    BY_NAME,
    GEMINI,
    GOOD,
    OLLAMA,
    PROVIDERS,
    SCHEMA,
    Fakes,
    Provider,
    Serve,
    assert_next_call_ok,
    fakes,
    fault_kwargs,
    generate,
    generate_error,
    health,
    per_provider,
    running_fakes,
    serve,
    tries,
)

pytestmark = pytest.mark.anyio

# The status a provider answers → the error kind its attempt shows. None of them is transient.
EXAMPLE_CONFIG = Path(__file__).resolve().parent.parent / "config.example.toml"
NON_TRANSIENT = {400: "bad_request", 401: "auth", 403: "auth", 404: "model_not_found"}
COOL_DOWN_S = 1.0


def non_transient(provider: Provider, status: int) -> dict[str, Any]:
    message_key = "message" if provider.name == "anthropic" else "error"
    return {"status": status, message_key: f"simulated {status}"}


def matrix() -> list[Any]:
    return [pytest.param(p, s, id=f"{p.name}-{s}") for p in PROVIDERS for s in NON_TRANSIENT]


async def wait_for_completions(servers: Fakes, provider: Provider, count: int) -> None:
    """Until the provider's fake has received `count` completion requests (an event, not a poll)."""
    fake = servers.of(provider)
    arrived = await anyio.to_thread.run_sync(fake.wait_for, lambda: servers.completions(provider) >= count, 30)
    assert arrived, f"{provider}: request {count} never reached the fake"


async def open_the_circuit(client: Any, servers: Fakes, provider: Provider) -> None:
    """One transient failure (with `circuit_failures = 1`) opens it; the call falls back; the cool-down passes."""
    servers.of(provider).enqueue(**fault_kwargs(provider, "503"))
    started = time.monotonic()
    first, _ = await generate(client, provider.model)
    assert tries(first) == [(provider.model, "error", "server_error"), (provider.fallback, "ok", None)]
    state = (await health(client, provider))["circuit"]
    if time.monotonic() - started < COOL_DOWN_S:  # on a loaded machine the cool-down may be over already
        assert state == "open"
    await anyio.sleep(COOL_DOWN_S + 0.1)  # a clock, not a race: the cool-down is time itself
    assert (await health(client, provider))["circuit"] == "half_open"


@pytest.fixture(autouse=True)
def fresh_health(monkeypatch: pytest.MonkeyPatch) -> None:
    # provider_health caches its probes for 5 s; a cached entry would hide the circuit's changes.
    monkeypatch.setattr("mcp_llm.app.HEALTH_CACHE_S", 0.0)


# --- the circuit breaker, state by state -----------------------------------------------------------


def test_circuit_states_step_by_step() -> None:
    breakers = CircuitBreakers(threshold=2, cooldown_s=60)
    assert (breakers.state("p"), breakers.allow("p"), breakers.retry_in("p")) == ("closed", True, 0.0)
    breakers.failure("p")
    assert (breakers.state("p"), breakers.allow("p"), breakers.retry_in("p")) == ("closed", True, 0.0)
    breakers.success("p")  # a success forgets the failures before it: two more are needed
    breakers.failure("p")
    assert breakers.state("p") == "closed"
    breakers.failure("p")
    assert (breakers.state("p"), breakers.allow("p")) == ("open", False)
    assert 59 < breakers.retry_in("p") <= 60
    assert (breakers.state("q"), breakers.allow("q"), breakers.retry_in("q")) == ("closed", True, 0.0)
    breakers.release("p")  # no trial is running: releasing changes nothing
    breakers.release("never-called")
    assert (breakers.state("p"), breakers.allow("p")) == ("open", False)


def test_half_open_lets_one_trial_through_at_a_time() -> None:
    breakers = CircuitBreakers(threshold=1, cooldown_s=0.05)
    breakers.failure("p")
    assert breakers.state("p") == "open"
    time.sleep(0.06)  # the cool-down is a clock: nothing to wait on but time
    assert (breakers.state("p"), breakers.retry_in("p")) == ("half_open", 0.0)
    assert breakers.allow("p") is True, "the trial call"
    assert breakers.allow("p") is False, "a second call while the trial runs"
    assert breakers.allow("p") is False
    assert breakers.state("p") == "half_open"
    breakers.release("p")  # the trial ended without a verdict: the next call is the trial
    assert breakers.allow("p") is True
    breakers.failure("p")  # a failed trial: open again, for a whole new cool-down
    assert (breakers.state("p"), breakers.allow("p")) == ("open", False)
    assert breakers.retry_in("p") > 0.03
    time.sleep(0.06)
    assert breakers.allow("p") is True
    breakers.success("p")  # a good trial closes it, and every call goes through
    assert (breakers.state("p"), breakers.allow("p"), breakers.allow("p")) == ("closed", True, True)
    breakers.failure("p")  # and it takes `threshold` failures again to open it
    assert breakers.state("p") == "open"


# --- non-transient errors: no retry, fallback at once, the circuit untouched -----------------------


@pytest.mark.parametrize(("provider", "status"), matrix())
async def test_a_non_transient_error_is_not_retried_and_does_not_open_the_circuit(
    serve: Serve, fakes: Fakes, provider: Provider, status: int  # noqa: F811
) -> None:
    kind = NON_TRANSIENT[status]
    fakes.of(provider).enqueue(**non_transient(provider, status))
    fakes.of(provider.fallback_provider).enqueue(GOOD)
    async with serve(max_retries=2, fallback=[provider.fallback], defaults="circuit_failures = 1") as client:
        result, elapsed = await generate(client, provider.model)
        assert tries(result) == [(provider.model, "error", kind), (provider.fallback, "ok", None)]
        assert fakes.completions(provider) == 1, f"a {status} was retried"
        assert elapsed < 0.5 + 5, "the fallback waited on a retry backoff"
        assert (await health(client, provider))["circuit"] == "closed", f"a {status} opened the circuit"
        await assert_next_call_ok(client, provider.model, provider.name)


@pytest.mark.parametrize("provider", per_provider())
async def test_a_non_transient_error_without_fallback_is_reported_after_one_attempt(
    serve: Serve, fakes: Fakes, provider: Provider  # noqa: F811
) -> None:
    fakes.of(provider).enqueue(**non_transient(provider, 401))
    async with serve(max_retries=2) as client:
        text, _ = await generate_error(client, provider.model)
        assert "simulated 401" in text
        assert f"(1 attempt with {provider.model}: auth)" in text
        assert fakes.completions(provider) == 1
        await assert_next_call_ok(client, provider.model, provider.name)


# --- half-open: one trial call at a time ---------------------------------------------------------

CIRCUIT = f"circuit_failures = 1\ncircuit_cooldown_s = {COOL_DOWN_S}"


@pytest.mark.parametrize("provider", per_provider())
async def test_half_open_sends_one_trial_and_skips_the_calls_meanwhile(
    serve: Serve, fakes: Fakes, provider: Provider  # noqa: F811
) -> None:
    async with serve(max_retries=0, fallback=[provider.fallback], defaults=CIRCUIT) as client:
        await open_the_circuit(client, fakes, provider)
        fakes.of(provider).enqueue(GOOD, delay_s=4.0)  # the trial is slow: other calls come while it runs
        trial: dict[str, Any] = {}

        async def run_trial() -> None:
            trial["result"], _ = await generate(client, provider.model)

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                tg.start_soon(run_trial)
                await wait_for_completions(fakes, provider, 2)  # the trial is in flight
                for _ in range(2):
                    meanwhile, elapsed = await generate(client, provider.model)
                    assert [(a["provider"], a["outcome"], a["error"]) for a in meanwhile["attempts"]] == [
                        (provider.name, "skipped", "circuit_open"), (provider.fallback_provider, "ok", None)]
                    assert elapsed < 3.0, "a call during the trial waited for it instead of falling back"
                assert fakes.completions(provider) == 2, "a half-open circuit let a second call through"
        assert tries(trial["result"]) == [(provider.model, "ok", None)]
        assert (await health(client, provider))["circuit"] == "closed"
        await assert_next_call_ok(client, provider.model, provider.name)


@pytest.mark.parametrize("provider", per_provider())
async def test_a_trial_ending_in_a_non_transient_error_frees_the_next_trial(
    serve: Serve, fakes: Fakes, provider: Provider  # noqa: F811
) -> None:
    async with serve(max_retries=0, fallback=[provider.fallback], defaults=CIRCUIT) as client:
        await open_the_circuit(client, fakes, provider)
        fakes.of(provider).enqueue(**non_transient(provider, 400))
        trial, _ = await generate(client, provider.model)
        assert tries(trial) == [(provider.model, "error", "bad_request"), (provider.fallback, "ok", None)]
        assert (await health(client, provider))["circuit"] == "half_open", "a 400 decided the trial"
        # The next call is the trial now (not skipped), and its success closes the circuit.
        await assert_next_call_ok(client, provider.model, provider.name)
        assert (await health(client, provider))["circuit"] == "closed"


# --- schema_rewrites: the answering model's, end to end -------------------------------------------

# Gemini takes none of `$schema`, `oneOf`, `const`, `patternProperties`: each is rewritten, and said so.
REWRITTEN = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "population": {"oneOf": [{"type": "integer", "minimum": 0}, {"type": "null"}]},
        "country": {"const": "France"},
    },
    "patternProperties": {"^x-": {"type": "string"}},
    "required": ["city", "population", "country"],
}
GEMINI_REWRITES = [
    "dropped `$schema` at $",
    "dropped `patternProperties` at $ (Gemini does not take it; the answer is still checked for it)",
    "`oneOf` became `anyOf` at $.population",
    "`const` became a one-value `enum` at $.country",
]
ANSWER = {"city": "Lyon", "population": 522250, "country": "France"}


async def generate_with(client: Any, model: str, schema: dict[str, Any]) -> tuple[dict[str, Any], float]:
    started = time.perf_counter()
    result = await call(client, "generate_structured", prompt="A French city, please.", schema=schema, model=model)
    jsonschema.validate(result["data"], schema)
    return result, time.perf_counter() - started


def sent_schema(servers: Fakes, provider: Provider) -> Any:
    body = json.loads(servers.last_completion(provider))
    if provider.name == "gemini":
        return body["generationConfig"]["responseJsonSchema"]
    return body["format"]


async def test_gemini_schema_rewrites_are_in_the_trace_and_in_what_it_was_sent(
    serve: Serve, fakes: Fakes  # noqa: F811
) -> None:
    fakes.gemini.enqueue(ANSWER)
    async with serve() as client:
        result, _ = await generate_with(client, GEMINI.model, REWRITTEN)
    assert sorted(result["schema_rewrites"]) == sorted(GEMINI_REWRITES)
    assert result["data"] == ANSWER
    sent = sent_schema(fakes, GEMINI)
    assert "$schema" not in sent and "patternProperties" not in sent
    assert sent["properties"]["population"] == {"anyOf": [{"type": "integer", "minimum": 0}, {"type": "null"}]}
    assert sent["properties"]["country"] == {"enum": ["France"]}


async def test_schema_rewrites_are_those_of_the_model_that_answered(serve: Serve, fakes: Fakes) -> None:  # noqa: F811
    fakes.gemini.enqueue(**fault_kwargs(GEMINI, "503"))
    fakes.ollama.enqueue(ANSWER)
    async with serve(max_retries=0, fallback=[OLLAMA.model]) as client:
        fell_back, _ = await generate_with(client, GEMINI.model, REWRITTEN)
        assert (fell_back["model"], fell_back["schema_rewrites"]) == (OLLAMA.model, [])
        assert sent_schema(fakes, OLLAMA) == REWRITTEN, "Ollama takes the caller's schema as is"

    fakes.ollama.enqueue(**fault_kwargs(OLLAMA, "503"))
    fakes.gemini.enqueue(ANSWER)
    async with serve(max_retries=0, fallback=[GEMINI.model]) as client:
        to_gemini, _ = await generate_with(client, OLLAMA.model, REWRITTEN)
        assert to_gemini["model"] == GEMINI.model
        assert sorted(to_gemini["schema_rewrites"]) == sorted(GEMINI_REWRITES)


async def test_the_reply_is_validated_against_the_callers_schema_not_the_rewritten_one(
    serve: Serve, fakes: Fakes  # noqa: F811
) -> None:
    # Gemini was sent no `patternProperties` and an `anyOf`; the caller's schema still rules the answer.
    bad = {**ANSWER, "x-note": 7}  # `x-` keys must be strings
    fakes.gemini.enqueue(bad)
    fakes.gemini.enqueue(ANSWER)
    async with serve(max_repairs=1) as client:
        result, _ = await generate_with(client, GEMINI.model, REWRITTEN)
    assert tries(result) == [(GEMINI.model, "invalid_output", "invalid_output"), (GEMINI.model, "ok", None)]
    assert "7 is not of type 'string'" in fakes.last_completion(GEMINI)
    jsonschema.validate(result["data"], REWRITTEN)


# --- `mcp-llm config`: every secret redacted -----------------------------------------------------

SECRETS = {
    "OLLAMA_API_KEY": "canary-ollama-1111",
    "GEMINI_API_KEY": "canary-gemini-2222",
    "ANTHROPIC_API_KEY": "canary-anthropic-3333",
    "OPENAI_API_KEY": "canary-openai-4444",
    "VERTEX_TOKEN": "canary-vertex-token-5555",
    "LMSTUDIO_KEY": "canary-lmstudio-6666",
    "MCP_HTTP_TOKEN": "canary-http-token-7777",
}
VERTEX_CONFIG = """
[providers.gemini]
backend = "vertex"
project = "proj-x"
access_token_env = "VERTEX_TOKEN"

[providers.openai_compatible.lmstudio]
endpoint = "http://127.0.0.1:1234/v1"
api_key_env = "LMSTUDIO_KEY"

[server]
token_env = "MCP_HTTP_TOKEN"
"""


def run_config_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                       env: dict[str, str], *args: str) -> str:
    """`mcp-llm --config … config [args]` through the CLI's own entry point; its stdout."""
    for name in (*SECRETS, "GOOGLE_API_KEY", "GOOGLE_GENAI_USE_VERTEXAI", "GOOGLE_CLOUD_PROJECT", "OLLAMA_HOST"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    root = logging.getLogger()  # main() sets up its stderr logging: undone after the test
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)
    path = tmp_path / "config.toml"
    path.write_text(VERTEX_CONFIG, encoding="utf-8")
    assert cli_main(["--config", str(path), "config", *args]) == 0
    out, err = capsys.readouterr()
    for secret in SECRETS.values():
        assert secret not in out + err, f"`mcp-llm config` printed a secret: {secret}"
    return out


def test_config_command_redacts_every_secret_and_says_where_it_came_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = run_config_command(tmp_path, monkeypatch, capsys, SECRETS).splitlines()
    for name, variable in (("ollama", "OLLAMA_API_KEY"), ("gemini", "GEMINI_API_KEY"),
                           ("anthropic", "ANTHROPIC_API_KEY"), ("openai", "OPENAI_API_KEY")):
        assert f'providers.{name}.api_key = "<set>"    # env:{variable}' in lines
    assert 'providers.gemini.access_token = "<set>"    # env:VERTEX_TOKEN' in lines
    assert 'providers.openai_compatible.lmstudio.api_key = "<set>"    # env:LMSTUDIO_KEY' in lines
    assert 'server.token_env = "MCP_HTTP_TOKEN"    # file' in lines  # the variable's name, never its value


def test_config_command_json_redacts_every_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    printed = json.loads(run_config_command(tmp_path, monkeypatch, capsys, SECRETS, "--json"))
    providers = printed["config"]["providers"]
    for name in ("ollama", "gemini", "anthropic", "openai"):
        assert providers[name]["api_key"] == "<set>", name
    assert providers["gemini"]["access_token"] == "<set>"
    assert providers["openai_compatible"]["lmstudio"]["api_key"] == "<set>"
    assert printed["sources"]["providers.gemini.access_token"] == "env:VERTEX_TOKEN"


def test_config_command_says_not_set_without_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    printed = json.loads(run_config_command(tmp_path, monkeypatch, capsys, {}, "--json"))
    providers = printed["config"]["providers"]
    for name in ("ollama", "gemini", "anthropic", "openai"):
        assert providers[name]["api_key"] == "<not set>", name
    assert providers["gemini"]["access_token"] == "<not set>"
    assert providers["openai_compatible"]["lmstudio"]["api_key"] == "<not set>"
    assert not any(key.endswith((".api_key", ".access_token")) for key in printed["sources"])


# --- the trace: usage over every attempt ---------------------------------------------------------

TOKENS = {"ollama": ("prompt_tokens", "completion_tokens"), "gemini": ("prompt_tokens", "completion_tokens"),
          "anthropic": ("input_tokens", "output_tokens")}


@pytest.mark.parametrize("provider", per_provider())
async def test_usage_adds_up_every_answer_of_the_call(serve: Serve, fakes: Fakes, provider: Provider) -> None:  # noqa: F811
    tokens_in, tokens_out = TOKENS[provider.name]
    fake = fakes.of(provider)
    fake.enqueue({"city": 42}, **{tokens_in: 100, tokens_out: 7})  # invalid: re-asked
    fake.enqueue(GOOD, **{tokens_in: 130, tokens_out: 11})
    async with serve(max_repairs=1) as client:
        result, _ = await generate(client, provider.model)
    assert tries(result) == [(provider.model, "invalid_output", "invalid_output"), (provider.model, "ok", None)]
    assert result["usage"] == {"input_tokens": 230, "output_tokens": 18}
    assert result["latency_ms"] >= sum(a["latency_ms"] for a in result["attempts"]) > 0


# --- retries: exponential backoff with jitter, between the documented bounds ---------------------


async def test_retries_back_off_exponentially_with_jitter(serve: Serve, fakes: Fakes) -> None:  # noqa: F811
    # Router logic, the same for every provider. Waits: 0.5 s then 1 s, each plus up to 0.5 s of
    # jitter (RETRY_INITIAL_WAIT_S = 0.5): 1.5 to 2.5 s in all, whatever the machine's load
    # adds to the calls themselves (those are timed apart, in each attempt's latency).
    for _ in range(2):
        fakes.ollama.enqueue(**fault_kwargs(OLLAMA, "503"))
    fakes.ollama.enqueue(GOOD)
    async with serve(max_retries=2, timeout_s=30) as client:
        result, _ = await generate(client, OLLAMA.model)
    assert tries(result) == [(OLLAMA.model, "error", "server_error")] * 2 + [(OLLAMA.model, "ok", None)]
    waited_s = (result["latency_ms"] - sum(a["latency_ms"] for a in result["attempts"])) / 1000
    assert 1.5 <= waited_s <= 2.5 + 1.0, f"the two backoffs took {waited_s:.2f} s in all, not 1.5 to 2.5 s"


def test_each_secret_is_read_from_the_variable_its_config_names(tmp_path: Path) -> None:
    # Redaction hides the values; the adapters must still get the right ones (the value, not the name).
    path = tmp_path / "config.toml"
    path.write_text(VERTEX_CONFIG, encoding="utf-8")
    settings = load_settings(path, env=SECRETS)
    providers = settings.providers
    assert providers.gemini.access_token is not None
    assert providers.gemini.access_token.get_secret_value() == SECRETS["VERTEX_TOKEN"]
    assert providers.openai_compatible["lmstudio"].api_key.get_secret_value() == SECRETS["LMSTUDIO_KEY"]
    assert settings.server.token is not None and settings.server.token.get_secret_value() == SECRETS["MCP_HTTP_TOKEN"]
    for name, variable in (("ollama", "OLLAMA_API_KEY"), ("gemini", "GEMINI_API_KEY"),
                           ("anthropic", "ANTHROPIC_API_KEY"), ("openai", "OPENAI_API_KEY")):
        key = settings.provider_settings(name).api_key
        assert key is not None and key.get_secret_value() == SECRETS[variable], name


# --- images: the roots, the size limit on every form, what errors name ---------------------------


@pytest.fixture
def image_settings(image_root: Path) -> ImageSettings:
    return ImageSettings(roots=[image_root], max_bytes=200_000, max_pixels=4096 * 4096)


def noise_png(side: int = 300) -> bytes:
    """A PNG that does not compress: about 3 × side² bytes."""
    image = Image.frombytes("RGB", (side, side), random.Random(7).randbytes(side * side * 3))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


@pytest.mark.parametrize("form", ["data-uri", "base64"])
async def test_max_bytes_holds_for_inline_images_too(image_settings: ImageSettings, form: str) -> None:
    raw = noise_png()
    assert len(raw) > image_settings.max_bytes
    encoded = base64.b64encode(raw).decode()
    spec = f"data:image/png;base64,{encoded}" if form == "data-uri" else encoded
    with pytest.raises(ImageError, match=r"over the 0\.2 MB limit"):
        await load_image(spec, image_settings)


async def test_a_path_outside_the_roots_names_every_allowed_root(image_settings: ImageSettings, image_root: Path,
                                                                 tmp_path: Path) -> None:
    declared = tmp_path / "declared"
    declared.mkdir()
    (tmp_path / "cat.png").write_bytes(png_bytes())

    async def client_roots() -> list[Path]:
        return [declared]

    with pytest.raises(ImageError) as info:
        await load_image(str(tmp_path / "cat.png"), image_settings, client_roots)
    message = info.value.user_message()
    assert f"outside the allowed roots ({image_root}, {declared})" in message
    with pytest.raises(ImageError, match=r"outside the allowed roots \(\(none\)\)"):
        await load_image(str(tmp_path / "cat.png"), ImageSettings(roots=[]))


async def test_a_path_inside_the_configured_roots_needs_no_client_root(image_settings: ImageSettings,
                                                                       image_root: Path, tmp_path: Path) -> None:
    (image_root / "cat.png").write_bytes(png_bytes())
    asked: list[bool] = []

    async def client_roots() -> list[Path]:
        asked.append(True)
        return [tmp_path / "elsewhere"]

    loaded = await load_image(str(image_root / "cat.png"), image_settings, client_roots)
    assert loaded.mime_type == "image/png"
    assert not asked, "the client was asked for its roots about a path images.roots already allows"


async def test_surrounding_whitespace_is_ignored(image_settings: ImageSettings, image_root: Path) -> None:
    (image_root / "cat.png").write_bytes(png_bytes())
    assert (await load_image(f"  {image_root / 'cat.png'}\n", image_settings)).mime_type == "image/png"
    data_uri = "data:image/png;base64," + base64.b64encode(png_bytes()).decode()
    assert (await load_image(f"\n{data_uri} ", image_settings)).mime_type == "image/png"


@pytest.mark.parametrize("length", [200, 201, 400])
async def test_a_url_over_200_characters_is_clipped_in_errors(image_settings: ImageSettings, length: int) -> None:
    from tests.fakes.ollama_server import FakeOllama

    enabled = image_settings.model_copy(update={"allow_urls": True, "allow_private_urls": True})
    with FakeOllama() as fake:  # `/` answers text, which is not an image
        base = f"{fake.url}/?"
        url = base + "q" * (length - len(base))
        assert len(url) == length
        with pytest.raises(ImageError) as info:
            await load_image(url, enabled)
    message = info.value.user_message()
    assert "not an image" in message
    if length <= 200:
        assert url in message and "…" not in message
    else:
        assert url[:200] + "…" in message and url not in message


# --- the router: what a request carries, the deadline over the chain, what errors say -------------


async def test_a_schema_call_tells_the_model_the_schema_and_a_free_text_call_does_not(
    serve: Serve, fakes: Fakes  # noqa: F811
) -> None:
    fakes.ollama.enqueue(GOOD)
    async with serve() as client:
        await call(client, "generate_structured", prompt="A city.", schema=SCHEMA, model=OLLAMA.model,
                   system="Be brief.")
        system = fakes.ollama.chat_requests[-1].json["messages"][0]
        assert system["role"] == "system"
        assert system["content"].startswith("Be brief.\n\nAnswer with a single JSON value")
        assert json.dumps(SCHEMA, separators=(",", ":")) in system["content"]

        image = "data:image/png;base64," + base64.b64encode(png_bytes()).decode()
        fakes.ollama.enqueue("A grey square.")
        text = await call(client, "analyze_image", image=image, prompt="What is it?", model="ollama/llava:7b")
        assert text["text"] == "A grey square."
        sent = fakes.ollama.chat_requests[-1].json
        assert not any("JSON" in m["content"] for m in sent["messages"]), "a free-text call was told to answer JSON"
        assert "format" not in sent or not sent["format"]


async def test_after_the_deadline_no_fallback_is_tried(serve: Serve, fakes: Fakes) -> None:  # noqa: F811
    fakes.ollama.enqueue(hang=True)
    async with serve(max_retries=0, fallback=[OLLAMA.fallback]) as client:
        text, elapsed = await generate_error(client, OLLAMA.model, timeout_s=1)
    assert "did not answer" in text and f"(1 attempt with {OLLAMA.model}: timeout)" in text
    assert fakes.completions(OLLAMA.fallback_provider) == 0
    assert elapsed < 3


async def test_a_skipped_provider_says_why_and_when_it_is_tried_again(serve: Serve, fakes: Fakes) -> None:  # noqa: F811
    fakes.ollama.enqueue(**fault_kwargs(OLLAMA, "503"))
    async with serve(max_retries=0, defaults="circuit_failures = 1\ncircuit_cooldown_s = 30") as client:
        await generate_error(client, OLLAMA.model)
        text, _ = await generate_error(client, OLLAMA.model)
    assert "ollama is skipped: it failed 1 time in a row." in text
    assert "It is tried again in 2" in text or "It is tried again in 3" in text  # of 30 s, a few passed
    assert f"(1 attempt with {OLLAMA.model}: circuit_open)" in text


async def test_usage_is_zero_when_the_provider_reports_none(serve: Serve, fakes: Fakes) -> None:  # noqa: F811
    line = {"model": "llama3.2:3b", "created_at": "2026-01-01T00:00:00Z", "done": True, "done_reason": "stop",
            "message": {"role": "assistant", "content": json.dumps(GOOD)}}
    fakes.ollama.enqueue(raw_body=(json.dumps(line) + "\n").encode(), headers={"Content-Type": "application/x-ndjson"})
    async with serve() as client:
        result, _ = await generate(client, OLLAMA.model)
    assert result["data"] == GOOD
    assert result["usage"] == {"input_tokens": 0, "output_tokens": 0}


async def test_provider_concurrency_bounds_the_requests_in_flight(fake_ollama: FakeOllama, image_root: Path,
                                                                 make_settings: Any) -> None:
    config = ollama_config(fake_ollama, image_root).replace("[providers.ollama]\n",
                                                            "[providers.ollama]\nconcurrency = 1\n", 1)
    fake_ollama.enqueue(GOOD, delay_s=1.5)
    fake_ollama.enqueue(GOOD)
    answers: list[Any] = []

    async with Client(build_server(make_settings(config))) as client:

        async def one() -> None:
            answers.append((await call(client, "generate_structured", prompt="A city.", schema=SCHEMA))["data"])

        await assert_sent_one_at_a_time(fake_ollama, one)
    assert answers == [GOOD, GOOD]


# --- reading a reply, and the caller's schema, at their boundaries --------------------------------

CITY = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


def test_the_first_valid_value_wins_even_right_after_another() -> None:
    assert parse_and_validate('{"note": 1}{"city": "Lyon"}', CITY) == {"city": "Lyon"}
    assert parse_and_validate('See [1]. {"city": "Lyon"}', CITY) == {"city": "Lyon"}


def test_every_fenced_block_is_tried_in_turn() -> None:
    reply = 'First try:\n```\nnot json\n```\nThen:\n```json\n"Lyon"\n```\n'
    assert parse_and_validate(reply, {"type": "string"}) == "Lyon"


def test_integers_are_bounded_at_64_digits_sign_apart() -> None:
    schema = {"type": "integer"}
    assert parse_and_validate("9" * 64, schema) == int("9" * 64)
    assert parse_and_validate("-" + "9" * 64, schema) == -int("9" * 64)
    for too_long in ("9" * 65, "-" + "9" * 65):
        with pytest.raises(OutputError, match="an integer of 65 digits"):
            parse_and_validate(too_long, schema)


def test_a_schema_exactly_at_the_depth_limit_is_accepted() -> None:
    limits = SchemaLimits(max_depth=6)
    schema: dict[str, Any] = {"type": "string"}
    while json_depth(schema, 100) < limits.max_depth:
        schema = {"type": "array", "items": schema}  # one level each
    assert json_depth(schema, 100) == limits.max_depth
    check_schema(schema, limits)
    deeper = {"type": "array", "items": schema}
    with pytest.raises(SchemaError, match="nested more than 6 levels"):
        check_schema(deeper, limits)


def test_a_schema_that_is_not_json_says_where() -> None:
    with pytest.raises(SchemaError) as info:
        parse_schema_argument('{"type": ')
    assert "The schema is not valid JSON: Expecting value at line 1 column 9." in info.value.user_message()


def test_only_top_level_values_in_prose_count() -> None:
    # The value inside the first one is part of it, not an answer of its own.
    with pytest.raises(OutputError, match="does not match the schema"):
        parse_and_validate('Result: {"wrapper": {"city": "Lyon"}} done.', CITY)


def test_up_to_eight_fenced_blocks_are_tried() -> None:
    misses = "".join(f"Try {i}:\n```\nnot json {i}\n```\n" for i in range(7))
    assert parse_and_validate(misses + '```json\n"Lyon"\n```', {"type": "string"}) == "Lyon"
    with pytest.raises(OutputError):
        parse_and_validate(misses + '```\nnope\n```\n```json\n"Lyon"\n```', {"type": "string"})


def test_a_wrapped_answer_without_its_wrapper_key_is_re_asked_for_it() -> None:
    schema = {"type": "array", "items": {"type": "string"}}
    assert parse_and_validate('{"value": ["a"]}', schema, unwrap="value") == ["a"]
    for reply in ('{"other": ["a"]}', '["a"]'):
        with pytest.raises(OutputError) as info:
            parse_and_validate(reply, schema, unwrap="value")
        assert info.value.message == "The model's JSON lacks the wrapper key."
        assert info.value.errors == ["at $: 'value' is missing"]


def test_a_reply_too_slow_to_check_is_refused_not_let_through() -> None:
    schema = {"type": "array", "items": {"type": "object", "properties": {"a": {"type": "string", "pattern": "^x+$"}}}}
    reply = json.dumps([{"a": "x" * 20} for _ in range(10_000)])
    with pytest.raises(OutputError) as info:
        parse_and_validate(reply, schema, limits=ReplyLimits(timeout_s=0.001))
    assert info.value.message == "The model's JSON could not be checked within 0.001 s."
    assert info.value.errors == ["at $: the answer is too large or too complex to check: answer briefly"]
    assert info.value.reply == reply, "the final error could not show how the answer began"


@pytest.mark.parametrize("provider", per_provider())
async def test_a_cancelled_trial_is_no_verdict(serve: Serve, fakes: Fakes, provider: Provider) -> None:  # noqa: F811
    async with serve(max_retries=0, fallback=[provider.fallback], defaults=CIRCUIT) as client:
        await open_the_circuit(client, fakes, provider)
        fakes.of(provider).enqueue(hang=True)
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(client.call_tool, "generate_structured",
                              {"prompt": "wait", "schema": SCHEMA, "model": provider.model})
                await wait_for_completions(fakes, provider, 2)  # the trial is in flight
                tg.cancel_scope.cancel()
        assert await anyio.to_thread.run_sync(fakes.of(provider).wait_for_disconnect, 10)
        assert (await health(client, provider))["circuit"] == "half_open", "a cancelled trial decided the circuit"
        await assert_next_call_ok(client, provider.model, provider.name)  # the next call is the trial
        assert (await health(client, provider))["circuit"] == "closed"


# --- what the caller is told when every answer was unusable ----------------------------------------


async def test_the_final_error_shows_how_the_last_answer_began(serve: Serve, fakes: Fakes) -> None:  # noqa: F811
    # The model's own words make a failure diagnosable (prose instead of JSON, a cut-off object):
    # shown with their whitespace collapsed, clipped at 160 characters.
    prose = "Sure!\n\n   Lyon is a   city " + "x" * 300
    fakes.ollama.enqueue("I think the answer is Paris.")
    fakes.ollama.enqueue(prose)
    async with serve(max_repairs=1) as client:
        text, _ = await generate_error(client, OLLAMA.model)
    collapsed = " ".join(prose.split())
    assert f'The answer began: "{collapsed[:159]}…".' in text
    assert "Paris" not in text, "the error showed an earlier answer, not the last"


async def test_a_short_answer_is_shown_whole(serve: Serve, fakes: Fakes) -> None:  # noqa: F811
    answer = "Lyon" * 40  # exactly 160 characters: no clipping
    fakes.ollama.enqueue(answer)
    async with serve(max_repairs=0) as client:
        text, _ = await generate_error(client, OLLAMA.model)
    assert f'The answer began: "{answer}".' in text


async def test_a_failed_chain_is_counted_under_its_last_error(serve: Serve, fakes: Fakes) -> None:  # noqa: F811
    # mcp-llm://stats counts a failed call under the kind of its last error (the one the caller acted on).
    fakes.ollama.enqueue(**non_transient(OLLAMA, 401))
    fakes.of(BY_NAME[OLLAMA.fallback_provider]).enqueue("no JSON here")
    async with serve(max_retries=0, max_repairs=0, fallback=[OLLAMA.fallback]) as client:
        await generate_error(client, OLLAMA.model)
        resource = await client.read_resource("mcp-llm://stats")
    stats = json.loads(resource.contents[0].text)  # type: ignore[union-attr]
    assert stats["calls"]["failures"] == {"not_json": 1}


# --- reading a reply: the bounds, exactly ----------------------------------------------------------


def test_the_limits_code_uses_by_default_are_those_the_config_documents() -> None:
    # `[limits]` in config.example.toml, the config's defaults and the readers' own defaults are one set of numbers.
    documented = tomllib.loads(EXAMPLE_CONFIG.read_text(encoding="utf-8"))["limits"]
    assert LimitSettings(**documented) == LimitSettings()
    assert limits_from(LimitSettings()) == (SchemaLimits(), ReplyLimits())


def test_up_to_sixteen_starting_points_in_prose_are_tried() -> None:
    misses = "".join(f"[not json {i}, " for i in range(15))  # each `[` starts a try that fails
    assert parse_and_validate(f'{misses} answer: {{"city": "Lyon"}}', CITY) == {"city": "Lyon"}
    with pytest.raises(OutputError, match="not JSON"):
        parse_and_validate(f'{misses} [nope, answer: {{"city": "Lyon"}}', CITY)


def test_brackets_inside_a_value_found_cost_no_try() -> None:
    # An example with many inner brackets, then the answer: the inner ones are part of the example,
    # not starting points of their own, so they do not use up the tries before the answer is reached.
    example = json.dumps({"cities": [{"name": f"c{i}", "tags": []} for i in range(20)]})
    assert parse_and_validate(f'For example {example}; my answer: {{"city": "Lyon"}}', CITY) == {"city": "Lyon"}


async def test_the_schema_instruction_keeps_the_callers_own_characters(serve: Serve, fakes: Fakes) -> None:  # noqa: F811
    schema = {"type": "object", "properties": {"ville": {"type": "string", "description": "Une ville française"}}}
    fakes.ollama.enqueue({"ville": "Lyon"})
    async with serve() as client:
        await call(client, "generate_structured", prompt="Une ville.", schema=schema, model=OLLAMA.model)
    (system,) = [m for m in fakes.ollama.chat_requests[-1].json["messages"] if m["role"] == "system"]
    assert "Une ville française" in system["content"], "the schema the model reads was escaped to \\u00e7"


# --- the caller's schema: what is refused, and in what order ---------------------------------------


def test_a_schema_given_as_text_is_bounded_before_it_is_parsed() -> None:
    limits = SchemaLimits(max_bytes=300)
    padded = '{"type": "object"' + " " * 300
    at_limit = padded[: 300 - 1] + "}"
    assert parse_schema_argument(at_limit, limits) == ({"type": "object"}, None)
    with pytest.raises(SchemaError) as info:
        parse_schema_argument(at_limit[:-1] + " }", limits)
    assert info.value.message == "The schema is 301 bytes, over the 300-byte limit."
    assert info.value.hint == "Send a smaller schema, or raise limits.schema_max_bytes."


def test_a_schema_text_too_deep_to_parse_is_refused_as_too_deep() -> None:
    with pytest.raises(SchemaError) as info:
        parse_schema_argument('{"items": ' * 3_000 + "{}" + "}" * 3_000)
    assert info.value.message == "The schema is nested more than 64 levels deep."


def test_a_schema_holding_what_json_cannot_express_is_refused() -> None:
    # Through the Python API (`mcp-llm` as a library): NaN, or a Python object JSON has no form for.
    for value in (float("nan"), float("inf"), {1, 2}):
        with pytest.raises(SchemaError) as info:
            check_schema({"type": "number", "const": value})
        assert info.value.message.startswith("The schema holds a value JSON cannot express: ")
        assert info.value.hint is not None and "finite numbers" in info.value.hint


def test_a_schema_too_deep_to_serialize_is_refused_as_too_deep() -> None:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(5_000):
        schema = {"type": "array", "items": schema}
    with pytest.raises(SchemaError) as info:
        check_schema(schema)
    assert info.value.message == "The schema is nested more than 64 levels deep."


def test_a_schema_that_passed_is_checked_again_under_other_limits() -> None:
    schema = {"$defs": {"a": {"type": "string"}}, "properties": {"x": {"$ref": "#/$defs/a"}}, "title": "limits-key"}
    check_schema(schema)  # passes, and is remembered as passing under the default limits
    with pytest.raises(SchemaError, match="more than 0 references"):
        check_schema(schema, SchemaLimits(max_refs=0))
    deep = {"properties": {"x": {"properties": {"y": {"type": "string"}}}}, "title": "depth-key"}
    check_schema(deep)
    with pytest.raises(SchemaError, match="nested more than 4 levels"):
        check_schema(deep, SchemaLimits(max_depth=4))


def test_references_are_counted_before_the_meta_schema_check() -> None:
    # Counting is cheap and the meta-schema check of thousands of references is not: a schema that
    # is both over the reference limit and invalid is refused for its references.
    schema = {"type": 5, "$defs": {"a": {}}, "properties": {f"p{i}": {"$ref": "#/$defs/a"} for i in range(20)}}
    with pytest.raises(SchemaError, match="more than 10 references"):
        check_schema(schema, SchemaLimits(max_refs=10))
    with pytest.raises(SchemaError, match="not a valid JSON Schema"):
        check_schema(schema)


def test_the_checked_schema_cache_keeps_the_most_recently_used() -> None:
    # A bounded memory of schemas that passed (a stream of distinct schemas cannot grow it), least
    # recently used out first: a schema used on every call stays remembered.
    schema_argument._CHECKED.clear()
    kept = schema_argument.CHECKED_SCHEMAS_KEPT
    favourite = {"type": "object", "title": "favourite"}
    check_schema(favourite)
    for i in range(kept + 50):
        check_schema({"type": "object", "title": f"schema {i}"})
        check_schema(favourite)  # in use all along
    titles = [json.loads(canonical)["title"] for canonical, _ in schema_argument._CHECKED]
    assert kept == 256 and len(titles) == kept
    assert titles[-1] == "favourite", "the schema used last is not the most recent"
    assert titles[:-1] == [f"schema {i}" for i in range(51, kept + 50)]


def test_a_number_too_large_for_a_double_is_refused_and_named() -> None:
    for reply, shown in (("1e999", "1e999"), ("-" + "9" * 400 + ".5", "-" + "9" * 23)):
        with pytest.raises(OutputError) as info:
            parse_and_validate(reply, {"type": "number"})
        assert info.value.message == f"The model's JSON cannot be used: the number {shown} is too large for a double."


def test_a_value_at_the_very_start_followed_by_prose_is_found() -> None:
    assert parse_and_validate('{"city": "Lyon"} is my answer.', CITY) == {"city": "Lyon"}
    assert parse_and_validate('["Lyon"] (a list, as asked)', {"type": "array"}) == ["Lyon"]


def test_a_refused_value_in_prose_is_named_in_the_error() -> None:
    # Not "no JSON": the value was there, and why it cannot be used is what the model is told.
    for reply, problem in (('The answer: {"n": 1e999} ok', "the number 1e999 is too large for a double"),
                           ('Here: [NaN] done', "NaN is not a JSON number")):
        with pytest.raises(OutputError) as info:
            parse_and_validate(reply, {"type": "object"})
        assert info.value.message == f"The model's JSON cannot be used: {problem}."
        assert info.value.errors == [f"at $: {problem}"]


def test_a_schema_within_raised_limits_but_too_deep_to_check_is_refused_clearly() -> None:
    # `limits.schema_max_depth` goes up to 256; the meta-schema check recurses further than Python
    # allows before that: a clear refusal, never a RecursionError.
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(200):
        schema = {"type": "array", "items": schema}
    with pytest.raises(SchemaError) as info:
        check_schema(schema, SchemaLimits(max_depth=256))
    assert info.value.message == "The schema is too deeply nested to check."
    assert info.value.hint == "Flatten it with $defs and $ref."


# --- reading a reply: fenced blocks, bounds and messages, exactly ----------------------------------

STRING = {"type": "string"}  # a string answer can only come from the whole text or a fence, never from prose


@pytest.mark.parametrize(("reply", "expected"), [
    ('```json\n"Lyon"\n```', "Lyon"),  # a fence at the very start
    ('```"Lyon"```', "Lyon"),  # on one line, no label
    ('```abcdefghijabcdefghij\n"Lyon"\n```', "Lyon"),  # a label of 20 characters is a label
    ('```x``````"Lyon"```', "Lyon"),  # a fence right after another
], ids=["at-start", "one-line", "20-char-label", "adjacent"])
def test_fenced_blocks_are_read_wherever_they_are(reply: str, expected: str) -> None:
    assert parse_and_validate(reply, STRING) == expected


def test_a_first_line_over_20_characters_is_content_not_a_label() -> None:
    with pytest.raises(OutputError, match="not JSON"):
        parse_and_validate('```abcdefghijabcdefghijk\n"Lyon"\n```', STRING)


def test_an_empty_answer_is_said_to_be_empty() -> None:
    for reply in ("", "  \n\t "):
        with pytest.raises(NotJSONError) as info:
            parse_and_validate(reply, STRING)
        assert info.value.message == "The model returned an empty answer."
        assert info.value.errors == ["the answer is empty"]


def test_an_answer_is_bounded_in_length_exactly() -> None:
    limits = ReplyLimits(max_bytes=1_024)
    at_limit = json.dumps("x" * 1_022)
    assert parse_and_validate(at_limit, STRING, limits=limits) == "x" * 1_022
    with pytest.raises(OutputError) as info:
        parse_and_validate(at_limit + " ", STRING, limits=limits)
    assert info.value.message == "The model's answer is 1,025 characters, over the 1,024 limit."
    assert info.value.errors == ["the answer is too long: answer with at most 1,024 characters of JSON"]


def test_an_answer_is_bounded_in_depth_exactly() -> None:
    limits = ReplyLimits(max_depth=5)
    at_limit = [[[[["deep"]]]]]
    assert parse_and_validate(json.dumps(at_limit), {"type": "array"}, limits=limits) == at_limit
    with pytest.raises(OutputError) as info:
        parse_and_validate(json.dumps([at_limit]), {"type": "array"}, limits=limits)
    assert info.value.message == "The model's JSON cannot be used: the JSON is nested more than 5 levels deep."


def test_an_answer_too_deep_to_decode_says_so() -> None:
    with pytest.raises(OutputError) as info:
        parse_and_validate("[" * 100_000, {"type": "array"})
    assert info.value.message == "The model's JSON cannot be used: the JSON is nested more than 64 levels deep."


def test_at_most_three_problems_are_listed() -> None:
    reply = "Values: [NaN] [Infinity] [-Infinity] [1e999] [NaN]"
    with pytest.raises(OutputError) as info:
        parse_and_validate(reply, {"type": "array"})
    assert info.value.errors == ["at $: NaN is not a JSON number", "at $: Infinity is not a JSON number",
                                 "at $: -Infinity is not a JSON number"]


def test_an_answer_too_deep_for_the_validator_is_refused_not_crashed() -> None:
    # reply_max_depth goes up to 200; a recursive schema makes the validator recurse further than
    # Python allows before that: the answer is refused (and re-asked), never an internal error.
    node = {"anyOf": [{"type": "string"}, {"allOf": [{"type": "array", "items": {"$ref": "#/$defs/node"}}]}]}
    schema = {"$defs": {"node": node}, "$ref": "#/$defs/node"}
    reply = "[" * 190 + "]" * 190
    with pytest.raises(OutputError) as info:
        parse_and_validate(reply, schema, limits=ReplyLimits(max_depth=200))
    assert info.value.message == "The model's JSON is too deeply nested to check."
    assert info.value.errors == ["at $: the answer is nested too deeply"]
    assert info.value.reply == reply


@pytest.mark.parametrize(("length", "clipped"), [(300, False), (301, True)])
def test_a_meta_schema_error_is_clipped_at_300_characters(length: int, clipped: bool) -> None:
    problem = "' is not valid under any of the given schemas"
    name = "x" * (length - len(problem) - 1)  # the problem reads 'xxx…' is not valid…
    with pytest.raises(SchemaError) as info:
        check_schema({"type": name})
    shown = info.value.message.removeprefix("The schema is not a valid JSON Schema: ").removesuffix(" (at $.type).")
    full = f"'{name}{problem}"
    assert len(full) == length
    assert shown == (full[:299] + "…" if clipped else full)


def test_schemas_equal_but_for_key_order_are_checked_once() -> None:
    schema_argument._CHECKED.clear()
    check_schema({"type": "object", "title": "order", "properties": {"a": {"type": "string"}}})
    check_schema({"properties": {"a": {"type": "string"}}, "title": "order", "type": "object"})
    assert len(schema_argument._CHECKED) == 1


def test_an_interrupt_during_validation_is_never_taken_for_a_valid_answer() -> None:
    # Ctrl-C (or any BaseException but a pyo3 panic) while an answer is checked passes through:
    # swallowed, the unchecked answer would come back as valid.
    schema = {"type": "array", "items": {"type": "object", "properties": {"a": {"type": "string", "pattern": "^x+$"}}}}
    value = [{"a": "x" * 20} for _ in range(200_000)]  # about 2 s to check, 50 ms to decode
    validation_errors(value[:10], schema)  # the validator is built before the clock starts

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 0.3)
    try:
        with pytest.raises(KeyboardInterrupt):
            validation_errors(value, schema, timeout_s=60)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)



# --- where the work runs: on the event loop only when it is small ---------------------------------


class _OnTheLoop:
    """Which of `functions` were called in this (the event loop's) thread, by a profile hook on it alone."""

    def __init__(self, *functions: Any) -> None:
        self.codes = {f.__code__: f.__name__ for f in functions}
        self.called: list[str] = []

    def _profile(self, frame: Any, event: str, arg: Any) -> None:
        if event == "call" and frame.f_code in self.codes:
            self.called.append(self.codes[frame.f_code])

    def __enter__(self) -> _OnTheLoop:
        sys.setprofile(self._profile)
        return self

    def __exit__(self, *exc: object) -> None:
        sys.setprofile(None)


def _schema_text_of(length: int) -> str:
    return '{"type": "object"' + " " * (length - len('{"type": "object"}')) + "}"


def _schema_of(canonical_length: int, tag: str) -> dict[str, Any]:
    base = {"title": "", "type": "object", "x-tag": tag}
    padding = canonical_length - len(schema_canonical.canonical(base))
    return {**base, "title": "t" * padding}


async def test_small_schemas_are_checked_on_the_loop_and_larger_ones_in_a_worker() -> None:
    check_schema({"type": "object"})  # jsonschema is loaded: only size decides now
    limit = schema_limits.OFF_LOOP_CHARS
    assert limit == 1_024
    for length, on_loop in ((limit, True), (limit + 1, False)):
        text = _schema_text_of(length)
        assert len(text) == length
        with _OnTheLoop(schema_argument.parse_schema_argument) as seen:
            assert await schema_argument.parse_schema_argument_off_loop(text) == ({"type": "object"}, None)
        assert (seen.called == ["parse_schema_argument"]) is on_loop, (length, seen.called)

        schema = _schema_of(length, f"dict-{length}")
        assert len(schema_canonical.canonical(schema)) == length
        with _OnTheLoop(schema_argument.check_schema, schema_argument.parse_schema_argument) as seen:
            assert await schema_argument.parse_schema_argument_off_loop(schema) == (schema, None)
        assert (seen.called == ["check_schema"]) is on_loop, (length, seen.called)
        with _OnTheLoop(schema_argument.check_schema) as seen:  # checked before: a cache hit, on the loop
            await schema_argument.parse_schema_argument_off_loop(schema)
        assert seen.called == ["check_schema"], (length, seen.called)


async def test_small_replies_are_read_on_the_loop_and_larger_ones_in_a_worker() -> None:
    limit = schema_limits.OFF_LOOP_CHARS
    for length, on_loop in ((limit, True), (limit + 1, False)):
        reply = json.dumps("x" * (length - 2))
        assert len(reply) == length
        with _OnTheLoop(schema_reply.parse_and_validate) as seen:
            assert await schema_reply.parse_and_validate_off_loop(reply, STRING) == "x" * (length - 2)
        assert (seen.called == ["parse_and_validate"]) is on_loop, (length, seen.called)


async def test_a_large_schema_is_compiled_in_a_worker_the_first_time_only() -> None:
    limit = schema_limits.OFF_LOOP_CHARS
    small, large = _schema_of(limit, "compile-small"), _schema_of(limit + 1, "compile-large")
    # (schema, compiled on the loop, handed to a worker): the second time, the large one was compiled before
    for schema, on_loop, in_worker in ((small, True, False), (large, False, True), (large, False, False)):
        with _OnTheLoop(compile_anthropic, anyio.to_thread.run_sync) as seen:
            compiled = await schema_compile.compile_for_off_loop("anthropic", schema)
        assert compiled == compile_anthropic(schema)
        assert ("compile_anthropic" in seen.called, "run_sync" in seen.called) == (on_loop, in_worker), seen.called


async def test_the_record_of_large_schemas_compiled_stays_bounded() -> None:
    # A stream of distinct large schemas must not grow it without end (the cache it shadows is bounded too).
    schema_compile._COMPILED_BEFORE.clear()
    kept = schema_compile.COMPILED_SCHEMAS_KEPT
    assert kept == 256  # as many as the compile cache keeps
    for i in range(kept + 1):
        await schema_compile.compile_for_off_loop("openai", _schema_of(schema_limits.OFF_LOOP_CHARS + 1, f"stream-{i}"))
        assert len(schema_compile._COMPILED_BEFORE) <= kept
    assert len(schema_compile._COMPILED_BEFORE) == 1  # started over at the bound, with the newest


async def test_a_cancelled_call_does_not_wait_for_the_check_of_a_large_reply() -> None:
    # The worker thread cannot be stopped, but the call it belongs to returns at once (it is abandoned).
    schema = {"type": "array", "items": {"type": "object", "properties": {"a": {"type": "string", "pattern": "^x+$"}}}}
    reply = json.dumps([{"a": "x" * 20} for _ in range(100_000)])
    limits = ReplyLimits(max_bytes=len(reply), timeout_s=60)
    started = time.perf_counter()
    await schema_reply.parse_and_validate_off_loop(reply, schema, limits=limits)
    whole = time.perf_counter() - started
    started = time.perf_counter()
    with anyio.move_on_after(whole / 10):  # the check is under way in its worker by then
        await schema_reply.parse_and_validate_off_loop(reply, schema, limits=limits)
    cancelled = time.perf_counter() - started
    assert cancelled < whole / 4, f"the cancelled call waited {cancelled:.2f} s of the check's {whole:.2f} s"


async def test_a_cancelled_call_does_not_wait_for_the_check_of_a_large_schema() -> None:
    limits = SchemaLimits(max_bytes=10_000_000)

    def large(tag: str) -> dict[str, Any]:  # distinct each time: a schema checked before is not checked again
        properties = {f"p{i}": {"type": "string", "pattern": "^a+$", "description": tag} for i in range(5_000)}
        return {"type": "object", "properties": properties}

    started = time.perf_counter()
    await schema_argument.parse_schema_argument_off_loop(large("whole"), limits)
    whole = time.perf_counter() - started
    started = time.perf_counter()
    with anyio.move_on_after(whole / 10):  # the check is under way in its worker by then
        await schema_argument.parse_schema_argument_off_loop(large("cancelled"), limits)
    cancelled = time.perf_counter() - started
    assert cancelled < whole / 3, f"the cancelled call waited {cancelled:.2f} s of the check's {whole:.2f} s"


async def test_the_final_error_lists_at_most_three_problems(serve: Serve, fakes: Fakes) -> None:  # noqa: F811
    schema = {"type": "object", "required": ["a", "b", "c", "d", "e"]}
    fakes.ollama.enqueue({})
    async with serve(max_repairs=0) as client:
        text = await call_error(client, "generate_structured", prompt="x", schema=schema, model=OLLAMA.model)
    problems = "; ".join(f"at $: '{name}' is a required property" for name in "abc")
    assert f"Last problems: {problems}." in text, text
    assert "'d'" not in text


async def test_a_failed_call_counts_its_wall_time_in_the_stats(serve: Serve, fakes: Fakes) -> None:  # noqa: F811
    fakes.ollama.enqueue(delay_s=0.3, **non_transient(OLLAMA, 401))
    async with serve(max_retries=0) as client:
        started = time.perf_counter()
        await generate_error(client, OLLAMA.model)
        wall_ms = (time.perf_counter() - started) * 1000
        resource = await client.read_resource("mcp-llm://stats")
    latency = json.loads(resource.contents[0].text)["calls"]["latency_ms"]  # type: ignore[union-attr]
    assert 300 <= latency["p50"] <= wall_ms, (latency, wall_ms)


async def test_a_fallback_is_tried_while_any_time_remains(serve: Serve, fakes: Fakes) -> None:  # noqa: F811
    # The first model fails with well under a second of the call's 3 s left: the fallback still gets its turn.
    fakes.ollama.enqueue(delay_s=2.4, **non_transient(OLLAMA, 401))
    fakes.of(BY_NAME[OLLAMA.fallback_provider]).enqueue(GOOD)
    async with serve(max_retries=0, timeout_s=3, fallback=[OLLAMA.fallback]) as client:
        result, _ = await generate(client, OLLAMA.model)
    assert tries(result) == [(OLLAMA.model, "error", "auth"), (OLLAMA.fallback, "ok", None)]


async def test_a_re_ask_is_made_while_any_time_remains(serve: Serve, fakes: Fakes) -> None:  # noqa: F811
    fakes.ollama.enqueue({"city": 42}, delay_s=2.4)  # invalid, with well under a second of 3 s left
    fakes.ollama.enqueue(GOOD)
    async with serve(max_repairs=1, timeout_s=3) as client:
        result, _ = await generate(client, OLLAMA.model)
    assert tries(result) == [(OLLAMA.model, "invalid_output", "invalid_output"), (OLLAMA.model, "ok", None)]


async def test_a_fallback_id_that_is_not_a_model_is_listed_with_the_others(serve: Serve, fakes: Fakes) -> None:  # noqa: F811
    fakes.ollama.enqueue(**non_transient(OLLAMA, 401))
    async with serve(max_retries=0, fallback=["nope/x"]) as client:
        text, _ = await generate_error(client, OLLAMA.model)
    assert f"Every model in the fallback chain failed (1 attempts) — {OLLAMA.model}: " in text, text
    assert "nope/x: Unknown model id 'nope/x'" in text, text
