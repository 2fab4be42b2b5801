"""The whole room, measured: every pair of a scene, whatever its product's group, as a shopper meets it.

Pure functions on embeddings (``evaluation.protocol`` prepares the crops and calls them):

- **Groups.** A pair's product belongs to the product group its type maps to (``detectors/
  product_groups.yaml``; a type left out belongs to none). A proposed crop belongs to the group of
  its detector class: a group detector's class is the group, a COCO class goes through the map's
  ``from_classes`` (a chair box is ``seating``). The crops are those the page offers: the confident
  boxes and the fill-ins (``engine.data.proposals``).
- **Coverage** (all pairs): the share of pairs whose scene has a crop of the product's group.
- **s2p recall over all pairs**: as the main protocol, the rank of the product at its query crop
  among its group's crops of the scene (chosen once by a model-independent rule:
  ``evaluation.protocol.choose_query_crops``; without a choice, the best over them), searched over
  the whole catalog; a pair with no such crop (or no group) is a miss at every k. The best over
  them stays as ``s2p_recall_best_box``. **In its group** (``s2p_group_recall``): the same crops, each
  searched among its group's catalog types only (every product when the group holds none), as the
  page searches a proposed object a shopper taps or clicks, and as the room list does.
- **Room recall@k**, no label used: per scene the engine's own "shop this room" list
  (``engine.search.room_ranking``: each object's matches among its group's catalog types, objects
  most confident first, an object's r-th match placed at r / its detector confidence); a pair is found at k
  when its product is among the list's first k.
Each is also reported per group, for products seen / unseen in training, and restricted to the
pairs a COCO detector class could reach (``coco_types``). Ranks are pessimistic (ties count ahead).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from engine.metrics import bootstrap_recall, rank_of, recall_curve
from engine.search import ROOM_ORDER, room_ranking

ROOM_KS = (10, 20, 50)


@dataclass(frozen=True)
class RoomSpec:
    """What the whole-room scores need besides the embeddings.

    type_group: catalog type → product group (types of no group absent); label_group: crop label
    (detector class, or a ``pairs.csv`` box's product type) → product group; coco_types: the types a
    COCO detector class reaches (the pairs of the main protocol with the COCO map); ks: the k of the
    s2p recall; room_ks: the k of room recall; depth: matches kept per object for the room list;
    order: the room list's merge of its objects' matches (``engine.search.ROOM_ORDERS``).
    """

    type_group: Mapping[str, str]
    label_group: Mapping[str, str]
    coco_types: frozenset[str] = field(default_factory=frozenset)
    ks: tuple[int, ...] = (1, 5, 10, 20, 50)
    room_ks: tuple[int, ...] = ROOM_KS
    depth: int = 50
    order: str = ROOM_ORDER  # how the room list merges its objects' matches (engine.search.room_ranking)


@dataclass(frozen=True)
class RoomPair:
    """One pair's whole-room ranks: ``group`` of its product ('' = none), ``covered`` (its scene has a
    crop of that group), ``rank`` (s2p at the chosen query crop among those, else the best over them;
    whole catalog), ``room_rank`` (place in the room list) and ``in_group_rank`` (s2p at the same
    crop(s), searched within the group)."""

    product_id: str
    scene: str
    group: str
    covered: bool
    rank: float
    room_rank: float
    in_group_rank: float = float("inf")
    best_rank: float = float("inf")  # the best s2p rank over all those crops, whichever queried


def crop_groups(labels: Sequence[str], spec: RoomSpec) -> list[str]:
    """The product group of each crop label ('' = none)."""
    return [spec.label_group.get(label, spec.type_group.get(label, "")) for label in labels]


def scene_distances(prod_crop: np.ndarray, crop_scene: np.ndarray, n_scenes: int, crop_group: Sequence[str],
                    product_group: Sequence[str]) -> np.ndarray:
    """float64 (Q, S): each product's distance to each scene for "where is it used?", over the crops of
    its product group: a scene's distance is its nearest crop of that group; a scene with none of them
    comes after every scene that has one (in the order of its nearest crop of any group). A product of
    no group, or of a group no crop has, is ranked over every crop.

    prod_crop: float (Q, C) each product's distance to each crop (its nearest photo's); crop_scene: int
    (C,) each crop's scene in [0, n_scenes); crop_group: (C,) each crop's group ('' = none);
    product_group: (Q,) each product's group ('' = none)."""
    from engine.metrics import group_min

    crop_scene = np.asarray(crop_scene, np.int64)
    prod_crop = np.asarray(prod_crop, np.float64)
    every = group_min(prod_crop, crop_scene, n_scenes)
    finite = prod_crop[np.isfinite(prod_crop)]
    after = (float(finite.max()) - min(0.0, float(finite.min())) + 1.0) if finite.size else 0.0  # past every finite distance
    out = every.copy()
    crop_group = np.asarray(crop_group, object)
    product_group = np.asarray(product_group, object)
    for g in sorted(set(product_group.tolist()) - {""}):
        cols = np.flatnonzero(crop_group == g)
        if not cols.size:
            continue
        rows = np.flatnonzero(product_group == g)
        within = group_min(prod_crop[np.ix_(rows, cols)], crop_scene[cols], n_scenes)
        out[rows] = np.where(np.isfinite(within), within, every[rows] + after)
    return out


