"""JPEGs decoded at the size they are sent at (mcp_llm/jpeg_scaled.py), through load_image and the fitting:
upright for every EXIF orientation, colour profile kept, the M/8 sizes chosen, strips equal to a whole resize,
and what libjpeg-turbo cannot decode straight (CMYK) still taken by Pillow."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms, ImageOps

from mcp_llm import jpeg_scaled
from mcp_llm.adapters.anthropic import AnthropicAdapter
from mcp_llm.adapters.gemini import GeminiAdapter
from mcp_llm.config import ImageSettings
from mcp_llm.image_fit import Limits, fit
from mcp_llm.images import load_image
from tests.images import exif_with

pytestmark = pytest.mark.anyio

SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _quadrants(width: int, height: int) -> Image.Image:
    """Four flat colours, one per quadrant: any turn or flip moves them somewhere else."""
    image = Image.new("RGB", (width, height), (230, 20, 20))
    image.paste((20, 230, 20), (width // 2, 0, width, height // 2))
    image.paste((20, 20, 230), (0, height // 2, width // 2, height))
    image.paste((230, 230, 20), (width // 2, height // 2, width, height))
    return image


def _jpeg(image: Image.Image, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95, **options)
    return buffer.getvalue()


def _close(a: Image.Image, b: Image.Image) -> bool:
    """Equal but for JPEG noise (the quadrants are flat, so their centres are exact to a few levels)."""
    if a.size != b.size:
        return False
    diff = np.abs(np.asarray(a.convert("RGB"), dtype=int) - np.asarray(b.convert("RGB"), dtype=int))
    return float(np.median(diff)) <= 2 and int(np.percentile(diff, 95)) <= 24


@pytest.mark.parametrize("orientation", range(1, 9))
async def test_every_exif_orientation_arrives_as_pillow_turns_it(tmp_path: Path, orientation: int) -> None:
    stored = _jpeg(_quadrants(96, 64), exif=exif_with(orientation))
    path = tmp_path / "phone.jpg"
    path.write_bytes(stored)
    settings = ImageSettings(roots=[tmp_path], max_pixels=48 * 32)  # over it: decoded at 1/2, then turned

    loaded = await load_image(str(path), settings)

    expected = ImageOps.exif_transpose(Image.open(io.BytesIO(stored))).resize(
        (32, 48) if orientation in (5, 6, 7, 8) else (48, 32))
    with Image.open(io.BytesIO(loaded.data)) as sent:
        assert _close(sent, expected), (orientation, sent.size)
        assert sent.getexif().get(0x0112) in (None, 1)
    assert any(step.startswith("scaled") for step in loaded.steps)
    assert (f"EXIF orientation {orientation} applied" in loaded.steps) == (orientation != 1)


async def test_a_re_encoded_photo_keeps_its_colour_profile_and_drops_its_metadata(tmp_path: Path) -> None:
    path = tmp_path / "profiled.jpg"
    path.write_bytes(_jpeg(_quadrants(400, 300), icc_profile=SRGB, exif=exif_with(6, gps=True)))

    loaded = await load_image(str(path), ImageSettings(roots=[tmp_path]))

    with Image.open(io.BytesIO(loaded.data)) as sent:
        assert sent.size == (300, 400)
        assert sent.info.get("icc_profile") == SRGB
        assert 0x8825 not in sent.getexif()
    assert b"PhoneMaker" not in loaded.data


async def test_a_photo_is_decoded_at_the_m_8_scale_of_each_provider(tmp_path: Path) -> None:
    """4000×3000 for Gemini (3072 px a side): 3/4 is 3000×2250, within a side's eighth, sent as it comes out;
    for Anthropic (1568 px, 1.15 MP): 1/4 would lose a fifth of each side, so 3/8 is decoded and resized
    to exactly its limit."""
    rng = np.random.default_rng(7)
    noise = Image.fromarray(rng.integers(0, 255, (3000, 4000, 3), dtype=np.uint8))
    path = tmp_path / "photo.jpg"
    path.write_bytes(_jpeg(noise, icc_profile=SRGB))
    loaded = await load_image(str(path), ImageSettings(roots=[tmp_path], max_bytes=50_000_000))

    to_gemini, gemini = fit(loaded.image, Limits.of(GeminiAdapter.capabilities), "gemini", loaded.original)
    to_claude, claude = fit(loaded.image, Limits.of(AnthropicAdapter.capabilities), "anthropic", loaded.original)

    assert (gemini.sent.width, gemini.sent.height) == (3000, 2250)
    assert (claude.sent.width, claude.sent.height) == (1238, 928)
    for sent, report in ((to_gemini, gemini), (to_claude, claude)):
        with Image.open(io.BytesIO(sent.data)) as image:
            assert image.size == (report.sent.width, report.sent.height) and image.format == "JPEG"
            assert image.info.get("icc_profile") == SRGB
        assert report.steps[-2].startswith("scaled 4000×3000 →")


def test_a_resize_in_strips_is_the_whole_images_resize() -> None:
    rng = np.random.default_rng(3)
    array = rng.integers(0, 255, (1125, 1500, 3), dtype=np.uint8)
    whole = np.asarray(Image.fromarray(array).resize((1238, 928), Image.LANCZOS), dtype=int)
    strips = np.asarray(jpeg_scaled.resize_in_strips(array, (1238, 928)), dtype=int)
    assert np.abs(whole - strips).max() <= 1  # float rounding of the strip boxes, nothing more

    grey = array[:, :, :1]
    whole_grey = np.asarray(Image.fromarray(array[:, :, 0]).resize((300, 700), Image.LANCZOS), dtype=int)
    assert np.abs(whole_grey - np.asarray(jpeg_scaled.resize_in_strips(grey, (300, 700)), dtype=int)).max() <= 1


def test_the_decode_size_is_the_largest_within_unless_it_loses_over_an_eighth() -> None:
    assert jpeg_scaled.decode_size(8000, 6000, (3072, 2304)) == ((3000, 2250), False)
    assert jpeg_scaled.decode_size(4000, 3000, (1238, 928)) == ((1500, 1125), True)
    assert jpeg_scaled.decode_size(4000, 3000, (4000, 3000)) == ((4000, 3000), False)
    assert jpeg_scaled.largest_within_pixels(8000, 6000, 4096 * 4096) == (4000, 3000)
    assert jpeg_scaled.largest_within_pixels(8000, 6000, 10) is None


async def test_a_cmyk_jpeg_is_still_turned_and_scaled_by_pillow(tmp_path: Path) -> None:
    path = tmp_path / "print.jpg"
    path.write_bytes(_jpeg(_quadrants(96, 64).convert("CMYK"), exif=exif_with(6)))
    assert jpeg_scaled.header(path.read_bytes()) is None

    loaded = await load_image(str(path), ImageSettings(roots=[tmp_path], max_pixels=48 * 32))

    with Image.open(io.BytesIO(loaded.data)) as sent:
        assert sent.size == (32, 48)
    assert "EXIF orientation 6 applied" in loaded.steps
