"""The Showroom evaluation protocol, as pure functions of a catalog, a detector and an embedding.

- The catalog is every product image of ``products.csv``; every search runs over all of it, with
  no type filter. A product's distance to a query is that of its nearest image.
- Scene → product ("what is it?"): each scene's crops are the queries. A scene's crops are the
  boxes of its ``pairs.csv`` rows when they have one, and the detector's boxes (confidence >=
  ``min_confidence``) when some pair of the scene has none. For each pair (p, s):
  with a box, the pair is reachable and its crop is that box; without, it is reachable when the
  category map maps p's type to a detector class, and rank(p) is the best rank of p over the crops
  of s detected as that class (``inf`` when there is none: a miss at every k). ``any crop`` ranks
  take the best over all crops of s. Recall@k = share of reachable pairs with rank <= k.
- Product → scene ("where is it used?"): each product of a pair queries all scene crops; scenes
  are ranked by their best crop; recall@k over the pairs.
- ``distance_accuracy`` (top-1, top-3) as in training, per category of the matched crops (the
  crop that gave rank(p)).
- Also reported: ``coverage`` (share of reachable pairs whose scene has a crop of the right
  class: recall@k can never exceed it); the class-agnostic ``fallback`` (a pair with no crop of its
  class takes its best rank over any crop of its scene); recall split by products ``seen`` /
  ``unseen`` in the training pairs (``EvalConfig.seen_products``); and scene → product over
  **all** pairs, whatever their type, with every proposed crop plus a fixed set of multi-scale
  windows as queries (``engine.data.proposals.windows``).
Ranks are pessimistic: a tie with the true item ranks ahead of it.

**The box the page offers.** With ``page_labels`` (the detector classes of a product group),
``prepare`` keeps only the detections the page would draw for a shopper to click
(``engine.data.proposals.page_boxes``: same confidence, de-duplication and cap as the page).
**One query box per pair.** When a scene has several crops that may answer a pair,
``choose_query_crops`` picks one before any model is scored, by a rule that does not depend on
the evaluated model (``CROP_CHOICES``: the crop nearest the product in ImageNet features, or the
most confident); rank(p) is then the rank at that crop, and the best rank over the candidate crops
(the older protocol) stays as the secondary ``recall_best_box``. Without a choice, rank(p) is the
best over the candidates.

``prepare`` decodes, detects and crops once; ``score`` embeds and ranks, so a baseline and a
trained model are scored on exactly the same queries.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import cv2
import numpy as np

from detectors.category_map import CategoryMap
from engine.data.catalog import Catalog, CatalogError, Pair
from engine.config import Preprocessing
from engine.data.detection import Detector
from engine.data.images import load_square, query_crop
from engine.metrics import bootstrap_recall, distance_accuracy, euclidean_distances, group_min, rank_of, recall_at_k, recall_curve
from engine.data.proposals import Detect, SceneCrop, SceneProposals, catalog_proposals, windows
from engine.index.hubness import DEFAULT_K, HubCorrection
from engine.index.views import fuse_views
from evaluation.room import RoomPair, RoomSpec, crop_groups, paired_room_difference, room_lists, room_pairs, room_summary, scene_distances

if TYPE_CHECKING:  # annotations only: importing the embedder loads TensorFlow
    from engine.model.embedder import Embed

logger = logging.getLogger(__name__)
KS = (1, 5, 10, 20, 50)
CROP_CHOICES = ("imagenet", "confidence", "best")  # how one query box is picked among a pair's candidates


@dataclass(frozen=True)
class EvalConfig:
    """ks: the k of recall@k; seen_products: the products of the evaluated model's training pairs
    (None: no seen / unseen split); new_products: products that did not exist when the model was
    trained, added to the index only (the new-products protocol; None: no new / known split);
    room: the product groups for the whole-room scores
    (``evaluation.room``; None: not scored). The crops' preprocessing (size, padding, detector
    confidence) is the model's (``engine.config.Preprocessing``), passed to ``prepare``."""

    ks: tuple[int, ...] = KS
    seen_products: frozenset[str] | None = None
    room: RoomSpec | None = None
    new_products: frozenset[str] | None = None
    hub_beta: float = 0.0  # > 0: products ranked by distance minus hub_beta x their room density (engine.index.hubness)
    hub_k: int = DEFAULT_K  # reference crops averaged per product for that density (EvalInputs.reference_images)
    views_weight: float = 0.0  # > 0: each catalog photo's vector blended with its product's views (EvalInputs.view_images)
    p2s_crops: str = "group"  # "where is it used?" over the scene crops of the product's group (as served; with room), or "every"
    p2s_windows: bool = True  # "where is it used?" also over each scene's 14 fixed windows (crops of no group), as served

    def __post_init__(self) -> None:
        if not self.ks or min(self.ks) < 1:
            raise ValueError(f"ks must be positive integers, got {self.ks}")
        if not self.hub_beta >= 0 or self.hub_k < 1:
            raise ValueError(f"hub_beta must be >= 0 and hub_k >= 1, got {self.hub_beta} and {self.hub_k}")
        if not self.views_weight >= 0:
            raise ValueError(f"views_weight must be >= 0, got {self.views_weight}")
        if self.p2s_crops not in P2S_CROPS:
            raise ValueError(f"p2s_crops must be one of {', '.join(P2S_CROPS)}, got {self.p2s_crops!r}")

    @property
    def p2s_in_group(self) -> bool:
        """Whether product -> scene ranks count only the crops of the product's group (needs ``room``)."""
        return self.p2s_crops == "group" and self.room is not None


