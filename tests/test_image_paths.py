"""Image paths: opened once and checked for what was opened, so a swapped symlink cannot leak a file.

Issue 18: checking a path and then opening it again by name let a symlink swapped in between send
a file from outside the allowed roots (15 of 300 calls). The race tests below swap, as fast as
another process can (atomically, with renameat2 on Linux), a symlink to an outside file with a
symlink to an inside one, with the inside file itself, or with a folder, while 1,000 loads run,
and count what each load got.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import anyio
import pytest

from mcp_llm.config import ImageSettings
from mcp_llm.errors import ImageError
from mcp_llm.images import load_image
from tests.images import image_bytes

pytestmark = [pytest.mark.anyio, pytest.mark.skipif(sys.platform == "win32", reason="POSIX paths, FIFOs, sockets")]

LOADS = 1000
CONCURRENT = 4  # loads in flight at once, each in its own worker thread


# Run in its own process, so the swaps are not held back by this process's GIL.
SWAPPER = """
import ctypes, os, signal, sys
mode, link, inside, outside = sys.argv[1:]
spare, stop, count = link + ".new", [], 0
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
libc = ctypes.CDLL(None, use_errno=True)
renameat2 = getattr(libc, "renameat2", None)

def exchange(a, b):  # atomically: Linux's renameat2(RENAME_EXCHANGE); else a rename that leaves a gap
    if renameat2 is not None and renameat2(-100, a.encode(), -100, b.encode(), 2) == 0:
        return
    os.rename(a, a + ".tmp"); os.rename(b, a); os.rename(a + ".tmp", b)

os.symlink(outside, spare)  # swapped, in one step, with `link`: a symlink to inside, the file, or the folder
print("ready", flush=True)
while not stop:
    exchange(link, spare)
    count += 1
print(count, flush=True)
"""
KNOWN = {"inside image", "refused: outside the roots", "refused: changed while opened", "refused: gone during a swap"}


async def _race(mode: str, spec: str, link: Path, inside: Path, outside: Path, settings: ImageSettings
                ) -> Counter[str]:
    """`LOADS` loads of `spec` while `link` is swapped; what each got, and how many swaps were made."""
    inside_bytes, secret = inside.read_bytes(), (outside / "secret.png" if outside.is_dir() else outside).read_bytes()
    outcomes: Counter[str] = Counter()
    limiter = anyio.Semaphore(CONCURRENT)

    async def one() -> None:
        async with limiter:
            try:
                loaded = await load_image(spec, settings)
            except ImageError as exc:
                message = exc.user_message()
                assert exc.hint, message
                outcomes["refused: outside the roots" if "outside the allowed roots" in message else
                         "refused: changed while opened" if "kept changing" in message else
                         "refused: gone during a swap" if "No file at" in message else f"refused: {message}"] += 1
                return
            if loaded.data == secret:
                outcomes["READ THE OUTSIDE FILE"] += 1
            else:
                assert loaded.data == inside_bytes, "neither the inside image nor the secret"
                outcomes["inside image"] += 1

    swapper = subprocess.Popen([sys.executable, "-c", SWAPPER, mode, str(link), str(inside), str(outside)],
                               stdout=subprocess.PIPE, text=True)
    try:
        assert swapper.stdout is not None and swapper.stdout.readline().strip() == "ready"
        started = time.monotonic()
        async with anyio.create_task_group() as tasks:
            for _ in range(LOADS):
                tasks.start_soon(one)
        elapsed = time.monotonic() - started
    finally:
        swapper.terminate()
        out, _ = swapper.communicate(timeout=10)
    outcomes["swaps"] = int(out.strip() or 0)
    print(f"\n{mode}: {dict(outcomes)} in {elapsed:.1f} s", file=sys.stderr)
    return outcomes


@pytest.mark.parametrize("mode", ["links", "file", "folder"])
async def test_a_path_swapped_to_a_symlink_during_loads_never_reads_the_outside_file(
    image_root: Path, tmp_path: Path, mode: str
) -> None:
    """links: the path is a symlink switched between a file inside and one outside; file: a regular
    file inside that becomes a symlink to the outside file; folder: a real folder that becomes a
    symlink to an outside folder holding a file of the same name. Each load gets the inside image or
    a clear refusal; none gets the outside file's bytes."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(image_bytes(6, 6, "PNG", color=(0, 0, 255)))  # valid: a leak would be sent
    inside = image_root / "inside.png"
    inside.write_bytes(image_bytes(6, 6, "PNG", color=(255, 0, 0)))
    settings = ImageSettings(roots=[image_root])
    if mode == "folder":
        link = image_root / "folder"
        link.mkdir()
        (link / "secret.png").write_bytes(inside.read_bytes())
        spec, inside_target, outside_target = str(link / "secret.png"), inside, outside
    else:
        link = image_root / "link.png"
        if mode == "links":
            link.symlink_to(inside)
        else:
            link.write_bytes(inside.read_bytes())
        spec, inside_target, outside_target = str(link), inside, outside / "secret.png"

    outcomes = await _race(mode, spec, link, inside_target, outside_target, settings)

    assert outcomes["READ THE OUTSIDE FILE"] == 0, outcomes
    assert set(outcomes) - {"swaps"} <= KNOWN, outcomes
    assert outcomes["inside image"] > 0 and outcomes["swaps"] > 100, outcomes  # it did race


