"""Rate limits counted for the whole server: the shared SQLite window store counts every hit of
every process and thread, ends and purges its windows, is the default under gunicorn, and two real
gunicorn workers together let a client through exactly the configured number of times."""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from limits import parse
from limits.storage import MemoryStorage, storage_from_string
from limits.strategies import FixedWindowRateLimiter

from serving.ratelimit import SCHEME, SharedWindowStorage, default_storage_uri

ROOT = Path(__file__).resolve().parents[2]


class FakeClock:
    """Epoch seconds that move only when a test moves them."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def rows(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT COUNT(*) FROM windows").fetchone()[0]


def _hammer(path: str, threads: int, hits: int, go, out) -> None:
    """One process: ``threads`` threads each counting ``hits`` hits on one key; puts every count it was answered."""
    storage = SharedWindowStorage(f"{SCHEME}://{path}")
    seen: list[int] = []
    lock = threading.Lock()

    def run() -> None:
        mine = [storage.incr("client", 3600) for _ in range(hits)]
        with lock:
            seen.extend(mine)

    workers = [threading.Thread(target=run) for _ in range(threads)]
    go.wait(60)  # every process ready: their hits overlap
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    out.put(seen)


def test_no_hit_is_lost_under_processes_and_threads(tmp_path: Path):
    processes, threads, hits = 2, 4, 150
    path = tmp_path / "limits.sqlite"
    ctx = multiprocessing.get_context("spawn")  # not fork: this test process may run TensorFlow's threads
    go, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_hammer, args=(str(path), threads, hits, go, out)) for _ in range(processes)]
    for p in procs:
        p.start()
    go.set()
    answered = [count for _ in procs for count in out.get(timeout=120)]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    total = processes * threads * hits
    # each hit was answered a count of its own: 1, 2, ... total, none twice, none skipped
    assert sorted(answered) == list(range(1, total + 1))
    assert SharedWindowStorage(f"{SCHEME}://{path}").get("client") == total


def test_a_window_ends_and_the_next_starts_from_zero(tmp_path: Path):
    clock = FakeClock()
    storage = storage_from_string(f"{SCHEME}://{tmp_path / 'limits.sqlite'}", clock=clock)  # the scheme is registered
    assert isinstance(storage, SharedWindowStorage)
    limiter, three = FixedWindowRateLimiter(storage), parse("3 per minute")
    assert [limiter.hit(three, "1.2.3.4") for _ in range(4)] == [True, True, True, False]
    assert limiter.hit(three, "5.6.7.8")  # another client counts apart
    stats = limiter.get_window_stats(three, "1.2.3.4")
    assert stats.remaining == 0 and stats.reset_time == clock.now + 60
    clock.now += 59.9
    assert not limiter.hit(three, "1.2.3.4")
    clock.now += 0.1  # the window of the first hit has ended
    assert limiter.get_window_stats(three, "1.2.3.4").remaining == 3
    assert [limiter.hit(three, "1.2.3.4") for _ in range(4)] == [True, True, True, False]
    assert limiter.get_window_stats(three, "1.2.3.4").reset_time == clock.now + 60
    limiter.clear(three, "1.2.3.4")
    assert limiter.hit(three, "1.2.3.4") and storage.check()


def test_ended_windows_are_purged_so_the_file_stays_small(tmp_path: Path):
    clock, path = FakeClock(), tmp_path / "limits.sqlite"
    storage = SharedWindowStorage(f"{SCHEME}://{path}", purge_every=60, clock=clock)
    for window in range(30):  # 30 minutes of 20 new clients a minute
        for client in range(20):
            storage.incr(f"{window}/{client}", 60)
        assert rows(path) == 20  # the previous minute's windows went with the first hit of this one
        clock.now += 61
    storage.incr("late", 60)
    assert rows(path) == 1 and storage.get("29/0") == 0
    assert storage.reset() == 1 and rows(path) == 0


def test_an_ended_window_reads_as_empty_before_it_is_purged(tmp_path: Path):
    clock = FakeClock()
    storage = SharedWindowStorage(f"{SCHEME}://{tmp_path / 'limits.sqlite'}", purge_every=3600, clock=clock)
    assert storage.incr("a", 10, amount=2) == 2
    clock.now += 10
    assert storage.get("a") == 0 and storage.get_expiry("a") == clock.now
    assert storage.incr("a", 10) == 1 and rows(tmp_path / "limits.sqlite") == 1


def test_a_uri_without_a_file_is_refused():
    from limits.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="name the rate-limit file"):
        storage_from_string(f"{SCHEME}://")


def gunicorn_like(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SERVER_SOFTWARE", "gunicorn/23.0.0")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the per-server files land in this test's folder


def test_the_default_is_a_file_per_server_beside_the_generation_record(monkeypatch, tmp_path: Path):
    from serving.state import SharedGeneration

    monkeypatch.delenv("SHOWROOM_GENERATION_FILE", raising=False)
    monkeypatch.delenv("SERVER_SOFTWARE", raising=False)
    assert default_storage_uri() == "memory://"
    gunicorn_like(monkeypatch, tmp_path)
    uri = default_storage_uri()
    path = SharedWindowStorage(uri).path
    record = SharedGeneration.for_server("some/index").path
    assert path.parent == record.parent == tmp_path / f"showroom-{os.getuid()}" and path.is_file()
    assert path.name.startswith(f"ratelimits-{os.getppid()}-") and uri == default_storage_uri()


def jpeg() -> bytes:
    return cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8))[1].tobytes()


def make_app(index: Path, **config):
    from serving import create_app

    return create_app({"SHOWROOM_INDEX": str(index), "TESTING": True, "SHOWROOM_RATE_LIMIT": "2 per minute", **config})


def storage_of(app):
    (limiter,) = app.extensions["limiter"]
    assert isinstance(limiter.limiter, FixedWindowRateLimiter)
    return limiter.storage


def search(client):
    return client.post("/api/search", data={"image": (io.BytesIO(jpeg()), "p.jpg"), "k": "2"},
                       content_type="multipart/form-data").status_code


def test_two_workers_of_one_gunicorn_share_the_count_by_default(index_folder: Path, monkeypatch, tmp_path: Path):
    monkeypatch.delenv("SHOWROOM_RATE_LIMIT_STORAGE", raising=False)
    monkeypatch.delenv("SHOWROOM_GENERATION_FILE", raising=False)
    gunicorn_like(monkeypatch, tmp_path)
    a, b = make_app(index_folder), make_app(index_folder)  # two workers of one master
    assert isinstance(storage_of(a), SharedWindowStorage) and storage_of(a).path == storage_of(b).path
    assert storage_of(a).path.parent == tmp_path / f"showroom-{os.getuid()}"
    ca, cb = a.test_client(), b.test_client()
    assert [search(ca), search(cb), search(ca), search(cb)] == [200, 200, 429, 429]


@pytest.mark.parametrize("under_gunicorn, explicit, expected", [
    (False, None, MemoryStorage),  # flask run, the tests' client: one process is the whole server
    (True, "memory://", MemoryStorage),  # an explicit setting wins over the gunicorn default
    (False, "shared", SharedWindowStorage),
])
def test_the_storage_chosen(index_folder: Path, monkeypatch, tmp_path: Path, under_gunicorn: bool, explicit: str | None, expected: type):
    monkeypatch.delenv("SHOWROOM_GENERATION_FILE", raising=False)
    monkeypatch.delenv("SERVER_SOFTWARE", raising=False)
    if under_gunicorn:
        gunicorn_like(monkeypatch, tmp_path)
    if explicit is None:
        monkeypatch.delenv("SHOWROOM_RATE_LIMIT_STORAGE", raising=False)
    else:
        explicit = f"{SCHEME}://{tmp_path / 'mine.sqlite'}" if explicit == "shared" else explicit
        monkeypatch.setenv("SHOWROOM_RATE_LIMIT_STORAGE", explicit)
    storage = storage_of(make_app(index_folder))
    assert type(storage) is expected
    if expected is SharedWindowStorage:
        assert storage.path == tmp_path / "mine.sqlite"


# two real gunicorn workers


@pytest.fixture()
def limited_gunicorn(index_folder: Path, tmp_path: Path, copy_of, free_ports, stop_group):
    """A gunicorn server of 2 workers limiting search to 5 per minute per client, its rate-limit
    store left to the default; yields (url, the temp folder it writes in, the Prometheus folder)."""
    from benchmarks.reload_load import request
    from engine.index.generations import publish_generation

    out = tmp_path / "serve"
    publish_generation(out, copy_of(index_folder))
    port = free_ports(1)[0]
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SHOWROOM_INDEX": str(out), "SHOWROOM_RATE_LIMIT": "5 per minute",
           "SHOWROOM_BIND": f"127.0.0.1:{port}", "SHOWROOM_WORKERS": "2", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom"),
           "TMPDIR": str(temp)}
    for default in ("SHOWROOM_RATE_LIMIT_STORAGE", "SHOWROOM_GENERATION_FILE"):  # the defaults under test
        env.pop(default, None)
    log = open(tmp_path / "gunicorn.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", str(ROOT / "serving" / "gunicorn_conf.py"), "--threads", "2",
                             "serving:create_app()"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        pids = set()
        while time.monotonic() < deadline and len(pids) < 2:  # both workers up and answering, over fresh connections
            assert proc.poll() is None, (tmp_path / "gunicorn.log").read_text()[-3000:]
            status, _, body = request(url + "/healthz", timeout=5)
            if status == 200:
                pids.add(json.loads(body)["pid"])
            else:
                time.sleep(0.5)
        assert len(pids) == 2, "two workers did not come up"
        yield url, temp, tmp_path / "prom"
    finally:
        stop_group(proc, timeout=60)
        log.close()


def searches_per_worker(prom: Path) -> dict[str, float]:
    """POST /api/search requests each worker answered (any status), from its own Prometheus file."""
    from prometheus_client.multiprocess import MultiProcessCollector

    counts = {}
    for f in prom.glob("counter_*.db"):
        counts[f.stem.split("_", 1)[1]] = sum(s.value for m in MultiProcessCollector.merge([str(f)]) for s in m.samples
                                              if s.name == "showroom_requests_total" and s.labels.get("route") == "/api/search")
    return counts


@pytest.mark.slow
def test_two_gunicorn_workers_let_a_client_through_exactly_the_limit(limited_gunicorn, tiny_catalog: Path):
    from benchmarks.reload_load import multipart, request
    from engine.data.catalog import load_catalog

    url, temp, prom = limited_gunicorn
    body, ctype = multipart(load_catalog(tiny_catalog).scenes[0].image.read_bytes(), {"k": "3"})
    def both_took_searches(counts: dict[str, float]) -> bool:
        return len(counts) == 2 and all(n > 0 for n in counts.values())

    answers = []  # a new connection each, at least 16, until both workers took some (the kernel picks the worker)
    while len(answers) < 16 or (len(answers) < 64 and not both_took_searches(searches_per_worker(prom))):
        answers.append(request(url + "/api/search", body, {"Content-Type": ctype}))
    per_worker = searches_per_worker(prom)
    assert both_took_searches(per_worker), per_worker
    assert [status for status, _, _ in answers] == [200] * 5 + [429] * (len(answers) - 5)
    refused = [json.loads(b) for status, _, b in answers if status == 429]
    assert all("too many requests" in r["error"] for r in refused)
    assert [h["X-RateLimit-Remaining"] for s, h, _ in answers if s == 200] == ["4", "3", "2", "1", "0"]
    assert len(list(temp.glob(f"showroom-{os.getuid()}/ratelimits-*.sqlite"))) == 1  # the default store, one per server
