"""Image decode, box padding, cropping and square resizing shared by training, serving and evaluation.

All images are ``uint8 (H, W, 3)`` RGB numpy arrays, upright as a browser shows them (EXIF
orientation applied). Boxes are ``(x1, y1, x2, y2)`` integer pixels with x2/y2 exclusive.
"""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, PngImagePlugin, UnidentifiedImageError

from engine.config import ImageLimits

Box = tuple[int, int, int, int]
EXIF_ORIENTATION = 0x0112


class ImageError(ValueError):
    """Bytes that are not a decodable image, or a box that does not fit the image."""


class ImageTooLarge(ImageError):
    """An image whose header declares more pixels than the limit (nothing was decoded)."""


class ImageShapeError(ImageError):
    """An image too small or too elongated to search (nothing was decoded)."""


@dataclass(frozen=True)
class ImageHeader:
    """What an image file declares before decoding: format, stored size, EXIF orientation (1-8)."""

    format: str
    width: int
    height: int
    orientation: int = 1
    mode: str = ""  # PIL's mode ("RGB", "RGBA", "I;16", "P", ...), then "/" and the stored layout when it differs ("RGB/RGB;16B")

    @property
    def decode_cost(self) -> int:
        """An upper bound of the bytes decoding this image holds at its peak: the decoder's buffer
        (4 channels, 2 bytes each when deeper than 8 bits), the RGB result and, when the
        orientation turns it, the upright copy. Known from the header, before any pixel is decoded."""
        deep = 2 if any(tag in self.mode for tag in ("16", "I", "F")) else 1
        upright = 3 if self.orientation != 1 else 0
        band = 128 * self.width * 8 * 2  # the alpha compositing's working rows (``on_white``)
        return self.width * self.height * (4 * deep + 3 + upright) + band

    def reduced(self, factor: int) -> ImageHeader:
        """The header of this image decoded ``factor`` times smaller per side (sides rounded up, as libjpeg does)."""
        return replace(self, width=-(-self.width // factor), height=-(-self.height // factor))

    @property
    def upright_size(self) -> tuple[int, int]:
        """(width, height) once the orientation is applied: 5-8 swap the sides."""
        return (self.height, self.width) if self.orientation in (5, 6, 7, 8) else (self.width, self.height)


def jpeg_reduction(header: ImageHeader, long_side: int) -> int:
    """The factor, 1, 2, 4 or 8, by which a JPEG can be decoded smaller during the decode itself
    (libjpeg's DCT scaling: no full-size buffer is ever made) while its long side stays at least
    ``long_side``; 1 for other formats, or when ``long_side`` is 0."""
    if header.format != "JPEG" or long_side <= 0:
        return 1
    factor, longest = 1, max(header.width, header.height)
    while factor < 8 and longest // (2 * factor) >= long_side:
        factor *= 2
    return factor


def read_header(data: bytes, *, source: str = "image") -> ImageHeader:
    """Parse only the header of ``data`` (PIL reads lazily): no pixel is decoded here."""
    if not data:
        raise ImageError(f"{source}: empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                try:
                    orientation = int(_exif(im).get(EXIF_ORIENTATION, 1))
                except Exception:  # a damaged EXIF block: show the pixels as stored, as browsers do
                    orientation = 1
                raw = im.tile[0].args if im.tile else ""  # the stored layout: "RGB;16B" for a 16-bit PNG PIL calls "RGB"
                stored = raw if isinstance(raw, str) else str(raw[0]) if isinstance(raw, tuple) and raw else ""
                return ImageHeader(im.format or "", int(im.width), int(im.height), orientation if 1 <= orientation <= 8 else 1,
                                   str(im.mode or "") + (f"/{stored}" if stored and stored != im.mode else ""))
    except Image.DecompressionBombError:
        # PIL itself refuses absurd sizes before we can read them; report it as too large
        raise ImageTooLarge(f"{source}: the image declares over {2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} megapixels; "
                            "send a smaller photo (any phone photo fits)") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, struct.error) as exc:
        raise ImageError(_undecodable(source, exc)) from None


def _undecodable(source: str, exc: BaseException) -> str:
    """What is wrong with bytes PIL or OpenCV would not decode, in words: PIL's own safety limits
    (a PNG's text chunks over its budget, say) are named, not only the exception's type."""
    text = str(exc).lower()
    if "decompressed data too large" in text:  # one compressed text or ICC profile chunk over PIL's 1 MB
        return (f"{source}: a metadata block (compressed text or colour profile) unpacks to over the decoder's limit of "
                f"{PngImagePlugin.MAX_TEXT_CHUNK // 1024 ** 2} MB; send the photo without it (re-save or export it)")
    if "too much memory used in text chunks" in text:
        return (f"{source}: its metadata (text chunks) is over the decoder's limit of {PngImagePlugin.MAX_TEXT_MEMORY // 1024 ** 2} MB "
                "in all; send the photo without it (re-save or export it)")
    return f"{source}: not a decodable image (JPEG, PNG, WebP or BMP expected): {type(exc).__name__}"


def _exif(im: Image.Image) -> Image.Exif:
    """The EXIF block of an opened image without decoding its pixels: PIL's ``getexif`` on a PNG
    decodes the whole image first (to find an eXIf chunk after the pixels); here a PNG's EXIF is
    taken only from an eXIf chunk before them, where the PNG specification puts it."""
    if im.format != "PNG":
        return im.getexif()
    exif = Image.Exif()
    raw = im.info.get("exif")
    if raw:
        exif.load(raw)
    return exif


def check_limits(header: ImageHeader, limits: ImageLimits, *, source: str = "image") -> None:
    """Refuse, from the header alone, an image over ``limits.max_pixels`` (``ImageTooLarge``) or
    with a side under ``limits.min_side`` or an aspect ratio over ``limits.max_aspect`` (``ImageShapeError``)."""
    w, h = header.upright_size
    if w * h > limits.max_pixels:
        raise ImageTooLarge(f"{source}: {w}x{h} is {w * h / 1e6:.1f} megapixels; the limit is {limits.max_pixels / 1e6:g} MP: "
                            "send a smaller photo (any phone photo fits)")
    if min(w, h) < limits.min_side:
        raise ImageShapeError(f"{source}: {w}x{h} is too small; each side needs at least {limits.min_side} pixels")
    if max(w, h) > limits.max_aspect * min(w, h):
        raise ImageShapeError(f"{source}: {w}x{h} is too elongated (aspect over {limits.max_aspect:g}:1); crop it to the product")


def orient(image: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1-8) to stored pixels ``(H, W, C)``, as browsers and PIL's
    ``ImageOps.exif_transpose`` do; returns a contiguous array."""
    ops = {
        1: lambda a: a,
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.transpose(1, 0, 2),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: a.transpose(1, 0, 2)[::-1, ::-1],
        8: lambda a: np.rot90(a, 1),
    }
    return np.ascontiguousarray(ops.get(orientation, ops[1])(image))


REDUCED_JPEG = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}


def decode_image(data: bytes, *, source: str = "image", limits: ImageLimits | None = None, reduce: int = 1,
                 header: ImageHeader | None = None) -> np.ndarray:
    """Decode JPEG/PNG/WebP/BMP/GIF bytes into upright ``uint8 (H, W, 3)`` RGB (alpha composited on white).

    The header is read first: with ``limits`` (untrusted uploads) an oversized, tiny or elongated
    image is refused before any pixel is decoded. EXIF orientation is applied, so the pixels are
    those a browser shows. ``reduce`` (2, 4 or 8, from ``jpeg_reduction``): a JPEG is decoded that
    many times smaller per side by libjpeg itself (sides rounded up); ignored for other formats.
    ``header``: the one ``read_header`` gave the caller (who checked it), so it is not read again.
    """
    if header is None:
        header = read_header(data, source=source)
        if limits is not None:
            check_limits(header, limits, source=source)
    flag = REDUCED_JPEG.get(reduce) if header.format == "JPEG" else None
    try:
        if flag is not None:  # orientation is ours to apply, below, as for every other decode
            img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flag | cv2.IMREAD_IGNORE_ORIENTATION)
        else:
            img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        img = None
    if img is None or img.size == 0:
        img = _decode_with_pil(data, source)  # formats OpenCV lacks (GIF on some builds); already RGB
    else:
        img = _to_rgb(img)
    return orient(img, header.orientation)


def _to_rgb(img: np.ndarray) -> np.ndarray:
    """OpenCV's BGR(A)/gray of any depth to ``uint8 (H, W, 3)`` RGB."""
    if img.dtype != np.uint8:
        img = cv2.convertScaleAbs(img, alpha=255.0 / max(1.0, float(img.max())))
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    if img.shape[2] == 4:
        out = on_white(img)
        return cv2.cvtColor(out, cv2.COLOR_BGR2RGB, dst=out)  # in place: no second full-size array
    return cv2.cvtColor(img[..., :3], cv2.COLOR_BGR2RGB)


def on_white(four: np.ndarray, rows: int = 128) -> np.ndarray:
    """``uint8 (H, W, 4)`` colour + alpha composited on white into a new ``uint8 (H, W, 3)``
    (channel order kept), ``rows`` at a time in 16-bit integers: the extra memory is a band of the
    image, not the float copies of all of it a one-line formula would make."""
    h, w = four.shape[:2]
    out = np.empty((h, w, 3), np.uint8)
    for top in range(0, h, rows):
        band = four[top : top + rows]
        alpha = band[..., 3:4].astype(np.uint16)
        mixed = band[..., :3].astype(np.uint16)
        mixed *= alpha
        alpha ^= 255  # 255 - alpha, in place
        alpha *= 255
        alpha += 127
        mixed += alpha  # at most 255 * 255 + 127: fits 16 bits
        mixed //= 255
        out[top : top + rows] = mixed
    return out


def _decode_with_pil(data: bytes, source: str) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.seek(0)
            rgba = im.convert("RGBA")
    except Exception as exc:  # PIL raises many types on damaged files
        raise ImageError(_undecodable(source, exc)) from None
    return on_white(np.asarray(rgba))


def load_image(path: str | Path) -> np.ndarray:
    """Read and decode an image file into ``uint8 (H, W, 3)`` RGB."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror})") from None
    return decode_image(data, source=str(path))


_REDUCED_READ = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}


def load_square(path: str | Path, size: int, *, fill: int = 255, reduced: bool = True) -> np.ndarray:
    """A catalog photo as the model sees it, ``uint8 (size, size, 3)``: ``to_square(load_image(path), size)``
    up to resampling.

    A JPEG at least twice as large as needed is decoded at 1/2, 1/4 or 1/8 scale by the JPEG decoder
    itself (DCT scaling averages each block; the result is never smaller than ``size``), then
    area-resized as any image: under half the cost of a full decode (``python -m
    benchmarks.pipeline``). Every iconic image — training's bank, the index, evaluation, mining —
    goes through here, so they all see the same pixels; ``reduced=False`` (``Preprocessing.catalog_decode``
    ``full``) decodes every pixel, as models trained before this existed saw them.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror})") from None
    header = read_header(data, source=str(path))
    longest = max(header.width, header.height)
    factor = max((f for f in _REDUCED_READ if longest >= f * size), default=1)
    img = None
    if reduced and header.format == "JPEG" and factor > 1:
        flags = _REDUCED_READ[factor] | cv2.IMREAD_IGNORE_ORIENTATION
        try:
            img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
        except cv2.error:
            img = None
    if img is None or img.size == 0:  # not a large JPEG, or one OpenCV cannot read at a reduced scale
        return to_square(decode_image(data, source=str(path)), size, fill=fill)
    return to_square(orient(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), header.orientation), size, fill=fill)


