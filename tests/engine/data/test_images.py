"""Image decode, padding, cropping and square resizing."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest

from engine.config import ImageLimits
from engine.data.images import (ImageError, ImageShapeError, ImageTooLarge, crop, decode_image, load_image, load_square, pad_box, query_crop,
                           read_header, to_square)


def png_bytes(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", img)
    assert ok
    return buf.tobytes()


def test_decode_rgb_gray_and_alpha():
    bgr = np.zeros((4, 5, 3), np.uint8)
    bgr[..., 0] = 255  # blue in BGR
    rgb = decode_image(png_bytes(bgr))
    assert rgb.shape == (4, 5, 3) and rgb[0, 0].tolist() == [0, 0, 255]
    assert decode_image(png_bytes(np.full((3, 3), 7, np.uint8)))[0, 0].tolist() == [7, 7, 7]
    bgra = np.zeros((2, 2, 4), np.uint8)  # fully transparent black -> white
    assert decode_image(png_bytes(bgra))[0, 0].tolist() == [255, 255, 255]


@pytest.mark.parametrize("data,msg", [(b"", "empty file"), (b"GIF89a nonsense", "not a decodable image")])
def test_decode_errors(data, msg):
    with pytest.raises(ImageError, match=msg):
        decode_image(data)


def test_pad_box_squares_and_clips():
    assert pad_box((40, 40, 60, 80), 100, 100, 0.0) == (30, 40, 70, 80)
    assert pad_box((40, 40, 60, 80), 100, 100, 0.25) == (20, 30, 80, 90)
    assert pad_box((0, 0, 10, 10), 100, 100, 0.5) == (0, 0, 15, 15)
    with pytest.raises(ImageError, match="outside"):
        pad_box((0, 0, 200, 10), 100, 100, 0.1)


def test_crop_and_to_square():
    img = np.arange(6 * 8 * 3, dtype=np.uint8).reshape(6, 8, 3)
    assert crop(img, (1, 2, 4, 5)).shape == (3, 3, 3)
    sq = to_square(np.zeros((10, 20, 3), np.uint8), 16)
    assert sq.shape == (16, 16, 3)
    assert sq[0, 0].tolist() == [255, 255, 255] and sq[8, 8].tolist() == [0, 0, 0]  # letterboxed on white


def test_query_crop_whole_image_or_box():
    img = np.zeros((50, 100, 3), np.uint8)
    img[10:20, 10:20] = 200
    assert query_crop(img, None, 32, 0.1).shape == (32, 32, 3)
    q = query_crop(img, (10, 10, 20, 20), 32, 0.0)
    assert q.mean() == pytest.approx(200, abs=1)


def _png_header(width: int, height: int, idat: bytes = b"") -> bytes:
    """A PNG that declares ``width`` x ``height`` in its IHDR, with whatever pixel data follows."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.mark.parametrize("width,height,error,words", [
    (30000, 30000, ImageTooLarge, "megapixels"),   # a classic decompression bomb
    (60000, 60000, ImageTooLarge, "megapixels"),   # over OpenCV's own pixel limit too
    (8000, 6000, ImageTooLarge, "the limit is 24 MP"),
    (6000, 4001, ImageTooLarge, "the limit is 24 MP"),  # a 48 MP sensor's full photo; its 12 MP default fits
    (1, 1, ImageShapeError, "too small"),
    (31, 400, ImageShapeError, "at least 32"),
    (20000, 1, ImageShapeError, "too small"),
    (4000, 300, ImageShapeError, "elongated"),
])
def test_limits_refuse_from_the_header_before_decoding(width, height, error, words, monkeypatch):
    import zlib

    import engine.data.images

    def no_decoding(*args, **kwargs):
        raise AssertionError("pixels were decoded")  # a 30000 x 30000 decode takes ~20 s and 2.7 GB

    monkeypatch.setattr(engine.data.images.cv2, "imdecode", no_decoding)
    monkeypatch.setattr(engine.data.images, "_decode_with_pil", no_decoding)
    data = _png_header(width, height, zlib.compress(b"\0" * 100_000))  # pixel data far short of what is declared
    with pytest.raises(error, match=words):
        decode_image(data, limits=ImageLimits())


