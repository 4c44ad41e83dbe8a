"""What `/status.json` holds, and the page draws: providers and hosts now, usage since start, the last hour.

- `server`: version, start, uptime, when this was made.
- `summary`: how many providers are up, degraded, down or unconfigured, which circuits are not closed,
  the calls since start, and the response cache's and the budget's sections of the stats when present.
- `providers`: each provider's health row (as `provider_health` has it: status, latency, version,
  endpoint, `has_api_key`, detail, circuit, and `hosts` when the row has them) with its usage since
  start. The assistant's own model (`client`) has no row: it is each session's, not the server's.
- `models`: per model since start (as `mcp-llm://stats`, the fleet's with shared state): calls,
  successes, success rate, retries,
  re-asks, fallbacks, tokens, latency p50/p95, and cost when the stats have it.
- `history`: one entry per minute of the last hour, oldest first (history.py), per model and per provider.

No secret is in it: keys appear only as `has_api_key`, and every URL is shown without its user,
password, query or fragment (`public_url`), in a URL field or inside a row's `detail` text.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from mcp_llm import __version__
from mcp_llm.adapters.spec import public_text, public_url
from mcp_llm.history import Bucket, quantiles

if TYPE_CHECKING:
    from mcp_llm.app import App

URL_FIELDS = ("endpoint", "host")
SECTIONS = ("cache", "budget")
TEXT_FIELDS = ("detail",)


def _scrub(row: dict[str, Any]) -> dict[str, Any]:
    """`row` with every URL field made public, nested host rows included."""
    out = dict(row)
    for name in URL_FIELDS:
        if isinstance(out.get(name), str):
            out[name] = public_url(out[name])
    for name in TEXT_FIELDS:  # an adapter's message may name its endpoint as configured, credentials and all
        if isinstance(out.get(name), str):
            out[name] = public_text(out[name])
    if isinstance(out.get("hosts"), list):
        out["hosts"] = [_scrub(host) if isinstance(host, dict) else host for host in out["hosts"]]
    return out


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def _rate(successes: int, calls: int) -> float | None:
    return round(successes / calls, 4) if calls else None


async def collect(app: App, minutes: Sequence[Bucket]) -> dict[str, Any]:
    """The whole document, with `minutes` the history window to show (oldest first)."""
    call_scoped = {spec.name for spec in app.registry.call_scoped()}
    rows = [row for row in await app.health(None) if row.provider not in call_scoped]
    snapshot = await app.stats()  # the fleet's when state is shared, with `state` saying which
    usage = snapshot.get("providers", {})
    providers = [_scrub({**row.model_dump(mode="json"), "usage": usage.get(row.provider, {})}) for row in rows]
    statuses = [row["status"] for row in providers]
    return {
        "server": {"version": __version__, "since": snapshot.get("since"), "uptime_s": snapshot.get("uptime_s"),
                   "generated_at": _iso(time.time()), **({"state": snapshot["state"]} if "state" in snapshot else {})},
        "summary": {
            **{status: statuses.count(status) for status in ("ok", "degraded", "down", "unconfigured")},
            "providers": len(providers),
            "circuits_not_closed": {row["provider"]: row["circuit"] for row in providers if row["circuit"] != "closed"},
            "calls": snapshot.get("calls", {}),
            # the response cache's and the budget's sections of the stats, when the server has them (issue 21)
            **{name: snapshot[name] for name in SECTIONS if isinstance(snapshot.get(name), dict)},
        },
        "providers": providers,
        "models": [_model_row(model_id, row) for model_id, row in snapshot.get("models", {}).items()],
        "history": {"minute_s": 60, "minutes": [_minute(bucket) for bucket in minutes]},
    }


def _model_row(model_id: str, row: dict[str, Any]) -> dict[str, Any]:
    calls, successes = int(row.get("calls", 0)), int(row.get("successes", 0))
    return {"id": model_id, **row, "success_rate": _rate(successes, calls)}


def _minute(bucket: Bucket) -> dict[str, Any]:
    models = {}
    for model_id, row in bucket.models.items():
        p50, p95 = quantiles(row.latency)
        models[model_id] = {
            "provider": row.provider, "calls": row.calls, "failures": row.failures, "reasks": row.reasks,
            "fallbacks": row.fallbacks, "input_tokens": row.input_tokens, "output_tokens": row.output_tokens,
            "cost_usd": round(row.cost_usd, 6), "unpriced_attempts": row.unpriced_attempts,
            "latency_ms": {"p50": p50, "p95": p95},
        }
    return {
        "start": _iso(bucket.start),
        "models": models,
        "providers": {name: {"calls": row.calls, "failures": row.failures} for name, row in bucket.providers.items()},
    }