# --- what no file name can be, and what is not a regular file: each a clear ImageError, none blocking --


@pytest.fixture
def settings(image_root: Path) -> ImageSettings:
    return ImageSettings(roots=[image_root])


def _special(root: Path) -> dict[str, str]:
    """Paths to refuse, made in `root`: {case: path}."""
    (root / "pic.png").write_bytes(image_bytes(4, 4))
    (root / "self.png").symlink_to(root / "self.png")
    (root / "ping.png").symlink_to("pong.png")
    (root / "pong.png").symlink_to("ping.png")
    os.mkfifo(root / "pipe.png")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "sock.png"))
    sock.close()
    return {
        "null byte": f"{root}/pic\x00.png",
        "name over 255 bytes": f"{root}/{'n' * 256}.png",
        "name over 255 bytes in UTF-8": f"{root}/{'é' * 128}.png",  # 128 characters, 256 bytes
        "path over PATH_MAX": f"{root}/" + "d/" * 2100 + "pic.png",
        "symlink to itself": f"{root}/self.png",
        "symlink loop": f"{root}/ping.png",
        "folder": str(root),
        "FIFO": f"{root}/pipe.png",
        "socket": f"{root}/sock.png",
        "file used as a folder": f"{root}/pic.png/inner.png",
        "unencodable": f"{root}/\ud800.png",
    }


EXPECTED = {
    "null byte": "null byte",
    "name over 255 bytes": "over the 255-byte limit",
    "name over 255 bytes in UTF-8": "over the 255-byte limit",
    "path over PATH_MAX": "byte limit",
    "symlink to itself": "symlink loop",
    "symlink loop": "symlink loop",
    "folder": "is not a file but a folder",
    "FIFO": "is not a file but a named pipe (FIFO)",
    "socket": "is not a file but a socket",
    "file used as a folder": "is a file, not a folder",
    "unencodable": "no file name on this system can hold",
}


@pytest.mark.parametrize("case", list(EXPECTED))
async def test_paths_no_file_can_have_and_special_files_are_clear_errors(image_root: Path, settings: ImageSettings,
                                                                         case: str) -> None:
    spec = _special(image_root)[case]
    with anyio.fail_after(10), pytest.raises(ImageError) as info:  # a FIFO must not block the read
        await load_image(spec, settings)
    assert EXPECTED[case] in info.value.user_message()
    assert info.value.hint


@pytest.mark.skipif(not Path("/dev/null").exists(), reason="no /dev")
@pytest.mark.parametrize("device", ["/dev/null", "/dev/zero", "/dev/tty"])
async def test_a_device_inside_the_roots_is_refused_without_opening_it(device: str) -> None:
    with anyio.fail_after(10), pytest.raises(ImageError, match="is not a file but a device"):
        await load_image(device, ImageSettings(roots=[Path("/dev")]))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
async def test_an_unreadable_file_says_permission_denied(image_root: Path, settings: ImageSettings) -> None:
    path = image_root / "locked.png"
    path.write_bytes(image_bytes(4, 4))
    path.chmod(0)
    with pytest.raises(ImageError, match="permission denied"):
        await load_image(str(path), settings)


async def test_symlinks_and_dots_that_stay_inside_are_followed(image_root: Path, tmp_path: Path,
                                                               settings: ImageSettings) -> None:
    """Relative and absolute symlinks, chains, `..` after a symlink (taken from where the link led,
    as the kernel does), a hop through a folder outside that leads back in, and the root reached
    through a symlink: the file opened is inside, so it is read."""
    (image_root / "real").mkdir()
    (image_root / "real" / "pic.png").write_bytes(raw := image_bytes(4, 4))
    (image_root / "sub").mkdir()
    (image_root / "sub" / "up").symlink_to("../real")  # relative
    (image_root / "abs").symlink_to(image_root / "real")  # absolute
    (image_root / "chain.png").symlink_to("abs/pic.png")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "back.png").symlink_to(image_root / "real" / "pic.png")
    (image_root / "via-outside.png").symlink_to(outside / "back.png")
    (tmp_path / "root-link").symlink_to(image_root)
    for spec in (f"{image_root}/sub/up/pic.png", f"{image_root}/abs/pic.png", f"{image_root}/chain.png",
                 f"{image_root}/sub/up/../real/./pic.png", f"{image_root}//real///pic.png",
                 f"{image_root}/sub/../real/pic.png", f"{image_root}/via-outside.png",
                 f"{tmp_path}/root-link/real/pic.png", f"{image_root}/abs/../abs/pic.png"):
        assert (await load_image(spec, settings)).data == raw, spec


@pytest.mark.parametrize("spec", ["{root}/sub/../../outside/cat.png", "{root}/escape/cat.png",
                                  "{root}/abs/../../outside/cat.png", "{root}/missing/../../outside/cat.png"])
async def test_dots_and_symlinks_that_leave_the_roots_are_refused(image_root: Path, tmp_path: Path,
                                                                   settings: ImageSettings, spec: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "cat.png").write_bytes(image_bytes(4, 4))
    (image_root / "sub").mkdir()
    (image_root / "escape").symlink_to(outside)
    (image_root / "abs").symlink_to(image_root / "sub")
    with pytest.raises(ImageError, match="outside the allowed roots"):
        await load_image(spec.format(root=image_root), settings)