def test_limits_pass_a_normal_photo_and_catalog_loads_have_none():
    img = np.random.default_rng(0).integers(0, 255, (40, 400, 3), dtype=np.uint8)
    data = cv2.imencode(".png", img)[1].tobytes()
    assert decode_image(data).shape == (40, 400, 3)  # no limits: a catalog image is never refused for its shape
    with pytest.raises(ImageShapeError):
        decode_image(data, limits=ImageLimits(max_aspect=5))
    assert decode_image(data, limits=ImageLimits()).shape == (40, 400, 3)


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_exif_orientation_is_applied_as_browsers_do(orientation, fmt):
    from PIL import Image, ImageOps

    rng = np.random.default_rng(orientation)
    base = np.kron(rng.integers(0, 255, (30, 40, 3)).astype(np.uint8), np.ones((8, 8, 1), np.uint8))  # 240 x 320
    im = Image.fromarray(base)
    exif = im.getexif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    im.save(buf, fmt, exif=exif, **({"quality": 95} if fmt == "JPEG" else {}))
    data = buf.getvalue()
    header = read_header(data)
    assert header.orientation == orientation and (header.width, header.height) == (320, 240)
    ours = decode_image(data)
    reference = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    assert ours.shape == reference.shape == ((320, 240, 3) if orientation >= 5 else (240, 320, 3))
    assert header.upright_size == (ours.shape[1], ours.shape[0])
    assert np.abs(ours.astype(int) - reference.astype(int)).mean() < 1.0


def _blocky_jpeg(path, width: int, height: int, orientation: int = 1) -> None:
    """A JPEG of 8-px colour blocks (so downscaling methods agree closely) with an EXIF orientation."""
    from PIL import Image

    rng = np.random.default_rng(width + height + orientation)
    base = np.kron(rng.integers(0, 255, (height // 16, width // 16, 3)).astype(np.uint8), np.ones((16, 16, 1), np.uint8))
    im = Image.fromarray(base)
    exif = im.getexif()
    exif[0x0112] = orientation
    im.save(path, "JPEG", quality=95, exif=exif)


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
@pytest.mark.parametrize("width, height", [(960, 640), (480, 960), (2048, 1536)])
def test_load_square_matches_a_full_decode_of_a_large_jpeg(tmp_path, width, height, orientation):
    path = tmp_path / "p.jpg"
    _blocky_jpeg(path, width, height, orientation)
    full = to_square(load_image(path), 112)
    fast = load_square(path, 112)
    assert fast.shape == full.shape == (112, 112, 3) and fast.dtype == np.uint8
    diff = np.abs(fast.astype(int) - full.astype(int))
    assert diff.mean() < 3.0, diff.mean()  # the same picture, the same way up: a rotation would differ by ~80
    padded = np.all(full == 255, axis=(1, 2)) if height > width or orientation >= 5 else np.all(full == 255, axis=(0, 2))
    assert np.array_equal(np.all(fast == 255, axis=(1, 2)) if height > width or orientation >= 5 else np.all(fast == 255, axis=(0, 2)), padded)


def test_load_square_small_jpegs_and_pngs_take_the_full_path(tmp_path):
    from PIL import Image

    jpg, png = tmp_path / "s.jpg", tmp_path / "s.png"
    _blocky_jpeg(jpg, 200, 160)  # under twice the size: no reduced decode
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (400, 300, 3)).astype(np.uint8)).save(png)
    for path in (jpg, png):
        assert np.array_equal(load_square(path, 112), to_square(load_image(path), 112))
    big = tmp_path / "big.jpg"
    _blocky_jpeg(big, 960, 640)
    assert np.array_equal(load_square(big, 112, reduced=False), to_square(load_image(big), 112))  # catalog_decode "full"
    assert not np.array_equal(load_square(big, 112), to_square(load_image(big), 112))
    with pytest.raises(ImageError, match="cannot read"):
        load_square(tmp_path / "missing.jpg", 112)
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(ImageError):
        load_square(tmp_path / "bad.jpg", 112)


def test_the_decode_cost_is_known_from_the_header_and_bounds_the_decode():
    import tracemalloc

    import cv2

    from engine.data.images import read_header

    h, w = 1500, 2000
    ramp = np.linspace(0, 255, w, dtype=np.float32)[None, :].repeat(h, 0)
    rgba = np.dstack([ramp, ramp[::-1], ramp, 255 - ramp]).astype(np.uint8)
    data = cv2.imencode(".png", rgba)[1].tobytes()
    header = read_header(data)
    assert header.mode == "RGBA" and header.decode_cost == w * h * 7 + 128 * w * 16
    deep = read_header(cv2.imencode(".png", (rgba[..., :3].astype(np.uint16) * 257))[1].tobytes())
    assert deep.mode == "RGB/RGB;16B" and deep.decode_cost == w * h * (8 + 3) + 128 * w * 16
    tracemalloc.start()
    image = decode_image(data)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert image.shape == (h, w, 3) and peak <= header.decode_cost  # numpy's allocations (OpenCV's own are not traced)


def test_reading_a_png_header_decodes_no_pixels(monkeypatch):
    from PIL import ImageFile

    from engine.data.images import read_header

    data = cv2.imencode(".png", np.zeros((400, 500, 3), np.uint16))[1].tobytes()

    def no_loading(self):
        raise AssertionError("pixels were decoded")  # PIL's getexif() on a PNG loads the whole image

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_loading)
    assert read_header(data).upright_size == (500, 400)


