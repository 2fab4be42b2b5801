"""Sending hostile requests to a live server with ``urllib.request`` (no proxies, no redirects followed)."""

from __future__ import annotations

import json
import logging
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from serving.hostile.cases import Case, image_field
from serving.hostile.forged import query_jpeg
from serving.hostile.memory import Memory, RssSampler, process_tree, tree_rss

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """What the server answered to one case: ``status`` is ``None`` when the request failed to connect."""

    case: Case
    status: int | None
    json_error: bool  # the body is a JSON object with a non-empty "error" string
    detail: str  # the connection error, or the start of the body
    seconds: float

    @property
    def expected(self) -> bool:
        return self.status in self.case.expect


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Report 3xx as they are instead of following them."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def is_json_error(body: bytes) -> bool:
    """True when ``body`` is a JSON object with a non-empty ``"error"`` string."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return False
    return isinstance(doc, dict) and isinstance(doc.get("error"), str) and bool(doc["error"].strip())


def send(case: Case, base_url: str, timeout: float = 60.0, opener: urllib.request.OpenerDirector | None = None) -> Outcome:
    """Send ``case`` to the server at ``base_url`` (no proxies, no redirects followed)."""
    opener = opener or urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect)
    body, headers = case.encode()
    request = urllib.request.Request(base_url.rstrip("/") + case.target, data=body, headers=headers, method=case.method)
    t = time.perf_counter()
    try:
        with opener.open(request, timeout=timeout) as response:
            status, payload = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, payload = exc.code, exc.read()
    except (urllib.error.URLError, OSError, socket.timeout, ConnectionError) as exc:
        reason = getattr(exc, "reason", exc)
        return Outcome(case, None, False, f"{type(reason).__name__}: {reason}", time.perf_counter() - t)
    except Exception as exc:  # http.client.RemoteDisconnected, BadStatusLine ...
        return Outcome(case, None, False, f"{type(exc).__name__}: {exc}", time.perf_counter() - t)
    return Outcome(case, status, 400 <= status < 500 and is_json_error(payload), payload[:160].decode("utf-8", "replace"),
                   time.perf_counter() - t)


def discover_product_id(base_url: str, timeout: float = 60.0) -> str:
    """A real product id: the first result of a search with a valid photo. Raises ``RuntimeError`` if none."""
    case = Case("discover", "POST", "/api/search", frozenset({400}), files=image_field(query_jpeg()), form=(("k", "1"),))
    body, headers = case.encode()
    request = urllib.request.Request(base_url.rstrip("/") + case.target, data=body, headers=headers, method="POST")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect)
    try:
        with opener.open(request, timeout=timeout) as response:
            results = json.loads(response.read())["results"]
        return str(results[0]["product_id"])
    except (urllib.error.URLError, OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise RuntimeError(f"cannot find a product id with a search at {base_url} ({exc}); pass --product-id") from None


def run_cases(cases: Sequence[Case], base_url: str, *, pids: Sequence[int] = (), pause: float = 0.0,
              timeout: float = 60.0, concurrent: int = 1) -> tuple[list[Outcome], Memory | None]:
    """Send every case (bombs last, with memory sampled while they run; each bomb ``concurrent``
    times at once); outcomes in the order of ``cases`` (of a bomb's copies, the first unexpected one)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect)
    outcomes: dict[str, Outcome] = {}

    def send_all(case: Case) -> Outcome:
        if not case.bomb or concurrent <= 1:
            return send(case, base_url, timeout, opener)
        with ThreadPoolExecutor(concurrent) as pool:
            copies = list(pool.map(lambda _: send(case, base_url, timeout, opener), range(concurrent)))
        return next((o for o in copies if not o.expected), copies[0])

    def run(batch: Sequence[Case]) -> None:
        for case in batch:
            outcome = send_all(case)
            outcomes[case.name] = outcome
            logger.debug("%s -> %s in %.2fs", case.name, outcome.status, outcome.seconds)
            if not outcome.expected:
                logger.warning("%s: got %s, expected %s (%s)", case.name, outcome.status, "|".join(map(str, sorted(case.expect))),
                               outcome.detail[:100])
            if pause:
                time.sleep(pause)

    plain, bombs = [c for c in cases if not c.bomb], [c for c in cases if c.bomb]
    logger.info("sending %d cases to %s", len(plain), base_url)
    run(plain)
    memory = None
    if pids:
        idle = tree_rss(pids)
        sampler = RssSampler(pids)
        logger.info("sending %d bomb cases, sampling the RSS of %d process(es) every 20 ms", len(bombs), len(process_tree(pids)))
        sampler.start()
        try:
            run(bombs)
        finally:
            peak = sampler.stop()
        memory = Memory(tuple(pids), idle, peak, sampler.samples)
    else:
        logger.info("sending %d bomb cases (no --pids: memory not sampled)", len(bombs))
        run(bombs)
    return [outcomes[c.name] for c in cases], memory
