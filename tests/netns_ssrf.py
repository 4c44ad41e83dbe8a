"""The SSRF attacks, run inside a network namespace of their own (see tests/netns.py).

Inside the namespace: 8.8.8.8 (a "public" web host named public.test) and private addresses are
on loopback; one web server listens on every address (port 80 and 443) and records where each
request arrived; a fake Ollama serves the vision model. Each attack URL goes to analyze_image
through a real MCP client, followed by a good call that must still work. Prints one JSON line.
"""

from __future__ import annotations

import datetime
import io
import json
import os
import socket
import ssl
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import anyio
from mcp import Client
from PIL import Image

PUBLIC = "8.8.8.8"
PRIVATE_ADDRESSES = ["10.0.0.1", "172.16.0.1", "192.168.0.1", "169.254.169.254"]
HOSTS = {"public.test": PUBLIC, "other.test": PUBLIC, "sneaky.test": "127.0.0.1", "lan.test": "10.0.0.1"}
GOOD = "http://public.test/cat.png"
MAX_BYTES = 300_000

ATTACKS: dict[str, str] = {
    "loopback": "http://127.0.0.1/cat.png",
    "decimal": "http://2130706433/cat.png",
    "hex": "http://0x7f.1/cat.png",
    "octal": "http://0177.0.0.1/cat.png",
    "short": "http://127.1/cat.png",
    "localhost": "http://localhost/cat.png",
    "localhost-dot": "http://LOCALHOST./cat.png",
    "name-to-loopback": "http://sneaky.test/cat.png",
    "10.x": "http://10.0.0.1/cat.png",
    "172.16.x": "http://172.16.0.1/cat.png",
    "192.168.x": "http://192.168.0.1/cat.png",
    "metadata": "http://169.254.169.254/latest/meta-data/",
    "ipv6-loopback": "http://[::1]/cat.png",
    "ipv4-mapped": "http://[::ffff:127.0.0.1]/cat.png",
    "ipv4-mapped-hex": "http://[::ffff:7f00:1]/cat.png",
    "6to4": "http://[2002:7f00:1::]/cat.png",
    "nat64": "http://[64:ff9b::a9fe:a9fe]/latest/meta-data/",
    "unspecified": "http://0.0.0.0/cat.png",
    "credentials": "http://user:secret@public.test/cat.png",
    "redirect-to-loopback": "http://public.test/redirect?to=http://127.0.0.1/cat.png",
    "redirect-to-metadata": "http://public.test/redirect?to=http://169.254.169.254/latest/meta-data/",
    "redirect-to-name": "http://public.test/redirect?to=http://sneaky.test/cat.png",
    "redirect-loop": "http://public.test/loop",
    "too-big": "http://public.test/big.png",
    "not-an-image": "http://public.test/page.html",
    "https-wrong-name": "https://other.test/cat.png",
}
PRIVATE_ALLOWED = {"lan": "http://lan.test/cat.png", "metadata-still": "http://169.254.169.254/latest/meta-data/"}


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (12, 8), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


class Web(BaseHTTPRequestHandler):
    hits: ClassVar[list[dict[str, str]]] = []
    lock = threading.Lock()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        local = self.connection.getsockname()[0]
        with self.lock:
            self.hits.append({"local": local, "host": self.headers.get("Host", ""), "path": self.path})
        url = urlsplit(self.path)
        if url.path == "/redirect":
            self._reply(302, b"", {"Location": parse_qs(url.query)["to"][0]})
        elif url.path == "/loop":
            self._reply(302, b"", {"Location": "/loop"})
        elif url.path == "/big.png":  # streamed without a length: the byte cap must cut it
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            chunk = os.urandom(64 * 1024)
            try:
                for _ in range(64):
                    self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                self.wfile.write(b"0\r\n\r\n")
            except OSError:
                pass
        elif url.path == "/page.html":
            self._reply(200, b"<html>hello</html>", {"Content-Type": "text/html"})
        else:
            self._reply(200, _png(), {"Content-Type": "image/png"})

    def _reply(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class DualStack(ThreadingHTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def _serve(port: int, context: ssl.SSLContext | None = None) -> DualStack:
    server = DualStack(("::", port), Web)
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _certificates(folder: Path) -> tuple[ssl.SSLContext, Path]:
    """A CA, and a certificate it signs for public.test only; the server context and the CA file."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(1).not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "public.test")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(2)
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("public.test")]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    (folder / "ca.pem").write_bytes(ca.public_bytes(pem))
    (folder / "cert.pem").write_bytes(cert.public_bytes(pem))
    (folder / "key.pem").write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    return context, folder / "ca.pem"


async def _tool_calls(settings: Any, cases: dict[str, str]) -> dict[str, Any]:
    from mcp_llm.server import build_server

    results: dict[str, Any] = {}
    async with Client(build_server(settings)) as client:
        for name, url in cases.items():
            before = len(Web.hits)
            with anyio.fail_after(60):
                bad = await client.call_tool("analyze_image", {"image": url, "prompt": "What is it?"})
            hits = Web.hits[before:]
            with anyio.fail_after(60):
                good = await client.call_tool("analyze_image", {"image": GOOD, "prompt": "What is it?"})
            results[name] = {
                "is_error": bad.is_error,
                "text": " ".join(getattr(block, "text", "") for block in bad.content),
                "hits": hits,
                "next_ok": not good.is_error,
            }
    return results


async def _direct(ca: Path) -> dict[str, Any]:
    """Through the fetcher itself: TLS to the pinned address still checks the certificate's name."""
    from mcp_llm.errors import ImageError
    from mcp_llm.url_fetch import fetch

    context = ssl.create_default_context(cafile=str(ca))
    out: dict[str, Any] = {}
    body = await fetch("https://public.test/cat.png", max_bytes=MAX_BYTES, verify=context)
    out["https-right-name"] = {"ok": body == _png()}
    try:
        await fetch("https://other.test/cat.png", max_bytes=MAX_BYTES, verify=context)
        out["https-wrong-name"] = {"ok": True}
    except ImageError as exc:
        out["https-wrong-name"] = {"ok": False, "text": exc.user_message()}
    return out


def main() -> None:
    from mcp_llm.config import load_settings
    from tests.fakes.ollama_server import FakeOllama

    folder = Path(tempfile.mkdtemp())
    server_context, ca = _certificates(folder)
    servers = [_serve(80), _serve(443, server_context)]
    results: dict[str, Any] = {}
    with FakeOllama() as fake:
        base = f"""
[defaults]
vision_model = "ollama/llava:7b"
max_retries = 0
[providers.ollama]
endpoint = "{fake.url}"
[images]
roots = ["{folder}"]
max_bytes = {MAX_BYTES}
allow_urls = true
"""
        config = folder / "config.toml"
        config.write_text(base)
        results["tool"] = anyio.run(_tool_calls, load_settings(config, env={}), ATTACKS)
        config.write_text(base + "allow_private_urls = true\n")
        results["private_allowed"] = anyio.run(_tool_calls, load_settings(config, env={}), PRIVATE_ALLOWED)
        results["direct"] = anyio.run(_direct, ca)
        results["good_hits"] = [hit for hit in Web.hits if hit["path"] == "/cat.png"][:1]
        results["fake_errors"] = [repr(e) for e in fake.errors]
    for server in servers:
        server.shutdown()
    sys.stdout.write(json.dumps(results) + "\n")


if __name__ == "__main__":
    main()
