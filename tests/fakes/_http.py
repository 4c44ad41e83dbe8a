"""What the fake provider servers share: the loopback server, its handler's plumbing, and the steering.

Each fake (`ollama_server`, `gemini_server`, `anthropic_server`) subclasses `FakeProvider`,
`FakeHandler` and `Reply`, and keeps to itself what is its provider's own: routes, bodies, error
shapes, streaming formats. What is here is what a fake needs to behave like a server on the wire
(keep-alive, hung and dropped connections, a client hanging up mid-reply) and what a test needs to
steer and inspect it (`enqueue`, `picker`, `requests`, `disconnects`, `errors`).

Only the stdlib: `ThreadingHTTPServer` in a daemon thread, one thread per connection.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, ClassVar, Generic, Self, TypeVar
from urllib.parse import parse_qsl, urlsplit

Content = str | dict[str, Any] | list[Any]
# Given an accepted request's JSON body: `enqueue()` keyword arguments for its reply, or None to pass.
Picker = Callable[[dict[str, Any]], Mapping[str, Any] | None]

POLL_S = 0.02  # how often a waiting handler looks at its socket and at `stop()`


@dataclass(frozen=True)
class Reply:
    """What one accepted request gets. A fake adds its own fields, and in `__post_init__` fills in
    what `enqueue()` leaves implied (e.g. the status an error name stands for), so that a reply built
    from a picker's keyword arguments is the same as one queued with them."""

    content: Content | None = None
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    delay_s: float = 0
    chunk_delay_s: float = 0
    raw_body: bytes | None = None
    drop_connection: bool = False
    hang: bool = False
    stream_error: str | None = None

    def __post_init__(self) -> None:
        self._set("headers", dict(self.headers or {}))  # a copy, so the caller's mapping can change

    def _set(self, name: str, value: Any) -> None:
        """Fill in a field of the frozen reply while it is being built."""
        object.__setattr__(self, name, value)


FakeT = TypeVar("FakeT", bound="FakeProvider[Any, Any]")
ReplyT = TypeVar("ReplyT", bound=Reply)
RequestT = TypeVar("RequestT")


