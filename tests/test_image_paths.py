"""Image paths: opened once and checked for what was opened, so a swapped symlink cannot leak a file.

Issue 18: checking a path and then opening it again by name let a symlink swapped in between send
a file from outside the allowed roots (15 of 300 calls). The race tests below swap, as fast as
another process can (atomically, with renameat2 on Linux), a symlink to an outside file with a
symlink to an inside one, with the inside file itself, or with a folder, while 1,000 loads run,
and count what each load got.

The rest: what no file name can be and what is not a regular file, `..` and missing folders, the
size limit (by the size stated and by the bytes read), the step limit, descriptors all closed; and,
in a process of their own, another user than root (permissions), a process out of descriptors, and
a platform without `dir_fd` (Windows), where the path is read by name.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from mcp_llm.config import ImageSettings
from mcp_llm.errors import ImageError
from mcp_llm.images import load_image
from tests.images import image_bytes

pytestmark = [pytest.mark.anyio, pytest.mark.skipif(sys.platform == "win32", reason="POSIX paths, FIFOs, sockets")]

LOADS = 1000
CONCURRENT = 4  # loads in flight at once, each in its own worker thread
ROUNDS = 10  # at most, of LOADS loads each, for a race that must be seen to happen (`until`)


# Run in its own process, so the swaps are not held back by this process's GIL.
SWAPPER = """
import ctypes, os, signal, sys
link, spare, make, target = sys.argv[1:]
stop, count = [], 0
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
libc = ctypes.CDLL(None, use_errno=True)
renameat2 = getattr(libc, "renameat2", None)

def exchange(a, b):  # atomically: Linux's renameat2(RENAME_EXCHANGE); else a rename that leaves a gap
    if renameat2 is not None and renameat2(-100, a.encode(), -100, b.encode(), 2) == 0:
        return
    os.rename(a, a + ".tmp"); os.rename(b, a); os.rename(a + ".tmp", b)

if make == "symlink":
    os.symlink(target, spare)
elif make == "fifo":
    os.mkfifo(spare)
print("ready", flush=True)
while not stop:
    exchange(link, spare)
    count += 1
