"""Vector store of the pattern layer: window embeddings with their payload, searched by cosine similarity.

Two engines behind one interface (``VectorStore``): ``EdgeVectorStore``, Qdrant's Rust engine embedded in
the process (qdrant-edge-py, one shard folder, the default), and ``ClientVectorStore``, qdrant-client
against a Qdrant server or in its in-memory local mode (brute force in Python; tests, small data).

Point ids are deterministic (``point_id``: uuid5 of pair and window time), so re-upserting a window
replaces its point. Payload times are int epoch seconds; ``search(ended_by=T)`` sees only points with
``horizon_end <= T`` (the no-look-ahead rule, an integer range filter on an indexed field). Cosine
distance: both engines store vectors normalized to unit length, ``vectors()`` returns them so.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Protocol, Self, TextIO

import numpy as np
import qdrant_edge as qe

if TYPE_CHECKING:
    from qdrant_client import QdrantClient
    from qdrant_client import models as qm

POINT_FIELDS = ("pair", "timestamp", "horizon_end", "regime", "fwd_1h", "fwd_6h", "fwd_24h")
INT_FIELDS = ("timestamp", "horizon_end")  # int epoch seconds
NAMESPACE = uuid.UUID("109a22bb-ffe5-5128-820d-40c4f1d8895e")  # uuid5(NAMESPACE_URL, "cyber-pipelines:patterns")
BATCH = 2048
SCROLL_PAGE = 10_000
# Filtered search. A filter that passes fewer vectors than FULL_SCAN_THRESHOLD_KB (2000 KB: 16k vectors of dim 32)
# is answered exactly from the payload index; a broader one walks the HNSW graph with ACORN (neighbours of
# rejected neighbours are explored too), so the graph needs no extra per-payload-block links: the payload
# indexes are built with enable_hnsw=False. Measured on 300k clustered vectors, 2 cores, ended_by uniform over time:
# Qdrant's defaults (10000 KB, payload links) optimize in 107 s, filtered recall@10 0.985, p99 9.7 ms; this setting
# optimizes in 28 s, recall 0.984, p99 3.8 ms. Without ACORN, graph walks under a filter can strand (one query
# passing 42% of the points returned 1 hit), hence max_selectivity 1.0: ACORN for every filter that reaches the graph.
FULL_SCAN_THRESHOLD_KB = 2_000
ACORN_MAX_SELECTIVITY = 1.0
INT8_QUANTILE = 0.99
LOCK_FILE = ".store.lock"
POOL = "vector_store"


def point_id(pair: str, timestamp: datetime | int) -> str:
    """The point id of ``pair``'s window ending at ``timestamp`` (naive datetimes are UTC): a uuid5 string."""
    if isinstance(timestamp, datetime):
        moment = timestamp.replace(tzinfo=UTC) if timestamp.tzinfo is None else timestamp
        if moment.microsecond:
            raise ValueError(f"point_id: timestamp {timestamp.isoformat()} is not a whole second")
        seconds = int(moment.timestamp())
    elif isinstance(timestamp, int | np.integer) and not isinstance(timestamp, bool):
        seconds = int(timestamp)
    else:
        raise ValueError(f"point_id: timestamp must be a datetime or int epoch seconds, got {type(timestamp).__name__}")
    return str(uuid.uuid5(NAMESPACE, f"{pair}|{seconds}"))


@dataclass(frozen=True)
class Hit:
    id: str
    score: float  # cosine similarity
    payload: dict[str, Any]


@dataclass(frozen=True)
class IndexSettings:
    m: int = 16
    # 64 rather than Qdrant's 100 builds the graph about a third faster (1M x 32-d on 2 cores, the benchmark builds
    # both side by side); the coarser graph's recall is won back at search time by rescoring more candidates.
    ef_construct: int = 64
    hnsw_ef: int = 128
    quantization: Literal["none", "int8", "pq"] = "int8"  # pq: product quantization, x8 compression
    oversampling: float = 8.0  # rescore with originals: at 1M with ef_construct 64, recall@10 0.973 (4: 0.962)
    # A segment gets its HNSW graph from this size on (Qdrant's default, 10 MB, leaves ~80k 32-d vectors
    # to a plain scan of every point per query, milliseconds each); below it a scan is fast.
    indexing_threshold_kb: int = 1000

    def __post_init__(self) -> None:
        if self.quantization not in ("none", "int8", "pq"):
            raise ValueError(f"IndexSettings: quantization must be none, int8 or pq, got {self.quantization!r}")
        if min(self.m, self.ef_construct, self.hnsw_ef) < 1 or self.oversampling < 1:
            raise ValueError(f"IndexSettings: m, ef_construct, hnsw_ef must be >= 1 and oversampling >= 1: {self}")


