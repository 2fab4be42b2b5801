"""The memory of a server's processes, read from ``/proc``: summed VmRSS of a process tree, sampled in a thread."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path


def _children(pid: int) -> list[int]:
    out = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            out += [int(c) for c in children.read_text().split()]
        except OSError:
            pass
    return out


def process_tree(pids: Iterable[int]) -> list[int]:
    """``pids`` and all their descendants that are alive now."""
    seen: list[int] = []
    todo = list(pids)
    while todo:
        pid = todo.pop()
        if pid in seen or not Path(f"/proc/{pid}").exists():
            continue
        seen.append(pid)
        todo += _children(pid)
    return seen


def vm_rss(pid: int) -> int:
    """Resident set size of ``pid`` in bytes (``VmRSS`` of ``/proc/<pid>/status``; 0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def tree_rss(pids: Sequence[int]) -> int:
    """Summed VmRSS in bytes of ``pids`` and all their child processes."""
    return sum(vm_rss(p) for p in process_tree(pids))


@dataclass
class RssSampler:
    """Samples ``tree_rss(pids)`` every ``interval`` seconds in a thread between ``start`` and ``stop``."""

    pids: Sequence[int]
    interval: float = 0.02
    peak: int = 0
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _run(self) -> None:
        while True:
            self.peak = max(self.peak, tree_rss(self.pids))
            self.samples += 1
            if self._stop.wait(self.interval):
                return

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> int:
        """Stop sampling (after one last sample) and return the peak in bytes."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak = max(self.peak, tree_rss(self.pids))
        return self.peak


@dataclass(frozen=True)
class Memory:
    """Summed server RSS in bytes: before the bomb cases, and the peak while they ran."""

    pids: tuple[int, ...]
    idle: int
    peak: int
    samples: int