print(count, flush=True)
"""
KNOWN = {"inside image", "refused: outside the roots", "refused: changed while opened", "refused: gone during a swap"}
FIFO_REFUSED = "refused: a named pipe"
MOVED_OUT = "refused: moved outside while opened"
REPLACED = "refused: replaced between its check and its open"


def _label(message: str) -> str:
    return ("refused: outside the roots" if "outside the allowed roots (" in message else
            MOVED_OUT if "was moved outside the allowed roots while it was opened" in message else
            "refused: changed while opened" if "kept changing" in message else
            REPLACED if "changed while it was opened" in message else
            "refused: gone during a swap" if "No file at" in message else
            FIFO_REFUSED if "is not a file but a named pipe (FIFO)" in message else
            f"refused: {message}")


def _open_descriptors() -> int | None:
    return len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None


async def _race(spec: str, link: Path, spare: Path, settings: ImageSettings, reads: dict[bytes, str], *,
                make: str = "", target: Path | None = None, until: str | None = None) -> Counter[str]:
    """`LOADS` loads of `spec` while `link` and `spare` are exchanged, as fast as the swapper can (it
    first makes `spare`: a symlink to `target` for `make="symlink"`, a FIFO for "fifo"; else the test
    made it). What each load got (`reads` names the bytes a load may get), and how many swaps were
    made. With `until`, rounds of `LOADS` go on until that outcome is seen (at most `ROUNDS`): on a
    loaded machine the swapper may not run beside the loads for a whole round. No descriptor may be
    left open, or closed twice, by the loads."""
    outcomes: Counter[str] = Counter()
    limiter = anyio.Semaphore(CONCURRENT)

    async def one() -> None:
        async with limiter:
            try:
                loaded = await load_image(spec, settings)
            except ImageError as exc:
                assert exc.hint, exc.message
                outcomes[_label(exc.user_message())] += 1
                return
            assert loaded.data in reads, "bytes that are none of the files raced"
            outcomes[reads[loaded.data]] += 1

    descriptors = _open_descriptors()
    swapper = subprocess.Popen([sys.executable, "-c", SWAPPER, str(link), str(spare), make, str(target or "")],
                               stdout=subprocess.PIPE, text=True)
    try:
        assert swapper.stdout is not None and swapper.stdout.readline().strip() == "ready"
        started = time.monotonic()
        for _ in range(ROUNDS if until else 1):
            async with anyio.create_task_group() as tasks:
                for _ in range(LOADS):
                    tasks.start_soon(one)
            if until is None or outcomes[until]:
                break
        elapsed = time.monotonic() - started
    finally:
        swapper.terminate()
        out, _ = swapper.communicate(timeout=10)
    outcomes["swaps"] = int(out.strip() or 0)
    print(f"\n{link.name} <-> {spare.name}: {dict(outcomes)} in {elapsed:.1f} s", file=sys.stderr)
    assert _open_descriptors() == descriptors, f"descriptors open before: {descriptors}, after: {_open_descriptors()}"
    return outcomes


@pytest.mark.parametrize("mode", ["links", "file", "folder", "dots"])
async def test_a_path_swapped_to_a_symlink_during_loads_never_reads_the_outside_file(
    image_root: Path, tmp_path: Path, mode: str
) -> None:
    """links: the path is a symlink switched between a file inside and one outside; file: a regular
    file inside that becomes a symlink to the outside file; folder: a real folder that becomes a
    symlink to an outside folder holding a file of the same name; dots: that folder, with the path
    going into a folder in it and back out through `..` (walked again from "/", so a swap in between is
    seen). Each load gets the inside image or a clear refusal; none gets the outside file's bytes."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(secret := image_bytes(6, 6, "PNG", color=(0, 0, 255)))  # a leak would be sent
    inside = image_root / "inside.png"
    inside.write_bytes(image_bytes(6, 6, "PNG", color=(255, 0, 0)))
    settings = ImageSettings(roots=[image_root])
    if mode in ("folder", "dots"):
        link = image_root / "folder"
        link.mkdir()
        (link / "secret.png").write_bytes(inside.read_bytes())
        (link / "sub").mkdir()
        (outside / "sub").mkdir()
        spec = str(link / "secret.png") if mode == "folder" else f"{link}/sub/../secret.png"
        outside_target = outside
    else:
        link = image_root / "link.png"
        if mode == "links":
            link.symlink_to(inside)
        else:
            link.write_bytes(inside.read_bytes())
        spec, outside_target = str(link), outside / "secret.png"

    outcomes = await _race(spec, link, link.with_name(link.name + ".new"), settings,
                           {inside.read_bytes(): "inside image", secret: "READ THE OUTSIDE FILE"},
                           make="symlink", target=outside_target)

    assert outcomes["READ THE OUTSIDE FILE"] == 0, outcomes
    assert set(outcomes) - {"swaps"} <= KNOWN, outcomes
    assert outcomes["inside image"] > 0 and outcomes["swaps"] > 100, outcomes  # it did race


async def test_a_folder_exchanged_with_one_outside_during_loads_is_refused_once_it_is_outside(
        image_root: Path, tmp_path: Path, settings: ImageSettings) -> None:
    """The walk holds the folder it went into; if that folder is moved out of the roots before the
    file in it is opened (exchanged with a folder outside, the same file name in each), the open file's
    own path, read back from the kernel, is outside: refused. Both files hold the same image, so what
    counts is the refusal."""
    folder, outside = image_root / "folder", tmp_path / "outside"
    for place in (folder, outside):
        place.mkdir()
        (place / "pic.png").write_bytes(raw := image_bytes(6, 6, "PNG", color=(255, 0, 0)))

    with anyio.fail_after(100):
        outcomes = await _race(str(folder / "pic.png"), folder, outside, settings, {raw: "inside image"},
                               until=MOVED_OUT)

    assert set(outcomes) - {"swaps"} <= {"inside image", MOVED_OUT}, outcomes
    assert outcomes["inside image"] > 0 and outcomes[MOVED_OUT] > 0 and outcomes["swaps"] > 100, outcomes


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


