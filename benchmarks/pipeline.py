"""Training and embedding at the speed of the model: each pipeline beside its model alone, one run.

    python -m benchmarks.pipeline [--catalog DIR] [--model MODEL.keras] [--steps 12] [--batch-size 16]
    (the demo catalog must exist: python -m training.fit generates it on its first run)

- **fit**: images/s of a ``training.fit`` epoch (the image bank, ``triplet_dataset`` with
  augmentation in parallel, prefetch, ``model.fit``) against the same model's ``fit`` on the same
  batches already in memory (the raw train step). Both after one warm-up epoch that traces the
  step. The default: the demo catalog at the demo's image size and batch.
- **embedding**: images/s of embedding the catalog's product photos as ``serving.build_index``
  does (decode, square, batch, predict; ``engine.index.serving_folder.product_images``) against
  ``predict_on_batch`` on the same images already decoded in memory. ``--model`` (a ``.keras``):
  the served model; default a fresh MobileNetV2 embedder at 224 px.

Prints the ratios (goals: fit >= 0.95 of raw, embedding >= 0.90 of raw); asserts nothing.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

logger = logging.getLogger("benchmarks.pipeline")


def _fit_seconds(model, dataset, steps: int) -> float:
    """Wall seconds of the second of two ``fit`` epochs (the first traces)."""
    import keras

    marks: list[float] = []

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            marks.append(time.perf_counter())

        def on_epoch_end(self, epoch, logs=None):
            marks.append(time.perf_counter())

    model.fit(dataset, epochs=2, steps_per_epoch=steps, callbacks=[Clock()], verbose=0)
    return marks[3] - marks[2]


def fit_ratio(catalog_dir: Path | None, steps: int, batch_size: int, image_size: int, weights: str, seed: int = 0) -> dict:
    """(pipeline images/s, raw images/s) of the triplet training step."""
    import keras
    import tensorflow as tf

    from engine.data.catalog import load_catalog
    from engine.config import ModelConfig, TrainConfig
    from engine.model.network import TripletModel, build_embedder
    from engine.runtime import state_dir
    from training.demo_catalog import ensure_demo_catalog
    from training.input_pipeline import triplet_dataset
    from training.training_set import build_training_set

    catalog = load_catalog(catalog_dir or ensure_demo_catalog(state_dir()))
    tcfg = TrainConfig(batch_size=batch_size, seed=seed)
    ts = build_training_set(catalog, tcfg, image_size)
    epochs = [ts.train_sampler.sample(seed + e) for e in range(2)]
    shortest = min(len(t) for t in epochs)
    epochs = [t.subset(np.arange(min(shortest, steps * batch_size))) for t in epochs]
    steps = min(steps, len(epochs[0]) // batch_size)
    keras.utils.set_random_seed(seed)

    def model():
        m = TripletModel(build_embedder(ModelConfig(weights=weights, image_size=image_size)), margin=tcfg.margin)
        m.compile(optimizer=keras.optimizers.Adam(tcfg.learning_rate))
        return m

    pipeline = triplet_dataset(ts.bank, epochs, batch_size=batch_size, augment=True, seed=seed)
    t_pipe = _fit_seconds(model(), pipeline, steps)
    in_memory = list(triplet_dataset(ts.bank, [epochs[0]], batch_size=batch_size, augment=True, seed=seed).take(steps))
    raw = tf.data.Dataset.from_tensor_slices({k: tf.stack([b[k] for b in in_memory]) for k in in_memory[0]}).repeat()
    t_raw = _fit_seconds(model(), raw, steps)
    images = 3 * batch_size * steps  # query, positive and negative per triplet
    return {"steps": steps, "batch": batch_size, "size": image_size, "pipeline_ips": images / t_pipe, "raw_ips": images / t_raw}


def embed_ratio(catalog_dir: Path, model_path: Path | None, image_size: int, weights: str, limit: int, rounds: int = 3) -> dict:
    """(as build_index images/s, raw predict images/s) over the catalog's product photos."""
    from engine.index.serving_folder import product_images
    from engine.data.catalog import load_catalog
    from engine.config import ModelConfig, Preprocessing
    from engine.model.embedder import Embedder
    from engine.data.images import load_square
    from engine.model.network import build_embedder

    catalog = load_catalog(catalog_dir)
    if model_path is not None:
        embedder = Embedder.load(model_path)
    else:
        embedder = Embedder(build_embedder(ModelConfig(weights=weights, image_size=image_size)), Preprocessing(image_size=image_size))
    products = catalog.products[:limit] if limit else catalog.products
    size = embedder.size
    embedder(np.zeros((64, size, size, 3), np.uint8))  # trace once
    for p in products:
        p.image.read_bytes()  # every variant reads from the page cache, none from the disk
    decoded = np.stack([load_square(p.image, size, reduced=embedder.preprocessing.catalog_decode == "reduced") for p in products])
    variants = {
        "pipeline": lambda: embedder(product_images(products, embedder.preprocessing)),
        "raw": lambda: embedder(decoded),
    }
    best = {name: float("inf") for name in variants}
    out = {}
    for _ in range(rounds):  # in turn, so drift hits every variant alike; the best round of each
        for name, run in variants.items():
            t = time.perf_counter()
            out[name] = run()
            best[name] = min(best[name], time.perf_counter() - t)
    t_pipe, t_raw = best["pipeline"], best["raw"]
    via_pipeline, raw = out["pipeline"], out["raw"]
    return {"n": len(products), "size": size, "pipeline_ips": len(products) / t_pipe, "raw_ips": len(products) / t_raw,
            "pipeline_s": t_pipe, "max_diff": float(np.abs(via_pipeline - raw).max())}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.pipeline", description=__doc__.splitlines()[0])
    p.add_argument("--catalog", type=Path, default=None, help="catalog whose product photos are embedded (without it: no embedding part)")
    p.add_argument("--fit-catalog", type=Path, default=None, help="catalog (with pairs.csv boxes) to train on (default: the demo catalog)")
    p.add_argument("--model", type=Path, default=None, help=".keras embedder to embed with (default: a fresh one)")
    p.add_argument("--weights", default="imagenet", help="backbone weights of the fresh models (imagenet, none or a .h5)")
    p.add_argument("--image-size", type=int, default=128, help="fit image size (the demo's default)")
    p.add_argument("--embed-size", type=int, default=224, help="embedding image size of a fresh model")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=12, help="timed fit steps")
    p.add_argument("--limit", type=int, default=0, help="embed only the first N product photos (0: all)")
    p.add_argument("--skip-fit", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from engine.runtime import configure_runtime

    configure_runtime()
    rows = []
    if not args.skip_fit:
        f = fit_ratio(args.fit_catalog, args.steps, args.batch_size, args.image_size, args.weights)
        rows.append((f"fit: {f['steps']} steps of {f['batch']} triplets at {f['size']} px", f["pipeline_ips"], f["raw_ips"], 0.95))
    if args.catalog is not None:
        e = embed_ratio(args.catalog, args.model, args.embed_size, args.weights, args.limit)
        rows.append((f"embed as build_index: {e['n']} photos at {e['size']} px in {e['pipeline_s']:.1f} s (max |diff| {e['max_diff']:.1e})",
                     e["pipeline_ips"], e["raw_ips"], 0.90))
    print(f"{'pipeline':<72} {'images/s':>9} {'raw':>9} {'ratio':>6} {'goal':>5}")
    for name, pipe, raw, goal in rows:
        print(f"{name:<72} {pipe:>9.1f} {raw:>9.1f} {pipe / raw:>6.2f} {goal:>5.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
