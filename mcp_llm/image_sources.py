"""Where an image's bytes come from: a file path, a `data:` URI, raw base64, or a URL.

A path must lie inside `images.roots`, or a root the MCP client declared. Checking a path and
then opening it again by name can be raced (issue 18: a symlink swapped in between sent a file
from outside the roots, 15 times in 300 calls), so a path is opened once, one component at a
time: each folder with `O_NOFOLLOW | O_DIRECTORY` relative to the folder before it (a file
descriptor we hold, not a name that can be changed under us), each symlink read and followed
by us, and `..` taken back along the folders actually walked. What the walk reaches is a path
without symlinks, checked against the roots before the file itself is opened (`O_NOFOLLOW`,
`O_NONBLOCK`: a symlink or FIFO swapped in since cannot redirect or block the read); the
descriptor must then be a regular file, and on Linux and macOS its path, read back from the
kernel, must still lie inside the roots (a folder moved out during the walk). The bytes are read
from that same descriptor. Nothing outside the roots is ever opened except the folders above
them, so a device or FIFO out there is never touched.

URLs are off unless `images.allow_urls`, and then reach public addresses only (`url_fetch`).
"""

from __future__ import annotations

import base64
import binascii
import errno
import os
import re
import stat
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import anyio

from mcp_llm.config import ImageSettings
from mcp_llm.errors import ImageError

_DATA_URI = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?:;[\w-]+=[^;,]*)*(?P<b64>;base64)?,(?P<data>.*)$", re.S)
_BASE64 = re.compile(r"^[A-Za-z0-9+/_-]+={0,2}$")
MIN_BASE64_CHARS = 32
URL_TIMEOUT_S = 20.0
RootsProvider = Callable[[], Awaitable[Sequence[Path]]]


def _limit(name: str, default: int) -> int:
    try:
        return int(os.pathconf("/", name))
    except (OSError, ValueError, AttributeError):
        return default


PATH_MAX = _limit("PC_PATH_MAX", 4096)  # what open(2) would take; the walk never hands the kernel a whole path
NAME_MAX = _limit("PC_NAME_MAX", 255)
MAX_SYMLINKS = 40  # Linux's MAXSYMLINKS: more is a loop
MAX_STEPS = 16_384  # components looked up, symlink targets and `..` re-walks included: bounds a hostile path
OPEN_ATTEMPTS = 3  # a path changed under the walk is walked again, this many times at most
# O_PATH: a folder needs only search permission to be walked through (chmod 711), as with open(2) by name.
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_PATH", 0) | getattr(os, "O_CLOEXEC", 0)
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0)
_WALKABLE = os.open in os.supports_dir_fd and os.stat in os.supports_dir_fd and os.readlink in os.supports_dir_fd


async def read_source(spec: str, settings: ImageSettings, client_roots: RootsProvider | None = None
                      ) -> tuple[bytes, str]:
    """The bytes the caller's `image` argument stands for, and how to name it in an error.

    `client_roots`, when given, returns the roots the MCP client declared; it is asked only for
    a path outside `images.roots`."""
    spec = spec.strip()
    if not spec:
        raise ImageError("The image argument is empty.", hint="Pass a file path, a data: URI or base64 data.")
    if spec.startswith("data:"):
        return _decode_data_uri(spec), "the data: URI"
    if spec.startswith(("http://", "https://")):
        return await _fetch_url(spec, settings), spec if len(spec) <= 200 else spec[:200] + "…"
    if (raw := _try_base64(spec)) is not None:
        return raw, "the base64 data"
    if _looks_like_base64(spec):
        raise ImageError("The base64 data is not an image (no PNG, JPEG, GIF or WebP signature).",
                         hint="Pass the base64 of an image file, or a file path.")
    return await read_path(spec, settings, client_roots)


def sniff(raw: bytes) -> str | None:
    """The format by magic bytes, for the formats we pass through; None for anything else."""
    if raw.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if raw.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if raw.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if raw[:4] == b"RIFF" and raw[8:12] == b"WEBP":
        return "WEBP"
    return None


def check_size(size: int, max_bytes: int, origin: str) -> None:
    if size > max_bytes:
        raise ImageError(
            f"The image from {origin} is {size / 1e6:.1f} MB, over the {max_bytes / 1e6:.1f} MB limit.",
            hint="Send a smaller image, or raise images.max_bytes in the config file.",
        )


# --- data: URIs, base64, URLs --------------------------------------------------------------------


def _decode_data_uri(spec: str) -> bytes:
    match = _DATA_URI.match(spec)
    if not match:
        raise ImageError("The data: URI is malformed.", hint="Use the form data:image/png;base64,<data>.")
    if not match.group("b64"):
        raise ImageError("The data: URI is not base64-encoded.", hint="Use data:image/png;base64,<data>.")
    try:
        return _b64decode(match.group("data"))
    except ValueError:
        raise ImageError("The data: URI's base64 data is invalid.", hint="Re-encode the image.") from None


