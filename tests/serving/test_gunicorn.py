"""Two real gunicorn workers: a reload under load reaches both, none fails; logs and /metrics cover both."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from benchmarks.reload_load import load, request
from engine.index.generations import publish_generation

ROOT = Path(__file__).resolve().parents[2]


def start_gunicorn(out: Path, tmp_path: Path, port: int, **env_extra: str) -> subprocess.Popen:
    """gunicorn as docs/serving.md runs it (2 workers) serving ``out``, logging to ``tmp_path/gunicorn.log``."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SHOWROOM_INDEX": str(out), "SHOWROOM_RELOAD_TOKEN": "s3cret",
           "SHOWROOM_RATE_LIMIT": "", "SHOWROOM_BIND": f"127.0.0.1:{port}", "SHOWROOM_WORKERS": "2",
           "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom"), **env_extra}
    env.pop("SHOWROOM_GENERATION_FILE", None)  # the default: one record per gunicorn master
    log = open(tmp_path / "gunicorn.log", "w")
    return subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", str(ROOT / "serving" / "gunicorn_conf.py"), "--threads", "2",
                             "serving:create_app()"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def worker_pids(proc: subprocess.Popen, url: str, log: Path, n: int = 2, timeout: float = 240.0) -> set[int]:
    """The pids of the ``n`` workers once each has answered ``/healthz``."""
    deadline = time.monotonic() + timeout
    pids = set()
    while time.monotonic() < deadline and len(pids) < n:  # both workers up and answering
        assert proc.poll() is None, log.read_text()[-3000:]
        status, _, body = request(url + "/healthz", timeout=5)
        if status == 200:
            pids.add(json.loads(body)["pid"])
        else:
            time.sleep(0.5)
    assert len(pids) == n, "the workers did not come up"
    return pids


@pytest.fixture()
def gunicorn(index_folder: Path, tmp_path: Path, copy_of, free_ports, stop_group):
    out = tmp_path / "serve"
    publish_generation(out, copy_of(index_folder))
    port = free_ports(1)[0]
    proc = start_gunicorn(out, tmp_path, port)
    url = f"http://127.0.0.1:{port}"
    try:
        worker_pids(proc, url, tmp_path / "gunicorn.log")
        yield url, out, tmp_path / "gunicorn.log", proc
    finally:
        stop_group(proc, timeout=60)


@pytest.mark.slow
def test_reload_under_load_reaches_every_worker(gunicorn, index_folder: Path, tiny_catalog: Path, copy_of):
    url, out, log, _ = gunicorn
    from engine.data.catalog import load_catalog

    image = load_catalog(tiny_catalog).scenes[0].image.read_bytes()
    newer = publish_generation(out, copy_of(index_folder))

    def one_reload(seconds: float) -> list[dict]:
        time.sleep(seconds / 2)
        status, _, body = request(url + "/api/reload", b"", {"X-Reload-Token": "s3cret"})
        time.sleep(seconds / 2)
        return [{**json.loads(body), "http": status}]

    tally, answers = load(url, image, clients=4, seconds=6.0, reload=one_reload)
    assert answers[0]["http"] == 200 and answers[0]["generation"] == 2, answers
    assert tally.served > 0 and not tally.failures, tally
    deadline = time.monotonic() + 120  # the other worker loads generation 2 in the background, answering from 1 meanwhile
    latest: dict[int, int] = {}
    while time.monotonic() < deadline and not (len(latest) == 2 and set(latest.values()) == {2}):
        h = json.loads(request(url + "/healthz")[2])
        assert h["generation"] in (1, 2)
        latest[h["pid"]] = h["generation"]
        time.sleep(0.05)
    health = [json.loads(request(url + "/healthz")[2]) for _ in range(30)]
    assert {h["generation"] for h in health} == {2} and {h["source"] for h in health} == {str(newer)}
    assert len({h["pid"] for h in health}) == 2  # both workers answered, both on the new generation
    metrics = urllib.request.urlopen(url + "/metrics", timeout=30).read().decode()
    healthz = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                  if line.startswith('showroom_requests_total{') and 'route="/healthz"' in line and 'status="200"' in line)
    assert healthz >= 30  # summed over both workers (PROMETHEUS_MULTIPROC_DIR)
    lines = [json.loads(x[x.index("{"):]) for x in log.read_text().splitlines() if '"route":' in x]
    assert sum(1 for x in lines if x["route"] == "/api/search" and x["status"] == 200) == tally.served
    assert all("generation" in x and "stages_ms" in x for x in lines)