async def test_a_file_swapped_with_a_fifo_during_loads_is_refused_never_read(image_root: Path, tmp_path: Path,
                                                                             settings: ImageSettings) -> None:
    """The walk saw a regular file; a FIFO swapped in before the open is refused by what the open
    descriptor is (fstat), not read as an empty or endless image, and no load blocks on it."""
    link = image_root / "pic.png"
    link.write_bytes(raw := image_bytes(6, 6, "PNG", color=(255, 0, 0)))

    with anyio.fail_after(100):
        outcomes = await _race(str(link), link, image_root / "pipe.png", settings, {raw: "inside image"}, make="fifo",
                               until=FIFO_REFUSED)

    assert set(outcomes) - {"swaps"} <= {"inside image", FIFO_REFUSED, "refused: gone during a swap"}, outcomes
    assert outcomes["inside image"] > 0 and outcomes[FIFO_REFUSED] > 0 and outcomes["swaps"] > 100, outcomes


# --- folders, `..`, missing folders, the size limit, the step limit, descriptors ----------------------


@pytest.mark.parametrize("spec", ["{root}/sub/..", "{root}/sub/../", "{root}/.", "{root}/sub/../sub/.."])
async def test_a_path_ending_at_a_folder_through_dots_is_refused_as_a_folder(image_root: Path,
                                                                            settings: ImageSettings,
                                                                            spec: str) -> None:
    (image_root / "sub").mkdir()
    with anyio.fail_after(10), pytest.raises(ImageError, match="is not a file but a folder") as info:
        await load_image(spec.format(root=image_root), settings)
    assert info.value.hint


async def test_the_file_system_root_is_a_folder_too() -> None:
    with anyio.fail_after(10), pytest.raises(ImageError, match=r"^/ is not a file but a folder"):
        await load_image("/", ImageSettings(roots=[Path("/")]))


async def test_a_missing_folder_followed_by_dots_is_judged_where_the_dots_lead(image_root: Path,
                                                                              settings: ImageSettings) -> None:
    """`nowhere/..` cannot be walked (the folder is missing), so the path is read as written, as
    realpath does: back inside the roots it is a missing file, not a path outside them."""
    (image_root / "pic.png").write_bytes(image_bytes(4, 4))
    spec = f"{image_root.parent}/nowhere/../{image_root.name}/pic.png"
    with anyio.fail_after(10), pytest.raises(ImageError) as info:
        await load_image(spec, settings)
    assert info.value.message == f"No file at {spec}."
    deeper = f"{image_root}/nowhere/deeper/../../../{image_root.name}/absent.png"
    with anyio.fail_after(10), pytest.raises(ImageError, match=r"^No file at"):
        await load_image(deeper, settings)


async def test_a_file_over_max_bytes_is_refused_with_its_own_size(image_root: Path) -> None:
    path = image_root / "big.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(3_000_000))
    with anyio.fail_after(10), pytest.raises(ImageError) as info:
        await load_image(str(path), ImageSettings(roots=[image_root], max_bytes=1_000_000))
    assert info.value.message == f"The image from {path} is 3.0 MB, over the 1.0 MB limit."


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="no procfs")
async def test_a_file_longer_than_its_reported_size_is_still_held_to_max_bytes() -> None:
    """procfs (like sysfs and some FUSE file systems) reports a size of 0 for a file that holds
    more: the limit holds for the bytes read, not only for the size the file system states."""
    assert os.stat("/proc/self/maps").st_size == 0 and len(Path("/proc/self/maps").read_bytes()) > 1000
    with anyio.fail_after(10), pytest.raises(ImageError, match=r"^The image from /proc/\d+/maps is .*over the"):
        await load_image("/proc/self/maps", ImageSettings(roots=[Path("/proc")], max_bytes=1000))


