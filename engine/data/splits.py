"""Held-out scene lists: an evaluation split that no training run has seen.

A scene list is a text file, one scene name (as in ``scenes.csv``) per line; blank lines and
lines starting with ``#`` are ignored. ``training.fit`` also stores its own train/validation split
as ``split.json`` (``{"train": [...], "val": [...]}``); such a file is read as its ``val`` list.

``training.mine_triplets --holdout-scenes`` and ``training.fit --holdout-scenes`` drop the listed
scenes before anything is mined, split or trained; ``evaluation.evaluate --scenes`` evaluates
exactly them.

A product list (same format, one product id per line) names *new products*: products that do not
exist when the model is trained (``new_products``; ``training.fit --holdout-products`` and
``training.mine_hard_negatives --holdout-products`` drop them from everything training sees:
proxies, the image bank, queries, negatives, synthetic views, validation), and that are added to
the index only afterwards; ``evaluation.evaluate --new-products`` scores their pairs apart.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

import numpy as np

from engine.data.catalog import Catalog, CatalogError
from engine.files import write_text_atomic


def _read_list_text(path: Path, what: str, make: str) -> str:
    """The text of a scene or product list file, or a ``CatalogError`` saying what is wrong with it."""
    try:
        return path.read_text()
    except FileNotFoundError:
        raise CatalogError(f"{what} {path} not found; make one with `{make}`") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CatalogError(f"{what} {path} cannot be read: {exc}") from None


def _list_lines(text: str) -> list[str]:
    """The names of a list file: one per line, blank lines and ``#`` comments skipped."""
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def read_scene_list(path: str | Path) -> tuple[str, ...]:
    """Scene names of a scene-list file (or of a ``split.json``'s ``val``), sorted and unique."""
    path = Path(path)
    text = _read_list_text(path, "scene list", "python -m evaluation.holdout")
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CatalogError(f"scene list {path} is not valid JSON: {exc}") from None
        names = data.get("val") if isinstance(data, dict) else None
        if not isinstance(names, list):
            raise CatalogError(f"scene list {path}: a .json scene list must be a training split.json with a 'val' list")
    else:
        names = _list_lines(text)
    if not names:
        raise CatalogError(f"scene list {path} names no scenes")
    return tuple(sorted(set(map(str, names))))


def read_product_list(path: str | Path) -> tuple[str, ...]:
    """Product ids of a product-list file (one per line, ``#`` comments), sorted and unique."""
    path = Path(path)
    names = _list_lines(_read_list_text(path, "product list", "python -m evaluation.holdout --new-products"))
    if not names:
        raise CatalogError(f"product list {path} names no products")
    return tuple(sorted(set(names)))


def write_scene_list(names: Iterable[str], path: str | Path, comment: str = "") -> Path:
    """Write a scene list atomically (temporary file, then rename)."""
    path = Path(path)
    body = "".join(f"# {line}\n" for line in comment.splitlines()) + "".join(f"{n}\n" for n in sorted(names))
    write_text_atomic(path, body)
    return path


def check_scene_names(catalog: Catalog, names: Iterable[str], source: str = "scene list") -> None:
    """Raise ``CatalogError`` naming the scenes that ``catalog`` does not have."""
    known = {s.scene for s in catalog.scenes}
    unknown = sorted(set(names) - known)
    if unknown:
        raise CatalogError(
            f"{source} names {len(unknown)} scene(s) that {catalog.root}/scenes.csv does not have, e.g. {unknown[:5]}; "
            "was it made for another catalog?"
        )


