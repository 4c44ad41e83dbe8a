"""The status page's HTTP routes, beside `/mcp` on the streamable HTTP transport.

- `GET /status`: the page (page.html): HTML, its one style sheet and its one script inline, no
  other asset. It holds no data, so it is served without the token; it reads the token from its URL
  fragment (`/status#token=…`, which browsers never send: it reaches no server or proxy log), keeps
  it in the tab's sessionStorage, drops it from the address bar, and sends it as a bearer header.
- `GET /status.json`: the data (data.py); `GET /status/chart/<name>.svg`: one chart (charts.py).
  Both need `Authorization: Bearer <token>` whenever `server.token_env` names one (401 otherwise).
- `GET /status/favicon.svg`: the page's icon, so the browser asks for nothing else.

Every route runs the same Host and Origin checks as `/mcp` (the SDK's own `TransportSecurityMiddleware`
with the settings `http_security.transport_security` gives the transport): a page elsewhere that
resolves to us (DNS rebinding) or posts from another origin is refused the same way.

The page's Content-Security-Policy allows its own inline script and style by their hashes, its own
origin for fetches, and `blob:` images (the charts) — nothing else: no other script, style, font,
frame, form target or base URL.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

import anyio
from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mcp_llm.history import window

if TYPE_CHECKING:
    from mcp_llm.app import App

log = logging.getLogger("mcp_llm")

PAGE_PATH = "/status"
COMMON_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-store",
}
FAVICON = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><circle cx="8" cy="8" r="7" '
           'fill="#059669"/><path d="M4 8h2l1-3 2 6 1-3h2" stroke="#fff" stroke-width="1.4" fill="none"/></svg>')


@cache
def page() -> tuple[str, str]:
    """The page's HTML and its Content-Security-Policy (hashes of its inline script and style)."""
    html = resources.files("mcp_llm.status").joinpath("page.html").read_text(encoding="utf-8")

    def hashes(tag: str) -> str:
        blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", html, re.S)
        assert blocks, f"page.html has no <{tag}>"
        return " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(b.encode()).digest()).decode()}'" for b in blocks)

    policy = "; ".join([
        "default-src 'none'", f"script-src {hashes('script')}", f"style-src {hashes('style')}",
        "img-src 'self' blob:", "connect-src 'self'", "base-uri 'none'", "form-action 'none'",
        "frame-ancestors 'none'", "require-trusted-types-for 'script'", "trusted-types 'none'",
    ])
    return html, policy


class StatusRoutes:
    """The routes over one `App`; `token` is the bearer token `/status.json` needs (None: none is configured)."""

    def __init__(self, app: App, token: str | None, security: TransportSecuritySettings) -> None:
        self.app = app
        self._token = token.encode() if token is not None else None
        self._security = TransportSecurityMiddleware(security)

    def routes(self) -> list[Route]:
        return [
            Route(PAGE_PATH, self.page, methods=["GET"]),
            Route(f"{PAGE_PATH}.json", self.data, methods=["GET"]),
            Route(f"{PAGE_PATH}/chart/{{name}}.svg", self.chart, methods=["GET"]),
            Route(f"{PAGE_PATH}/favicon.svg", self.favicon, methods=["GET"]),
        ]

    async def page(self, request: Request) -> Response:
        if (refused := await self._security.validate_request(request)) is not None:
            return refused
        html, policy = page()
        html = html.replace("__TOKEN_REQUIRED__", "true" if self._token is not None else "false")
        return Response(html, media_type="text/html; charset=utf-8", headers={
            **COMMON_HEADERS, "Content-Security-Policy": policy, "X-Frame-Options": "DENY",
            "Cross-Origin-Opener-Policy": "same-origin"})

    async def favicon(self, request: Request) -> Response:
        if (refused := await self._security.validate_request(request)) is not None:
            return refused
        return Response(FAVICON, media_type="image/svg+xml", headers=COMMON_HEADERS)

    async def data(self, request: Request) -> Response:
        if (refused := await self._refused(request)) is not None:
            return refused
        from mcp_llm.status.data import collect

        try:
            document = await collect(self.app, await self._window())
        except Exception:  # the route's boundary: say so, log why, keep serving
            log.exception("the status page's data could not be collected")
            return _error(500, "The status could not be read; the server logged why.")
        return Response(json.dumps(document, allow_nan=False), media_type="application/json",
                        headers=COMMON_HEADERS)

    async def chart(self, request: Request) -> Response:
        if (refused := await self._refused(request)) is not None:
            return refused
        from mcp_llm.status.charts import CHART_NAMES, charts, render

        name = request.path_params["name"]
        if name not in CHART_NAMES:
            return _error(404, f"No chart of that name; the charts are {', '.join(CHART_NAMES)}.")
        try:
            chart = charts(await self._window())[name]
            svg = await anyio.to_thread.run_sync(render, chart)  # pygal's drawing stays off the event loop
        except Exception:  # the route's boundary, as above
            log.exception("the status chart %s could not be drawn", name)
            return _error(500, "The chart could not be drawn; the server logged why.")
        return Response(svg, media_type="image/svg+xml", headers=COMMON_HEADERS)

    async def _window(self) -> Any:
        """The last hour by minute: the fleet's when state is shared (state.py), else this server's."""
        history = self.app.router.history
        return window(await self.app.state.history_buckets(), history.now_minute(), history.minutes)

    async def _refused(self, request: Request) -> Response | None:
        """The same Host/Origin checks as /mcp, then the bearer token when one is configured."""
        if (refused := await self._security.validate_request(request)) is not None:
            return refused
        if self._token is None:
            return None
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(credentials.strip().encode(), self._token):
            return None
        return _error(401, "This needs the server's bearer token: open the page as /status#token=<token>, or send "
                      "`Authorization: Bearer <token>` (the token is in the variable server.token_env names).",
                      {"WWW-Authenticate": 'Bearer realm="mcp-llm status"'})


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers={**COMMON_HEADERS, **(headers or {})})
