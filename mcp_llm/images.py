"""Image input in the forms a caller has at hand: a file path, a `data:` URI, raw base64, a URL.

A path must lie inside `images.roots` once symlinks are resolved; URLs are off unless
`images.allow_urls`. The bytes are sniffed (not trusted by extension), checked against
`max_bytes`, and opened with Pillow; an image over `max_pixels` is scaled down, and a format
the providers do not all take (BMP, TIFF…) is re-encoded as PNG. Pillow is imported on
first use, and the work runs in a worker thread so the event loop keeps serving.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import re
from pathlib import Path

import anyio

from mcp_llm.adapters.base import ImageInput
from mcp_llm.config import ImageSettings
from mcp_llm.errors import ImageError

# What every provider accepts as is; anything else Pillow can read is sent as PNG.
PASSTHROUGH = {"PNG": "image/png", "JPEG": "image/jpeg", "GIF": "image/gif", "WEBP": "image/webp"}
_DATA_URI = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?:;[\w-]+=[^;,]*)*(?P<b64>;base64)?,(?P<data>.*)$", re.S)
_BASE64 = re.compile(r"^[A-Za-z0-9+/_-]+={0,2}$")
MIN_BASE64_CHARS = 32
URL_TIMEOUT_S = 20.0


async def load_image(spec: str, settings: ImageSettings) -> ImageInput:
    """Turn the caller's `image` argument into checked bytes and a MIME type."""
    spec = spec.strip()
    if not spec:
        raise ImageError("The image argument is empty.", hint="Pass a file path, a data: URI or base64 data.")
    if spec.startswith("data:"):
        raw = _decode_data_uri(spec)
        origin = "the data: URI"
    elif spec.startswith(("http://", "https://")):
        raw = await _fetch_url(spec, settings)
        origin = spec
    elif (raw_b64 := _try_base64(spec)) is not None:
        raw, origin = raw_b64, "the base64 data"
    else:
        path = _checked_path(spec, settings)
        raw = await anyio.to_thread.run_sync(_read_file, path, settings.max_bytes)
        origin = str(path)
    _check_size(len(raw), settings.max_bytes, origin)
    return await anyio.to_thread.run_sync(_normalize, raw, settings.max_pixels, origin)


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
    return raw if _sniff(raw) else None


def _checked_path(spec: str, settings: ImageSettings) -> Path:
    path = Path(os.path.expanduser(spec))
    if not path.is_absolute():
        raise ImageError(
            f"The image path {spec!r} is relative.",
            hint="Pass an absolute path (the server's working directory is not the client's).",
        )
    resolved = path.resolve()
    if not any(resolved.is_relative_to(root) for root in settings.roots):
        roots = ", ".join(str(root) for root in settings.roots) or "(none)"
        raise ImageError(
            f"The image path {spec} is outside the allowed roots ({roots}).",
            hint="Move the file under one of them, or add its folder to images.roots in the config file.",
        )
    if not resolved.exists():
        raise ImageError(f"No file at {spec}.", hint="Check the path; it must be on the machine running mcp-llm.")
    if not resolved.is_file():
        raise ImageError(f"{spec} is not a file.", hint="Pass the path of an image file.")
    return resolved


def _read_file(path: Path, max_bytes: int) -> bytes:
    size = path.stat().st_size
    _check_size(size, max_bytes, str(path))
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ImageError(f"Cannot read {path}: {exc.strerror}.", hint="Check the file's permissions.") from None


async def _fetch_url(url: str, settings: ImageSettings) -> bytes:
    if not settings.allow_urls:
        raise ImageError(
            "Image URLs are disabled.",
            hint="Download the image and pass its path or base64 data, or set images.allow_urls = true.",
        )
    import httpx

    try:
        async with (
            httpx.AsyncClient(timeout=URL_TIMEOUT_S, follow_redirects=True) as client,
            client.stream("GET", url) as response,
        ):
            if response.status_code != 200:
                raise ImageError(f"Fetching {url} gave HTTP {response.status_code}.", hint="Check the URL.")
            chunks, total = [], 0
            async for chunk in response.aiter_bytes():
                total += len(chunk)
                _check_size(total, settings.max_bytes, url)
                chunks.append(chunk)
            return b"".join(chunks)
    except httpx.HTTPError as exc:
        raise ImageError(f"Cannot fetch {url}: {type(exc).__name__}.", hint="Check the URL and the network.") from None


def _check_size(size: int, max_bytes: int, origin: str) -> None:
    if size > max_bytes:
        raise ImageError(
            f"The image from {origin} is {size / 1e6:.1f} MB, over the {max_bytes / 1e6:.1f} MB limit.",
            hint="Send a smaller image, or raise images.max_bytes in the config file.",
        )


def _sniff(raw: bytes) -> str | None:
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


def _normalize(raw: bytes, max_pixels: int, origin: str) -> ImageInput:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(raw)) as image:
            image_format = image.format or ""
            width, height = image.size
            if width * height <= max_pixels and image_format in PASSTHROUGH and _sniff(raw) == image_format:
                image.verify()  # a truncated or corrupt file fails here, not at the provider
                return ImageInput(raw, PASSTHROUGH[image_format])
            image.load()
            if width * height > max_pixels:
                scale = (max_pixels / (width * height)) ** 0.5
                image = image.resize((max(1, int(width * scale)), max(1, int(height * scale))), Image.LANCZOS)
            out_format = image_format if image_format in ("PNG", "JPEG", "WEBP") else "PNG"
            if out_format == "JPEG" and image.mode not in ("RGB", "L"):
                image = image.convert("RGB")
            buffer = io.BytesIO()
            image.save(buffer, format=out_format)
            return ImageInput(buffer.getvalue(), PASSTHROUGH[out_format])
    except (UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise ImageError(
            f"{origin} is not an image this server can read ({type(exc).__name__}).",
            hint="Pass a PNG, JPEG, GIF or WebP image.",
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:  # Pillow reports corrupt data with these
        raise ImageError(f"{origin} is a damaged image: {exc}.", hint="Re-export or re-encode the image.") from None