class FakeHTTPServer(ThreadingHTTPServer, Generic[FakeT]):
    """Tracks its connections and worker threads so `stop()` can end hung and idle ones."""

    daemon_threads = True
    request_queue_size = 1024  # connections waiting to be accepted, as a real server allows (socketserver: 5)

    def __init__(self, fake: FakeT, handler: type[FakeHandler[FakeT]],
                 bind: tuple[str, int] = ("127.0.0.1", 0)) -> None:
        self.fake = fake
        self.open_sockets: set[socket.socket] = set()
        self.workers: set[threading.Thread] = set()
        self.guard = threading.Lock()
        super().__init__(bind, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        worker = threading.Thread(target=self.process_request_thread, args=(request, client_address), daemon=True)
        with self.guard:
            self.open_sockets.add(request)
            self.workers = {t for t in self.workers if t.is_alive()} | {worker}
        worker.start()

    def shutdown_request(self, request: Any) -> None:
        with self.guard:
            self.open_sockets.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Keep serving and keep stderr quiet; a test can still look at `fake.errors`."""
        exc = sys.exc_info()[1]
        if exc is not None and not isinstance(exc, ConnectionError | TimeoutError):
            self.fake.errors.append(exc)


class FakeHandler(BaseHTTPRequestHandler, Generic[FakeT]):
    """The plumbing of a fake's handler. A subclass adds `_dispatch` (and any `do_*` beyond GET, POST
    and DELETE), its routes, and `_error` in its provider's shape."""

    # Headers and body go out in separate writes; with Nagle on, each reply waits ~40 ms for a delayed ACK.
    disable_nagle_algorithm = True
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDKs' httpx clients expect
    server: FakeHTTPServer[FakeT]
    label: ClassVar[str] = "fake"  # names the fake in the 500 a bug in it answers with
    json_type: ClassVar[str] = "application/json"  # the Content-Type of a JSON reply, as the provider writes it
    stock_headers: ClassVar[Mapping[str, str]] = {}  # sent after Content-Type on every reply

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the per-request stderr log."""

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        raise NotImplementedError

    # --- reading the request ---

    def _target(self) -> tuple[str, dict[str, str], dict[str, str]]:
        """The request's path, its query, and its headers with lower-cased names."""
        split = urlsplit(self.path)
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        return split.path, query, {k.lower(): v for k, v in self.headers.items()}

    def _read_json(self, length: int | None = None) -> tuple[bytes, Any]:
        """The body and its JSON; None for an empty or malformed body, which each fake refuses its own way."""
        if length is None:
            length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        return raw, body

    def _serve(self, route: Callable[[], None]) -> None:
        """Run a route so that a client hanging up counts as a disconnect, and a bug in a responder or in
        the fake is answered with a 500 and kept in `fake.errors` while the server goes on serving."""
        try:
            route()
        except (BrokenPipeError, ConnectionResetError):
            self._client_gone()
        except Exception as exc:
            if self._refused(exc):
                return
            self.server.fake.errors.append(exc)
            self.close_connection = True
            with contextlib.suppress(OSError):
                self._error(500, f"{self.label}: {exc!r}")

    def _refused(self, exc: Exception) -> bool:
        """Answer `exc` if it stands for a request the provider refuses (a fake may raise one); else False."""
        return False

    # --- answering ---

    def _start(self, status: int, content_type: str, headers: Mapping[str, str] | None = None) -> None:
        """The status line and headers; the caller adds the length or chunking and ends them."""
        self.send_response_only(status)
        self.send_header("Date", self.date_time_string())
        self.send_header("Content-Type", content_type)
        for key, value in [*self.stock_headers.items(), *(headers or {}).items()]:
            self.send_header(key, value)

    def _send(
        self, status: int, body: bytes, content_type: str | None = None, headers: Mapping[str, str] | None = None
    ) -> None:
        self._start(status, self.json_type if content_type is None else content_type, headers)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.server.fake._note_answered()

    def _json(self, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), headers=headers)

    def _error(self, status: int, message: str) -> None:
        """Answer with the provider's error body."""
        raise NotImplementedError

    def _start_stream(self, content_type: str, headers: Mapping[str, str] | None = None) -> None:
        """A 200 whose body follows in `_chunk`s, ended by `_end_stream`."""
        self._start(200, content_type, headers)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):X}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.server.fake._note_answered()

    def _begin(self, reply: Reply) -> bool:
        """Carry out a reply's delay, hang or dropped connection; False when nothing more is to be sent."""
        if reply.delay_s and not self._wait(reply.delay_s):
            return False
        if reply.hang:
            self._wait(None)
            return False
        if reply.drop_connection:
            self._drop()
            return False
        return True

    def _drop(self) -> None:
        """Close the socket without answering, or without answering further."""
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)

    # --- waiting, and noticing the client leave ---

    def _client_gone(self) -> None:
        self.close_connection = True
        self.server.fake._note_disconnect()

    def _wait(self, seconds: float | None) -> bool:
        """Sleep (forever if None), watching the socket: False if the client left or the server stops."""
        deadline = None if seconds is None else time.monotonic() + seconds
        while True:
            if self.server.fake._stopping.is_set():
                self.close_connection = True
                return False
            step = POLL_S if deadline is None else min(POLL_S, deadline - time.monotonic())
            if step <= 0:
                return True
            readable, _, _ = select.select([self.connection], [], [], step)
            if readable:
                try:
                    gone = self.connection.recv(1, socket.MSG_PEEK) == b""
                except OSError:
                    gone = True
                if gone:
                    self._client_gone()
                    return False
                time.sleep(step)  # a pipelined request, not a hang-up


