"""Catalog type → detector class map, loaded from a versioned YAML data file.

Two maps ship: ``category_map.yaml`` (types → COCO classes, for the COCO detector) and
``product_groups.yaml`` (types → the catalog's product groups, the classes of a detector trained on
them; it also says which types are left out and why, and which COCO class belongs to which group).
``map_for_detector`` picks the one whose classes a detector knows.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from engine.data.detection import DetectorError

DEFAULT_MAP = Path(__file__).with_name("category_map.yaml")
GROUPS_MAP = Path(__file__).with_name("product_groups.yaml")


@dataclass(frozen=True)
class Rule:
    """Types where ``match`` is found and ``unless`` is not (case-insensitive regexes) map to ``label``."""

    match: re.Pattern
    unless: re.Pattern | None
    label: str

    def applies(self, product_type: str) -> bool:
        return bool(self.match.search(product_type)) and not (self.unless and self.unless.search(product_type))


@dataclass(frozen=True)
class LeftOut:
    """Types where ``match`` is found and ``unless`` is not (case-insensitive regexes) are deliberately
    left out, for ``reason``."""

    match: re.Pattern
    unless: re.Pattern | None
    reason: str

    def applies(self, product_type: str) -> bool:
        return bool(self.match.search(product_type)) and not (self.unless and self.unless.search(product_type))


@dataclass(frozen=True)
class Coverage:
    """How a catalog's types fall under a map: ``mapped`` type → class, ``left_out`` type → reason
    (explicitly, by the map's ``left_out`` rules or a ``null`` exact entry), ``unmapped`` types the
    map says nothing about (a gap in the map)."""

    mapped: dict[str, str]
    left_out: dict[str, str]
    unmapped: list[str]


@dataclass(frozen=True)
class CategoryMap:
    """Maps a catalog type to a detector class name, or None when no class covers it.

    groups: the classes in their order (a product-groups map: its detector's class ids), else ().
    left_out: rules for types deliberately not covered, with their reasons.
    from_classes: another detector's class → one of these classes (COCO classes → groups).
    """

    version: int
    exact: dict[str, str | None]  # keys lower-cased
    rules: tuple[Rule, ...]
    source: str = ""
    groups: tuple[str, ...] = ()
    left_out: tuple[LeftOut, ...] = ()
    from_classes: dict[str, str] = field(default_factory=dict)

    def class_for(self, product_type: str) -> str | None:
        key = product_type.strip().lower()
        if key in self.exact:
            return self.exact[key]
        if any(lo.applies(product_type) for lo in self.left_out):
            return None
        for rule in self.rules:
            if rule.applies(product_type):
                return rule.label
        return None

    @property
    def classes(self) -> set[str]:
        return {r.label for r in self.rules} | {v for v in self.exact.values() if v}

    def left_out_reason(self, product_type: str) -> str | None:
        """Why no class covers ``product_type`` (None: it is mapped, or the map says nothing of it)."""
        key = product_type.strip().lower()
        if key in self.exact:
            return "left out by an exact entry" if self.exact[key] is None else None
        if self.class_for(product_type) is not None:
            return None
        return next((lo.reason for lo in self.left_out if lo.applies(product_type)), None)

    def type_coverage(self, types: Iterable[str]) -> Coverage:
        """Every distinct type of ``types`` as mapped, left out (with the reason) or unmapped."""
        mapped, left, unmapped = {}, {}, []
        for t in sorted(set(types)):
            if (c := self.class_for(t)) is not None:
                mapped[t] = c
            elif (why := self.left_out_reason(t)) is not None:
                left[t] = why
            else:
                unmapped.append(t)
        return Coverage(mapped, left, unmapped)

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
    groups = tuple(str(g) for g in data.get("groups") or ())
    if groups:
        unknown = sorted(({r.label for r in rules} | {v for v in exact.values() if v}) - set(groups))
        if unknown:
            raise DetectorError(f"category map {path}: rules name {unknown}, which are not in its 'groups' list")
    left_out = []
    for i, r in enumerate(data.get("left_out") or []):
        if not isinstance(r, dict) or "match" not in r or not r.get("reason"):
            raise DetectorError(f"category map {path}: left_out rule {i + 1} needs 'match' and a 'reason'")
        try:
            left_out.append(LeftOut(re.compile(r["match"], re.I), re.compile(r["unless"], re.I) if r.get("unless") else None, str(r["reason"])))
        except re.error as exc:
            raise DetectorError(f"category map {path}: left_out rule {i + 1} has a bad regex: {exc}") from None
    from_classes = {str(k): str(v) for k, v in (data.get("from_classes") or {}).items()}
    if groups and set(from_classes.values()) - set(groups):
        raise DetectorError(f"category map {path}: from_classes names {sorted(set(from_classes.values()) - set(groups))}, not in 'groups'")
    return CategoryMap(data["version"], exact, tuple(rules), str(path), groups, tuple(left_out), from_classes)


def map_for_detector(class_names: Iterable[str], path: str | Path | None = None, *, check: bool = True) -> CategoryMap:
    """The category map for a detector with these class names: ``path`` when given, else the
    product-groups map when the detector knows every group, else the COCO map; with ``check``, a
    map naming a class the detector does not know is refused (``DetectorError``)."""
    names = set(class_names)
    if path is not None:
        cmap = load_category_map(path)
    else:
        groups = load_category_map(GROUPS_MAP)
        cmap = groups if set(groups.groups) <= names else load_category_map(DEFAULT_MAP)
    if check:
        cmap.check_classes(names)
    return cmap


def label_groups(detector_classes: Iterable[str], groups_map: CategoryMap) -> dict[str, str]:
    """Each detector class that names a product group → that group: a group detector's classes are
    the groups themselves; another detector's (COCO's) go through the map's ``from_classes``.
    Classes of no group (a person, a car) are left out."""
    groups = set(groups_map.groups)
    return {c: c if c in groups else groups_map.from_classes[c] for c in detector_classes if c in groups or c in groups_map.from_classes}


def group_types(groups_map: CategoryMap, types: Iterable[str]) -> dict[str, frozenset[str]]:
    """Product group → the catalog ``types`` in it (groups holding none are left out)."""
    out: dict[str, set[str]] = {}
    for t in set(types):
        g = groups_map.class_for(t)
        if g is not None:
            out.setdefault(g, set()).add(t)
    return {g: frozenset(ts) for g, ts in out.items()}
