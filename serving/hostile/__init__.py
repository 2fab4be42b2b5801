"""Hostile HTTP requests a Showroom server must refuse with a 4xx JSON error: a conformance suite.

    python -m serving.hostile --url http://127.0.0.1:8000 --pids 123,456 --reload-token T

- ``serving.hostile.cases``: the requests (``Case``) and the statuses acceptable for each;
  ``build_cases(max_upload, product_id, token)`` makes them, ``CASES`` is the same list for the
  defaults (a 10 MB upload limit, a placeholder product id, no reload token): it names every case.
- ``serving.hostile.forged``: the files they upload, every one generated in code (PIL, numpy, zlib,
  struct), so no binary file lives in the repository: odd formats, truncations, decompression
  bombs, headers that claim huge sizes.
- ``serving.hostile.client``: sends cases to a live server with ``urllib.request``.
- ``serving.hostile.memory``: the summed VmRSS of the server processes (and their children), read
  from ``/proc`` every 20 ms while the decompression-bomb cases run.
- ``serving.hostile.cli``: the command, which prints one table. Its exit code is 0 only when no
  answer is a 5xx, no request failed to connect and every status is in its case's ``expect`` set.

The contract the cases hold the server to:

- no ``image`` field, an empty file, or bytes that are not a decodable still image: 400;
- an image whose header declares more than ``SHOWROOM_MAX_PIXELS`` (default 24,000,000) pixels: 413,
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
