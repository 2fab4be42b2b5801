"""Request bodies the app answered without reading: drained, so a keep-alive client gets the answer.

gunicorn (26) drains at most 64 KB of a body the application left unread, then closes the
connection without saying so in the answer's ``Connection`` header: a keep-alive client's next
request on it fails with "Remote end closed connection without response" (a 403 to a wrong reload
token, a 429, a 404 to ``POST /nope`` with a photo attached). ``DrainUnreadBody`` reads what is
left of each request's body after the app made its answer and before the server sends it, up to
``cap`` bytes; a longer body (which the upload limit refused anyway) is left for the server to
close on. A chunked body is drained only when the server marks the input as terminated
(``wsgi.input_terminated``, as gunicorn does), so a read never waits past the body's end.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

logger = logging.getLogger(__name__)

CHUNK = 1 << 16


class _Counting:
    """A ``wsgi.input`` that counts the bytes the app read from it."""

    def __init__(self, stream: Any) -> None:
        self._stream, self.consumed = stream, 0

    def read(self, *args: Any) -> bytes:
        data = self._stream.read(*args)
        self.consumed += len(data)
        return data

    def readline(self, *args: Any) -> bytes:
        data = self._stream.readline(*args)
        self.consumed += len(data)
        return data

    def readlines(self, *args: Any) -> list[bytes]:
        lines = self._stream.readlines(*args)
        self.consumed += sum(len(x) for x in lines)
        return lines

    def __iter__(self):
        for line in self._stream:
            self.consumed += len(line)
            yield line


def drain(stream: Any, remaining: int | None, cap: int) -> int:
    """Read and drop up to ``remaining`` bytes of ``stream`` (None: until it ends), at most ``cap``;
    the bytes dropped. Stops quietly when the client goes away."""
    dropped = 0
    try:
        while dropped < cap and (remaining is None or dropped < remaining):
            want = min(CHUNK, cap - dropped, CHUNK if remaining is None else remaining - dropped)
            chunk = stream.read(want)
            if not chunk:
                break
            dropped += len(chunk)
    except (OSError, ValueError):  # the client went away, or the server closed the input
        pass
    return dropped


class DrainUnreadBody:
    """WSGI middleware: after the app answered, the request body it left unread is read and
    dropped (up to ``cap`` bytes) before the answer goes out, so the connection stays usable."""

    def __init__(self, app: Callable, cap: int) -> None:
        self.app, self.cap = app, cap

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        counting = _Counting(environ["wsgi.input"])
        environ["wsgi.input"] = counting
        result = self.app(environ, start_response)  # a Flask app has made its whole answer here
        try:
            length = int(environ.get("CONTENT_LENGTH") or -1)
        except ValueError:
            length = -1
        if length >= 0:
            left = length - counting.consumed
            if 0 < left <= self.cap:
                drain(counting, left, self.cap)
        elif environ.get("wsgi.input_terminated"):
            drain(counting, None, self.cap)
        return result
