"""The status page on the HTTP transport: `/status` (page.html), `/status.json` (data.py), the charts (charts.py).

Routes, the token, the Host/Origin checks and the Content-Security-Policy are http.py's; server.py adds
them beside `/mcp`. Nothing here is imported before the HTTP app is built, and pygal only when a chart
is first drawn.
"""
