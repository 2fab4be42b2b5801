"""Hostile HTTP requests a Showroom server must refuse with a 4xx JSON error, and the CLI that sends them.

    python -m benchmarks.hostile --url http://127.0.0.1:8000 --pids 123,456 --reload-token T

``build_cases(max_upload, product_id, token)`` makes the requests; every payload is generated in code
(PIL, numpy, zlib, struct), so no binary file lives in the repository. ``CASES`` is the same list built
for the defaults (a 10 MB upload limit, a placeholder product id, no reload token): it names every case.
``main`` sends each case to a live server with ``urllib.request``, samples the summed VmRSS of the
server processes (and their children) every 20 ms while the decompression-bomb cases run, and prints
one table. Its exit code is 0 only when no answer is a 5xx, no request failed to connect and every
status is in its case's ``expect`` set.

The contract the cases hold the server to:

- no ``image`` field, an empty file, or bytes that are not a decodable still image: 400;
- an image whose header declares more than ``SHOWROOM_MAX_PIXELS`` (default 40,000,000) pixels: 413,
  refused from the header before decoding; an upload over ``MAX_CONTENT_LENGTH``: 413;
- an image with a side under 32 px or an aspect ratio over 10:1: 422;
- a malformed, non-finite or wrong-count box: 400; a box outside the image or empty: 422;
- ``k`` that is not plain ASCII digits in 1..100: 400; unknown product types: 400;
- an unknown product or scene, path traversal included: 404 (traversal may be 400);
- ``n`` that is not a whole number: 400, out of range: 404;
- reload without the right token: 403 (404 when reloading is off); a wrong method: 405; an unknown
  route: 404.

Where two codes are defensible a case accepts both. Every case must be refused: readable still images
of unusual formats (animated GIF/WebP, TIFF, 16-bit, CMYK ...) are sent with a box outside the image,
so the only acceptable answers are a refusal of the format (400) or of the box (422).
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import logging
import math
import socket
import struct
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from engine.runtime import setup_logging

logger = logging.getLogger("benchmarks.hostile")

MB = 1024 * 1024
DEFAULT_MAX_UPLOAD = 10 * MB  # the app's default MAX_CONTENT_LENGTH
DEFAULT_MAX_PIXELS = 40_000_000  # the app's default SHOWROOM_MAX_PIXELS
BOUNDARY = "showroom-hostile-5c1e0f"
PLACEHOLDER_PRODUCT_ID = "placeholder-product-id"
QUERY_SIZE = 200  # side of the valid query photo the box, k and type cases send
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

BAD_REQUEST, FORBIDDEN, NOT_FOUND, NOT_ALLOWED = frozenset({400}), frozenset({403, 404}), frozenset({404}), frozenset({405})
TOO_LARGE, UNPROCESSABLE = frozenset({413}), frozenset({422})
BAD_OR_NOT_FOUND, BAD_OR_UNPROCESSABLE = frozenset({400, 404}), frozenset({400, 422})


# ----------------------------------------------------------------------------------------- requests


@dataclass(frozen=True, repr=False)
class Upload:
    """One file part of a multipart body; ``filename=None`` leaves the ``filename=`` parameter out."""

    field: str
    filename: str | None
    data: bytes
    content_type: str = "application/octet-stream"

    def __repr__(self) -> str:
        return f"Upload({self.field!r}, {self.filename!r}, {len(self.data)} bytes, {self.content_type!r})"


@dataclass(frozen=True, repr=False)
class Case:
    """One hostile request and the 4xx statuses that are acceptable answers to it.

    ``path`` is sent as written (already percent-encoded); ``query`` pairs are URL-encoded after it.
    ``files`` and ``form`` make a multipart body unless ``body`` gives the raw bytes; ``content_type``
    overrides the multipart one. ``bomb`` marks the cases during which server memory is sampled.
    """

    name: str
    method: str
    path: str
    expect: frozenset[int]
    files: tuple[Upload, ...] = ()
    form: tuple[tuple[str, str], ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    query: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None
    content_type: str | None = None
    bomb: bool = False

    def __post_init__(self) -> None:
        if not self.expect or not all(400 <= s < 500 for s in self.expect):
            raise ValueError(f"case {self.name}: expect must be a non-empty set of 4xx statuses, got {sorted(self.expect)}")
        if not self.path.startswith("/") or not self.path.isascii():
            raise ValueError(f"case {self.name}: path must be an ASCII path starting with '/', got {self.path[:60]!r}")

    def __repr__(self) -> str:
        return f"Case({self.name!r}, {self.method} {self.target[:80]}, expect={sorted(self.expect)})"

    @property
    def target(self) -> str:
        """The request target: path plus the URL-encoded query."""
        if not self.query:
            return self.path
        return f"{self.path}?{urllib.parse.urlencode(self.query, quote_via=urllib.parse.quote)}"

    def encode(self) -> tuple[bytes | None, dict[str, str]]:
        """The body (``None``: no body) and the headers to send, ``Content-Type`` included."""
        headers = dict(self.headers)
        if self.body is not None:
            if self.content_type is not None:
                headers["Content-Type"] = self.content_type
            return self.body, headers
        if self.files or self.form:
            headers["Content-Type"] = self.content_type or f"multipart/form-data; boundary={BOUNDARY}"
            return multipart(self.form, self.files), headers
        return None, headers

    def key(self) -> tuple:
        """What makes two requests the same request (for the distinctness check)."""
        body, headers = self.encode()
        return self.method, self.target, body, tuple(sorted((k.lower(), v) for k, v in headers.items()))


def multipart(form: Iterable[tuple[str, str]], files: Iterable[Upload], boundary: str = BOUNDARY) -> bytes:
    """A ``multipart/form-data`` body: text fields first, then file parts."""
    out = io.BytesIO()
    for name, value in form:
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode())
        out.write(value.encode("utf-8") + b"\r\n")
    for f in files:
        filename = "" if f.filename is None else f'; filename="{f.filename}"'
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{f.field}"{filename}\r\n'
                  f"Content-Type: {f.content_type}\r\n\r\n".encode())
        out.write(f.data + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue()


# ----------------------------------------------------------------------------------------- payloads


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


# ----------------------------------------------------------------------------------------- the cases


def _image(data: bytes, filename: str = "photo.jpg", content_type: str = "image/jpeg") -> tuple[Upload, ...]:
    return (Upload("image", filename, data, content_type),)


def build_cases(max_upload: int, product_id: str, token: str | None, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> list[Case]:
    """Every hostile request, for a server with upload limit ``max_upload`` bytes and pixel limit ``max_pixels``.

    ``product_id`` is a real product of the server's catalog (the ``n`` and scenes-``k`` cases need one);
    ``token`` its reload token if known (one case sends a prefix of it). Case names do not depend on the
    arguments. Raises ``ValueError`` when ``max_upload`` is too small for the image cases to fit under it.
    """
    cases: list[Case] = []

    def add(name: str, method: str, path: str, expect: frozenset[int], **kw: object) -> None:
        cases.append(Case(name, method, path, expect, **kw))  # type: ignore[arg-type]

    def search(name: str, expect: frozenset[int], data: bytes | None = None, filename: str = "photo.jpg",
               content_type: str = "image/jpeg", route: str = "/api/search", **form: str) -> None:
        files = _image(data, filename, content_type) if data is not None else ()
        add(name, "POST", route, expect, files=files, form=tuple(form.items()), bomb=name.startswith("bomb_"))

    pid = urllib.parse.quote(product_id, safe="")
    outside = "150,150,260,260"  # partly outside a QUERY_SIZE square image

    # --- bytes that are not a decodable still image: 400
    search("upload_empty_file", BAD_REQUEST, b"")
    search("upload_text_named_jpg", BAD_REQUEST, b"hello, I am a text file, not a photo\n" * 20)
    search("upload_html", BAD_REQUEST, HTML_PAGE, "page.html", "text/html")
    search("upload_svg_with_script", BAD_REQUEST, SVG_WITH_SCRIPT, "photo.svg", "image/svg+xml")
    search("upload_svg_named_png", BAD_REQUEST, SVG_WITH_SCRIPT, "photo.png", "image/png")
    search("upload_zip_holding_a_jpeg", BAD_REQUEST, zip_with_photo(), "photo.zip", "application/zip")
    search("upload_pdf_header", BAD_REQUEST, PDF_HEADER, "photo.pdf", "application/pdf")
    search("upload_random_bytes", BAD_REQUEST, np.random.default_rng(7).bytes(5000))
    search("upload_jpeg_soi_then_random", BAD_REQUEST, b"\xff\xd8\xff" + np.random.default_rng(8).bytes(3000))
    search("upload_jpeg_headers_without_scan", BAD_REQUEST, jpeg_header_only())
    search("upload_jpeg_truncated_at_half", BAD_REQUEST, query_jpeg()[: len(query_jpeg()) // 2])
    search("upload_png_signature_only", BAD_REQUEST, PNG_SIGNATURE, "photo.png", "image/png")
    png = still(QUERY_SIZE, QUERY_SIZE, "PNG")
    search("upload_png_truncated", BAD_REQUEST, png[: len(png) // 2], "photo.png", "image/png")
    search("upload_gif_truncated", BAD_REQUEST, still(64, 64, "GIF", "P")[:40], "photo.gif", "image/gif")
    search("upload_tiff_truncated", BAD_REQUEST, still(64, 64, "TIFF")[:30], "photo.tif", "image/tiff")
    search("upload_webp_truncated", BAD_REQUEST, still(64, 64, "WEBP")[:30], "photo.webp", "image/webp")
    search("upload_bmp_truncated", BAD_REQUEST, still(QUERY_SIZE, QUERY_SIZE, "BMP")[:100], "photo.bmp", "image/bmp")
    search("detect_upload_text", BAD_REQUEST, b"not an image at all", route="/api/detect")

    # --- readable still images of unusual formats, sent with a box partly outside: refused for the box (422)
    search("format_png16_rgb_box_outside", UNPROCESSABLE, png16_rgb(QUERY_SIZE, QUERY_SIZE), "photo.png", "image/png", box=outside, detect="0")
    search("format_png16_gray_box_outside", UNPROCESSABLE, still(QUERY_SIZE, QUERY_SIZE, "PNG", "I;16"), "photo.png", "image/png", box=outside, detect="0")
    search("format_gray_png_box_outside", UNPROCESSABLE, still(QUERY_SIZE, QUERY_SIZE, "PNG", "L"), "photo.png", "image/png", box=outside, detect="0")
    search("format_gray_jpeg_box_outside", UNPROCESSABLE, still(QUERY_SIZE, QUERY_SIZE, "JPEG", "L"), box=outside, detect="0")
    search("format_cmyk_jpeg_box_outside", UNPROCESSABLE, still(QUERY_SIZE, QUERY_SIZE, "JPEG", "CMYK"), box=outside, detect="0")
    search("format_rgba_png_box_outside", UNPROCESSABLE, still(QUERY_SIZE, QUERY_SIZE, "PNG", "RGBA"), "photo.png", "image/png", box=outside, detect="0")
    search("format_palette_png_box_outside", UNPROCESSABLE, still(QUERY_SIZE, QUERY_SIZE, "PNG", "P"), "photo.png", "image/png", box=outside, detect="0")
    # ... or formats a server may refuse outright (400): still and animated GIF, animated WebP, TIFF
    search("format_gif_box_outside", BAD_OR_UNPROCESSABLE, still(QUERY_SIZE, QUERY_SIZE, "GIF", "P"), "photo.gif", "image/gif", box=outside, detect="0")
    search("format_animated_gif_box_outside", BAD_OR_UNPROCESSABLE, animated("GIF"), "photo.gif", "image/gif", box=outside, detect="0")
    if animated("WEBP"):
        search("format_animated_webp_box_outside", BAD_OR_UNPROCESSABLE, animated("WEBP"), "photo.webp", "image/webp", box=outside, detect="0")
    search("format_tiff_box_outside", BAD_OR_UNPROCESSABLE, still(QUERY_SIZE, QUERY_SIZE, "TIFF"), "photo.tif", "image/tiff", box=outside, detect="0")

    # --- decompression bombs: the header declares more than max_pixels; refused before decoding (413)
    side = math.isqrt(max_pixels) + 1  # side * side > max_pixels
    wide_w = 2 * side
    wide_h = max_pixels // wide_w + 1  # wide_w * wide_h > max_pixels, aspect about 4:1
    search("bomb_png_30000x30000_zlib", TOO_LARGE, png_bomb(30000, 30000), "photo.png", "image/png")
    search("bomb_png_30000x30000_zlib_detect", TOO_LARGE, png_bomb(30000, 30000), "photo.png", "image/png", route="/api/detect")
    search("bomb_png_just_over_max_pixels", TOO_LARGE, png_bomb(side, side), "photo.png", "image/png")
    search("bomb_png_74_bytes_60000x60000", TOO_LARGE, png_header_bomb(60000), "photo.png", "image/png")
    search("bomb_jpeg_sof_65500x65500", TOO_LARGE, jpeg_claiming(65500, 65500))
    search("bomb_jpeg_sof_65500x65500_detect", TOO_LARGE, jpeg_claiming(65500, 65500), route="/api/detect")
    search("bomb_jpeg_sof_just_over_max_pixels", TOO_LARGE, jpeg_claiming(wide_w, wide_h))
    search("bomb_gif_65535x65535", TOO_LARGE, gif_claiming(65535, 65535), "photo.gif", "image/gif")
    search("bomb_bmp_50000x50000", TOO_LARGE, bmp_claiming(50000, 50000), "photo.bmp", "image/bmp")
    search("bomb_bmp_top_down_50000x50000", TOO_LARGE, bmp_claiming(50000, -50000), "photo.bmp", "image/bmp")
    search("bomb_bmp_just_over_max_pixels", TOO_LARGE, bmp_claiming(side, side), "photo.bmp", "image/bmp")
    search("bomb_tiff_100000x100000", TOO_LARGE, tiff_claiming(100000, 100000), "photo.tif", "image/tiff")
    search("bomb_webp_16384x16384", TOO_LARGE, webp_claiming(16384, 16384), "photo.webp", "image/webp")

    # --- extreme shapes, real decodable PNGs: a side under 32 px or an aspect ratio over 10:1 (422)
    for w, h in ((1, 1), (20000, 1), (1, 20000), (31, 31), (5000, 2), (400, 39), (32, 330), (31, 200)):
        search(f"shape_{w}x{h}", UNPROCESSABLE, still(w, h, "PNG"), "photo.png", "image/png")
    search("shape_1x1_jpeg_detect", UNPROCESSABLE, still(1, 1, "JPEG"), route="/api/detect")
    search("shape_31x31_detect", UNPROCESSABLE, still(31, 31, "PNG"), "photo.png", "image/png", route="/api/detect")

    # --- the multipart form itself (400)
    jpeg = query_jpeg()
    search("multipart_no_image_field", BAD_REQUEST, None, k="5")
    search("multipart_only_a_text_field_named_file", BAD_REQUEST, None, **{"file": "photo.jpg"})
    add("multipart_file_in_wrong_field", "POST", "/api/search", BAD_REQUEST, files=(Upload("file", "photo.jpg", jpeg, "image/jpeg"),))
    add("multipart_two_image_files", "POST", "/api/search", BAD_REQUEST,
        files=(Upload("image", "a.jpg", jpeg, "image/jpeg"), Upload("image", "b.jpg", still(QUERY_SIZE, QUERY_SIZE, "PNG"), "image/png")))
    add("multipart_image_part_without_filename", "POST", "/api/search", BAD_REQUEST, files=(Upload("image", None, jpeg, "image/jpeg"),))
    search("multipart_image_as_text_field", BAD_REQUEST, None, image="photo.jpg")
    add("multipart_wrong_boundary", "POST", "/api/search", BAD_REQUEST, files=_image(jpeg),
        content_type="multipart/form-data; boundary=not-the-boundary-used")
    add("multipart_no_boundary_parameter", "POST", "/api/search", BAD_REQUEST, files=_image(jpeg), content_type="multipart/form-data")
    add("multipart_body_cut_short", "POST", "/api/search", BAD_REQUEST, body=multipart((), _image(jpeg))[: len(jpeg) // 2],
        content_type=f"multipart/form-data; boundary={BOUNDARY}")
    add("multipart_detect_no_image_field", "POST", "/api/detect", BAD_REQUEST, form=(("k", "5"),))
    add("body_none", "POST", "/api/search", BAD_REQUEST)
    add("body_json_instead_of_multipart", "POST", "/api/search", BAD_REQUEST, content_type="application/json",
        body=json.dumps({"image": jpeg[:300].hex(), "k": 5}).encode())
    add("body_raw_jpeg_as_image_jpeg", "POST", "/api/search", BAD_REQUEST, body=jpeg, content_type="image/jpeg")
    add("body_jpeg_as_text_plain", "POST", "/api/detect", BAD_REQUEST, body=jpeg, content_type="text/plain")
    add("body_urlencoded_form", "POST", "/api/search", BAD_REQUEST, content_type="application/x-www-form-urlencoded",
        body=urllib.parse.urlencode({"image": jpeg[:200].hex(), "k": "5"}).encode())

    # --- uploads over MAX_CONTENT_LENGTH (413)
    oversize = int(max_upload * 1.05) + 1
    filler = b"\xff\xd8\xff\xe0" + bytes(oversize - 4)  # a JPEG start, then zeros
    search("oversize_upload_search", TOO_LARGE, filler)
    search("oversize_upload_detect", TOO_LARGE, filler, route="/api/detect")
    add("oversize_text_field", "POST", "/api/search", TOO_LARGE, files=_image(jpeg), form=(("types", "Chair|" * (oversize // 6 + 1)),))

    # --- boxes on a valid QUERY_SIZE square photo: malformed (400), outside or empty (422)
    for name, box, expect in (
        ("box_inf", "inf,0,10,10", BAD_REQUEST),
        ("box_minus_inf", "0,0,-inf,10", BAD_REQUEST),
        ("box_1e400", "0,0,1e400,10", BAD_REQUEST),
        ("box_nan", "nan,0,10,10", BAD_REQUEST),
        ("box_three_values", "1,2,3", BAD_REQUEST),
        ("box_five_values", "1,2,3,4,5", BAD_REQUEST),
        ("box_letters", "a,b,c,d", BAD_REQUEST),
        ("box_empty_values", ",,,", BAD_REQUEST),
        ("box_hex", "0x0,0,50,50", BAD_REQUEST),
        ("box_semicolons", "10;10;50;50", BAD_REQUEST),
        ("box_spaces_only", "10 10 50 50", BAD_REQUEST),
        ("box_json_array", "[10,10,50,50]", BAD_REQUEST),
        ("box_arabic_indic_digits", "\u0660,\u0660,\u0661\u0660\u0660,\u0661\u0660\u0660", BAD_REQUEST),
        ("box_fullwidth_digits", "\uff10,\uff10,\uff15\uff10,\uff15\uff10", BAD_REQUEST),
        ("box_negative", "-10,0,50,50", BAD_OR_UNPROCESSABLE),
        ("box_reversed", "50,50,10,10", BAD_OR_UNPROCESSABLE),
        ("box_outside", "0,0,500,50", UNPROCESSABLE),
        ("box_fully_outside", "300,300,400,400", UNPROCESSABLE),
        ("box_zero_area", "10,10,10,50", UNPROCESSABLE),
        ("box_huge_ints", "99999999999999999999,0,1,1", BAD_OR_UNPROCESSABLE),
    ):
        search(name, expect, jpeg, box=box, detect="0")

    # --- k: plain ASCII digits in 1..100, else 400
    for name, k in (("k_spaces", " 5 "), ("k_arabic_indic_digit", "\u0663"), ("k_fullwidth_digit", "\uff15"), ("k_zero", "0"),
                    ("k_negative", "-1"), ("k_101", "101"), ("k_exponent", "1e1"), ("k_fraction", "1.5"), ("k_empty", ""),
                    ("k_trailing_letters", "5abc"), ("k_plus_sign", "+5"), ("k_underscore", "5_0"), ("k_5000_digits", "9" * 5000)):
        search(name, BAD_REQUEST, jpeg, box="10,10,150,150", detect="0", k=k)
    add("k_zero_in_query", "POST", "/api/search", BAD_REQUEST, files=_image(jpeg), form=(("box", "10,10,150,150"), ("detect", "0")),
        query=(("k", "0"),))
    for name, k in (("scenes_k_zero", "0"), ("scenes_k_letters", "abc"), ("scenes_k_101", "101"), ("scenes_k_arabic_indic_digit", "\u0663")):
        add(name, "GET", f"/api/products/{pid}/scenes", BAD_REQUEST, query=(("k", k),))

    # --- product types: unknown ones are 400
    for name, types in (("types_unknown", "Spaceship"), ("types_very_long", "A" * 10000), ("types_only_separators", "|||"),
                        ("types_nul_byte", "Chair\x00")):
        search(name, BAD_REQUEST, jpeg, box="10,10,150,150", detect="0", types=types)
    search("types_1000_repeats_in_one_field", BAD_REQUEST, jpeg, box="10,10,150,150", detect="0", types="|".join(["Spaceship"] * 1000))
    # 1000 form parts: werkzeug's max_form_parts (1000) may refuse the body as too large first
    add("types_1000_repeated_fields", "POST", "/api/search", frozenset({400, 413}), files=_image(jpeg),
        form=(("box", "10,10,150,150"), ("detect", "0"), *(("types", "Spaceship"),) * 1000))

    # --- ids on every route that takes one: unknown (404), traversal (400 or 404)
    routes = (("api_product", "/api/products/{}"), ("api_product_scenes", "/api/products/{}/scenes"),
              ("product_page", "/products/{}"), ("product_image", "/images/products/{}"), ("scene_image", "/images/scenes/{}"))
    ids = (("unknown", "no-such-id", NOT_FOUND),
           ("unicode", "%E2%98%83%F0%9F%AA%91", NOT_FOUND),
           ("traversal_encoded_slashes", "..%2f..%2fetc%2fpasswd", BAD_OR_NOT_FOUND),
           ("traversal_encoded_dots", "%2e%2e/x", BAD_OR_NOT_FOUND),
           ("traversal_literal", "../../etc/passwd", BAD_OR_NOT_FOUND),
           ("traversal_backslashes", "..%5c..%5cwindows%5cwin.ini", BAD_OR_NOT_FOUND),
           ("nul_byte", "abc%00def", BAD_OR_NOT_FOUND),
           ("5000_chars", "a" * 5000, frozenset({400, 404, 414})))
    for route_name, template in routes:
        for id_name, raw_id, expect in ids:
            add(f"{route_name}_{id_name}", "GET", template.format(raw_id), expect)

    # --- n on a real product's image: not a whole number 400, out of range 404
    for name, n, expect in (("n_letters", "abc", BAD_REQUEST), ("n_negative", "-1", BAD_OR_NOT_FOUND), ("n_99999", "99999", NOT_FOUND),
                            ("n_exponent", "1e3", BAD_REQUEST), ("n_fraction", "1.5", BAD_REQUEST), ("n_hex", "0x1", BAD_REQUEST),
                            ("n_arabic_indic_digit", "\u0663", BAD_OR_NOT_FOUND), ("n_5000_digits", "9" * 5000, BAD_OR_NOT_FOUND)):
        add(name, "GET", f"/images/products/{pid}", expect, query=(("n", n),))

    # --- reload without the right token: 403 (404 when reloading is off)
    prefix = token[:-1] if token and len(token) > 1 else "t"
    for name, headers in (("reload_no_token", ()), ("reload_wrong_token", (("X-Reload-Token", "wrong-token"),)),
                          ("reload_empty_token", (("X-Reload-Token", ""),)),
                          ("reload_latin1_token", (("X-Reload-Token", "\xe9t\xe9-caf\xe9"),)),
                          ("reload_token_prefix", (("X-Reload-Token", prefix),)),
                          ("reload_10kb_token", (("X-Reload-Token", "x" * 10240),)),
                          ("reload_token_as_bearer", (("Authorization", f"Bearer {token or 'token'}"),))):
        add(name, "POST", "/api/reload", frozenset({403, 404, 431}) if "10kb" in name else FORBIDDEN, headers=headers)
    add("reload_token_in_query", "POST", "/api/reload", FORBIDDEN, query=(("token", token or "token"),))

    # --- wrong methods (405)
    for name, method, path in (("method_get_search", "GET", "/api/search"), ("method_get_detect", "GET", "/api/detect"),
                               ("method_put_detect", "PUT", "/api/detect"), ("method_delete_product", "DELETE", "/api/products/x"),
                               ("method_patch_reload", "PATCH", "/api/reload"), ("method_get_reload", "GET", "/api/reload"),
                               ("method_post_types", "POST", "/api/types"), ("method_post_healthz", "POST", "/healthz"),
                               ("method_put_product_image", "PUT", f"/images/products/{pid}"), ("method_delete_root", "DELETE", "/")):
        add(name, method, path, NOT_ALLOWED)

    # --- unknown routes (404)
    for name, path in (("route_api_unknown", "/api/nope"), ("route_api_search_extra", "/api/search/extra"), ("route_admin", "/admin"),
                       ("route_dotenv", "/.env"), ("route_wp_login", "/wp-login.php"), ("route_products_no_id", "/api/products"),
                       ("route_images_products_empty_id", "/images/products/"), ("route_nul_byte", "/%00"),
                       ("route_static_traversal_encoded", "/static/..%2f..%2fserving%2fapp.py"),
                       ("route_static_traversal_dots", "/static/%2e%2e/%2e%2e/README.md")):
        add(name, "GET", path, NOT_FOUND)

    names = [c.name for c in cases]
    if len(set(names)) != len(names):
        raise AssertionError(f"duplicate case names: {sorted({n for n in names if names.count(n) > 1})}")
    too_big = [c.name for c in cases if not c.name.startswith("oversize_") and len(c.encode()[0] or b"") >= max_upload]
    if too_big:
        raise ValueError(f"max_upload={max_upload} is too small: {too_big} would be refused for their size alone")
    return cases


@functools.cache
def _default_cases() -> tuple[Case, ...]:
    return tuple(build_cases(DEFAULT_MAX_UPLOAD, PLACEHOLDER_PRODUCT_ID, None))


def __getattr__(name: str) -> list[Case]:
    """``CASES``: the cases for the defaults, built on first use (payloads take about a second)."""
    if name == "CASES":
        return list(_default_cases())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ----------------------------------------------------------------------------------------- sending


@dataclass(frozen=True)
class Outcome:
    """What the server answered to one case: ``status`` is ``None`` when the request failed to connect."""

    case: Case
    status: int | None
    json_error: bool  # the body is a JSON object with a non-empty "error" string
    detail: str  # the connection error, or the start of the body
    seconds: float

    @property
    def expected(self) -> bool:
        return self.status in self.case.expect


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Report 3xx as they are instead of following them."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def is_json_error(body: bytes) -> bool:
    """True when ``body`` is a JSON object with a non-empty ``"error"`` string."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return False
    return isinstance(doc, dict) and isinstance(doc.get("error"), str) and bool(doc["error"].strip())


