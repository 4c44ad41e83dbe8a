"""Peak memory of one large photo through load_image and each provider's fitting.

The promise (issue 10): a 20 MB, 8000×6000 JPEG costs at most 4× its size in peak RSS growth.
Each measurement runs in a fresh process: imports done, baseline RSS read, the kernel's peak
counter (VmHWM) reset through /proc/self/clear_refs, then load_image (read, decode at reduced
scale, re-encode) and the fitting for Anthropic, Gemini and Ollama one after the other, as a
fallback chain would; the peak minus the baseline is the growth. Linux only.

The event loop's main coroutine returns nothing: on Python 3.11, `asyncio.run` restoring its SIGINT
handler formats a message holding the main task's repr, and so the full repr of what the task returned
(`reprlib` calls `repr` before it clips): for a returned image, a string nearly three times its bytes,
which once counted as load_image's own peak (about 17 MB of it). A server never returns an image from
its loop's main task.

    python bench/image_memory.py            # 3 runs, the 8000×6000 photo with EXIF orientation 1 and 6
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def child(path: str) -> None:
    import anyio

    from mcp_llm.adapters.anthropic import AnthropicAdapter
    from mcp_llm.adapters.gemini import GeminiAdapter
    from mcp_llm.adapters.ollama import OllamaAdapter
    from mcp_llm.config import ImageSettings
    from mcp_llm.image_fit import Limits, fit
    from mcp_llm.images import load_image, pillow

    pillow()
    import simplejpeg  # noqa: F401  (imports are not per-image memory)
    settings = ImageSettings(roots=[Path(path).parent])
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    base = _kb("VmRSS")
    started = time.perf_counter()
    held = []

    async def load() -> None:  # returns nothing: see the module's docstring
        held.append(await load_image(path, settings))

    anyio.run(load)
    (loaded,) = held
    after_load = _kb("VmHWM")
    sent = {}
    for adapter in (AnthropicAdapter, GeminiAdapter, OllamaAdapter):
        image, report = fit(loaded.image, Limits.of(adapter.capabilities), adapter.provider, loaded.original,
                            loaded.steps)
        sent[adapter.provider] = [report.sent.width, report.sent.height, report.sent.bytes]
        del image
    elapsed = time.perf_counter() - started
    print(json.dumps({"base_kb": base, "peak_load_kb": after_load, "peak_kb": _kb("VmHWM"),
                      "seconds": round(elapsed, 2), "sent": sent}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    from tests.images import exif_with, photo_jpeg

    folder = Path(tempfile.mkdtemp())
    for orientation in (1, 6):
        path = folder / f"photo-{orientation}.jpg"
        path.write_bytes(photo_jpeg(8000, 6000, quality=90, exif=exif_with(orientation)))
        size = path.stat().st_size
        print(f"8000×6000 JPEG, EXIF orientation {orientation}, {size / 1e6:.1f} MB")
        for run in range(args.runs):
            done = subprocess.run([sys.executable, __file__, "--child", str(path)], capture_output=True, text=True,
                                  check=True, timeout=300)
            figures = json.loads(done.stdout.strip().splitlines()[-1])
            growth = (figures["peak_kb"] - figures["base_kb"]) * 1024
            load_growth = (figures["peak_load_kb"] - figures["base_kb"]) * 1024
            print(f"  run {run + 1}: peak RSS growth {growth / 1e6:.1f} MB = {growth / size:.2f}× the file "
                  f"(load_image alone {load_growth / 1e6:.1f} MB), {figures['seconds']} s; sent {figures['sent']}")


if __name__ == "__main__":
    main()