async def test_a_chain_of_40_symlinks_is_followed_and_one_more_is_a_loop(image_root: Path,
                                                                         settings: ImageSettings) -> None:
    """As the kernel does (Linux's MAXSYMLINKS): 40 symlinks followed for one path, not 41."""
    from mcp_llm.image_sources import MAX_SYMLINKS

    (image_root / "pic.png").write_bytes(raw := image_bytes(4, 4))
    for i in range(MAX_SYMLINKS + 1):
        (image_root / f"s{i}").symlink_to(f"s{i + 1}" if i < MAX_SYMLINKS else "pic.png")
    with anyio.fail_after(10):
        assert (await load_image(f"{image_root}/s1", settings)).data == raw  # 40 symlinks
        with pytest.raises(ImageError, match=f"has a symlink loop \\(over {MAX_SYMLINKS} symlinks followed\\)"):
            await load_image(f"{image_root}/s0", settings)  # 41


def _dots_chain(root: Path, dots: list[int]) -> str:
    """Absolute symlinks l0 → l1 → … → pic.png in `root`, the i-th target starting with `dots[i]` '..'
    taken at "/" (where they stay): a path of (r + 1) + Σ (dots[i] + r + 1) steps, r being root's depth."""
    for i in range(len(dots)):
        nxt = f"l{i + 1}" if i + 1 < len(dots) else "pic.png"
        (root / f"l{i}").unlink(missing_ok=True)
        (root / f"l{i}").symlink_to("/" + "../" * dots[i] + f"{str(root).lstrip('/')}/{nxt}")
    return f"{root}/l0"


async def test_a_path_of_more_than_max_steps_is_refused_and_one_of_max_steps_is_read(image_root: Path,
                                                                                   settings: ImageSettings) -> None:
    """A hostile path can make the walk look up far more components than it has characters (each
    symlink brings up to 4,095 more): exactly `MAX_STEPS` lookups are made, one more is refused."""
    from mcp_llm.image_sources import MAX_STEPS

    (image_root / "pic.png").write_bytes(raw := image_bytes(4, 4))
    depth = len(image_root.parts) - 1
    links = (MAX_STEPS - 2 * (depth + 1)) // (1000 + depth + 1)  # links of 1,000 '..', then one for the rest
    dots = [1000] * links + [MAX_STEPS - (depth + 1) - links * (1000 + depth + 1) - (depth + 1)]
    assert 0 <= dots[-1] <= 1000 + depth and (depth + 1) + sum(d + depth + 1 for d in dots) == MAX_STEPS
    with anyio.fail_after(30):
        assert (await load_image(_dots_chain(image_root, dots), settings)).data == raw
        with pytest.raises(ImageError, match="takes too many steps to follow") as info:
            await load_image(_dots_chain(image_root, [*dots[:-1], dots[-1] + 1]), settings)
    assert info.value.hint