def group_columns(product_types: Sequence[str], spec: RoomSpec) -> dict[str, np.ndarray]:
    """Each product group → int (n,) the columns (products) of its types; a group is searched over
    every product when it holds none (absent here)."""
    by_group: dict[str, list[int]] = defaultdict(list)
    for j, t in enumerate(product_types):
        if t in spec.type_group:
            by_group[spec.type_group[t]].append(j)
    return {g: np.array(cols, np.int64) for g, cols in by_group.items()}


def room_lists(crop_prod: np.ndarray, crop_scene: Sequence[str], groups: Sequence[str], confidences: Sequence[float],
               product_ids: Sequence[str], product_types: Sequence[str], spec: RoomSpec) -> dict[str, list[str]]:
    """Each scene's "shop this room" list of product ids.

    crop_prod: float (C, P) distance of each crop to each product (its nearest photo); crop_scene,
    groups, confidences: per crop; product_ids / product_types: per column of ``crop_prod``. Each
    crop of a group searches only the products of that group's types (all products when the
    group holds none); crops of no group are not objects of the room."""
    by_group = group_columns(product_types, spec)
    everything = np.arange(len(product_ids), dtype=np.int64)
    per_scene: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for c, (scene, group) in enumerate(zip(crop_scene, groups)):
        if group:
            per_scene[scene].append((-float(confidences[c]), c))
    out = {}
    for scene, objs in per_scene.items():
        ranked, distances, sure = [], [], []
        for _, c in sorted(objs):
            sure.append(float(confidences[c]))
            cols = by_group.get(groups[c], everything)
            order = cols[np.argsort(crop_prod[c, cols], kind="stable")[: spec.depth]]
            ranked.append([product_ids[j] for j in order])
            distances.append([float(crop_prod[c, j]) for j in order])
        out[scene] = room_ranking(ranked, distances=distances, order=spec.order, confidences=sure)
    return out


def room_pairs(pairs: Sequence[tuple[str, str, str]], crop_prod: np.ndarray, crop_scene: Sequence[str], groups: Sequence[str],
               rooms: Mapping[str, Sequence[str]], product_col: Mapping[str, int], spec: RoomSpec,
               product_types: Sequence[str] | None = None, chosen: Mapping[tuple[str, str], int] | None = None) -> list[RoomPair]:
    """The whole-room ranks of ``pairs`` ((product id, type, scene) each) from the crops' distances
    ``crop_prod`` float (C, P), their scenes and groups, and each scene's room list;
    ``product_types`` (per column of ``crop_prod``) gives the rank within the group (else left inf);
    ``chosen``: (product, scene) → the one group crop that queries (absent: the best of them)."""
    by_group = group_columns(product_types, spec) if product_types is not None else None
    crops_of: dict[tuple[str, str], list[int]] = defaultdict(list)
    for c, (scene, group) in enumerate(zip(crop_scene, groups)):
        if group:
            crops_of[(scene, group)].append(c)
    out = []
    for product, ptype, scene in pairs:
        group = spec.type_group.get(ptype, "")
        crops = crops_of.get((scene, group), []) if group else []
        col = product_col[product]
        best = min((rank_of(crop_prod[c], col) for c in crops), default=float("inf"))
        query = [chosen[(product, scene)]] if chosen and (product, scene) in chosen else crops
        rank = min((rank_of(crop_prod[c], col) for c in query), default=float("inf"))
        in_group_rank = float("inf")
        if by_group is not None and crops:
            cols = by_group[group]  # the pair's own product is of the group: it holds a type
            inside = int(np.searchsorted(cols, col))
            in_group_rank = min(rank_of(crop_prod[c, cols], inside) for c in query)
        room = rooms.get(scene, ())
        room_rank = float(list(room).index(product) + 1) if product in room else float("inf")
        out.append(RoomPair(product, scene, group, bool(crops), rank, room_rank, in_group_rank, best))
    return out