def _b64decode(text: str) -> bytes:
    compact = "".join(text.split())
    compact += "=" * (-len(compact) % 4)
    if "-" in compact or "_" in compact:
        return base64.urlsafe_b64decode(compact)
    return base64.b64decode(compact, validate=True)


def _try_base64(spec: str) -> bytes | None:
    """Raw base64 of an image, or None if `spec` is something else (most likely a path)."""
    compact = "".join(spec.split())
    if len(compact) < MIN_BASE64_CHARS or not _BASE64.match(compact):
        return None
    try:
        raw = _b64decode(compact)
    except (ValueError, binascii.Error):
        return None
    return raw if sniff(raw) else None


def _looks_like_base64(spec: str) -> bool:
    """Base64 of something (not a path): long, of the base64 alphabet, decodable, not path-shaped."""
    compact = "".join(spec.split())
    if len(compact) < MIN_BASE64_CHARS or compact.startswith(("/", "~")) or not _BASE64.match(compact):
        return False
    try:
        _b64decode(compact)
    except (ValueError, binascii.Error):
        return False
    return True


async def _fetch_url(url: str, settings: ImageSettings) -> bytes:
    if not settings.allow_urls:
        raise ImageError(
            "Image URLs are disabled.",
            hint="Download the image and pass its path or base64 data, or set images.allow_urls = true.",
        )
    from mcp_llm.url_fetch import fetch

    return await fetch(url, max_bytes=settings.max_bytes, allow_private=settings.allow_private_urls,
                       timeout_s=URL_TIMEOUT_S)


# --- paths -----------------------------------------------------------------------------------------


class _Outside(Exception):
    """The path leads outside the roots given (the caller may ask the client for more roots)."""


class _Changed(Exception):
    """An entry changed between looking at it and opening it: walk the path again."""


@dataclass
class _Reached:
    """Where the walk ended: `parent` (a folder descriptor, owned) and the entry `name` in it, whose
    path without symlinks is `real`. `kind` is what lstat saw: "file", "dir", "missing", or another
    file type; `why` says why a missing path is missing."""

    parent: int
    name: str | None
    real: str
    kind: str
    why: str = ""


async def read_path(spec: str, settings: ImageSettings, client_roots: RootsProvider | None) -> tuple[bytes, str]:
    path = _checked_text(spec)
    roots = [Path(root) for root in settings.roots]
    try:
        return await anyio.to_thread.run_sync(_read_inside, path, spec, roots, settings.max_bytes)
    except _Outside:
        if client_roots is None:
            raise _outside_error(spec, roots) from None
    declared = await client_roots()
    roots += await anyio.to_thread.run_sync(lambda: [Path(root).resolve() for root in declared])
    try:
        return await anyio.to_thread.run_sync(_read_inside, path, spec, roots, settings.max_bytes)
    except _Outside:
        raise _outside_error(spec, roots) from None


def _checked_text(spec: str) -> str:
    """The absolute path `spec` names (`~` expanded), or a clear error for what no file name can be."""
    if "\x00" in spec:
        raise ImageError("The image path contains a null byte (\\0), which no file name can hold.",
                         hint="Pass the path exactly as it is on disk; a \\0 means the text was cut or joined wrongly.")
    path = os.path.expanduser(spec)
    if not os.path.isabs(path):
        raise ImageError(
            f"The image path {spec!r} is relative.",
            hint="Pass an absolute path (the server's working directory is not the client's).",
        )
    try:
        encoded = os.fsencode(path)
    except UnicodeError:
        raise ImageError("The image path has characters no file name on this system can hold.",
                         hint="Pass the path exactly as the file system shows it.") from None
    if len(encoded) >= PATH_MAX:
        raise ImageError(f"The image path is {len(encoded)} bytes long, over the system's {PATH_MAX - 1}-byte limit.",
                         hint="Pass a shorter path: move the image nearer the top of one of images.roots.")
    return path


def _outside_error(spec: str, roots: Sequence[Path]) -> ImageError:
    listed = ", ".join(str(root) for root in roots) or "(none)"
    return ImageError(
        f"The image path {spec} is outside the allowed roots ({listed}).",
        hint="Move the file under one of them, or add its folder to images.roots in the config file.",
    )


def _inside(real: str, roots: Sequence[Path]) -> bool:
    pure = PurePosixPath(real) if os.sep == "/" else Path(real)
    return any(pure.is_relative_to(root) for root in roots)


