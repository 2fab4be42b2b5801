"""The ``milvus`` backend: the catalog's vectors and metadata in a Milvus collection, searched by the server.

The only module importing ``pymilvus``. ``MilvusIndex.create`` fills a new collection (primary key
= row number, the vector, the item's id, product id and type) in bounded batches, builds its vector
index, and records last, as collection properties, which model filled it, the row count and a digest
of the item ids; a collection without them is an unfinished build. ``MilvusIndex.load`` reopens it
from the index manifest's settings and refuses one filled by another model or with other rows, as a
damaged index folder is refused.

The URI is a Milvus Lite file (a local path ending in ``.db``: embedded, opened by one process at a
time) or a server / cluster address (``http://host:19530``). On the serving machine
``SHOWROOM_MILVUS_URI`` replaces the URI the index was built with, and ``SHOWROOM_MILVUS_TOKEN``
(``user:password`` or an API key) authenticates; the token is never written to the manifest.
Distances are searched with the L2 metric and returned Euclidean, as by the other backends.
"""

from __future__ import annotations

import hashlib
import logging
import logging.config
import os
import re
import secrets
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from engine.index.base import BuildRequest, IndexBackendError, Neighbors, checked_queries
from engine.index.brute_force import BruteForceIndex
from engine.index.tuning import recall_at_k

logger = logging.getLogger(__name__)

URI_ENV, TOKEN_ENV = "SHOWROOM_MILVUS_URI", "SHOWROOM_MILVUS_TOKEN"
ROW, VECTOR = "row", "vector"
METADATA = ("item_id", "product_id", "type")  # VARCHAR fields stored beside each vector
FINGERPRINT, COUNT, ITEMS = "showroom.model_fingerprint", "showroom.count", "showroom.items_sha256"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
_MAX_VARCHAR = 4096
_QUERIES_PER_REQUEST = 64  # Milvus Lite: 4 ms a query in requests of 16-64, 9-11 ms in requests of 256-1,024 (IKEA, 2,292 items)


class MilvusIndexError(IndexBackendError):
    """A Milvus collection that cannot be reached, is missing, or does not hold this index's vectors."""


@dataclass(frozen=True)
class MilvusSettings:
    """Where and how an index's vectors go into Milvus.

    uri: Milvus Lite file (``*.db``, made absolute) or server address (``http://host:19530``).
    collection: the collection's name (letters, digits, underscores); a build never reuses one.
    index_type / index_params: Milvus's vector index and its build parameters (``FLAT``: exact;
        on a cluster ``HNSW`` {"M", "efConstruction"}, ``IVF_FLAT`` / ``IVF_PQ`` / ``SCANN`` {"nlist", ...}).
    search_params: per-query parameters of that index (``{"ef": 64}``, ``{"nprobe": 16}``).
    batch: rows per insert call (bounds the memory of a build).
    """

    uri: str
    collection: str = "showroom"
    index_type: str = "FLAT"
    index_params: dict = field(default_factory=dict)
    search_params: dict = field(default_factory=dict)
    batch: int = 2000

    def __post_init__(self) -> None:
        if not self.uri:
            raise ValueError("a Milvus URI is needed: a Milvus Lite file (path ending in .db) or http://host:19530")
        if not _NAME.match(self.collection):
            raise ValueError(f"Milvus collection names are letters, digits and underscores, not starting with a digit: {self.collection!r}")
        if self.batch < 1:
            raise ValueError(f"batch must be >= 1, got {self.batch}")
        if not isinstance(self.index_params, dict) or not isinstance(self.search_params, dict):
            raise ValueError("index_params and search_params must be dicts")

    def named(self, suffix: str) -> MilvusSettings:
        """The same settings for collection ``<collection>_<suffix>`` (one per index of a build)."""
        return replace(self, collection=f"{self.collection}_{suffix}")


def unique_collection(prefix: str, now: datetime | None = None) -> str:
    """``<prefix>_<UTC timestamp>_<6 hex>``: a fresh name per build, so the generation being served
    keeps its own collection while the next one is filled."""
    now = now or datetime.now(timezone.utc)
    return f"{prefix}_{now.strftime('%Y%m%dT%H%M%S')}_{secrets.token_hex(3)}"