P2S_CROPS = ("group", "every")  # EvalConfig.p2s_crops


@dataclass(frozen=True)
class PairCase:
    """One ground-truth pair and the crops that may answer it (indexes into ``EvalInputs.crops``)."""

    product_id: str
    type: str
    scene: str
    reachable: bool
    box_source: str  # "pairs.csv", "detector", "unreachable" or "unreadable"
    typed_crops: tuple[int, ...]
    any_crops: tuple[int, ...]
    query_crop: int | None = None  # the one typed crop that queries (``choose_query_crops``); None: the best of them


@dataclass
class EvalInputs:
    """Decoded once, scored by any number of models.

    product_images: uint8 (M, S, S, 3), one per products.csv row, with ``image_products`` (M,).
    crop_images: uint8 (C, S, S, 3), one per ``crops`` entry.
    """

    preprocessing: Preprocessing
    product_images: np.ndarray
    image_products: list[str]
    product_ids: list[str]  # distinct, in catalog order
    first_image: dict[str, int]  # product id -> its first row of product_images
    types: dict[str, str]
    crops: list[SceneCrop]
    crop_images: np.ndarray
    scenes: list[str]  # scenes with at least one crop, in catalog order
    window_scenes: list[str]  # the scene of each fixed window, for the all-pairs score
    window_images: np.ndarray  # uint8 (W, S, S, 3)
    cases: list[PairCase]
    unreachable_types: dict[str, int]
    detector: str
    skipped_scenes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    crop_choice: str = "best"  # the rule that picked each pair's query crop (CROP_CHOICES)
    room_query: dict[tuple[str, str], int] = field(default_factory=dict)  # (product, scene) -> its chosen group crop
    # uint8 (R, S, S, 3): crops of reference room photos (never the evaluated scenes) for the hub correction
    reference_images: np.ndarray | None = None
    # uint8 (V, S, S, 3): in-room views of catalog products (engine.index.views; never pasted into an evaluated
    # scene), with view_products (V,): blended into their photos' vectors when EvalConfig.views_weight > 0
    view_images: np.ndarray | None = None
    view_products: list[str] = field(default_factory=list)

    @property
    def image_size(self) -> int:
        return self.preprocessing.image_size


def prepare(
    catalog: Catalog,
    preprocessing: Preprocessing,
    *,
    detector: Detector | None,
    category_map: CategoryMap,
    detect: Detect | None = None,
    page_labels: Collection[str] | None = None,
) -> EvalInputs:
    """Decode the catalog, propose and cut the scene crops (``engine.data.proposals``), and list the
    pairs with the crops that may answer them.

    ``detect(path, image) -> list[Detection]`` defaults to ``detector.detect(image)`` (pass a
    ``DetectionCache.detect`` to reuse cached detections). A detector is required only when some
    pair has no box. ``page_labels``: keep only the detections of those labels the page offers
    (``engine.data.proposals.page_boxes``); None keeps every confident detection.
    """
    t0 = time.perf_counter()
    if any(p.box is None for p in catalog.pairs) and detector is None:
        raise CatalogError(
            f"{catalog.root}: pairs.csv rows have no boxes, so the detector must propose crops; pass detector weights"
        )
    if detector is not None:
        category_map.check_classes(detector.class_names)
        detect = detect or (lambda path, image: detector.detect(image))
    size = preprocessing.image_size
    crops: list[SceneCrop] = []
    crop_images: list[np.ndarray] = []
    window_scenes: list[str] = []
    window_images: list[np.ndarray] = []
    scenes, skipped, cases = [], [], []
    unreachable: Counter = Counter()
    seen_pairs: set[tuple[str, str]] = set()
    for proposal in catalog_proposals(catalog, detect, preprocessing, category_map.classes, page_labels):
        start = len(crops)
        if proposal.image is None:
            skipped.append(proposal.scene.scene)
        else:
            crops += proposal.crops
            crop_images += [query_crop(proposal.image, c.box, size, preprocessing.crop_padding) for c in proposal.crops]
            scenes.append(proposal.scene.scene)
            boxes = windows(proposal.image.shape[1], proposal.image.shape[0])
            window_scenes += [proposal.scene.scene] * len(boxes)
            window_images += [query_crop(proposal.image, box, size, preprocessing.crop_padding) for box in boxes]
        for pair in proposal.pairs:
            if (pair.product_id, pair.scene) not in seen_pairs:
                seen_pairs.add((pair.product_id, pair.scene))
                cases.append(_pair_case(pair, proposal, crops, start, catalog.types, category_map, unreachable))
    first_image: dict[str, int] = {}
    for i, p in enumerate(catalog.products):
        first_image.setdefault(p.product_id, i)

    def stack(images: list[np.ndarray]) -> np.ndarray:
        return np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8)

    return EvalInputs(
        preprocessing=preprocessing,
        product_images=stack([load_square(p.image, size, reduced=preprocessing.catalog_decode == "reduced") for p in catalog.products]),
        image_products=[p.product_id for p in catalog.products],
        product_ids=catalog.product_ids,
        first_image=first_image,
        types=catalog.types,
        crops=crops,
        crop_images=stack(crop_images),
        scenes=scenes,
        window_scenes=window_scenes,
        window_images=stack(window_images),
        cases=cases,
        unreachable_types=dict(sorted(unreachable.items())),
        detector=getattr(detector, "fingerprint", "") if detector is not None else "",
        skipped_scenes=skipped,
        seconds=time.perf_counter() - t0,
    )


