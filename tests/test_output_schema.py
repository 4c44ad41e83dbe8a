"""The per-call tools publish their output schemas with the definitions in place (no `$ref`), and
the schema still describes exactly the results the tools return."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest
from jsonschema import Draft202012Validator
from mcp import Client

from mcp_llm.output_schema import inline_refs, type_lists
from mcp_llm.tools import StructuredResult

pytestmark = pytest.mark.anyio

SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}


async def test_results_validate_against_the_ref_free_output_schema(client: Client) -> None:
    with anyio.fail_after(20):
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        result = await client.call_tool("generate_structured", {"prompt": "Name someone.", "schema": SCHEMA})
    for name in ("generate_structured", "analyze_image"):
        published = tools[name].output_schema
        assert published is not None and "$ref" not in json.dumps(published) and "$defs" not in published
        assert '"anyOf"' not in json.dumps(published), name  # `X | None` is a type list (type_lists)
    assert not result.is_error
    validator = Draft202012Validator(tools["generate_structured"].output_schema)
    assert list(validator.iter_errors(result.structured_content)) == []
    broken = {**result.structured_content, "attempts": [{"model": "m", "provider": "p", "outcome": "bogus",
                                                          "latency_ms": 1.0}]}
    assert list(validator.iter_errors(broken)), "an attempt with an unknown outcome must still be refused"


def test_inlining_keeps_what_the_schema_accepts_and_refuses() -> None:
    original = StructuredResult.model_json_schema()
    inlined = inline_refs(original)
    assert "$ref" not in json.dumps(inlined)
    good = {"data": 1, "model": "m", "provider": "p", "latency_ms": 1.0, "usage": {"input_tokens": 1},
            "attempts": [{"model": "m", "provider": "p", "outcome": "ok", "latency_ms": 1.0}],
            "images": [{"provider": "p", "original": {"width": 1, "height": 1, "bytes": 1, "mime_type": "image/png"},
                        "sent": {"width": 1, "height": 1, "bytes": 1, "mime_type": "image/png"}}]}
    bad: list[dict[str, Any]] = [
        {**good, "usage": {"input_tokens": "many"}},
        {**good, "attempts": [{"model": "m"}]},
        {**good, "images": [{**good["images"][0], "sent": {"width": "wide"}}]},
    ]
    for instance in [good, *bad]:
        assert (Draft202012Validator(original).is_valid(instance)
                == Draft202012Validator(inlined).is_valid(instance)), instance
    assert Draft202012Validator(inlined).is_valid(good)


def test_type_lists_accept_and_refuse_what_the_branches_did() -> None:
    original = inline_refs(StructuredResult.model_json_schema())
    listed = type_lists(original)
    assert listed["properties"]["cost_usd"]["type"] == ["number", "null"]
    assert listed["properties"]["cost_usd"]["description"] == original["properties"]["cost_usd"]["description"]
    attempt = {"model": "m", "provider": "p", "outcome": "ok", "latency_ms": 1.0}
    base = {"data": None, "model": "m", "provider": "p", "latency_ms": 1.0, "usage": {}, "attempts": [attempt]}
    instances: list[dict[str, Any]] = [
        base, {**base, "cost_usd": None}, {**base, "cost_usd": 0.5}, {**base, "cost_usd": "free"},
        {**base, "attempts": [{**attempt, "error": None, "host": "http://h"}]},
        {**base, "attempts": [{**attempt, "error": 3}]}, {**base, "attempts": [{**attempt, "host": False}]},
    ]
    verdicts = [Draft202012Validator(listed).is_valid(instance) for instance in instances]
    assert verdicts == [Draft202012Validator(original).is_valid(instance) for instance in instances]
    assert verdicts == [True, True, True, False, True, False, False]
    mixed = {"anyOf": [{"type": "string"}, {"type": "object", "properties": {"a": {"type": "integer"}}}]}
    assert type_lists(mixed) == mixed  # a branch with more than a type stays a branch


def test_a_recursive_or_foreign_reference_leaves_the_schema_as_it_was() -> None:
    recursive = {"$defs": {"node": {"type": "object", "properties": {"child": {"$ref": "#/$defs/node"}}}},
                 "$ref": "#/$defs/node"}
    foreign = {"$defs": {}, "properties": {"x": {"$ref": "https://example.com/schema"}}}
    assert inline_refs(recursive) is recursive
    assert inline_refs(foreign) is foreign


async def test_each_result_is_sent_once_as_its_model_says_and_its_text_is_the_same_json(client: Client) -> None:
    """The tools send their results as built (one dump, not checked again by the SDK): every one still
    validates against the schema the tool publishes, and the text block is that same JSON, compact."""
    with anyio.fail_after(20):
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        results = {
            "generate_structured": await client.call_tool("generate_structured",
                                                          {"prompt": "Name someone.", "schema": SCHEMA}),
            "list_models": await client.call_tool("list_models", {}),
            "provider_health": await client.call_tool("provider_health", {}),
        }
    for name, result in results.items():
        assert not result.is_error, (name, result.content)
        published = tools[name].output_schema
        assert published is not None
        assert list(Draft202012Validator(published).iter_errors(result.structured_content)) == [], name
        (text,) = result.content
        assert text.type == "text" and json.loads(text.text) == result.structured_content, name
        assert "\n" not in text.text, name


def test_the_sdk_keeps_each_schema_published_but_checks_no_result_again() -> None:
    from mcp_llm.config import Settings
    from mcp_llm.server import build_server

    server = build_server(Settings())
    for name in ("generate_structured", "analyze_image", "list_models", "provider_health"):
        metadata = server._tool_manager.get_tool(name).fn_metadata
        assert isinstance(metadata.output_schema, dict) and metadata.output_model is None, name
