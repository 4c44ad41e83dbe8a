"""Fetch an image URL without letting the server be used to reach private networks (SSRF).

A URL the caller passes could name anything the server can reach: `127.0.0.1`, the LAN, or
the cloud metadata service at 169.254.169.254 where instance credentials live (OWASP's
server-side request forgery). So, for the URL and again for every redirect:

- http and https only, no credentials in the URL, a port in range;
- a host written as a number in any unusual form (`2130706433`, `0x7f.1`, `0177.0.0.1`,
  `127.1`) is refused: resolvers and URL parsers disagree on what those mean;
- the host is resolved here, once, and every address it resolves to must be public
  (`ipaddress.is_global`, no multicast); IPv4 embedded in IPv6 (IPv4-mapped, IPv4-compatible,
  6to4, NAT64) is unwrapped and checked as IPv4;
- the connection goes to the address that was checked (the URL's host is replaced by that
  address; `Host` and the TLS server name stay the original name, so the certificate is still
  checked against it): no second lookup can return another address (DNS rebinding);
- proxies from the environment are ignored (a proxy would resolve the name itself);
- at most `MAX_REDIRECTS` redirects, a byte cap while streaming, and a deadline for it all.

`allow_private` (config `images.allow_private_urls`) lets private, loopback and link-local
addresses through, for a host on your own network; never the metadata service, multicast,
unspecified or reserved addresses.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio

from mcp_llm.errors import ImageError

if TYPE_CHECKING:
    import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]

MAX_REDIRECTS = 3
TIMEOUT_S = 20.0
CONNECT_TIMEOUT_S = 5.0
REDIRECTS = (301, 302, 303, 307, 308)

# Cloud metadata services: refused even when private addresses are allowed.
METADATA = {
    ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack…
    ipaddress.ip_address("169.254.170.2"),  # AWS ECS task metadata
    ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
    ipaddress.ip_address("fd00:ec2::254"),  # AWS over IPv6
}
NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_HOST = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?)*$")
_NUMERIC_LABEL = re.compile(r"^(?:0x[0-9a-f]*|[0-9]+)$")

PRIVATE_HINT = (
    "Download the image and pass its path or base64 data; for a host on your own network, "
    "set images.allow_private_urls = true in the config file."
)
PUBLIC_HINT = "Pass a public URL, or download the image and pass its path or base64 data."


def _short(url: str) -> str:
    return url if len(url) <= 200 else url[:200] + "…"


def address_problem(ip: IPAddress, *, allow_private: bool) -> str | None:
    """Why the server must not connect to `ip` (e.g. "a loopback address"), or None if it may."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded: ipaddress.IPv4Address | None = None
        if ip.ipv4_mapped is not None:
            embedded, how = ip.ipv4_mapped, "IPv4-mapped"
        elif ip.sixtofour is not None:
            embedded, how = ip.sixtofour, "6to4"
        elif any(ip in net for net in NAT64):
            embedded, how = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF), "NAT64"
        elif ip in IPV4_COMPATIBLE and int(ip) > 1:
            embedded, how = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF), "IPv4-compatible"
        if embedded is not None:
            inner = address_problem(embedded, allow_private=allow_private)
            return f"an IPv6 address ({how}) wrapping {embedded}, {inner}" if inner else None
    if ip.is_unspecified:
        return "the unspecified address"
    if ip in METADATA:
        return "the cloud metadata service"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_loopback:
        kind = "a loopback address"
    elif ip.is_link_local:
        kind = "a link-local address"
    elif ip.is_reserved or ip == ipaddress.IPv4Address("255.255.255.255"):
        return "a reserved address"
    elif ip.is_private or not ip.is_global:
        kind = "a private (non-public) address"
    else:
        return None
    return None if allow_private else kind


