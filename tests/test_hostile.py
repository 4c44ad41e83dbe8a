"""The promise under attack: hostile schemas and model replies end in valid data or a clear error,
and never kill, flood or stall the server.

Each case from issue 7 goes through a real MCP client: in-process for most, and over stdio (a real
server process) for those that used to kill the process or stall its event loop. After every
case the server answers the next call.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import jsonschema
import jsonschema_rs
import pytest
from mcp import Client, StdioServerParameters

from mcp_llm.config import load_settings
from mcp_llm.server import build_server
from tests.conftest import call, call_error, ollama_config
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.ollama_server import FakeOllama
from tests.stdio_harness import REPO_ROOT, server_args, subprocess_env, write_config

pytestmark = pytest.mark.anyio

TEST_TIMEOUT_S = 60
NUMBER = {"type": "object", "properties": {"x": {"type": "number", "minimum": 0, "maximum": 10}}, "required": ["x"]}
GOOD_X = {"x": 3}


def dynamic_loop(levels: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"$dynamicAnchor": "meta", "not": {"$dynamicRef": "#meta"}}
    for _ in range(levels):
        schema = {"allOf": [schema]}
    return schema


def nested(depth: int, leaf: Any) -> Any:
    value = leaf
    for _ in range(depth):
        value = {"child": value}
    return value


TREE = {"$defs": {"node": {"type": "object", "properties": {"child": {"$ref": "#/$defs/node"}}}},
        "$ref": "#/$defs/node"}

# Schemas that used to pass the check and then crash (or loop) once the model had answered.
REFUSED_SCHEMAS = {
    "dynamic-ref loop": (dynamic_loop(3), "never end"),
    "not ref root": ({"not": {"$ref": "#"}}, "never end"),
    "anyOf ref root": ({"type": "object", "anyOf": [{"$ref": "#"}]}, "never end"),
    "percent-decoded ref": ({"$defs": {"p%25q": {"type": "string"}}, "$ref": "#/$defs/p%25q"}, "points nowhere"),
    "ref under a property named default": (
        {"type": "object", "properties": {"default": {"$ref": "#/$defs/nope"}}}, "points nowhere"),
    "ref under a property named enum": (
        {"type": "object", "properties": {"enum": {"$ref": "#/$defs/nope"}}}, "points nowhere"),
    "ref to a list": ({"type": "object", "required": ["a"], "properties": {"a": {"$ref": "#/required"}}},
                      "not a schema"),
    "anchor only in examples": ({"examples": [{"$anchor": "x"}], "$ref": "#x"}, "points nowhere"),
    "unresolvable dynamic ref": ({"$dynamicRef": "#nowhere"}, "points nowhere"),
    "exponential refs": ({"$defs": {f"d{i}": {"anyOf": [{"$ref": f"#/$defs/d{i + 1}"}] * 2} for i in range(20)}
                          | {"d20": {"type": "integer"}}, "$ref": "#/$defs/d0"}, "subschemas"),
    "20,001 references": ({"$defs": {"a": {"type": "integer"}}, "anyOf": [{"$ref": "#/$defs/a"}] * 20_001},
                          "references"),
    "named backreference": ({"type": "string", "pattern": "(?<n>a)\\k<n>"}, "cannot be used"),
    "unknown dialect": ({"$schema": "https://example.com/my-dialect", "type": "object"}, "dialect"),
    "too deep": (nested(70, {"type": "string"}), "levels deep"),
    "too large": ({"enum": ["x" * 1000] * 2_200}, "limit"),
}

# Valid schemas that used to be refused: they must be accepted and used.
ACCEPTED_SCHEMAS = {
    "percent-encoded ref": ({"$defs": {"p%q": {"type": "object", "properties": {"x": {"type": "number"}}}},
                             "$ref": "#/$defs/p%25q"}, GOOD_X),
    "draft-04 id anchor": ({"$schema": "http://json-schema.org/draft-04/schema#",
                            "definitions": {"n": {"id": "#num", "type": "object", "properties":
                                                  {"x": {"type": "number"}}}},
                            "$ref": "#num"}, GOOD_X),
    "recursive tree": (TREE, nested(5, {})),
    "an answer 60 levels deep": (TREE, nested(59, {})),  # within reply_max_depth: it must serialize
    "safe pattern": ({"type": "object", "properties": {"slug": {"type": "string", "pattern": "^([a-z]+-)*[a-z]+$"}}},
                     {"slug": "a-b-c"}),
    # patterns the old nested-repeat guard refused: matching is now linear-time ECMA-262 (issue 17)
    "nested repeat": ({"type": "object", "properties": {"x": {"type": "string", "pattern": "^(a+)+$"}}},
                      {"x": "aaa"}),
    "words, up to 50": ({"type": "object", "properties": {"x": {"type": "string",
                                                                "pattern": "^(?:\\S+\\s+){0,49}\\S+$"}}},
                        {"x": "two words"}),
    "unicode letters": ({"type": "object", "properties": {"x": {"type": "string", "pattern": "^\\p{L}+$"}}},
                        {"x": "Zoë"}),
}

# Replies that used to end in null data, a bare crash, or a stall. Each is followed by a valid reply:
# the bad one must be re-asked (never passed on), and the call must end with valid data.
HOSTILE_REPLIES = {
    "NaN": (NUMBER | {"properties": {"x": {"type": "number", "minimum": 0, "maximum": 10}}}, '{"x": NaN}'),
    "bare NaN": ({"type": "number", "minimum": 0, "maximum": 10}, "NaN"),
    "Infinity": (NUMBER, '{"x": Infinity}'),
    "overflowing float": (NUMBER, '{"x": 1e400}'),
    "5000-digit integer": (NUMBER, '{"x": ' + "9" * 5000 + "}"),
    "NaN against float multipleOf": ({"type": "object", "properties": {"x": {"type": "number", "multipleOf": 0.1}},
                                      "required": ["x"]}, '{"x": NaN}'),
    "huge float against multipleOf": ({"type": "object", "properties": {"x": {"type": "number", "multipleOf": 0.01}},
                                       "required": ["x"]}, '{"x": 1e308}'),
    "deep nesting": (NUMBER, "[" * 50_000 + "]" * 50_000),
    "valid but 300 deep": (TREE, json.dumps(nested(300, {}))),
    "lone surrogate": ({"type": "object", "properties": {"x": {"type": "string"}}}, '{"x": "\\udc00"}'),
    "fence and spaces": (NUMBER, "```" + " " * 40_000),
    "3000 distinct objects": ({"type": "object", "properties": {"x": {"type": "array", "uniqueItems": True,
                                                                      "maxItems": 10}}},
                              json.dumps({"x": [{"i": i} for i in range(3000)]})),
    "many brackets": (NUMBER, "[" * 20 + "{" * 20 + "not json"),
    "bad date-time": ({"type": "object", "properties": {"when": {"type": "string", "format": "date-time"}},
                       "required": ["when"]}, '{"when": "yesterday"}'),
}
GOOD_REPLY = {
    "bare NaN": "5",
    "valid but 300 deep": json.dumps(nested(3, {})),
    "lone surrogate": '{"x": "ok"}',
    "3000 distinct objects": '{"x": [1, 2]}',
    "NaN against float multipleOf": '{"x": 0.5}',
    "huge float against multipleOf": '{"x": 0.5}',
    "bad date-time": '{"when": "2026-12-02T10:00:00Z"}',
}


@pytest.fixture
def fake() -> Iterator[FakeOllama]:
    with FakeOllama() as server:
        yield server
        assert not server.errors, f"the fake Ollama server itself failed: {server.errors!r}"


@pytest.fixture
def settings_file(fake: FakeOllama, tmp_path: Path) -> Path:
    return write_config(fake, tmp_path)


def validate(instance: Any, schema: dict[str, Any]) -> None:
    """The test's own check, independent of the server's: jsonschema-rs, whose patterns are ECMA-262
    as JSON Schema says (jsonschema for draft 3, which jsonschema-rs does not read)."""
    if schema.get("$schema", "").startswith("http://json-schema.org/draft-03/"):
        jsonschema.validators.validator_for(schema)(schema).validate(instance)
    else:
        jsonschema_rs.validator_for(schema, validate_formats=True).validate(instance)


async def assert_next_call_ok(client: Client, fake: FakeOllama) -> None:
    fake.enqueue(GOOD_X)
    result = await call(client, "generate_structured", prompt="x?", schema=NUMBER)
    assert result["data"] == GOOD_X


@pytest.mark.parametrize("case", REFUSED_SCHEMAS)
async def test_hostile_schemas_are_refused_before_any_model_call(case: str, fake: FakeOllama,
                                                                settings_file: Path) -> None:
    schema, fragment = REFUSED_SCHEMAS[case]
    with anyio.fail_after(TEST_TIMEOUT_S):
        async with Client(build_server(load_settings(settings_file, env={}))) as client:
            message = await call_error(client, "generate_structured", prompt="x", schema=schema)
            assert fragment in message, message
            assert not fake.chat_requests, "the schema must be refused before the model is paid for"
            await assert_next_call_ok(client, fake)


@pytest.mark.parametrize("case", ACCEPTED_SCHEMAS)
async def test_valid_schemas_once_refused_are_accepted(case: str, fake: FakeOllama, settings_file: Path) -> None:
    schema, answer = ACCEPTED_SCHEMAS[case]
    fake.enqueue(answer)
    with anyio.fail_after(TEST_TIMEOUT_S):
        async with Client(build_server(load_settings(settings_file, env={}))) as client:
            result = await call(client, "generate_structured", prompt="x", schema=schema)
    assert result["data"] == answer
    validate(result["data"], schema)


@pytest.mark.parametrize("case", HOSTILE_REPLIES)
async def test_hostile_replies_are_re_asked_never_passed_on(case: str, fake: FakeOllama, settings_file: Path) -> None:
    schema, reply = HOSTILE_REPLIES[case]
    good = GOOD_REPLY.get(case, json.dumps(GOOD_X))
    fake.enqueue(reply)
    fake.enqueue(good)
    with anyio.fail_after(TEST_TIMEOUT_S):
        async with Client(build_server(load_settings(settings_file, env={}))) as client:
            result = await call(client, "generate_structured", prompt="x", schema=schema)
            assert result["data"] == json.loads(good)
            validate(result["data"], schema)
            assert [a["outcome"] for a in result["attempts"]] == ["invalid_output", "ok"], result["attempts"]
            repair = fake.chat_requests[1].json["messages"][-1]["content"]
            assert "not valid" in repair and len(repair) < 4_000, repair[:500]
            await assert_next_call_ok(client, fake)


async def test_a_reply_that_stays_hostile_ends_in_a_clear_error_with_its_trace(fake: FakeOllama,
                                                                             settings_file: Path) -> None:
    for _ in range(3):
        fake.enqueue('{"x": NaN}')
    with anyio.fail_after(TEST_TIMEOUT_S):
        async with Client(build_server(load_settings(settings_file, env={}))) as client:
            message = await call_error(client, "generate_structured", prompt="x", schema=NUMBER)
            assert "NaN is not a JSON number" in message and "3 attempts" in message, message
            await assert_next_call_ok(client, fake)


async def test_prose_holding_several_json_values_gives_the_first_that_validates(fake: FakeOllama,
                                                                              settings_file: Path) -> None:
    fake.enqueue('See [1]. Answer: {"x": 3}')
    with anyio.fail_after(TEST_TIMEOUT_S):
        async with Client(build_server(load_settings(settings_file, env={}))) as client:
            result = await call(client, "generate_structured", prompt="x", schema=NUMBER)
    assert result["data"] == GOOD_X and len(result["attempts"]) == 1


async def test_a_doubling_schema_makes_a_small_anthropic_request(tmp_path: Path) -> None:
    schema: dict[str, Any] = {"type": "string", "pattern": "^[a-z]{1,8}$"}
    for _ in range(26):
        schema = {"not": schema}
    schema = {"type": "object", "properties": {"x": schema}, "required": ["x"]}
    with FakeAnthropic(api_key=None) as anthropic, FakeOllama() as ollama:
        anthropic.enqueue({"x": "ok"})
        config = tmp_path / "c.toml"
        config.write_text(ollama_config(ollama, tmp_path) + f'\n[providers.anthropic]\nendpoint = "{anthropic.url}"\n',
                          encoding="utf-8")
        started = time.monotonic()
        with anyio.fail_after(TEST_TIMEOUT_S):
            async with Client(build_server(load_settings(config, env={"ANTHROPIC_API_KEY": "k"}))) as client:
                result = await call(client, "generate_structured", prompt="x", schema=schema,
                                    model="claude-haiku-4-5")
        sent = anthropic.requests[-1].body
    assert len(sent) < 20_000, f"the request grew to {len(sent):,} bytes"
    assert time.monotonic() - started < TEST_TIMEOUT_S
    assert result["data"] == {"x": "ok"}
    validate(result["data"], schema)


def stdio_client(config: Path) -> Client:
    params = StdioServerParameters(command=sys.executable, args=server_args(config), env=subprocess_env(),
                                   cwd=str(REPO_ROOT))
    return Client(params, read_timeout_seconds=TEST_TIMEOUT_S)  # type: ignore[arg-type]


async def test_over_stdio_no_hostile_input_kills_or_stalls_the_server(fake: FakeOllama, settings_file: Path) -> None:
    """A real server process: the schemas that used to kill it are refused, the replies that used to
    crash it are re-asked, and an unrelated call made while a hostile reply is processed answers fast."""
    with anyio.fail_after(TEST_TIMEOUT_S * 2):
        async with stdio_client(settings_file) as client:
            for schema, _ in (REFUSED_SCHEMAS["dynamic-ref loop"], REFUSED_SCHEMAS["not ref root"]):
                await call_error(client, "generate_structured", prompt="x", schema=schema)
            for case in ("5000-digit integer", "deep nesting", "valid but 300 deep", "NaN"):
                schema, reply = HOSTILE_REPLIES[case]
                fake.enqueue(reply)
                fake.enqueue(GOOD_REPLY.get(case, json.dumps(GOOD_X)))
                result = await call(client, "generate_structured", prompt="x", schema=schema)
                validate(result["data"], schema)
            for case in ("fence and spaces", "3000 distinct objects"):
                schema, reply = HOSTILE_REPLIES[case]
                fake.enqueue(reply, delay_s=0.2)
                fake.enqueue(GOOD_REPLY.get(case, json.dumps(GOOD_X)))
                answered = fake.answered

                async def hostile(schema: dict[str, Any] = schema) -> None:
                    await call(client, "generate_structured", prompt="x", schema=schema)

                async with anyio.create_task_group() as tg:
                    tg.start_soon(hostile)
                    sent = await anyio.to_thread.run_sync(
                        fake.wait_for, lambda answered=answered: fake.answered > answered, 10)
                    assert sent, "the hostile reply was never sent"  # the server is reading it now
                    started = time.monotonic()
                    await client.read_resource("mcp-llm://presets")  # needs nothing but the event loop
                    waited = time.monotonic() - started
                assert waited < 1.0, f"an unrelated request waited {waited:.2f} s behind a hostile reply ({case})"
            await assert_next_call_ok(client, fake)


class PanicException(BaseException):
    """What pyo3 raises when Rust code panics (e.g. at the recursion limit): not an Exception."""


@pytest.mark.parametrize("fault", [PanicException("rpds panicked"), RecursionError("deep"), KeyError("bug")])
async def test_the_last_line_of_defence_turns_anything_into_a_tool_error(
    fault: BaseException, fake: FakeOllama, settings_file: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Fault injection into the call path (the gate now stops every known way to provoke one): the
    # server must answer with a clear tool error, log the traceback, and serve the next call.
    async def explode(provider: str, schema: dict[str, Any]) -> Any:
        raise fault

    with anyio.fail_after(TEST_TIMEOUT_S):
        async with Client(build_server(load_settings(settings_file, env={}))) as client:
            monkeypatch.setattr("mcp_llm.router.compile_for_off_loop", explode)
            message = await call_error(client, "generate_structured", prompt="x", schema=NUMBER)
            assert f"failed unexpectedly ({type(fault).__name__})" in message and "keeps serving" in message
            assert any(r.exc_info and r.exc_info[0] is type(fault) for r in caplog.records), "no traceback logged"
            monkeypatch.undo()
            await assert_next_call_ok(client, fake)


async def test_cancellation_is_not_swallowed_by_the_last_line_of_defence(fake: FakeOllama,
                                                                        settings_file: Path) -> None:
    fake.enqueue(GOOD_X, delay_s=30)
    with anyio.fail_after(TEST_TIMEOUT_S):
        async with Client(build_server(load_settings(settings_file, env={}))) as client:
            with anyio.move_on_after(0.5) as scope:
                await client.call_tool("generate_structured", {"prompt": "x", "schema": NUMBER})
            assert scope.cancelled_caught
            await assert_next_call_ok(client, fake)


# Patterns that backtrack without end in Python's `re` (issue 18): each against a 40-character reply.
BACKTRACKING = ["(a|a?)+$", "(?:a|a)+$", "(a|aa)+$", "^(([a-z])+.)+[A-Z]([a-z])+$", "(.*a){12}!", ".*" * 30 + "!",
                "^(a+)+$"]
HOSTILE_TEXT = "a" * 40 + "!"
DRAFT3 = "http://json-schema.org/draft-03/schema#"


def pattern_schemas(pattern: str) -> dict[str, dict[str, Any]]:
    """The same pattern wherever a pattern is read: a value, a key, a name, and draft 3's type and disallow."""
    return {
        "pattern": {"type": "object", "properties": {"x": {"type": "string", "pattern": pattern}}, "required": ["x"]},
        "patternProperties": {"type": "object", "patternProperties": {pattern: {"type": "integer"}}},
        "propertyNames": {"type": "object", "propertyNames": {"pattern": pattern}},
        "draft-03 type": {"$schema": DRAFT3, "type": "object",
                          "properties": {"x": {"type": [{"type": "string", "pattern": pattern}]}}},
        "draft-03 disallow": {"$schema": DRAFT3, "type": "object",
                              "properties": {"x": {"disallow": [{"type": "string", "pattern": pattern}]}}},
    }


