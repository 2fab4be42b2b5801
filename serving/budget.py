"""The memory a worker's threads may spend on decoded uploads at once (``DecodeBudget``).

The pixel limit bounds one upload; this bounds them together. Each request reserves what its image
costs to decode (``ImageHeader.decode_cost``, known from the header) before decoding, and keeps it
until its answer is made (the decoded photo lives that long). A request that does not fit waits,
at most ``wait`` seconds, for others to finish, then gets a 503 with ``Retry-After``. One request
is never refused for its own size alone: a cost over the whole budget is counted as the whole
budget, so a photo under the pixel limit always gets decoded once the worker is free.
"""

from __future__ import annotations

import threading
import time


class BudgetBusy(Exception):
    """The budget stayed full for the whole wait; nothing was decoded."""


class DecodeBudget:
    """Bytes of decoded images in flight in one process, shared by its threads.

    total: bytes all in-flight decodes may hold together; wait: seconds a request may wait for room.
    """

    def __init__(self, total: int, wait: float = 10.0) -> None:
        if total < 1:
            raise ValueError(f"a decode budget must be positive, got {total} bytes")
        self.total, self.wait = int(total), float(wait)
        self._used = 0
        self._peak = 0
        self._room = threading.Condition()

    @property
    def used(self) -> int:
        """Bytes reserved now."""
        return self._used

    @property
    def peak(self) -> int:
        """The most bytes ever reserved at once."""
        return self._peak

    def reserve(self, cost: int) -> int:
        """Reserve ``cost`` bytes (at most ``total``), waiting for room; the bytes reserved, to give
        back with ``release``. ``BudgetBusy`` when no room came within ``wait`` seconds."""
        need = max(0, min(int(cost), self.total))
        deadline = time.monotonic() + self.wait
        with self._room:
            while self._used + need > self.total:
                left = deadline - time.monotonic()
                if left <= 0 or not self._room.wait(left):
                    if self._used + need > self.total:
                        raise BudgetBusy(f"{self._used / 2 ** 20:.0f} MB of the {self.total / 2 ** 20:.0f} MB decode budget are in use")
            self._used += need
            self._peak = max(self._peak, self._used)
        return need

    def release(self, reserved: int) -> None:
        """Give back what ``reserve`` returned."""
        with self._room:
            self._used = max(0, self._used - reserved)
            self._room.notify_all()
