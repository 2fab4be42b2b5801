"""deploy/nginx/showroom.conf in front of two real gunicorn workers: slow and idle connections do not
starve a real client, oversize uploads stop at nginx, operator endpoints stay off the public site, and
the app logs the real client's address.

The test runs the repository's own file: ``site_config`` points its three lines marked ``# test:``
(public listen, internal listen, upstream) at free loopback ports, and ``main_config`` wraps it in a
minimal nginx.conf whose pid, logs and temporary folders are in the test's folder. A second loopback
address (127.0.0.2, which Linux routes to ``lo``) plays a client other than the one on 127.0.0.1.
Latencies are logged (``-o log_cli=true --log-cli-level=INFO`` shows them), never asserted.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from benchmarks.reload_load import multipart
from benchmarks.slow_clients import HeldConnections
from engine.index.generations import publish_generation

ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / "deploy" / "nginx" / "showroom.conf"
NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
OTHER_CLIENT = "127.0.0.2"  # a second client address on loopback
TOKEN = "s3cret"
logger = logging.getLogger(__name__)

pytestmark = [pytest.mark.slow, pytest.mark.skipif(NGINX is None, reason="nginx is not installed (apt-get install nginx-light; .ci/run does)")]


def site_config(text: str, public: int, internal: int, upstream: int) -> str:
    """``text`` (deploy/nginx/showroom.conf) with its ``# test:public``, ``# test:internal`` and
    ``# test:upstream`` lines listening on / pointing at these loopback ports; each marker must be
    on exactly one line."""
    directives = {"public": f"listen 127.0.0.1:{public};", "internal": f"listen 127.0.0.1:{internal};",
                  "upstream": f"server 127.0.0.1:{upstream};"}
    for name, directive in directives.items():
        text, n = re.subn(rf"^(\s*)[^#\n]*;(\s*# test:{name}\b)", lambda m: m.group(1) + directive + m.group(2), text, flags=re.M)
        assert n == 1, f"{SITE} must have exactly one line marked '# test:{name}', found {n}"
    return text


def main_config(folder: Path, site: Path) -> str:
    """A minimal nginx.conf including ``site``: in the foreground, one worker, pid, logs and every
    temporary folder in ``folder`` (so no root-owned path is touched); as root, workers stay root so
    that they can write in ``folder``."""
    built = subprocess.run([NGINX, "-V"], capture_output=True, text=True).stderr
    temp = [f"{module}_temp_path {folder / module};" for module in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
            if module == "client_body" or f"--without-http_{module}_module" not in built]
    user = "user root;" if os.geteuid() == 0 else ""
    return "\n".join([
        "daemon off;", "worker_processes 1;", user, f"pid {folder / 'nginx.pid'};", f"error_log {folder / 'error.log'} info;",
        "events { worker_connections 1024; }",
        "http {", "    default_type application/octet-stream;", f"    access_log {folder / 'access.log'};",
        *(f"    {t}" for t in temp), f"    include {site};", "}", ""])


def conf_seconds(name: str) -> float:
    """A ``NAME 10s;`` setting of the public server, in seconds."""
    return float(re.search(rf"^\s*{name}\s+(\d+)s;", SITE.read_text(), re.M).group(1))


def call(port: int, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
         source: str = "127.0.0.1", timeout: float = 15.0) -> tuple[int | str, float, bytes]:
    """One request to 127.0.0.1:``port`` from the address ``source``: (status or error name, ms, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout, source_address=(source, 0))
    t = time.perf_counter()
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        answer = response.read()
        return response.status, 1000.0 * (time.perf_counter() - t), answer
    except OSError as exc:
        return type(exc).__name__, 1000.0 * (time.perf_counter() - t), b""
    finally:
        conn.close()


