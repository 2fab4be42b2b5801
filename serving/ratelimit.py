"""Rate-limit counters shared by the worker processes of one server, in a SQLite file (no extra server).

``SharedWindowStorage`` is a ``limits`` storage for the fixed-window strategy (the only one it
implements; ``serving.observability`` asks Flask-Limiter for it explicitly), registered as the URI
scheme ``showroom-sqlite`` (``showroom-sqlite:///absolute/path/ratelimits.sqlite``).

Stored: one table ``windows(key, count, expires)``: per rate-limit key (``limits`` makes it from
the limit, the client address and the scope) the hits counted in its current window and the
epoch second that window ends; the window starts at its first hit, as with ``memory://``.
A hit is one upsert inside ``BEGIN IMMEDIATE`` (SQLite's single write lock, waited for up to
``timeout`` seconds), so no increment is lost whichever process or thread makes it. Rows of
ended windows are deleted at most every ``purge_every`` seconds by whichever process hits then,
so the table holds about one row per (client, limit) seen in the last window. WAL mode: reads
(the ``X-RateLimit-*`` headers) do not wait for writes; ``synchronous=NORMAL``: no fsync per
hit (a counter lost to a power cut only lets a client in early).

``default_storage_uri()``: under gunicorn one such file per server, beside the index
generation record (``serving.state.server_file``); else ``memory://``.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path

from limits.errors import ConfigurationError
from limits.storage import Storage

logger = logging.getLogger(__name__)

SCHEME = "showroom-sqlite"
STRATEGY = "fixed-window"  # the one strategy SharedWindowStorage implements (Flask-Limiter's default too)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS windows (key TEXT PRIMARY KEY, count INTEGER NOT NULL, expires REAL NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS windows_expires ON windows (expires);
"""
# the window that has ended restarts at this hit; all SET expressions read the row as it was
_HIT = """
INSERT INTO windows (key, count, expires) VALUES (:key, :amount, :end)
ON CONFLICT (key) DO UPDATE SET
    count = CASE WHEN expires <= :now THEN :amount ELSE count + :amount END,
    expires = CASE WHEN expires <= :now THEN :end ELSE expires END
RETURNING count
"""


def default_storage_uri() -> str:
    """Where rate-limit counters live when ``SHOWROOM_RATE_LIMIT_STORAGE`` is not set: under
    gunicorn a ``showroom-sqlite`` file of this server's own (its master's pid and start time), in
    the same ``<temp>/showroom-<uid>`` folder as the generation record, so a limit counts every
    worker's requests; else ``memory://`` (``flask run``, the tests' client: one process)."""
    from serving.state import server_file  # here: serving.state loads TensorFlow, the storage alone needs none

    path = server_file("ratelimits", ".sqlite")
    return "memory://" if path is None else f"{SCHEME}://{urllib.parse.quote(str(path))}"


class SharedWindowStorage(Storage):
    """Fixed-window counters in a SQLite file that every process opening the same path shares.

    uri: ``showroom-sqlite://`` + the file's path (percent-encoded; ``///abs`` or ``//./relative``);
        its folder is created (mode 0700) if missing.
    timeout: seconds a hit waits for another process's write before raising (``sqlite3.OperationalError``).
    purge_every: seconds between deletions of ended windows (per process).
    clock: epoch seconds now (tests pass a fake one).
    """

    STORAGE_SCHEME = [SCHEME]

    def __init__(self, uri: str, wrap_exceptions: bool = False, timeout: float = 5.0, purge_every: float = 60.0,
                 clock: Callable[[], float] = time.time, **options: float | str | bool) -> None:
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)
        parsed = urllib.parse.urlparse(uri)
        path = urllib.parse.unquote(parsed.netloc + parsed.path)
        if parsed.scheme != SCHEME or not path:
            raise ConfigurationError(f"{uri!r}: name the rate-limit file as {SCHEME}:///absolute/path/ratelimits.sqlite")
        self.path = Path(path)
        self._timeout, self._purge_every, self._clock = float(timeout), float(purge_every), clock
        self._next_purge = 0.0  # the first hit of this process purges what a previous run left
        self._local = threading.local()  # one connection per thread (sqlite3's rule) and per process (not across a fork)
        self._create()

    def _create(self) -> None:
        """The table and WAL mode, set up once by whichever process comes first (under ``flock``:
        switching to WAL is not reliably retried by SQLite's busy handler)."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                db = sqlite3.connect(self.path, timeout=self._timeout, isolation_level=None)
                try:
                    db.execute("PRAGMA journal_mode=WAL")
                    db.executescript(_SCHEMA)
                finally:
                    db.close()
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _db(self) -> sqlite3.Connection:
        local = self._local
        if getattr(local, "pid", None) != os.getpid():
            db = sqlite3.connect(self.path, timeout=self._timeout, isolation_level=None)  # autocommit; transactions by hand
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA journal_size_limit=1048576")  # the WAL file is cut back to 1 MB after a checkpoint
            local.db, local.pid = db, os.getpid()
        return local.db

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return sqlite3.Error

    def incr(self, key: str, expiry: float, amount: int = 1) -> int:
        """Count ``amount`` hits on ``key``; a new window of ``expiry`` seconds starts when there is
        none or it has ended. Returns the window's count including these hits."""
        now = self._clock()
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            (count,), = db.execute(_HIT, {"key": key, "amount": amount, "now": now, "end": now + expiry}).fetchall()
            if now >= self._next_purge:
                self._next_purge = now + self._purge_every
                removed = db.execute("DELETE FROM windows WHERE expires <= ?", (now,)).rowcount
                if removed:
                    logger.debug("%s: purged %d ended rate-limit windows", self.path, removed)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return int(count)

    def get(self, key: str) -> int:
        """Hits counted in ``key``'s current window (0 when it has ended or never started)."""
        row = self._db().execute("SELECT count FROM windows WHERE key = ? AND expires > ?", (key, self._clock())).fetchone()
        return int(row[0]) if row else 0

    def get_expiry(self, key: str) -> float:
        """Epoch seconds when ``key``'s current window ends (now when there is none)."""
        now = self._clock()
        row = self._db().execute("SELECT expires FROM windows WHERE key = ? AND expires > ?", (key, now)).fetchone()
        return float(row[0]) if row else now

    def check(self) -> bool:
        """Whether the file answers a query."""
        try:
            self._db().execute("SELECT 1 FROM windows LIMIT 1").fetchall()
            return True
        except sqlite3.Error:
            return False

    def reset(self) -> int | None:
        """Delete every window; returns how many there were."""
        return self._db().execute("DELETE FROM windows").rowcount

    def clear(self, key: str) -> None:
        """End ``key``'s window: its next hit starts a new one."""
        self._db().execute("DELETE FROM windows WHERE key = ?", (key,))
