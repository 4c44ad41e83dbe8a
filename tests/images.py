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