def _numeric_problem(host: str) -> bool:
    """True when `host` is an IPv4 address in a form other than four plain decimal numbers.

    The WHATWG URL standard (and inet_aton) read a host whose last label is a number as IPv4:
    `2130706433`, `0x7f.1`, `0177.0.0.1` and `127.1` all mean 127.0.0.1 to some parser."""
    labels = host.split(".")
    if not _NUMERIC_LABEL.match(labels[-1]):
        return False
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return True
    return False


async def system_resolver(host: str, port: int) -> list[str]:
    """Every address the system resolver gives for `host` (A and AAAA)."""
    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class _Target:
    """One URL, checked: where to connect and what to call the host."""

    def __init__(self, url: httpx.URL, host: str, port: int, addresses: list[IPAddress]) -> None:
        self.url, self.host, self.port, self.addresses = url, host, port, addresses


async def _check(url: httpx.URL, text: str, *, allow_private: bool, resolver: Resolver) -> _Target:
    if url.scheme not in ("http", "https"):
        raise ImageError(f"The image URL {_short(text)} is not http or https.", hint="Pass an http(s) URL.")
    if url.userinfo:
        raise ImageError(f"The image URL {_short(text)} carries a user name or password; such URLs are refused.",
                         hint="Pass a URL without credentials, or download the image and pass its path.")
    port = url.port or (443 if url.scheme == "https" else 80)
    if not 0 < port < 65536:
        raise ImageError(f"The image URL {_short(text)} has an invalid port {port}.", hint="Check the URL.")
    host = url.raw_host.decode("ascii").lower()
    literal: IPAddress | None = None
    with contextlib.suppress(ValueError):
        literal = ipaddress.ip_address(host.split("%", 1)[0] if ":" in host else host.rstrip("."))
    if literal is None:
        bare = host.rstrip(".")
        if _numeric_problem(bare):
            raise _numeric_error(text)
        if not bare or not _HOST.match(bare):
            raise ImageError(f"The image URL's host {host!r} is not a valid host name.", hint="Check the URL.")
        try:
            found = await resolver(bare, port)
        except OSError:
            raise ImageError(f"Cannot resolve the image URL's host {bare!r}.",
                             hint="Check the URL and the network.") from None
        addresses = [ipaddress.ip_address(a.split("%", 1)[0]) for a in found]
        if not addresses:
            raise ImageError(f"The image URL's host {bare!r} has no address.", hint="Check the URL.")
    else:
        bare, addresses = host, [literal]
    for ip in addresses:
        problem = address_problem(ip, allow_private=allow_private)
        if problem:
            named = f"{bare} ({ip})" if literal is None else str(ip)
            raise ImageError(
                f"The image URL {_short(text)} points to {named}, {problem}: fetching it is refused so that "
                "this server cannot be used to reach internal services.",
                hint=PRIVATE_HINT if address_problem(ip, allow_private=True) is None else PUBLIC_HINT,
            )
    return _Target(url, bare, port, addresses)


async def fetch(
    text: str,
    *,
    max_bytes: int,
    allow_private: bool = False,
    resolver: Resolver | None = None,
    timeout_s: float = TIMEOUT_S,
    verify: Any = True,
) -> bytes:
    """The body of an http(s) URL, at most `max_bytes`, from public addresses only (see the module)."""
    import httpx

    try:
        url = httpx.URL(text)
    except (httpx.InvalidURL, ValueError) as exc:
        if "IPv4" in str(exc):  # e.g. 0177.0.0.1, which httpx will not read as octal
            raise _numeric_error(text) from None
        raise ImageError(f"The image URL {_short(text)} is malformed: {exc}.", hint="Check the URL.") from None
    resolve = resolver or system_resolver
    with anyio.move_on_after(timeout_s) as scope:
        async with httpx.AsyncClient(
            trust_env=False,  # an HTTP(S)_PROXY would resolve the name itself, unchecked
            follow_redirects=False,
            timeout=httpx.Timeout(timeout_s, connect=min(CONNECT_TIMEOUT_S, timeout_s)),
            verify=verify,
        ) as client:
            for hop in range(MAX_REDIRECTS + 1):
                target = await _check(url, text, allow_private=allow_private, resolver=resolve)
                body, location = await _get(client, target, text, max_bytes)
                if location is None:
                    assert body is not None
                    return body
                if hop == MAX_REDIRECTS:
                    break
                try:
                    url = url.join(location)
                except (httpx.InvalidURL, ValueError):
                    raise ImageError(f"The image URL {_short(text)} redirects to a malformed URL.",
                                     hint="Check the URL.") from None
            raise ImageError(f"The image URL {_short(text)} redirects more than {MAX_REDIRECTS} times.",
                             hint="Pass the image's final URL, or download it and pass its path.")
    assert scope.cancelled_caught
    raise ImageError(f"Fetching {_short(text)} took longer than {timeout_s:.0f} s.",
                     hint="Download the image and pass its path or base64 data.")


