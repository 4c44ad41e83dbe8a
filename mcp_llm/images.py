"""Image input made safe to send, once, whatever provider gets it.

The bytes come from `image_sources` (a path inside the allowed roots, opened race-free; a
`data:` URI; raw base64; a URL). They are sniffed (not trusted by extension), checked against
`max_bytes`, and opened with Pillow, which reads the header first: a decompression bomb is
refused before anything is decoded. Then:

- an EXIF orientation is applied (a phone photo arrives upright);
- EXIF, XMP, IPTC, comments and text metadata (GPS position included) are stripped, from every
  file: without anything else to change, the file is rebuilt losslessly from the parts that are
  pixels (`image_metadata`, which also drops whatever follows the image's end); otherwise it is
  re-encoded from the pixels alone. Either way the trace says what was dropped;
- an image over `max_pixels` is scaled down (a JPEG is decoded at the largest M/8 scale within it by
  libjpeg-turbo, `jpeg_scaled`, so a 48-megapixel photo never exists in memory at full size);
- a format not every provider takes (BMP, TIFF…) becomes PNG.

Fitting to one provider's own limits happens later, per route (`image_fit`). Pillow is imported
on first use, and the work runs in a worker thread so the event loop keeps serving.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import anyio

from mcp_llm import image_metadata
from mcp_llm.adapters.base import ImageInput
from mcp_llm.config import ImageSettings
from mcp_llm.errors import ImageError
from mcp_llm.image_sources import RootsProvider, check_size, read_source, sniff
from mcp_llm.trace import ImageShape

__all__ = ["LoadedImage", "RootsProvider", "load_image"]

# What every provider accepts as is; anything else Pillow can read is sent as PNG.
PASSTHROUGH = {"PNG": "image/png", "JPEG": "image/jpeg", "GIF": "image/gif", "WEBP": "image/webp"}
BOMB_MIN_PIXELS = 1 << 26  # 67 MP: what may be decoded at full size, at least (4 × max_pixels if larger)
JPEG_QUALITY = 92  # a re-encoded photo (rotated or scaled) before any provider's own fitting
ORIENTATION = 0x0112
# What Pillow's encoders may write from `image.info` that is pixels, not metadata (PNG/GIF palette transparency).
# Anything else there ("comment", "exif", "xmp"…) a re-encode would carry over: Pillow's JPEG encoder writes
# info["comment"] back as a COM segment.
_KEEP_INFO = ("transparency",)

# EXIF orientation → the transposition that makes the image upright (as ImageOps.exif_transpose)
_TRANSPOSE = {2: 0, 3: 3, 4: 1, 5: 5, 6: 4, 7: 6, 8: 2}  # PIL.Image.Transpose values


@dataclass(frozen=True)
class LoadedImage:
    """Checked, upright, metadata-free bytes (`image`), with what the caller passed (`original`) and
    what was done to it (`steps`): the start of the trace's `ImageReport`, which `image_fit` completes
    per provider. The record travels beside the bytes, not on them: adapters are sent `image` only."""

    image: ImageInput
    original: ImageShape
    steps: tuple[str, ...] = ()

    @property
    def data(self) -> bytes:
        return self.image.data

    @property
    def mime_type(self) -> str:
        return self.image.mime_type


async def load_image(spec: str, settings: ImageSettings, client_roots: RootsProvider | None = None) -> LoadedImage:
    """Turn the caller's `image` argument into checked bytes and a MIME type.

    `client_roots`, when given, returns the roots the MCP client declared; it is asked only for
    a path outside `images.roots`."""
    raw, origin = await read_source(spec, settings, client_roots)
    check_size(len(raw), settings.max_bytes, origin)
    box = [raw]  # the bytes travel in `box` so `_normalize` can let go of them once decoded (peak memory)
    del raw
    return await anyio.to_thread.run_sync(_normalize, box, settings.max_pixels, origin)


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
        original = ImageShape(width=width, height=height, bytes=original_len, mime_type=mime_in)
        check_bomb(image, bomb_limit(max_pixels), origin)
        orientation = _orientation(image)
        kept = image_metadata.plan(box[0], image_format) if sniff(box[0]) == image_format else None
        if width * height <= max_pixels and image_format in PASSTHROUGH and orientation in (None, 1) and kept:
            data = kept.join() if kept.dropped else box[0]
            _check_intact(data, origin)
            steps = (f"metadata stripped losslessly: {image_metadata.describe(kept.dropped)}",) if kept.dropped else ()
            return LoadedImage(ImageInput(data, PASSTHROUGH[image_format]), original, steps)
        # Rotated, scaled, another format, or a structure the lossless rebuild cannot vouch for: from the pixels.
        dropped = image_metadata.describe(kept.dropped) if kept else None
        del kept  # its pieces are views into the encoded input, which `_reencode` lets go of
        return _reencode(box, stream, image, max_pixels, orientation, original, dropped)
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


def _check_intact(data: bytes, origin: str) -> None:
    """Decode what will be sent, enough to find a truncated or corrupt file here, not at the provider."""
    with pillow().open(io.BytesIO(data)) as image:
        if image.format == "PNG":
            image.verify()  # every chunk's CRC and the compressed stream, without keeping the pixels
        else:
            reduce_on_decode(image, (max(1, image.width // 8), max(1, image.height // 8)))  # JPEG: 1/8 scale
            image.load()


def _reencode(box: list[bytes], stream: io.BytesIO, image: Any, max_pixels: int, orientation: int | None,
              original: ImageShape, dropped: str | None) -> LoadedImage:
    """Decode (at reduced scale when it can), turn upright, scale within `max_pixels`, encode afresh
    from the pixels (and colour profile) alone. `dropped` names the metadata the file held ("" for
    none), or is None when its structure was not walked (another format, or one too damaged to)."""
    if image.format == "JPEG" and (done := _reencode_jpeg(box, stream, image, max_pixels, orientation, original,
                                                          dropped)):
        return done
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
    image.info = {key: value for key, value in image.info.items() if key in _KEEP_INFO}
    buffer = io.BytesIO()
    options: dict[str, Any] = {"icc_profile": icc} if icc else {}
    if out_format == "JPEG":
        options["quality"] = JPEG_QUALITY
    image.save(buffer, format=out_format, **options)
    if dropped is None:
        steps.append("metadata stripped (re-encoded from the pixels alone)")
    elif dropped:
        steps.append(f"metadata stripped: {dropped}")
    steps.append(f"re-encoded as {out_format}" + (f" quality {JPEG_QUALITY}" if out_format == "JPEG" else ""))
    return LoadedImage(ImageInput(buffer.getvalue(), PASSTHROUGH[out_format]), original, tuple(steps))


def _reencode_jpeg(box: list[bytes], stream: io.BytesIO, image: Any, max_pixels: int, orientation: int | None,
                   original: ImageShape, dropped: str | None) -> LoadedImage | None:
    """`_reencode` for a JPEG libjpeg-turbo decodes: at the largest M/8 scale within `max_pixels`, three
    bytes a pixel, turned on the array (`jpeg_scaled`). None: take Pillow's path (CMYK, damaged data)."""
    from mcp_llm import jpeg_scaled

    header = jpeg_scaled.header(box[0])
    if header is None:
        return None
    size = jpeg_scaled.largest_within_pixels(header.width, header.height, max_pixels)
    if size is None:
        return None
    icc = image.info.get("icc_profile")
    try:
        array = jpeg_scaled.decode(box[0], size, header.grey)
    except ValueError:
        return None
    stream.close()  # the encoded input is no longer needed: one copy of the image in memory
    box.clear()
    steps: list[str] = []
    array = jpeg_scaled.orient(array, orientation)
    if orientation not in (None, 1):
        steps.append(f"EXIF orientation {orientation} applied")
    if size != (header.width, header.height):
        upright = (original.height, original.width) if orientation in (5, 6, 7, 8) else (original.width,
                                                                                      original.height)
        steps.append(f"scaled {upright[0]}×{upright[1]} → {array.shape[1]}×{array.shape[0]} (images.max_pixels)")
    data = jpeg_scaled.encode(array, JPEG_QUALITY, icc)
    del array
    if dropped is None:
        steps.append("metadata stripped (re-encoded from the pixels alone)")
    elif dropped:
        steps.append(f"metadata stripped: {dropped}")
    steps.append(f"re-encoded as JPEG quality {JPEG_QUALITY}")
    return LoadedImage(ImageInput(data, "image/jpeg"), original, tuple(steps))


def _dct_scaled(size: tuple[int, int], max_pixels: int) -> tuple[int, int] | None:
    """The largest size a JPEG decoder gives directly (1/2, 1/4, 1/8 scale) within `max_pixels`: no
    resampling pass (which would hold source, intermediate and result at once), a little below the
    limit instead of at it. None when even 1/8 is over."""
    for denominator in (2, 4, 8):
        scaled = (-(-size[0] // denominator), -(-size[1] // denominator))
        if scaled[0] * scaled[1] <= max_pixels:
            return scaled
    return None
