"""What a training run trains from: its data config, and the plan resolved from it (or from a killed run's state).

``new_plan`` picks the catalog (``--catalog``, else the one the input files were made from, else the
generated demo catalog), loads ``--init-from``, mines box-less pairs first when needed and gathers
the held-out scenes; ``resume_plan`` rebuilds the same plan from a checkpoint's ``state.json``.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import keras

from detectors.category_map import load_category_map
from detectors.yolo import YoloDetector, default_weights
from engine.config import ModelConfig, Preprocessing, TrainConfig, from_dict
from engine.data.catalog import Catalog, CatalogError, load_catalog
from engine.data.splits import read_product_list, read_scene_list, restrict_products
from engine.model.embedder import Embedder, input_size, load_embedder
from training import checkpoint as ckpt
from training.demo_catalog import DemoSpec, ensure_demo_catalog
from training.manifest import save_manifest
from training.mining import MiningConfig, mine_catalog
from training.model_ref import resolve_model
from training.query_sources import INPUT_NAMES, RunInputs, catalog_of_inputs, check_mix, held_out_by_inputs, held_out_products_by_inputs

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataConfig:
    """What a run trains on: the data flags of ``python -m training.fit``.

    catalog: catalog folder; None = the catalog the input files were made from (``resolve_catalog``),
        else the generated demo catalog (seeded by ``demo_seed``).
    triplets: mined triplet manifest (``training.mine_triplets``): the real and lifestyle queries;
        None = pairs.csv, mined first when its pairs have no boxes (unless ``whole_scene_queries``).
    synthetic: synthetic views manifest (``training.synthesize``): the synthetic queries.
    holdout_scenes: scene-list file of scenes never trained or validated on.
    holdout_products: product-list file of products that do not exist for this run (the
        new-products protocol, ``engine.data.splits.new_products``): no proxy, image, query,
        negative or synthetic view of theirs.
    init_from: trained embedder (.keras path or MLflow run id) to start from; '' = the model's weights.
    init_size: input side the ``init_from`` embedder is fine-tuned at (its weights do not depend on the
        size); 0 = the side it was trained at.
    detector_weights: YOLO weights that mine box-less pairs (None = ``detectors.yolo.default_weights``).
    One field per input file of ``training.query_sources.INPUT_NAMES``, named like it.
    """

    catalog: Path | None = None
    demo_seed: int = 7
    triplets: Path | None = None
    synthetic: Path | None = None
    holdout_scenes: Path | None = None
    holdout_products: Path | None = None
    init_from: str = ""
    init_size: int = 0
    detector_weights: str | None = None
    whole_scene_queries: bool = False

    def __post_init__(self) -> None:
        missing = sorted(set(INPUT_NAMES) - {f.name for f in fields(self)})
        if missing:
            raise TypeError(f"DataConfig has no field for the query-source input(s) {missing}")

    def input_files(self) -> dict[str, Path | None]:
        """The query sources' input files by input name."""
        return {name: getattr(self, name) for name in INPUT_NAMES}


def resolve_catalog(data: DataConfig) -> DataConfig:
    """``data`` with ``catalog`` taken from its first input file when unset (still None: the demo catalog)."""
    if data.catalog is not None:
        return data
    return replace(data, catalog=catalog_of_inputs(RunInputs(data.input_files())))


@dataclass(frozen=True)
class RunPlan:
    """Everything a run trains from, resolved from its configs (or from a killed run's state).

    data: with ``catalog`` set and ``triplets`` mined when needed. holdout: every held-out scene
    (``--holdout-scenes`` and those the input files were made without).
    resume: the killed run's state (``training.checkpoint``), None for a new run.
    held_products: every product held out of the run (``--holdout-products`` and those the
    ``--triplets`` manifest was made without).
    init_model: a trained embedder to start from (``data.init_from``).
    """

    model: ModelConfig
    train: TrainConfig
    data: DataConfig
    catalog: Catalog
    holdout: frozenset[str]
    init_model: keras.Model | None = None
    resume: dict | None = None
    inputs: RunInputs | None = field(default=None, compare=False)  # the input files, each read once for the run
    held_products: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        check_mix(self.train.mix_weights())
        if self.inputs is None:
            object.__setattr__(self, "inputs", RunInputs(self.data.input_files()))

    @property
    def preprocessing(self) -> Preprocessing:
        """What the trained embedder is saved with, and every consumer reads."""
        return Preprocessing(image_size=self.model.image_size, crop_padding=self.train.crop_padding)

    def state(self, run_id: str) -> dict[str, Any]:
        """What a resume needs to rebuild this run (``state.json``; its keys are read by ``resume_plan``)."""
        files = {name: str(path) if path else None for name, path in self.data.input_files().items()}
        return {"run_id": run_id, "model": asdict(self.model), "train": asdict(self.train), "catalog": str(self.catalog.root),
                "catalog_fingerprint": self.catalog.fingerprint, **files,
                "holdout_scenes": sorted(self.holdout), "init_from": self.data.init_from,
                **({"init_size": self.data.init_size} if self.data.init_size else {}),
                **({"holdout_products": sorted(self.held_products)} if self.held_products else {})}


