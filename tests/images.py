"""Small real images made on the fly with Pillow, for the image tests."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib

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


# --- hostile files for the metadata tests: metadata where the first stripper did not look -----------

GPS_LATITUDE = struct.pack(">6I", 48, 1, 51, 1, 29, 1)  # 48° 51' 29" N, as exif_with writes it (big-endian)
XMP_PACKET = (b'<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
              b"<exif:GPSLatitude>48,51.29N</exif:GPSLatitude>XMP-SECRET</x:xmpmeta><?xpacket end=\"w\"?>")
XMP_APP1 = b"http://ns.adobe.com/xap/1.0/\x00" + XMP_PACKET


def zip_bytes() -> bytes:
    """A small ZIP archive, as someone hiding a file behind an image would append it."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("secret.txt", "ZIP-SECRET: the archive's contents")
    return buffer.getvalue()


def jpeg_segment(marker: int, payload: bytes) -> bytes:
    return bytes((0xFF, marker)) + (len(payload) + 2).to_bytes(2, "big") + payload


def jpeg_parts(raw: bytes) -> list[tuple[int, bytes]]:
    """A JPEG as (marker, bytes) parts in order, each scan with its entropy-coded data."""
    parts, i = [(0xD8, raw[:2])], 2
    while i < len(raw):
        marker = raw[i + 1]
        if marker == 0xD9:
            parts.append((marker, raw[i : i + 2]))
            return parts
        end = i + 2 + int.from_bytes(raw[i + 2 : i + 4], "big")
        if marker == 0xDA:
            while not (raw[end] == 0xFF and raw[end + 1] not in (0x00, *range(0xD0, 0xD8))):
                end += 1
        parts.append((marker, raw[i:end]))
        i = end
    raise ValueError("no EOI")


def progressive_jpeg_with_metadata_between_scans() -> bytes:
    """A progressive JPEG whose metadata sits where a stripper stopping at the first scan never looks:
    an APP1 EXIF with a GPS position, an XMP packet, an IPTC block and comments between its scans, and a
    JFIF thumbnail; a normal EXIF (with GPS) and a comment up front too."""
    buffer = io.BytesIO()
    Image.effect_noise((64, 48), 40).convert("RGB").save(buffer, format="JPEG", progressive=True, quality=90,
                                                         exif=exif_with(1, gps=True), comment=b"COMMENT-FRONT")
    parts = jpeg_parts(buffer.getvalue())
    scans = [n for n, (marker, _) in enumerate(parts) if marker == 0xDA]
    assert len(scans) > 2, "not progressive"
    hidden = [jpeg_segment(0xE1, exif_with(1, gps=True).replace(b"PhoneMaker", b"HiddenMake")),
              jpeg_segment(0xFE, b"COMMENT-BETWEEN-SCANS"), jpeg_segment(0xE1, XMP_APP1),
              jpeg_segment(0xED, b"Photoshop 3.0\x008BIM\x04\x04\x00\x00\x00\x00\x00\x0cIPTC-SECRET!")]
    out = b""
    for n, (marker, data) in enumerate(parts):
        if n == scans[1]:  # after the first scan, before the second
            out += b"".join(hidden)
        if marker == 0xE0 and data[4:9] == b"JFIF\x00":  # a 2×1 thumbnail whose RGB bytes spell THUMB!
            data = jpeg_segment(0xE0, data[4:16] + b"\x02\x01" + b"THUMB!")
        out += data
    return out


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_with_text_everywhere() -> bytes:
    """A PNG with text, EXIF, time and a private chunk before IDAT, and a tEXt chunk after IEND."""
    buffer = io.BytesIO()
    Image.effect_noise((32, 24), 60).convert("RGBA").save(buffer, format="PNG")
    raw = buffer.getvalue()
    ihdr_end = 8 + 25
    before = (png_chunk(b"tEXt", b"Comment\x00TEXT-SECRET") + png_chunk(b"zTXt", b"Author\x00\x00" +
              zlib.compress(b"ZTXT-SECRET")) + png_chunk(b"iTXt", b"XML:com.adobe.xmp\x00\x00\x00\x00\x00" +
              XMP_PACKET) + png_chunk(b"eXIf", exif_with(1, gps=True)[6:]) +
              png_chunk(b"tIME", b"\x07\xe9\x01\x02\x03\x04\x05") + png_chunk(b"prVt", b"PRIVATE-SECRET"))
    after = png_chunk(b"tEXt", b"Location\x00AFTER-IEND-SECRET")
    return raw[:ihdr_end] + before + raw[ihdr_end:] + after


def gif_with_extensions() -> bytes:
    """A two-frame GIF with a comment, an XMP application extension, a private application extension
    and a plain-text extension (with its own graphic control block) besides the loop extension, and
    bytes after the trailer."""
    buffer = io.BytesIO()
    first, second = Image.new("RGB", (16, 12), (0, 128, 255)), Image.new("RGB", (16, 12), (255, 64, 0))
    first.save(buffer, format="GIF", save_all=True, append_images=[second], loop=0, duration=[100, 250],
               comment=b"COMMENT-SECRET")
    raw = buffer.getvalue()
    flags = raw[10]
    start = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)

    def sub_blocks(data: bytes) -> bytes:
        return b"".join(bytes((len(data[i : i + 255]),)) + data[i : i + 255] for i in range(0, len(data), 255)) + b"\0"

    xmp = b"\x21\xff\x0bXMP DataXMP" + sub_blocks(XMP_PACKET)
    private = b"\x21\xff\x0bSECRETAP1.0" + sub_blocks(b"APPLICATION-SECRET")
    control = b"\x21\xf9\x04\x00\x00\x00\x00\x00"  # a graphic control block for the plain text
    plain_text = b"\x21\x01\x0c" + bytes(12) + sub_blocks(b"PLAIN-TEXT-SECRET")
    return raw[:start] + xmp + private + control + plain_text + raw[start:] + b"TRAILING-SECRET"


def webp_with_metadata() -> bytes:
    """A lossless WebP with EXIF (a GPS position) and XMP chunks, a private chunk, and bytes after the RIFF."""
    buffer = io.BytesIO()
    Image.effect_noise((24, 16), 60).convert("RGB").save(buffer, format="WEBP", lossless=True,
                                                         exif=exif_with(1, gps=True), xmp=XMP_PACKET)
    raw = buffer.getvalue()
    private = b"SECR" + struct.pack("<I", 14) + b"PRIVATE-SECRET"
    body = raw[12:] + private
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body + b"TRAILING-SECRET"
