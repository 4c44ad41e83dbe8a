"""Run a test script in a network namespace of its own, so nothing it sends can leave the machine.

`unshare --net --mount` gives the script a namespace with only a loopback interface (brought up
here) and a private mount table, where /etc/hosts and /etc/resolv.conf are bind-mounted from the
test's own files: names resolve as the test says, through the real system resolver, and a name it
does not list is asked of a nameserver on loopback, where none answers. Addresses the test wants
to look public (8.8.8.8) or private (10.0.0.1…) are added to that namespace's loopback only.
Needs root (the test suite runs as root here); tests skip without it.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


def netns_available() -> bool:
    if os.geteuid() != 0 or not (shutil.which("unshare") and shutil.which("ip")):
        return False
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True, timeout=10, check=False)
    return probe.returncode == 0


needs_netns = pytest.mark.skipif(not netns_available(), reason="needs root and unshare(1) for a network namespace")


def run_in_netns(module: str, tmp_path: Path, *, addresses: list[str], hosts: dict[str, str],
                 timeout_s: float = 180) -> Any:
    """Run `python -m module` in a fresh network namespace; return the JSON it prints last on stdout."""
    hosts_file = tmp_path / "hosts"
    hosts_file.write_text("127.0.0.1 localhost\n::1 localhost ip6-localhost\n"
                          + "".join(f"{address} {name}\n" for name, address in hosts.items()))
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
    setup = ["set -e", "ip link set lo up"]
    setup += [f"ip addr add {shlex.quote(a)}/{128 if ':' in a else 32} dev lo" for a in addresses]
    setup += [f"mount --bind {shlex.quote(str(hosts_file))} /etc/hosts",
              f"mount --bind {shlex.quote(str(resolv))} /etc/resolv.conf",
              f"exec {shlex.quote(sys.executable)} -m {module}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env = {k: v for k, v in env.items() if not k.lower().endswith("_proxy")}
    done = subprocess.run(["unshare", "--net", "--mount", "--propagation", "private", "sh", "-c", "; ".join(setup)],
                          capture_output=True, text=True, timeout=timeout_s, env=env, cwd=ROOT, check=False)
    assert done.returncode == 0, f"the namespace script failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])