_UNIQUE = re.compile(r"^(?P<prefix>\w+?)_\d{8}T\d{6}_[0-9a-f]{6}(?P<suffix>_\w+)?$")


def split_collection(name: str) -> tuple[str, str]:
    """(prefix, suffix) of a collection named ``<prefix>_<timestamp>_<hex><suffix>`` (``unique_collection``,
    then ``MilvusSettings.named``), so a compaction names its collection as a build would; (name, "") for another name."""
    m = _UNIQUE.match(name)
    return (m["prefix"], m["suffix"] or "") if m else (name, "")


def items_digest(item_ids: Sequence[str]) -> str:
    """sha256 of the item ids in row order (one per line)."""
    return hashlib.sha256("\n".join(item_ids).encode()).hexdigest()


_IMPORT_LOCK = threading.Lock()


def _pymilvus() -> Any:
    """The ``pymilvus`` module. Its first import runs ``logging.config.dictConfig``, which closes every
    logging handler already in the process (the server's, gunicorn's, pytest's); that call is skipped,
    so pymilvus's loggers propagate to ours like any library's."""
    with _IMPORT_LOCK:
        if "pymilvus" not in sys.modules:
            configure, logging.config.dictConfig = logging.config.dictConfig, lambda config: None
            try:
                import pymilvus  # noqa: F401
            finally:
                logging.config.dictConfig = configure
    return sys.modules["pymilvus"]


def connect(uri: str) -> Any:
    """A ``MilvusClient`` for ``uri`` (token from ``$SHOWROOM_MILVUS_TOKEN``); clients of one URI share
    a connection, so none is ever closed here."""
    pm = _pymilvus()
    MilvusClient, MilvusException = pm.MilvusClient, pm.MilvusException

    try:
        return MilvusClient(uri=uri, token=os.environ.get(TOKEN_ENV, ""))
    except MilvusException as exc:
        lite = " (a Milvus Lite .db is opened by one process at a time: stop the other one, or use a Milvus server)" if _is_lite(uri) else ""
        raise MilvusIndexError(f"cannot open Milvus at {uri}{lite}: {exc.message}") from None