def holdout_scenes(catalog: Catalog, fraction: float, seed: int) -> tuple[str, ...]:
    """A seeded share of the scenes that have pairs, stratified by ``room_type``.

    Each room type gives ``round(fraction * n)`` of its n scenes (at least one scene overall, and
    never all of them), so the held-out scenes look like the rest.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    with_pairs = {p.scene for p in catalog.pairs}
    groups: dict[str, list[str]] = defaultdict(list)
    for s in catalog.scenes:
        if s.scene in with_pairs:
            groups[s.room_type].append(s.scene)
    total = sum(len(v) for v in groups.values())
    if total < 2:
        raise CatalogError(f"{catalog.root}: a hold-out split needs at least 2 scenes with pairs, found {total}")
    rng = np.random.default_rng(seed)
    chosen: list[str] = []
    for room in sorted(groups):
        names = sorted(groups[room])
        take = round(fraction * len(names))
        chosen += [names[i] for i in rng.permutation(len(names))[:take]]
    if not chosen:
        everything = sorted(n for v in groups.values() for n in v)
        chosen = [everything[int(rng.integers(len(everything)))]]
    if len(chosen) == total:
        chosen = chosen[:-1]
    return tuple(sorted(chosen))


def dev_folds(catalog: Catalog, k: int, seed: int, exclude: Iterable[str] = ()) -> tuple[tuple[str, ...], ...]:
    """``k`` seeded cross-validation folds over the scenes that have pairs, less ``exclude`` (the
    hold-out): every such scene in exactly one fold, each room type dealt round-robin from a seeded
    shuffle so the folds look alike. Raises ``CatalogError`` with fewer scenes than folds."""
    if k < 2:
        raise ValueError(f"folds must be at least 2, got {k}")
    out = set(exclude)
    check_scene_names(catalog, out, "the scenes to exclude")
    with_pairs = {p.scene for p in catalog.pairs} - out
    if len(with_pairs) < k:
        raise CatalogError(f"{catalog.root}: {k} folds need at least {k} scenes with pairs outside the hold-out, found {len(with_pairs)}")
    groups: dict[str, list[str]] = defaultdict(list)
    for s in catalog.scenes:
        if s.scene in with_pairs:
            groups[s.room_type].append(s.scene)
    rng = np.random.default_rng(seed)
    folds: list[list[str]] = [[] for _ in range(k)]
    turn = 0
    for room in sorted(groups):
        names = sorted(groups[room])
        for i in rng.permutation(len(names)):
            folds[turn % k].append(names[i])
            turn += 1
    return tuple(tuple(sorted(f)) for f in folds)


def restrict_scenes(catalog: Catalog, *, keep: Iterable[str] | None = None, drop: Iterable[str] = ()) -> Catalog:
    """The catalog with only the scenes in ``keep`` (all if None) minus those in ``drop``, and their pairs.

    Products are untouched (searches always run over the whole catalog). The fingerprint stays the
    directory's, so manifests and indexes made from the full catalog still match.
    """
    keep_set = None if keep is None else set(keep)
    drop_set = set(drop)
    for names, what in ((keep_set or set(), "keep"), (drop_set, "drop")):
        check_scene_names(catalog, names, f"the scenes to {what}")

    def wanted(name: str) -> bool:
        return (keep_set is None or name in keep_set) and name not in drop_set

    return replace(
        catalog,
        scenes=tuple(s for s in catalog.scenes if wanted(s.scene)),
        pairs=tuple(p for p in catalog.pairs if wanted(p.scene)),
        _types=catalog.types,
    )


def new_products(catalog: Catalog, fraction: float, seed: int) -> tuple[str, ...]:
    """A seeded share of the catalog's products, stratified by type: the products "added after
    training" of the new-products protocol. Each type gives ``round(fraction * n)`` of its n
    products, the rounding remainder dealt to seeded types so the total is ``round(fraction * N)``;
    at least one product, never all of them."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    by_type: dict[str, list[str]] = defaultdict(list)
    for pid, t in catalog.types.items():
        by_type[t].append(pid)
    total = sum(len(v) for v in by_type.values())
    if total < 2:
        raise CatalogError(f"{catalog.root}: a new-products split needs at least 2 products, found {total}")
    rng = np.random.default_rng(seed)
    want = min(total - 1, max(1, round(fraction * total)))
    exact = {t: fraction * len(v) for t, v in by_type.items()}
    take = {t: int(np.floor(x)) for t, x in exact.items()}
    # the largest remainders first, ties broken by a seeded order: sum(take) == want
    order = sorted(by_type, key=lambda t: (-(exact[t] - take[t]), rng.random()))
    for t in order[: max(0, want - sum(take.values()))]:
        take[t] += 1
    chosen: list[str] = []
    for t in sorted(by_type):
        ids = sorted(by_type[t])
        chosen += [ids[i] for i in rng.permutation(len(ids))[: take[t]]]
    return tuple(sorted(chosen))


def restrict_products(catalog: Catalog, drop: Iterable[str]) -> Catalog:
    """The catalog without the products in ``drop``: their products.csv rows and pairs removed, as if
    they did not exist yet. Scenes are untouched (a room photo may still show them, unlabelled). The
    fingerprint stays the directory's, so manifests made from the full catalog still match."""
    drop_set = set(drop)
    unknown = sorted(drop_set - set(catalog.types))
    if unknown:
        raise CatalogError(f"the products to drop include {len(unknown)} that {catalog.root}/products.csv does not have, "
                           f"e.g. {unknown[:5]}; was the list made for another catalog?")
    if drop_set and drop_set >= set(catalog.types):
        raise CatalogError(f"dropping {len(drop_set)} products leaves {catalog.root} with none")
    return replace(
        catalog,
        products=tuple(p for p in catalog.products if p.product_id not in drop_set),
        pairs=tuple(p for p in catalog.pairs if p.product_id not in drop_set),
        _types={pid: t for pid, t in catalog.types.items() if pid not in drop_set},
    )