def hostile_reply(where: str) -> str:
    return json.dumps({"x": HOSTILE_TEXT} if where in ("pattern", "draft-03 type", "draft-03 disallow")
                      else {HOSTILE_TEXT: "not an integer"})


async def test_over_stdio_no_pattern_or_reply_holds_the_server(fake: FakeOllama, settings_file: Path) -> None:
    """Each backtracking pattern, in each place a pattern is read, with a reply that used to freeze the
    server (Python's `re` held the GIL for ever): the call ends with data valid for the schema or
    re-asked, and an unrelated request made while the reply is checked answers at once."""
    with anyio.fail_after(TEST_TIMEOUT_S * 3):
        async with stdio_client(settings_file) as client:
            for pattern in BACKTRACKING:
                for where, schema in pattern_schemas(pattern).items():
                    fake.enqueue(hostile_reply(where), delay_s=0.2)
                    fake.enqueue(hostile_reply(where))  # the re-ask, if the first was judged invalid
                    fake.enqueue(hostile_reply(where))
                    answered = fake.answered
                    outcome: dict[str, Any] = {}

                    async def hostile(schema: dict[str, Any] = schema, outcome: dict[str, Any] = outcome) -> None:
                        result = await client.call_tool("generate_structured", {"prompt": "x", "schema": schema})
                        outcome.update(result.model_dump())

                    async with anyio.create_task_group() as tg:
                        tg.start_soon(hostile)
                        assert await anyio.to_thread.run_sync(
                            fake.wait_for, lambda answered=answered: fake.answered > answered, 10)
                        started = time.monotonic()
                        await client.read_resource("mcp-llm://presets")
                        waited = time.monotonic() - started
                    assert waited < 1.0, f"an unrelated request waited {waited:.2f} s ({where}: {pattern})"
                    assert outcome, f"the call never ended ({where}: {pattern})"
                    fake.reset()
            await assert_next_call_ok(client, fake)
