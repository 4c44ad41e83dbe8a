"""A minimal, fast Ollama `/api/chat` (and OpenAI `/v1/chat/completions`) on loopback, for the concurrency
and memory benchmarks.

    python bench/_fast_ollama.py ollama [--delay-s 0.2]

prints its base URL, then serves until its stdin closes. One asyncio loop, no threads, HTTP/1.1
keep-alive, and a canned schema-valid answer: at 1,024 calls in flight the test fake
(tests/fakes/, a thread per connection polling every 20 ms) is itself the bottleneck on two
cores, and this one is not, so what is measured is the client side. It speaks only what the
benchmarks need: `POST /api/chat` (streamed NDJSON or not), `POST /api/show`, `GET /api/tags`,
`GET /api/version`, and OpenAI's `POST /v1/chat/completions` (SSE or not) and `GET /v1/models`
(`bench/concurrency.py --provider openai`); each chat request waits `--delay-s` (or a `[delay_ms=N]`
tag in the prompt) before it is answered, as a model would.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys

ANSWER = json.dumps({"title": "fake", "year": 1900, "genres": ["fake"]})
MODEL = "llama3.2:3b"
OPENAI_MODEL = "gpt-4.1-mini"
_DELAY = re.compile(rb"\[delay_ms=(\d+)\]")


def _response(status: str, body: bytes, content_type: bytes = b"application/json; charset=utf-8") -> bytes:
    return (b"HTTP/1.1 " + status.encode() + b"\r\nContent-Type: " + content_type
            + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def _chunk(data: bytes) -> bytes:
    return f"{len(data):X}\r\n".encode() + data + b"\r\n"


def _final(content: str) -> dict[str, object]:
    return {"model": MODEL, "created_at": "2026-01-01T00:00:00.000000000Z",
            "message": {"role": "assistant", "content": content}, "done_reason": "stop", "done": True,
            "total_duration": 1_000_000, "load_duration": 1, "prompt_eval_count": 8, "prompt_eval_duration": 1,
            "eval_count": 12, "eval_duration": 1}


async def _wait(body: bytes, delay_s: float) -> None:
    found = _DELAY.search(body)
    wait = int(found.group(1)) / 1000 if found else delay_s
    if wait > 0:
        await asyncio.sleep(wait)


async def _chat(body: bytes, delay_s: float) -> bytes:
    request = json.loads(body)
    await _wait(body, delay_s)
    if request.get("stream", True) is False:
        return _response("200 OK", json.dumps(_final(ANSWER)).encode())
    lines = [{"model": MODEL, "created_at": "2026-01-01T00:00:00.000000000Z",
              "message": {"role": "assistant", "content": ANSWER}, "done": False}, _final("")]
    payload = b"".join(_chunk(json.dumps(line).encode() + b"\n") for line in lines) + b"0\r\n\r\n"
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n"
            + payload)


async def _chat_completion(body: bytes, delay_s: float) -> bytes:
    """OpenAI's answer: one `chat.completion`, or SSE chunks (content, finish, usage) and `[DONE]`."""
    request = json.loads(body)
    await _wait(body, delay_s)
    base = {"id": "chatcmpl-fast", "created": 1_767_225_600, "model": request.get("model", OPENAI_MODEL)}
    usage = {"prompt_tokens": 8, "completion_tokens": 12, "total_tokens": 20}
    if not request.get("stream"):
        choice = {"index": 0, "message": {"role": "assistant", "content": ANSWER, "refusal": None},
                  "finish_reason": "stop", "logprobs": None}
        return _response("200 OK", json.dumps({**base, "object": "chat.completion", "choices": [choice],
                                               "usage": usage}).encode())
    chunk = {**base, "object": "chat.completion.chunk"}
    events = [{**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ANSWER},
                                     "finish_reason": None}]},
              {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
              {**chunk, "choices": [], "usage": usage}]
    payload = b"".join(_chunk(b"data: " + json.dumps(event).encode() + b"\n\n") for event in events)
    payload += _chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n"
    return (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
            + payload)


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay_s: float) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, *header_lines = head.decode("latin-1").split("\r\n")
            method, path, _ = request_line.split(" ", 2)
            length = 0
            for line in header_lines:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            body = await reader.readexactly(length) if length else b""
            if method == "POST" and path == "/api/chat":
                writer.write(await _chat(body, delay_s))
            elif method == "POST" and path == "/api/show":
                writer.write(_response("200 OK", json.dumps({"capabilities": ["completion"],
                                                             "details": {"family": "llama"}}).encode()))
            elif method == "POST" and path == "/v1/chat/completions":
                writer.write(await _chat_completion(body, delay_s))
            elif path == "/v1/models":
                listing = {"object": "list", "data": [{"id": OPENAI_MODEL, "object": "model", "created": 0,
                                                        "owned_by": "bench"}]}
                writer.write(_response("200 OK", json.dumps(listing).encode()))
            elif path == "/api/tags":
                writer.write(_response("200 OK", json.dumps({"models": [{"name": MODEL, "model": MODEL}]}).encode()))
            elif path == "/api/version":
                writer.write(_response("200 OK", b'{"version": "0.12.3"}'))
            else:
                writer.write(_response("404 Not Found", b'{"error": "404 page not found"}'))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def serve(delay_s: float) -> None:
    server = await asyncio.start_server(lambda r, w: _handle(r, w, delay_s), "127.0.0.1", 0, backlog=4096)
    host, port = server.sockets[0].getsockname()[:2]
    print(f"http://{host}:{port}", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # until the benchmark closes the pipe
    sys.stdout.flush()
    os._exit(0)  # at once: the connections' handlers need no orderly end


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("provider", choices=("ollama",))
    parser.add_argument("--delay-s", type=float, default=0.0)
    args = parser.parse_args()
    asyncio.run(serve(args.delay_s))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
