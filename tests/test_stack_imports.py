"""The whole stack imports in one process, in either order (a TensorFlow-then-torch import once segfaulted)."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

STACK = ["tensorflow", "keras", "torch", "torchvision", "ultralytics", "scann", "mlflow", "flask", "cv2", "albumentations"]


@pytest.mark.parametrize("order", [STACK, STACK[::-1]], ids=["tensorflow-first", "torch-first"])
def test_stack_imports_in_one_process(order: list[str]):
    code = "import importlib\n" + "".join(f"importlib.import_module({m!r})\n" for m in order) + "print('ok')"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-2000:]}"
    assert proc.stdout.strip().endswith("ok")


def test_runtime_guard_blocks_triton_even_if_installed():
    code = (
        "from engine.runtime import configure_runtime; configure_runtime(offline=True)\n"
        "import tensorflow, torchvision\n"
        "import importlib.util\n"
        "try:\n    import triton\nexcept ImportError:\n    print('blocked')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "blocked"
