"""What the status page costs: per call (the history's record beside the stats') and per look (its charts).

    python bench/status_cost.py [--rounds 7] [--calls 2000]

(a) Per call: the router counts a finished call in `Stats.record` (usage since start) and, since
issue 22, in `History.record` (the last hour per minute). The baseline is `Stats.record` alone;
ours is both, as `Router._count` runs them. Same attempts (a success, a re-ask, a fallback after a
transient error, over 8 models), alternated round by round; prints µs per call, min/median/max
over rounds, and ours/baseline. For scale: a call through the server costs milliseconds
(README, Performance).

(b) Per look at the page: drawing the four charts of an hour of history (60 minutes, 8 models, 5
providers) with pygal, uncached (a new minute, or new data) against cached (the same data again,
as for a second viewer within the same refresh), in ms per look, and uncached/cached.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench._common import machine_line, rotated, spread  # noqa: E402
from mcp_llm.history import History, window  # noqa: E402
from mcp_llm.stats import Stats  # noqa: E402
from mcp_llm.status import charts as status_charts  # noqa: E402
from mcp_llm.trace import Attempt  # noqa: E402

MODELS = [(f"ollama/model-{i}", "ollama") if i < 4 else (f"provider{i}/model-{i}", f"provider{i}") for i in range(8)]


def calls(count: int) -> list[tuple[list[Attempt], dict[str, tuple[int, int]], float, str | None]]:
    out = []
    for i in range(count):
        model, provider = MODELS[i % len(MODELS)]
        other, other_provider = MODELS[(i + 1) % len(MODELS)]
        shape = i % 3
        if shape == 0:
            attempts = [Attempt(model=model, provider=provider, outcome="ok", latency_ms=80.0 + i % 50)]
        elif shape == 1:
            attempts = [Attempt(model=model, provider=provider, outcome="invalid_output", error="not_json",
                                latency_ms=90.0),
                        Attempt(model=model, provider=provider, outcome="ok", latency_ms=70.0)]
        else:
            attempts = [Attempt(model=model, provider=provider, outcome="error", error="server_error", latency_ms=5.0),
                        Attempt(model=other, provider=other_provider, outcome="ok", latency_ms=120.0)]
        out.append((attempts, {model: (120, 30)}, 100.0, None))
    return out


def per_call(rounds: int, count: int) -> None:
    work = calls(count)
    history = History()
    history.record(*work[0])  # its library is imported once, at the first call, as in the server
    results: dict[str, list[float]] = {"baseline": [], "ours": []}
    for round_ in range(rounds):
        for path in rotated(["baseline", "ours"], round_):
            stats, history = Stats(), History()
            started = time.perf_counter()
            for attempts, tokens, latency, kind in work:
                stats.record(attempts, tokens, latency, kind)
                if path == "ours":
                    history.record(attempts, tokens, latency, kind)
            results[path].append((time.perf_counter() - started) / count * 1e6)
    ratios = [o / b for o, b in zip(results["ours"], results["baseline"], strict=True)]
    print(f"(a) per call: Stats.record alone {spread(results['baseline'], ' µs')}; "
          f"with History.record {spread(results['ours'], ' µs')}")
    added = statistics.median(results["ours"]) - statistics.median(results["baseline"])
    print(f"    ratio ours/baseline {spread(ratios, '×')}; added {added:.1f} µs a call")


def per_look(rounds: int) -> None:
    clock = [time.time() - 3600]
    history = History(clock=lambda: clock[0])
    for attempts, tokens, latency, kind in calls(3000):
        clock[0] += 1.2
        history.record(attempts, tokens, latency, kind)
    minutes = window(history.buckets(), history.now_minute())
    drawn = status_charts.charts(minutes)
    status_charts.render(next(iter(drawn.values())))  # pygal imported once
    results: dict[str, list[float]] = {"uncached": [], "cached": []}
    for round_ in range(rounds):
        for path in rotated(["uncached", "cached"], round_):
            if path == "uncached":
                status_charts._render.cache_clear()
            else:
                for chart in drawn.values():
                    status_charts.render(chart)
            started = time.perf_counter()
            for chart in status_charts.charts(minutes).values():
                status_charts.render(chart)
            results[path].append((time.perf_counter() - started) * 1000)
    ratios = [u / c for u, c in zip(results["uncached"], results["cached"], strict=True)]
    print(f"(b) four charts of a full hour: uncached {spread(results['uncached'], ' ms')}; "
          f"cached {spread(results['cached'], ' ms')}; ratio uncached/cached {spread(ratios, '×', 0)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    print(machine_line())
    per_call(args.rounds, args.calls)
    per_look(args.rounds)


if __name__ == "__main__":
    main()
