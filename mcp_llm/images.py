"""Image input in the forms a caller has at hand: a file path, a `data:` URI, raw base64, a URL.

A path must lie inside `images.roots`, or a root the MCP client declared, once symlinks are
resolved; URLs are off unless `images.allow_urls`, and then reach public addresses only
(`url_fetch`). The bytes are sniffed (not trusted by extension), checked against `max_bytes`,
and opened with Pillow, which reads the header first: a decompression bomb is refused before
anything is decoded. Then the image is made safe to send, once, whatever provider gets it:

- an EXIF orientation is applied (a phone photo arrives upright) and EXIF, XMP, IPTC and text
  metadata (GPS position included) are stripped; without an orientation to apply, JPEG and PNG
  metadata are cut out of the file losslessly;
- an image over `max_pixels` is scaled down (a JPEG is decoded at reduced scale with Pillow's
  `draft`, so a 48-megapixel photo never exists in memory at full size);
- a format not every provider takes (BMP, TIFF…) becomes PNG.

Fitting to one provider's own limits happens later, per route (`image_fit`). Pillow is imported
on first use, and the work runs in a worker thread so the event loop keeps serving.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
BOMB_MIN_PIXELS = 1 << 26  # 67 MP: what may be decoded at full size, at least (4 × max_pixels if larger)
JPEG_QUALITY = 92  # a re-encoded photo (rotated or scaled) before any provider's own fitting
ORIENTATION = 0x0112
# JPEG segments that carry metadata, not pixels: APP1 (EXIF, XMP), APP13 (IPTC/Photoshop), COM
_JPEG_METADATA = {0xE1, 0xED, 0xFE}
_PNG_METADATA = {b"eXIf", b"tEXt", b"zTXt", b"iTXt", b"tIME"}

# EXIF orientation → the transposition that makes the image upright (as ImageOps.exif_transpose)
_TRANSPOSE = {2: 0, 3: 3, 4: 1, 5: 5, 6: 4, 7: 6, 8: 2}  # PIL.Image.Transpose values
RootsProvider = Callable[[], Awaitable[Sequence[Path]]]


@dataclass(frozen=True)
class ImageSize:
    """An image's dimensions, length and type, for the trace."""

    width: int
    height: int
    bytes: int
    mime_type: str


@dataclass(frozen=True)
class LoadedImage(ImageInput):
    """Checked, upright, metadata-free bytes, with what the caller passed and what was done to it."""

    width: int = 0
    height: int = 0
    original: ImageSize | None = None
    steps: tuple[str, ...] = field(default_factory=tuple)


async def load_image(spec: str, settings: ImageSettings, client_roots: RootsProvider | None = None) -> LoadedImage:
    """Turn the caller's `image` argument into checked bytes and a MIME type.

    `client_roots`, when given, returns the roots the MCP client declared; it is asked only for
    a path outside `images.roots`."""
    spec = spec.strip()
    if not spec:
        raise ImageError("The image argument is empty.", hint="Pass a file path, a data: URI or base64 data.")
    box: list[bytes] = []
    if spec.startswith("data:"):
        box.append(_decode_data_uri(spec))
        origin = "the data: URI"
    elif spec.startswith(("http://", "https://")):
        box.append(await _fetch_url(spec, settings))
        origin = spec if len(spec) <= 200 else spec[:200] + "…"
    elif (raw_b64 := _try_base64(spec)) is not None:
        box.append(raw_b64)
        origin = "the base64 data"
        del raw_b64
    elif _looks_like_base64(spec):
        raise ImageError("The base64 data is not an image (no PNG, JPEG, GIF or WebP signature).",
                         hint="Pass the base64 of an image file, or a file path.")
    else:
        path = await _checked_path(spec, settings, client_roots)
        box.append(await anyio.to_thread.run_sync(_read_file, path, settings.max_bytes))
        origin = str(path)
    _check_size(len(box[0]), settings.max_bytes, origin)
    # The bytes travel in `box` so `_normalize` can let go of them once decoded (peak memory).
    return await anyio.to_thread.run_sync(_normalize, box, settings.max_pixels, origin)


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


async def _checked_path(spec: str, settings: ImageSettings, client_roots: RootsProvider | None) -> Path:
    path = Path(os.path.expanduser(spec))
    if not path.is_absolute():
        raise ImageError(
            f"The image path {spec!r} is relative.",
            hint="Pass an absolute path (the server's working directory is not the client's).",
        )
    resolved = path.resolve()
    roots = list(settings.roots)
    inside = any(resolved.is_relative_to(root) for root in roots)
    if not inside and client_roots is not None:
        declared = [Path(root).resolve() for root in await client_roots()]
        roots += declared
        inside = any(resolved.is_relative_to(root) for root in declared)
    if not inside:
        listed = ", ".join(str(root) for root in roots) or "(none)"
        raise ImageError(
            f"The image path {spec} is outside the allowed roots ({listed}).",
            hint="Move the file under one of them, or add its folder to images.roots in the config file.",
        )
    if not resolved.exists():
        raise ImageError(f"No file at {spec}.", hint="Check the path; it must be on the machine running mcp-llm.")
    if not resolved.is_file():
        raise ImageError(f"{spec} is not a file.", hint="Pass the path of an image file.")
    return resolved


