"""Embedding catalog photos on Ray Data: model actors on local workers or a Ray cluster, the same vectors as in process.

``RayRunner.embed_photos(paths, model_path)`` is the one entry point: the photos are split into
batches, each batch is decoded and embedded by one of ``workers`` actors (``map_batches`` with a
callable class that loads the ``Embedder`` once per actor), and the vectors come back in the
order of ``paths``. Each actor decodes exactly as the in-process path does
(``engine.index.serving_folder.photo_images``: ``load_square`` on a read-ahead thread) and runs the model
with ``threads_per_worker`` TensorFlow threads, so ``workers x threads_per_worker`` is the number
of cores used (1 each on a 2-core machine: no worker's thread pool competes with the other's).

Ray is the only third-party engine here, imported only in this module (and only when used).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.runtime import PROJECT_ROOT

logger = logging.getLogger(__name__)

RUNNERS = ("local", "ray")
# never shipped to a cluster with the code (runtime_env working_dir): state, runs, caches, tests
_NOT_SHIPPED = [".git", ".showroom", "mlruns", "tests", "docs", "**/__pycache__", ".pytest_cache", ".ruff_cache", ".benchmarks"]


class RunnerError(ValueError):
    """A distributed runner that cannot start: Ray missing, or settings that cannot work."""


@dataclass(frozen=True)
class RayRunner:
    """Settings of a Ray Data embedding run.

    workers: model actors (each loads the model once and embeds whole batches).
    threads_per_worker: TensorFlow intra-op threads of each actor and the CPUs it reserves;
        0 = the machine's cores // workers (at least 1). Locally, Ray starts with
        ``workers * threads_per_worker`` CPUs.
    batch_size: photos per model call, as the in-process path (``Embedder.__call__``'s 64).
    address: None = start a local Ray on this machine (stopped afterwards); ``auto`` or
        ``ray://head:10001`` = an existing cluster, whose workers get this project's code
        (``runtime_env`` working_dir) and must see the photos and the model at the same paths
        (shared storage).
    """

    workers: int = 2
    threads_per_worker: int = 0
    batch_size: int = 64
    address: str | None = None

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, got {self.workers}")
        if self.threads_per_worker < 0:
            raise ValueError(f"threads_per_worker must be 0 (automatic) or more, got {self.threads_per_worker}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")

    @property
    def threads(self) -> int:
        """TensorFlow threads (and Ray CPUs) per actor."""
        return self.threads_per_worker or max(1, (os.cpu_count() or 1) // self.workers)

    def describe(self) -> dict:
        """What an index manifest records about how its vectors were computed."""
        return {"runner": "ray", "ray": _ray().__version__, "workers": self.workers, "threads_per_worker": self.threads,
                "batch_size": self.batch_size, "address": self.address or "local"}

    def embed_photos(self, paths: Sequence[Path], model_path: Path) -> np.ndarray:
        """Catalog photos embedded on Ray by the saved embedder at ``model_path`` → ``float32 (N, D)``
        in the order of ``paths`` (decoded and preprocessed as ``engine.index.serving_folder.photo_images``)."""
        ray = _ray()
        from tqdm import tqdm

        paths = [str(p) for p in paths]
        if not paths:
            from engine.model.embedder import Embedder

            return np.zeros((0, Embedder.load(model_path).dim), np.float32)
        started = not ray.is_initialized()
        if started:
            self._start(ray)
        try:
            ctx = ray.data.DataContext.get_current()
            ctx.enable_progress_bars = False  # our own bar below, over photos in catalog order
            rows = [{"row": i, "path": p} for i, p in enumerate(paths)]
            ds = ray.data.from_items(rows, override_num_blocks=math.ceil(len(rows) / self.batch_size))
            ds = ds.map_batches(_PhotoEmbedder, fn_constructor_args=(str(Path(model_path).resolve()), self.threads), batch_size=self.batch_size,
                                batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=self.workers), num_cpus=self.threads)
            out: np.ndarray | None = None
            with tqdm(total=len(paths), desc=f"embedding on Ray ({self.workers} workers)", unit="photo") as bar:
                for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                    if out is None:
                        out = np.full((len(paths), batch["vector"].shape[1]), np.nan, np.float32)
                    out[batch["row"]] = batch["vector"]
                    bar.update(len(batch["row"]))
            missing = int(np.isnan(out[:, 0]).sum())
            if missing:
                raise RunnerError(f"Ray returned no vector for {missing} of {len(paths)} photos")
            return out
        finally:
            if started:
                ray.shutdown()

    def _start(self, ray) -> None:
        """A local Ray on ``workers * threads`` CPUs, or a connection to the cluster at ``address``."""
        if self.address is None:
            # the actors import this project: on this machine it is enough to put it on their path
            env = {"env_vars": {"PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")]))}}
            ray.init(num_cpus=self.workers * self.threads, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.WARNING, runtime_env=env)
        else:
            ray.init(address=self.address, logging_level=logging.WARNING,
                     runtime_env={"working_dir": str(PROJECT_ROOT), "excludes": _NOT_SHIPPED})
        logger.info("Ray %s: %s, %d workers x %d TensorFlow threads", ray.__version__, self.address or "local", self.workers, self.threads)


    def embed_scenes(self, catalog, model_path: Path, open_detect, classes) -> tuple[np.ndarray, list]:
        """Every scene's proposed crops (``engine.index.serving_folder.scene_crops``) detected and embedded on
        Ray, a few scenes per task; each actor opens its own detector with ``open_detect`` (a picklable
        factory, None: no detector). → ``float32 (M, D)`` and the M items, in ``scenes.csv`` order."""
        ray = _ray()
        from engine.index.catalog_index import Item

        names = [s.scene for s in catalog.scenes]
        if not names:
            from engine.model.embedder import Embedder

            return np.zeros((0, Embedder.load(model_path).dim), np.float32), []
        started = not ray.is_initialized()
        if started:
            self._start(ray)
        try:
            per_task = max(1, min(8, math.ceil(len(names) / (2 * self.workers))))
            rows = [{"row": i, "scene": n} for i, n in enumerate(names)]
            ds = ray.data.from_items(rows, override_num_blocks=math.ceil(len(rows) / per_task))
            ds = ds.map_batches(_SceneEmbedder, fn_constructor_args=(catalog, str(Path(model_path).resolve()), self.threads, open_detect,
                                                                    None if classes is None else sorted(classes)),
                                batch_size=per_task, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=self.workers),
                                num_cpus=self.threads)
            parts: dict[int, tuple[np.ndarray, list]] = {}
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                for row, vector, item in zip(batch["row"], batch["vector"], batch["item"]):
                    vecs, items = parts.setdefault(int(row), ([], []))
                    vecs.append(vector)
                    items.append(Item.from_dict(json.loads(str(item))))
            order = sorted(parts)
            vectors = [v for r in order for v in parts[r][0]]
            items = [it for r in order for it in parts[r][1]]
            dim = len(vectors[0]) if vectors else 0
            return (np.stack(vectors).astype(np.float32) if vectors else np.zeros((0, dim), np.float32)), items
        finally:
            if started:
                ray.shutdown()


class _SceneEmbedder:
    """The Ray actor for scenes: loads the embedder and opens a detector once, then proposes, crops and
    embeds batches of scenes.

    batch: ``{"row": int64 (B,), "scene": str (B,)}`` → one output row per crop: ``{"row": int64 (M,)``
    (its scene's row), ``"vector": float32 (M, D), "item": str (M,)`` (the item's JSON)}.
    """

    def __init__(self, catalog, model_path: str, threads: int, open_detect, classes) -> None:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
        from engine.model.embedder import Embedder

        self.catalog, self.classes = catalog, classes
        self.embedder = Embedder.load(model_path)
        self.detect = open_detect() if open_detect is not None else None

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from engine.index.serving_folder import scene_crops
        from engine.data.splits import restrict_scenes

        rows, vectors, records = [], [], []
        for row, name in zip(batch["row"], batch["scene"]):
            items, crops = scene_crops(restrict_scenes(self.catalog, keep=[str(name)]), self.embedder.preprocessing, self.detect, self.classes)
            if crops:
                vectors.append(self.embedder(np.stack(crops)))
            rows += [int(row)] * len(items)
            records += [json.dumps(it.to_dict()) for it in items]
        dim = self.embedder.dim
        return {"row": np.asarray(rows, np.int64), "vector": np.concatenate(vectors) if vectors else np.zeros((0, dim), np.float32),
                "item": np.asarray(records, dtype=object)}


class _PhotoEmbedder:
    """The Ray actor: loads the embedder once, then embeds batches of photo paths.

    batch: ``{"row": int64 (B,), "path": str (B,)}`` → ``{"row": int64 (B,), "vector": float32 (B, D)}``.
    """

    def __init__(self, model_path: str, threads: int) -> None:
        import tensorflow as tf

        # before any TensorFlow op runs in this process: one pool of `threads` per actor, so the
        # actors together use the cores Ray gave them instead of each spreading over every core
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
        from engine.model.embedder import Embedder

        self.embedder = Embedder.load(model_path)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from engine.index.serving_folder import photo_images

        images = photo_images([Path(p) for p in batch["path"]], self.embedder.preprocessing)
        return {"row": np.asarray(batch["row"], np.int64), "vector": self.embedder(images, batch_size=len(batch["path"]))}


def _ray():
    """The ``ray`` module with Ray Data, or a ``RunnerError`` saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise RunnerError("the ray runner needs Ray Data: pip install -r requirements-distributed.txt") from None
    return ray