def _pair_case(pair: Pair, proposal: SceneProposals, crops: list[SceneCrop], start: int, types: dict[str, str],
               category_map: CategoryMap, unreachable: Counter) -> PairCase:
    """Which of the scene's crops (``crops[start:]``) may answer ``pair``: its own box, or the
    detections of the class its type maps to (none: unreachable, counted by type)."""
    ptype = types[pair.product_id]
    if proposal.image is None:
        return PairCase(pair.product_id, ptype, pair.scene, False, "unreadable", (), ())
    if pair.box is not None:
        own = next(i for i in range(start, len(crops)) if crops[i].source == "pairs.csv" and crops[i].box == pair.box)
        return PairCase(pair.product_id, ptype, pair.scene, True, "pairs.csv", (own,), (own,))
    detected = tuple(i for i in range(start, len(crops)) if crops[i].source == "detector")
    cls = category_map.class_for(ptype)
    if cls is None:
        unreachable[ptype] += 1
        return PairCase(pair.product_id, ptype, pair.scene, False, "unreachable", (), detected)
    typed = tuple(i for i in detected if crops[i].label == cls)
    return PairCase(pair.product_id, ptype, pair.scene, True, "detector", typed, detected)


def choose_query_crops(inputs: EvalInputs, rule: str, embed: Callable[[np.ndarray], np.ndarray] | None = None,
                       spec: RoomSpec | None = None, size: int | None = None) -> EvalInputs:
    """``inputs`` with one query crop fixed per pair among its candidates: its typed crops (the main
    protocol) and, with ``spec``, its product group's crops of the scene (the whole-room s2p).

    ``rule`` (``CROP_CHOICES``): ``imagenet``, the candidate whose ``embed`` vector (uint8
    (N, s, s, 3) → float (N, D); crops and product photos resized to ``size`` when given) is
    nearest to the product's nearest photo; ``confidence``, the most confident candidate (a
    ``pairs.csv`` box counts 1); ``best``, no choice (rank(p) stays the best over the candidates).
    Ties go to the earlier crop. The rule never sees the evaluated model, so every model scored on
    the returned inputs queries the same crops.
    """
    if rule not in CROP_CHOICES:
        raise ValueError(f"crop choice {rule!r} is not one of {', '.join(CROP_CHOICES)}")
    if rule == "best":
        return replace(inputs, crop_choice=rule, cases=[replace(c, query_crop=None) for c in inputs.cases], room_query={})
    if rule == "imagenet" and embed is None:
        raise ValueError("the 'imagenet' crop choice needs the ImageNet features' embed function")
    main = {i: c.typed_crops for i, c in enumerate(inputs.cases) if c.reachable and c.typed_crops}
    room: dict[tuple[str, str], tuple[int, ...]] = {}
    if spec is not None:
        groups = crop_groups([c.label for c in inputs.crops], spec)
        of_scene_group: dict[tuple[str, str], list[int]] = defaultdict(list)
        for i, (crop, group) in enumerate(zip(inputs.crops, groups)):
            if group:
                of_scene_group[(crop.scene, group)].append(i)
        for c in inputs.cases:
            group = spec.type_group.get(c.type, "")
            if group and of_scene_group.get((c.scene, group)):
                room[(c.product_id, c.scene)] = tuple(of_scene_group[(c.scene, group)])
    asks = {(inputs.cases[i].product_id, v) for i, v in main.items()} | {(k[0], v) for k, v in room.items()}  # (product, candidates)
    several = [(pid, cands) for pid, cands in asks if len(cands) > 1]
    if rule == "confidence":
        def pick(product: str, cands: tuple[int, ...]) -> int:
            return max(cands, key=lambda i: (inputs.crops[i].confidence, -i))
    else:
        crops = sorted({i for _, cands in several for i in cands})
        products = {pid for pid, _ in several}
        rows = [i for i, p in enumerate(inputs.image_products) if p in products]
        crop_vec = dict(zip(crops, _embed_at(embed, inputs.crop_images[crops], size))) if crops else {}
        image_vec = _embed_at(embed, inputs.product_images[rows], size) if rows else np.zeros((0, 1), np.float32)
        rows_of: dict[str, list[int]] = defaultdict(list)
        for j, r in enumerate(rows):
            rows_of[inputs.image_products[r]].append(j)

        def pick(product: str, cands: tuple[int, ...]) -> int:
            d = euclidean_distances(np.stack([crop_vec[i] for i in cands]), image_vec[rows_of[product]]).min(axis=1)
            return cands[int(np.argmin(d))]

    chosen = {(pid, cands): (cands[0] if len(cands) == 1 else pick(pid, cands)) for pid, cands in asks}
    cases = [replace(c, query_crop=chosen[(c.product_id, main[i])] if i in main else None) for i, c in enumerate(inputs.cases)]
    room_query = {key: chosen[(key[0], cands)] for key, cands in room.items()}
    logger.info("query crops chosen by %s: %d choices among several candidates", rule, len(several))
    return replace(inputs, cases=cases, crop_choice=rule, room_query=room_query)


