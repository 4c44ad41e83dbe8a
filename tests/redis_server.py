"""A real `redis-server` (the Debian package; `.ci/run` installs it) for the shared-state tests.

Each test gets its own: on a free loopback port, with its files in a temp dir and no persistence (no
RDB, no AOF), so a killed and restarted one comes back empty, as a fresh Redis would. Where no
`redis-server` can be found the tests skip, saying so.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port

REDIS_SERVER = shutil.which("redis-server") or next(
    (p for p in ("/usr/bin/redis-server", "/usr/sbin/redis-server") if Path(p).exists()), None)
SKIP_REASON = "redis-server is not installed (apt-get install redis-server; .ci/run installs it)"


class RedisServer:
    """`start()`, `kill()` (SIGKILL: its data is gone), `pause()` / `resume()` (SIGSTOP / SIGCONT: it is
    there but answers nothing, as a Redis stuck on a slow disk or a lost network would)."""

    def __init__(self, directory: Path, password: str | None = None) -> None:
        if REDIS_SERVER is None:
            print(f"\nskipped: {SKIP_REASON}")  # said in the output too, not only in the skip summary
            pytest.skip(SKIP_REASON)
        self.password = password
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10) -> RedisServer:
        assert REDIS_SERVER is not None
        self.process = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.directory), "--daemonize", "no", "--loglevel", "warning",
             "--logfile", str(self.directory / "redis.log"),
             *(("--requirepass", self.password) if self.password else ())],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
                raise AssertionError(f"redis-server exited at start: {log}")
            if self.ping():
                return self
            time.sleep(0.02)
        raise AssertionError("redis-server did not answer PING")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                if self.password:
                    sock.sendall(f"AUTH {self.password}\r\n".encode())
                    if not sock.recv(16).startswith(b"+OK"):
                        return False
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGCONT)
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh redis-server for the test (import this fixture by name), stopped after it."""
    server = RedisServer(tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.stop()