def _file_at_length(root: Path, length: int, data: bytes) -> str:
    """A file whose path (no symlinks in it) is `length` bytes long, made relative to open folders (a
    path that long cannot be handed to the kernel whole); returns a short path to it, through a symlink
    in `root` to its folder."""
    base = root / f"deep{length}"
    base.mkdir()
    room, folders = length - len(str(base)) - 1, []  # for "d…/d…/…/f…"
    while room > 250:
        folders.append("d" * 200)
        room -= 201
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for name in folders:
            os.mkdir(name, dir_fd=fd)
            child = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        file = os.open("f" * room, os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(file, data)
        os.close(file)
    finally:
        os.close(fd)
    hop = root / f"hop{length}"
    hop.symlink_to("/".join([base.name, *folders]))
    assert len(os.fsencode("/".join([str(base), *folders, "f" * room]))) == length
    return f"{hop}/{'f' * room}"


async def test_a_path_is_read_up_to_path_max_and_refused_from_it(image_root: Path, settings: ImageSettings) -> None:
    """What open(2) takes: a path of PATH_MAX - 1 bytes (4,095 on Linux), as given or as its symlinks
    lead; PATH_MAX bytes are refused, saying the limit. A name of 255 bytes is read, too."""
    from mcp_llm.image_sources import NAME_MAX, PATH_MAX

    (image_root / "pic.png").write_bytes(raw := image_bytes(4, 4))
    longest = f"{image_root}" + "/" * (PATH_MAX - 1 - len(f"{image_root}pic.png")) + "pic.png"
    (image_root / ("n" * (NAME_MAX - 4) + ".png")).write_bytes(raw)
    with anyio.fail_after(20):
        assert (await load_image(longest, settings)).data == raw and len(longest) == PATH_MAX - 1
        with pytest.raises(ImageError) as info:
            await load_image(longest.replace("/pic.png", "//pic.png"), settings)
        assert info.value.message == (f"The image path is {PATH_MAX} bytes long, over the system's "
                                      f"{PATH_MAX - 1}-byte limit.")
        assert (await load_image(f"{image_root}/{'n' * (NAME_MAX - 4)}.png", settings)).data == raw
        assert (await load_image(_file_at_length(image_root, PATH_MAX - 1, raw), settings)).data == raw
        spec = _file_at_length(image_root, PATH_MAX, raw)
        with pytest.raises(ImageError) as info:
            await load_image(spec, settings)
    assert info.value.message == (f"The image path {spec}, once its symlinks are followed, is over the system's "
                                  f"{PATH_MAX - 1}-byte limit.")


@pytest.mark.skipif(not Path("/proc/self/mem").exists(), reason="no procfs")
async def test_a_file_that_fails_to_read_says_why() -> None:
    """/proc/self/mem opens, but reading its first bytes (an address never mapped) is an I/O error."""
    with anyio.fail_after(10), pytest.raises(ImageError) as info:
        await load_image("/proc/self/mem", ImageSettings(roots=[Path("/proc")]))
    assert info.value.message == "Cannot read /proc/self/mem: Input/output error."
    assert info.value.hint


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="no /proc/self/fd to count descriptors in")
async def test_no_descriptor_is_left_open_by_reads_or_refusals(image_root: Path, tmp_path: Path,
                                                               settings: ImageSettings) -> None:
    """Every folder walked through and every file opened is closed again, whatever the outcome:
    counted in /proc/self/fd before and after 20 rounds of reads and refusals."""
    (image_root / "real").mkdir()
    (image_root / "real" / "pic.png").write_bytes(image_bytes(4, 4))
    (image_root / "abs").symlink_to(image_root / "real")  # absolute: the walk starts again from "/"
    (image_root / "rel").symlink_to("real")
    (image_root / "loop.png").symlink_to("loop.png")
    (image_root / "huge.png").write_bytes(bytes(2_000))
    os.mkfifo(image_root / "pipe.png")
    (tmp_path / "outside.png").write_bytes(image_bytes(4, 4))
    specs = [f"{image_root}/real/pic.png", f"{image_root}/abs/pic.png", f"{image_root}/rel/../abs/pic.png",
             f"{image_root}/real/../rel/./pic.png", f"{tmp_path}/outside.png", f"{image_root}/absent.png",
             f"{image_root}/real", f"{image_root}/pipe.png", f"{image_root}/loop.png", f"{image_root}/huge.png",
             f"{image_root}/real/pic.png/inner.png"]
    limited = settings.model_copy(update={"max_bytes": 1_000})

    async def every_spec() -> list[str]:
        outcomes = []
        for spec in specs:
            try:
                await load_image(spec, limited)
                outcomes.append("read")
            except ImageError as exc:
                outcomes.append(exc.user_message())
        return outcomes

    with anyio.fail_after(60):
        first = await every_spec()  # lazy imports and worker threads settle first
        before = len(os.listdir("/proc/self/fd"))
        for _ in range(20):
            assert await every_spec() == first
        after = len(os.listdir("/proc/self/fd"))
    assert first[:4] == ["read"] * 4 and all(outcome != "read" for outcome in first[4:]), first
    assert after == before, f"{after - before} descriptors left open by {20 * len(specs)} loads"