def _plan(model: ModelConfig, train: TrainConfig, data: DataConfig, catalog: Catalog, holdout: set[str],
          init_model: keras.Model | None = None, resume: dict | None = None, products: set[str] = frozenset()) -> RunPlan:
    inputs = RunInputs(data.input_files())
    held = frozenset(set(products) | held_out_products_by_inputs(inputs))
    if held:
        restrict_products(catalog, held)  # every id known, some product left: else a CatalogError naming the list's problem
    return RunPlan(model, train, data, catalog, frozenset(holdout | held_out_by_inputs(inputs)), init_model, resume, inputs, held)


def new_plan(model: ModelConfig, train: TrainConfig, data: DataConfig, home: Path) -> RunPlan:
    """The plan of a new run: the catalog (the demo one by default); triplets mined first when pairs
    have no boxes; held-out scenes; the model to start from (its D, and its input size unless
    ``data.init_size`` gives another, override ``model``'s)."""
    holdout = set(read_scene_list(data.holdout_scenes)) if data.holdout_scenes else set()
    data = resolve_catalog(data)
    if data.catalog is None:
        data = replace(data, catalog=ensure_demo_catalog(home, DemoSpec(seed=data.demo_seed)))
    init_model = None
    if data.init_from:
        if data.init_size < 0 or 0 < data.init_size < 32:
            raise ValueError(f"--image-size {data.init_size} with --init-from: give a side of at least 32 px")
        init_model = load_embedder(resolve_model(data.init_from).path)
        trained_at = input_size(init_model)
        if data.init_size == trained_at:
            data = replace(data, init_size=0)  # the model's own size: nothing to record for a resume
        model = replace(model, image_size=data.init_size or trained_at, embedding_dim=int(init_model.output_shape[-1]), weights="none")
        logger.info("initialising from %s (input %d px, D=%d)%s", data.init_from, trained_at, model.embedding_dim,
                    f": fine-tuned at {model.image_size} px" if model.image_size != trained_at else "")
    catalog = load_catalog(data.catalog)
    if data.triplets is None and not data.whole_scene_queries and any(p.box is None for p in catalog.pairs):
        data = replace(data, triplets=auto_mine(data, model, train, catalog, holdout, home))
    products = set(read_product_list(data.holdout_products)) if data.holdout_products else set()
    return _plan(model, train, data, catalog, holdout, init_model, products=products)


def resume_plan(folder: Path) -> RunPlan:
    """The plan of a killed run, from the checkpoint state in ``folder``; the catalog must not have changed."""
    state = ckpt.read_run_state(folder)
    run_id = state["run_id"]
    catalog = load_catalog(state["catalog"])
    if catalog.fingerprint != state["catalog_fingerprint"]:
        raise CatalogError(
            f"{state['catalog']} changed since run {run_id} started (fingerprint {catalog.fingerprint} "
            f"vs {state['catalog_fingerprint']}); start a new run instead of --resume"
        )
    mcfg, tcfg = from_dict(ModelConfig, state["model"]), from_dict(TrainConfig, state["train"])
    logger.info("resuming run %s after epoch %d of %d", run_id, state["epochs_done"], tcfg.epochs)
    files = {name: Path(state[name]) if state.get(name) else None for name in INPUT_NAMES}
    data = DataConfig(catalog=Path(state["catalog"]), init_from=state.get("init_from", ""), init_size=int(state.get("init_size") or 0), **files)
    return _plan(replace(mcfg, weights="none"), tcfg, data, catalog, set(state.get("holdout_scenes") or ()), resume=state,
                 products=set(state.get("holdout_products") or ()))


def auto_mine(data: DataConfig, mcfg: ModelConfig, tcfg: TrainConfig, catalog: Catalog, holdout: set[str], home: Path) -> Path:
    """Mine the catalog's box-less pairs with the detector (once per catalog and settings); the manifest path."""
    weights = data.detector_weights or default_weights()
    key = hashlib.sha256(f"{catalog.fingerprint}|{sorted(holdout)}|{weights}|{mcfg.backbone}|{mcfg.weights}|{mcfg.image_size}|{tcfg.seed}"
                         .encode()).hexdigest()[:12]
    out = home / "mined" / f"{catalog.root.name}-auto-{key}.json"
    if out.is_file():
        logger.info("using the triplets mined earlier for this catalog: %s", out)
        return out
    logger.info("pairs have no boxes: mining them with %s first (--whole-scene-queries to skip)", weights)
    cfg = MiningConfig(crop_padding=tcfg.crop_padding, in_class_negatives=tcfg.in_class_negatives,
                       out_class_negatives=tcfg.out_class_negatives, seed=tcfg.seed)
    embedder = replace(Embedder.imagenet(replace(mcfg, train_backbone="all")), name=f"{mcfg.backbone}:{mcfg.weights}")
    manifest, _ = mine_catalog(catalog, YoloDetector(weights, conf=cfg.detector_confidence), load_category_map(), cfg, embedder=embedder,
                               cache_dir=home / "cache" / "detections", holdout=sorted(holdout))
    save_manifest(manifest, out)
    return out