def check_box(box: Box, width: int, height: int) -> Box:
    """Validate that ``box`` lies inside a ``width`` x ``height`` image and is not empty."""
    x1, y1, x2, y2 = (int(v) for v in box)
    if not (0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height):
        raise ImageError(
            f"box ({x1},{y1},{x2},{y2}) is outside the {width}x{height} image or empty; "
            "use pixels with 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height"
        )
    return x1, y1, x2, y2


def pad_box(box: Box, width: int, height: int, padding: float, *, square: bool = True) -> Box:
    """Grow ``box`` by ``padding`` x its longer side on every side, optionally to a square, clipped.

    Squaring takes more of the scene around the object rather than stretching the crop.
    """
    x1, y1, x2, y2 = check_box(box, width, height)
    bw, bh = x2 - x1, y2 - y1
    pad = padding * max(bw, bh)
    cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
    half_w, half_h = bw / 2.0 + pad, bh / 2.0 + pad
    if square:
        half_w = half_h = max(half_w, half_h)
    nx1 = max(0, int(np.floor(cx - half_w)))
    ny1 = max(0, int(np.floor(cy - half_h)))
    nx2 = min(width, int(np.ceil(cx + half_w)))
    ny2 = min(height, int(np.ceil(cy + half_h)))
    return nx1, ny1, nx2, ny2


def crop(image: np.ndarray, box: Box) -> np.ndarray:
    """The ``box`` region of ``image`` (a view), validated."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = check_box(box, w, h)
    return image[y1:y2, x1:x2]


def to_square(image: np.ndarray, size: int, *, fill: int = 255) -> np.ndarray:
    """Resize keeping aspect ratio so the longer side is ``size``; pad to ``(size, size, 3)`` with ``fill``."""
    h, w = image.shape[:2]
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (nw, nh), interpolation=interp)
    out = np.full((size, size, 3), fill, dtype=np.uint8)
    top, left = (size - nh) // 2, (size - nw) // 2
    out[top : top + nh, left : left + nw] = resized
    return out


def query_crop(image: np.ndarray, box: Box | None, size: int, padding: float) -> np.ndarray:
    """A query as the model sees it: padded square crop of ``box`` (or the whole image), ``(size, size, 3)``."""
    if box is not None:
        h, w = image.shape[:2]
        image = crop(image, pad_box(box, w, h, padding))
    return to_square(image, size, fill=255)