def _read_inside(path: str, spec: str, roots: Sequence[Path], max_bytes: int) -> tuple[bytes, str]:
    """Open the file `path` names, only if it lies inside `roots`, and read it from that descriptor.
    Raises `_Outside` (the caller may widen the roots) or ImageError."""
    if not _WALKABLE:  # Windows: no openat(); symlinks there need privileges to make
        return _read_by_name(path, spec, roots, max_bytes)
    for _ in range(OPEN_ATTEMPTS):
        try:
            reached = _walk(path, spec)
        except _Changed:
            continue
        try:
            return _open_reached(reached, spec, roots, max_bytes)
        except _Changed:
            continue
        finally:
            os.close(reached.parent)
    raise ImageError(f"The image path {spec} kept changing while it was opened (a symlink or folder in it "
                     "was replaced each time).",
                     hint="Try again once nothing is changing the file, or pass the file's real path.")


def _walk(path: str, spec: str) -> _Reached:
    """Follow `path` from `/` one component at a time, never letting the kernel follow a symlink."""
    pending = _components(path)
    names: list[str] = []  # the folders walked, from "/", none of them a symlink
    fd = _open_root(spec)
    steps = links = 0
    try:
        while pending:
            steps += 1
            if steps > MAX_STEPS:
                raise ImageError(f"The image path {spec} takes too many steps to follow (symlinks and '..').",
                                 hint="Pass the file's real path.")
            name = pending.pop()
            if name == "..":
                if names:
                    names.pop()
                    os.close(fd)
                    fd = -1
                    fd = _reopen(names, spec)
                continue
            _check_name(name)
            real = "/" + "/".join([*names, name])
            try:
                info = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                return _Reached(fd, name, _lexical(names, name, pending), "missing")
            except OSError as exc:
                raise _os_error(spec, exc) from None
            if stat.S_ISLNK(info.st_mode):
                links += 1
                if links > MAX_SYMLINKS:
                    raise ImageError(f"The image path {spec} has a symlink loop (over {MAX_SYMLINKS} symlinks "
                                     "followed).", hint="Fix the symlink that leads back to itself, or pass the "
                                     "file's real path.")
                try:
                    target = os.readlink(name, dir_fd=fd)
                except OSError:
                    raise _Changed() from None  # no longer a symlink: it was just replaced
                pending.extend(_components(target))  # a stack: the target's first part on top
                if target.startswith("/"):
                    names.clear()
                    os.close(fd)
                    fd = -1
                    fd = _open_root(spec)
                continue
            if len(os.fsencode(real)) >= PATH_MAX:
                raise ImageError(f"The image path {spec}, once its symlinks are followed, is over the system's "
                                 f"{PATH_MAX - 1}-byte limit.", hint="Pass a shorter path.")
            if not pending:
                return _Reached(fd, name, real, _kind(info.st_mode))
            if not stat.S_ISDIR(info.st_mode):
                return _Reached(fd, name, _lexical(names, name, pending), "missing",
                                why=f"{real} is a file, not a folder")
            try:
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except (NotADirectoryError, FileNotFoundError):
                raise _Changed() from None  # replaced (by a symlink, say) since the lstat
            except OSError as exc:
                raise _os_error(spec, exc) from None
            os.close(fd)
            fd = child
            names.append(name)
        return _Reached(fd, None, "/" + "/".join(names), "dir")  # "/" itself, or a path ending in ".."
    except BaseException:
        if fd >= 0:
            os.close(fd)
        raise


def _open_root(spec: str) -> int:
    """`/`, where every walk starts; failing only when the process is out of descriptors (EMFILE)."""
    try:
        return os.open("/", _DIR_FLAGS)
    except OSError as exc:
        raise _os_error(spec, exc) from None


def _components(path: str) -> list[str]:
    """The parts of `path` to visit, in reverse (a stack: the next one last); empty parts and "." dropped."""
    return [part for part in reversed(path.split("/")) if part not in ("", ".")]


def _check_name(name: str) -> None:
    if len(os.fsencode(name)) > NAME_MAX:
        raise ImageError(f"A name in the image path is {len(os.fsencode(name))} bytes long, over the {NAME_MAX}-byte "
                         "limit for a file or folder name.",
                         hint="Check the path (it may be data pasted as a path), or rename the file.")


def _reopen(names: list[str], spec: str) -> int:
    """The folder `names` leads to from "/", opened afresh without following symlinks (for `..`: taking
    ".." from a descriptor could leave the roots if the folder was moved meanwhile)."""
    fd = _open_root(spec)
    for name in names:
        try:
            child = os.open(name, _DIR_FLAGS, dir_fd=fd)
        except OSError:
            os.close(fd)
            raise _Changed() from None
        os.close(fd)
        fd = child
    return fd