class VectorStore(Protocol):
    dim: int

    def upsert(self, ids: Sequence[str], vectors: np.ndarray, payloads: Sequence[Mapping[str, Any]]) -> None: ...

    def search(
        self,
        vector: np.ndarray,
        k: int,
        *,
        ended_by: int | None = None,
        exclude_pair: str | None = None,
        pair: str | None = None,
        exact: bool = False,
    ) -> list[Hit]: ...

    def search_batch(
        self, vectors: np.ndarray, k: int, *, ended_by: Sequence[int] | None = None, exact: bool = False
    ) -> list[list[Hit]]: ...

    def count(self, pair: str | None = None) -> int: ...

    def ids(self, pair: str | None = None) -> list[str]: ...

    def vectors(self, ids: Sequence[str]) -> np.ndarray: ...

    def delete_pair(self, pair: str) -> int: ...

    def optimize(self) -> None: ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


class StoreLockedError(RuntimeError):
    """The shard folder is open in another process (or another open store of this one)."""


def exact_neighbours(data: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Row indices of the ``k`` rows of ``data`` most cosine-similar to each query, best first (m x k)."""
    data = np.asarray(data, np.float32)
    queries = np.atleast_2d(np.asarray(queries, np.float32))
    k = min(k, len(data))
    if k <= 0 or len(queries) == 0:
        return np.zeros((len(queries), max(k, 0)), np.int64)
    unit = data / np.maximum(np.linalg.norm(data, axis=1, keepdims=True), 1e-30)
    q_unit = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-30)
    out = np.empty((len(queries), k), np.int64)
    step = max(1, (1 << 25) // max(len(data), 1))  # about 128 MB of scores at a time
    for start in range(0, len(queries), step):
        scores = q_unit[start : start + step] @ unit.T
        top = (
            np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < len(data) else np.tile(np.arange(k), (len(scores), 1))
        )
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
        out[start : start + step] = np.take_along_axis(top, order, axis=1)
    return out


def recall_at_k(found: Sequence[Sequence[str]], truth: Sequence[Sequence[str]]) -> float:
    """Mean over queries of |found[:len(truth)] & truth| / len(truth); queries with empty truth are skipped."""
    if len(found) != len(truth):
        raise ValueError(f"recall_at_k: {len(found)} result lists for {len(truth)} truth lists")
    ratios = [len(set(f[: len(t)]) & set(t)) / len(t) for f, t in zip(found, truth, strict=True) if len(t)]
    return float(np.mean(ratios)) if ratios else 1.0


# ---------------------------------------------------------------------------------------------- validation


def _parse_id(value: object, row: int, what: str = "upsert") -> uuid.UUID:
    if not isinstance(value, str):
        raise ValueError(f"{what}: row {row}: id must be a UUID string, got {type(value).__name__}")
    try:
        return uuid.UUID(value)
    except ValueError:
        raise ValueError(f"{what}: row {row}: id {value!r} is not a UUID (use point_id)") from None


def _payload_value(value: Any, row: int, key: str) -> Any:
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return None  # unknown (a forward return past the data): JSON null, the same in both engines
        if math.isinf(value):
            raise ValueError(f"upsert: row {row}: payload {key!r} is {value}")
        return value
    if isinstance(value, np.generic):
        return _payload_value(value.item(), row, key)
    if isinstance(value, Mapping):
        return {str(k): _payload_value(v, row, f"{key}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_payload_value(v, row, f"{key}[]") for v in value]
    raise ValueError(f"upsert: row {row}: payload {key!r} has type {type(value).__name__} (JSON values only)")


def _clean_payload(payload: object, row: int) -> dict[str, Any]:
    if not isinstance(payload, Mapping):
        raise ValueError(f"upsert: row {row}: payload must be a mapping, got {type(payload).__name__}")
    out: dict[str, Any] = {}
    for key, value in payload.items():
        kind = type(value)  # the common cases first, checked cheaply (this runs for every row of an ingest)
        if kind is str or kind is int or value is None or (kind is float and math.isfinite(value)):
            out[key if type(key) is str else str(key)] = value
        else:
            out[str(key)] = _payload_value(value, row, str(key))
    for key in INT_FIELDS:
        value = out.get(key)
        if value is not None and (type(value) is not int):
            raise ValueError(f"upsert: row {row}: payload {key!r} must be int epoch seconds, got {value!r}")
    pair = out.get("pair")
    if pair is not None and type(pair) is not str:
        raise ValueError(f"upsert: row {row}: payload 'pair' must be a string, got {pair!r}")
    return out


def _check_matrix(vectors: object, dim: int, what: str) -> np.ndarray:
    """``vectors`` as a float32 (n, dim) matrix of finite, non-zero rows, or ValueError naming the first bad row."""
    if not isinstance(vectors, np.ndarray):
        rows = list(vectors) if isinstance(vectors, Sequence) else None
        if rows is None:
            raise ValueError(f"{what}: vectors must be an array (n, {dim}), got {type(vectors).__name__}")
        for row, item in enumerate(rows):
            if np.ndim(item) != 1 or len(item) != dim:
                raise ValueError(f"{what}: row {row}: vector has shape {np.shape(item)}, the store's dim is {dim}")
        vectors = np.asarray(rows, dtype=np.float64).reshape(len(rows), dim)
    if vectors.ndim != 2 or vectors.shape[1] != dim:
        if vectors.ndim == 2 and vectors.shape[0] == 0:
            return np.zeros((0, dim), np.float32)
        raise ValueError(f"{what}: row 0: vectors have shape {vectors.shape}, the store's dim is {dim} (n, {dim})")
    if not np.issubdtype(vectors.dtype, np.number) or np.issubdtype(vectors.dtype, np.complexfloating):
        raise ValueError(f"{what}: row 0: vectors have dtype {vectors.dtype}, expected float32")
    with np.errstate(over="ignore", invalid="ignore"):
        matrix = np.ascontiguousarray(vectors, dtype=np.float32)
    bad = ~np.isfinite(matrix).all(axis=1)
    if bad.any():
        raise ValueError(f"{what}: row {int(np.argmax(bad))}: vector has non-finite values (or overflows float32)")
    zero = ~(matrix != 0).any(axis=1)
    if zero.any():
        raise ValueError(f"{what}: row {int(np.argmax(zero))}: vector is all zeros (no cosine direction)")
    return matrix


def _check_upsert(
    ids: Sequence[str], vectors: np.ndarray, payloads: Sequence[Mapping[str, Any]], dim: int
) -> tuple[list[uuid.UUID], np.ndarray, list[dict[str, Any]]]:
    matrix = _check_matrix(vectors, dim, "upsert")
    n_ids, n_vec, n_pay = len(ids), len(matrix), len(payloads)
    if not n_ids == n_vec == n_pay:
        raise ValueError(
            f"upsert: row {min(n_ids, n_vec, n_pay)}: {n_ids} ids, {n_vec} vectors, {n_pay} payloads (lengths differ)"
        )
    parsed = [_parse_id(raw, row) for row, raw in enumerate(ids)]
    if len(set(parsed)) < len(parsed):
        seen: dict[uuid.UUID, int] = {}
        for row, pid in enumerate(parsed):
            if pid in seen:
                raise ValueError(f"upsert: row {row}: id {pid} repeats row {seen[pid]} in the same call")
            seen[pid] = row
    clean = [_clean_payload(p, row) for row, p in enumerate(payloads)]
    return parsed, matrix, clean


def _check_query(vector: np.ndarray, k: int, dim: int) -> np.ndarray:
    if not isinstance(k, int | np.integer) or isinstance(k, bool) or k < 1:
        raise ValueError(f"search: k must be a positive int, got {k!r}")
    arr = np.asarray(vector)
    if arr.shape != (dim,):
        raise ValueError(f"search: query vector has shape {arr.shape}, the store's dim is {dim}")
    return _check_matrix(arr.reshape(1, dim), dim, "search")[0]


def _check_ended_by(ended_by: Sequence[int] | None, n: int) -> list[int | None]:
    if ended_by is None:
        return [None] * n
    values = list(ended_by)
    if len(values) != n:
        raise ValueError(f"search_batch: {len(values)} ended_by values for {n} vectors")
    return [_as_epoch(v, f"ended_by[{i}]") for i, v in enumerate(values)]


def _as_epoch(value: object, what: str) -> int:
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        return int(value)
    raise ValueError(f"search: {what} must be int epoch seconds, got {value!r}")


def _sorted_hits(hits: list[Hit], k: int) -> list[Hit]:
    return sorted(hits, key=lambda h: -h.score)[:k]


class _Base:
    dim: int

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


# --------------------------------------------------------------------------------------------- Qdrant Edge


def _edge_quantization(settings: IndexSettings) -> qe.ScalarQuantizationConfig | qe.ProductQuantizationConfig | None:
    if settings.quantization == "int8":
        return qe.ScalarQuantizationConfig(type=qe.ScalarType.Int8, quantile=INT8_QUANTILE, always_ram=True)
    if settings.quantization == "pq":
        return qe.ProductQuantizationConfig(compression=qe.CompressionRatio.X8, always_ram=True)
    return None


def _edge_filter(ended_by: int | None, pair: str | None, exclude_pair: str | None) -> qe.Filter | None:
    must: list[qe.FieldCondition] = []
    must_not: list[qe.FieldCondition] = []
    if ended_by is not None:
        must.append(qe.FieldCondition(key="horizon_end", range=qe.RangeFloat(lte=float(ended_by))))
    if pair is not None:
        must.append(qe.FieldCondition(key="pair", match=qe.MatchValue(pair)))
    if exclude_pair is not None:
        must_not.append(qe.FieldCondition(key="pair", match=qe.MatchValue(exclude_pair)))
    if not must and not must_not:
        return None
    return qe.Filter(must=list(must) or None, must_not=list(must_not) or None)


def _locked_message(path: Path) -> str:
    return (
        f"vector store shard folder {path} is held by another process; writers are serialized by the Dagster pool "
        f"'{POOL}' (one process, one open EdgeVectorStore per shard folder)"
    )


class EdgeVectorStore(_Base):
    """One Qdrant Edge shard in a folder (created if missing, else loaded); one process at a time.

    A new shard gets ``settings``' HNSW and quantization config; an existing one keeps the config it was
    built with (changing it would rebuild every segment at the next optimize), while ``hnsw_ef`` and
    ``oversampling`` apply to every search. Writes go through the shard's write-ahead log: they survive
    a crash; ``optimize()`` builds the HNSW graph and quantized vectors of what was written.
    """

    def __init__(self, path: Path, dim: int, settings: IndexSettings = IndexSettings()) -> None:
        self.path = Path(path)
        self.dim = int(dim)
        self.settings = settings
        self.path.mkdir(parents=True, exist_ok=True)
        self._shard: qe.EdgeShard | None = None
        self._lock: TextIO | None = self._acquire_lock()
        try:
            self._shard = self._open()
            self._ensure_indexes()
        except BaseException:
            if self._shard is not None:
                self._shard.close()
                self._shard = None
            self._release_lock()
            raise

    def _acquire_lock(self) -> TextIO:
        handle = open(self.path / LOCK_FILE, "a+")  # noqa: SIM115 - held open for the store's life
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise StoreLockedError(_locked_message(self.path)) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        return handle

    def _release_lock(self) -> None:
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    def _persisted_dim(self) -> int | None:
        try:
            config = json.loads((self.path / "edge_config.json").read_text())
            return int(config["vectors"][""]["size"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _config(self, with_index: bool) -> qe.EdgeConfig:
        vectors = qe.EdgeVectorParams(size=self.dim, distance=qe.Distance.Cosine)
        if not with_index:  # loading: the shard keeps its persisted HNSW / quantization config
            return qe.EdgeConfig(vectors=vectors)
        s = self.settings
        return qe.EdgeConfig(
            vectors=vectors,
            hnsw_config=qe.HnswIndexConfig(
                m=s.m, ef_construct=s.ef_construct, full_scan_threshold=FULL_SCAN_THRESHOLD_KB
            ),
            quantization_config=_edge_quantization(s),
            optimizers=qe.EdgeOptimizersConfig(indexing_threshold=s.indexing_threshold_kb),
        )

    def _open(self) -> qe.EdgeShard:
        exists = (self.path / "segments").exists() or (self.path / "edge_config.json").exists()
        if exists:
            persisted = self._persisted_dim()
            if persisted is not None and persisted != self.dim:
                raise ValueError(
                    f"vector store {self.path} holds dim {persisted} vectors, the store was opened with dim {self.dim}"
                )
        try:
            if exists:
                return qe.EdgeShard.load(str(self.path), self._config(with_index=False))
            return qe.EdgeShard.create(str(self.path), self._config(with_index=True))
        except Exception as exc:
            text = str(exc)
            if "WouldBlock" in text:  # Edge's own lock on the WAL: opened by something other than this store
                raise StoreLockedError(_locked_message(self.path)) from None
            if "vector size" in text or "Incompatible" in text:
                raise ValueError(
                    f"vector store {self.path} holds an incompatible vector config (dim {self._persisted_dim()}), "
                    f"the store was opened with dim {self.dim}: {text}"
                ) from None
            raise

    def _ensure_indexes(self) -> None:
        shard = self._live()
        schema = shard.info().payload_schema
        if "horizon_end" not in schema:
            params = qe.IntegerIndexParams(lookup=False, range=True, on_disk=True, enable_hnsw=False)
            shard.update(qe.UpdateOperation.create_field_index("horizon_end", params))
        if "pair" not in schema:
            keyword = qe.KeywordIndexParams(on_disk=True, enable_hnsw=False)
            shard.update(qe.UpdateOperation.create_field_index("pair", keyword))

    def _live(self) -> qe.EdgeShard:
        if self._shard is None:
            raise RuntimeError(f"vector store {self.path} is closed")
        return self._shard

    def _params(self, exact: bool, filtered: bool) -> qe.SearchParams:
        if exact:
            return qe.SearchParams(exact=True, quantization=qe.QuantizationSearchParams(ignore=True))
        quant = qe.QuantizationSearchParams(rescore=True, oversampling=self.settings.oversampling)
        acorn = qe.AcornSearchParams(enable=True, max_selectivity=ACORN_MAX_SELECTIVITY) if filtered else None
        return qe.SearchParams(hnsw_ef=self.settings.hnsw_ef, quantization=quant, acorn=acorn)

    @staticmethod
    def _hits(points: list[qe.ScoredPoint], k: int) -> list[Hit]:
        return _sorted_hits([Hit(str(p.id), float(p.score), dict(p.payload or {})) for p in points], k)

    def _request(self, vector: np.ndarray, k: int, flt: qe.Filter | None, exact: bool) -> qe.QueryRequest:
        return qe.QueryRequest(
            limit=k,
            query=qe.Query.Nearest(vector.tolist()),
            filter=flt,
            params=self._params(exact, flt is not None),
            with_payload=True,
            with_vector=False,
        )

    def upsert(self, ids: Sequence[str], vectors: np.ndarray, payloads: Sequence[Mapping[str, Any]]) -> None:
        """Insert or replace points (validated first: a bad row raises ValueError and nothing is written)."""
        pids, matrix, clean = _check_upsert(ids, vectors, payloads, self.dim)
        shard = self._live()
        for start in range(0, len(pids), BATCH):
            end = start + BATCH
            rows = matrix[start:end].tolist()
            points = [qe.Point(p, v, pl) for p, v, pl in zip(pids[start:end], rows, clean[start:end], strict=True)]
            shard.update(qe.UpdateOperation.upsert_points(points))

    def search(
        self,
        vector: np.ndarray,
        k: int,
        *,
        ended_by: int | None = None,
        exclude_pair: str | None = None,
        pair: str | None = None,
        exact: bool = False,
    ) -> list[Hit]:
        query = _check_query(vector, k, self.dim)
        end = None if ended_by is None else _as_epoch(ended_by, "ended_by")
        flt = _edge_filter(end, pair, exclude_pair)
        return self._hits(self._live().query(self._request(query, int(k), flt, exact)), int(k))

    def search_batch(
        self, vectors: np.ndarray, k: int, *, ended_by: Sequence[int] | None = None, exact: bool = False
    ) -> list[list[Hit]]:
        if not isinstance(k, int | np.integer) or isinstance(k, bool) or k < 1:
            raise ValueError(f"search_batch: k must be a positive int, got {k!r}")
        matrix = _check_matrix(np.asarray(vectors), self.dim, "search_batch")
        ends = _check_ended_by(ended_by, len(matrix))
        if len(matrix) == 0:
            return []
        requests = [
            self._request(v, int(k), _edge_filter(e, None, None), exact) for v, e in zip(matrix, ends, strict=True)
        ]
        results = self._live().query_batch(qe.QueryBatchRequest(requests))
        return [self._hits(r, int(k)) for r in results]

    def count(self, pair: str | None = None) -> int:
        return int(self._live().count(qe.CountRequest(exact=True, filter=_edge_filter(None, pair, None))))

    def _scroll(self, pair: str | None) -> Iterator[str]:
        shard, offset = self._live(), None
        flt = _edge_filter(None, pair, None)
        while True:
            request = qe.ScrollRequest(
                offset=offset, limit=SCROLL_PAGE, filter=flt, with_payload=False, with_vector=False
            )
            records, offset = shard.scroll(request)
            yield from (str(r.id) for r in records)
            if offset is None:
                return

    def ids(self, pair: str | None = None) -> list[str]:
        return list(self._scroll(pair))

    def vectors(self, ids: Sequence[str]) -> np.ndarray:
        """The stored (unit-length) vectors of ``ids``, in that order; KeyError names ids that are missing."""
        wanted = [str(_parse_id(i, row, "vectors")) for row, i in enumerate(ids)]
        found: dict[str, list[float]] = {}
        shard = self._live()
        for start in range(0, len(wanted), BATCH):
            for record in shard.retrieve(list(wanted[start : start + BATCH]), with_payload=False, with_vector=True):
                vector = record.vector
                if not isinstance(vector, list):
                    raise TypeError(f"vector store {self.path}: unexpected vector type {type(vector).__name__}")
                found[str(record.id)] = [float(x) for x in vector]  # type: ignore[arg-type]
        missing = [i for i in wanted if i not in found]
        if missing:
            raise KeyError(f"vector store {self.path}: {len(missing)} ids not found, first {missing[0]}")
        return np.asarray([found[i] for i in wanted], np.float32).reshape(len(wanted), self.dim)

    def delete_pair(self, pair: str) -> int:
        flt = _edge_filter(None, pair, None)
        assert flt is not None
        n = self.count(pair)
        if n:
            self._live().update(qe.UpdateOperation.delete_points_by_filter(flt))
        return n

    def optimize(self) -> None:
        """Build the HNSW graph, quantized vectors and payload indexes of new segments (blocks until done)."""
        self._live().optimize()

    def flush(self) -> None:
        self._live().flush()

    def close(self) -> None:
        """Flush, close the shard and release the folder lock (idempotent)."""
        if self._shard is not None:
            shard, self._shard = self._shard, None
            try:
                shard.flush()
            finally:
                shard.close()
        self._release_lock()

    def __repr__(self) -> str:
        return f"EdgeVectorStore(path={str(self.path)!r}, dim={self.dim}, settings={self.settings})"


# ----------------------------------------------------------------------------------------------- qdrant-client


def _client_quantization(settings: IndexSettings) -> qm.ScalarQuantization | qm.ProductQuantization | None:
    from qdrant_client import models as qm

    if settings.quantization == "int8":
        config = qm.ScalarQuantizationConfig(type=qm.ScalarType.INT8, quantile=INT8_QUANTILE, always_ram=True)
        return qm.ScalarQuantization(scalar=config)
    if settings.quantization == "pq":
        pq = qm.ProductQuantizationConfig(compression=qm.CompressionRatio.X8, always_ram=True)
        return qm.ProductQuantization(product=pq)
    return None


def _client_filter(ended_by: int | None, pair: str | None, exclude_pair: str | None) -> qm.Filter | None:
    from qdrant_client import models as qm

    must: list[qm.Condition] = []
    must_not: list[qm.Condition] = []
    if ended_by is not None:
        must.append(qm.FieldCondition(key="horizon_end", range=qm.Range(lte=ended_by)))
    if pair is not None:
        must.append(qm.FieldCondition(key="pair", match=qm.MatchValue(value=pair)))
    if exclude_pair is not None:
        must_not.append(qm.FieldCondition(key="pair", match=qm.MatchValue(value=exclude_pair)))
    if not must and not must_not:
        return None
    return qm.Filter(must=must or None, must_not=must_not or None)


def _scrub(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret else text


class ClientVectorStore(_Base):
    """A collection in a Qdrant server (``url``) or in qdrant-client's in-memory local mode (``url=None``)."""

    def __init__(
        self,
        dim: int,
        *,
        url: str | None = None,
        collection: str = "patterns",
        settings: IndexSettings = IndexSettings(),
        api_key: str | None = None,
    ) -> None:
        from qdrant_client import QdrantClient

        self.dim = int(dim)
        self.collection = collection
        self.settings = settings
        self.url = url
        self._local = url is None
        where = ":memory:" if url is None else url
        self._client: QdrantClient | None = None
        try:
            self._client = QdrantClient(location=":memory:") if url is None else QdrantClient(url=url, api_key=api_key)
            self._prepare(self._client, where)
        except Exception as exc:
            self.close()
            if isinstance(exc, ValueError):
                raise
            # the message may quote the connection: never the api key (and no chained traceback that could)
            raise RuntimeError(_scrub(f"vector store {where} collection {collection!r}: {exc}", api_key)) from None

    def _prepare(self, client: QdrantClient, where: str) -> None:
        from qdrant_client import models as qm

        if client.collection_exists(self.collection):
            params = client.get_collection(self.collection).config.params.vectors
            size = params.size if isinstance(params, qm.VectorParams) else None
            if size != self.dim:
                raise ValueError(
                    f"vector store {where} collection {self.collection!r} holds dim {size} vectors, "
                    f"the store was opened with dim {self.dim}"
                )
        else:
            s = self.settings
            client.create_collection(
                self.collection,
                vectors_config=qm.VectorParams(size=self.dim, distance=qm.Distance.COSINE),
                hnsw_config=qm.HnswConfigDiff(
                    m=s.m, ef_construct=s.ef_construct, full_scan_threshold=FULL_SCAN_THRESHOLD_KB
                ),
                quantization_config=_client_quantization(s),
                optimizers_config=qm.OptimizersConfigDiff(indexing_threshold=s.indexing_threshold_kb),
            )
        if self._local:
            return  # local mode scans every point in Python: it has no payload indexes (and warns if asked)
        schema = client.get_collection(self.collection).payload_schema
        if "horizon_end" not in schema:
            integer = qm.IntegerIndexParams(
                type=qm.IntegerIndexType.INTEGER, lookup=False, range=True, on_disk=True, enable_hnsw=False
            )
            client.create_payload_index(self.collection, "horizon_end", field_schema=integer, wait=True)
        if "pair" not in schema:
            keyword = qm.KeywordIndexParams(type=qm.KeywordIndexType.KEYWORD, on_disk=True, enable_hnsw=False)
            client.create_payload_index(self.collection, "pair", field_schema=keyword, wait=True)

    def _live(self) -> QdrantClient:
        if self._client is None:
            raise RuntimeError(f"vector store collection {self.collection!r} is closed")
        return self._client

    def _params(self, exact: bool, filtered: bool) -> qm.SearchParams | None:
        from qdrant_client import models as qm

        if self._local:
            return None  # local mode is always exact (and warns about search params)
        if exact:
            return qm.SearchParams(exact=True, quantization=qm.QuantizationSearchParams(ignore=True))
        quant = qm.QuantizationSearchParams(rescore=True, oversampling=self.settings.oversampling)
        acorn = qm.AcornSearchParams(enable=True, max_selectivity=ACORN_MAX_SELECTIVITY) if filtered else None
        return qm.SearchParams(hnsw_ef=self.settings.hnsw_ef, quantization=quant, acorn=acorn)

    @staticmethod
    def _hits(points: Sequence[qm.ScoredPoint], k: int) -> list[Hit]:
        return _sorted_hits([Hit(str(p.id), float(p.score), dict(p.payload or {})) for p in points], k)

    def upsert(self, ids: Sequence[str], vectors: np.ndarray, payloads: Sequence[Mapping[str, Any]]) -> None:
        """Insert or replace points (validated first: a bad row raises ValueError and nothing is written)."""
        from qdrant_client import models as qm

        pids, matrix, clean = _check_upsert(ids, vectors, payloads, self.dim)
        client = self._live()
        for start in range(0, len(pids), BATCH):
            end = start + BATCH
            batch = qm.Batch(
                ids=[str(p) for p in pids[start:end]], vectors=matrix[start:end].tolist(), payloads=clean[start:end]
            )
            client.upsert(self.collection, points=batch, wait=True)

    def search(
        self,
        vector: np.ndarray,
        k: int,
        *,
        ended_by: int | None = None,
        exclude_pair: str | None = None,
        pair: str | None = None,
        exact: bool = False,
    ) -> list[Hit]:
        query = _check_query(vector, k, self.dim)
        end = None if ended_by is None else _as_epoch(ended_by, "ended_by")
        flt = _client_filter(end, pair, exclude_pair)
        response = self._live().query_points(
            self.collection,
            query=query.tolist(),
            limit=int(k),
            query_filter=flt,
            search_params=self._params(exact, flt is not None),
            with_payload=True,
        )
        return self._hits(response.points, int(k))

    def search_batch(
        self, vectors: np.ndarray, k: int, *, ended_by: Sequence[int] | None = None, exact: bool = False
    ) -> list[list[Hit]]:
        from qdrant_client import models as qm

        if not isinstance(k, int | np.integer) or isinstance(k, bool) or k < 1:
            raise ValueError(f"search_batch: k must be a positive int, got {k!r}")
        matrix = _check_matrix(np.asarray(vectors), self.dim, "search_batch")
        ends = _check_ended_by(ended_by, len(matrix))
        if len(matrix) == 0:
            return []
        requests = [
            qm.QueryRequest(
                query=v.tolist(),
                limit=int(k),
                filter=_client_filter(e, None, None),
                params=self._params(exact, e is not None),
                with_payload=True,
            )
            for v, e in zip(matrix, ends, strict=True)
        ]
        responses = self._live().query_batch_points(self.collection, requests=requests)
        return [self._hits(r.points, int(k)) for r in responses]

    def count(self, pair: str | None = None) -> int:
        return int(self._live().count(self.collection, count_filter=_client_filter(None, pair, None), exact=True).count)

    def ids(self, pair: str | None = None) -> list[str]:
        client, flt = self._live(), _client_filter(None, pair, None)
        out: list[str] = []
        offset: Any = None
        while True:
            records, offset = client.scroll(
                self.collection,
                scroll_filter=flt,
                limit=SCROLL_PAGE,
                offset=offset,
                with_payload=False,
                with_vectors=False,
            )
            out.extend(str(r.id) for r in records)
            if offset is None:
                return out

    def vectors(self, ids: Sequence[str]) -> np.ndarray:
        """The stored (unit-length) vectors of ``ids``, in that order; KeyError names ids that are missing."""
        wanted = [str(_parse_id(i, row, "vectors")) for row, i in enumerate(ids)]
        found: dict[str, list[float]] = {}
        client = self._live()
        for start in range(0, len(wanted), BATCH):
            for record in client.retrieve(
                self.collection, wanted[start : start + BATCH], with_payload=False, with_vectors=True
            ):
                vector = record.vector
                if not isinstance(vector, list):
                    raise TypeError(f"vector store {self.collection!r}: unexpected vector type {type(vector).__name__}")
                found[str(record.id)] = [float(x) for x in vector]  # type: ignore[arg-type]
        missing = [i for i in wanted if i not in found]
        if missing:
            raise KeyError(f"vector store {self.collection!r}: {len(missing)} ids not found, first {missing[0]}")
        return np.asarray([found[i] for i in wanted], np.float32).reshape(len(wanted), self.dim)

    def delete_pair(self, pair: str) -> int:
        from qdrant_client import models as qm

        flt = _client_filter(None, pair, None)
        assert flt is not None
        n = self.count(pair)
        if n:
            self._live().delete(self.collection, points_selector=qm.FilterSelector(filter=flt), wait=True)
        return n

    def optimize(self) -> None:
        """Nothing to do: a server optimizes in the background, local mode has no index."""

    def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            client.close()

    def __repr__(self) -> str:
        return f"ClientVectorStore(url={self.url!r}, collection={self.collection!r}, dim={self.dim})"