class MilvusIndex:
    """Euclidean k-NN over N vectors held in a Milvus collection; ``search`` is one request to the server."""

    kind = "milvus"

    def __init__(self, client: Any, settings: MilvusSettings, size: int, dim: int, model_fingerprint: str, items_sha256: str) -> None:
        self._client = client
        self.settings = settings
        self._n, self._d = size, dim
        self.model_fingerprint = model_fingerprint
        self.items_sha256 = items_sha256

    @classmethod
    def create(cls, vectors: np.ndarray, settings: MilvusSettings, model_fingerprint: str, metadata: Sequence[Mapping[str, str]],
               client: Any = None) -> MilvusIndex:
        """Fill a new collection with ``vectors`` float32 (N, D) and ``metadata`` (N records with the keys of
        ``METADATA``); refuses a collection name that exists. A build that fails drops its collection."""
        pm = _pymilvus()
        DataType, MilvusClient = pm.DataType, pm.MilvusClient
        vectors = np.asarray(vectors, np.float32)
        if vectors.ndim != 2 or len(vectors) < 1:
            raise ValueError(f"vectors must be (N >= 1, D), got {vectors.shape}")
        if len(metadata) != len(vectors):
            raise ValueError(f"{len(vectors)} vectors but {len(metadata)} metadata records")
        settings = replace(settings, uri=_absolute(settings.uri))
        client = client or connect(settings.uri)
        name = settings.collection
        if client.has_collection(name):
            raise MilvusIndexError(f"collection {name} already exists at {settings.uri}; a build writes a new collection, choose another name")
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field(ROW, DataType.INT64, is_primary=True)
        schema.add_field(VECTOR, DataType.FLOAT_VECTOR, dim=vectors.shape[1])
        for key in METADATA:
            schema.add_field(key, DataType.VARCHAR, max_length=_MAX_VARCHAR)
        client.create_collection(name, schema=schema)
        try:
            for s in range(0, len(vectors), settings.batch):
                client.insert(name, [{ROW: s + i, VECTOR: v, **{key: _clip(m.get(key, "")) for key in METADATA}}
                                     for i, (v, m) in enumerate(zip(vectors[s : s + settings.batch], metadata[s : s + settings.batch]))])
            client.flush(name)
            params = client.prepare_index_params()
            params.add_index(field_name=VECTOR, index_type=settings.index_type, metric_type="L2", params=settings.index_params)
            client.create_index(name, params, sync=False)  # pymilvus's own wait asks for a timestamp Milvus Lite does not serve
            _wait_for_index(client, name)
            digest = items_digest([str(m.get("item_id", "")) for m in metadata])
            # written last: a collection without them is a build that did not finish
            client.alter_collection_properties(name, properties={FINGERPRINT: model_fingerprint, COUNT: str(len(vectors)), ITEMS: digest})
            client.load_collection(name)
        except BaseException:
            client.drop_collection(name)
            raise
        logger.info("Milvus collection %s at %s: %d vectors, %s index", name, settings.uri, len(vectors), settings.index_type)
        return cls(client, settings, len(vectors), vectors.shape[1], model_fingerprint, digest)

    @classmethod
    def build(cls, settings: MilvusSettings | None, request: BuildRequest) -> tuple[MilvusIndex, dict]:
        """A new collection (``create``) of ``request``'s vectors and metadata, and its recall@k against
        exact search measured on ``request.queries`` (``measure_recall``, ``request``'s sample), stored as the index's ``tuning``."""
        if settings is None:
            raise ValueError("the milvus backend needs MilvusSettings: at least the URI its collection goes to")
        index = cls.create(request.vectors, settings, request.model_fingerprint, request.metadata)
        return index, measure_recall(index, request.vectors, request.queries, k=request.k, n_queries=request.n_queries, seed=request.seed,
                                     queries_label=request.queries_label)

    def save(self, folder: Path) -> None:
        """Nothing: the vectors are in the collection, which the manifest names (``describe``)."""

    @classmethod
    def load(cls, folder: Path, vectors: np.ndarray, params: dict, *, model_fingerprint: str = "", client: Any = None) -> MilvusIndex:
        """Reopen the collection named by the manifest's ``params`` (URI replaced by ``$SHOWROOM_MILVUS_URI``
        when set) and check it holds this index's rows, filled by its model (``model_fingerprint``, the
        manifest's; default: the one in ``params``)."""
        known = {k: params[k] for k in ("uri", "collection", "index_type", "index_params", "search_params") if k in params}
        settings = MilvusSettings(**{**known, "uri": os.environ.get(URI_ENV) or known.get("uri", "")})
        client = client or connect(settings.uri)
        rebuild = "rebuild the index with python -m serving.build_index --backend milvus (each build fills its own collection)"
        where = f"Milvus collection {settings.collection} at {settings.uri}"
        if not client.has_collection(settings.collection):
            raise MilvusIndexError(f"{where} does not exist (dropped, or another Milvus: set ${URI_ENV}); {rebuild}")
        props = client.describe_collection(settings.collection).get("properties", {})
        expected = model_fingerprint or params.get("model_fingerprint", "")
        if FINGERPRINT not in props:
            raise MilvusIndexError(f"{where} records no model: its build did not finish; {rebuild}")
        if props[FINGERPRINT] != expected:
            raise MilvusIndexError(f"{where} was filled by model {props[FINGERPRINT][:12]}, but this index was built with model "
                                   f"{expected[:12]} (the model it serves); {rebuild} --model <the model you serve>")
        rows = int(client.get_collection_stats(settings.collection).get("row_count", -1))
        if rows != len(vectors) or props.get(COUNT) != str(len(vectors)):
            raise MilvusIndexError(f"{where} holds {rows} rows, but this index has {len(vectors)} items; {rebuild}")
        if "items_sha256" in params and props.get(ITEMS) != params["items_sha256"]:
            raise MilvusIndexError(f"{where} holds other items than this index (item ids differ); {rebuild}")
        client.load_collection(settings.collection)
        return cls(client, settings, len(vectors), np.asarray(vectors).shape[1], expected, props.get(ITEMS, ""))

    def describe(self) -> dict:
        """Where the collection is and how it is indexed, with the model and items it must hold (no token)."""
        return {**asdict(self.settings), "metric": "L2", "model_fingerprint": self.model_fingerprint, "items_sha256": self.items_sha256}

    @property
    def size(self) -> int:
        return self._n

    @property
    def dim(self) -> int:
        return self._d

    def search(self, queries: np.ndarray, k: int) -> Neighbors:
        """As ``SearchIndex.search``, by the server, in requests of at most 64 queries. An approximate
        index may find fewer than k items for some query: all rows are then cut to the fewest found."""
        queries, k = checked_queries(queries, self._d, k, self._n)
        hits = []
        for s in range(0, len(queries), _QUERIES_PER_REQUEST):
            hits.extend(self._client.search(self.settings.collection, data=list(queries[s : s + _QUERIES_PER_REQUEST]), limit=k, output_fields=[ROW],
                                            search_params={"metric_type": "L2", "params": self.settings.search_params}))
        k = min([k, *(len(h) for h in hits)])
        idx = np.array([[h.id for h in row[:k]] for row in hits], np.int64).reshape(len(queries), k)
        d2 = np.array([[h.distance for h in row[:k]] for row in hits], np.float32).reshape(len(queries), k)
        return Neighbors(idx, np.sqrt(np.maximum(d2, 0.0)))  # Milvus's L2 is squared


