"""Images made safe and fitted, end to end through a real MCP client and the three fake providers.

Each fake decodes every image it receives and refuses one over that provider's limits or with EXIF
GPS data (tests/fakes/_images.py), so a call that succeeds proves what was sent fits.
"""

from __future__ import annotations

import base64
import io
import os
import struct
import zlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from PIL import Image

from mcp_llm.config import load_settings
from mcp_llm.server import build_server
from tests.conftest import call, call_error
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.gemini_server import FakeGemini
from tests.fakes.ollama_server import FakeModel, FakeOllama, default_models
from tests.images import exif_with, image_bytes, photo_jpeg, png_bytes

pytestmark = pytest.mark.anyio

GEMINI_KEY = "AIza-fit-test"
ANTHROPIC_KEY = "sk-ant-fit-test"
MODELS = ["ollama/llava:7b", "gemini-2.5-flash", "claude-haiku-4-5"]


@pytest.fixture(scope="module")
def big_photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("photo") / "photo.jpg"
    path.write_bytes(photo_jpeg(8000, 6000, quality=90, exif=exif_with(1)))
    return path


@pytest.fixture
def fakes() -> Iterator[tuple[FakeOllama, FakeGemini, FakeAnthropic]]:
    models = [*default_models(), FakeModel("qwen2.5:0.5b"), FakeModel("gemma3:4b", vision=True)]
    with FakeOllama(models) as ollama, FakeGemini(api_key=GEMINI_KEY) as gemini, \
            FakeAnthropic(api_key=ANTHROPIC_KEY) as anthropic:
        yield ollama, gemini, anthropic
        for fake in (ollama, gemini, anthropic):
            assert not fake.errors, fake.errors


def _config(fakes: tuple[FakeOllama, FakeGemini, FakeAnthropic], roots: list[Path], extra: str = "") -> str:
    ollama, gemini, anthropic = fakes
    return f"""
[defaults]
vision_model = "ollama/llava:7b"
max_retries = 0
timeout_s = 60
{extra}
[providers.ollama]
endpoint = "{ollama.url}"
[[providers.ollama.models]]
id = "llama3.2:3b"
[[providers.ollama.models]]
id = "llava:7b"
vision = true
[[providers.ollama.models]]
id = "gemma3:4b"
vision = false
[providers.gemini]
endpoint = "{gemini.url}"
[providers.anthropic]
endpoint = "{anthropic.url}"
[images]
roots = [{", ".join(f'"{r}"' for r in roots)}]
"""


@pytest.fixture
async def client(fakes: tuple[FakeOllama, FakeGemini, FakeAnthropic], tmp_path: Path,
                 big_photo: Path) -> AsyncIterator[Client]:
    config = tmp_path / "config.toml"
    config.write_text(_config(fakes, [tmp_path, big_photo.parent]))
    env = {"GEMINI_API_KEY": GEMINI_KEY, "ANTHROPIC_API_KEY": ANTHROPIC_KEY}
    async with Client(build_server(load_settings(config, env=env))) as session:
        yield session


def _sent_images(fakes: tuple[FakeOllama, FakeGemini, FakeAnthropic], model: str) -> list[bytes]:
    ollama, gemini, anthropic = fakes
    if model.startswith("ollama/"):
        return [base64.b64decode(i) for i in ollama.chat_requests[-1].json["messages"][-1]["images"]]
    if model.startswith("gemini"):
        return [data for _, data in gemini.requests[-1].images]
    blocks = anthropic.message_requests[-1].json["messages"][-1]["content"]
    return [base64.b64decode(b["source"]["data"]) for b in blocks if b["type"] == "image"]


@pytest.mark.parametrize("model", MODELS)
async def test_a_20_mb_48_megapixel_photo_is_accepted_by_each_provider(
    client: Client, fakes: Any, big_photo: Path, model: str
) -> None:
    size = big_photo.stat().st_size
    assert 19e6 < size <= 20 * 1024 * 1024

    result = await call(client, "analyze_image", image=str(big_photo), prompt="What is it?", model=model)

    (report,) = result["images"]
    assert report["original"] == {"width": 8000, "height": 6000, "bytes": size, "mime_type": "image/jpeg"}
    (sent,) = _sent_images(fakes, model)
    with Image.open(io.BytesIO(sent)) as image:
        assert image.size == (report["sent"]["width"], report["sent"]["height"])
        assert report["sent"]["bytes"] == len(sent) < size
        assert abs(image.width / image.height - 4 / 3) < 0.01  # scaled, never cropped or stretched
        assert image.width * image.height <= 4096 * 4096  # images.max_pixels, whatever the provider
    assert any(step.startswith("scaled 8000×6000") for step in report["steps"]), report["steps"]


