"""An in-process MCP transport that sends each client message as JSON text, as stdio and HTTP do.

The SDK's in-memory transport hands message objects across, and its client serializes infinity and
NaN as `null`, so a test cannot send what a client writing its own JSON can: `1e309` (valid JSON,
read as infinity) or a bare `NaN` (which the SDK's JSON parser, pydantic's, accepts). `JSONWire`
writes each outgoing message as the JSON line a client would send, applies the test's text
substitutions (e.g. `'"1e309"' → '1e309'`), and reads it back with the SDK's own parser
(`jsonrpc_message_adapter.validate_json`, what `mcp.server.stdio` runs on every line), so the
server gets exactly what it would get over the wire.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self

import mcp_types
from mcp.client._memory import InMemoryTransport
from mcp.shared.message import SessionMessage


class _RewritingWriter:
    def __init__(self, inner: Any, substitutions: dict[str, str]) -> None:
        self._inner = inner
        self._substitutions = substitutions

    async def send(self, item: SessionMessage, /) -> None:
        line = item.message.model_dump_json(by_alias=True, exclude_unset=True)
        for old, new in self._substitutions.items():
            line = line.replace(old, new)
        message = mcp_types.jsonrpc_message_adapter.validate_json(line, by_name=False)
        await self._inner.send(SessionMessage(message, metadata=item.metadata))

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()


class JSONWire:
    """`Client(JSONWire(server, {'"1e309"': "1e309"}))`: the server in-process, messages as JSON text."""

    def __init__(self, server: Any, substitutions: dict[str, str] | None = None) -> None:
        self._transport = InMemoryTransport(server)
        self._substitutions = substitutions or {}

    async def __aenter__(self) -> tuple[Any, Any]:
        read, write = await self._transport.__aenter__()
        return read, _RewritingWriter(write, self._substitutions)

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self._transport.__aexit__(exc_type, exc, tb)
