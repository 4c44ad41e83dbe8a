"""Image input: each form, the roots, sniffing, size limits, resizing and re-encoding."""

from __future__ import annotations

import base64
import io
import os
import random
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
        (base64.b64encode(b"hello world, plain text, and no image at all").decode(), "base64 data is not an image"),
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


# --- the roots, the size limit on every form, what errors name ------------------------------------


@pytest.fixture
def image_settings(image_root: Path) -> ImageSettings:
    return ImageSettings(roots=[image_root], max_bytes=200_000, max_pixels=4096 * 4096)


def noise_png(side: int = 300) -> bytes:
    """A PNG that does not compress: about 3 × side² bytes."""
    image = Image.frombytes("RGB", (side, side), random.Random(7).randbytes(side * side * 3))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


@pytest.mark.parametrize("form", ["data-uri", "base64"])
async def test_max_bytes_holds_for_inline_images_too(image_settings: ImageSettings, form: str) -> None:
    raw = noise_png()
    assert len(raw) > image_settings.max_bytes
    encoded = base64.b64encode(raw).decode()
    spec = f"data:image/png;base64,{encoded}" if form == "data-uri" else encoded
    with pytest.raises(ImageError, match=r"over the 0\.2 MB limit"):
        await load_image(spec, image_settings)


async def test_a_path_outside_the_roots_names_every_allowed_root(image_settings: ImageSettings, image_root: Path,
                                                                 tmp_path: Path) -> None:
    declared = tmp_path / "declared"
    declared.mkdir()
    (tmp_path / "cat.png").write_bytes(png_bytes())

    async def client_roots() -> list[Path]:
        return [declared]

    with pytest.raises(ImageError) as info:
        await load_image(str(tmp_path / "cat.png"), image_settings, client_roots)
    message = info.value.user_message()
    assert f"outside the allowed roots ({image_root}, {declared})" in message
    with pytest.raises(ImageError, match=r"outside the allowed roots \(\(none\)\)"):
        await load_image(str(tmp_path / "cat.png"), ImageSettings(roots=[]))


async def test_a_path_inside_the_configured_roots_needs_no_client_root(image_settings: ImageSettings,
                                                                       image_root: Path, tmp_path: Path) -> None:
    (image_root / "cat.png").write_bytes(png_bytes())
    asked: list[bool] = []

    async def client_roots() -> list[Path]:
        asked.append(True)
        return [tmp_path / "elsewhere"]

    loaded = await load_image(str(image_root / "cat.png"), image_settings, client_roots)
    assert loaded.mime_type == "image/png"
    assert not asked, "the client was asked for its roots about a path images.roots already allows"


async def test_surrounding_whitespace_is_ignored(image_settings: ImageSettings, image_root: Path) -> None:
    (image_root / "cat.png").write_bytes(png_bytes())
    assert (await load_image(f"  {image_root / 'cat.png'}\n", image_settings)).mime_type == "image/png"
    data_uri = "data:image/png;base64," + base64.b64encode(png_bytes()).decode()
    assert (await load_image(f"\n{data_uri} ", image_settings)).mime_type == "image/png"


@pytest.mark.parametrize("length", [200, 201, 400])
async def test_a_url_over_200_characters_is_clipped_in_errors(image_settings: ImageSettings, length: int) -> None:
    from tests.fakes.ollama_server import FakeOllama

    enabled = image_settings.model_copy(update={"allow_urls": True, "allow_private_urls": True})
    with FakeOllama() as fake:  # `/` answers text, which is not an image
        base = f"{fake.url}/?"
        url = base + "q" * (length - len(base))
        assert len(url) == length
        with pytest.raises(ImageError) as info:
            await load_image(url, enabled)
    message = info.value.user_message()
    assert "not an image" in message
    if length <= 200:
        assert url in message and "…" not in message
    else:
        assert url[:200] + "…" in message and url not in message
