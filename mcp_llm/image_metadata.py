"""Lossless metadata stripping: a file rebuilt from the parts known to be pixels, nothing else.

Cutting out the metadata we know of (the first version: APP1 and COM up to the first scan, PNG
text chunks up to IEND) let through what sat elsewhere (issue 18): an EXIF segment with a GPS
position between the scans of a progressive JPEG, a `tEXt` chunk after IEND, a ZIP appended to
the file, GIF comments and application extensions, WebP EXIF and XMP chunks. So the rule is the
other way round: each format's structure is walked to its end, every part kept is on a short list
of what decoders need to draw the image the same (pixels, tables, palette, transparency, colour
profile, animation), and everything else is dropped, bytes after the image's end included. The
colour profile (JPEG APP2 ICC_PROFILE, PNG iCCP, WebP ICCP) is kept: without it colours shift,
and it describes a colour space, not the picture or who took it.

A structure we cannot walk (damaged, truncated, a part a decoder would need and we do not know)
gives None: the caller re-encodes from the pixels instead, which drops everything too.
Pure bytes work, no Pillow; each kept part is a view into the input until the final join.
"""

from __future__ import annotations

import struct
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

Piece = bytes | memoryview


@dataclass(frozen=True)
class Plan:
    """The parts to keep, in order, and a name for each part dropped."""

    pieces: list[Piece]
    dropped: list[str]

    def join(self) -> bytes:
        return b"".join(self.pieces)


def plan(raw: bytes, image_format: str) -> Plan | None:
    """What to keep of `raw` (a PNG, JPEG, GIF or WebP file); None if its structure cannot be walked."""
    walker = {"JPEG": _jpeg, "PNG": _png, "GIF": _gif, "WEBP": _webp}.get(image_format)
    if walker is None:
        return None
    try:
        return walker(raw, memoryview(raw))
    except (IndexError, ValueError, struct.error):  # a length running past the end: damaged
        return None


def describe(dropped: Sequence[str]) -> str:
    """One trace step naming what was dropped: 'EXIF (APP1), comment (COM) ×2, 1234 bytes after the image'."""
    counts = Counter(dropped)
    return ", ".join(name if count == 1 else f"{name} ×{count}" for name, count in counts.items())


def _trailing(view: memoryview, end: int, dropped: list[str]) -> None:
    if end < len(view):
        dropped.append(f"{len(view) - end} bytes after the image")


# --- JPEG: every marker to EOI, between scans included ------------------------------------------

# SOF0-15 (not C8, reserved), DHT, DAC, DNL, DQT, DRI, DHP, EXP: what a decoder needs
_JPEG_TABLES = {*range(0xC0, 0xC8), *range(0xC9, 0xD0), 0xDB, 0xDC, 0xDD, 0xDE, 0xDF}
_XMP_IDS = (b"http://ns.adobe.com/xap/1.0/\x00", b"http://ns.adobe.com/xmp/extension/\x00")


def _jpeg(raw: bytes, view: memoryview) -> Plan | None:
    if view[:2] != b"\xff\xd8":
        return None
    pieces: list[Piece] = [b"\xff\xd8"]
    dropped: list[str] = []
    size = len(view)
    i, scans = 2, 0
    while True:
        if view[i] != 0xFF:
            return None  # not where a marker should be
        while view[i] == 0xFF:  # fill bytes before a marker
            i += 1
        marker = view[i]
        i += 1
        if marker == 0xD9:  # EOI
            pieces.append(b"\xff\xd9")
            _trailing(view, i, dropped)
            return Plan(pieces, dropped) if scans else None
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # RSTn, TEM: no length
            pieces.append(bytes((0xFF, marker)))
            continue
        length = int.from_bytes(view[i : i + 2], "big")
        end = i + length
        if length < 2 or end > size:
            return None
        if marker == 0xDA:  # SOS: its header, then entropy-coded data up to the next marker not RSTn
            scans += 1
            j = end
            while True:
                j = raw.find(b"\xff", j)
                if j < 0 or j + 1 >= size:
                    return None  # the scan runs to the end of the file: truncated
                following = view[j + 1]
                if following == 0x00 or 0xD0 <= following <= 0xD7:  # stuffed 0xFF, restart marker
                    j += 2
                elif following == 0xFF:  # fill byte: the marker is further on
                    j += 1
                else:
                    break
            pieces += [b"\xff\xda", view[i:j]]
            i = j
            continue
        if marker in _JPEG_TABLES:
            pieces += [bytes((0xFF, marker)), view[i:end]]
        elif 0xE0 <= marker <= 0xEF or marker == 0xFE:
            kept = _jpeg_app(marker, view[i:end], dropped)
            if kept is not None:
                pieces += [bytes((0xFF, marker)), kept]
        else:
            return None  # SOI again, JPG extensions (JPEG-LS…), reserved: not a file we can vouch for
        i = end


