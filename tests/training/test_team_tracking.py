"""A team's MLflow: fit, evaluate, promote and serve through ``mlflow server`` over PostgreSQL, both
throwaway servers started by the ``team_tracking`` fixture below."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest

from engine.model.embedder import load_embedder
from evaluation import evaluate, holdout, promote
from serving import create_app
from training import fit
from training.model_ref import resolve_model


@dataclass(frozen=True)
class TeamServer:
    """A team's MLflow: ``mlflow server`` over a PostgreSQL database, both on loopback ports."""

    uri: str  # the tracking URI, http://127.0.0.1:PORT
    database: str  # its --backend-store-uri, postgresql+psycopg2://showroom@127.0.0.1:PORT/mlflow
    artifacts: Path  # its --artifacts-destination


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
def _mlflow_server(database: str, artifacts: Path, log: Path, port: int, stop: Callable[[subprocess.Popen], None]) -> Iterator[str]:
    """``mlflow server`` (one worker) on loopback ``port``, answering /health; its URL. Always stopped after (``stop``)."""
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
        stop(proc)


@pytest.fixture()
def team_tracking(monkeypatch, free_ports, stop_group) -> Iterator[TeamServer]:
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
        postgres_port, mlflow_port = free_ports(2)
        with _postgres(programs, root / "postgres", postgres_port) as database, \
                _mlflow_server(database, root / "artifacts", root / "mlflow-server.log", mlflow_port, stop_group) as url:
            monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
            yield TeamServer(url, database, root / "artifacts")
    finally:
        mlflow.set_tracking_uri(previous)  # mlflow keeps the last URI set (and writes it to the environment)
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_fit_evaluate_promote_and_serve_through_a_team_server(team_tracking, tiny_catalog: Path, tiny_fit: list[str],
                                                              tmp_path: Path, monkeypatch, capsys):
    # the trainer's machine: a fit whose run, metrics and artifacts go to the server
    monkeypatch.setenv("SHOWROOM_HOME", str(tmp_path / "trainer"))
    held = tmp_path / "holdout.txt"
    assert holdout.main(["--catalog", str(tiny_catalog), "--fraction", "0.25", "--seed", "0", "--out", str(held)]) == 0
    assert fit.main(["--catalog", str(tiny_catalog), "--weights", "none", "--epochs", "1", "--run-name", "team-fit",
                     "--holdout-scenes", str(held), "--target-recall", "0", *tiny_fit]) == 0

    client = mlflow.MlflowClient(tracking_uri=team_tracking.uri)
    exp = client.get_experiment_by_name("showroom")
    assert exp.artifact_location.startswith("mlflow-artifacts:")  # artifacts go through the server, not to a local path
    (fit_run,) = client.search_runs([exp.experiment_id], "attributes.run_name = 'team-fit'")
    assert fit_run.info.status == "FINISHED" and fit_run.data.tags["showroom.kind"] == "fit"
    assert fit_run.data.params["model.image_size"] == "48" and fit_run.data.params["train.epochs"] == "1"
    assert [m.step for m in client.get_metric_history(fit_run.info.run_id, "val_loss")] == [0, 1]
    assert {"model", "index", "config.json", "split.json"} <= {a.path for a in client.list_artifacts(fit_run.info.run_id)}
    config = client.download_artifacts(fit_run.info.run_id, "config.json", str(tmp_path))
    assert json.loads(Path(config).read_text())  # downloaded through the server ...
    stored = team_tracking.artifacts / exp.experiment_id / fit_run.info.run_id / "artifacts"
    assert (stored / "config.json").is_file() and (stored / "index" / "model.keras").is_file()  # ... from its --artifacts-destination

    # a reviewer's machine (nothing local): evaluate the run and promote it, then serve the champion
    monkeypatch.setenv("SHOWROOM_HOME", str(tmp_path / "reviewer"))
    out = tmp_path / "eval"
    assert evaluate.main(["--catalog", str(tiny_catalog), "--model", fit_run.info.run_id, "--scenes", str(held), "--weights", "none",
                          "--baseline", "none", "--tsne-products", "0", "--grid-queries", "2", "--out", str(out),
                          "--run-name", "team-eval"]) == 0
    (ev,) = client.search_runs([exp.experiment_id], "attributes.run_name = 'team-eval'")
    assert ev.data.tags["showroom.kind"] == "evaluate" and ev.data.tags["showroom.model_run"] == fit_run.info.run_id
    assert "s2p_recall_at_10" in ev.data.metrics and ev.data.params["model.image_size"] == "48"
    report = json.loads(Path(client.download_artifacts(ev.info.run_id, "metrics.json", str(tmp_path / "ev"))).read_text())
    assert report == json.loads((out / "metrics.json").read_text())

    capsys.readouterr()
    assert promote.main(["--metric", "s2p_recall_at_10"]) == 0
    assert "models:/showroom@champion -> version 1" in capsys.readouterr().out
    version = client.get_model_version_by_alias("showroom", "champion")
    assert version.version == "1" and version.run_id == fit_run.info.run_id and version.tags["eval_run"] == ev.info.run_id

    ref = resolve_model("models:/showroom@champion")
    assert ref.run_id == fit_run.info.run_id and ref.folder.is_relative_to(tmp_path / "reviewer")  # downloaded from the server
    assert load_embedder(ref.path).output_shape[-1] == 16
    health = create_app({"SHOWROOM_INDEX": "models:/showroom@champion", "TESTING": True}).test_client().get("/healthz").get_json()
    assert health["products"] == 18 and health["preprocessing"]["image_size"] == 48

    # and the runs are in PostgreSQL, not in a local store
    import psycopg2

    with psycopg2.connect(team_tracking.database.replace("postgresql+psycopg2", "postgresql")) as db, db.cursor() as cursor:
        cursor.execute("SELECT name, status FROM runs ORDER BY start_time")
        assert cursor.fetchall() == [("team-fit", "FINISHED"), ("team-eval", "FINISHED")]
        cursor.execute("SELECT name, alias, version FROM registered_model_aliases")
        assert cursor.fetchall() == [("showroom", "champion", 1)]