def _embed_at(embed: Callable[[np.ndarray], np.ndarray], images: np.ndarray, size: int | None) -> np.ndarray:
    """``embed`` of uint8 (N, S, S, 3) images resized to ``size`` (as given when None) → float32 (N, D)."""
    if size and images.shape[1] != size:
        images = np.stack([cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA) for im in images])
    from engine.model.embedder import embed_batches

    return np.asarray(embed_batches(embed, images, 0, 256), np.float32)


@dataclass
class PairResult:
    """Ranks of one pair: scene → product (typed crops, any crop, any crop or window), product →
    scene; ``inf`` = never found."""

    case: PairCase
    rank: float
    rank_any: float
    scene_rank: float
    matched_crop: int | None
    rank_all: float = float("inf")
    rank_best: float = float("inf")  # the best rank over the typed crops, whichever queried

    @property
    def rank_fallback(self) -> float:
        """The class-agnostic fallback: with no crop of the pair's class, its best over any crop."""
        return self.rank if self.case.typed_crops else self.rank_any


@dataclass
class EvalResult:
    """Every number of one evaluation, plus what the plots need.

    product_emb: float32 (P, D), one row per distinct product (its first image);
    crop_emb: float32 (C, D); top: int (C, 5) the 5 nearest products of each crop.
    """

    summary: dict
    pairs: list[PairResult]
    product_emb: np.ndarray
    crop_emb: np.ndarray
    top: np.ndarray
    curves: dict[str, list[float]]  # recall at k = 1..len for "scene_to_product", "product_to_scene"
    room_pairs: list[RoomPair] = field(default_factory=list)  # the whole-room ranks of every pair (with EvalConfig.room)
    # per reachable pair that queried a crop: (distance to its own product, to the best and second-best other
    # product (a photo identical to its own excluded), its rank, its index in ``pairs``), float64 (R, 5); the rows' scenes
    match_rows: np.ndarray = field(default_factory=lambda: np.zeros((0, 5)))
    match_scenes: list[str] = field(default_factory=list)


