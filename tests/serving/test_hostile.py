"""Every hostile request of ``serving.hostile`` is refused with its expected 4xx and a JSON error, in the
test client and over a live socket (``python -m serving.hostile`` against a werkzeug server thread)."""

from __future__ import annotations

import contextlib
import io
import os
import threading
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from engine.data.catalog import load_catalog
from serving.hostile.cases import CASES, Case, build_cases
from serving.hostile.cli import main as hostile_main
from tests.serving.conftest import BoxDetector

MAX_UPLOAD, TOKEN = 200_000, "s3cret"  # what the conftest app is configured with
CASE_NAMES = [c.name for c in CASES]


@pytest.fixture(scope="module")
def app(index_folder: Path):
    """The conftest ``app``, built once for the whole module: ``create_app`` loads the model (about 0.7 s),
    too slow to repeat for each of the ~190 cases. Same configuration, rate limiting off."""
    from serving import create_app

    return create_app({"SHOWROOM_INDEX": str(index_folder), "SHOWROOM_DETECTOR": BoxDetector(), "TESTING": True,
                       "MAX_CONTENT_LENGTH": MAX_UPLOAD, "SHOWROOM_RELOAD_TOKEN": TOKEN, "SHOWROOM_RATE_LIMIT": ""})


@pytest.fixture(scope="module")
def product_id(tiny_catalog: Path) -> str:
    return load_catalog(tiny_catalog).product_ids[0]


@pytest.fixture(scope="module")
def cases(product_id: str) -> dict[str, Case]:
    return {c.name: c for c in build_cases(MAX_UPLOAD, product_id, TOKEN)}


@pytest.mark.parametrize("name", CASE_NAMES)
def test_hostile_request_is_refused_with_a_json_4xx(client, cases: dict[str, Case], name: str):
    case = cases[name]
    body, headers = case.encode()
    content_type = headers.pop("Content-Type", None)
    r = client.open(case.target, method=case.method, data=body, headers=headers, content_type=content_type)
    assert r.status_code < 500, f"{name}: server error {r.status_code}: {r.get_data(as_text=True)[:300]}"
    assert r.status_code in case.expect, f"{name}: got {r.status_code}, expected {sorted(case.expect)}: {r.get_data(as_text=True)[:300]}"
    doc = r.get_json(silent=True)
    assert isinstance(doc, dict) and isinstance(doc.get("error"), str) and doc["error"].strip(), \
        f"{name}: the body is not JSON with an 'error' string: {r.get_data(as_text=True)[:300]!r}"


def test_the_cases_are_many_and_distinct(product_id: str):
    cases = build_cases(MAX_UPLOAD, product_id, TOKEN)
    assert len(cases) >= 80
    assert len({c.name for c in cases}) == len(cases)
    assert len({c.key() for c in cases}) == len(cases)
    assert [c.name for c in cases] == CASE_NAMES  # names do not depend on the limit, the product or the token
    assert all(c.expect and all(400 <= s < 500 for s in c.expect) for c in cases)
    bombs = [c for c in cases if c.bomb]
    over = [c for c in bombs if "just_under" not in c.name]  # the header declares too much: refused before decoding
    assert len(over) >= 8 and all(c.expect == {413} for c in over)
    under = [c for c in bombs if "just_under" in c.name]  # a few bytes that decode to a whole canvas under the limit
    assert len(under) == 2 and all(413 not in c.expect for c in under)
    assert all(len(c.files[0].data) < 250_000 for c in bombs)  # small files, huge declared sizes


def test_the_cli_against_a_live_server(app, capsys):
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        code = hostile_main(["--url", f"http://127.0.0.1:{server.server_port}", "--pids", str(os.getpid()),
                             "--reload-token", TOKEN, "--max-upload", str(MAX_UPLOAD)])
    finally:
        server.shutdown()
        thread.join()
        server.server_close()
    table = capsys.readouterr().out
    assert "peak - idle" in table and "verdict" in table
    assert code == 0, table


def test_the_cli_refuses_bad_arguments():
    with contextlib.redirect_stderr(io.StringIO()):
        assert hostile_main(["--url", "http://127.0.0.1:9", "--pids", "not-a-pid"]) == 2
        assert hostile_main(["--url", "http://127.0.0.1:9", "--product-id", "p", "--max-upload", "1000"]) == 2