def measure_recall(index: MilvusIndex, vectors: np.ndarray, queries: np.ndarray | None = None, *, k: int = 10, n_queries: int = 200,
                   seed: int = 0, queries_label: str = "given query vectors") -> dict:
    """recall@k of ``index`` against exact search over ``vectors`` float32 (N, D), on ``queries`` float32 (Q, D)
    (at most ``n_queries`` of them, seeded sample), else on a sample of the vectors themselves (their own
    row counts as a neighbour in both); ties with the k-th exact neighbour count as hits. Returns the
    record stored as the index's ``tuning`` (engine chosen, why, recall)."""
    vectors = np.asarray(vectors, np.float32)
    pool, label = (queries, queries_label) if queries is not None and len(queries) else (vectors, "a sample of the indexed vectors")
    rng = np.random.default_rng(seed)
    q = np.asarray(pool, np.float32)[np.sort(rng.choice(len(pool), min(n_queries, len(pool)), replace=False))]
    k = min(k, len(vectors))
    exact = BruteForceIndex(vectors).search(q, k).indices
    recall = recall_at_k(index.search(q, k).indices, exact, queries=q, vectors=vectors)
    s = index.settings
    return {"chosen": MilvusIndex.kind, "reason": f"Milvus backend chosen at build: {s.index_type} index in {s.collection}",
            "k": k, "recall": round(recall, 4), "queries": label, "n_queries": len(q), "seed": seed}


def _wait_for_index(client: Any, name: str, timeout_s: float = 3600.0) -> None:
    """Until the vector index of collection ``name`` is built (polled every 0.2 s)."""
    deadline = time.monotonic() + timeout_s
    while True:
        info = client.describe_index(name, VECTOR)
        state = str(info.get("state", "Finished"))
        if state == "Finished":
            return
        if state == "Failed" or time.monotonic() > deadline:
            raise MilvusIndexError(f"building the {info.get('index_type')} index of {name} {'failed' if state == 'Failed' else 'timed out'}: "
                                   f"{info.get('index_state_fail_reason', '')}")
        time.sleep(0.2)


def _clip(value: object) -> str:
    """A metadata value as a VARCHAR of at most ``_MAX_VARCHAR`` UTF-8 bytes."""
    return str(value).encode()[:_MAX_VARCHAR].decode(errors="ignore")


def _is_lite(uri: str) -> bool:
    return "://" not in uri and uri.endswith(".db")


def _absolute(uri: str) -> str:
    """A Milvus Lite path made absolute (the server may run from another folder); addresses unchanged."""
    return str(Path(uri).expanduser().resolve()) if _is_lite(uri) else uri
