"""Image input: each form, the roots, sniffing, size limits, resizing and re-encoding."""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path

import pytest
from PIL import Image

from mcp_llm.config import ImageSettings
from mcp_llm.errors import ImageError
from mcp_llm.images import load_image
from tests.images import image_bytes, png_bytes

pytestmark = pytest.mark.anyio


@pytest.fixture
def images(image_root: Path) -> ImageSettings:
    return ImageSettings(roots=[image_root], max_bytes=200_000, max_pixels=64 * 64)


@pytest.mark.parametrize(("fmt", "mime"), [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("GIF", "image/gif"),
                                           ("WEBP", "image/webp")])
async def test_common_formats_pass_through_unchanged(images: ImageSettings, image_root: Path, fmt: str,
                                                     mime: str) -> None:
    raw = image_bytes(10, 10, fmt)
    path = image_root / f"pic.{fmt.lower()}"
    path.write_bytes(raw)
    loaded = await load_image(str(path), images)
    assert loaded.data == raw and loaded.mime_type == mime


async def test_type_is_sniffed_not_taken_from_the_extension(images: ImageSettings, image_root: Path) -> None:
    path = image_root / "really-a-jpeg.png"
    path.write_bytes(image_bytes(10, 10, "JPEG"))
    assert (await load_image(str(path), images)).mime_type == "image/jpeg"


async def test_other_formats_become_png(images: ImageSettings, image_root: Path) -> None:
    path = image_root / "old.bmp"
    path.write_bytes(image_bytes(10, 10, "BMP"))
    loaded = await load_image(str(path), images)
    assert loaded.mime_type == "image/png"
    assert Image.open(io.BytesIO(loaded.data)).size == (10, 10)


async def test_large_images_are_scaled_down_within_max_pixels(images: ImageSettings, image_root: Path) -> None:
    path = image_root / "big.jpg"
    path.write_bytes(image_bytes(200, 100, "JPEG"))
    loaded = await load_image(str(path), images)
    width, height = Image.open(io.BytesIO(loaded.data)).size
    assert width * height <= 64 * 64
    assert abs(width / height - 2) < 0.1
    assert loaded.mime_type == "image/jpeg"


async def test_data_uri_and_base64_forms(images: ImageSettings) -> None:
    raw = png_bytes(5, 5)
    b64 = base64.b64encode(raw).decode()
    assert (await load_image(f"data:image/png;base64,{b64}", images)).data == raw
    assert (await load_image(b64, images)).data == raw
    urlsafe = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    assert (await load_image(urlsafe, images)).data == raw
    wrapped = "\n".join(b64[i : i + 60] for i in range(0, len(b64), 60))
    assert (await load_image(wrapped, images)).data == raw


async def test_home_relative_paths_are_expanded(image_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(image_root))
    (image_root / "me.png").write_bytes(png_bytes())
    settings = ImageSettings(roots=["~"])
    assert (await load_image("~/me.png", settings)).mime_type == "image/png"


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("{root}/absent.png", "No file at"),
        ("{root}", "is not a file"),
        ("{root}/notes.txt", "not an image"),
        ("{root}/broken.png", "damaged image"),
        ("{root}/huge.png", "over the 0.2 MB limit"),
        ("relative/cat.png", "is relative"),
        ("{outside}/cat.png", "outside the allowed roots"),
        ("{root}/escape.png", "outside the allowed roots"),
        ("{root}/../cat.png", "outside the allowed roots"),
        ("data:image/png,notbase64", "not base64-encoded"),
        ("data:image/png;base64,@@@", "invalid"),
        ("data:" + base64.b64encode(b"hello world, plain text").decode(), "malformed"),
        ("http://127.0.0.1:9/a.png", "URLs are disabled"),
        ("   ", "empty"),
    ],
)
async def test_bad_images_get_clear_errors(images: ImageSettings, image_root: Path, tmp_path: Path, spec: str,
                                           fragment: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "cat.png").write_bytes(png_bytes())
    (tmp_path / "cat.png").write_bytes(png_bytes())
    (image_root / "notes.txt").write_text("hello")
    (image_root / "broken.png").write_bytes(png_bytes(20, 20)[:60])
    (image_root / "huge.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(300_000))
    link = image_root / "escape.png"
    if not link.exists():
        link.symlink_to(outside / "cat.png")

    with pytest.raises(ImageError) as info:
        await load_image(spec.format(root=image_root, outside=outside), images)
    assert fragment in info.value.user_message()
    assert info.value.hint


async def test_urls_are_fetched_when_enabled_and_still_checked(images: ImageSettings) -> None:
    from tests.fakes.ollama_server import FakeOllama

    enabled = images.model_copy(update={"allow_urls": True, "allow_private_urls": True})  # loopback allowed
    with FakeOllama() as fake:  # any loopback HTTP server: `/` answers text, which is not an image
        with pytest.raises(ImageError, match="not an image"):
            await load_image(f"{fake.url}/", enabled)
        with pytest.raises(ImageError, match="HTTP 404"):
            await load_image(f"{fake.url}/nothing-here.png", enabled)