def _nan_to_none(value):
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_none(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def score(inputs: EvalInputs, embed: Embed, cfg: EvalConfig = EvalConfig(), *, curve_max: int = 100) -> EvalResult:
    """Embed the prepared images with ``embed`` and compute every rank and metric of the protocol."""
    from engine.model.embedder import embed_batches

    t0 = time.perf_counter()
    image_emb = embed_batches(embed, inputs.product_images, 0, 256)
    if cfg.views_weight > 0:
        if inputs.view_images is None or not len(inputs.view_images):
            raise ValueError("views_weight > 0 needs the products' views (EvalInputs.view_images): none were prepared")
        image_emb = fuse_views(image_emb, inputs.image_products, embed_batches(embed, inputs.view_images, 0, 256), inputs.view_products,
                               cfg.views_weight)
    crop_emb = embed_batches(embed, inputs.crop_images, 0, 256)
    window_emb = embed_batches(embed, inputs.window_images, 0, 256)
    bias = _hub_bias(inputs, embed, image_emb, cfg) if cfg.hub_beta > 0 else None
    results, top, crop_prod, crop_raw = _rank_pairs(inputs, image_emb, crop_emb, window_emb, bias,
                                                    cfg.room if cfg.p2s_in_group else None, cfg.p2s_windows)
    product_emb = image_emb[[inputs.first_image[p] for p in inputs.product_ids]] if len(image_emb) else image_emb
    summary = _summary(inputs, results, crop_emb, product_emb, cfg)
    whole_room = _room(inputs, crop_prod, cfg) if cfg.room is not None else []
    if cfg.room is not None:
        groups = crop_groups([c.label for c in inputs.crops], cfg.room)
        per_scene = sum(bool(g) for g in groups) / max(1, len(inputs.scenes))
        summary["room"] = room_summary(whole_room, inputs.types, cfg.room, cfg.seen_products, per_scene, cfg.new_products)
    summary["seconds"] = {"prepare": inputs.seconds, "score": time.perf_counter() - t0}
    reach = np.array([r.rank for r in results if r.case.reachable], np.float64)
    scene_ranks = np.array([r.scene_rank for r in results], np.float64)
    curves = {
        "scene_to_product": [recall_at_k(reach, k) for k in range(1, curve_max + 1)],
        "product_to_scene": [recall_at_k(scene_ranks, k) for k in range(1, curve_max + 1)],
    }
    rows, scenes = _match_rows(inputs, results, crop_raw)  # the calibration reads distances, as the service shows them
    return EvalResult(_nan_to_none(summary), results, product_emb, crop_emb, top, curves, whole_room, rows, scenes)


def _match_rows(inputs: EvalInputs, results: list[PairResult], crop_prod: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """What the match calibration reads (``evaluation.calibration``): for each reachable pair whose
    query crop is known, the crop's distance to its own product, to the best and second-best other
    products, and the pair's rank. Products at exactly the own product's distance (the same photo
    under another id) are not "other"."""
    pid_col = {p: i for i, p in enumerate(inputs.product_ids)}
    out, scenes = [], []
    for i, r in enumerate(results):
        if not r.case.reachable or r.matched_crop is None or crop_prod.shape[1] < 3:
            continue
        row = crop_prod[r.matched_crop]
        own = float(row[pid_col[r.case.product_id]])
        others = np.partition(row[row != own], 1)[:2] if (row != own).sum() >= 2 else np.array([np.inf, np.inf])
        out.append((own, float(others.min()), float(others.max()), r.rank, i))
        scenes.append(r.case.scene)
    return np.array(out, np.float64).reshape(-1, 5), scenes


def _room(inputs: EvalInputs, crop_prod: np.ndarray, cfg: EvalConfig) -> list[RoomPair]:
    """The whole-room ranks of every pair (``evaluation.room``) from the crops' distances to the products."""
    spec = cfg.room
    groups = crop_groups([c.label for c in inputs.crops], spec)
    scenes = [c.scene for c in inputs.crops]
    product_types = [inputs.types[p] for p in inputs.product_ids]
    rooms = room_lists(crop_prod, scenes, groups, [c.confidence for c in inputs.crops], inputs.product_ids, product_types, spec)
    col = {p: i for i, p in enumerate(inputs.product_ids)}
    return room_pairs([(c.product_id, c.type, c.scene) for c in inputs.cases], crop_prod, scenes, groups, rooms, col, spec,
                      product_types, inputs.room_query)


def _hub_bias(inputs: EvalInputs, embed: Embed, image_emb: np.ndarray, cfg: EvalConfig) -> np.ndarray:
    """float (P,): hub_beta x each product's room density (``engine.index.hubness``: its photos' lowest
    mean distance to their hub_k nearest reference crops), in ``inputs.product_ids`` order."""
    from engine.model.embedder import embed_batches

    if inputs.reference_images is None or not len(inputs.reference_images):
        raise ValueError("the hub correction needs reference room crops (EvalInputs.reference_images): none were prepared")
    reference = embed_batches(embed, inputs.reference_images, 0, 256)
    hub = HubCorrection.fit(image_emb, inputs.image_products, reference, k=cfg.hub_k, beta=cfg.hub_beta)
    return cfg.hub_beta * np.array([hub.density[p] for p in inputs.product_ids], np.float64)


def _rank_pairs(inputs: EvalInputs, image_emb: np.ndarray, crop_emb: np.ndarray, window_emb: np.ndarray,
                bias: np.ndarray | None = None, p2s_groups: RoomSpec | None = None,
                p2s_windows: bool = False) -> tuple[list[PairResult], np.ndarray, np.ndarray, np.ndarray]:
    """Every pair's ranks, the 5 nearest products of each crop (int (C, 5)), the crops' scores of each
    product (float (C, P): the distance to its nearest image, minus ``bias`` (P,) when given: the
    hub correction) that rank them, and the distances themselves. ``p2s_groups``: product → scene
    ranks over the crops of the product's group (``scene_distances``); None: over every crop.

    image_emb: float32 (M, D), one row per catalog image; crop_emb: float32 (C, D); window_emb:
    float32 (W, D), the fixed windows of ``inputs.window_scenes``.
    """
    pid_col = {p: i for i, p in enumerate(inputs.product_ids)}
    n_products = len(inputs.product_ids)
    image_group = np.array([pid_col[p] for p in inputs.image_products], np.int64)
    # crop x product: distance to the product's nearest image
    crop_raw = (group_min(euclidean_distances(crop_emb, image_emb), image_group, n_products) if len(crop_emb) and len(image_emb)
                else np.full((len(crop_emb), n_products), np.inf))
    crop_prod = crop_raw - bias[None] if bias is not None else crop_raw
    top = np.argsort(crop_prod, axis=1, kind="stable")[:, :5] if n_products else np.zeros((len(crop_emb), 0), np.int64)
    win_prod = (group_min(euclidean_distances(window_emb, image_emb), image_group, n_products) if len(window_emb) and len(image_emb)
                else np.full((len(window_emb), n_products), np.inf))
    if bias is not None:
        win_prod = win_prod - bias[None]
    windows_of: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(inputs.window_scenes):
        windows_of[s].append(i)
    crops_of: dict[str, list[int]] = defaultdict(list)
    for i, c in enumerate(inputs.crops):
        crops_of[c.scene].append(i)
    # product x scene: distance of the product's nearest image to the scene's nearest crop
    scene_col = {s: i for i, s in enumerate(inputs.scenes)}
    crop_scene = np.array([scene_col[c.scene] for c in inputs.crops], np.int64)
    query_products = sorted({c.product_id for c in inputs.cases})
    prod_scene = {}
    if query_products and len(crop_emb):
        q_index = {p: i for i, p in enumerate(query_products)}
        rows = [i for i, p in enumerate(inputs.image_products) if p in q_index]
        where, where_scene, where_label = crop_emb, crop_scene, [c.label for c in inputs.crops]
        if p2s_windows and len(window_emb):  # the windows too, as crops of no group
            where = np.concatenate([crop_emb, window_emb])
            where_scene = np.concatenate([crop_scene, np.array([scene_col[s] for s in inputs.window_scenes], np.int64)])
            where_label = where_label + [""] * len(window_emb)
        d = group_min(euclidean_distances(image_emb[rows], where).T, np.array([q_index[inputs.image_products[r]] for r in rows]),
                      len(query_products)).T  # (products, crops): the product's nearest image
        if p2s_groups is None:
            per_product = group_min(d, where_scene, len(inputs.scenes))
        else:
            per_product = scene_distances(d, where_scene, len(inputs.scenes), crop_groups(where_label, p2s_groups),
                                          [p2s_groups.type_group.get(inputs.types[p], "") for p in query_products])
        prod_scene = {p: per_product[i] for i, p in enumerate(query_products)}
    results = []
    for case in inputs.cases:
        col = pid_col[case.product_id]
        typed = [(rank_of(crop_prod[c], col), c) for c in case.typed_crops]
        best = min(typed) if typed else (float("inf"), None)
        query = best if case.query_crop is None else (rank_of(crop_prod[case.query_crop], col), case.query_crop)
        rank_any = min((rank_of(crop_prod[c], col) for c in case.any_crops), default=float("inf"))
        rank_any = min(rank_any, best[0])
        found = case.scene in scene_col and case.product_id in prod_scene
        srank = rank_of(prod_scene[case.product_id], scene_col[case.scene]) if found else float("inf")
        rank_all = min([rank_of(crop_prod[c], col) for c in crops_of.get(case.scene, [])]
                       + [rank_of(win_prod[w], col) for w in windows_of.get(case.scene, [])], default=float("inf"))
        results.append(PairResult(case, query[0], rank_any, srank, query[1], rank_all, best[0]))
    return results, top, crop_prod, crop_raw


def _summary(inputs: EvalInputs, results: list[PairResult], crop_emb: np.ndarray, product_emb: np.ndarray, cfg: EvalConfig) -> dict:
    """Every headline number of one scoring (see the module docstring)."""
    ks = cfg.ks
    reach = [r for r in results if r.case.reachable]
    ranks = np.array([r.rank for r in reach], np.float64)
    by_type: dict[str, list[float]] = defaultdict(list)
    for r in reach:
        by_type[r.case.type].append(r.rank)
    per_type = {t: {"pairs": len(rs), "recall": recall_curve(np.array(rs), ks)} for t, rs in sorted(by_type.items())}
    matched = [r for r in reach if r.matched_crop is not None]
    da = distance_accuracy(
        crop_emb[[r.matched_crop for r in matched]], [r.case.product_id for r in matched], product_emb,
        inputs.product_ids, [inputs.types[p] for p in inputs.product_ids],
    ) if matched else None
    sources = Counter(c.box_source for c in inputs.cases)
    all_any = np.array([r.rank_any for r in results if r.case.box_source != "unreadable"], np.float64)
    scene_ranks = np.array([r.scene_rank for r in results], np.float64)
    return {
        "protocol": {
            "catalog_images": len(inputs.image_products), "catalog_products": len(inputs.product_ids), "scenes": len(inputs.scenes),
            "skipped_scenes": inputs.skipped_scenes, "crops": len(inputs.crops),
            "crops_by_source": dict(Counter(c.source for c in inputs.crops)),
            "pairs": len(results), "reachable_pairs": len(reach),
            "unreachable_pairs": sum(not r.case.reachable for r in results), "unreachable_types": inputs.unreachable_types,
            "pairs_by_box_source": dict(sources),
            "boxes": "pairs.csv" if sources.get("pairs.csv") and not sources.get("detector") and not sources.get("unreachable")
            else ("detector" if not sources.get("pairs.csv") else "pairs.csv where given, else detector"),
            "ks": list(ks), "min_confidence": inputs.preprocessing.min_confidence,
            "crop_padding": inputs.preprocessing.crop_padding, "image_size": inputs.image_size, "detector": inputs.detector,
            "crop_choice": inputs.crop_choice,
            "chosen_among_several": sum(len(c.typed_crops) > 1 for c in inputs.cases if c.reachable),
            "product_to_scene_crops": ("the product's group" if cfg.p2s_in_group else "every crop")
            + (", and 14 fixed windows a scene" if cfg.p2s_windows else ""),
        },
        "scene_to_product": {
            "recall": recall_curve(ranks, ks),
            "recall_ci95": bootstrap_recall(ranks, [r.case.scene for r in reach], ks),
            "recall_best_box": recall_curve(np.array([min(r.rank, r.rank_best) for r in reach], np.float64), ks),
            "recall_any_crop": recall_curve(np.array([r.rank_any for r in reach], np.float64), ks),
            "recall_any_crop_all_pairs": recall_curve(all_any, ks),
            "found": int(np.isfinite(ranks).sum()),
            "median_rank": float(np.median(ranks)) if len(ranks) else float("nan"),
            "per_type": per_type,
            "coverage": float(np.mean([bool(r.case.typed_crops) for r in reach])) if reach else float("nan"),
            "covered": sum(bool(r.case.typed_crops) for r in reach),
            "recall_fallback": recall_curve(np.array([r.rank_fallback for r in reach], np.float64), ks),
            **_seen_split(reach, cfg),
        },
        "scene_to_product_all_pairs": {
            "pairs": len([r for r in results if r.case.box_source != "unreadable"]),
            "windows_per_scene": len(inputs.window_scenes) / max(1, len(inputs.scenes)),
            "recall": recall_curve(np.array([r.rank_all for r in results if r.case.box_source != "unreadable"], np.float64), ks),
        },
        "product_to_scene": {"queries": len(results), "recall": recall_curve(scene_ranks, ks),
                             "recall_ci95": bootstrap_recall(scene_ranks, [r.case.scene for r in results], ks)},
        **_new_split(results, cfg),
        "distance_accuracy": da.top1 if da else float("nan"),
        "distance_accuracy_top_3": da.top3 if da else float("nan"),
        "distance_accuracy_per_type": {t: {"top1": v[0], "top3": v[1], "queries": v[2], "products": v[3]}
                                       for t, v in (da.per_category.items() if da else [])},
    }


def _seen_split(reach: list[PairResult], cfg: EvalConfig) -> dict:
    """Recall of the pairs whose product was / was not in the model's training pairs."""
    if cfg.seen_products is None:
        return {}
    out = {}
    for name, keep in (("seen", True), ("unseen", False)):
        ranks = np.array([r.rank for r in reach if (r.case.product_id in cfg.seen_products) == keep], np.float64)
        out[f"{name}_pairs"] = len(ranks)
        out[f"recall_{name}"] = recall_curve(ranks, cfg.ks)
    return out


def _new_split(results: list[PairResult], cfg: EvalConfig) -> dict:
    """The new-products protocol: s2p and p2s recall (with scene-bootstrap intervals) of the pairs
    of products new to the model (``cfg.new_products``) and of the known ones."""
    if cfg.new_products is None:
        return {}
    out = {}
    for name, keep in (("new", True), ("known", False)):
        rs = [r for r in results if (r.case.product_id in cfg.new_products) == keep]
        reach = [r for r in rs if r.case.reachable]
        ranks = np.array([r.rank for r in reach], np.float64)
        scene_ranks = np.array([r.scene_rank for r in rs], np.float64)
        out[name] = {"pairs": len(rs), "reachable_pairs": len(reach), "products": len({r.case.product_id for r in rs}),
                     "s2p_recall": recall_curve(ranks, cfg.ks), "s2p_recall_ci95": bootstrap_recall(ranks, [r.case.scene for r in reach], cfg.ks),
                     "p2s_recall": recall_curve(scene_ranks, cfg.ks),
                     "p2s_recall_ci95": bootstrap_recall(scene_ranks, [r.case.scene for r in rs], cfg.ks)}
    return {"new_products": out}


def paired_difference(a: EvalResult, b: EvalResult, ks: Sequence[int], spec: RoomSpec | None = None,
                      types: dict[str, str] | None = None, new_products: frozenset[str] | None = None) -> dict[str, dict]:
    """recall@k of ``a`` minus ``b`` scored on the same prepared inputs, with a 95% scene-bootstrap
    interval; with ``spec`` (and both scored with it) also the whole-room differences (``room``);
    with ``new_products`` also over the new and the known products' pairs (``*_new``, ``*_known``)."""
    out: dict[str, dict[int, dict[str, object]]] = {}
    reach_a = [r for r in a.pairs if r.case.reachable]
    reach_b = [r for r in b.pairs if r.case.reachable]
    if [r.case for r in reach_a] != [r.case for r in reach_b]:
        raise ValueError("paired comparison needs two scores of the same prepared inputs")
    tasks = [("scene_to_product", reach_a, reach_b, lambda r: r.rank), ("product_to_scene", a.pairs, b.pairs, lambda r: r.scene_rank)]
    if new_products is not None:
        for side, keep in (("new", True), ("known", False)):
            for task, xs, ys, get in tasks[:2]:
                rows = [i for i, r in enumerate(xs) if (r.case.product_id in new_products) == keep]
                tasks.append((f"{task}_{side}", [xs[i] for i in rows], [ys[i] for i in rows], get))
    for task, xs, ys, get in tasks:
        ra, rb, scenes = [get(r) for r in xs], [get(r) for r in ys], [r.case.scene for r in xs]
        ra, rb = np.array(ra, np.float64), np.array(rb, np.float64)
        ci = bootstrap_recall(ra, scenes, ks, other=rb)
        out[task] = {int(k): {"difference": (float((ra <= k).mean() - (rb <= k).mean()) if len(ra) else None), "ci95": list(ci[k])} for k in ks}
    if a.room_pairs and b.room_pairs and spec is not None:
        out["room"] = paired_room_difference(a.room_pairs, b.room_pairs, spec, spec.coco_types, types, new_products)
    return _nan_to_none(out)


def flat_metrics(summary: dict, prefix: str = "") -> dict[str, float]:
    """The headline numbers of a summary as flat MLflow metric names (the same for every run).

    ``s2p_recall_at_{k}``, ``s2p_any_crop_recall_at_{k}``, ``p2s_recall_at_{k}``,
    ``distance_accuracy``, ``distance_accuracy_top_3``, ``reachable_pairs``, ``unreachable_pairs``,
    and ``s2p_recall_at_10/<type>`` per type.
    """
    out: dict[str, float] = {}
    s2p, p2s = summary["scene_to_product"], summary["product_to_scene"]
    for k, v in s2p["recall"].items():
        out[f"s2p_recall_at_{k}"] = v
    for k, v in s2p["recall_any_crop"].items():
        out[f"s2p_any_crop_recall_at_{k}"] = v
    for k, v in s2p.get("recall_best_box", {}).items():
        out[f"s2p_best_box_recall_at_{k}"] = v
    for k, v in p2s["recall"].items():
        out[f"p2s_recall_at_{k}"] = v
    for key, name in (("recall_fallback", "s2p_fallback"), ("recall_seen", "s2p_seen"), ("recall_unseen", "s2p_unseen")):
        for k, v in s2p.get(key, {}).items():
            out[f"{name}_recall_at_{k}"] = v
    for side, block in (summary.get("new_products") or {}).items():
        for task, key in (("s2p", "s2p_recall"), ("p2s", "p2s_recall")):
            for k, v in block[key].items():
                out[f"{task}_{side}_recall_at_{k}"] = v
    for k, v in summary.get("scene_to_product_all_pairs", {}).get("recall", {}).items():
        out[f"s2p_all_pairs_recall_at_{k}"] = v
    assessed = (summary.get("calibration") or {}).get("assessed") or {}
    for key in ("auroc", "ece", "absent_told_no_close_match", "present_in_top10_lost"):
        if assessed.get(key) is not None:
            out[f"calibration_{key}"] = assessed[key]
    out["coverage"] = s2p.get("coverage")
    room = summary.get("room") or {}
    for name, block in (("room_", room), ("room_coco_", room.get("coco_class_pairs") or {}), ("room_new_", room.get("new") or {}),
                        ("room_known_", room.get("known") or {})):
        if block:
            out[f"{name}coverage"] = block.get("coverage")
            for k, v in (block.get("s2p_recall") or {}).items():
                out[f"{name}s2p_recall_at_{k}"] = v
            for k, v in (block.get("s2p_group_recall") or {}).items():
                out[f"{name}s2p_group_recall_at_{k}"] = v
            for k, v in (block.get("room_recall") or {}).items():
                out[f"{name}recall_at_{k}"] = v
    out["distance_accuracy"] = summary["distance_accuracy"]
    out["distance_accuracy_top_3"] = summary["distance_accuracy_top_3"]
    out["reachable_pairs"] = summary["protocol"]["reachable_pairs"]
    out["unreachable_pairs"] = summary["protocol"]["unreachable_pairs"]
    return {prefix + k: float(v) for k, v in out.items() if v is not None}


def table(rows: Sequence[tuple[str, dict]], ks: Sequence[int] = (1, 5, 10, 20)) -> str:
    """A text table: one row per (name, summary): scene → product recall@k, product → scene recall@10,
    DA, right-class crop coverage, unseen-product recall@10 and all-pairs recall@10."""
    head = ["model"] + [f"s2p@{k}" for k in ks] + ["p2s@10", "DA", "DA@3", "cover", "unseen", "all@10"]
    lines = []
    for name, s in rows:
        r, p = s["scene_to_product"]["recall"], s["product_to_scene"]["recall"]

        def f(v):
            return "   -  " if v is None else f"{v:6.3f}"

        s2p = s["scene_to_product"]
        unseen = s2p.get("recall_unseen") or {}
        everything = (s.get("scene_to_product_all_pairs") or {}).get("recall") or {}
        lines.append([name] + [f(r.get(k, r.get(str(k)))) for k in ks]
                     + [f(p.get(10, p.get("10"))), f(s["distance_accuracy"]), f(s["distance_accuracy_top_3"]), f(s2p.get("coverage")),
                        f(unseen.get(10, unseen.get("10"))), f(everything.get(10, everything.get("10")))])
    width = max([len(h) for h in [head[0]] + [n for n, _ in rows]])
    out = [f"{head[0]:<{width}} " + " ".join(f"{h:>6}" for h in head[1:])]
    out.append("-" * len(out[0]))
    out += [f"{line[0]:<{width}} " + " ".join(line[1:]) for line in lines]
    return "\n".join(out)
