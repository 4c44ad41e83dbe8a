"""What a provider does with an image it receives: decode it, and refuse it when over its limits.

Each fake calls `image_problem` on every image, with the limits the real API enforces (or beyond
which it scales the image down itself), so a test that passes proves what was sent decodes and
fits that provider. Stdlib and Pillow only.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

MIME_OF = {"PNG": "image/png", "JPEG": "image/jpeg", "GIF": "image/gif", "WEBP": "image/webp"}


@dataclass(frozen=True)
class ImageLimits:
    formats: tuple[str, ...]
    max_bytes: int | None = None
    max_side: int | None = None
    max_pixels: int | None = None


OLLAMA = ImageLimits(formats=("image/png", "image/jpeg"))
GEMINI = ImageLimits(formats=("image/png", "image/jpeg", "image/webp"), max_bytes=15 * 1024 * 1024, max_side=3072)
ANTHROPIC = ImageLimits(formats=("image/png", "image/jpeg", "image/gif", "image/webp"), max_bytes=5 * 1024 * 1024,
                        max_side=1568, max_pixels=1_150_000)


def image_problem(raw: bytes, limits: ImageLimits, declared: str | None = None) -> str | None:
    """Why the provider would refuse these bytes, or None when it decodes them within its limits."""
    from PIL import Image

    if limits.max_bytes is not None and len(raw) > limits.max_bytes:
        return f"image exceeds {limits.max_bytes} bytes: {len(raw)}"
    try:
        with Image.open(io.BytesIO(raw)) as image:
            image.load()
            mime = MIME_OF.get(image.format or "", f"image/{(image.format or '?').lower()}")
            width, height = image.size
            exif = image.getexif()
    except Exception as exc:  # whatever Pillow raises, the API says "could not process"
        return f"could not process image: {exc}"
    if mime not in limits.formats:
        return f"unsupported image format {mime}"
    if declared is not None and declared != mime:
        return f"image does not match the provided media type {declared}"
    if limits.max_side is not None and max(width, height) > limits.max_side:
        return f"image is {width}x{height}, over {limits.max_side} px a side"
    if limits.max_pixels is not None and width * height > limits.max_pixels:
        return f"image is {width}x{height}, over {limits.max_pixels} pixels"
    if 0x8825 in exif:  # the GPS IFD: a privacy leak we promise never to send
        return "image carries EXIF GPS data"
    return None