def send(case: Case, base_url: str, timeout: float = 60.0, opener: urllib.request.OpenerDirector | None = None) -> Outcome:
    """Send ``case`` to the server at ``base_url`` (no proxies, no redirects followed)."""
    opener = opener or urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect)
    body, headers = case.encode()
    request = urllib.request.Request(base_url.rstrip("/") + case.target, data=body, headers=headers, method=case.method)
    t = time.perf_counter()
    try:
        with opener.open(request, timeout=timeout) as response:
            status, payload = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, payload = exc.code, exc.read()
    except (urllib.error.URLError, OSError, socket.timeout, ConnectionError) as exc:
        reason = getattr(exc, "reason", exc)
        return Outcome(case, None, False, f"{type(reason).__name__}: {reason}", time.perf_counter() - t)
    except Exception as exc:  # http.client.RemoteDisconnected, BadStatusLine ...
        return Outcome(case, None, False, f"{type(exc).__name__}: {exc}", time.perf_counter() - t)
    return Outcome(case, status, 400 <= status < 500 and is_json_error(payload), payload[:160].decode("utf-8", "replace"),
                   time.perf_counter() - t)


def discover_product_id(base_url: str, timeout: float = 60.0) -> str:
    """A real product id: the first result of a search with a valid photo. Raises ``RuntimeError`` if none."""
    case = Case("discover", "POST", "/api/search", frozenset({400}), files=_image(query_jpeg()), form=(("k", "1"),))
    body, headers = case.encode()
    request = urllib.request.Request(base_url.rstrip("/") + case.target, data=body, headers=headers, method="POST")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect)
    try:
        with opener.open(request, timeout=timeout) as response:
            results = json.loads(response.read())["results"]
        return str(results[0]["product_id"])
    except (urllib.error.URLError, OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise RuntimeError(f"cannot find a product id with a search at {base_url} ({exc}); pass --product-id") from None


# ----------------------------------------------------------------------------------------- memory


def _children(pid: int) -> list[int]:
    out = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            out += [int(c) for c in children.read_text().split()]
        except OSError:
            pass
    return out


def process_tree(pids: Iterable[int]) -> list[int]:
    """``pids`` and all their descendants that are alive now."""
    seen: list[int] = []
    todo = list(pids)
    while todo:
        pid = todo.pop()
        if pid in seen or not Path(f"/proc/{pid}").exists():
            continue
        seen.append(pid)
        todo += _children(pid)
    return seen


def vm_rss(pid: int) -> int:
    """Resident set size of ``pid`` in bytes (``VmRSS`` of ``/proc/<pid>/status``; 0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def tree_rss(pids: Sequence[int]) -> int:
    """Summed VmRSS in bytes of ``pids`` and all their child processes."""
    return sum(vm_rss(p) for p in process_tree(pids))


@dataclass
class RssSampler:
    """Samples ``tree_rss(pids)`` every ``interval`` seconds in a thread between ``start`` and ``stop``."""

    pids: Sequence[int]
    interval: float = 0.02
    peak: int = 0
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _run(self) -> None:
        while True:
            self.peak = max(self.peak, tree_rss(self.pids))
            self.samples += 1
            if self._stop.wait(self.interval):
                return

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> int:
        """Stop sampling (after one last sample) and return the peak in bytes."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak = max(self.peak, tree_rss(self.pids))
        return self.peak


# ----------------------------------------------------------------------------------------- the CLI


@dataclass(frozen=True)
class Memory:
    """Summed server RSS in bytes: before the bomb cases, and the peak while they ran."""

    pids: tuple[int, ...]
    idle: int
    peak: int
    samples: int


def run_cases(cases: Sequence[Case], base_url: str, *, pids: Sequence[int] = (), pause: float = 0.0,
              timeout: float = 60.0) -> tuple[list[Outcome], Memory | None]:
    """Send every case (bombs last, with memory sampled while they run); outcomes in the order of ``cases``."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect)
    outcomes: dict[str, Outcome] = {}

    def run(batch: Sequence[Case]) -> None:
        for case in batch:
            outcome = send(case, base_url, timeout, opener)
            outcomes[case.name] = outcome
            logger.debug("%s -> %s in %.2fs", case.name, outcome.status, outcome.seconds)
            if not outcome.expected:
                logger.warning("%s: got %s, expected %s (%s)", case.name, outcome.status, "|".join(map(str, sorted(case.expect))),
                               outcome.detail[:100])
            if pause:
                time.sleep(pause)

    plain, bombs = [c for c in cases if not c.bomb], [c for c in cases if c.bomb]
    logger.info("sending %d cases to %s", len(plain), base_url)
    run(plain)
    memory = None
    if pids:
        idle = tree_rss(pids)
        sampler = RssSampler(pids)
        logger.info("sending %d bomb cases, sampling the RSS of %d process(es) every 20 ms", len(bombs), len(process_tree(pids)))
        sampler.start()
        try:
            run(bombs)
        finally:
            peak = sampler.stop()
        memory = Memory(tuple(pids), idle, peak, sampler.samples)
    else:
        logger.info("sending %d bomb cases (no --pids: memory not sampled)", len(bombs))
        run(bombs)
    return [outcomes[c.name] for c in cases], memory


def report(outcomes: Sequence[Outcome], memory: Memory | None, base_url: str) -> tuple[str, bool]:
    """The table, and whether the run passed (no 5xx, no connection error, every status expected)."""
    json4xx = [o for o in outcomes if o.status is not None and 400 <= o.status < 500 and o.json_error]
    plain4xx = [o for o in outcomes if o.status is not None and 400 <= o.status < 500 and not o.json_error]
    server = [o for o in outcomes if o.status is not None and o.status >= 500]
    failed = [o for o in outcomes if o.status is None]
    unexpected = [o for o in outcomes if not o.expected]
    ok = not server and not failed and not unexpected

    def listing(rows: Sequence[Outcome]) -> list[str]:
        return [f"      {o.case.name:<48} {o.status if o.status is not None else 'no answer'} "
                f"(expected {'|'.join(map(str, sorted(o.case.expect)))}){'  ' + o.detail[:70] if o.status is None else ''}"
                for o in rows]

    JSON_ROW = '4xx with a JSON {"error": "..."} body'  # noqa: N806
    lines = [f"hostile requests: {len(outcomes)} cases against {base_url}",
             f"  {JSON_ROW:<44}{len(json4xx):>6}",
             f"  {'4xx without one':<44}{len(plain4xx):>6}", *listing(plain4xx),
             f"  {'5xx':<44}{len(server):>6}", *listing(server),
             f"  {'connection errors':<44}{len(failed):>6}", *listing(failed),
             f"  {'unexpected status':<44}{len(unexpected):>6}", *listing(unexpected)]
    if memory is None:
        lines.append(f"  {'server memory during bomb cases':<44}{'n/a (no --pids)':>6}")
    else:
        lines += [f"  server RSS, pids {','.join(map(str, memory.pids))} and children ({memory.samples} samples every 20 ms):",
                  f"    {'idle before the bomb cases':<42}{memory.idle / MB:>10.1f} MB",
                  f"    {'peak during the bomb cases':<42}{memory.peak / MB:>10.1f} MB",
                  f"    {'peak - idle':<42}{(memory.peak - memory.idle) / MB:>10.1f} MB"]
    lines.append(f"  {'verdict':<44}{'PASS' if ok else 'FAIL':>6}")
    return "\n".join(lines), ok


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.hostile", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True, help="base URL of the live server, e.g. http://127.0.0.1:8000")
    p.add_argument("--pids", default="", help="comma-separated server process ids; their RSS (children included) is sampled "
                                               "every 20 ms during the decompression-bomb cases")
    p.add_argument("--reload-token", default=None, help="the server's reload token, if known: one case sends a prefix of it")
    p.add_argument("--product-id", default=None, help="a real product id (default: the first result of a search with a valid photo)")
    p.add_argument("--max-upload", type=int, default=DEFAULT_MAX_UPLOAD, help="the server's MAX_CONTENT_LENGTH in bytes; "
                                                                              "the oversize cases send 5%% more")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="the server's SHOWROOM_MAX_PIXELS; the "
                                                                              "'just over' bombs declare a few more")
    p.add_argument("--pause", type=float, default=0.0, help="seconds to wait between requests, to stay under a rate limit "
                                                          "(the app's default, 2 per second and 60 per minute on search "
                                                          "and detect, needs 1)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for each answer")
    p.add_argument("--verbose", action="store_true", help="log every case")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Send every case to ``--url`` and print the table; 0 only if every answer was an expected 4xx."""
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        pids = [int(p) for p in args.pids.split(",") if p.strip()]
    except ValueError:
        logger.error("--pids must be comma-separated process ids, got %r", args.pids)
        return 2
    if missing := [p for p in pids if not Path(f"/proc/{p}/status").exists()]:
        logger.error("no such process(es): %s", missing)
        return 2
    try:
        product_id = args.product_id or discover_product_id(args.url, args.timeout)
        cases = build_cases(args.max_upload, product_id, args.reload_token, max_pixels=args.max_pixels)
    except (RuntimeError, ValueError) as exc:
        logger.error("%s", exc)
        return 2
    logger.info("%d cases (%d bombs), product id %r, pid(s) %s", len(cases), sum(c.bomb for c in cases), product_id, pids or "none")
    outcomes, memory = run_cases(cases, args.url, pids=pids, pause=args.pause, timeout=args.timeout)
    table, ok = report(outcomes, memory, args.url)
    print(table)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
