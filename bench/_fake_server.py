"""One of the test fakes (tests/fakes/), served from its own process, for the benchmarks.

    python bench/_fake_server.py ollama|gemini|anthropic [--delay-s 0.05]

prints the fake's base URL on stdout, then serves until its stdin closes (the benchmark that
started it exits or closes the pipe). Every completion request waits `--delay-s` before it is
answered, as a model would, or as long as a `[delay_ms=N]` tag in the prompt says; listings and
probes are answered at once.

In its own process, the fake's threads do not take the GIL from the client being measured (the
SDK called directly, or the MCP client), so the paths compared share nothing but the machine.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench._common import API_KEY, delay_in  # noqa: E402


def make_fake(provider: str) -> Any:
    if provider == "ollama":
        from tests.fakes.ollama_server import FakeOllama

        fake = FakeOllama()
    elif provider == "gemini":
        from tests.fakes.gemini_server import FakeGemini

        fake = FakeGemini(api_key=API_KEY)
    elif provider == "anthropic":
        from tests.fakes.anthropic_server import FakeAnthropic

        fake = FakeAnthropic(api_key=API_KEY)
    else:
        raise SystemExit(f"unknown provider {provider!r}")
    fake.keep_requests = False  # a long run would otherwise hold every request body
    return fake


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("provider", choices=("ollama", "gemini", "anthropic"))
    parser.add_argument("--delay-s", type=float, default=0.0)
    args = parser.parse_args()
    fake = make_fake(args.provider)
    default = args.delay_s
    fake.picker = lambda body: {"delay_s": delay_in(body) or default}
    with fake:
        print(fake.url, flush=True)
        sys.stdin.read()  # until the benchmark closes the pipe
        if fake.errors:
            print(f"the fake {args.provider} failed: {fake.errors!r}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
