"""No metadata byte reaches a provider, wherever the file hid it (issue 18), and the pixels are untouched.

The first stripper stopped at a JPEG's first scan and a PNG's IEND, and left GIF and WebP alone
unless Pillow saw their metadata: an EXIF with a GPS position between the scans of a progressive
JPEG, comments, a `tEXt` chunk after IEND, a ZIP appended, GIF extensions and WebP EXIF/XMP chunks
were sent byte for byte with `steps: []`. Each hostile file here is sent through `analyze_image`
(a real MCP client, the fake Anthropic server, which takes all four formats as they are); the test
reads what the fake received, searches it for every marker the file hid, and decodes its pixels.
"""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from mcp import Client
from PIL import Image

from mcp_llm.config import load_settings
from mcp_llm.server import build_server
from tests.conftest import call
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.ollama_server import FakeOllama
from tests.images import (
    GPS_LATITUDE,
    XMP_APP1,
    exif_with,
    gif_with_extensions,
    jpeg_parts,
    jpeg_segment,
    png_chunk,
    png_with_text_everywhere,
    progressive_jpeg_with_metadata_between_scans,
    webp_with_metadata,
    zip_bytes,
)

pytestmark = pytest.mark.anyio

KEY = "sk-ant-metadata-test"
# Every one of these is in the hostile file (checked first) and must be absent from what is sent.
MARKERS = (b"SECRET", b"PhoneMaker", b"HiddenMake", GPS_LATITUDE, b"THUMB!", b"xmpmeta", b"Exif\x00",
           b"PK\x03\x04", b"COMMENT", b"tEXt", b"zTXt", b"iTXt", b"eXIf", b"tIME", b"EXIF", b"XMP ")


@pytest.fixture
def fakes() -> Iterator[tuple[FakeOllama, FakeAnthropic]]:
    with FakeOllama() as ollama, FakeAnthropic(api_key=KEY) as anthropic:
        yield ollama, anthropic
        assert not ollama.errors and not anthropic.errors, (ollama.errors, anthropic.errors)


@pytest.fixture
async def client(fakes: tuple[FakeOllama, FakeAnthropic], tmp_path: Path) -> AsyncIterator[Client]:
    ollama, anthropic = fakes
    config = tmp_path / "config.toml"
    config.write_text(f"""
[defaults]
max_retries = 0
[providers.ollama]
endpoint = "{ollama.url}"
[[providers.ollama.models]]
id = "llava:7b"
vision = true
[providers.anthropic]
endpoint = "{anthropic.url}"
[images]
roots = ["{tmp_path}"]
""")
    async with Client(build_server(load_settings(config, env={"ANTHROPIC_API_KEY": KEY}))) as session:
        yield session


def _sent_to_anthropic(anthropic: FakeAnthropic) -> bytes:
    (block,) = [b for b in anthropic.message_requests[-1].json["messages"][-1]["content"] if b["type"] == "image"]
    return base64.b64decode(block["source"]["data"])


def _frames(raw: bytes) -> list[tuple[bytes, int | None]]:
    """Every frame's decoded pixels and its duration: what a viewer shows."""
    with Image.open(io.BytesIO(raw)) as image:
        frames = []
        for index in range(getattr(image, "n_frames", 1)):
            image.seek(index)
            frames.append((image.convert("RGBA").tobytes(), image.info.get("duration")))
        return frames


HOSTILE: dict[str, tuple[Callable[[], bytes], str, tuple[str, ...]]] = {
    # name: (the file, its MIME type, what the trace step must name)
    "progressive JPEG, EXIF+GPS, XMP, IPTC and comments between scans": (
        progressive_jpeg_with_metadata_between_scans, "image/jpeg",
        ("EXIF (APP1) ×2", "XMP (APP1)", "IPTC/Photoshop (APP13)", "comment (COM) ×2", "JFIF thumbnail")),
    "JPEG with a ZIP appended": (
        lambda: progressive_jpeg_with_metadata_between_scans() + zip_bytes(), "image/jpeg", ("bytes after the image",)),
    "PNG with text chunks, eXIf, tIME, a private chunk, and tEXt after IEND": (
        png_with_text_everywhere, "image/png",
        ("text (tEXt)", "text (zTXt)", "text (iTXt)", "EXIF (eXIf)", "time (tIME)", "prVt chunk",
         "bytes after the image")),
    "PNG with a ZIP appended": (lambda: png_with_text_everywhere() + zip_bytes(), "image/png",
                                ("bytes after the image",)),
    "animated GIF with comment, XMP, private and plain-text extensions, bytes after the trailer": (
        gif_with_extensions, "image/gif",
        ("comment extension", "application extension (XMP DataXMP)", "application extension (SECRETAP1.0)",
         "plain text extension", "bytes after the image")),
    "WebP with EXIF+GPS and XMP chunks, a private chunk, bytes after the RIFF": (
        webp_with_metadata, "image/webp", ("EXIF chunk", "XMP chunk", "SECR chunk", "bytes after the image")),
}


