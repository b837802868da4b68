"""Incident memory: the embedding of a trip's event window and the search for similar past incidents,
on both vector store engines (qdrant-client in memory, embedded Qdrant Edge in a temp folder)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("qdrant_edge")
pytest.importorskip("qdrant_client")

from cyber_pipelines.patterns.store import ClientVectorStore, EdgeVectorStore, VectorStore
from cyber_pipelines.vsm.events import Event
from cyber_pipelines.vsm.incidents import (
    BIAS,
    FEATURE_KINDS,
    HEAD,
    NAMESPACE,
    Incident,
    IncidentMemory,
    incident_id,
    incident_of,
    incident_vector,
    kind_counts,
)

DIM = 32
DAY1 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
BUCKETS = (DIM - HEAD) // len(FEATURE_KINDS)


def events_of(at: datetime, specs: list[tuple[str, float, str | None, str]], first_seq: int = 1) -> list[Event]:
    """Events (kind, minutes before ``at``, pair, decision), oldest first."""
    return [
        Event(kind, decision, kind, at - timedelta(minutes=ago), pair, {}, first_seq + i)
        for i, (kind, ago, pair, decision) in enumerate(specs)
    ]


def burst(at: datetime, pair: str, first_seq: int = 1) -> list[Event]:
    """A failure burst: runs fail again and again, then the breaker opens at ``at``."""
    specs: list[tuple[str, float, str | None, str]] = [
        ("run_success", 50, pair, "success"),
        ("pain", 40, pair, "0.10"),
        ("run_failure", 4, pair, "failure"),
        ("run_failure", 3, pair, "failure"),
        ("run_failure", 1, pair, "failure"),
        ("run_success", 2, "OTHER-USD", "success"),
        ("breaker", 0, pair, "open"),
    ]
    return events_of(at, specs, first_seq)


def stale(at: datetime, pair: str, first_seq: int = 1) -> list[Event]:
    """Data going stale: staleness reports over the hour, checks fail, then the breaker opens."""
    specs: list[tuple[str, float, str | None, str]] = [
        ("staleness", 55, pair, "stale"),
        ("staleness", 35, pair, "stale"),
        ("check_failure", 30, pair, "failure"),
        ("staleness", 15, pair, "stale"),
        ("breaker", 0, pair, "open"),
    ]
    return events_of(at, specs, first_seq)


@pytest.fixture(params=["client", "edge"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorStore]:
    made: VectorStore = (
        ClientVectorStore(DIM, collection="incidents")
        if request.param == "client"
        else EdgeVectorStore(tmp_path / "incidents", DIM)
    )
    with made:
        yield made


def remember_trip(memory: IncidentMemory, events: list[Event]) -> Incident:
    incident, vector = incident_of(events[-1], events)
    memory.remember(incident, vector)
    return incident


# ------------------------------------------------------------------------------------------------- vector


def test_incident_vector_is_a_deterministic_unit_vector_with_the_documented_layout() -> None:
    events = burst(DAY1, "BTC-USD")
    vector = incident_vector(events, DAY1)
    assert vector.shape == (DIM,) and vector.dtype == np.float32
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_array_equal(vector, incident_vector(list(events), DAY1))
    raw = vector / vector[0] * BIAS  # undo the normalization
    block = {kind: raw[HEAD + i * BUCKETS : HEAD + (i + 1) * BUCKETS] for i, kind in enumerate(FEATURE_KINDS)}
    np.testing.assert_allclose(block["run_failure"], [0, 0, np.log1p(3)], rtol=1e-5)  # all in the newest third
    np.testing.assert_allclose(block["run_success"], [np.log1p(1), 0, np.log1p(1)], rtol=1e-5)
    np.testing.assert_allclose(block["breaker"], [0, 0, np.log1p(1)], rtol=1e-5)
    assert raw[1] == pytest.approx(0.5, rel=1e-5)  # BTC had trouble, OTHER did not
    assert not block["other"].any()  # the pain event is derived: left out
    assert not raw[HEAD + len(FEATURE_KINDS) * BUCKETS :].any()


def test_incident_vector_counts_only_the_window_and_is_never_zero() -> None:
    empty = incident_vector([], DAY1)
    np.testing.assert_array_equal(empty, np.eye(DIM, dtype=np.float32)[0])  # the bias alone
    edge = events_of(DAY1, [("run_failure", 60, "BTC-USD", "f"), ("run_failure", -1, "BTC-USD", "f")])
    np.testing.assert_array_equal(incident_vector(edge, DAY1), empty)  # window is (at - 60 min, at]
    inside = events_of(DAY1, [("run_failure", 60 - 1 / 60, "BTC-USD", "f"), ("custom_kind", 1, None, "x")])
    raw = incident_vector(inside, DAY1)
    raw = raw / raw[0] * BIAS
    assert raw[HEAD] == pytest.approx(np.log1p(1), rel=1e-5)  # run_failure, oldest bucket
    assert raw[HEAD + FEATURE_KINDS.index("other") * BUCKETS + BUCKETS - 1] == pytest.approx(np.log1p(1), rel=1e-5)
    assert kind_counts(inside + edge, DAY1) == {"custom_kind": 1, "run_failure": 1}


def test_incident_vector_other_sizes_and_bad_arguments() -> None:
    assert incident_vector(burst(DAY1, "BTC-USD"), DAY1, window_minutes=10, dim=12).shape == (12,)
    with pytest.raises(ValueError, match="dim must be at least 12"):
        incident_vector([], DAY1, dim=8)
    with pytest.raises(ValueError, match="window_minutes must be positive"):
        incident_vector([], DAY1, window_minutes=0)


def test_incident_ids_are_deterministic_uuid5() -> None:
    pid = incident_id("BTC-USD", DAY1, 7)
    assert uuid.UUID(pid).version == 5 and pid == str(uuid.uuid5(NAMESPACE, f"BTC-USD|{DAY1.isoformat()}|7"))
    assert pid == incident_id("BTC-USD", DAY1.replace(tzinfo=None), 7)  # naive is UTC
    assert len({pid, incident_id("ETH-USD", DAY1, 7), incident_id("BTC-USD", DAY1, 8), incident_id(None, DAY1, 7)}) == 4
    incident, _ = incident_of(burst(DAY1, "BTC-USD")[-1], burst(DAY1, "BTC-USD"))
    assert incident.id == pid and incident.kinds == {"pain": 1, "run_failure": 3, "run_success": 2, "breaker": 1}


# ------------------------------------------------------------------------------------------------- memory


def test_a_failure_burst_is_most_similar_to_an_earlier_burst_not_to_staleness(store: VectorStore) -> None:
    memory = IncidentMemory(store)
    earlier_burst = remember_trip(memory, burst(DAY1, "ETH-USD", first_seq=1))
    staleness = remember_trip(memory, stale(DAY1 + timedelta(days=1), "BTC-USD", first_seq=100))
    now_events = burst(DAY1 + timedelta(days=2), "BTC-USD", first_seq=200)
    current, vector = incident_of(now_events[-1], now_events)
    (best, best_score), (second, second_score) = memory.similar(vector, k=5, before=current.at)
    assert (best.id, second.id) == (earlier_burst.id, staleness.id)
    assert best_score > second_score + 0.2 and best_score == pytest.approx(1.0, abs=1e-3)
    assert best == earlier_burst  # the whole incident comes back from the payload


def test_remembering_an_incident_again_does_not_duplicate_it(store: VectorStore) -> None:
    memory = IncidentMemory(store)
    events = burst(DAY1 + timedelta(microseconds=250), "BTC-USD", first_seq=40)
    first = remember_trip(memory, events)
    again = remember_trip(memory, events)
    assert first == again and store.count() == 1
    got = memory.get(first.id)
    assert got == first and got is not None and got.at == DAY1 + timedelta(microseconds=250) and got.seq == 46
    assert [i for i, _ in memory.similar(incident_vector(events, first.at))] == [first]


def test_similar_sees_only_incidents_strictly_before(store: VectorStore) -> None:
    memory = IncidentMemory(store)
    incidents = [
        remember_trip(memory, burst(DAY1 + timedelta(hours=h, microseconds=ms), "BTC-USD", first_seq=10 * h + 1))
        for h, ms in ((0, 0), (1, 0), (2, 0), (2, 500))
    ]
    query = incident_vector(burst(DAY1, "BTC-USD"), DAY1)
    cutoff = DAY1 + timedelta(hours=2, microseconds=500)  # the last one is at the cutoff, the third in its second
    found = memory.similar(query, k=10, before=cutoff)
    assert {i.id for i, _ in found} == {i.id for i in incidents[:3]}
    assert [i.id for i, _ in memory.similar(query, k=2, before=cutoff)] == [incidents[0].id, incidents[1].id]
    assert memory.similar(query, k=3, before=DAY1) == []
    assert len(memory.similar(query, k=10)) == 4
    assert [i.id for i, _ in memory.similar_to(incidents[2].id, k=5)] == [incidents[0].id, incidents[1].id]
    with pytest.raises(ValueError, match="k must be positive"):
        memory.similar(query, k=0)


def test_get_unknown_and_bad_ids(store: VectorStore) -> None:
    memory = IncidentMemory(store)
    system = Incident.create(None, DAY1, "system breaker tripped: cascade", {"run_failure": 9}, seq=3)
    memory.remember(system, incident_vector([], DAY1))
    assert memory.get(system.id) == system and system.pair is None
    assert memory.get(incident_id("BTC-USD", DAY1, 3)) is None
    with pytest.raises(ValueError, match="is not a UUID"):
        memory.get("not-an-id")
    with pytest.raises(KeyError, match="no incident"):
        memory.similar_to(incident_id("BTC-USD", DAY1, 3))


def test_incidents_persist_in_the_embedded_store(tmp_path: Path) -> None:
    with EdgeVectorStore(tmp_path / "incidents", DIM) as store:
        incident = remember_trip(IncidentMemory(store), stale(DAY1, "SOL-USD"))
    with EdgeVectorStore(tmp_path / "incidents", DIM) as store:
        assert IncidentMemory(store).get(incident.id) == incident
