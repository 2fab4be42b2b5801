"""``python -m benchmarks.soak``: clients searching a live server for minutes, with reloads on a
schedule; requests, 5xx, failures, latency percentiles and the server's memory over time.

    python -m benchmarks.soak --url http://127.0.0.1:8000 --image photo.jpg --token T \\
        --clients 4 --minutes 10 --reload-every 120 --pids MASTER_PID [--reload-url http://127.0.0.1:8081]

Each client posts the photo to ``/api/search`` in a loop on fresh connections. Every
``--reload-every`` seconds ``POST /api/reload`` goes to ``--reload-url`` (default ``--url``;
behind deploy/nginx/showroom.conf the public site refuses it, the loopback site takes it).
Every ``--rss-every`` seconds the summed RSS of ``--pids`` and their children (a gunicorn master:
all its workers) is printed, so memory growth between reloads shows. Exit status 1 when any
request failed (no answer) or got a 5xx.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import psutil

from benchmarks.reload_load import multipart, request

logger = logging.getLogger("benchmarks.soak")
MB = 1024 * 1024


def server_memory(pids: Sequence[int]) -> tuple[int, int]:
    """(summed RSS in bytes, number of processes) of ``pids`` and all their descendants alive now."""
    total, count = 0, 0
    for pid in pids:
        try:
            root = psutil.Process(pid)
            family = [root, *root.children(recursive=True)]
        except psutil.Error:
            continue
        for proc in family:
            try:
                total += proc.memory_info().rss
                count += 1
            except psutil.Error:  # exited meanwhile
                pass
    return total, count


class Record:
    """Answers by status and latencies of the 200s, shared by the client threads."""

    def __init__(self) -> None:
        self.statuses: collections.Counter = collections.Counter()
        self.latencies: list[float] = []
        self.lock = threading.Lock()

    def add(self, status: int | str, seconds: float) -> None:
        with self.lock:
            self.statuses[status] += 1
            if status == 200:
                self.latencies.append(seconds)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True, help="where clients search")
    p.add_argument("--image", type=Path, required=True, help="the photo every search posts")
    p.add_argument("--token", default="", help="the server's reload token (none: no reloads)")
    p.add_argument("--reload-url", default="", help="where reloads go (default --url)")
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--reload-every", type=float, default=120.0, help="seconds between reloads")
    p.add_argument("--rss-every", type=float, default=30.0, help="seconds between memory samples")
    p.add_argument("--pids", default="", help="comma-separated server pids (children included) whose RSS is sampled")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.image.is_file():
        logger.error("no photo at %s", args.image)
        return 2
    pids = [int(p) for p in args.pids.split(",") if p.strip()]
    url, reload_url = args.url.rstrip("/"), (args.reload_url or args.url).rstrip("/")
    body, ctype = multipart(args.image.read_bytes(), {"k": "5"})
    record, stop = Record(), threading.Event()

    def client() -> None:
        while not stop.is_set():
            t = time.perf_counter()
            status, _, _ = request(url + "/api/search", body, {"Content-Type": ctype}, timeout=60)
            record.add(status, time.perf_counter() - t)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(args.clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    end = t0 + args.minutes * 60
    next_reload = t0 + args.reload_every if args.token else float("inf")
    next_rss = t0
    reloads, rss = [], []
    try:
        while time.monotonic() < end:
            now = time.monotonic()
            if now >= next_rss:
                size, count = server_memory(pids)
                rss.append((now - t0, size, count, sum(record.statuses.values())))
                next_rss += args.rss_every
            if now >= next_reload:
                status, _, answer = request(reload_url + "/api/reload", b"", {"X-Reload-Token": args.token})
                generation = json.loads(answer).get("generation") if status == 200 else None
                reloads.append((round(now - t0), status, generation))
                logger.info("reload at %.0f s: %s, generation %s", now - t0, status, generation)
                next_reload += args.reload_every
            time.sleep(0.2)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=120)
    wall = time.monotonic() - t0
    total = sum(record.statuses.values())
    server_errors = sum(n for s, n in record.statuses.items() if isinstance(s, int) and s >= 500)
    failures = sum(n for s, n in record.statuses.items() if not isinstance(s, int))
    lat = np.array(record.latencies) * 1000.0
    print(f"{args.clients} clients, {wall / 60:.1f} min against {url}: {total} requests ({total / wall:.1f}/s), "
          f"statuses {dict(record.statuses)}")
    print(f"  5xx {server_errors}, failures (no answer) {failures}")
    if len(lat):
        print(f"  200 latency ms: p50 {np.percentile(lat, 50):.0f}, p90 {np.percentile(lat, 90):.0f}, "
              f"p99 {np.percentile(lat, 99):.0f}, max {lat.max():.0f}")
    print(f"  reloads (s, status, generation): {reloads}")
    if pids:
        print("  server RSS (pids and children):")
        for seconds, size, n, done in rss:
            print(f"    {seconds:6.0f} s  {size / MB:8.1f} MB  {n} processes  {done} requests so far")
    return 0 if server_errors == 0 and failures == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