def _jpeg_app(marker: int, segment: memoryview, dropped: list[str]) -> Piece | None:
    """The APPn/COM segment to keep (its length field first), or None after naming it in `dropped`."""
    payload = segment[2:]
    head = bytes(payload[:40])
    if marker == 0xE0 and head.startswith(b"JFIF\x00") and len(payload) >= 14:  # version, pixel density
        if len(payload) == 14:
            return segment
        dropped.append("JFIF thumbnail (APP0)")
        jfif = bytearray(payload[:14])
        jfif[12:14] = b"\x00\x00"  # thumbnail 0×0
        return (16).to_bytes(2, "big") + bytes(jfif)
    if marker == 0xE2 and head.startswith(b"ICC_PROFILE\x00"):  # the colour profile
        return segment
    if marker == 0xEE and head.startswith(b"Adobe"):  # the colour transform (YCCK/CMYK): needed to decode
        return segment
    if marker == 0xE1 and head.startswith(b"Exif\x00"):
        dropped.append("EXIF (APP1)")
    elif marker == 0xE1 and head.startswith(_XMP_IDS):
        dropped.append("XMP (APP1)")
    elif marker == 0xED:
        dropped.append("IPTC/Photoshop (APP13)")
    elif marker == 0xFE:
        dropped.append("comment (COM)")
    else:
        tag = head[:16].split(b"\x00", 1)[0].decode("ascii", "replace")
        dropped.append(f"APP{marker - 0xE0}" + (f" {tag}" if tag and tag.isprintable() else ""))
    return None


# --- PNG: chunks to IEND, each CRC checked ----------------------------------------------------------

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# critical chunks; transparency, colour (gAMA, cHRM, sRGB, iCCP, sBIT, cICP, HDR mDCV/cLLI and their old
# spellings), pixel size, background, histogram; APNG's animation and frames
_PNG_KEEP = {b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"iCCP", b"sBIT", b"cICP",
             b"mDCV", b"mDCv", b"cLLI", b"cLLi", b"pHYs", b"bKGD", b"hIST", b"acTL", b"fcTL", b"fdAT"}
_PNG_NAMES = {b"tEXt": "text (tEXt)", b"zTXt": "text (zTXt)", b"iTXt": "text (iTXt)", b"eXIf": "EXIF (eXIf)",
              b"tIME": "time (tIME)"}


def _png(_raw: bytes, view: memoryview) -> Plan | None:
    if view[:8] != _PNG_SIGNATURE:
        return None
    pieces: list[Piece] = [_PNG_SIGNATURE]
    dropped: list[str] = []
    i, first = 8, True
    while i + 12 <= len(view):
        length = int.from_bytes(view[i : i + 4], "big")
        kind = bytes(view[i + 4 : i + 8])
        end = i + 12 + length
        if end > len(view) or not kind.isalpha() or (first and kind != b"IHDR"):
            return None
        crc = int.from_bytes(view[end - 4 : end], "big")
        if zlib.crc32(view[i + 4 : end - 4]) != crc:
            return None  # damaged
        first = False
        if kind in _PNG_KEEP:
            pieces.append(view[i:end])
        elif kind[0:1].isupper():
            return None  # a critical chunk we do not know: a decoder would need it
        else:
            dropped.append(_PNG_NAMES.get(kind, f"{kind.decode('ascii')} chunk"))
        i = end
        if kind == b"IEND":
            _trailing(view, i, dropped)
            return Plan(pieces, dropped)
    return None  # no IEND: truncated


# --- GIF: blocks to the trailer -------------------------------------------------------------------------

