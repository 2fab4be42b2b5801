"""Forged files for the hostile requests, generated in code: real images of odd formats, truncated
files, decompression bombs and headers that claim huge sizes. Every function returns ``bytes``."""

from __future__ import annotations

import functools
import io
import struct
import zipfile
import zlib
from collections.abc import Iterator

import numpy as np
from PIL import Image

MB = 1024 * 1024
QUERY_SIZE = 200  # side of the valid query photo the box, k and type cases send
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **options)
    return buf.getvalue()


def _pattern(width: int, height: int, seed: int = 0, noise: float = 4.0) -> np.ndarray:
    """A smooth colourful ``uint8 (height, width, 3)`` picture with a little noise (compresses well)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    rng = np.random.default_rng(seed)
    r = 127 + 120 * np.sin(x / 17.0 + seed)
    g = 127 + 120 * np.cos(y / 23.0)
    b = 127 + 120 * np.sin((x + y) / 31.0)
    img = np.stack([r, g, b], axis=-1) + rng.normal(0, noise, (height, width, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


@functools.cache
def still(width: int, height: int, fmt: str = "PNG", mode: str = "RGB") -> bytes:
    """A real, decodable still image of ``width`` x ``height`` in ``fmt`` and PIL ``mode``."""
    image = Image.fromarray(_pattern(width, height))
    if mode == "I;16":
        image = Image.fromarray(np.asarray(image.convert("L")).astype(np.uint16) * 257)
    elif mode == "P":
        image = image.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    elif mode != "RGB":
        image = image.convert(mode)
    options: dict[str, object] = {"quality": 90} if fmt == "JPEG" else {}
    return _encode(image, fmt, **options)


@functools.cache
def query_jpeg() -> bytes:
    """The valid ``QUERY_SIZE`` square JPEG the box, k and type cases carry."""
    return still(QUERY_SIZE, QUERY_SIZE, "JPEG")


@functools.cache
def animated(fmt: str) -> bytes:
    """A two-frame animated GIF or WebP, ``QUERY_SIZE`` square (empty bytes when PIL cannot write it)."""
    frames = [Image.fromarray(_pattern(QUERY_SIZE, QUERY_SIZE, seed)) for seed in (0, 1)]
    try:
        return _encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)
    except (OSError, ValueError, KeyError):
        return b""


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def png_bytes(width: int, height: int, bit_depth: int, color_type: int, idat: bytes) -> bytes:
    """A PNG file from its IHDR fields and an already-compressed IDAT stream."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return PNG_SIGNATURE + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