def _read_file(path: Path, max_bytes: int) -> bytes:
    try:
        with path.open("rb") as file:
            _check_size(os.fstat(file.fileno()).st_size, max_bytes, str(path))
            raw = file.read(max_bytes + 1)  # the file may have grown since
    except OSError as exc:
        raise ImageError(f"Cannot read {path}: {exc.strerror}.", hint="Check the file's permissions.") from None
    _check_size(len(raw), max_bytes, str(path))
    return raw


async def _fetch_url(url: str, settings: ImageSettings) -> bytes:
    if not settings.allow_urls:
        raise ImageError(
            "Image URLs are disabled.",
            hint="Download the image and pass its path or base64 data, or set images.allow_urls = true.",
        )
    from mcp_llm.url_fetch import fetch

    return await fetch(url, max_bytes=settings.max_bytes, allow_private=settings.allow_private_urls,
                       timeout_s=URL_TIMEOUT_S)


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


def pillow() -> Any:
    """Pillow, with its own bomb check off: `open_checked` checks the size itself, before decoding,
    and takes a huge JPEG that can be decoded at reduced scale, which Pillow's check would refuse."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None
    return Image


def bomb_limit(max_pixels: int) -> int:
    return max(4 * max_pixels, BOMB_MIN_PIXELS)


def reduce_on_decode(image: Any, target: tuple[int, int]) -> None:
    """Ask the JPEG decoder for the smallest DCT scale (1/2, 1/4, 1/8) still at least `target`."""
    if image.format == "JPEG" and (target[0] < image.width or target[1] < image.height):
        image.draft(image.mode if image.mode in ("RGB", "L") else None, target)


def check_bomb(image: Any, limit: int, origin: str) -> None:
    """Refuse, before decoding, an image whose decoded pixels would exceed `limit`."""
    width, height = image.size
    if image.format == "JPEG":  # decodable at 1/8 scale at the least
        width, height = -(-width // 8), -(-height // 8)
    if width * height > limit:
        raise ImageError(
            f"{origin} claims {image.width}×{image.height} pixels ({image.width * image.height / 1e6:.0f} MP): "
            "a decompression bomb or far too large, refused before decoding.",
            hint="Send a smaller image (a few thousand pixels a side is plenty for a vision model).",
        )


def scaled_within(width: int, height: int, max_pixels: int | None, max_side: int | None = None) -> tuple[int, int]:
    """The largest size with the same aspect ratio within the limits; never larger than the original."""
    scale = 1.0
    if max_pixels is not None and width * height > max_pixels:
        scale = (max_pixels / (width * height)) ** 0.5
    if max_side is not None and max(width, height) * scale > max_side:
        scale = max_side / max(width, height)
    if scale >= 1.0:
        return width, height
    new_w, new_h = max(1, int(width * scale)), max(1, int(height * scale))
    while max_pixels is not None and new_w * new_h > max_pixels and min(new_w, new_h) > 1:  # rounding
        new_w, new_h = max(1, new_w - 1), max(1, new_h - 1)
    return new_w, new_h


def _normalize(box: list[bytes], max_pixels: int, origin: str) -> LoadedImage:
    Image = pillow()
    from PIL import UnidentifiedImageError

    original_len = len(box[0])
    stream = io.BytesIO(box[0])  # shares the bytes; closing it lets them go
    try:
        image = Image.open(stream)
    except (UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise ImageError(f"{origin} is not an image this server can read ({type(exc).__name__}).",
                         hint="Pass a PNG, JPEG, GIF or WebP image.") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise _damaged(origin, exc) from None
    try:
        image_format = image.format or ""
        width, height = image.size
        mime_in = Image.MIME.get(image_format, f"image/{image_format.lower()}")
        original = ImageSize(width, height, original_len, mime_in)
        check_bomb(image, bomb_limit(max_pixels), origin)
        orientation = _orientation(image)
        if (width * height <= max_pixels and image_format in PASSTHROUGH and _sniff(box[0]) == image_format
                and orientation in (None, 1) and not (image_format in ("WEBP", "GIF") and _has_metadata(image))):
            _check_intact(image, box[0])
            stripped = _strip_metadata(box[0], image_format)
            steps = ("metadata stripped (EXIF, XMP, text)",) if stripped is not None else ()
            data = stripped if stripped is not None else box[0]
            return LoadedImage(data, PASSTHROUGH[image_format], width, height, original, steps)
        return _reencode(box, stream, image, max_pixels, orientation, original)
    except (OSError, SyntaxError, ValueError, EOFError) as exc:  # Pillow reports corrupt data with these
        raise _damaged(origin, exc) from None
    finally:
        image.close()


def _damaged(origin: str, exc: BaseException) -> ImageError:
    return ImageError(f"{origin} is a damaged image: {exc}.", hint="Re-export or re-encode the image.")


def _orientation(image: Any) -> int | None:
    try:
        value = image.getexif().get(ORIENTATION)
    except (OSError, SyntaxError, ValueError):
        return None
    return value if isinstance(value, int) and 1 <= value <= 8 else None


def _has_metadata(image: Any) -> bool:
    return any(key in image.info for key in ("exif", "xmp", "XML:com.adobe.xmp", "comment"))


def _check_intact(image: Any, raw: bytes) -> None:
    """Decode enough to find a truncated or corrupt file here, not at the provider."""
    if image.format == "JPEG":
        reduce_on_decode(image, (max(1, image.width // 8), max(1, image.height // 8)))  # cheap: 1/8 scale
        image.load()
    elif image.format == "PNG":
        with pillow().open(io.BytesIO(raw)) as fresh:  # verify (every chunk's CRC) must follow open directly
            fresh.verify()
    else:
        image.load()


def _reencode(box: list[bytes], stream: io.BytesIO, image: Any, max_pixels: int, orientation: int | None,
              original: ImageSize) -> LoadedImage:
    """Decode (at reduced scale when it can), turn upright, scale within `max_pixels`, encode afresh."""
    Image = pillow()
    steps: list[str] = []
    upright = (original.height, original.width) if orientation in (5, 6, 7, 8) else (original.width, original.height)
    target = scaled_within(*upright, max_pixels)
    if image.format == "JPEG" and target != upright:
        target = _dct_scaled(upright, max_pixels) or target
    decode_target = (target[1], target[0]) if orientation in (5, 6, 7, 8) else target
    reduce_on_decode(image, decode_target)
    image.load()
    stream.close()  # the encoded input is no longer needed: one copy of the image in memory
    box.clear()
    icc = image.info.get("icc_profile")
    image_format = image.format or ""
    if image.mode not in ("RGB", "RGBA", "L", "LA", "P", "1"):
        image = image.convert("RGBA" if "A" in image.mode or "transparency" in image.info else "RGB")
    if image.size != decode_target:
        image = image.resize(decode_target, Image.LANCZOS, reducing_gap=3.0)
    if orientation not in (None, 1):
        image = image.transpose(_TRANSPOSE[orientation])
        steps.append(f"EXIF orientation {orientation} applied")
    if target != upright:
        steps.append(f"scaled {upright[0]}×{upright[1]} → {target[0]}×{target[1]} (images.max_pixels)")
    out_format = image_format if image_format in ("PNG", "JPEG", "WEBP") else "PNG"
    if out_format == "JPEG" and image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    buffer = io.BytesIO()
    options: dict[str, Any] = {"icc_profile": icc} if icc else {}
    if out_format == "JPEG":
        options["quality"] = JPEG_QUALITY
    image.save(buffer, format=out_format, **options)
    steps.append("metadata stripped (EXIF, XMP, text)")
    steps.append(f"re-encoded as {out_format}" + (f" quality {JPEG_QUALITY}" if out_format == "JPEG" else ""))
    return LoadedImage(buffer.getvalue(), PASSTHROUGH[out_format], image.width, image.height, original, tuple(steps))


def _dct_scaled(size: tuple[int, int], max_pixels: int) -> tuple[int, int] | None:
    """The largest size a JPEG decoder gives directly (1/2, 1/4, 1/8 scale) within `max_pixels`: no
    resampling pass (which would hold source, intermediate and result at once), a little below the
    limit instead of at it. None when even 1/8 is over."""
    for denominator in (2, 4, 8):
        scaled = (-(-size[0] // denominator), -(-size[1] // denominator))
        if scaled[0] * scaled[1] <= max_pixels:
            return scaled
    return None


def _strip_metadata(raw: bytes, image_format: str) -> bytes | None:
    """The same file without its metadata segments or chunks, or None if it had none (lossless)."""
    if image_format == "JPEG":
        return _strip_jpeg(raw)
    if image_format == "PNG":
        return _strip_png(raw)
    return None


def _strip_jpeg(raw: bytes) -> bytes | None:
    kept: list[bytes] = [raw[:2]]
    dropped = False
    i = 2
    while i + 4 <= len(raw):
        if raw[i] != 0xFF:
            return None  # not where a marker should be: leave the file alone
        marker = raw[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0xDA:  # start of scan: the pixels follow, and no more metadata
            kept.append(raw[i:])
            break
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            kept.append(raw[i : i + 2])
            i += 2
            continue
        end = i + 2 + int.from_bytes(raw[i + 2 : i + 4], "big")
        if marker in _JPEG_METADATA:
            dropped = True
        else:
            kept.append(raw[i:end])
        i = end
    return b"".join(kept) if dropped else None


def _strip_png(raw: bytes) -> bytes | None:
    kept: list[bytes] = [raw[:8]]
    dropped = False
    i = 8
    while i + 8 <= len(raw):
        length = int.from_bytes(raw[i : i + 4], "big")
        kind = raw[i + 4 : i + 8]
        end = i + 12 + length
        if kind in _PNG_METADATA:
            dropped = True
        else:
            kept.append(raw[i:end])
        i = end
        if kind == b"IEND":
            break
    return b"".join(kept) if dropped else None