async def test_the_fit_is_redone_for_each_fallback(fakes: Any, tmp_path: Path) -> None:
    anthropic = fakes[2]
    config = tmp_path / "config.toml"
    config.write_text(_config(fakes, [tmp_path], extra='fallback = ["gemini-2.5-flash"]'))
    path = tmp_path / "wide.png"
    Image.effect_noise((4000, 1000), 80).convert("RGB").save(path)
    anthropic.enqueue(status=529)  # overloaded: fall back to Gemini
    env = {"GEMINI_API_KEY": GEMINI_KEY, "ANTHROPIC_API_KEY": ANTHROPIC_KEY}
    async with Client(build_server(load_settings(config, env=env))) as session:
        result = await call(session, "analyze_image", image=str(path), prompt="?", model="claude-haiku-4-5")

    assert result["model"] == "gemini-2.5-flash"
    to_claude = Image.open(io.BytesIO(_sent_images(fakes, "claude-haiku-4-5")[0]))
    to_gemini = Image.open(io.BytesIO(_sent_images(fakes, "gemini-2.5-flash")[0]))
    assert to_claude.size == (1568, 392)  # Anthropic's longest side
    assert to_gemini.size == (3072, 768)  # Gemini's, from the same original
    (report,) = result["images"]
    assert report["provider"] == "gemini" and report["sent"]["width"] == 3072
    assert report["original"]["width"] == 4000


async def test_exif_orientation_6_arrives_upright_without_gps(client: Client, fakes: Any, tmp_path: Path) -> None:
    stored = Image.new("RGB", (60, 40), (220, 20, 20))  # stored sideways: left half red, right half blue
    stored.paste((20, 20, 220), (30, 0, 60, 40))
    buffer = io.BytesIO()
    stored.save(buffer, format="JPEG", quality=95, exif=exif_with(6, gps=True))
    path = tmp_path / "phone.jpg"
    path.write_bytes(buffer.getvalue())

    result = await call(client, "analyze_image", image=str(path), prompt="What is it?", model="ollama/llava:7b")

    (sent,) = _sent_images(fakes, "ollama/llava:7b")
    with Image.open(io.BytesIO(sent)) as image:
        assert image.size == (40, 60)  # width and height swapped
        red, blue = image.convert("RGB").getpixel((20, 5)), image.convert("RGB").getpixel((20, 55))
        assert red[0] > 150 > red[2] and blue[2] > 150 > blue[0]  # rotated 90° clockwise: left half on top
        exif = image.getexif()
        assert 0x8825 not in exif and exif.get(0x0112) in (None, 1)
    assert b"PhoneMaker" not in sent
    assert any("orientation 6" in step for step in result["images"][0]["steps"])


async def test_metadata_is_cut_out_losslessly_when_there_is_no_rotation(client: Client, fakes: Any,
                                                                       tmp_path: Path) -> None:
    plain = image_bytes(32, 24, "JPEG", color=(10, 200, 90))
    with_gps = io.BytesIO()
    Image.open(io.BytesIO(plain)).save(with_gps, format="JPEG", quality=90, exif=exif_with(1, gps=True))
    path = tmp_path / "gps.jpg"
    path.write_bytes(with_gps.getvalue())

    await call(client, "analyze_image", image=str(path), prompt="?", model="claude-haiku-4-5")

    (sent,) = _sent_images(fakes, "claude-haiku-4-5")
    assert 0x8825 not in Image.open(io.BytesIO(sent)).getexif() and b"PhoneMaker" not in sent
    original_pixels = Image.open(io.BytesIO(with_gps.getvalue())).tobytes()
    assert Image.open(io.BytesIO(sent)).tobytes() == original_pixels  # not re-encoded


async def test_gif_is_converted_for_providers_that_do_not_take_it(client: Client, fakes: Any, tmp_path: Path) -> None:
    path = tmp_path / "anim.gif"
    path.write_bytes(image_bytes(20, 10, "GIF"))
    claude = await call(client, "analyze_image", image=str(path), prompt="?", model="claude-haiku-4-5")
    assert claude["images"][0]["sent"]["mime_type"] == "image/gif"  # Anthropic takes GIF as it is
    gemini = await call(client, "analyze_image", image=str(path), prompt="?", model="gemini-2.5-flash")
    assert gemini["images"][0]["sent"]["mime_type"] == "image/png"  # Gemini does not
    assert gemini["images"][0]["sent"]["width"] == 20  # never upscaled


# --- vision gating ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("model", "why"), [
    ("ollama/llama3.2:3b", "does not list vision"),  # configured without a vision flag: /api/show decides
    ("ollama/qwen2.5:0.5b", "does not list vision"),  # not configured: /api/show decides
    ("ollama/gemma3:4b", "vision = false in the config file"),  # the config's flag wins
])
async def test_a_model_without_vision_is_refused_before_sending(client: Client, fakes: Any, model: str,
                                                               why: str) -> None:
    ollama = fakes[0]
    error = await call_error(client, "analyze_image", image=base64.b64encode(png_bytes(8, 8)).decode(),
                             prompt="?", model=model)
    assert "cannot read images" in error and why in error
    assert "'ollama/llava:7b'" in error  # a vision model to use instead
    assert not ollama.chat_requests
    assert await call(client, "analyze_image", image=base64.b64encode(png_bytes()).decode(), prompt="?")


