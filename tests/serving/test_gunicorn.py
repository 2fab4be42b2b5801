"""Two real gunicorn workers: a reload under load reaches both, none fails; logs and /metrics cover both."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from benchmarks.reload_load import load, request
from engine.index.generations import publish_generation

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def gunicorn(index_folder: Path, tmp_path: Path, copy_of, free_ports, stop_group):
    out = tmp_path / "serve"
    publish_generation(out, copy_of(index_folder))
    port = free_ports(1)[0]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SHOWROOM_INDEX": str(out), "SHOWROOM_RELOAD_TOKEN": "s3cret",
           "SHOWROOM_RATE_LIMIT": "", "SHOWROOM_BIND": f"127.0.0.1:{port}", "SHOWROOM_WORKERS": "2",
           "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom")}
    env.pop("SHOWROOM_GENERATION_FILE", None)  # the default: one record per gunicorn master
    log = open(tmp_path / "gunicorn.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", str(ROOT / "serving" / "gunicorn_conf.py"), "--threads", "2",
                             "serving:create_app()"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        pids = set()
        while time.monotonic() < deadline and len(pids) < 2:  # both workers up and answering
            assert proc.poll() is None, (tmp_path / "gunicorn.log").read_text()[-3000:]
            status, _, body = request(url + "/healthz", timeout=5)
            if status == 200:
                pids.add(json.loads(body)["pid"])
            else:
                time.sleep(0.5)
        assert len(pids) == 2, "two workers did not come up"
        yield url, out, tmp_path / "gunicorn.log"
    finally:
        stop_group(proc, timeout=60)
        log.close()


@pytest.mark.slow
def test_reload_under_load_reaches_every_worker(gunicorn, index_folder: Path, tiny_catalog: Path, copy_of):
    url, out, log = gunicorn
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

    url, _, _ = gunicorn
    body, ctype = multipart(b"\xff" * (10 * 1024 * 1024 + 512 * 1024), {"k": "3"})  # over the 10 MB default
    status, _, answer = request(url + "/api/search", body, {"Content-Type": ctype})
    assert status == 413 and "upload too large" in json.loads(answer)["error"]
