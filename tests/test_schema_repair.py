"""What the model is told (mcp_llm/schema/repair.py): the schema instruction, in the caller's own characters."""

from __future__ import annotations

import pytest

from tests.conftest import call
from tests.fleet import OLLAMA, Fakes, Serve

pytestmark = pytest.mark.anyio


async def test_the_schema_instruction_keeps_the_callers_own_characters(serve: Serve, fakes: Fakes) -> None:
    schema = {"type": "object", "properties": {"ville": {"type": "string", "description": "Une ville française"}}}
    fakes.ollama.enqueue({"ville": "Lyon"})
    async with serve() as client:
        await call(client, "generate_structured", prompt="Une ville.", schema=schema, model=OLLAMA.model)
    (system,) = [m for m in fakes.ollama.chat_requests[-1].json["messages"] if m["role"] == "system"]
    assert "Une ville française" in system["content"], "the schema the model reads was escaped to \\u00e7"
