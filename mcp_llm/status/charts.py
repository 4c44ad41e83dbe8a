"""The status page's charts of the last hour, drawn server-side as SVG by pygal.

Four charts, one slot per minute (`history.window`): latency per model (p50 solid, p95 dashed, one
colour per model), calls per provider, failures per provider (the same colour for a provider in
both), and cost per model. pygal is imported on first use, in a worker thread (the caller's
`anyio.to_thread`), and its SVG carries no script (`js=[]`: pygal's default pulls its tooltips
from a CDN; and its inline config script is taken out).
The page shows each chart as an `<img>` of a `blob:` URL, so the SVG can run nothing and load
nothing even if a model id in its labels were hostile; pygal escapes text as XML besides.

A drawing is kept for the same inputs (the series and labels), so viewers refreshing the page
every few seconds cost one drawing per change, not one per viewer.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from mcp_llm.history import Bucket, quantiles

MAX_SERIES = 8  # the busiest models or providers of the hour; the rest are left out of a chart (not of the JSON)
PALETTE = ("#2563eb", "#d97706", "#059669", "#db2777", "#7c3aed", "#0891b2", "#65a30d", "#dc2626")
CHART_NAMES = ("latency", "calls", "failures", "cost")


@dataclass(frozen=True)
class Series:
    label: str
    values: tuple[float | None, ...]
    colour: str
    dashed: bool = False


@dataclass(frozen=True)
class Chart:
    kind: str  # "line" or "stacked"
    series: tuple[Series, ...]
    x_labels: tuple[str, ...]
    unit: str
    empty: str  # what the chart says when it has nothing to draw


def minute_labels(count: int) -> tuple[str, ...]:
    """`-59 min` … `now`, oldest first."""
    return tuple("now" if ago == 0 else f"-{ago} min" for ago in range(count - 1, -1, -1))


def _busiest(totals: dict[str, float]) -> list[str]:
    """The names with the most calls (at most MAX_SERIES), in name order so colours stay put."""
    top = sorted((name for name, total in totals.items() if total > 0), key=lambda n: (-totals[n], n))
    return sorted(top[:MAX_SERIES])


def charts(minutes: Sequence[Bucket]) -> dict[str, Chart]:
    """The four charts of a window of minutes (oldest first)."""
    labels = minute_labels(len(minutes))
    model_calls: dict[str, float] = {}
    provider_calls: dict[str, float] = {}
    for bucket in minutes:
        for model_id, row in bucket.models.items():
            model_calls[model_id] = model_calls.get(model_id, 0) + row.calls
        for name, prow in bucket.providers.items():
            provider_calls[name] = provider_calls.get(name, 0) + prow.calls
    models = _busiest(model_calls)
    providers = _busiest(provider_calls)
    colour = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(models)}
    latency: list[Series] = []
    for model_id in models:
        p50s, p95s = [], []
        for bucket in minutes:
            seen = bucket.models.get(model_id)
            p50, p95 = quantiles(seen.latency) if seen else (None, None)
            p50s.append(p50)
            p95s.append(p95)
        latency.append(Series(f"{model_id} p50", tuple(p50s), colour[model_id]))
        latency.append(Series(f"{model_id} p95", tuple(p95s), colour[model_id], dashed=True))

    def per_provider(field: Callable[[Any], int]) -> tuple[Series, ...]:
        return tuple(Series(name, tuple(float(field(b.providers[name])) if name in b.providers else 0.0
                                        for b in minutes), PALETTE[i % len(PALETTE)])
                     for i, name in enumerate(providers))

    failures = tuple(s for s in per_provider(lambda row: row.failures) if any(s.values))  # colours as in calls
    priced = [m for m in models if any(b.models[m].cost_usd for b in minutes if m in b.models)]
    unknown = any(row.unpriced_attempts for b in minutes for row in b.models.values())
    cost = tuple(Series(m, tuple(round(b.models[m].cost_usd, 6) if m in b.models else 0.0 for b in minutes),
                        colour[m]) for m in priced)
    return {
        "latency": Chart("line", tuple(latency), labels, "ms", "No calls in the last hour"),
        "calls": Chart("stacked", per_provider(lambda row: row.calls), labels, "calls", "No calls in the last hour"),
        "failures": Chart("stacked", failures, labels, "failures",
                          "No failures in the last hour"),
        "cost": Chart("stacked", cost, labels, "USD",
                      "No priced calls in the last hour" + (" (some models have no known price)" if unknown else "")),
    }


def render(chart: Chart) -> str:
    """The chart as SVG text (cached for the same chart)."""
    return _render(json.dumps([chart.kind, [[s.label, s.values, s.colour, s.dashed] for s in chart.series],
                               chart.x_labels, chart.unit, chart.empty]))


@lru_cache(maxsize=32)
def _render(spec: str) -> str:
    import pygal
    from pygal.style import Style

    kind, series, x_labels, unit, empty = json.loads(spec)
    style = Style(
        background="transparent", plot_background="transparent", foreground="#374151",
        foreground_strong="#111827", foreground_subtle="#e5e7eb", opacity=".85", opacity_hover="1",
        colors=tuple(colour for _, _, colour, _ in series) or PALETTE,
        font_family="system-ui, -apple-system, 'Segoe UI', sans-serif",
        label_font_size=11, major_label_font_size=11, legend_font_size=12, no_data_font_size=16,
        value_font_size=11, tooltip_font_size=11,
    )
    # A line chart's legend: one model a row, p50 then p95. pygal 3.1 makes room for len // columns rows
    # of legend, not the ceiling (graph.py, `_compute_margin`): never more columns than series, and the
    # room of one more row when the last is not full (else it is drawn below the picture).
    columns = max(1, min(2 if kind == "line" else 5, len(series)))
    rows = -(-len(series) // columns)
    short_row = 18 if len(series) % columns else 0
    common: dict[str, Any] = {
        "js": [], "style": style, "width": 640, "height": 220 + 24 * rows + short_row, "disable_xml_declaration": True,
        "legend_at_bottom": True, "legend_at_bottom_columns": columns, "truncate_legend": 40, "legend_box_size": 10,
        "truncate_label": -1, "show_minor_x_labels": False,
        "x_labels_major": [x_labels[i] for i in range(len(x_labels) - 1, -1, -10)],
        "margin": 8, "margin_bottom": 8 + short_row, "spacing": 8, "no_data_text": empty, "y_title": unit,
        "show_y_guides": True,
        "print_zeroes": False, "include_x_axis": True, "no_prefix": True,
    }
    if kind == "line":
        chart = pygal.Line(show_dots=True, dots_size=2.5, allow_interruptions=True, stroke_style={"width": 2},
                           **common)
    else:
        if series:  # round ticks: whole calls, or dollars at a readable step (pygal fails on y_labels without series)
            top = max((sum(v or 0 for v in column) for column in zip(*(values for _, values, _, _ in series),
                                                                       strict=True)), default=0)
            common["y_labels"] = _ticks(top, whole=unit != "USD")
            if unit == "USD":
                step = common["y_labels"][1] if len(common["y_labels"]) > 1 else 1.0
                digits = max(0, -math.floor(math.log10(step))) if step > 0 else 2
                common["value_formatter"] = lambda value, digits=digits: f"${value:.{digits}f}"
        chart = pygal.StackedBar(**common)
    chart.x_labels = x_labels
    for label, values, _colour, dashed in series:
        extra = {"stroke_style": {"width": 2, "dasharray": "5, 4"}} if dashed else {}
        chart.add(label, values, **extra)
    return _without_scripts(chart.render_tree())


def _without_scripts(tree: Any) -> str:
    """The SVG text less pygal's `<script>` (its config, written even with `js=[]`): the page shows charts
    as images, where no script runs anyway; what it does not need, it is not sent."""
    from pygal.etree import etree

    for parent in list(tree.iter()):
        for child in list(parent):
            if str(child.tag).rpartition("}")[2] == "script":
                parent.remove(child)
    return str(etree.tostring(tree, encoding="unicode"))


def _ticks(top: float, *, whole: bool) -> list[float]:
    """About six ticks, 1, 2 or 5 times a power of ten apart, from 0 to at least `top` (whole numbers only
    when `whole`: counts never step by less than 1)."""
    if top <= 0:
        return [0, 1] if whole else [0.0, 0.01]
    magnitude = 10.0 ** math.floor(math.log10(top / 6))
    if whole:
        magnitude = max(1.0, magnitude)
    while True:
        for base in (1, 2, 5):
            step = base * magnitude
            if top / step <= 6:
                count = max(1, math.ceil(top / step - 1e-9))
                return [int(i * step) if whole else round(i * step, 12) for i in range(count + 1)]
        magnitude *= 10