def room_summary(results: Sequence[RoomPair], types: Mapping[str, str], spec: RoomSpec,
                 seen_products: frozenset[str] | None = None, objects_per_scene: float = float("nan"),
                 new_products: frozenset[str] | None = None) -> dict:
    """Coverage, s2p recall and room recall over ``results`` (with intervals), per group, seen /
    unseen, new / known (the new-products protocol: ``new_products`` did not exist at training), and
    over the COCO-class pairs; ``types``: product id → type."""
    def block(rs: Sequence[RoomPair]) -> dict:
        ranks = np.array([r.rank for r in rs], np.float64)
        room = np.array([r.room_rank for r in rs], np.float64)
        scenes = [r.scene for r in rs]
        return {"pairs": len(rs), "coverage": float(np.mean([r.covered for r in rs])) if rs else float("nan"),
                "s2p_recall": recall_curve(ranks, spec.ks), "s2p_recall_ci95": bootstrap_recall(ranks, scenes, spec.ks),
                "s2p_group_recall": recall_curve(np.array([r.in_group_rank for r in rs], np.float64), spec.ks),
                "s2p_recall_best_box": recall_curve(np.array([min(r.rank, r.best_rank) for r in rs], np.float64), spec.ks),
                "room_recall": recall_curve(room, spec.room_ks), "room_recall_ci95": bootstrap_recall(room, scenes, spec.room_ks)}

    out = block(results)
    out["objects_per_scene"] = objects_per_scene
    out["grouped_pairs"] = sum(bool(r.group) for r in results)
    by_group: dict[str, list[RoomPair]] = defaultdict(list)
    for r in results:
        by_group[r.group or "(no group)"].append(r)
    out["per_group"] = {g: {"pairs": len(rs), "coverage": float(np.mean([r.covered for r in rs])),
                            "s2p_recall": recall_curve(np.array([r.rank for r in rs], np.float64), (10,)),
                            "s2p_group_recall": recall_curve(np.array([r.in_group_rank for r in rs], np.float64), (10,)),
                            "room_recall": recall_curve(np.array([r.room_rank for r in rs], np.float64), (50,))}
                        for g, rs in sorted(by_group.items())}
    coco = [r for r in results if types[r.product_id] in spec.coco_types]
    out["coco_class_pairs"] = block(coco)
    if seen_products is not None:
        for name, keep in (("seen", True), ("unseen", False)):
            out[name] = block([r for r in results if (r.product_id in seen_products) == keep])
    if new_products is not None:
        for name, keep in (("new", True), ("known", False)):
            out[name] = block([r for r in results if (r.product_id in new_products) == keep])
    return out


def paired_room_difference(a: Sequence[RoomPair], b: Sequence[RoomPair], spec: RoomSpec, coco_types: frozenset[str] = frozenset(),
                           types: Mapping[str, str] | None = None, new_products: frozenset[str] | None = None) -> dict:
    """``a`` minus ``b`` for the same pairs (matched by product and scene; e.g. two models on the same
    crops, or two detectors): coverage, s2p recall@k and room recall@k with 95% scene-bootstrap
    intervals, over all pairs, over the COCO-class pairs (``coco_types`` with ``types``) and, with
    ``new_products``, over the new and the known products' pairs."""
    index = {(r.product_id, r.scene): r for r in b}
    if len(index) != len(a) or any((r.product_id, r.scene) not in index for r in a):
        raise ValueError("a paired comparison needs whole-room ranks of the same pairs")
    def diff(rs: Sequence[RoomPair]) -> dict:
        other = [index[(r.product_id, r.scene)] for r in rs]
        scenes = [r.scene for r in rs]
        out = {}
        for name, get, ks in (("coverage", lambda r: 1.0 if r.covered else float("inf"), (1,)),
                              ("s2p_recall", lambda r: r.rank, spec.ks), ("s2p_group_recall", lambda r: r.in_group_rank, spec.ks),
                              ("room_recall", lambda r: r.room_rank, spec.room_ks)):
            ra = np.array([get(r) for r in rs], np.float64)
            rb = np.array([get(r) for r in other], np.float64)
            ci = bootstrap_recall(ra, scenes, ks, other=rb)
            out[name] = {int(k): {"difference": float((ra <= k).mean() - (rb <= k).mean()) if len(ra) else None, "ci95": list(ci[k])}
                         for k in ks}
        return out

    result = {"all_pairs": diff(list(a))}
    if coco_types and types is not None:
        result["coco_class_pairs"] = diff([r for r in a if types[r.product_id] in coco_types])
    if new_products is not None:
        result["new_products"] = diff([r for r in a if r.product_id in new_products])
        result["known_products"] = diff([r for r in a if r.product_id not in new_products])
    return result
