"""Fit an image to the provider that will receive it: its byte limit, size and formats.

Each adapter states its limits as data (`Capabilities.max_image_bytes`, `max_image_side`,
`max_image_pixels`, `image_formats`). An image within them goes as it is. Otherwise it is
scaled down (never up) to the size limits, then re-encoded: a photo as JPEG at falling quality
steps, line art (few colours, or transparency) as PNG, then as JPEG if PNG stays too large;
while nothing fits, the size drops by a quarter and the steps run again. Only an image that
cannot fit even at `MIN_SIDE` pixels is refused: as a non-retryable error of that provider,
so a fallback to another provider still runs. The report says what was done, for the trace.

This module is pixels only: which model may be sent an image at all is routing's question
(`vision.py`, asked by the router before it asks for a fitted image here). What the caller passed
and what loading did (`images.LoadedImage`) is the start of the report; nothing rides on the
image's bytes (`ImageInput`, the type adapters send).
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from mcp_llm.adapters.base import Capabilities, ImageInput
from mcp_llm.trace import ImageReport, ImageShape

if TYPE_CHECKING:
    from mcp_llm.images import LoadedImage

JPEG_QUALITIES = (90, 80, 70, 60, 50, 40)
SHRINK = 0.75
MIN_SIDE = 64
LINE_ART_COLOURS = 256
PHOTO_FORMATS = ("image/jpeg", "image/webp", "image/png")  # what a photo becomes, first one the provider takes
LINE_ART_FORMATS = ("image/png", "image/webp", "image/jpeg")
_PIL_FORMAT = {"image/jpeg": "JPEG", "image/png": "PNG", "image/webp": "WEBP", "image/gif": "GIF"}


@dataclass(frozen=True)
class Limits:
    max_bytes: int | None
    max_side: int | None
    max_pixels: int | None
    formats: tuple[str, ...]

    @classmethod
    def of(cls, capabilities: Capabilities) -> Limits:
        return cls(capabilities.max_image_bytes, capabilities.max_image_side, capabilities.max_image_pixels,
                   tuple(capabilities.image_formats))

    def describe(self) -> str:
        parts = []
        if self.max_bytes is not None:
            parts.append(f"{self.max_bytes / 1e6:.1f} MB")
        if self.max_side is not None:
            parts.append(f"{self.max_side} px a side")
        if self.max_pixels is not None:
            parts.append(f"{self.max_pixels / 1e6:.2f} MP")
        return ", ".join(parts) + (f"; {', '.join(self.formats)}" if self.formats else "")


class CannotFit(Exception):
    """Even the smallest version of the image is over the provider's limits."""


async def fit_all(images: Sequence[LoadedImage], capabilities: Capabilities, provider: str
                  ) -> tuple[tuple[ImageInput, ...], list[ImageReport]]:
    """Each loaded image as `provider` can take it, and its report, off the event loop; raises CannotFit."""
    limits = Limits.of(capabilities)
    fitted: list[ImageInput] = []
    reports: list[ImageReport] = []
    for loaded in images:
        sent, report = await anyio.to_thread.run_sync(fit, loaded.image, limits, provider, loaded.original,
                                                      loaded.steps)
        fitted.append(sent)
        reports.append(report)
    return tuple(fitted), reports


def fit(image: ImageInput, limits: Limits, provider: str, original: ImageShape | None = None,
        steps: Sequence[str] = ()) -> tuple[ImageInput, ImageReport]:
    """The image as `provider` can take it, and the report; raises CannotFit. Runs in a worker thread.

    `original` and `steps` are what the caller passed and what was done before (by loading); without
    them the image counts as passed as it is."""
    from mcp_llm.images import check_bomb, pillow, reduce_on_decode, scaled_within

    Image = pillow()
    opened = Image.open(io.BytesIO(image.data))  # not closed: closing would free the decoded pixels too
    width, height = opened.size
    original = original or ImageShape(width=width, height=height, bytes=len(image.data), mime_type=image.mime_type)
    done = list(steps)
    target = scaled_within(width, height, limits.max_pixels, limits.max_side)
    fits = (target == (width, height) and image.mime_type in limits.formats
            and (limits.max_bytes is None or len(image.data) <= limits.max_bytes))
    if fits:
        return image, _report(provider, original, width, height, image, done)
    check_bomb(opened, 1 << 28, "the image")
    if opened.format == "JPEG" and (scaled := _fit_jpeg(image.data, opened, target, limits, provider, original,
                                                        done)):
        return scaled
    reduce_on_decode(opened, target)
    opened.load()
    photo = _is_photo(opened)
    base = _flatten_mode(opened)
    del opened
    if target != (width, height):
        done.append(f"scaled {width}×{height} → {target[0]}×{target[1]} ({provider}'s size limit)")
    for size in _sizes(target):
        resized = base if base.size == size else base.resize(size, Image.LANCZOS, reducing_gap=3.0)
        if size != target:
            steps_here = [*done, f"scaled to {size[0]}×{size[1]} to fit {provider}'s byte limit"]
        else:
            steps_here = done
        for mime, options, label in _encodings(limits, photo, resized):
            data = _encode(resized, mime, options)
            if limits.max_bytes is None or len(data) <= limits.max_bytes:
                sent = ImageInput(data, mime)
                return sent, _report(provider, original, size[0], size[1], sent,
                                     [*steps_here, f"re-encoded as {label}"])
    raise CannotFit(f"cannot be made to fit {provider}'s limits ({limits.describe()})")