async def _get(client: httpx.AsyncClient, target: _Target, text: str,
               max_bytes: int) -> tuple[bytes | None, str | None]:
    """(body, None), or (None, Location) for a redirect; the request goes to a checked address."""
    import httpx

    default_port = 443 if target.url.scheme == "https" else 80
    host_header = target.url.netloc.decode("ascii").rsplit("@", 1)[-1]
    if target.url.port in (None, default_port):
        host_header = target.url.raw_host.decode("ascii")
        host_header = f"[{host_header}]" if ":" in host_header else host_header
    extensions = {"sni_hostname": target.host} if target.url.scheme == "https" else {}
    last_error: Exception | None = None
    for ip in target.addresses:
        pinned = target.url.copy_with(host=str(ip))
        request = client.build_request("GET", pinned, headers={"Host": host_header, "Accept": "image/*",
                                                                  "Accept-Encoding": "identity"},
                                       extensions=extensions)
        try:
            response = await client.send(request, stream=True)
        except httpx.ConnectError as exc:
            last_error = exc
            continue
        except httpx.HTTPError as exc:
            raise _transport_error(text, exc) from None
        try:
            if response.status_code in REDIRECTS and "location" in response.headers:
                return None, response.headers["location"]
            if response.status_code != 200:
                raise ImageError(f"Fetching {_short(text)} gave HTTP {response.status_code}.", hint="Check the URL.")
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > max_bytes:
                raise _too_big(text, max_bytes, f" ({int(declared) / 1e6:.1f} MB)")
            chunks, total = [], 0
            async for chunk in response.aiter_bytes():
                total += len(chunk)
                if total > max_bytes:
                    raise _too_big(text, max_bytes)
                chunks.append(chunk)
            return b"".join(chunks), None
        except httpx.HTTPError as exc:
            raise _transport_error(text, exc) from None
        finally:
            await response.aclose()
    raise _transport_error(text, last_error)


def _numeric_error(text: str) -> ImageError:
    return ImageError(
        f"The image URL {_short(text)} gives its host as a number in an unusual form (decimal, octal, hex "
        "or shortened); such hosts are refused.",
        hint="Write the address as four decimal numbers, or use the host's name.",
    )


def _transport_error(text: str, exc: Exception | None) -> ImageError:
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, ssl.SSLCertVerificationError):
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, ssl.SSLCertVerificationError):
        return ImageError(f"Cannot fetch {_short(text)}: the server's TLS certificate does not check out "
                          f"({cause.verify_message}).", hint="Check the URL; the host may not be who it claims.")
    name = type(exc).__name__ if exc else "no address"
    return ImageError(f"Cannot fetch {_short(text)}: {name}.", hint="Check the URL and the network.")


def _too_big(text: str, max_bytes: int, size: str = "") -> ImageError:
    return ImageError(
        f"The image from {_short(text)} is over the {max_bytes / 1e6:.1f} MB limit{size}.",
        hint="Send a smaller image, or raise images.max_bytes in the config file.",
    )
