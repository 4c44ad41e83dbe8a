"""stdio for the MCP SDK's `stdio_server` without a worker thread per line.

mcp 2.3's `stdio_server` wraps stdin and stdout in `anyio.wrap_file`: every line read, every line
written and every flush is a hop to a worker thread and back (three per request and its answer),
about 0.1 ms each on a loaded 2-core machine and a sixth of a bare tool call's instructions. When
fd 0 and fd 1 are pipes or sockets (what an MCP client gives the server it starts), this module
reads and writes them from the event loop instead: the descriptors are claimed as the SDK claims
them (`mcp.server.stdio._claim_fd`: fd 0 then reads the null device and fd 1 goes to stderr, so
stray output never reaches the wire), set non-blocking, and waited on with `anyio.wait_readable` /
`wait_writable`. Lines and their decoding are the SDK's (UTF-8, undecodable bytes replaced).

A terminal, a file or another platform keeps the SDK's own threaded files (`None`): a terminal's
descriptor is shared with the shell, which must never be left non-blocking, and a regular file
cannot be waited on.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
from collections.abc import AsyncIterator
from typing import Any

import anyio

READ_CHUNK = 1 << 20  # a large request (a base64 image) arrives in a few reads
_WAITABLE = (stat.S_ISFIFO, stat.S_ISSOCK)


class PipeLines:
    """The async line iterator `stdio_server` reads requests from (its `stdin`)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buffer = bytearray()
        self._scanned = 0  # the buffer holds no newline before this offset: a long line is scanned once
        self._eof = False

    def __aiter__(self) -> PipeLines:
        return self

    async def __anext__(self) -> str:
        while True:
            end = self._buffer.find(b"\n", self._scanned)
            if end >= 0:
                line = bytes(self._buffer[: end + 1])
                del self._buffer[: end + 1]
                self._scanned = 0
                return line.decode("utf-8", errors="replace")
            self._scanned = len(self._buffer)
            if self._eof:
                if not self._buffer:
                    raise StopAsyncIteration
                line = bytes(self._buffer)
                self._buffer.clear()
                return line.decode("utf-8", errors="replace")
            await anyio.wait_readable(self._fd)
            try:
                chunk = os.read(self._fd, READ_CHUNK)
            except BlockingIOError:
                continue
            if chunk:
                self._buffer += chunk
            else:
                self._eof = True


class PipeWriter:
    """The file `stdio_server` writes answers to (its `stdout`): each write goes out whole, at once."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    async def write(self, text: str) -> None:
        data = memoryview(text.encode("utf-8"))
        while data:
            try:
                data = data[os.write(self._fd, data):]
            except BlockingIOError:
                await anyio.wait_writable(self._fd)

    async def flush(self) -> None:
        """Nothing is buffered here."""


def _waitable(fd: int) -> bool:
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return False
    return any(check(mode) for check in _WAITABLE)


@contextlib.asynccontextmanager
async def pipe_stdio() -> AsyncIterator[tuple[Any, Any] | None]:
    """(stdin, stdout) for `stdio_server(stdin, stdout)` over the claimed pipes, or None for the SDK's own."""
    claim = _claimer()
    if claim is None or not (_waitable(0) and _waitable(1)):
        yield None
        return
    claim_fd, stdin_diversion, stdout_diversion = claim
    stdin, release_stdin = claim_fd(0, sys.stdin, "rb", stdin_diversion)
    try:
        stdout, release_stdout = claim_fd(1, sys.stdout, "wb", stdout_diversion)
    except BaseException:
        if release_stdin is not None:
            release_stdin()
        raise
    fds = (stdin.fileno(), stdout.fileno())
    blocking = [os.get_blocking(fd) for fd in fds]
    try:
        for fd in fds:
            os.set_blocking(fd, False)
        yield PipeLines(fds[0]), PipeWriter(fds[1])
    finally:
        for fd, was in zip(fds, blocking, strict=True):
            with contextlib.suppress(OSError):
                os.set_blocking(fd, was)
        for release in (release_stdout, release_stdin):
            if release is not None:
                release()


def _claimer() -> tuple[Any, Any, Any] | None:
    """The SDK's claim of fd 0/1 and its diversions, or None (Windows, or an SDK without them)."""
    if sys.platform == "win32":
        return None
    from mcp.server import stdio

    parts = (getattr(stdio, "_claim_fd", None), getattr(stdio, "_open_stdin_diversion", None),
             getattr(stdio, "_open_stdout_diversion", None))
    return parts if all(callable(part) for part in parts) else None