class FakeProvider(Generic[ReplyT, RequestT]):
    """A fake's life cycle, steering and record: `with Fake() as fake:` serves on `fake.url`.

    Each request a real server would accept gets, in this order: what `picker` picks for it (if it
    is set and does not return None), the next reply queued with `enqueue()`, or the default reply,
    which asks the fake's `responder`. `picker` runs in the connection's thread, so several at once.
    `keep_requests` False keeps no request log (a long load run would hold every request body).
    `bind` is the address and port it listens on (loopback and a free port unless given: a host in a
    network namespace of its own listens on that namespace's address, see tests/hostnet.py).
    """

    def __init__(self, handler: type[FakeHandler[Any]], reply_type: type[ReplyT],
                 bind: tuple[str, int] = ("127.0.0.1", 0)) -> None:
        self.bind = bind
        self.errors: list[BaseException] = []
        self.disconnected = threading.Event()
        self.picker: Picker | None = None
        self.keep_requests = True
        self._handler = handler
        self._reply_type = reply_type
        self._disconnects = 0
        self._answered = 0
        self._requests: list[RequestT] = []
        self._queue: deque[ReplyT] = deque()
        self._lock = threading.Lock()
        self._arrived = threading.Condition()  # notified on every request and answer: `wait_for` waits on it
        self._stopping = threading.Event()
        self._server: FakeHTTPServer[Any] | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ---

    def start(self) -> Self:
        if self._server is not None:
            raise RuntimeError(f"{type(self).__name__} is already running")
        self._stopping.clear()
        self._server = FakeHTTPServer(self, self._handler, self.bind)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, end hung and idle connections, and wait for the worker threads."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        with server.guard:
            sockets, workers = list(server.open_sockets), list(server.workers)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for worker in workers:
            worker.join(timeout=2)
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The base URL to give the SDK."""
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    # --- steering ---

    @property
    def queued(self) -> int:
        """Replies not yet consumed, to check a test used all it queued."""
        with self._lock:
            return len(self._queue)

    def reset(self) -> None:
        """Forget requests, queue, picker, disconnects and errors."""
        with self._lock:
            self._requests.clear()
            self._queue.clear()
            self._disconnects = 0
            self._answered = 0
        self.disconnected.clear()
        self.errors.clear()
        self.picker = None

    # --- what happened ---

    @property
    def requests(self) -> list[RequestT]:
        with self._lock:
            return list(self._requests)

    @property
    def disconnects(self) -> int:
        """How many times a client hung up while the fake was still working on its request."""
        with self._lock:
            return self._disconnects

    @property
    def answered(self) -> int:
        """How many requests the fake has answered to the end (the last byte written), since the last reset."""
        with self._lock:
            return self._answered

    def wait_for_disconnect(self, timeout: float = 2) -> bool:
        return self.disconnected.wait(timeout)

    def wait_for(self, condition: Callable[[], object], timeout: float = 5) -> bool:
        """Block until `condition()` is true, checked as each request arrives or is answered; False after `timeout` s.

        E.g. `fake.wait_for(lambda: fake.chat_requests)`; from async code, through
        `anyio.to_thread.run_sync`, so the event loop (and a server in it) keeps running.
        """
        with self._arrived:
            return bool(self._arrived.wait_for(condition, timeout))

    # --- the handler's per-request steps ---

    def _record(self, request: RequestT) -> None:
        if self.keep_requests:
            with self._lock:
                self._requests.append(request)
        with self._arrived:
            self._arrived.notify_all()

    def _push(self, reply: ReplyT) -> None:
        with self._lock:
            self._queue.append(reply)

    def _reply_for(self, body: dict[str, Any]) -> ReplyT:
        """The reply to an accepted request: the picker's, else the next queued, else the default."""
        options = self.picker(body) if self.picker is not None else None
        return self._reply_type(**options) if options is not None else self._next_reply()

    def _next_reply(self) -> ReplyT:
        with self._lock:
            return self._queue.popleft() if self._queue else self._reply_type()

    def _note_answered(self) -> None:
        with self._lock:
            self._answered += 1
        with self._arrived:
            self._arrived.notify_all()

    def _note_disconnect(self) -> None:
        with self._lock:
            self._disconnects += 1
        self.disconnected.set()
