"""Catalog type → detector class map, loaded from a versioned YAML data file (see category_map.yaml)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml

from engine.data.detection import DetectorError

DEFAULT_MAP = Path(__file__).with_name("category_map.yaml")


@dataclass(frozen=True)
class Rule:
    """Types where ``match`` is found and ``unless`` is not (case-insensitive regexes) map to ``label``."""

    match: re.Pattern
    unless: re.Pattern | None
    label: str

    def applies(self, product_type: str) -> bool:
        return bool(self.match.search(product_type)) and not (self.unless and self.unless.search(product_type))


@dataclass(frozen=True)
class CategoryMap:
    """Maps a catalog type to a detector class name, or None when no class covers it."""

    version: int
    exact: dict[str, str | None]  # keys lower-cased
    rules: tuple[Rule, ...]
    source: str = ""

    def class_for(self, product_type: str) -> str | None:
        key = product_type.strip().lower()
        if key in self.exact:
            return self.exact[key]
        for rule in self.rules:
            if rule.applies(product_type):
                return rule.label
        return None

    @property
    def classes(self) -> set[str]:
        return {r.label for r in self.rules} | {v for v in self.exact.values() if v}

    def check_classes(self, known: Iterable[str]) -> None:
        """Raise ``DetectorError`` if the map names a class the detector does not know."""
        known = set(known)
        unknown = sorted(self.classes - known)
        if unknown:
            raise DetectorError(
                f"category map {self.source or ''} names class(es) {unknown} that the detector does not know; "
                f"fix the map or use a detector with those classes (it knows {len(known)} classes, e.g. {sorted(known)[:8]})"
            )

    def coverage(self, types: Iterable[str]) -> tuple[dict[str, str], list[str]]:
        """(reachable type → class, sorted unreachable types) for a catalog's types."""
        reachable, unreachable = {}, []
        for t in sorted(set(types)):
            c = self.class_for(t)
            if c:
                reachable[t] = c
            else:
                unreachable.append(t)
        return reachable, unreachable


def load_category_map(path: str | Path = DEFAULT_MAP) -> CategoryMap:
    """Load and validate a category map YAML file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise DetectorError(f"category map {path} not found") from None
    except yaml.YAMLError as exc:
        raise DetectorError(f"category map {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("version"), int):
        raise DetectorError(f"category map {path} needs an integer 'version'")
    exact = {str(k).strip().lower(): (str(v) if v else None) for k, v in (data.get("exact") or {}).items()}
    rules = []
    for i, r in enumerate(data.get("rules") or []):
        if not isinstance(r, dict) or "match" not in r or "class" not in r:
            raise DetectorError(f"category map {path}: rule {i + 1} needs 'match' and 'class'")
        try:
            rules.append(Rule(re.compile(r["match"], re.I), re.compile(r["unless"], re.I) if r.get("unless") else None, str(r["class"])))
        except re.error as exc:
            raise DetectorError(f"category map {path}: rule {i + 1} has a bad regex: {exc}") from None
    return CategoryMap(data["version"], exact, tuple(rules), str(path))