# --- in a process of its own: another user, too few descriptors, a platform without dir_fd ------------


# Loads `specs` and prints, for each, the sha256 of what was read or the error a user sees, and how many
# descriptors the loads left open (or closed that were not theirs); or runs `_race` with `race`. Before the
# loads: `no_dir_fd` makes the platform look as Windows does (open/stat/readlink take no dir_fd, the one
# fact that picks the by-name fallback); `unprivileged` drops root to nobody (root reads any file);
# `spare_fds` leaves that many descriptors free under the process's limit; `close_stdin` frees
# descriptor 0, so the walk's first folder gets it (an HTTP server started with stdin closed).
LOADER = """
import asyncio, ctypes, hashlib, json, os, resource, sys
from pathlib import Path
job = json.loads(sys.argv[1])
if job["no_dir_fd"]:
    os.supports_dir_fd.difference_update({os.open, os.stat, os.readlink})
from mcp_llm.config import ImageSettings
from mcp_llm.errors import ImageError
from mcp_llm.images import load_image
from mcp_llm import image_sources
settings = ImageSettings(roots=job["roots"], max_bytes=job["max_bytes"])

async def load(spec):
    try:
        return {"sha": hashlib.sha256((await load_image(spec, settings)).data).hexdigest()}
    except ImageError as exc:
        return {"error": exc.message, "hint": exc.hint}
    except Exception as exc:
        return {"crash": repr(exc)}

def open_fds():
    return len(os.listdir("/proc/self/fd"))

async def main():
    assert image_sources._WALKABLE is not job["no_dir_fd"]
    assert "sha" in await load(job["warm"])  # lazy imports and the worker thread, before any limit
    if job["race"]:
        from tests.test_image_paths import _race
        race = job["race"]
        reads = {bytes.fromhex(data): label for data, label in race["reads"].items()}
        print(json.dumps(await _race(race["spec"], Path(race["link"]), Path(race["spare"]), settings, reads,
                                     until=race["until"])))
        return
    if job["unprivileged"] and os.geteuid() == 0:
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)
        ctypes.CDLL(None).prctl(4, 1)  # PR_SET_DUMPABLE, as for a process started by that user: /proc/self/fd readable
    if job["close_stdin"]:
        os.close(0)
    before = open_fds()
    held = []
    if job["spare_fds"] is not None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (open_fds() + 8, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
        try:
            while True:
                held.append(os.open("/dev/null", os.O_RDONLY))
        except OSError:
            pass
        for _ in range(job["spare_fds"]):
            os.close(held.pop())
    results = [await load(spec) for spec in job["specs"]]
    for fd in held:
        os.close(fd)
    print(json.dumps({"results": results, "descriptors_added": open_fds() - before}))

asyncio.run(main())
"""


def _run_loader(job: dict[str, Any]) -> Any:
    done = subprocess.run([sys.executable, "-c", LOADER, json.dumps(job)], capture_output=True, text=True,
                          timeout=100, cwd=Path(__file__).parent.parent)  # a FIFO opened blocking would hang here
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _load_elsewhere(specs: list[str], roots: list[Path], warm: Path, *, max_bytes: int = 20_000_000,
                    no_dir_fd: bool = False, unprivileged: bool = False, spare_fds: int | None = None,
                    close_stdin: bool = False) -> list[dict[str, str]]:
    """What each of `specs` gives in a child process set up as asked, checking that the loads there
    left no descriptor open and closed none of the process's own."""
    out = _run_loader({"specs": specs, "roots": [str(root) for root in roots], "warm": str(warm),
                       "max_bytes": max_bytes, "no_dir_fd": no_dir_fd, "unprivileged": unprivileged,
                       "spare_fds": spare_fds, "close_stdin": close_stdin, "race": None})
    assert out["descriptors_added"] == 0, out
    return out["results"]  # type: ignore[no-any-return]


