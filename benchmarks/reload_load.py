"""Reload a live server under load: queries served and failed, and which generation answers after.

    python -m benchmarks.reload_load --url http://127.0.0.1:8000 --token T --image photo.jpg \
        [--clients 4] [--seconds 20] [--reloads 3] [--healthz 30] [--workers 2]

``--clients`` threads post the photo to ``/api/search`` without pause for ``--seconds``; meanwhile
``--reloads`` reloads are spread over that time. Every answer that is not a 200 is a failure
(status, or the connection error). After the load, the catch-up waits until every worker that answered
``/healthz`` (the token shows each answer's process id; ``--workers``: until that many have) names the
generation the last reload returned, then ``--healthz`` calls (spread over the server's workers by the
kernel) must all name it. The exit
code is 0 only when no query failed and every health answer is on that generation.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger("benchmarks.reload_load")


@dataclass
class Tally:
    """What the clients saw."""

    served: int = 0
    failures: collections.Counter = field(default_factory=collections.Counter)
    generations: collections.Counter = field(default_factory=collections.Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, status: int | str, generation: str | None) -> None:
        with self.lock:
            if status == 200:
                self.served += 1
                self.generations[generation] += 1
            else:
                self.failures[status] += 1


def multipart(image: bytes, fields: dict[str, str]) -> tuple[bytes, str]:
    """A multipart/form-data body with the photo as ``image`` plus ``fields``; (body, content type)."""
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="photo.jpg"\r\n'
                 f"Content-Type: image/jpeg\r\n\r\n".encode() + image + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def request(url: str, data: bytes | None = None, headers: dict[str, str] | None = None, timeout: float = 120.0) -> tuple[int | str, dict, bytes]:
    """(status or error name, headers, body) of one HTTP request."""
    req = urllib.request.Request(url, data=data, headers=headers or {}, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()
    except OSError as exc:
        return type(exc).__name__, {}, b""


def load(url: str, image: bytes, clients: int, seconds: float, reload: callable) -> tuple[Tally, list[dict]]:
    """Run ``clients`` search loops for ``seconds`` while ``reload()`` runs at its own pace; the tally and the reloads' answers."""
    tally, stop = Tally(), threading.Event()
    body, ctype = multipart(image, {"k": "5"})

    def client() -> None:
        while not stop.is_set():
            status, headers, _ = request(url + "/api/search", body, {"Content-Type": ctype})
            tally.add(status, headers.get("X-Showroom-Generation"))

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    try:
        answers = reload(seconds)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=300)
    return tally, answers


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.reload_load", description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True, help="the server, e.g. http://127.0.0.1:8000")
    p.add_argument("--token", required=True, help="its SHOWROOM_RELOAD_TOKEN")
    p.add_argument("--image", type=Path, required=True, help="the photo the clients search with")
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--seconds", type=float, default=20.0, help="length of the load")
    p.add_argument("--reloads", type=int, default=3, help="reloads spread over the load")
    p.add_argument("--healthz", type=int, default=30, help="health calls after the load")
    p.add_argument("--workers", type=int, default=0, help="the server's worker processes: the catch-up waits until health "
                                                          "answers have come from this many (by process id; 0: unknown)")
    p.add_argument("--catch-up", type=float, default=60.0, help="seconds to wait, after the load, for every worker to answer "
                                                                "from the last generation (they load it in the background)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    url = args.url.rstrip("/")
    if not args.image.is_file():
        logger.error("no photo at %s", args.image)
        return 2

    def reloads(seconds: float) -> list[dict]:
        answers = []
        for i in range(args.reloads):
            time.sleep(seconds / (args.reloads + 1))
            status, _, body = request(url + "/api/reload", b"", {"X-Reload-Token": args.token})
            answers.append({**(json.loads(body) if status == 200 else {"body": body[:200].decode(errors="replace")}), "http": status})
            logger.info("reload %d: %s", i + 1, answers[-1])
        time.sleep(seconds / (args.reloads + 1))
        return answers

    t0 = time.perf_counter()
    tally, answers = load(url, args.image.read_bytes(), args.clients, args.seconds, reloads)
    wall = time.perf_counter() - t0
    final = answers[-1].get("generation") if answers and answers[-1]["http"] == 200 else None
    # the other workers load the new generation in the background (answering from the old one meanwhile):
    # the time until every worker answers from it is the catch-up
    # (health calls carry the token, so each answer names its worker's process id: ten answers in a row
    # can all come from one worker, and the catch-up waits for the latest answer of every worker seen)
    caught_up = None
    latest: dict[object, object] = {}  # process id -> the generation of its latest health answer
    t1 = time.perf_counter()
    while final is not None and time.perf_counter() - t1 < args.catch_up:
        window = [request(url + "/healthz", headers={"X-Reload-Token": args.token}) for _ in range(10)]
        for s, _, b in window:
            if s == 200:  # (a failed call names no worker: the window's own check counts it)
                answer = json.loads(b)
                latest[answer.get("pid")] = answer.get("generation")
        if (all(s == 200 for s, _, _ in window) and len(latest) >= args.workers
                and all(g == final for g in latest.values())):
            caught_up = time.perf_counter() - t1
            break
        time.sleep(0.1)
    health = collections.Counter()
    for _ in range(args.healthz):
        status, _, body = request(url + "/healthz", headers={"X-Reload-Token": args.token})
        answer = json.loads(body) if status == 200 else {}
        health[answer.get("generation") if status == 200 else f"status {status}"] += 1
        if status == 200:
            latest[answer.get("pid")] = answer.get("generation")
    print(f"every worker answered from generation {final} {f'{caught_up:.1f} s' if caught_up is not None else 'NOT'} "
          f"after the load ended (up to {args.catch_up:g} s waited; {len(latest)} worker processes answered)")
    ok = not tally.failures and all(a["http"] == 200 for a in answers) and final is not None and set(health) == {final}
    print(f"{args.clients} clients, {wall:.1f} s, {len(answers)} reloads (statuses {[a['http'] for a in answers]}, "
          f"last generation {final})")
    print(f"queries served: {tally.served} ({tally.served / wall:.1f}/s), failed: {sum(tally.failures.values())} {dict(tally.failures)}")
    print(f"answers by generation during the load: {dict(sorted(tally.generations.items(), key=lambda kv: str(kv[0])))}")
    print(f"/healthz after the load, by generation: {dict(health)} -> {'all on the new generation' if ok else 'NOT all on it'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
