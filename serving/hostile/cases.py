"""The hostile requests (``Case``) and the 4xx statuses that are acceptable answers to each.

``build_cases(max_upload, product_id, token)`` makes every request for a server's limits, product and
reload token; ``CASES`` is the same list for the defaults (built on first use): it names every case.
"""

from __future__ import annotations

import functools
import io
import json
import math
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from serving.hostile.forged import (
    HTML_PAGE,
    MB,
    PDF_HEADER,
    PNG_SIGNATURE,
    QUERY_SIZE,
    SVG_WITH_SCRIPT,
    animated,
    bmp_claiming,
    bmp_rle_claiming,
    bmp_rle_claiming,
    gif_claiming,
    jpeg_claiming,
    jpeg_header_only,
    png16_rgb,
    png_bomb,
    png_header_bomb,
    query_jpeg,
    still,
    tiff_claiming,
    webp_claiming,
    zip_with_photo,
)

DEFAULT_MAX_UPLOAD = 10 * MB  # the app's default MAX_CONTENT_LENGTH
DEFAULT_MAX_PIXELS = 24_000_000  # the app's default SHOWROOM_MAX_PIXELS
BOUNDARY = "showroom-hostile-5c1e0f"
PLACEHOLDER_PRODUCT_ID = "placeholder-product-id"

BAD_REQUEST, FORBIDDEN, NOT_FOUND, NOT_ALLOWED = frozenset({400}), frozenset({403, 404}), frozenset({404}), frozenset({405})
TOO_LARGE, UNPROCESSABLE = frozenset({413}), frozenset({422})
BAD_OR_NOT_FOUND, BAD_OR_UNPROCESSABLE = frozenset({400, 404}), frozenset({400, 422})


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


def image_field(data: bytes, filename: str = "photo.jpg", content_type: str = "image/jpeg") -> tuple[Upload, ...]:
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
        files = image_field(data, filename, content_type) if data is not None else ()
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
    # --- just under the limit, a few bytes that decode to a whole canvas: allowed, but paid from the decode budget
    under = min(math.isqrt(max_pixels) - 8, 16384)
    search("bomb_webp_lossless_34_bytes_just_under_max_pixels", BAD_REQUEST, webp_claiming(under, under), "photo.webp", "image/webp")
    # decoded whole (a valid image), then refused for its box outside the image (422): the decode's memory is what counts
    search("bomb_bmp_rle_1kb_just_under_max_pixels", BAD_OR_UNPROCESSABLE, bmp_rle_claiming(under, under), "photo.bmp", "image/bmp",
           box=f"{under + 10},{under + 10},{under + 50},{under + 50}", detect="0")

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
    add("multipart_wrong_boundary", "POST", "/api/search", BAD_REQUEST, files=image_field(jpeg),
        content_type="multipart/form-data; boundary=not-the-boundary-used")
    add("multipart_no_boundary_parameter", "POST", "/api/search", BAD_REQUEST, files=image_field(jpeg), content_type="multipart/form-data")
    add("multipart_body_cut_short", "POST", "/api/search", BAD_REQUEST, body=multipart((), image_field(jpeg))[: len(jpeg) // 2],
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
    add("oversize_text_field", "POST", "/api/search", TOO_LARGE, files=image_field(jpeg), form=(("types", "Chair|" * (oversize // 6 + 1)),))

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
    add("k_zero_in_query", "POST", "/api/search", BAD_REQUEST, files=image_field(jpeg), form=(("box", "10,10,150,150"), ("detect", "0")),
        query=(("k", "0"),))
    for name, k in (("scenes_k_zero", "0"), ("scenes_k_letters", "abc"), ("scenes_k_101", "101"), ("scenes_k_arabic_indic_digit", "\u0663")):
        add(name, "GET", f"/api/products/{pid}/scenes", BAD_REQUEST, query=(("k", k),))

    # --- product types: unknown ones are 400
    for name, types in (("types_unknown", "Spaceship"), ("types_very_long", "A" * 10000), ("types_only_separators", "|||"),
                        ("types_nul_byte", "Chair\x00")):
        search(name, BAD_REQUEST, jpeg, box="10,10,150,150", detect="0", types=types)
    search("types_1000_repeats_in_one_field", BAD_REQUEST, jpeg, box="10,10,150,150", detect="0", types="|".join(["Spaceship"] * 1000))
    # 1000 form parts: werkzeug's max_form_parts (1000) may refuse the body as too large first
    add("types_1000_repeated_fields", "POST", "/api/search", frozenset({400, 413}), files=image_field(jpeg),
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
