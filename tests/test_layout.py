"""The packages depend in one direction, read from the code's own imports (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from engine.runtime import PROJECT_ROOT

# A package may import itself and the packages on lower floors, never one on its own floor or above.
FLOORS = {"engine": 0, "detectors": 1, "training": 2, "evaluation": 3, "serving": 3, "benchmarks": 3}
THIRD_PARTY_HOMES = {"scann": {"engine/index/scann_backend.py"}, "ultralytics": {"detectors/yolo.py"}, "mlflow": {"training/tracking.py"},
                     "pymilvus": {"engine/index/milvus.py"}, "ray": {"engine/index/ray_runner.py"},
                     # torch: beside Ultralytics (reading checkpoints for export), and in the weight surgery that recovers a trainable YOLOv8 from a TFLite export
                     "torch": {"detectors/yolo.py", "detectors/recover.py"}}


def _imports(path: Path) -> set[str]:
    """Top-level module names a file imports (absolute imports only; the project uses no relative ones)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _files() -> list[Path]:
    return sorted(p for pkg in FLOORS for p in (PROJECT_ROOT / pkg).rglob("*.py"))


@pytest.mark.parametrize("path", _files(), ids=lambda p: str(p.relative_to(PROJECT_ROOT)))
def test_imports_point_down(path: Path):
    pkg = path.relative_to(PROJECT_ROOT).parts[0]
    for name in _imports(path):
        top = name.split(".")[0]
        if top in FLOORS and top != pkg:
            assert FLOORS[top] < FLOORS[pkg], f"{path.relative_to(PROJECT_ROOT)} imports {name}: {top} is not below {pkg}"


# Inside engine/, the same rule one level down: each part imports only itself and the parts below it.
ENGINE_FLOORS = {"engine.runtime": 0, "engine.files": 0, "engine.config": 0, "engine.metrics": 0, "engine.data": 1, "engine.calibration": 1,
                 "engine.model": 2, "engine.synthesis": 2, "engine.index": 3, "engine.search": 4}


def _engine_part(module: str) -> str | None:
    """The ``ENGINE_FLOORS`` key a dotted module name belongs to (``engine.index.tuning`` -> ``engine.index``)."""
    parts = module.split(".")
    return next((".".join(parts[:n]) for n in (2, 1) if ".".join(parts[:n]) in ENGINE_FLOORS), None)


def test_engine_is_its_parts():
    """``ls engine`` tells the architecture: every module of engine/ belongs to a part of ENGINE_FLOORS."""
    for path in sorted((PROJECT_ROOT / "engine").rglob("*.py")):
        mod = ".".join(path.relative_to(PROJECT_ROOT).with_suffix("").parts).removesuffix(".__init__")
        assert mod == "engine" or _engine_part(mod), f"{mod} belongs to no part of engine/ (tests/test_layout.py ENGINE_FLOORS)"


@pytest.mark.parametrize("path", sorted((PROJECT_ROOT / "engine").rglob("*.py")), ids=lambda p: str(p.relative_to(PROJECT_ROOT)))
def test_engine_parts_import_down(path: Path):
    mod = ".".join(path.relative_to(PROJECT_ROOT).with_suffix("").parts).removesuffix(".__init__")
    here = _engine_part(mod)
    for name in _imports(path):
        there = _engine_part(name)
        if here and there and there != here:
            assert ENGINE_FLOORS[there] < ENGINE_FLOORS[here], f"{mod} imports {name}: {there} is not below {here}"


def test_each_engine_is_imported_in_one_module():
    seen: dict[str, set[str]] = {k: set() for k in THIRD_PARTY_HOMES}
    for path in _files():
        for name in _imports(path):
            top = name.split(".")[0]
            if top in seen:
                seen[top].add(str(path.relative_to(PROJECT_ROOT)))
    assert seen == THIRD_PARTY_HOMES


def test_no_module_imports_itself_in_a_circle():
    graph = {}
    for path in _files():
        mod = ".".join(path.relative_to(PROJECT_ROOT).with_suffix("").parts).removesuffix(".__init__")
        graph[mod] = {n for n in _imports(path) if n.split(".")[0] in FLOORS and n != mod}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    cycles = sorted(m for m in graph if reaches(m, m, {m}))
    assert not cycles, f"modules in an import circle: {cycles}"
