"""Small real images made on the fly with Pillow, for the image tests."""

from __future__ import annotations

import io

from PIL import Image


def image_bytes(width: int, height: int, fmt: str = "PNG", color: tuple[int, int, int] = (120, 120, 120)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format=fmt)
    return buffer.getvalue()


def png_bytes(width: int = 4, height: int = 4) -> bytes:
    return image_bytes(width, height, "PNG")


def photo_jpeg(width: int = 8000, height: int = 6000, quality: int = 90, exif: bytes | None = None) -> bytes:
    """A photo-like JPEG (smooth structure and sensor-like noise): 8000×6000 at quality 90 is ~20 MB."""
    noise = Image.effect_noise((width // 2, height // 2), 60).resize((width, height), Image.BILINEAR)
    gradient = Image.linear_gradient("L").resize((width, height))
    image = Image.merge("RGB", (noise, gradient, Image.effect_noise((width, height), 25)))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality, **({"exif": exif} if exif else {}))
    return buffer.getvalue()


def exif_with(orientation: int, gps: bool = True) -> bytes:
    """EXIF bytes with an orientation tag and (by default) a GPS position, as a phone writes them."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "PhoneMaker"
    if gps:
        exif[0x8825] = {1: "N", 2: (48.0, 51.0, 29.0), 3: "E", 4: (2.0, 17.0, 40.0)}
    return exif.tobytes()
