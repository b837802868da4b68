"""The pattern layer's vector store: one set of tests on both engines (qdrant-client in memory, Qdrant Edge)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("qdrant_edge")
pytest.importorskip("qdrant_client")

from cyber_pipelines.patterns.store import (
    BATCH,
    LOCK_FILE,
    NAMESPACE,
    ClientVectorStore,
    EdgeVectorStore,
    Hit,
    IndexSettings,
    StoreLockedError,
    VectorStore,
    exact_neighbours,
    point_id,
    recall_at_k,
)

DIM = 8
T0 = 1_700_000_000  # epoch seconds, a bar open
HOUR = 3600
PAIRS = ("BTC/USD", "ETH/USD", "SOL/USD")
ROOT = Path(__file__).resolve().parents[1]
# qdrant-client checks a server's version in the background: the unreachable one of the api-key test warns late
pytestmark = pytest.mark.filterwarnings("ignore:Failed to obtain server version:UserWarning")


def make_points(n: int, seed: int = 0, dim: int = DIM) -> tuple[list[str], np.ndarray, list[dict[str, Any]]]:
    """``n`` windows spread over PAIRS, one hour apart per pair, with the payload the pattern assets write."""
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    ids, payloads = [], []
    for i in range(n):
        pair, ts = PAIRS[i % len(PAIRS)], T0 + (i // len(PAIRS)) * HOUR
        ids.append(point_id(pair, ts))
        payloads.append(
            {
                "pair": pair,
                "timestamp": ts,
                "horizon_end": ts + 25 * HOUR,
                "regime": ("calm", "normal", "turbulent")[i % 3],
                "fwd_1h": float(rng.normal()),
                "fwd_6h": float(rng.normal()),
                "fwd_24h": float(rng.normal()),
            }
        )
    return ids, vectors, payloads


def same_payload(got: dict[str, Any], sent: dict[str, Any]) -> bool:
    """Equal payloads; floats to 1e-15 (Edge's JSON parsing returns about 1 in 8 float64 values 1 ULP off)."""
    return got.keys() == sent.keys() and all(
        got[k] == pytest.approx(v, rel=1e-15) if isinstance(v, float) else type(got[k]) is type(v) and got[k] == v
        for k, v in sent.items()
    )


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.fixture(params=["client", "edge"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorStore]:
    made: VectorStore = (
        ClientVectorStore(DIM) if request.param == "client" else EdgeVectorStore(tmp_path / "shard", DIM)
    )
    with made:
        yield made


@pytest.fixture
def filled(store: VectorStore) -> tuple[VectorStore, list[str], np.ndarray, list[dict[str, Any]]]:
    ids, vectors, payloads = make_points(300)
    store.upsert(ids, vectors, payloads)
    store.optimize()
    return store, ids, vectors, payloads


# ------------------------------------------------------------------------------------------------- ids, helpers


def test_point_id_is_deterministic_uuid5_of_pair_and_epoch_seconds() -> None:
    moment = datetime(2024, 1, 2, 3, 0, tzinfo=UTC)
    pid = point_id("BTC/USD", moment)
    assert uuid.UUID(pid).version == 5 and pid == str(uuid.uuid5(NAMESPACE, "BTC/USD|1704164400"))
    assert pid == "446b7c41-0f7d-5d71-bd43-37561246ac6f"  # pinned: a changed namespace would duplicate every point
    assert pid == point_id("BTC/USD", int(moment.timestamp()))  # datetime and int epoch seconds agree
    assert pid == point_id("BTC/USD", moment.replace(tzinfo=None))  # naive is UTC
    assert pid == point_id("BTC/USD", moment.astimezone(timezone(timedelta(hours=2))))
    assert pid != point_id("ETH/USD", moment)
    assert pid != point_id("BTC/USD", moment + timedelta(hours=1))
    with pytest.raises(ValueError, match="whole second"):
        point_id("BTC/USD", moment + timedelta(milliseconds=5))


def test_exact_neighbours_and_recall_at_k() -> None:
    rng = np.random.default_rng(1)
    data, queries = rng.normal(size=(500, DIM)), rng.normal(size=(20, DIM))
    found = exact_neighbours(data, queries, 5)
    scores = unit(queries) @ unit(data).T
    assert found.shape == (20, 5)
    np.testing.assert_array_equal(found, np.argsort(-scores, axis=1)[:, :5])
    assert exact_neighbours(data[:3], queries, 5).shape == (20, 3)  # k capped at the data size
    assert recall_at_k([["a", "b"], ["c", "x"]], [["a", "b"], ["c", "d"]]) == pytest.approx(0.75)
    assert recall_at_k([["a"], []], [["a"], []]) == 1.0  # a query with nothing to find is skipped
    with pytest.raises(ValueError, match="truth"):
        recall_at_k([["a"]], [])


# ------------------------------------------------------------------------------------------------ both engines


def test_upsert_search_round_trip(filled: tuple) -> None:
    store, ids, vectors, payloads = filled
    assert store.dim == DIM and store.count() == 300
    for i in (0, 7, 299):
        hits = store.search(vectors[i], 5)
        assert len(hits) == 5 and all(isinstance(h, Hit) for h in hits)
        assert hits[0].id == ids[i] and hits[0].score == pytest.approx(1.0, abs=1e-4)
        assert same_payload(hits[0].payload, payloads[i])
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    batch = store.search_batch(vectors[:4], 3, exact=True)
    assert [[h.id for h in hs] for hs in batch] == [[h.id for h in store.search(v, 3, exact=True)] for v in vectors[:4]]


def test_reupsert_same_ids_replaces_points(filled: tuple) -> None:
    store, ids, vectors, payloads = filled
    changed = [{**p, "regime": "replaced"} for p in payloads]
    store.upsert(ids, vectors[::-1].copy(), changed)
    assert store.count() == 300
    assert sorted(store.ids()) == sorted(ids)
    hit = store.search(vectors[-1], 1, exact=True)[0]  # row 0 now holds the last vector
    assert hit.id == ids[0] and hit.payload["regime"] == "replaced"
    np.testing.assert_allclose(store.vectors([ids[0]])[0], unit(vectors[-1]), atol=1e-5)


@pytest.mark.parametrize("exact", [False, True])
def test_ended_by_never_returns_a_later_horizon(filled: tuple, exact: bool) -> None:
    store, ids, vectors, payloads = filled
    horizons = np.array([p["horizon_end"] for p in payloads])
    rng = np.random.default_rng(2)
    for cutoff in (int(horizons.min()) - 1, int(horizons.min()), int(np.median(horizons)), int(horizons.max())):
        allowed = {pid for pid, h in zip(ids, horizons, strict=True) if h <= cutoff}
        hits = store.search(rng.normal(size=DIM), 400, ended_by=cutoff, exact=exact)
        assert all(h.payload["horizon_end"] <= cutoff for h in hits)
        assert {h.id for h in hits} == allowed  # inclusive: horizon_end == ended_by is seen
    cutoffs = [int(h) for h in np.quantile(horizons, [0.1, 0.5, 0.9]).astype(int)]
    batch = store.search_batch(vectors[:3], 400, ended_by=cutoffs, exact=exact)
    for hits, cutoff in zip(batch, cutoffs, strict=True):
        assert hits and all(h.payload["horizon_end"] <= cutoff for h in hits)
        assert len(hits) == int((horizons <= cutoff).sum())


def test_pair_and_exclude_pair_filters(filled: tuple) -> None:
    store, ids, vectors, payloads = filled
    of_btc = {pid for pid, p in zip(ids, payloads, strict=True) if p["pair"] == "BTC/USD"}
    only = store.search(vectors[1], 400, pair="BTC/USD")
    assert {h.id for h in only} == of_btc
    others = store.search(vectors[0], 400, exclude_pair="BTC/USD")
    assert len(others) == 200 and not {h.id for h in others} & of_btc
    cutoff = T0 + 50 * HOUR
    both = store.search(vectors[0], 400, exclude_pair="ETH/USD", ended_by=cutoff, exact=True)
    assert both and all(h.payload["pair"] != "ETH/USD" and h.payload["horizon_end"] <= cutoff for h in both)
    assert store.search(vectors[0], 5, pair="XRP/USD") == []


def test_exact_search_equals_numpy(filled: tuple) -> None:
    store, ids, vectors, _ = filled
    queries = np.random.default_rng(3).normal(size=(10, DIM)).astype(np.float32)
    truth = exact_neighbours(vectors, queries, 10)
    for q, row in zip(queries, truth, strict=True):
        hits = store.search(q, 10, exact=True)
        assert [h.id for h in hits] == [ids[j] for j in row]
        np.testing.assert_allclose([h.score for h in hits], unit(vectors[row]) @ unit(q), atol=1e-5)
    found = [[h.id for h in hs] for hs in store.search_batch(queries, 10, exact=True)]
    assert recall_at_k(found, [[ids[j] for j in row] for row in truth]) == 1.0


def test_count_ids_vectors_delete_pair(filled: tuple) -> None:
    store, ids, vectors, payloads = filled
    assert store.count("BTC/USD") == 100 and store.count("XRP/USD") == 0
    assert sorted(store.ids("ETH/USD")) == sorted(
        i for i, p in zip(ids, payloads, strict=True) if p["pair"] == "ETH/USD"
    )
    np.testing.assert_allclose(store.vectors(ids[10:20]), unit(vectors[10:20]), atol=1e-5)
    assert store.vectors([]).shape == (0, DIM)
    with pytest.raises(KeyError, match="not found"):
        store.vectors([ids[0], point_id("XRP/USD", T0)])
    assert store.delete_pair("BTC/USD") == 100
    assert store.delete_pair("BTC/USD") == 0
    assert store.count() == 200 and store.count("BTC/USD") == 0
    assert all(h.payload["pair"] != "BTC/USD" for h in store.search(vectors[0], 300))
    assert len(store.ids()) == 200


def test_ids_scroll_past_one_page(store: VectorStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("cyber_pipelines.patterns.store.SCROLL_PAGE", 64)
    ids, vectors, payloads = make_points(150)
    store.upsert(ids, vectors, payloads)
    assert sorted(store.ids()) == sorted(ids) and len(store.ids()) == 150


BAD = [
    ("wrong dim", lambda v: v[:, :5], "row 0.*dim is 8"),
    ("one dimensional", lambda v: v[0], "row 0"),
    ("nan", lambda v: np.where(np.arange(len(v))[:, None] == 3, np.nan, v), "row 3.*non-finite"),
    ("inf", lambda v: np.where(np.arange(len(v))[:, None] == 4, np.inf, v), "row 4.*non-finite"),
    ("overflow", lambda v: np.where(np.arange(len(v))[:, None] == 6, 1e39, v.astype(np.float64)), "row 6"),
    ("zero", lambda v: np.where(np.arange(len(v))[:, None] == 2, 0.0, v), "row 2.*zeros"),
    ("short", lambda v: v[:-1], "row 9.*lengths differ"),
    ("ragged list", lambda v: [*v[:5].tolist(), [1.0, 2.0], *v[6:].tolist()], "row 5"),
]


@pytest.mark.parametrize(("case", "mangle", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_vectors_raise_naming_the_row_and_write_nothing(
    store: VectorStore, case: str, mangle, message: str
) -> None:
    ids, vectors, payloads = make_points(10)
    with pytest.raises(ValueError, match=message):
        store.upsert(ids, mangle(vectors), payloads)
    assert store.count() == 0


def test_bad_ids_and_payloads_raise_naming_the_row(store: VectorStore) -> None:
    ids, vectors, payloads = make_points(10)
    with pytest.raises(ValueError, match=r"row 2.*not a UUID"):
        store.upsert([*ids[:2], "BTC/USD|1700000000", *ids[3:]], vectors, payloads)
    with pytest.raises(ValueError, match=r"row 7.*repeats row 1"):
        store.upsert([*ids[:7], ids[1], *ids[8:]], vectors, payloads)
    bads: list[tuple[int, dict[str, Any]]] = [(4, {"horizon_end": 1.7e9}), (5, {"timestamp": "2024-01-01"})]
    for row, bad in [*bads, (6, {"fwd_1h": float("inf")}), (1, {"pair": 3})]:
        broken = [dict(p) for p in payloads]
        broken[row].update(bad)
        with pytest.raises(ValueError, match=f"row {row}"):
            store.upsert(ids, vectors, broken)
    with pytest.raises(ValueError, match=r"row 8.*mapping"):
        store.upsert(ids, vectors, [*payloads[:8], None, payloads[9]])  # type: ignore[list-item]
    assert store.count() == 0
    with pytest.raises(ValueError, match="dim is 8"):
        store.search(np.ones(DIM + 1), 3)
    with pytest.raises(ValueError, match="k must be"):
        store.search(np.ones(DIM), 0)
    with pytest.raises(ValueError, match="2 ended_by values for 3"):
        store.search_batch(vectors[:3], 3, ended_by=[T0, T0])


def test_a_bad_row_in_a_later_batch_writes_no_earlier_batch(store: VectorStore) -> None:
    n = BATCH + 50
    ids, vectors, payloads = make_points(n)
    vectors[n - 1, 0] = np.nan
    with pytest.raises(ValueError, match=f"row {n - 1}"):
        store.upsert(ids, vectors, payloads)
    assert store.count() == 0
    vectors[n - 1, 0] = 1.0
    store.upsert(ids, vectors, payloads)
    assert store.count() == n


def test_numpy_payload_values_and_nan_are_stored_as_json(store: VectorStore) -> None:
    ids, vectors, payloads = make_points(3)
    payloads[0] = {**payloads[0], "horizon_end": np.int64(payloads[0]["horizon_end"]), "fwd_24h": np.float32(np.nan)}
    store.upsert(ids, vectors, payloads)
    hit = store.search(vectors[0], 1)[0]
    assert hit.payload["fwd_24h"] is None and type(hit.payload["horizon_end"]) is int
    assert store.search(vectors[0], 3, ended_by=int(payloads[0]["horizon_end"]))[0].id == ids[0]


def test_closed_store_refuses_work(store: VectorStore) -> None:
    store.close()
    store.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        store.count()


# -------------------------------------------------------------------------------------------------- engine details


def test_both_engines_give_the_same_exact_answers(tmp_path: Path) -> None:
    ids, vectors, payloads = make_points(240, seed=5)
    queries = np.random.default_rng(6).normal(size=(8, DIM))
    cutoffs = [T0 + h * HOUR for h in (30, 50, 70, 90, 30, 50, 70, 90)]
    with ClientVectorStore(DIM) as client, EdgeVectorStore(tmp_path / "shard", DIM) as edge:
        answers = []
        for store in (client, edge):
            store.upsert(ids, vectors, payloads)
            store.optimize()
            single = [
                store.search(q, 7, ended_by=c, exclude_pair="SOL/USD", exact=True)
                for q, c in zip(queries, cutoffs, strict=True)
            ]
            answers.append((single, store.search_batch(queries, 7, ended_by=cutoffs, exact=True)))
    (c_single, c_batch), (e_single, e_batch) = answers
    for c_hits, e_hits in zip([*c_single, *c_batch], [*e_single, *e_batch], strict=True):
        assert c_hits and [h.id for h in c_hits] == [h.id for h in e_hits]
        np.testing.assert_allclose([h.score for h in c_hits], [h.score for h in e_hits], atol=1e-5)
        assert all(same_payload(e.payload, c.payload) for c, e in zip(c_hits, e_hits, strict=True))


def test_client_dim_mismatch_on_an_existing_collection() -> None:
    with ClientVectorStore(DIM, collection="windows") as store:
        client = store._client
        assert client is not None
        store.dim = 16
        with pytest.raises(ValueError, match="'windows' holds dim 8 vectors, the store was opened with dim 16"):
            store._prepare(client, ":memory:")


def test_client_errors_never_show_the_api_key() -> None:
    with pytest.raises(RuntimeError) as info, pytest.warns(UserWarning):  # insecure connection, unknown version
        ClientVectorStore(DIM, url="http://127.0.0.1:9", api_key="sekrit-key-123")
    assert "sekrit-key-123" not in str(info.value) and "127.0.0.1:9" in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_edge_dim_mismatch_on_reopen(tmp_path: Path) -> None:
    path = tmp_path / "shard"
    with EdgeVectorStore(path, DIM) as store:
        store.upsert(*make_points(5))
    with pytest.raises(ValueError, match=f"{path}.*dim {DIM}.*dim 16"):
        EdgeVectorStore(path, 16)
    with EdgeVectorStore(path, DIM) as store:  # the failed open released the folder
        assert store.count() == 5


@pytest.mark.parametrize("quantization", ["none", "int8", "pq"])
def test_edge_survives_a_restart(tmp_path: Path, quantization: str) -> None:
    path = tmp_path / "shard"
    ids, vectors, payloads = make_points(400)
    queries = np.random.default_rng(4).normal(size=(5, DIM))
    with EdgeVectorStore(path, DIM, IndexSettings(quantization=quantization)) as store:  # type: ignore[arg-type]
        store.upsert(ids, vectors, payloads)
        store.optimize()
        before = [store.search(q, 10, ended_by=T0 + 80 * HOUR) for q in queries]
        assert store.search(vectors[3], 1)[0].id == ids[3]
    with EdgeVectorStore(path, DIM) as store:
        assert store.count() == 400 and sorted(store.ids()) == sorted(ids)
        assert [store.search(q, 10, ended_by=T0 + 80 * HOUR) for q in queries] == before


def _child(code: str, path: Path) -> subprocess.Popen[str]:
    script = textwrap.dedent(code).format(root=str(ROOT), path=str(path))
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    line = child.stdout.readline()
    assert line.strip() == "ready", child.stderr.read() if child.stderr else line
    return child


def test_edge_upserts_survive_a_crash_before_close(tmp_path: Path) -> None:
    path = tmp_path / "shard"
    child = _child(
        """
        import os, sys
        sys.path.insert(0, {root!r})
        sys.path.insert(0, {root!r} + "/tests")
        from test_vector_store import make_points
        from cyber_pipelines.patterns.store import EdgeVectorStore
        store = EdgeVectorStore({path!r}, 8)
        store.upsert(*make_points(50))
        print("ready", flush=True)
        os._exit(0)  # no flush, no close: the write-ahead log has the points
        """,
        path,
    )
    child.wait(timeout=30)
    with EdgeVectorStore(path, DIM) as store:
        assert store.count() == 50


@pytest.mark.parametrize("holder", ["store", "raw shard"])
def test_edge_folder_held_by_another_process(tmp_path: Path, holder: str) -> None:
    path = tmp_path / "shard"
    with EdgeVectorStore(path, DIM) as store:
        store.upsert(*make_points(20))
    opener = (
        "EdgeVectorStore({path!r}, 8)" if holder == "store" else "__import__('qdrant_edge').EdgeShard.load({path!r})"
    )
    child = _child(
        f"""
        import sys
        sys.path.insert(0, {{root!r}})
        from cyber_pipelines.patterns.store import EdgeVectorStore
        held = {opener}
        print("ready", flush=True)
        sys.stdin.read()  # hold it until the parent closes stdin
        """,
        path,
    )
    try:
        with pytest.raises(StoreLockedError) as info:
            EdgeVectorStore(path, DIM)
        message = str(info.value)
        assert "\n" not in message and str(path) in message
        assert "held by another process; writers are serialized by the Dagster pool 'vector_store'" in message
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=30)
    assert child.returncode == 0
    with EdgeVectorStore(path, DIM) as store:  # released when the holder exits
        assert store.count() == 20
        assert (path / LOCK_FILE).exists()


def test_edge_second_store_in_the_same_process_is_refused(tmp_path: Path) -> None:
    with EdgeVectorStore(tmp_path / "shard", DIM), pytest.raises(StoreLockedError, match="held by another"):
        EdgeVectorStore(tmp_path / "shard", DIM)
