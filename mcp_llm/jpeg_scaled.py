"""A JPEG decoded at the size it is sent at, in three bytes a pixel, and encoded again.

Pillow's JPEG decoder scales by 1/2, 1/4 or 1/8 only, and holds RGB at four bytes a pixel, so a
48-megapixel photo meant for Gemini's 3072 pixels was decoded at 4000×3000 (48 MB), resized
through an intermediate (37 MB) into the result (28 MB): 6.9× the file's size at the peak (issue
23). libjpeg-turbo scales by any M/8 while it decodes; through `simplejpeg` (which ships it, and
decodes into a numpy array of three bytes a pixel) the same photo is decoded at 3/8, 3000×2250,
20 MB, and sent as it comes out. When the M/8 step just within a limit would lose more than an
eighth of each side, the next step up is decoded and resized to the limit in strips of rows, so
no full-size intermediate exists. EXIF orientations are applied on the array (a copy of three
bytes a pixel, not four), and the colour profile is written back into what is encoded.

Anything libjpeg-turbo cannot decode straight to RGB or grey (CMYK, YCCK) or finds damaged gives
None or ValueError here, and the caller takes Pillow's path, which reports damage as it always did.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

EIGHTHS = range(1, 9)  # the scales libjpeg-turbo decodes at directly: 1/8 … 8/8
KEEP_SIDE = 7 / 8  # a scale within the limit losing more of a side than this is decoded larger and resized
STRIP_ROWS = 256  # output rows resized at a time
ICC_CHUNK = 65_519  # an APP2 segment's payload after its 14-byte ICC_PROFILE header
_LANCZOS_SUPPORT = 3.0


@dataclass(frozen=True)
class Header:
    width: int
    height: int
    grey: bool


def header(data: bytes) -> Header | None:
    """The JPEG's size, if libjpeg-turbo decodes it straight to RGB or grey; None otherwise."""
    import simplejpeg

    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    if colorspace not in ("Gray", "YCbCr", "RGB"):
        return None  # CMYK, YCCK: Pillow converts those
    return Header(width, height, colorspace == "Gray")


def scaled(width: int, height: int, eighths: int) -> tuple[int, int]:
    """The size libjpeg-turbo decodes at M/8 (it rounds up)."""
    return -(-width * eighths // 8), -(-height * eighths // 8)


def largest_within_pixels(width: int, height: int, max_pixels: int) -> tuple[int, int] | None:
    """The largest M/8 size with at most `max_pixels`, or None when even 1/8 has more."""
    fitting = [size for m in EIGHTHS if (size := scaled(width, height, m))[0] * size[1] <= max_pixels]
    return fitting[-1] if fitting else None


def decode_size(width: int, height: int, target: tuple[int, int]) -> tuple[tuple[int, int], bool]:
    """The M/8 size to decode at for `target` (never larger than the image), and whether a resize to
    `target` must follow: the largest size within it if that keeps 7/8 of each side, else the smallest
    one over it."""
    sizes = [scaled(width, height, m) for m in EIGHTHS]
    within = [s for s in sizes if s[0] <= target[0] and s[1] <= target[1]]
    if within and within[-1][0] >= target[0] * KEEP_SIDE and within[-1][1] >= target[1] * KEEP_SIDE:
        return within[-1], False
    above = next(s for s in sizes if s[0] >= target[0] and s[1] >= target[1])
    return above, above != target


def decode(data: bytes, size: tuple[int, int], grey: bool) -> Any:
    """The pixels at `size` (one of `scaled`'s), as a numpy array rows × columns × 3 (or 1 for grey).
    Raises ValueError on damaged data."""
    import simplejpeg

    array = simplejpeg.decode_jpeg(data, colorspace="GRAY" if grey else "RGB", min_width=size[0],
                                   min_height=size[1], strict=True)
    if (array.shape[1], array.shape[0]) != size:
        raise ValueError(f"decoded at {array.shape[1]}×{array.shape[0]}, not {size[0]}×{size[1]}")
    return array


def orient(array: Any, orientation: int | None) -> Any:
    """The array turned as EXIF `orientation` says (as Pillow's `exif_transpose`), contiguous."""
    import numpy as np

    if orientation in (None, 1):
        return array
    turned = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.transpose(1, 0, 2),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: a.transpose(1, 0, 2)[::-1, ::-1],
        8: lambda a: np.rot90(a, 1),
    }[orientation](array)
    return np.ascontiguousarray(turned)


def encode(array: Any, quality: int, icc: bytes | None = None) -> bytes:
    """JPEG of the array at `quality` (4:2:0, as Pillow writes by default), with the colour profile."""
    import simplejpeg

    grey = array.shape[2] == 1
    data = simplejpeg.encode_jpeg(array, quality=quality, colorspace="GRAY" if grey else "RGB",
                                  colorsubsampling="Gray" if grey else "420")
    return with_icc(data, icc) if icc else data


def with_icc(data: bytes, icc: bytes) -> bytes:
    """`data` (a JPEG) with `icc` written as APP2 ICC_PROFILE segments after its JFIF header."""
    chunks = [icc[i : i + ICC_CHUNK] for i in range(0, len(icc), ICC_CHUNK)]
    if len(chunks) > 255:
        return data  # no JPEG can hold it; Pillow refuses such a profile too
    segments = b"".join(
        b"\xff\xe2" + (16 + len(chunk)).to_bytes(2, "big") + b"ICC_PROFILE\x00" + bytes((n, len(chunks))) + chunk
        for n, chunk in enumerate(chunks, 1)
    )
    at = 2
    if data[2:4] == b"\xff\xe0":  # JFIF APP0 stays first
        at = 4 + int.from_bytes(data[4:6], "big")
    return data[:at] + segments + data[at:]


def resize_in_strips(array: Any, size: tuple[int, int]) -> Any:
    """A Pillow image of `size` resampled (Lanczos) from the array a strip of rows at a time: each strip
    takes the source rows its filter reaches, so the result is the whole-image resize's, without a
    whole-image intermediate beside the source and the result."""
    from PIL import Image  # strips are built from arrays here, never opened from files: no bomb check to skip

    src_h, src_w = array.shape[:2]
    grey = array.shape[2] == 1
    out = Image.new("L" if grey else "RGB", size)
    scale_y = src_h / size[1]
    reach = _LANCZOS_SUPPORT * max(scale_y, 1.0) + 2
    for row in range(0, size[1], STRIP_ROWS):
        end = min(size[1], row + STRIP_ROWS)
        top = max(0, math.floor(row * scale_y - reach))
        bottom = min(src_h, math.ceil(end * scale_y + reach))
        rows = array[top:bottom, :, 0] if grey else array[top:bottom]
        strip = Image.fromarray(rows)
        piece = strip.resize((size[0], end - row), Image.Resampling.LANCZOS,
                             box=(0, row * scale_y - top, src_w, end * scale_y - top))
        out.paste(piece, (0, row))
    return out