@pytest.mark.parametrize("case", list(HOSTILE))
async def test_no_metadata_byte_is_sent_and_the_pixels_are_untouched(
    client: Client, fakes: tuple[FakeOllama, FakeAnthropic], tmp_path: Path, case: str
) -> None:
    make, mime, named = HOSTILE[case]
    hostile = make()
    hidden = [marker for marker in MARKERS if marker in hostile]
    assert len(hidden) >= 3, hidden  # the file does hide things
    path = tmp_path / "hostile"
    path.write_bytes(hostile)

    result = await call(client, "analyze_image", image=str(path), prompt="?", model="claude-haiku-4-5")

    sent = _sent_to_anthropic(fakes[1])
    assert [marker for marker in hidden if marker in sent] == []
    (report,) = result["images"]
    assert report["sent"]["mime_type"] == mime and report["sent"]["bytes"] == len(sent) < len(hostile)
    assert _frames(sent) == _frames(hostile)  # lossless: the same pixels, frames and timing
    (step,) = [s for s in report["steps"] if s.startswith("metadata stripped")]
    assert step.startswith("metadata stripped losslessly: ") and all(name in step for name in named), step
    assert not any(s.startswith("re-encoded") for s in report["steps"]), report["steps"]


async def test_a_rotated_jpeg_is_re_encoded_without_its_comments_or_xmp(
    client: Client, fakes: tuple[FakeOllama, FakeAnthropic], tmp_path: Path
) -> None:
    """Re-encoding must not carry metadata over either: Pillow's JPEG encoder writes `info["comment"]`
    back as a COM segment unless told otherwise."""
    buffer = io.BytesIO()
    Image.effect_noise((40, 30), 50).convert("RGB").save(buffer, format="JPEG", exif=exif_with(6, gps=True),
                                                          comment=b"COMMENT-SECRET")
    raw = buffer.getvalue()
    raw = raw[:2] + jpeg_segment(0xE1, XMP_APP1) + raw[2:] + zip_bytes()
    path = tmp_path / "rotated.jpg"
    path.write_bytes(raw)

    result = await call(client, "analyze_image", image=str(path), prompt="?", model="ollama/llava:7b")

    (sent,) = [base64.b64decode(i) for i in fakes[0].chat_requests[-1].json["messages"][-1]["images"]]
    assert [m for m in MARKERS if m in sent] == []
    assert not {0xE1, 0xED, 0xFE} & {marker for marker, _ in jpeg_parts(sent)}  # no APP1, APP13, COM
    with Image.open(io.BytesIO(sent)) as image:
        assert image.size == (30, 40) and "comment" not in image.info and not image.getexif()
    steps = result["images"][0]["steps"]
    assert "EXIF orientation 6 applied" in steps
    assert any(s.startswith("metadata stripped: ") and "comment (COM)" in s and "XMP (APP1)" in s for s in steps)


async def test_a_tiff_with_a_description_becomes_a_png_without_it(
    client: Client, fakes: tuple[FakeOllama, FakeAnthropic], tmp_path: Path
) -> None:
    """A format that is re-encoded anyway (TIFF, BMP…) keeps nothing but its pixels either."""
    image = Image.effect_noise((20, 10), 50).convert("RGB")
    path = tmp_path / "scan.tiff"
    image.save(path, format="TIFF", tiffinfo={270: "DESCRIPTION-SECRET", 305: "SOFTWARE-SECRET"},
               exif=exif_with(1, gps=True))
    assert b"DESCRIPTION-SECRET" in path.read_bytes()

    await call(client, "analyze_image", image=str(path), prompt="?", model="claude-haiku-4-5")

    sent = _sent_to_anthropic(fakes[1])
    assert [m for m in MARKERS if m in sent] == [] and b"DESCRIPTION" not in sent
    assert Image.open(io.BytesIO(sent)).format == "PNG"
    assert Image.open(io.BytesIO(sent)).convert("RGB").tobytes() == image.tobytes()


async def test_a_file_the_rebuild_cannot_vouch_for_is_re_encoded_not_sent_as_is(
    client: Client, fakes: tuple[FakeOllama, FakeAnthropic], tmp_path: Path
) -> None:
    """A critical PNG chunk we do not know (Pillow skips it and decodes the rest): the lossless rebuild
    will not guess whether a decoder needs it, so the image is re-encoded from its pixels."""
    image = Image.effect_noise((20, 10), 50).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    raw = buffer.getvalue()
    raw = raw[:33] + png_chunk(b"SECR", b"CRITICAL-SECRET") + raw[33:]
    path = tmp_path / "odd.png"
    path.write_bytes(raw)

    result = await call(client, "analyze_image", image=str(path), prompt="?", model="claude-haiku-4-5")

    sent = _sent_to_anthropic(fakes[1])
    assert b"SECRET" not in sent and b"SECR" not in sent
    assert Image.open(io.BytesIO(sent)).convert("RGB").tobytes() == image.tobytes()
    assert "re-encoded as PNG" in result["images"][0]["steps"]