@pytest.mark.slow
def test_an_oversize_upload_gets_its_413_through_gunicorn(gunicorn):
    from benchmarks.reload_load import multipart

    url, _, _, _ = gunicorn
    body, ctype = multipart(b"\xff" * (10 * 1024 * 1024 + 512 * 1024), {"k": "3"})  # over the 10 MB default
    status, _, answer = request(url + "/api/search", body, {"Content-Type": ctype})
    assert status == 413 and "upload too large" in json.loads(answer)["error"]


@pytest.mark.slow
def test_a_killed_worker_comes_back_on_the_newest_generation_that_loads(gunicorn, index_folder: Path, tiny_catalog: Path, copy_of):
    """A damaged published generation plus one killed worker: the server stays up, the new worker
    serves the older generation, says so, and every search is answered."""
    url, out, log, proc = gunicorn
    older = out / (out / "CURRENT").read_text().strip()
    newer = publish_generation(out, copy_of(index_folder))
    assert json.loads(request(url + "/api/reload", b"", {"X-Reload-Token": "s3cret"})[2])["generation"] == 2
    with open(newer / "products" / "vectors.npy", "r+b") as fh:
        fh.truncate(100)
    status, _, body = request(url + "/api/reload", b"", {"X-Reload-Token": "s3cret"})
    assert status == 409 and "still serving" in json.loads(body)["error"]
    pids = worker_pids(proc, url, log)
    victim = min(pids)
    os.kill(victim, signal.SIGKILL)  # as an OOM kill would
    deadline = time.monotonic() + 240
    seen: dict[int, dict] = {}
    while time.monotonic() < deadline and not any(p not in pids for p in seen):
        assert proc.poll() is None, "the master exited: " + log.read_text()[-3000:]
        status, _, body = request(url + "/healthz", timeout=5)
        if status == 200:
            seen[json.loads(body)["pid"]] = json.loads(body)
        time.sleep(0.2)
    fresh = [h for p, h in seen.items() if p not in pids]
    assert fresh, "no new worker answered: " + log.read_text()[-3000:]
    assert fresh[0]["status"] == "degraded" and fresh[0]["source"] == str(older) and str(newer) in fresh[0]["degraded"]
    assert proc.poll() is None  # the master is up
    from benchmarks.reload_load import multipart
    from engine.data.catalog import load_catalog

    body, ctype = multipart(load_catalog(tiny_catalog).scenes[0].image.read_bytes(), {"k": "3"})
    answers = [request(url + "/api/search", body, {"Content-Type": ctype})[0] for _ in range(20)]
    assert answers == [200] * 20
    assert "DEGRADED" in log.read_text()
    metrics = urllib.request.urlopen(url + "/metrics", timeout=30).read().decode()
    assert "showroom_degraded 1.0" in metrics


@pytest.mark.slow
def test_a_keep_alive_client_gets_every_answer_to_a_body_the_app_did_not_read(gunicorn):
    """Over one keep-alive connection: refused reloads, unknown routes and oversize uploads, each with a
    body the app does not read, are all answered and the connection stays usable."""
    import http.client

    from benchmarks.reload_load import multipart

    url, _, _, _ = gunicorn
    host, port = url.rsplit("/", 1)[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    seen = []
    for i in range(30):
        size = (1024, 70_000, 300_000)[i % 3]
        body, ctype = multipart(b"y" * size, {})
        path, headers = (("/api/reload", {"X-Reload-Token": "wrong"}), ("/nope", {}))[i % 2]
        conn.request("POST", path, body=body, headers={**headers, "Content-Type": ctype})
        r = conn.getresponse()
        r.read()
        seen.append(r.status)
    body, ctype = multipart(b"\xff" * (10 * 1024 * 1024 + 4096), {})  # over the 10 MB limit, under the drain's cap
    conn.request("POST", "/api/search", body=body, headers={"Content-Type": ctype})
    r = conn.getresponse()
    assert r.status == 413 and "upload too large" in json.loads(r.read())["error"]
    conn.request("GET", "/api/types")  # the same connection still serves
    r = conn.getresponse()
    assert r.status == 200 and json.loads(r.read())["types"]
    assert seen == [403, 404] * 15
