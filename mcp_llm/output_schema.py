"""Tool output schemas: published without `$ref` or nullable `anyOf`, and our results sent as they are,
checked once.

The MCP client validates each result's `structuredContent` against the tool's `outputSchema`
(mcp's `ClientSession.validate_tool_result`, with jsonschema). Pydantic publishes nested models
as `$defs` + `$ref`, and jsonschema resolves each `$ref` through `referencing` on every
validation: for `generate_structured`'s result that was 370 µs per call in the client, against
200 µs for the same schema with the definitions written in place (bench/per_call.py measures the
round trip). The fields, types and descriptions are unchanged; only where they are written moves.

On the server's side, mcp 2.3 would, for every result a tool returns (FuncMetadata.convert_result):
serialize it to indented JSON for the text block, validate it again against the output model, and
dump it to a dict for `structuredContent`; a returned `CallToolResult` it validates against the
output model from its dict, which costs more still. Our results are pydantic models built by our own
code, valid by construction: `prevalidated` turns one into the `CallToolResult` the SDK would have
built (one dump, one JSON text from that dict), and `publish_prevalidated` keeps each tool's schema
published while clearing the output model the SDK validates against ("a schema published without a
model is advertised but not validated here", its own comment).
"""

from __future__ import annotations

import logging
from typing import Any

import pydantic_core
from mcp_types import CallToolResult, TextContent
from pydantic import BaseModel

log = logging.getLogger("mcp_llm")

_PREFIX = "#/$defs/"


class _Cycle(Exception):
    """A definition refers to itself: it cannot be written in place."""


def inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` with every local `#/$defs/…` reference replaced by its definition; `schema` itself
    (unchanged) when it holds a recursive definition or a reference it cannot resolve."""
    defs = schema.get("$defs")
    if not isinstance(defs, dict):
        return schema
    try:
        inlined = _inline({k: v for k, v in schema.items() if k != "$defs"}, defs, ())
    except _Cycle:
        return schema
    return inlined


def _inline(node: Any, defs: dict[str, Any], stack: tuple[str, ...]) -> Any:
    if isinstance(node, list):
        return [_inline(item, defs, stack) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str):
        name = ref.removeprefix(_PREFIX)
        if not ref.startswith(_PREFIX) or name in stack or name not in defs:
            raise _Cycle(ref)
        siblings = {k: v for k, v in node.items() if k != "$ref"}  # e.g. a description of the field
        return _inline({**defs[name], **siblings}, defs, (*stack, name))
    return {key: _inline(value, defs, stack) for key, value in node.items()}


def type_lists(node: Any) -> Any:
    """`node` with each `anyOf` of bare types (pydantic's `X | None`: `anyOf: [{type: string},
    {type: null}]`) written as the one type list it means (`type: [string, null]`): jsonschema checks a
    list of types in one step, and an `anyOf` as a validation per branch (the client's check of a
    `generate_structured` result: 175 µs with the branches, 124 µs with the lists)."""
    if isinstance(node, list):
        return [type_lists(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: type_lists(value) for key, value in node.items()}
    branches = node.get("anyOf")
    if (isinstance(branches, list) and branches and "type" not in node
            and all(isinstance(b, dict) and b.keys() == {"type"} and isinstance(b["type"], str) for b in branches)):
        types = list(dict.fromkeys(branch["type"] for branch in branches))
        node = {key: value for key, value in node.items() if key != "anyOf"} | {"type": types}
    return node


def publish_inlined(server: Any, *tool_names: str) -> None:
    """Publish these tools' output schemas with their definitions in place (see the module's doc).

    mcp 2.3 reads `Tool.fn_metadata.output_schema` live, for `tools/list` and for checking results
    (mcp/server/mcpserver/utilities/func_metadata.py, FuncMetadata); there is no public setter, so
    this goes through the tool manager. If the SDK's shape changes, the schemas stay as they were.
    """
    manager = getattr(server, "_tool_manager", None)
    for name in tool_names:
        tool = manager.get_tool(name) if manager is not None else None
        metadata = getattr(tool, "fn_metadata", None)
        schema = getattr(metadata, "output_schema", None)
        if metadata is None or not isinstance(schema, dict):
            log.debug("output schema of %s left as published: the SDK's tool has no fn_metadata", name)
            continue
        metadata.output_schema = type_lists(inline_refs(schema))


def prevalidated(result: BaseModel) -> Any:
    """`result` as the `CallToolResult` the SDK would send for it: `structuredContent` dumped once (by
    alias, as the SDK does), the text block the same JSON. Typed `Any`: the tool's annotation names the
    model, which is what publishes its output schema."""
    structured = result.model_dump(mode="json", by_alias=True)
    text = pydantic_core.to_json(structured).decode()
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=structured)


def publish_prevalidated(server: Any, *tool_names: str) -> None:
    """Keep these tools' output schemas published but not checked again by the SDK (see the module's
    doc): their bodies return `prevalidated` results. FuncMetadata reads `output_model` live, and says
    reassigning it takes effect on the next call; if the SDK's shape changes, it validates as before."""
    manager = getattr(server, "_tool_manager", None)
    for name in tool_names:
        metadata = getattr(manager.get_tool(name) if manager is not None else None, "fn_metadata", None)
        if metadata is None or not isinstance(getattr(metadata, "output_schema", None), dict):
            log.debug("output of %s left to the SDK's checks: its tool has no fn_metadata", name)
            continue
        metadata.output_model = None
