"""gunicorn settings for Showroom: ``gunicorn -c serving/gunicorn_conf.py "serving:create_app()"``.

Binds to loopback: put a reverse proxy with TLS in front (docs/serving.md "Running in production").
Environment: ``SHOWROOM_BIND`` (default 127.0.0.1:8000), ``SHOWROOM_WORKERS`` (2),
``PROMETHEUS_MULTIPROC_DIR`` (when set, emptied at start so /metrics sums this server's workers).
The app is not preloaded: each worker loads TensorFlow after the fork, and the workers agree on
the served index generation through ``serving.state.SharedGeneration``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

bind = os.environ.get("SHOWROOM_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("SHOWROOM_WORKERS", "2"))
timeout = 120  # the first request of a worker may load a new index generation
graceful_timeout = 30
preload_app = False
# the largest request line and header gunicorn lets through to the app (which answers JSON);
# beyond these gunicorn itself answers a plain-text 400 / 431
limit_request_line = 8190
limit_request_field_size = 16384


def on_starting(server) -> None:
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder:  # counters of a previous run would be summed in
        shutil.rmtree(folder, ignore_errors=True)
        Path(folder).mkdir(parents=True, exist_ok=True)


def child_exit(server, worker) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