def still_open(sock: socket.socket) -> bool:
    """Whether the server has neither closed ``sock`` nor answered on it (an answer precedes a close)."""
    sock.setblocking(False)
    try:
        sock.recv(1, socket.MSG_PEEK)  # b"" (closed) or the first byte of an answer
        return False
    except BlockingIOError:
        return True
    except OSError:
        return False


@dataclass(frozen=True)
class Stack:
    """gunicorn behind nginx: the ports, the app's log, its serving folder and a photo to search with."""

    public: int  # nginx, the public site
    internal: int  # nginx, the loopback-only site
    gunicorn: int
    log: Path
    serve: Path
    photo: bytes

    def search(self, source: str = "127.0.0.1", timeout: float = 15.0) -> tuple[int | str, float]:
        """A search through the public site: (status, ms)."""
        body, ctype = multipart(self.photo, {"k": "3"})
        status, ms, _ = call(self.public, "POST", "/api/search", body, {"Content-Type": ctype}, source, timeout)
        return status, ms

    def app_log(self) -> list[dict]:
        """The app's request log lines so far."""
        return [json.loads(x[x.index("{"):]) for x in self.log.read_text().splitlines() if '"route":' in x]

    def access_log(self) -> list[str]:
        """nginx's access log lines so far (it writes each when it has finished a request)."""
        return (self.log.parent / "access.log").read_text().splitlines()