def test_alpha_is_composited_on_white_in_integers_as_in_floats():
    from engine.data.images import on_white

    four = np.random.default_rng(1).integers(0, 256, (301, 17, 4), dtype=np.uint8)
    alpha = four[..., 3:4] / 255.0
    expected = (four[..., :3] * alpha + 255.0 * (1.0 - alpha)).round().astype(np.uint8)
    np.testing.assert_array_equal(on_white(four, rows=64), expected)


def test_a_png_whose_metadata_is_over_the_decoders_limit_is_told_so():
    import struct
    import zlib

    import cv2

    raw = cv2.imencode(".png", np.full((64, 64, 3), 128, np.uint8))[1].tobytes()
    for kind, body in ((b"zTXt", b"Comment\x00\x00"), (b"iCCP", b"icc\x00\x00")):
        body += zlib.compress(b"a" * (2 * 1024 * 1024))  # 2 KB in the file, 2 MB unpacked: over PIL's 1 MB per chunk
        chunk = struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        with pytest.raises(ImageError, match="metadata block .* over the decoder's limit of 1 MB") as info:
            decode_image(raw[:33] + chunk + raw[33:])
        assert "ValueError" not in str(info.value)


def test_a_jpeg_is_reduced_during_decode_only_as_far_as_the_long_side_allows():
    from engine.data.images import ImageHeader, jpeg_reduction, read_header

    assert [jpeg_reduction(ImageHeader("JPEG", w, 3000), 3000) for w in (4032, 5999, 6000, 12000, 48000)] == [1, 1, 2, 4, 8]
    assert jpeg_reduction(ImageHeader("PNG", 12000, 3000), 3000) == 1 and jpeg_reduction(ImageHeader("JPEG", 12000, 3000), 0) == 1
    photo = cv2.resize(np.random.default_rng(3).integers(0, 255, (30, 40, 3), dtype=np.uint8), (4001, 3001))
    data = cv2.imencode(".jpg", photo)[1].tobytes()
    header = read_header(data)
    small = decode_image(data, reduce=4)
    assert small.shape == (751, 1001, 3) == (header.reduced(4).height, header.reduced(4).width, 3)  # sides rounded up
    whole = cv2.resize(decode_image(data), (1001, 751), interpolation=cv2.INTER_AREA)
    assert np.abs(whole.astype(int) - small).mean() < 3  # the same picture
    assert header.reduced(4).decode_cost * 10 < header.decode_cost
