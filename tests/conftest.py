"""Shared fixtures: offline runtime, an isolated state folder and MLflow store, tiny real catalogs,
the ../shared data (skipping cleanly without it), one trained run shared by the CLI tests, and a
throwaway team tracking server (PostgreSQL + ``mlflow server``) for the test that needs one.

Tiers: ``python -m pytest`` runs the fast tier; ``python -m pytest -m slow`` the end-to-end CLIs,
real YOLO, the browser, the stack-import subprocesses and the big backbones (pytest.ini).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

_SESSION_HOME = Path(tempfile.mkdtemp(prefix="showroom-tests-"))
os.environ["SHOWROOM_HOME"] = str(_SESSION_HOME / "state")
os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{_SESSION_HOME / 'mlflow.db'}"
os.environ.pop("SHOWROOM_WEIGHTS_DIR", None)  # tests choose weights explicitly
os.environ.pop("SHOWROOM_DETECTOR_WEIGHTS", None)

from engine.runtime import PROJECT_ROOT, configure_runtime  # noqa: E402

configure_runtime(offline=True)

import mlflow  # noqa: E402

from evaluation import holdout  # noqa: E402
from training import fit  # noqa: E402
from training.demo_catalog import DemoSpec, generate_demo_catalog  # noqa: E402
from training.tracking import tracking_uri  # noqa: E402

SHARED = (PROJECT_ROOT.parent / "shared").resolve()
MOBILENET_WEIGHTS = SHARED / "weights" / "mobilenet_v2_0.35_224_imagenet_no_top.weights.h5"
YOLO_TFLITE = SHARED / "weights" / "yolov8n_coco_int8.tflite"
IKEA = SHARED / "data" / "ikea"

TINY_FIT = ["--image-size", "48", "--embedding-dim", "16", "--batch-size", "8", "--in-class-negatives", "2",
            "--out-class-negatives", "1", "--val-fraction", "0.25", "--queries-per-epoch", "0"]


def _needs(path: Path, what: str) -> Path:
    if not path.exists():
        pytest.skip(f"needs {what} at {path} (the ../shared folder beside the project); absent here")
    return path


@pytest.fixture(scope="session")
def tiny_catalog() -> Path:
    """A small generated demo catalog (18 products, 16 scenes, boxes known)."""
    return generate_demo_catalog(_SESSION_HOME / "tiny_catalog", DemoSpec(products_per_category=3, scenes=16, iconic_size=64, seed=3))


@pytest.fixture()
def mobilenet_weights() -> Path:
    """The shared ImageNet MobileNetV2(alpha=0.35) weights; skips when ../shared is absent."""
    return _needs(MOBILENET_WEIGHTS, "the MobileNetV2 ImageNet weights")


@pytest.fixture(scope="session")
def yolo_weights() -> Path:
    """The shared YOLOv8n COCO int8 TFLite detector; skips when ../shared is absent."""
    return _needs(YOLO_TFLITE, "the YOLOv8n TFLite detector")


@pytest.fixture(scope="session")
def ikea_catalog() -> Path:
    """The real IKEA dev catalog; skips when ../shared is absent."""
    return _needs(IKEA / "products.csv", "the IKEA catalog").parent


@pytest.fixture(scope="session")
def tiny_fit() -> list[str]:
    """``training.fit`` flags of the smallest real model and run: 48 px, D = 16, a few triplets per step."""
    return list(TINY_FIT)


@pytest.fixture(scope="session")
def last_run() -> Callable[[], object]:
    """A function returning the most recently started MLflow run of the test store."""
    def latest() -> mlflow.entities.Run:
        client = mlflow.MlflowClient(tracking_uri=tracking_uri())
        exp = client.get_experiment_by_name("showroom")
        return client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"], max_results=1)[0]

    return latest


@dataclass(frozen=True)
class TrainedRun:
    """One ``training.fit`` run on the tiny catalog, shared by the fit, evaluate, promote and serve tests."""

    run_id: str
    holdout: Path  # its held-out scene list
    out: Path  # the --out copy of its embedder
    stdout: str


@pytest.fixture(scope="session")
def trained_run(tiny_catalog: Path, tmp_path_factory, last_run) -> TrainedRun:
    """Two epochs with a held-out scene list, the serving indexes built, the embedder copied to --out."""
    folder = tmp_path_factory.mktemp("trained_run")
    held, out = folder / "holdout.txt", folder / "embedder.keras"
    assert holdout.main(["--catalog", str(tiny_catalog), "--fraction", "0.25", "--seed", "0", "--out", str(held)]) == 0
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = fit.main(["--catalog", str(tiny_catalog), "--weights", "none", "--epochs", "2", "--run-name", "t-fit",
                         "--holdout-scenes", str(held), "--out", str(out), *TINY_FIT, "--val-fraction", "0.4"])
    assert code == 0
    return TrainedRun(last_run().info.run_id, held, out, buf.getvalue())


@dataclass(frozen=True)
class TeamServer:
    """A team's MLflow: ``mlflow server`` over a PostgreSQL database, both on loopback ports."""

    uri: str  # the tracking URI, http://127.0.0.1:PORT
    database: str  # its --backend-store-uri, postgresql+psycopg2://showroom@127.0.0.1:PORT/mlflow
    artifacts: Path  # its --artifacts-destination


