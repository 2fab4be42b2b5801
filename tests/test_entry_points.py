"""The environment is set by the entry points, not by importing Showroom: importing the packages leaves
``os.environ`` and ``triton`` alone, ``run_cli`` and the app factory configure both, and every CLI's
``--help`` parses its arguments without loading TensorFlow, Ultralytics, albumentations or MLflow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from engine.runtime import PROJECT_ROOT

# What engine.runtime.configure_environment sets (and configure_runtime(offline=True) adds): removed
# from the subprocesses' environment, so that setting them would show.
CONFIGURED = ["YOLO_CONFIG_DIR", "NO_ALBUMENTATIONS_UPDATE", "YOLO_AUTOINSTALL", "MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK",
              "TF_CPP_MIN_LOG_LEVEL", "YOLO_OFFLINE"]
HEAVY = ["tensorflow", "keras", "torch", "ultralytics", "albumentations", "mlflow", "scann"]
PACKAGES = ["engine", "detectors", "training", "evaluation", "serving", "benchmarks"]

IMPORT_PACKAGES = """
import importlib, json, os, sys
args = json.loads(sys.argv[1])
before = dict(os.environ)
for name in args["modules"]:
    importlib.import_module(name)
print(json.dumps({"same": dict(os.environ) == before, "triton": "triton" in sys.modules}))
"""

RUN_CLI = """
import json, os, sys
from engine.runtime import run_cli
args, seen = json.loads(sys.argv[1]), {}

def run(home):
    seen.update(env={k: os.environ.get(k) for k in args["configured"]}, home=str(home),
                blocked="triton" in sys.modules and sys.modules["triton"] is None,
                yolo_dir=os.path.isdir(os.environ["YOLO_CONFIG_DIR"]))
    return 0

print(json.dumps({"code": run_cli(run), **seen}))
"""

ASK_FOR_THE_APP = """
import json, os, sys
import serving
loaded = [m for m in ("tensorflow", "flask") if m in sys.modules]
level = os.environ.get("TF_CPP_MIN_LOG_LEVEL")
factory = serving.create_app
print(json.dumps({"loaded_by_import": loaded, "level_before": level, "level_after": os.environ.get("TF_CPP_MIN_LOG_LEVEL"),
                  "factory": factory.__module__ + "." + factory.__name__}))
"""

# ``python -m MODULE --help`` for each module, one after another in this interpreter (as ``python -m``
# runs them): the exit code, whether a usage was printed, and the heavy libraries loaded so far.
HELP = """
import contextlib, io, json, runpy, sys
args, out = json.loads(sys.argv[1]), {}
for mod in args["modules"]:
    sys.argv = [mod, "--help"]
    buf, status = io.StringIO(), None
    with contextlib.redirect_stdout(buf):
        try:
            runpy.run_module(mod, run_name="__main__", alter_sys=True)
        except SystemExit as exc:
            status = exc.code
    out[mod] = {"status": status, "usage": "usage:" in buf.getvalue(), "heavy": [h for h in args["heavy"] if h in sys.modules]}
print(json.dumps(out))
"""


def _python(code: str, home: Path, **args: Any) -> Any:
    """Run ``code`` in a fresh interpreter (``sys.argv[1]``: ``args`` as JSON) without the configured
    variables and with ``SHOWROOM_HOME=home``; the JSON it printed last."""
    env = {k: v for k, v in os.environ.items() if k not in CONFIGURED}
    env.update(SHOWROOM_HOME=str(home), PYTHONPATH=str(PROJECT_ROOT))
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(args)], cwd=PROJECT_ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _clis() -> list[str]:
    """Every ``python -m`` module of the project: a package's ``__main__.py`` or a module that runs ``main()``."""
    found = []
    for pkg in PACKAGES:
        for path in sorted((PROJECT_ROOT / pkg).rglob("*.py")):
            if path.name == "__main__.py":
                found.append(".".join(path.relative_to(PROJECT_ROOT).parent.parts))
            elif 'if __name__ == "__main__":' in path.read_text():
                found.append(".".join(path.relative_to(PROJECT_ROOT).with_suffix("").parts))
    return found


def test_importing_the_packages_leaves_the_environment_alone(tmp_path: Path):
    modules = [*PACKAGES, "engine.runtime", "engine.config", "engine.files", "engine.data.catalog"]
    # no variable set, and triton neither blocked (a None in sys.modules) nor loaded
    assert _python(IMPORT_PACKAGES, tmp_path, modules=modules) == {"same": True, "triton": False}


def test_run_cli_configures_the_environment_before_the_command_runs(tmp_path: Path):
    got = _python(RUN_CLI, tmp_path, configured=CONFIGURED)
    home = tmp_path.resolve()
    assert got["code"] == 0 and got["home"] == str(home)
    assert got["blocked"] and got["yolo_dir"]  # triton cannot load; Ultralytics' settings folder exists
    assert got["env"] == {"YOLO_CONFIG_DIR": str(home / "ultralytics"), "NO_ALBUMENTATIONS_UPDATE": "1", "YOLO_AUTOINSTALL": "false",
                          "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1", "TF_CPP_MIN_LOG_LEVEL": "1", "YOLO_OFFLINE": None}


@pytest.mark.slow  # loads TensorFlow
def test_the_app_factory_configures_the_environment_before_tensorflow_loads(tmp_path: Path):
    got = _python(ASK_FOR_THE_APP, tmp_path)
    assert got == {"loaded_by_import": [], "level_before": None, "level_after": "1", "factory": "serving.app.create_app"}


def test_every_cli_is_found():
    assert {"evaluation.evaluate", "training.mine_triplets", "serving.build_index", "benchmarks.ann", "training.fit"} <= set(_clis())


CLIS = _clis()


@pytest.fixture(scope="module")
def help_runs(tmp_path_factory) -> dict[str, dict]:
    """``--help`` of every CLI, in one interpreter (see ``HELP``)."""
    return _python(HELP, tmp_path_factory.mktemp("help"), modules=CLIS, heavy=HEAVY)


@pytest.mark.parametrize("module", CLIS)
def test_cli_help_loads_no_heavy_library(help_runs: dict[str, dict], module: str):
    got = help_runs[module]
    assert got["status"] == 0 and got["usage"], got
    assert got["heavy"] == [], f"python -m {module} --help (or a CLI run before it) imported {got['heavy']}"

