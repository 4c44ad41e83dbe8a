"""Over HTTP: which Host and Origin headers the server accepts (DNS-rebinding protection).

The SDK switches the protection on by itself only when the host is literally `127.0.0.1`,
`localhost` or `::1`; on `127.0.0.2`, `[::1]` or `0.0.0.0` it would serve a page from
`http://evil.example` that resolves to us. So it is configured explicitly for every bind:
the address actually bound, every loopback name when that address is loopback (or all
interfaces), and the names in `[server] allowed_hosts` / `allowed_origins` (for a proxy or a
DNS name in front of the server).
"""

from __future__ import annotations

import ipaddress

from mcp.server.transport_security import TransportSecuritySettings

from mcp_llm.config import ServerSettings

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
ALL_INTERFACES = ("0.0.0.0", "::")


def bind_address(host: str) -> str:
    """What the socket binds: `[::1]` (as written in a URL) is `::1`."""
    return host.strip().removeprefix("[").removesuffix("]")


def header_host(host: str) -> str:
    """How the address appears in a Host header or an Origin: IPv6 in brackets."""
    address = bind_address(host)
    return f"[{address}]" if ":" in address else address


def is_loopback(host: str) -> bool:
    address = bind_address(host)
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def transport_security(host: str, server: ServerSettings) -> TransportSecuritySettings:
    """DNS-rebinding protection for the host actually bound, always on."""
    names = [header_host(host)]
    if is_loopback(host) or bind_address(host) in ALL_INTERFACES:
        names += LOOPBACK_NAMES
    names = [name for name in dict.fromkeys(names) if bind_address(name) not in ALL_INTERFACES]
    hosts = [form for name in names for form in (name, f"{name}:*")]
    origins = [form for name in names for scheme in ("http", "https")
               for form in (f"{scheme}://{name}", f"{scheme}://{name}:*")]
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=list(dict.fromkeys([*hosts, *server.allowed_hosts])),
        allowed_origins=list(dict.fromkeys([*origins, *server.allowed_origins])),
    )