def _fit_jpeg(data: bytes, opened: Any, target: tuple[int, int], limits: Limits, provider: str,
              original: ImageShape, done: list[str]) -> tuple[ImageInput, ImageReport] | None:
    """`fit` for a JPEG libjpeg-turbo decodes: at the M/8 scale nearest the target (`jpeg_scaled`), resized
    in strips only when that scale would lose over an eighth of a side; sent as JPEG with its colour
    profile when the provider takes JPEG and it fits the byte limit at a quality step. None: Pillow's path."""
    from mcp_llm import jpeg_scaled

    header = jpeg_scaled.header(data)
    if header is None or "image/jpeg" not in limits.formats:
        return None
    width, height = opened.size
    size, resample = jpeg_scaled.decode_size(width, height, target)
    try:
        array = jpeg_scaled.decode(data, size, header.grey)
    except ValueError:
        return None
    icc = opened.info.get("icc_profile")
    if resample:
        pixels: Any = jpeg_scaled.resize_in_strips(array, target)
        del array
        size = target
    else:
        pixels = array
    if size != (width, height):
        done = [*done, f"scaled {width}×{height} → {size[0]}×{size[1]} ({provider}'s size limit)"]
    for quality in JPEG_QUALITIES:
        if resample:
            buffer = io.BytesIO()
            pixels.save(buffer, format="JPEG", quality=quality, **({"icc_profile": icc} if icc else {}))
            encoded = buffer.getvalue()
        else:
            encoded = jpeg_scaled.encode(pixels, quality, icc)
        if limits.max_bytes is None or len(encoded) <= limits.max_bytes:
            sent = ImageInput(encoded, "image/jpeg")
            return sent, _report(provider, original, size[0], size[1], sent,
                                 [*done, f"re-encoded as JPEG quality {quality}"])
    return None  # over the byte limit at every quality: Pillow's path shrinks it further


def _report(provider: str, original: ImageShape, width: int, height: int, sent: ImageInput,
            steps: list[str]) -> ImageReport:
    return ImageReport(
        provider=provider,
        original=original.model_copy(),
        sent=ImageShape(width=width, height=height, bytes=len(sent.data), mime_type=sent.mime_type),
        steps=steps,
    )


def _sizes(target: tuple[int, int]) -> Iterator[tuple[int, int]]:
    width, height = target
    while True:
        yield width, height
        if max(width, height) <= MIN_SIDE:
            return
        width, height = max(1, int(width * SHRINK)), max(1, int(height * SHRINK))


def _is_photo(image: Any) -> bool:
    """A JPEG is a photo; otherwise many colours and no transparency make one (on a small thumbnail)."""
    if image.format == "JPEG":
        return True
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        return False
    if image.mode in ("P", "1"):
        return False
    scale = min(1.0, 128 / max(image.size))
    probe = image.resize((max(1, int(image.width * scale)), max(1, int(image.height * scale))), 0)  # nearest
    return probe.getcolors(LINE_ART_COLOURS) is None


def _flatten_mode(image: Any) -> Any:
    """A mode every encoder takes: RGB, RGBA or L."""
    if image.mode in ("RGB", "RGBA", "L"):
        return image
    has_alpha = "A" in image.mode or "transparency" in image.info
    return image.convert("RGBA" if has_alpha else "RGB")


def _encodings(limits: Limits, photo: bool, image: Any) -> Iterator[tuple[str, dict[str, Any], str]]:
    order = PHOTO_FORMATS if photo else LINE_ART_FORMATS
    for mime in order:
        if mime not in limits.formats:
            continue
        if mime == "image/png":
            yield mime, {"optimize": image.width * image.height <= 4_000_000}, "PNG"
        else:
            name = _PIL_FORMAT[mime]
            for quality in JPEG_QUALITIES:
                yield mime, {"quality": quality}, f"{name} quality {quality}"


def _encode(image: Any, mime: str, options: dict[str, Any]) -> bytes:
    if mime == "image/jpeg" and image.mode not in ("RGB", "L"):
        image = _on_white(image)
    buffer = io.BytesIO()
    image.save(buffer, format=_PIL_FORMAT[mime], **options)
    return buffer.getvalue()


def _on_white(image: Any) -> Any:
    from mcp_llm.images import pillow

    Image = pillow()
    rgba = image.convert("RGBA")
    background = Image.new("RGB", rgba.size, (255, 255, 255))
    background.paste(rgba, mask=rgba.getchannel("A"))
    return background
