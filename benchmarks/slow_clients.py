"""Slow and idle connections against a live server: a concurrent client's search latency beside them.

    python -m benchmarks.slow_clients --url http://127.0.0.1:8000 --image photo.jpg \
        [--slow 9] [--idle 200] [--seconds 20] [--clients 1] [--timeout 15]

Three phases of ``--seconds`` each, one after the other, while ``--clients`` threads post the photo
to ``/api/search`` without pause, each search with a ``--timeout`` s client timeout:

1. ``baseline``: nothing else;
2. ``slowloris``: ``--slow`` connections each send a request header one byte every ``--drip`` s
   (1 s) and never finish it;
3. ``idle``: ``--idle`` connections opened and held, sending nothing.

An attack connection the server closes is counted (``shed``) and opened again, as an attacker
would. Between phases the attack's connections are closed and the server gets ``--settle`` s.
Latencies are over every search a client started: a failure (a status other than 200, or the
client's timeout) counts with the time it took, so p50 and max say how long a real client waited.
One table is printed: searches answered per second (``ok/s``), p50 and max, and p50 and max as
ratios to the baseline's p50, measured in this run.
Loopback or remote servers alike; asserts nothing; exit code 1 when a search failed.
"""

from __future__ import annotations

import argparse
import logging
import math
import select
import socket
import threading
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.reload_load import multipart, request

logger = logging.getLogger("benchmarks.slow_clients")

# A request header that never ends: this prefix, then ``X-Padding: aaaa…`` one byte at a time.
SLOW_HEADER = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nUser-Agent: slow-clients-benchmark\r\nX-Padding: "


class HeldConnections:
    """``n`` TCP connections to ``address`` held open by one background thread: idle (``drip=None``:
    nothing is sent) or slowloris (``SLOW_HEADER``, then padding, one byte every ``drip`` s; the
    header never ends). A connection the server closes is counted in ``shed`` (with the seconds it
    lasted in ``lifetimes``) and, with ``reopen``, replaced by a new one.

    Use as a context manager: entering opens every connection (raising ``OSError`` if one cannot
    be opened), leaving closes them all.
    """

    def __init__(self, address: tuple[str, int], n: int, drip: float | None = None, reopen: bool = True) -> None:
        self.address, self.n, self.drip, self.reopen = address, n, drip, reopen
        self.shed = 0
        self.lifetimes: list[float] = []
        self._socks: dict[socket.socket, list[float]] = {}  # socket -> [opened at, last byte sent at, bytes sent]
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="held-connections", daemon=True)

    @property
    def open(self) -> int:
        """Connections open right now (the server has not closed them)."""
        with self._lock:
            return len(self._socks)

    def _connect(self) -> None:
        s = socket.create_connection(self.address, timeout=10)
        s.setblocking(False)
        now = time.monotonic()
        with self._lock:
            self._socks[s] = [now, now - (self.drip or 0.0), 0]

    def __enter__(self) -> HeldConnections:
        try:
            for _ in range(self.n):
                self._connect()
        except OSError:
            self._close_all()
            raise
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        self._close_all()

    def _close_all(self) -> None:
        with self._lock:
            socks, self._socks = list(self._socks), {}
        for s in socks:
            s.close()

    def _lost(self, s: socket.socket) -> None:
        """The server closed ``s`` (or answered it, which it does only to close it)."""
        with self._lock:
            state = self._socks.pop(s, None)
            if state is None:  # already counted
                return
            self.shed += 1
            self.lifetimes.append(time.monotonic() - state[0])
        s.close()
        if self.reopen and not self._stop.is_set():
            try:
                self._connect()
            except OSError as exc:
                logger.warning("could not reopen an attack connection: %s", exc)

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                socks = {s.fileno(): s for s in self._socks}
            poller = select.poll()  # not select.select: a busy process may hand out descriptors past 1024
            for fd in socks:
                poller.register(fd, select.POLLIN)
            readable = [socks[fd] for fd, _ in poller.poll(200)] if socks else []
            if not socks:
                self._stop.wait(0.2)
            for s in readable:
                try:
                    data = s.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data or self.drip is not None:  # an answer to a header never finished is an error page before closing
                    self._lost(s)
            if self.drip is None:
                continue
            now = time.monotonic()
            with self._lock:
                due = [(s, st) for s, st in self._socks.items() if now - st[1] >= self.drip]
            for s, st in due:
                sent = int(st[2])
                byte = SLOW_HEADER[sent:sent + 1] or b"a"
                try:
                    s.send(byte)
                except BlockingIOError:
                    continue
                except OSError:
                    self._lost(s)
                    continue
                st[1], st[2] = now, sent + 1


@dataclass
class Searches:
    """What the concurrent clients saw: each search's milliseconds and status (200 or the failure)."""

    ms: list[float] = field(default_factory=list)
    statuses: list[int | str] = field(default_factory=list)
    seconds: float = 0.0  # wall time, from the first search started to the last answered
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def failures(self) -> int:
        return sum(1 for s in self.statuses if s != 200)

    def quantile(self, q: float) -> float:
        """The ``q`` quantile (0-1, nearest rank) of every search's ms, failures included; nan if none."""
        ordered = sorted(self.ms)
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))] if ordered else float("nan")


