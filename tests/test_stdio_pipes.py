"""stdio over pipes from the event loop (mcp_llm/stdio_pipes.py): lines as the SDK reads them, answers
written whole, and the SDK's own threaded files whenever stdin or stdout is not a pipe."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from mcp_llm.stdio_pipes import PipeLines, PipeWriter
from tests.fakes.ollama_server import FakeOllama
from tests.stdio_harness import REPO_ROOT, server_args, subprocess_env, write_config

pytestmark = pytest.mark.anyio

INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}


async def test_lines_split_across_reads_joined_and_undecodable_bytes_replaced() -> None:
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    lines = PipeLines(read_fd)
    big = "x" * 3_000_000  # over the read size: arrives in several reads, scanned once
    received: list[str] = []

    async def feed() -> None:
        for piece in (b'{"a": 1}\n{"b":', b' 2}\n', big.encode() + b"\n", b"caf\xc3\xa9 \xff\n", b"last, no newline"):
            await anyio.to_thread.run_sync(_write_all, write_fd, piece)
        os.close(write_fd)

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(feed)
            async for line in lines:
                received.append(line)
    os.close(read_fd)
    assert received[:2] == ['{"a": 1}\n', '{"b": 2}\n']
    assert received[2] == big + "\n"
    assert received[3] == "café \ufffd\n"  # as the SDK's own reader decodes (errors="replace")
    assert received[4:] == ["last, no newline"]


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


async def test_an_answer_larger_than_the_pipe_goes_out_whole_while_the_reader_is_slow() -> None:
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    answer = json.dumps({"data": "y" * 1_000_000}) + "\n"  # far over a pipe's 64 KiB: the writer must wait

    chunks: list[bytes] = []

    async def slow_reader() -> None:
        while chunk := await anyio.to_thread.run_sync(os.read, read_fd, 65536):
            chunks.append(chunk)

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(slow_reader)
            writer = PipeWriter(write_fd)
            await writer.write(answer)
            await writer.flush()
            os.close(write_fd)
    os.close(read_fd)
    assert b"".join(chunks).decode() == answer


def test_a_file_as_stdin_is_read_by_the_sdks_own_files(tmp_path: Path) -> None:
    """Not a pipe: a regular file cannot be waited on, so the SDK's threaded reader serves it."""
    with FakeOllama() as fake:
        config = write_config(fake, tmp_path)
        requests = tmp_path / "requests.jsonl"
        # One request: at the file's end the SDK ends the session, and may drop a request still in flight.
        requests.write_text(json.dumps(INITIALIZE) + "\n")
        with requests.open("rb") as stdin:
            done = subprocess.run([sys.executable, *server_args(config)], stdin=stdin, capture_output=True,
                                  env=subprocess_env(), cwd=REPO_ROOT, timeout=60, check=False)
    answers = [json.loads(line) for line in done.stdout.decode().splitlines()]
    assert [answer["id"] for answer in answers] == [1], done.stderr.decode()[-2000:]
    assert answers[0]["result"]["serverInfo"]["name"] == "mcp-llm" and done.returncode == 0


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads through /proc (Linux)")
def test_over_pipes_the_server_reads_and_answers_without_a_worker_thread(tmp_path: Path) -> None:
    """The SDK's files hop to a worker thread for every line read and written; over the pipes an MCP
    client gives its server, no worker thread is ever started to serve the lines."""
    with FakeOllama() as fake:
        config = write_config(fake, tmp_path)
        with subprocess.Popen([sys.executable, *server_args(config)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, env=subprocess_env(), cwd=REPO_ROOT) as proc:
            assert proc.stdin is not None and proc.stdout is not None
            try:
                for request in (INITIALIZE, {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}},
                                {"jsonrpc": "2.0", "id": 3, "method": "resources/read",
                                 "params": {"uri": "mcp-llm://presets"}}):
                    proc.stdin.write((json.dumps(request) + "\n").encode())
                    proc.stdin.flush()
                    assert json.loads(proc.stdout.readline())["id"] == request["id"]
                threads = len(os.listdir(f"/proc/{proc.pid}/task"))
            finally:
                proc.kill()
                proc.wait(timeout=10)
    assert threads == 1, f"{threads} threads: a line was read or written through a worker thread"