async def test_with_no_model_named_the_vision_default_answers(client: Client, fakes: Any) -> None:
    result = await call(client, "analyze_image", image=base64.b64encode(png_bytes()).decode(), prompt="?")
    assert result["model"] == "ollama/llava:7b"


async def test_a_text_model_falls_back_to_a_vision_model(fakes: Any, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(_config(fakes, [tmp_path], extra='fallback = ["ollama/llava:7b"]'))
    async with Client(build_server(load_settings(config, env={}))) as session:
        result = await call(session, "analyze_image", image=base64.b64encode(png_bytes()).decode(),
                            prompt="?", model="ollama/llama3.2:3b")
    assert result["model"] == "ollama/llava:7b"
    assert [c.json["model"] for c in fakes[0].chat_requests] == ["llava:7b"]


# --- refusals, each a clear tool error after which the next call works ------------------------------


def _bomb_png(side: int = 100_000) -> bytes:
    """A PNG whose header claims side × side pixels, with a tiny compressed body."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    body = zlib.compress(b"\x00" * 100_000, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


REFUSALS = {
    "missing": ("{root}/absent.png", "No file at"),
    "directory": ("{root}", "is not a file"),
    "relative": ("images/cat.png", "is relative"),
    "outside": ("/etc/hostname", "outside the allowed roots"),
    "traversal": ("{root}/../../etc/hostname", "outside the allowed roots"),
    "symlink-out": ("{root}/escape.png", "outside the allowed roots"),
    "text-named-png": ("{root}/text.png", "not an image"),
    "truncated-png": ("{root}/truncated.png", "damaged image"),
    "truncated-jpeg": ("{root}/truncated.jpg", "damaged image"),
    "bomb": ("{root}/bomb.png", "decompression bomb"),
    "base64-not-image": (base64.b64encode(b"just some text, not an image at all").decode(), "not an image"),
    "oversize": ("{root}/huge.png", "over the 21.0 MB limit"),  # images.max_bytes: 20 MiB
    "url-off": ("https://example.com/cat.png", "URLs are disabled"),
    # issue 18: a loop, a null byte and names too long escaped as RuntimeError/ValueError/OSError
    "fifo": ("{root}/pipe.png", "is not a file but a named pipe"),  # checked on the open descriptor too
    "symlink-loop": ("{root}/loop.png", "symlink loop"),
    "null-byte": ("{root}/cat\x00.png", "null byte"),
    "long-name": ("{root}/" + "n" * 300 + ".png", "over the 255-byte limit"),
    "long-path": ("{root}/" + "d/" * 2100 + "cat.png", "byte limit"),
    "file-as-folder": ("{root}/text.png/cat.png", "is a file, not a folder"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
async def test_bad_input_is_a_clear_tool_error_and_the_next_call_works(client: Client, tmp_path: Path,
                                                                       case: str) -> None:
    (tmp_path / "text.png").write_text("hello, I am text")
    (tmp_path / "truncated.png").write_bytes(png_bytes(64, 64)[:90])
    (tmp_path / "truncated.jpg").write_bytes(photo_jpeg(64, 48)[:600])
    (tmp_path / "bomb.png").write_bytes(_bomb_png())
    with (tmp_path / "huge.png").open("wb") as file:
        file.write(b"\x89PNG\r\n\x1a\n")
        file.truncate(21 * 1024 * 1024)
    (tmp_path / "escape.png").symlink_to("/etc/hostname")
    (tmp_path / "loop.png").symlink_to("loop.png")
    os.mkfifo(tmp_path / "pipe.png")
    spec, expected = REFUSALS[case]

    error = await call_error(client, "analyze_image", image=spec.format(root=tmp_path), prompt="?")

    assert expected in error, error
    good = tmp_path / "good.png"
    good.write_bytes(png_bytes())
    assert await call(client, "analyze_image", image=str(good), prompt="?")


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_roots_the_client_declares_are_allowed_too(fakes: Any, tmp_path: Path, mode: str) -> None:
    from mcp_types import ListRootsResult, Root

    config_root, client_root = tmp_path / "configured", tmp_path / "declared"
    config_root.mkdir()
    client_root.mkdir()
    (client_root / "pic.png").write_bytes(png_bytes())
    config = tmp_path / "config.toml"
    config.write_text(_config(fakes, [config_root]))

    async def roots(_context: Any) -> ListRootsResult:
        return ListRootsResult(roots=[Root(uri=client_root.as_uri(), name="project")])

    async with Client(build_server(load_settings(config, env={})), mode=mode, list_roots_callback=roots) as session:
        result = await session.call_tool("analyze_image", {"image": str(client_root / "pic.png"), "prompt": "?"})
    if mode == "legacy":
        assert not result.is_error, result.content
    else:  # roots are deprecated in the 2026-07-28 protocol: only images.roots count there
        assert result.is_error and "outside the allowed roots" in result.content[0].text