_GIF_LOOP = (b"NETSCAPE2.0", b"ANIMEXTS1.0")  # the loop count of an animation


def _gif(_raw: bytes, view: memoryview) -> Plan | None:
    if bytes(view[:6]) not in (b"GIF87a", b"GIF89a"):
        return None
    flags = view[10]
    i = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)  # header, screen descriptor, global palette
    pieces: list[Piece] = [view[:i]]
    dropped: list[str] = []
    control: int | None = None  # index in `pieces` of a graphic control extension not yet followed by its image
    while True:
        block = view[i]
        if block == 0x3B:  # trailer
            pieces.append(b"\x3b")
            _trailing(view, i + 1, dropped)
            return Plan(pieces, dropped)
        if block == 0x2C:  # image: descriptor, local palette, LZW code size, data sub-blocks
            local = view[i + 9]
            start = i
            i += 10 + (3 << ((local & 7) + 1) if local & 0x80 else 0) + 1
            i = _sub_blocks(view, i)
            pieces.append(view[start:i])
            control = None
            continue
        if block != 0x21:
            return None
        label, start = view[i + 1], i
        i = _sub_blocks(view, i + 2)
        if label == 0xF9:
            control = len(pieces)
            pieces.append(view[start:i])
        elif label == 0xFF and view[start + 2] == 11 and bytes(view[start + 3 : start + 14]) in _GIF_LOOP:
            pieces.append(view[start:i])
        else:
            if label == 0xFE:
                dropped.append("comment extension")
            elif label == 0xFF:
                name = bytes(view[start + 3 : start + 3 + min(11, view[start + 2])]).decode("ascii", "replace")
                dropped.append(f"application extension ({name})")
            else:
                dropped.append("plain text extension" if label == 0x01 else f"extension 0x{label:02X}")
            if label == 0x01 and control is not None:  # its control block would otherwise apply to the next image
                del pieces[control]
                control = None


def _sub_blocks(view: memoryview, i: int) -> int:
    """The offset after the data sub-blocks starting at `i` (each a length byte, then that many bytes)."""
    while view[i]:
        i += view[i] + 1
    if i >= len(view):
        raise IndexError(i)
    return i + 1


# --- WebP: RIFF chunks ----------------------------------------------------------------------------------

_WEBP_KEEP = {b"VP8 ", b"VP8L", b"VP8X", b"ALPH", b"ANIM", b"ANMF", b"ICCP"}
_VP8X_EXIF, _VP8X_XMP = 0x08, 0x04


def _webp(_raw: bytes, view: memoryview) -> Plan | None:
    if bytes(view[:4]) != b"RIFF" or bytes(view[8:12]) != b"WEBP":
        return None
    riff_end = 8 + int.from_bytes(view[4:8], "little")
    if riff_end > len(view):
        return None
    chunks: list[Piece] = []
    dropped: list[str] = []
    i = 12
    while i + 8 <= riff_end:
        kind = bytes(view[i : i + 4])
        length = int.from_bytes(view[i + 4 : i + 8], "little")
        end = i + 8 + length
        if end > riff_end:
            return None
        padded = min(end + (length & 1), riff_end)  # an odd chunk has a pad byte (a last one may lack it)
        if kind == b"VP8X":
            if length < 10:
                return None
            header = bytearray(view[i:padded])
            header[8] &= ~(_VP8X_EXIF | _VP8X_XMP) & 0xFF  # the flags say: no EXIF, no XMP
            chunks.append(bytes(header))
        elif kind in _WEBP_KEEP:
            chunks.append(view[i:padded])
        else:
            dropped.append({b"EXIF": "EXIF chunk", b"XMP ": "XMP chunk"}.get(
                kind, kind.decode("ascii", "replace").strip() + " chunk"))
            i = padded
            continue
        if (padded - i) & 1:
            chunks.append(b"\x00")
        i = padded
    if not chunks:
        return None
    if i < riff_end:
        dropped.append(f"{riff_end - i} stray bytes")
    _trailing(view, riff_end, dropped)
    body = sum(len(c) for c in chunks)
    return Plan([b"RIFF", (4 + body).to_bytes(4, "little"), b"WEBP", *chunks], dropped)
