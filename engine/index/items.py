"""What an index row is: ``Item`` (one indexed image), ``Match`` (a search result), and ``ItemTable``,
the items of an index stored column by column.

An index of 1M rows used to hold 1M ``Item`` objects, each made from its JSON record at load: about
half of a 1M index's load time (records parsed, objects made, then walked again for the look-up
tables). ``ItemTable`` keeps one list per field instead, read from a columnar ``items.json``, and
makes an ``Item`` only when one is read (a search result, an iteration); the look-up tables of
``CatalogIndex`` are built from the columns.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields

import numpy as np

ITEMS_FORMAT = "showroom.items"
ITEMS_VERSION = 1


@dataclass(frozen=True)
class Item:
    """One indexed image: a catalog product image, or a detected crop of a scene (``scene``, ``box``)."""

    item_id: str
    product_id: str
    name: str
    type: str
    image: str  # relative to the catalog root (absolute in indexes built before portable paths)
    scene: str | None = None
    box: tuple[int, int, int, int] | None = None
    label: str = ""
    room_type: str = ""
    details: tuple[tuple[str, str], ...] = ()  # the catalog's own fields: color, size, desc, price, url ...

    def to_dict(self) -> dict:
        """Its JSON record, as ``dataclasses.asdict`` gives it (about 3x faster: a 1M-item index is written
        in ~9 s instead of ~30)."""
        return {**self.__dict__, "box": list(self.box) if self.box is not None else None, "details": [list(kv) for kv in self.details]}

    @classmethod
    def from_dict(cls, record: dict) -> Item:
        """An item from its JSON record (``dataclasses.asdict`` after a JSON round trip)."""
        return cls(**{**record, "box": tuple(record["box"]) if record.get("box") else None,
                      "details": tuple(tuple(kv) for kv in record.get("details", ()))})


@dataclass(frozen=True)
class Match:
    """A search result: the item and its Euclidean distance to the query."""

    item: Item
    distance: float


FIELDS = tuple(f.name for f in fields(Item))
_DEFAULTS = {f.name: f.default for f in fields(Item) if f.name not in ("item_id", "product_id", "name", "type", "image")}


class ItemTable(Sequence[Item]):
    """The items of an index, one list per ``Item`` field (``FIELDS``), in row order; immutable.

    Reads like a ``list[Item]``: ``table[i]`` makes that row's ``Item``, ``table[a:b]`` and
    ``take(rows)`` give tables, iteration yields Items, ``+`` appends any sequence of Items, and it
    equals a list of the same Items. ``column(name)`` is a field of every row without making Items.
    Columns hold JSON values (``box`` a list or None, ``details`` a list of [key, value] lists).
    """

    __slots__ = ("_columns", "_n")

    def __init__(self, columns: Mapping[str, Sequence]) -> None:
        if set(columns) != set(FIELDS):
            raise ValueError(f"item columns {sorted(columns)}: expected exactly {list(FIELDS)}")
        lengths = {len(columns[f]) for f in FIELDS}
        if len(lengths) != 1:
            raise ValueError(f"item columns of different lengths: { {f: len(columns[f]) for f in FIELDS} }")
        self._columns = {f: list(columns[f]) for f in FIELDS}
        self._n = lengths.pop()

    @classmethod
    def from_items(cls, items: Iterable[Item]) -> ItemTable:
        """A table of ``items`` (already a table: returned as it is)."""
        if isinstance(items, ItemTable):
            return items
        items = list(items)
        columns = {f: [getattr(it, f) for it in items] for f in FIELDS}
        columns["box"] = [list(b) if b is not None else None for b in columns["box"]]
        columns["details"] = [[list(kv) for kv in d] for d in columns["details"]]
        return cls(columns)

    @classmethod
    def from_records(cls, records: Sequence[Mapping]) -> ItemTable:
        """A table of JSON records (``Item.to_dict``), the layout of ``items.json`` before columns."""
        columns: dict[str, list] = {f: [] for f in FIELDS}
        for r in records:
            for f in FIELDS:
                columns[f].append(r[f] if f in r or f not in _DEFAULTS else _default_json(f))
        return cls(columns)

    @classmethod
    def from_json(cls, data: object) -> ItemTable:
        """A table from the parsed ``items.json``: the columnar object ``to_json`` writes, or the list of
        records of indexes written before it. ``ValueError`` for anything else."""
        if isinstance(data, list):
            return cls.from_records(data)
        if not isinstance(data, dict) or data.get("format") != ITEMS_FORMAT or data.get("version") != ITEMS_VERSION:
            raise ValueError(f"not a {ITEMS_FORMAT} v{ITEMS_VERSION} item table")
        columns = data.get("columns")
        if not isinstance(columns, dict) or not all(isinstance(columns.get(f), list) for f in FIELDS):
            raise ValueError(f"an item table needs a list for each of {list(FIELDS)}")
        return cls(columns)

    def to_json(self) -> dict:
        """The columnar JSON object of ``items.json`` (what ``from_json`` reads)."""
        return {"format": ITEMS_FORMAT, "version": ITEMS_VERSION, "count": self._n, "columns": self._columns}

    def column(self, name: str) -> list:
        """Field ``name`` of every row, in row order (the table's own list: do not change it)."""
        if name not in self._columns:
            raise KeyError(f"no item field {name!r}; the fields are {list(FIELDS)}")
        return self._columns[name]

    def take(self, rows: Sequence[int] | np.ndarray) -> ItemTable:
        """The table of ``rows`` (int row numbers, in the given order)."""
        rows = np.asarray(rows, np.int64).reshape(-1)
        if len(rows) and (rows.min() < -self._n or rows.max() >= self._n):
            raise IndexError(f"rows out of range for {self._n} items")
        idx = rows.tolist()
        return ItemTable({f: [col[i] for i in idx] for f, col in self._columns.items()})

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i):  # int -> Item, slice -> ItemTable
        if isinstance(i, slice):
            return ItemTable({f: col[i] for f, col in self._columns.items()})
        if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"item rows are integers or slices, not {type(i).__name__}")
        return _item([self._columns[f][i] for f in FIELDS])

    def __iter__(self) -> Iterator[Item]:
        for row in zip(*(self._columns[f] for f in FIELDS)):
            yield _item(row)

    def __add__(self, other: Sequence[Item]) -> ItemTable:
        if not isinstance(other, Sequence):
            return NotImplemented
        other = ItemTable.from_items(other)
        return ItemTable({f: self._columns[f] + other._columns[f] for f in FIELDS})

    def __radd__(self, other: Sequence[Item]) -> ItemTable:
        if not isinstance(other, Sequence):
            return NotImplemented
        return ItemTable.from_items(other) + self

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ItemTable):
            return self._n == other._n and self._columns == other._columns
        if isinstance(other, Sequence) and not isinstance(other, (str, bytes)):
            return len(other) == self._n and all(a == b for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable-looking sequence semantics, like list

    def __repr__(self) -> str:
        return f"ItemTable({self._n} items)"


_BOX, _DETAILS = FIELDS.index("box"), FIELDS.index("details")


def _item(row: Sequence) -> Item:
    """The ``Item`` of one row's JSON values, in ``FIELDS`` order (box and details back to tuples)."""
    values = list(row)
    values[_BOX] = tuple(values[_BOX]) if values[_BOX] else None
    values[_DETAILS] = tuple(tuple(kv) for kv in values[_DETAILS])
    return Item(*values)


def item_images(data: object) -> list[str]:
    """The ``image`` of every row of a parsed ``items.json`` (columnar, or a list of records, whose
    missing images count as ""), without validating the rest; ``ValueError`` for anything else."""
    if isinstance(data, list):
        return [str(r.get("image", "")) if isinstance(r, dict) else _bad_items() for r in data]
    if isinstance(data, dict) and data.get("format") == ITEMS_FORMAT and isinstance((data.get("columns") or {}).get("image"), list):
        return [str(v) for v in data["columns"]["image"]]
    return _bad_items()


def _bad_items():
    raise ValueError(f"not an items.json: neither a {ITEMS_FORMAT} table nor a list of records")


def _default_json(name: str):
    """The JSON value of field ``name``'s default (a record written before the field existed)."""
    value = _DEFAULTS[name]
    return list(value) if isinstance(value, tuple) else value
