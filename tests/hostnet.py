"""A small network of model hosts for the fleet tests: each host a fake server in a network namespace of its
own, and the MCP server in another, joined by veth links (iproute2), as GPU boxes on a LAN are.

    client namespace (mcp-llm serve, over stdio) ── veth ── gpu-a namespace (a fake Ollama on 10.77.1.2:11434)
                                                 ── veth ── gpu-b namespace (… 10.77.2.2:11434)  …

The client namespace resolves `gpu-a`, `gpu-b`… through its own /etc/hosts (`ip netns exec` mounts
/etc/netns/<name>/hosts over it) and has no route but its links: a host whose link is down is
unreachable there, never answered by something else on the machine. Killing a host is killing its
process (`Host.kill`: connections reset, nothing listening), or dropping its link (`Host.link(False)`,
the host's end: the client's packets go nowhere, and connections time out, as when a box drops off
the network). Everything is named after this process's pid and removed on exit, so concurrent runs
do not meet.

A host is `python -m tests.hostnet ollama|openai --bind ADDR --port N --models a,b --loaded a` in its
namespace: it prints `ready` once it listens, and answers one JSON line per line on its stdin
(`{"counts": true}`: the chat requests it got, per model; `{"loads": true}`: the model loads its chats
caused, per model (Ollama only); `{"load": name}`, `{"unload": name}`).
Needs root and iproute2 (`needs_hostnet` skips with the reason otherwise).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
IP = shutil.which("ip") or "/usr/sbin/ip"


def unavailable() -> str | None:
    """Why the network cannot be made here, or None when it can."""
    if os.geteuid() != 0:
        return "needs root, to make network namespaces"
    if not shutil.which("ip"):
        return "needs iproute2's `ip`"
    name = f"mhprobe{os.getpid()}"
    made = subprocess.run([IP, "netns", "add", name], capture_output=True, text=True, timeout=10, check=False)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    subprocess.run([IP, "netns", "del", name], capture_output=True, timeout=10, check=False)
    return None


def _ip(*args: str) -> None:
    done = subprocess.run([IP, *args], capture_output=True, text=True, timeout=15, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


@dataclass
class Host:
    """One host: its namespace, its link, and the fake server running there (started by `start`)."""

    net: HostNet
    name: str  # as the client resolves it (gpu-a)
    index: int
    kind: str  # ollama | openai
    models: list[str]
    loaded: list[str] = field(default_factory=list)
    load_s: float = 0.0
    process: subprocess.Popen[str] | None = None
    _io: threading.Lock = field(default_factory=threading.Lock)

    @property
    def namespace(self) -> str:
        return f"{self.net.prefix}h{self.index}"

    @property
    def address(self) -> str:
        return f"10.77.{self.index}.2"

    @property
    def port(self) -> int:
        return 11434 if self.kind == "ollama" else 8080

    @property
    def url(self) -> str:
        """The base URL the client configures (Ollama's root, an OpenAI-compatible server's /v1)."""
        return f"http://{self.name}:{self.port}" + ("/v1" if self.kind == "openai" else "")

    def start(self) -> Host:
        self.stop()
        command = [IP, "netns", "exec", self.namespace, sys.executable, "-m", "tests.hostnet", self.kind,
                   "--bind", self.address, "--port", str(self.port), "--models", ",".join(self.models),
                   "--loaded", ",".join(self.loaded), "--load-s", str(self.load_s)]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"host {self.name} did not start: {line!r}")
        return self

    def ask(self, **command: Any) -> Any:
        assert self.process is not None and self.process.stdin and self.process.stdout
        with self._io:
            self.process.stdin.write(json.dumps(command) + "\n")
            self.process.stdin.flush()
            return json.loads(self.process.stdout.readline())

    def counts(self) -> Counter[str]:
        """The chat requests it got since it started, per model."""
        return Counter(self.ask(counts=True))

    def loads(self) -> Counter[str]:
        """The model loads its chats caused since it started (each costing `load_s`), per model."""
        return Counter(self.ask(loads=True))

    def kill(self) -> None:
        """Gone at once: its connections reset, and nothing listens at its address any more."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(timeout=10)
            self._close()

    def stop(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                with contextlib.suppress(OSError):
                    assert self.process.stdin is not None
                    self.process.stdin.close()
                try:
                    self.process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(timeout=10)
            self._close()
        self.process = None

    def _close(self) -> None:
        assert self.process is not None
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()

    def link(self, up: bool) -> None:
        """Its end of the link up or down (down: the client's packets to it go nowhere)."""
        _ip("-n", self.namespace, "link", "set", f"{self.net.prefix}h{self.index}", "up" if up else "down")


class HostNet:
    """The client namespace and its hosts; a context manager that removes all of it."""

    def __init__(self, tmp: Path) -> None:
        self.prefix = f"mh{os.getpid()}"
        self.client = f"{self.prefix}c"
        self.tmp = tmp
        self.hosts: list[Host] = []
        self._etc = Path("/etc/netns") / self.client

    def __enter__(self) -> HostNet:
        self._remove()
        _ip("netns", "add", self.client)
        _ip("-n", self.client, "link", "set", "lo", "up")
        return self

    def add(self, name: str, kind: str, models: list[str], loaded: list[str] | None = None,
            load_s: float = 0.0) -> Host:
        """A host in a namespace of its own, linked to the client's, its fake server started."""
        host = Host(self, name, len(self.hosts) + 1, kind, models, loaded or [], load_s)
        self.hosts.append(host)
        client_end, host_end = f"{self.prefix}c{host.index}", f"{self.prefix}h{host.index}"
        _ip("netns", "add", host.namespace)
        _ip("link", "add", client_end, "netns", self.client, "type", "veth", "peer", "name", host_end,
            "netns", host.namespace)
        _ip("-n", self.client, "addr", "add", f"10.77.{host.index}.1/24", "dev", client_end)
        _ip("-n", host.namespace, "addr", "add", f"{host.address}/24", "dev", host_end)
        for namespace, device in ((self.client, client_end), (host.namespace, host_end), (host.namespace, "lo")):
            _ip("-n", namespace, "link", "set", device, "up")
        self._etc.mkdir(parents=True, exist_ok=True)
        (self._etc / "hosts").write_text("127.0.0.1 localhost\n" + "".join(
            f"{h.address} {h.name}\n" for h in self.hosts), encoding="utf-8")
        return host.start()

    def command(self, *args: str) -> list[str]:
        """A command line run in the client namespace."""
        return [IP, "netns", "exec", self.client, *args]

    def __exit__(self, *exc_info: Any) -> None:
        for host in self.hosts:
            host.kill()
        self._remove()

    def _remove(self) -> None:
        for host in self.hosts:
            subprocess.run([IP, "netns", "del", host.namespace], capture_output=True, timeout=15, check=False)
        subprocess.run([IP, "netns", "del", self.client], capture_output=True, timeout=15, check=False)
        shutil.rmtree(self._etc, ignore_errors=True)


# --- a host's process --------------------------------------------------------------------------------


def _serve(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.hostnet")
    parser.add_argument("kind", choices=["ollama", "openai"])
    parser.add_argument("--bind", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--models", default="")
    parser.add_argument("--loaded", default="")
    parser.add_argument("--load-s", type=float, default=0.0)
    args = parser.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    fake: Any
    if args.kind == "ollama":
        from tests.fakes.ollama_server import FakeModel, FakeOllama

        fake = FakeOllama([FakeModel(m) for m in models], load_s=args.load_s, bind=(args.bind, args.port))
    else:
        from tests.fakes.openai_server import FakeOpenAI

        fake = FakeOpenAI(api_key=None, models=models, bind=(args.bind, args.port))
    fake.keep_requests = True
    with fake:
        for name in (m for m in args.loaded.split(",") if m):
            fake.load(name, -1)
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        for line in sys.stdin:
            command = json.loads(line)
            if command.get("counts"):
                answer: Any = Counter(str((r.json or {}).get("model")) for r in fake.chat_requests)
            elif command.get("loads"):
                answer = dict(getattr(fake, "loads", {}))
            elif "load" in command:
                fake.load(command["load"], -1)
                answer = True
            elif "unload" in command:
                fake.unload(command["unload"])
                answer = True
            else:
                answer = {"error": f"unknown command {command!r}"}
            sys.stdout.write(json.dumps(answer) + "\n")
            sys.stdout.flush()


if __name__ == "__main__":
    _serve(sys.argv[1:])