def _lexical(names: list[str], name: str, pending: list[str]) -> str:
    """The path a missing entry would have, the rest of the path taken as written (as realpath does)."""
    parts = [*names, name]
    for part in reversed(pending):
        if part == "..":
            if parts:
                parts.pop()
        else:
            parts.append(part)
    return "/" + "/".join(parts)


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISFIFO(mode):
        return "named pipe (FIFO)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "special file"


def _open_reached(reached: _Reached, spec: str, roots: Sequence[Path], max_bytes: int) -> tuple[bytes, str]:
    if not _inside(reached.real, roots):
        raise _Outside(reached.real)
    if (refused := _kind_error(reached.kind, spec, reached.why)) is not None:
        raise refused
    assert reached.name is not None  # a "file" always has a name
    try:
        fd = os.open(reached.name, _FILE_FLAGS, dir_fd=reached.parent)
    except OSError as exc:
        if isinstance(exc, FileNotFoundError) or exc.errno in (errno.ELOOP, errno.EMLINK):  # EMLINK: FreeBSD
            raise _Changed() from None  # removed, or replaced by a symlink, since the walk looked
        raise _os_error(spec, exc) from None
    with open(fd, "rb", closefd=True) as file:
        try:
            info = os.fstat(fd)
            if (refused := _kind_error(_kind(info.st_mode), spec, "")) is not None:
                raise refused  # replaced by a FIFO or device since the walk looked
            opened = _fd_path(fd)
            if opened is not None and not _inside(opened, roots):
                raise ImageError(f"The image file {spec} was moved outside the allowed roots while it was opened.",
                                 hint="Pass the path of a file that stays inside images.roots.")
            check_size(info.st_size, max_bytes, reached.real)
            raw = file.read(max_bytes + 1)  # the file may have grown since
        except OSError as exc:
            raise _os_error(spec, exc) from None
    check_size(len(raw), max_bytes, reached.real)
    return raw, reached.real


def _kind_error(kind: str, spec: str, why: str) -> ImageError | None:
    """Why an entry of this kind is not read, or None for a regular file."""
    if kind == "file":
        return None
    if kind == "missing":
        return _missing(spec, why)
    if kind == "dir":
        return ImageError(f"{spec} is not a file but a folder.", hint="Pass the path of an image file in it.")
    return ImageError(f"{spec} is not a file but a {kind}; only a regular file is read.",
                      hint="Save the image to a file and pass that file's path.")


def _missing(spec: str, why: str = "") -> ImageError:
    return ImageError(f"No file at {spec}" + (f": {why}." if why else "."),
                      hint="Check the path; it must be on the machine running mcp-llm.")


def _fd_path(fd: int) -> str | None:
    """The path the kernel gives the open descriptor now (Linux: /proc; macOS: F_GETPATH); None when
    it cannot say (no /proc mounted, another system), the walk's own check standing alone then."""
    if sys.platform.startswith("linux"):
        try:
            path = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return None
        return path if path.startswith("/") else None
    if sys.platform == "darwin":
        import fcntl

        try:
            raw = fcntl.fcntl(fd, fcntl.F_GETPATH, bytes(1024))
        except (OSError, AttributeError):
            return None
        return os.fsdecode(raw.split(b"\x00", 1)[0])
    return None


def _os_error(spec: str, exc: OSError) -> ImageError:
    if isinstance(exc, PermissionError):
        return ImageError(f"Cannot read {spec}: permission denied.",
                          hint="Check the permissions of the file and of the folders above it.")
    return ImageError(f"Cannot read {spec}: {exc.strerror or exc}.", hint="Check the path and the file.")


def _read_by_name(path: str, spec: str, roots: Sequence[Path], max_bytes: int) -> tuple[bytes, str]:
    """Without openat() (Windows): resolve, check, open, and make sure the file opened is the file
    checked (same device and inode). Not race-free against a folder swapped during resolve()."""
    try:
        resolved = Path(path).resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
        raise ImageError(f"Cannot follow the image path {spec}: {exc}.", hint="Pass the file's real path.") from None
    if not _inside(str(resolved), roots):
        raise _Outside(str(resolved))
    try:
        checked = os.stat(resolved)
    except OSError as exc:
        raise (_missing(spec) if isinstance(exc, FileNotFoundError) else _os_error(spec, exc)) from None
    if (refused := _kind_error(_kind(checked.st_mode), spec, "")) is not None:
        raise refused
    try:
        with open(resolved, "rb") as file:
            info = os.fstat(file.fileno())
            if (info.st_dev, info.st_ino) != (checked.st_dev, checked.st_ino):
                raise ImageError(f"The image file {spec} changed while it was opened.", hint="Try again.")
            check_size(info.st_size, max_bytes, str(resolved))
            raw = file.read(max_bytes + 1)
    except OSError as exc:
        raise _os_error(spec, exc) from None
    check_size(len(raw), max_bytes, str(resolved))
    return raw, str(resolved)