def search_once(url: str, body: bytes, ctype: str, timeout: float) -> tuple[int | str, float]:
    """One ``POST /api/search``: (status or error name, milliseconds to the answer or the failure)."""
    t = time.perf_counter()
    status, _, _ = request(url + "/api/search", body, {"Content-Type": ctype}, timeout=timeout)
    return status, 1000.0 * (time.perf_counter() - t)


def search_for(url: str, image: bytes, seconds: float, clients: int, timeout: float) -> Searches:
    """``clients`` threads searching with ``image`` without pause until ``seconds`` have passed (a
    search started before then is waited for, up to its ``timeout``)."""
    got, deadline = Searches(), time.monotonic() + seconds
    body, ctype = multipart(image, {"k": "5"})

    def client() -> None:
        while time.monotonic() < deadline:
            status, ms = search_once(url, body, ctype, timeout)
            with got.lock:
                got.ms.append(ms)
                got.statuses.append(status)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got.seconds = time.perf_counter() - t0
    return got


@dataclass(frozen=True)
class Phase:
    """One row of the table."""

    name: str
    held: int  # attack connections held
    shed: int  # of them, closed by the server (and reopened)
    searches: Searches


def run_phase(name: str, url: str, image: bytes, held: int, drip: float | None, seconds: float, clients: int,
              timeout: float) -> Phase:
    """Search for ``seconds`` while ``held`` attack connections (``drip``: see ``HeldConnections``) are kept open."""
    if not held:
        return Phase(name, 0, 0, search_for(url, image, seconds, clients, timeout))
    parts = urllib.parse.urlsplit(url)
    address = (parts.hostname or "127.0.0.1", parts.port or (443 if parts.scheme == "https" else 80))
    with HeldConnections(address, held, drip=drip) as attack:
        time.sleep(min(2.0, seconds / 4))  # the attack settles in (slowloris: a few bytes sent) before the clients start
        searches = search_for(url, image, seconds, clients, timeout)
        shed = attack.shed
    logger.info("%s: %d searches, %d failed, %d attack connections shed by the server", name, len(searches.ms),
                searches.failures, shed)
    return Phase(name, held, shed, searches)


def table(phases: Sequence[Phase]) -> str:
    """The phases as one text table; ratios are to the first phase's p50."""
    base = phases[0].searches.quantile(0.5)
    lines = [f"{'phase':<10} {'held':>5} {'shed':>5} {'searches':>8} {'failed':>6} {'ok/s':>6} {'p50 ms':>9} {'max ms':>9} "
             f"{'p50/base':>8} {'max/base':>8}"]
    for ph in phases:
        s = ph.searches
        p50, top, ok_per_s = s.quantile(0.5), s.quantile(1.0), (len(s.ms) - s.failures) / s.seconds if s.seconds else 0.0
        lines.append(f"{ph.name:<10} {ph.held:>5} {ph.shed:>5} {len(s.ms):>8} {s.failures:>6} {ok_per_s:>6.1f} {p50:>9.1f} "
                     f"{top:>9.1f} {p50 / base:>8.2f} {top / base:>8.2f}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.slow_clients", description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True, help="the server (gunicorn itself, or nginx in front of it), e.g. http://127.0.0.1:8000")
    p.add_argument("--image", type=Path, required=True, help="the photo the concurrent clients search with")
    p.add_argument("--slow", type=int, default=9, help="slowloris connections (0: skip that phase)")
    p.add_argument("--idle", type=int, default=200, help="idle connections (0: skip that phase)")
    p.add_argument("--drip", type=float, default=1.0, help="seconds between two header bytes of a slowloris connection")
    p.add_argument("--seconds", type=float, default=20.0, help="length of each phase; longer than --timeout shows a client that gave up")
    p.add_argument("--clients", type=int, default=1, help="concurrent clients searching without pause")
    p.add_argument("--timeout", type=float, default=15.0, help="a client's timeout for one search, in seconds")
    p.add_argument("--settle", type=float, default=3.0, help="seconds between phases, for the server to drop the attack")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    url = args.url.rstrip("/")
    if not args.image.is_file():
        logger.error("no photo at %s", args.image)
        return 2
    if request(url + "/healthz", timeout=10)[0] != 200:
        logger.error("no healthy server at %s", url)
        return 2
    image = args.image.read_bytes()
    search_for(url, image, 1.0, max(2, args.clients), args.timeout)  # warm-up: each worker's first search loads its model
    phases = [run_phase("baseline", url, image, 0, None, args.seconds, args.clients, args.timeout)]
    for name, held, drip in (("slowloris", args.slow, args.drip), ("idle", args.idle, None)):
        if held:
            time.sleep(args.settle)
            phases.append(run_phase(name, url, image, held, drip, args.seconds, args.clients, args.timeout))
    print(f"{url}: {args.clients} client(s) searching, {args.seconds:.0f} s a phase, client timeout {args.timeout:.0f} s")
    print(table(phases))
    return 0 if all(not ph.searches.failures for ph in phases) else 1


if __name__ == "__main__":
    raise SystemExit(main())