@functools.cache
def png_bomb(width: int, height: int) -> bytes:
    """A complete, valid 1-bit grayscale PNG of zeros: ``height`` rows of ``1 + ceil(width / 8)`` bytes
    deflated, about 1/1000 of the raw size (30000 x 30000: ~110 KB on disk, 900 Mpx once decoded)."""
    row = bytes(1 + (width + 7) // 8)  # filter byte 0, then all-black pixels
    compressor = zlib.compressobj(9)
    parts, rows_per_block = [], max(1, (4 * MB) // len(row))
    for start in range(0, height, rows_per_block):
        parts.append(compressor.compress(row * min(rows_per_block, height - start)))
    parts.append(compressor.flush())
    return png_bytes(width, height, 1, 0, b"".join(parts))


@functools.cache
def png_header_bomb(side: int = 60000) -> bytes:
    """74 bytes: an 8-bit RGB PNG header claiming ``side`` x ``side`` with a 17-byte, unfinished IDAT."""
    idat = zlib.compressobj(9).compress(bytes(1 << 16)) + b"\x00" * 17  # the zlib header and a little more
    data = png_bytes(side, side, 8, 2, idat[:17])
    assert len(data) == 74, len(data)
    return data


@functools.cache
def png16_rgb(width: int, height: int) -> bytes:
    """A real 16-bit-per-channel RGB PNG (written by hand: PIL cannot write 16-bit colour)."""
    pixels = _pattern(width, height, noise=0.0).astype(">u2") * 257
    raw = b"".join(b"\x00" + pixels[y].tobytes() for y in range(height))
    return png_bytes(width, height, 16, 2, zlib.compress(raw, 9))


def _jpeg_segments(data: bytes) -> Iterator[tuple[int, int]]:
    """``(offset, marker)`` of each JPEG header segment up to and including the first SOS."""
    i = 2
    while i + 4 <= len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        yield i, marker
        if marker == 0xDA:
            return
        i += 2 + struct.unpack(">H", data[i + 2 : i + 4])[0]


@functools.cache
def jpeg_claiming(width: int, height: int) -> bytes:
    """A real 16 x 16 baseline JPEG whose SOF0 is patched to declare ``width`` x ``height``."""
    data = bytearray(still(16, 16, "JPEG"))
    for offset, marker in _jpeg_segments(bytes(data)):
        if marker in (0xC0, 0xC1, 0xC2):
            data[offset + 5 : offset + 9] = struct.pack(">HH", height, width)
            return bytes(data)
    raise AssertionError("PIL wrote a JPEG without a SOF0 segment")


@functools.cache
def jpeg_header_only() -> bytes:
    """The query JPEG cut just before its scan: every header segment, no entropy-coded data."""
    data = query_jpeg()
    sos = next(offset for offset, marker in _jpeg_segments(data) if marker == 0xDA)
    return data[:sos]


@functools.cache
def gif_claiming(width: int, height: int) -> bytes:
    """A GIF89a whose screen and single image descriptor declare ``width`` x ``height``, with 1 pixel of data."""
    screen = struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"  # 2-colour table
    image = b"," + struct.pack("<HHHHB", 0, 0, width, height, 0)
    return b"GIF89a" + screen + image + b"\x02\x02\x4c\x01\x00" + b";"


@functools.cache
def bmp_claiming(width: int, height: int) -> bytes:
    """A 24-bit BMP header declaring ``width`` x ``height`` (negative: top-down) followed by 64 bytes of pixels."""
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    pixels = b"\x80" * 64
    header = b"BM" + struct.pack("<IHHI", 14 + len(info) + len(pixels), 0, 0, 14 + len(info))
    return header + info + pixels


@functools.cache
def bmp_rle_claiming(width: int, height: int) -> bytes:
    """A valid 8-bit run-length-encoded BMP of ``width`` x ``height`` in about 1 KB: a grey palette and an
    end-of-bitmap code at once, so the decoder fills the whole canvas it allocated with the first colour."""
    palette = b"".join(bytes((v, v, v, 0)) for v in range(256))
    pixels = b"\x00\x01"  # RLE8 escape: end of bitmap
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 1, len(pixels), 2835, 2835, 256, 0)
    offset = 14 + len(info) + len(palette)
    header = b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset)
    return header + info + palette + pixels


@functools.cache
def tiff_claiming(width: int, height: int) -> bytes:
    """A little-endian 8-bit grayscale TIFF declaring ``width`` x ``height`` in one strip of 16 bytes."""
    entries = [(256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, 1), (262, 3, 1),
               (273, 4, 0), (277, 3, 1), (278, 4, height), (279, 4, 16)]
    ifd_size = 2 + 12 * len(entries) + 4
    strip_offset = 8 + ifd_size
    ifd = struct.pack("<H", len(entries))
    for tag, kind, value in entries:
        value = strip_offset if tag == 273 else value
        ifd += struct.pack("<HHIHH", tag, kind, 1, value, 0) if kind == 3 else struct.pack("<HHII", tag, kind, 1, value)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + b"\x80" * 16


@functools.cache
def webp_claiming(width: int, height: int) -> bytes:
    """A lossless (VP8L) WebP header declaring ``width`` x ``height`` (at most 16384) with 8 garbage bytes."""
    vp8l = b"\x2f" + struct.pack("<I", (width - 1) | ((height - 1) << 14)) + b"\x00" * 8
    chunk = b"VP8L" + struct.pack("<I", len(vp8l)) + vp8l + b"\x00" * (len(vp8l) % 2)
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


@functools.cache
def zip_with_photo() -> bytes:
    """A ZIP archive holding a valid JPEG."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("photo.jpg", query_jpeg())
    return buf.getvalue()


SVG_WITH_SCRIPT = (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="200" height="200">'
                   b'<script>alert(document.cookie)</script><rect width="200" height="200" fill="red"/></svg>\n')
HTML_PAGE = b"<!doctype html><html><body><h1>not a photo</h1><script>alert(1)</script></body></html>\n"
PDF_HEADER = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n"
