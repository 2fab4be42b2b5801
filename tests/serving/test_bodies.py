"""A body the app answered without reading is drained (up to a cap) before the answer goes out."""

from __future__ import annotations

import io

from serving.bodies import DrainUnreadBody


def call(app, body: bytes, cap: int, *, length: bool = True, terminated: bool = False) -> tuple[io.BytesIO, list]:
    stream = io.BytesIO(body + b"NEXT REQUEST")  # what follows on a keep-alive connection must stay unread
    environ = {"wsgi.input": stream, "REQUEST_METHOD": "POST"}
    if length:
        environ["CONTENT_LENGTH"] = str(len(body))
    if terminated:
        environ["wsgi.input_terminated"] = True
        stream = io.BytesIO(body)
        environ["wsgi.input"] = stream
    seen = []
    out = DrainUnreadBody(app, cap)(environ, lambda status, headers, exc_info=None: seen.append(status))
    assert list(out) == [b"answer"] and seen == ["403 FORBIDDEN"]
    return stream, seen


def refusing(read: int = 0):
    def app(environ, start_response):
        environ["wsgi.input"].read(read)
        start_response("403 FORBIDDEN", [("Content-Type", "text/plain")])
        return [b"answer"]
    return app


def test_an_unread_body_is_drained_to_its_end_and_no_further():
    stream, _ = call(refusing(), b"x" * 300_000, cap=1 << 20)
    assert stream.tell() == 300_000 and stream.read() == b"NEXT REQUEST"


def test_a_partly_read_body_is_drained_from_where_the_app_stopped():
    stream, _ = call(refusing(read=1000), b"y" * 5000, cap=1 << 20)
    assert stream.read() == b"NEXT REQUEST"


def test_a_body_over_the_cap_is_left_for_the_server_to_close_on():
    stream, _ = call(refusing(), b"z" * 5000, cap=4000)
    assert stream.tell() == 0


def test_a_chunked_body_is_drained_only_when_the_server_ends_the_input():
    stream, _ = call(refusing(), b"c" * 7000, cap=1 << 20, length=False, terminated=True)
    assert stream.tell() == 7000
    stream, _ = call(refusing(), b"c" * 7000, cap=1 << 20, length=False)  # no length, not terminated: never read
    assert stream.tell() == 0