@pytest.fixture(scope="module")
def stack(index_folder: Path, tiny_catalog: Path, tmp_path_factory, copy_of, free_ports, stop_group):
    from engine.data.catalog import load_catalog

    folder = tmp_path_factory.mktemp("nginx")
    serve = folder / "serve"
    publish_generation(serve, copy_of(index_folder))
    public, internal, port = free_ports(3)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SHOWROOM_INDEX": str(serve), "SHOWROOM_RELOAD_TOKEN": TOKEN,
           "SHOWROOM_RATE_LIMIT": "", "SHOWROOM_BIND": f"127.0.0.1:{port}", "SHOWROOM_WORKERS": "2", "SHOWROOM_PROXY_HOPS": "1",
           "PROMETHEUS_MULTIPROC_DIR": str(folder / "prom")}
    env.pop("SHOWROOM_GENERATION_FILE", None)
    site = folder / "showroom.conf"
    site.write_text(site_config(SITE.read_text(), public, internal, port))
    conf = folder / "nginx.conf"
    conf.write_text(main_config(folder, site))
    nginx_args = [NGINX, "-p", str(folder), "-c", str(conf), "-e", str(folder / "error.log")]
    checked = subprocess.run([*nginx_args, "-t"], capture_output=True, text=True)
    assert checked.returncode == 0, f"nginx -t refuses {SITE}:\n{checked.stderr}"
    log = open(folder / "gunicorn.log", "w")
    app = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", str(ROOT / "serving" / "gunicorn_conf.py"), "--threads", "4",
                            "serving:create_app()"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    proxy = subprocess.Popen(nginx_args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline, pids = time.monotonic() + 240, set()
        while time.monotonic() < deadline and len(pids) < 2:  # both workers up (asked directly: nginx keeps its connection to one)
            assert app.poll() is None, (folder / "gunicorn.log").read_text()[-3000:]
            assert proxy.poll() is None, (folder / "error.log").read_text()[-3000:]
            status, _, body = call(port, "GET", "/healthz", timeout=5)
            if status == 200:
                pids.add(json.loads(body)["pid"])
            else:
                time.sleep(0.5)
        assert len(pids) == 2, "two workers did not come up"
        assert call(public, "GET", "/healthz")[0] == 200 and call(internal, "GET", "/healthz")[0] == 200, "nginx does not pass requests on"
        got = Stack(public, internal, port, folder / "gunicorn.log", serve, load_catalog(tiny_catalog).scenes[0].image.read_bytes())
        warm = [got.search() for _ in range(6)]  # each worker's first search builds its model's graph
        logger.info("searches through nginx, warming up: %s", [(s, round(ms)) for s, ms in warm])
        yield got
    finally:
        stop_group(proxy, timeout=10)
        stop_group(app, timeout=60)
        log.close()


def test_the_config_sheds_slow_clients_and_renders_for_the_test():
    text = SITE.read_text()
    for setting in ("client_header_timeout", "client_body_timeout", "send_timeout", "keepalive_timeout"):
        assert conf_seconds(setting) <= 15, setting
    assert re.search(r"^\s*client_max_body_size 10m;", text, re.M) and re.search(r"^\s*proxy_request_buffering on;", text, re.M)
    assert re.search(r"^\s*proxy_read_timeout 120s;", text, re.M)
    rendered = site_config(text, 1, 2, 3)
    assert "listen 127.0.0.1:1;" in rendered and "listen 127.0.0.1:2;" in rendered and "server 127.0.0.1:3;" in rendered
    assert not re.search(r"^\s*(listen 80|server 127\.0\.0\.1:8000);", rendered, re.M)  # the production lines are replaced


@pytest.mark.parametrize("attack", ["slowloris", "idle"])
def test_slow_and_idle_connections_do_not_starve_a_client(stack: Stack, attack: str, record_property):
    n, drip = (9, 1.0) if attack == "slowloris" else (200, None)
    baseline = [stack.search()[1] for _ in range(3)]
    with HeldConnections(("127.0.0.1", stack.public), n, drip=drip, reopen=False) as held:
        time.sleep(2.0)  # slowloris: two bytes of each header sent
        during = []
        for _ in range(3):
            status, ms = stack.search(timeout=15.0)
            assert status == 200, f"a search during the {attack} attack: {status} after {ms:.0f} ms"
            assert held.open == n and held.shed == 0, "the search was answered only after the attack's connections were closed"
            during.append(ms)
        logger.info("%s: %d connections held; a search through nginx took %s ms (before the attack: %s ms)", attack, n,
                    [round(x) for x in during], [round(x) for x in baseline])
        record_property(f"{attack}_search_ms", during)
        record_property("baseline_search_ms", baseline)
        # and nginx sheds them itself (client_header_timeout), long before the attacker would stop
        patience = time.monotonic() + conf_seconds("client_header_timeout") + 20
        while held.open and time.monotonic() < patience:
            time.sleep(0.5)
        assert held.shed == n, f"nginx closed {held.shed} of the {n} {attack} connections"
    logger.info("%s: nginx closed them after %.1f-%.1f s", attack, min(held.lifetimes), max(held.lifetimes))


def test_stalled_uploads_are_buffered_and_limited_per_address(stack: Stack):
    """Uploads that stop half-way hold no gunicorn thread, since nginx reads a body whole before it
    passes the request on: beside three times as many of them as gunicorn has threads (2 x 4; from
    three addresses, as ``limit_conn`` allows one address only so many API requests at a time, 429
    beyond), another client's search is answered."""
    limit = int(re.search(r"limit_conn showroom_addr (\d+);", SITE.read_text()).group(1))
    length = 1_000_000
    head = (f"POST /api/search HTTP/1.1\r\nHost: localhost\r\nContent-Type: multipart/form-data; boundary=x\r\n"
            f"Content-Length: {length}\r\n\r\n").encode() + b"x" * (length // 2)
    stalled = []
    try:
        for source in ("127.0.0.1", "127.0.0.3", "127.0.0.4"):
            for _ in range(limit):
                s = socket.create_connection(("127.0.0.1", stack.public), timeout=10, source_address=(source, 0))
                s.sendall(head)
                stalled.append(s)
        time.sleep(1.0)  # nginx has read every header (the limit counts requests, once their header is in)
        status, _, _ = call(stack.public, "POST", "/api/search", b"x" * 100, {"Content-Type": "multipart/form-data; boundary=x"})
        assert status == 429, f"API request {limit + 1} from one address at a time: {status}"
        status, ms = stack.search(source=OTHER_CLIENT)
        assert status == 200, f"another client's search beside {len(stalled)} stalled uploads: {status} after {ms:.0f} ms"
        assert all(still_open(s) for s in stalled), "the search was answered only after the stalled uploads were closed"
        logger.info("a search beside %d stalled uploads took %.0f ms", len(stalled), ms)
    finally:
        for s in stalled:
            s.close()
    # nginx has let go of them (its access log has their lines); gunicorn never had them
    others = ("127.0.0.3", "127.0.0.4")
    patience = time.monotonic() + 30
    while time.monotonic() < patience and sum(line.split(" ", 1)[0] in others for line in stack.access_log()) < 2 * limit:
        time.sleep(0.2)
    assert sum(line.split(" ", 1)[0] in others for line in stack.access_log()) == 2 * limit
    assert not [x for x in stack.app_log() if x["client"] in others], "gunicorn was handed uploads nginx had not read whole"


def test_an_oversize_upload_stops_at_nginx(stack: Stack):
    big, ctype = multipart(b"\xff" * (10 * 1024 * 1024 + 512 * 1024), {"k": "3"})
    status, _, answer = call(stack.public, "POST", "/api/search", big, {"Content-Type": ctype}, timeout=60)
    assert status == 413 and "upload too large" in json.loads(answer)["error"]
    assert not [x for x in stack.app_log() if x["status"] == 413], "the app saw the oversize upload"
    # just under the limit: passed on whole, and the app (not nginx) answers: these bytes are no image
    under, ctype = multipart(b"\xff" * (9 * 1024 * 1024), {"k": "3"})
    status, _, answer = call(stack.public, "POST", "/api/search", under, {"Content-Type": ctype}, timeout=60)
    assert isinstance(status, int) and 400 <= status < 500 and status != 413 and "error" in json.loads(answer), (status, answer[:300])
    assert any(x["route"] == "/api/search" and x["status"] == status for x in stack.app_log())


def test_operator_endpoints_only_on_the_loopback_site(stack: Stack, copy_of, index_folder: Path):
    for path in ("/metrics", "//metrics", "/%6Detrics", "/metrics?x=1"):
        status, _, body = call(stack.public, "GET", path)
        assert status == 404 and b"showroom_requests_total" not in body, path
    for path in ("/api/reload", "/api/catalog", "//api/catalog"):
        status, _, body = call(stack.public, "POST", path, b"", {"X-Reload-Token": TOKEN})
        assert status == 404 and b"generation" not in body and b"operators" in body, path
    status, _, body = call(stack.internal, "GET", "/metrics")
    assert status == 200 and b"showroom_requests_total" in body
    assert call(stack.internal, "GET", "/metrics", source=OTHER_CLIENT)[0] == 403  # loopback site: 127.0.0.1 only
    publish_generation(stack.serve, copy_of(index_folder))
    status, _, body = call(stack.internal, "POST", "/api/reload", b"", {"X-Reload-Token": TOKEN}, timeout=120)
    assert status == 200 and json.loads(body)["generation"] == 2, body[:300]
    assert not [x for x in stack.app_log() if x["route"] in ("/api/reload", "/api/catalog") and x["status"] != 200]  # the public ones never reached it


def test_the_app_logs_the_real_client_address(stack: Stack):
    # a client on 127.0.0.2 that claims to be 203.0.113.9: nginx appends the address it saw, the app takes that one
    status, _, _ = call(stack.public, "GET", "/api/types", headers={"X-Forwarded-For": "203.0.113.9"}, source=OTHER_CLIENT)
    assert status == 200
    lines = [x for x in stack.app_log() if x["route"] == "/api/types"]
    assert lines and lines[-1]["client"] == OTHER_CLIENT, lines[-1:]  # not nginx's 127.0.0.1, not the forged one
    assert "queue" in lines[-1]["stages_ms"]  # X-Request-Start reached it
    assert all(x["client"] != "203.0.113.9" for x in stack.app_log())