def _free_ports(n: int) -> list[int]:
    """``n`` distinct loopback ports free right now (held open together so they differ)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _free_port() -> int:
    return _free_ports(1)[0]


def _stop_group(proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """SIGTERM to the process group of ``proc`` (started with ``start_new_session=True``), SIGKILL after ``timeout`` s."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture(scope="session")
def free_ports() -> Callable[[int], list[int]]:
    """A function giving ``n`` free loopback ports, for servers a test starts."""
    return _free_ports


@pytest.fixture(scope="session")
def stop_group() -> Callable[..., None]:
    """A function stopping a subprocess's process group: SIGTERM, then SIGKILL after a timeout."""
    return _stop_group


def _postgres_programs() -> Path | None:
    """The folder of PostgreSQL's server programs: ``initdb``'s on PATH, else Debian's newest
    ``/usr/lib/postgresql/N/bin`` (Debian keeps them off PATH)."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parents[1].name) if p.parents[1].name.isdigit() else 0)
    return debian[-1].parent if debian else None


@contextlib.contextmanager
def _postgres(programs: Path, folder: Path, port: int) -> Iterator[str]:
    """A throwaway PostgreSQL cluster in ``folder`` on 127.0.0.1:``port`` with an empty database
    ``mlflow`` (user ``showroom``, trust auth on loopback); its SQLAlchemy URI. Always stopped after.
    PostgreSQL refuses to run as root: as root, the cluster runs as the ``postgres`` user."""
    as_owner: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            pytest.skip("running as root, PostgreSQL needs another user, and runuser (util-linux) is missing")
        try:
            shutil.chown(folder, "postgres", "postgres")
        except LookupError:
            pytest.skip("running as root and there is no 'postgres' user for PostgreSQL (Debian's postgresql package creates it)")
        folder.parent.chmod(0o711)  # the postgres user reaches its folder through ours
        as_owner = ["runuser", "-u", "postgres", "--"]
    data, log = folder / "data", folder / "postgres.log"

    def run(*command: str) -> None:
        done = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{' '.join(command)} failed: {done.stderr or done.stdout}{log.read_text()[-2000:] if log.exists() else ''}"

    run(*as_owner, str(programs / "initdb"), "-D", str(data), "-U", "showroom", "-A", "trust", "-E", "UTF8", "--no-sync")
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
    try:
        run(*as_owner, str(programs / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60", "start")
        run(str(programs / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "showroom", "mlflow")
        yield f"postgresql+psycopg2://showroom@127.0.0.1:{port}/mlflow"
    finally:
        subprocess.run([*as_owner, str(programs / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], cwd=folder, capture_output=True, timeout=120)


@contextlib.contextmanager
def _mlflow_server(database: str, artifacts: Path, log: Path) -> Iterator[str]:
    """``mlflow server`` (one worker) on a free loopback port, answering /health; its URL. Always stopped after."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # no GenAI job runner (huey): Showroom queues no jobs, and it is slow to stop
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", database, "--artifacts-destination", str(artifacts),
                                 "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                                cwd=artifacts.parent, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180  # it creates MLflow's tables in the empty database first
        while True:
            assert proc.poll() is None, f"mlflow server exited with {proc.returncode}: {log.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(url + "/health", timeout=5) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"mlflow server did not answer /health: {log.read_text()[-3000:]}"
            time.sleep(0.5)
        yield url
    finally:
        _stop_group(proc)


@pytest.fixture()
def team_tracking(monkeypatch) -> Iterator[TeamServer]:
    """A team tracking server (PostgreSQL + ``mlflow server``), set as ``MLFLOW_TRACKING_URI`` for the test;
    both servers are stopped and their folder removed after it, whatever happened. Skips, saying why,
    without PostgreSQL's programs (Debian: apt-get install postgresql; .ci/run installs it) or psycopg2."""
    programs = _postgres_programs()
    if programs is None:
        pytest.skip("no PostgreSQL server programs (initdb, pg_ctl) on this machine (Debian: apt-get install postgresql); .ci/run installs it")
    if importlib.util.find_spec("psycopg2") is None:
        pytest.skip("the PostgreSQL driver psycopg2 is not installed (pip install -r requirements.txt)")
    root = Path(tempfile.mkdtemp(prefix="showroom-team-"))
    (root / "postgres").mkdir()
    (root / "artifacts").mkdir()
    previous = os.environ["MLFLOW_TRACKING_URI"]
    try:
        with _postgres(programs, root / "postgres", _free_port()) as database, \
                _mlflow_server(database, root / "artifacts", root / "mlflow-server.log") as url:
            monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
            yield TeamServer(url, database, root / "artifacts")
    finally:
        mlflow.set_tracking_uri(previous)  # mlflow keeps the last URI set (and writes it to the environment)
        shutil.rmtree(root, ignore_errors=True)
