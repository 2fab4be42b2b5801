"""``python -m serving.hostile``: send every hostile request to a live server and print one table."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

import serving.hostile
from engine.runtime import setup_logging
from serving.hostile.cases import DEFAULT_MAX_PIXELS, DEFAULT_MAX_UPLOAD, build_cases
from serving.hostile.client import Outcome, discover_product_id, run_cases
from serving.hostile.forged import MB
from serving.hostile.memory import Memory

logger = logging.getLogger("serving.hostile")


def report(outcomes: Sequence[Outcome], memory: Memory | None, base_url: str) -> tuple[str, bool]:
    """The table, and whether the run passed (no 5xx, no connection error, every status expected)."""
    json4xx = [o for o in outcomes if o.status is not None and 400 <= o.status < 500 and o.json_error]
    plain4xx = [o for o in outcomes if o.status is not None and 400 <= o.status < 500 and not o.json_error]
    server = [o for o in outcomes if o.status is not None and o.status >= 500]
    failed = [o for o in outcomes if o.status is None]
    unexpected = [o for o in outcomes if not o.expected]
    ok = not server and not failed and not unexpected

    def listing(rows: Sequence[Outcome]) -> list[str]:
        return [f"      {o.case.name:<48} {o.status if o.status is not None else 'no answer'} "
                f"(expected {'|'.join(map(str, sorted(o.case.expect)))}){'  ' + o.detail[:70] if o.status is None else ''}"
                for o in rows]

    JSON_ROW = '4xx with a JSON {"error": "..."} body'  # noqa: N806
    lines = [f"hostile requests: {len(outcomes)} cases against {base_url}",
             f"  {JSON_ROW:<44}{len(json4xx):>6}",
             f"  {'4xx without one':<44}{len(plain4xx):>6}", *listing(plain4xx),
             f"  {'5xx':<44}{len(server):>6}", *listing(server),
             f"  {'connection errors':<44}{len(failed):>6}", *listing(failed),
             f"  {'unexpected status':<44}{len(unexpected):>6}", *listing(unexpected)]
    if memory is None:
        lines.append(f"  {'server memory during bomb cases':<44}{'n/a (no --pids)':>6}")
    else:
        lines += [f"  server RSS, pids {','.join(map(str, memory.pids))} and children ({memory.samples} samples every 20 ms):",
                  f"    {'idle before the bomb cases':<42}{memory.idle / MB:>10.1f} MB",
                  f"    {'peak during the bomb cases':<42}{memory.peak / MB:>10.1f} MB",
                  f"    {'peak - idle':<42}{(memory.peak - memory.idle) / MB:>10.1f} MB"]
    lines.append(f"  {'verdict':<44}{'PASS' if ok else 'FAIL':>6}")
    return "\n".join(lines), ok


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m serving.hostile", description=serving.hostile.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True, help="base URL of the live server, e.g. http://127.0.0.1:8000")
    p.add_argument("--pids", default="", help="comma-separated server process ids; their RSS (children included) is sampled "
                                               "every 20 ms during the decompression-bomb cases")
    p.add_argument("--reload-token", default=None, help="the server's reload token, if known: one case sends a prefix of it")
    p.add_argument("--product-id", default=None, help="a real product id (default: the first result of a search with a valid photo)")
    p.add_argument("--max-upload", type=int, default=DEFAULT_MAX_UPLOAD, help="the server's MAX_CONTENT_LENGTH in bytes; "
                                                                              "the oversize cases send 5%% more")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="the server's SHOWROOM_MAX_PIXELS; the "
                                                                              "'just over' bombs declare a few more")
    p.add_argument("--pause", type=float, default=0.0, help="seconds to wait between requests, to stay under a rate limit "
                                                          "(the app's default, 2 per second and 60 per minute on search "
                                                          "and detect, needs 1)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for each answer")
    p.add_argument("--concurrent", type=int, default=1, help="send each decompression-bomb case this many times at once "
                                                             "(the memory of N worst-case uploads in flight)")
    p.add_argument("--verbose", action="store_true", help="log every case")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Send every case to ``--url`` and print the table; 0 only if every answer was an expected 4xx."""
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        pids = [int(p) for p in args.pids.split(",") if p.strip()]
    except ValueError:
        logger.error("--pids must be comma-separated process ids, got %r", args.pids)
        return 2
    if missing := [p for p in pids if not Path(f"/proc/{p}/status").exists()]:
        logger.error("no such process(es): %s", missing)
        return 2
    try:
        product_id = args.product_id or discover_product_id(args.url, args.timeout)
        cases = build_cases(args.max_upload, product_id, args.reload_token, max_pixels=args.max_pixels)
    except (RuntimeError, ValueError) as exc:
        logger.error("%s", exc)
        return 2
    logger.info("%d cases (%d bombs), product id %r, pid(s) %s", len(cases), sum(c.bomb for c in cases), product_id, pids or "none")
    outcomes, memory = run_cases(cases, args.url, pids=pids, pause=args.pause, timeout=args.timeout, concurrent=args.concurrent)
    table, ok = report(outcomes, memory, args.url)
    print(table)
    return 0 if ok else 1