def _sha(data: bytes) -> dict[str, str]:
    return {"sha": hashlib.sha256(data).hexdigest()}


@pytest.fixture
def shared_root() -> Iterator[Path]:
    """An image root that user nobody can reach (tmp_path's parents are root's own, mode 700)."""
    top = Path(tempfile.mkdtemp(prefix="mcp-llm-paths-"))
    top.chmod(0o755)
    root = top / "images"
    root.mkdir(mode=0o755)
    root.chmod(0o755)
    yield root
    for folder, _, _ in os.walk(top):
        Path(folder).chmod(0o755)
    shutil.rmtree(top)


def test_what_the_user_cannot_read_says_permission_denied(shared_root: Path) -> None:
    """As a user other than root: a file without read permission, and a folder without search
    permission (its entries cannot even be looked at), are each 'permission denied'; a folder with
    search permission only (chmod 711) is walked through."""
    (shared_root / "pic.png").write_bytes(raw := image_bytes(4, 4))
    (shared_root / "pic.png").chmod(0o644)
    (shared_root / "locked.png").write_bytes(image_bytes(4, 4))
    (shared_root / "locked.png").chmod(0)
    for name, mode in (("closed", 0o600), ("search-only", 0o711)):
        (shared_root / name).mkdir()
        (shared_root / name / "pic.png").write_bytes(raw)
        (shared_root / name / "pic.png").chmod(0o644)
        (shared_root / name).chmod(mode)
    specs = [f"{shared_root}/locked.png", f"{shared_root}/closed/pic.png", f"{shared_root}/search-only/pic.png"]

    results = _load_elsewhere(specs, [shared_root], shared_root / "pic.png", unprivileged=True)

    hint = "Check the permissions of the file and of the folders above it."
    assert results == [{"error": f"Cannot read {specs[0]}: permission denied.", "hint": hint},
                       {"error": f"Cannot read {specs[1]}: permission denied.", "hint": hint},
                       _sha(raw)]


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts descriptors in /proc/self/fd")
def test_a_server_out_of_descriptors_says_so_and_reads_again_once_some_are_free(image_root: Path) -> None:
    """With no descriptor free, or one (the walk holds two at a time: a folder and the next), a
    path is refused with the system's reason; with two free it is read."""
    (image_root / "sub").mkdir()
    (image_root / "sub" / "pic.png").write_bytes(raw := image_bytes(4, 4))
    spec = f"{image_root}/sub/pic.png"
    hint = "Check the path and the file."
    for spare, expected in ((0, {"error": f"Cannot read {spec}: Too many open files.", "hint": hint}),
                            (1, {"error": f"Cannot read {spec}: Too many open files.", "hint": hint}),
                            (2, _sha(raw))):
        assert _load_elsewhere([spec], [image_root], image_root / "sub" / "pic.png", spare_fds=spare) == [expected]


