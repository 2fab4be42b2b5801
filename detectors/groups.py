"""``python -m detectors.groups``: how a catalog's product types fall into the product groups.

Prints, per group, how many of the catalog's types, product photos and scene pairs it holds; the
types left out and why; and the types the map says nothing about (gaps to fix in the YAML file).
Exit status 1 when there is a gap, so a catalog check can stop on it.
"""

from __future__ import annotations

import argparse
import csv
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from detectors.category_map import GROUPS_MAP, CategoryMap, Coverage, load_category_map

logger = logging.getLogger("detectors.groups")


@dataclass(frozen=True)
class GroupCounts:
    """Per class of a map: distinct ``types``, product ``photos`` and scene ``pairs`` it holds."""

    types: Counter
    photos: Counter
    pairs: Counter


def group_counts(cmap: CategoryMap, product_types: dict[str, str], photo_types: Sequence[str], pair_products: Sequence[str]) -> tuple[Coverage, GroupCounts]:
    """The coverage of a catalog under ``cmap`` and its counts per class.

    product_types: product id → type; photo_types: the type of each product photo (products.csv
    row); pair_products: the product id of each scene pair (pairs.csv row)."""
    cov = cmap.type_coverage(product_types.values())
    types = Counter(cov.mapped.values())
    photos = Counter(cov.mapped[t] for t in photo_types if t in cov.mapped)
    pairs = Counter(cov.mapped[product_types[p]] for p in pair_products if product_types[p] in cov.mapped)
    return cov, GroupCounts(types, photos, pairs)


def coverage_report(cmap: CategoryMap, product_types: dict[str, str], photo_types: Sequence[str], pair_products: Sequence[str]) -> str:
    """A plain-text table of ``group_counts``, the left-out types with reasons and pair counts, and the gaps."""
    cov, counts = group_counts(cmap, product_types, photo_types, pair_products)
    pair_types = Counter(product_types[p] for p in pair_products)
    n_pairs = len(pair_products)
    order = list(cmap.groups) or sorted(counts.types)
    lines = [f"{cmap.source} v{cmap.version}: {len(cov.mapped)} types mapped, {len(cov.left_out)} left out, {len(cov.unmapped)} unmapped",
             f"{'group':<12} {'types':>6} {'photos':>7} {'pairs':>6}"]
    for g in order:
        lines.append(f"{g:<12} {counts.types[g]:>6} {counts.photos[g]:>7} {counts.pairs[g]:>6}")
    mapped_pairs = sum(counts.pairs.values())
    lines.append(f"{'all':<12} {len(cov.mapped):>6} {sum(counts.photos.values()):>7} {mapped_pairs:>6}"
                 + (f"   ({mapped_pairs / n_pairs:.1%} of {n_pairs} pairs)" if n_pairs else ""))
    by_reason: dict[str, list[str]] = {}
    for t, why in cov.left_out.items():
        by_reason.setdefault(why, []).append(t)
    for why, ts in sorted(by_reason.items()):
        lines.append(f"left out ({sum(pair_types[t] for t in ts)} pairs): {why}: " + ", ".join(ts))
    if cov.unmapped:
        lines.append(f"UNMAPPED ({sum(pair_types[t] for t in cov.unmapped)} pairs), add them to {cmap.source}: " + ", ".join(cov.unmapped))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m detectors.groups", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--catalog", type=Path, required=True, help="catalog directory (products.csv; pairs.csv optional)")
    p.add_argument("--map", type=Path, default=GROUPS_MAP, help="the type → group YAML map")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")


    products = args.catalog / "products.csv"
    if not products.is_file():
        logger.error("%s: no products.csv; pass the catalog directory", args.catalog)
        return 2
    with products.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    product_types = {r["product_id"]: r["type"] for r in rows}
    pairs_csv = args.catalog / "pairs.csv"
    pair_products: list[str] = []
    if pairs_csv.is_file():
        with pairs_csv.open(newline="", encoding="utf-8") as f:
            pair_products = [r["product_id"] for r in csv.DictReader(f) if r["product_id"] in product_types]
    cmap = load_category_map(args.map)
    print(coverage_report(cmap, product_types, [r["type"] for r in rows], pair_products))
    return 1 if cmap.type_coverage(product_types.values()).unmapped else 0


if __name__ == "__main__":
    raise SystemExit(main())