def test_without_dir_fd_paths_are_read_by_name_with_the_same_checks(image_root: Path, tmp_path: Path) -> None:
    """Where open/stat/readlink take no dir_fd (Windows), the path is resolved, checked and opened by
    name, and the file opened must be the one checked (same device and inode). A user sees the same
    reads and the same refusals: outside the roots, missing, a folder, a FIFO (not opened, so not
    blocking), a symlink loop, over max_bytes by its size or by what it holds (procfs), a read that
    fails."""
    (image_root / "pic.png").write_bytes(raw := image_bytes(4, 4))
    (image_root / "link.png").symlink_to("pic.png")
    (image_root / "sub").mkdir()
    (image_root / "loop.png").symlink_to("loop.png")
    (image_root / "big.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(2_999_992))
    os.mkfifo(image_root / "pipe.png")
    (tmp_path / "outside.png").write_bytes(raw)
    (image_root / "escape.png").symlink_to(tmp_path / "outside.png")
    specs = {
        "file": f"{image_root}/pic.png",
        "symlink inside": f"{image_root}/link.png",
        "dots inside": f"{image_root}/sub/../pic.png",
        "outside": f"{tmp_path}/outside.png",
        "symlink out": f"{image_root}/escape.png",
        "missing": f"{image_root}/absent.png",
        "folder": f"{image_root}/sub",
        "FIFO": f"{image_root}/pipe.png",
        "loop": f"{image_root}/loop.png",
        "over max_bytes": f"{image_root}/big.png",
        "procfs": "/proc/self/maps",
        "unreadable": "/proc/self/mem",
    }

    got = dict(zip(specs, _load_elsewhere(list(specs.values()), [image_root, Path("/proc")], image_root / "pic.png",
                                          max_bytes=2_000, no_dir_fd=True), strict=True))

    for case in ("file", "symlink inside", "dots inside"):
        assert got[case] == _sha(raw), case
    for case in ("outside", "symlink out"):
        assert got[case]["error"].startswith(f"The image path {specs[case]} is outside the allowed roots"), got[case]
    assert got["missing"]["error"] == f"No file at {specs['missing']}."
    assert got["folder"]["error"] == f"{specs['folder']} is not a file but a folder."
    assert got["FIFO"]["error"] == (f"{specs['FIFO']} is not a file but a named pipe (FIFO); "
                                    "only a regular file is read.")
    assert re.search(r"symlink loop|symbolic links", got["loop"]["error"], re.I), got["loop"]
    assert got["over max_bytes"]["error"] == (f"The image from {specs['over max_bytes']} is 3.0 MB, "
                                              "over the 0.0 MB limit.")  # its size, not the bytes read
    assert re.match(r"The image from /proc/\d+/maps is .* over the 0\.0 MB limit\.$", got["procfs"]["error"]), got
    assert got["unreadable"]["error"] == "Cannot read /proc/self/mem: Input/output error."
    assert all(result.get("hint") for result in got.values() if "error" in result), got


def test_without_dir_fd_a_file_replaced_between_its_check_and_its_open_is_refused(image_root: Path) -> None:
    """The by-name fallback opens the file by name after checking it: if another file was swapped in
    between, the one opened (device and inode) is not the one checked, and the load is refused. Each
    load gets one of the two files whole, or that refusal."""
    (image_root / "pic.png").write_bytes(first := image_bytes(6, 6, "PNG", color=(255, 0, 0)))
    (image_root / "other.png").write_bytes(second := image_bytes(6, 6, "PNG", color=(0, 255, 0)))
    race = {"spec": f"{image_root}/pic.png", "link": f"{image_root}/pic.png", "spare": f"{image_root}/other.png",
            "reads": {first.hex(): "the file", second.hex(): "the file swapped in"}, "until": REPLACED}

    outcomes = _run_loader({"specs": [], "roots": [str(image_root)], "warm": f"{image_root}/pic.png",
                            "max_bytes": 20_000_000, "no_dir_fd": True, "unprivileged": False, "spare_fds": None,
                            "close_stdin": False, "race": race})

    assert set(outcomes) - {"swaps"} <= {"the file", "the file swapped in", REPLACED}, outcomes
    assert outcomes.get("the file") and outcomes.get(REPLACED) and outcomes["swaps"] > 100, outcomes


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts descriptors in /proc/self/fd")
def test_with_stdin_closed_the_walk_may_hold_descriptor_0_and_closes_it(image_root: Path) -> None:
    """A server started with stdin closed (over HTTP, say) hands out descriptor 0 first: the walk's
    first folder then holds it, and a refusal raised there must close it like any other."""
    (image_root / "pic.png").write_bytes(raw := image_bytes(4, 4))
    specs = ["/" + "n" * 256, f"{image_root}/pic.png", "/no-such-folder/pic.png"]
    results = _load_elsewhere(specs, [Path("/")], image_root / "pic.png", close_stdin=True)
    assert results[1:] == [_sha(raw), {"error": f"No file at {specs[2]}.",
                                       "hint": "Check the path; it must be on the machine running mcp-llm."}]
    assert "over the 255-byte limit" in results[0]["error"]
