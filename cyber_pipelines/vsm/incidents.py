"""Incident memory: each breaker trip stored with an embedding of its event window, searched for similar ones.

``incident_vector`` embeds the events of the window before a trip; ``IncidentMemory`` keeps incidents in a
``VectorStore`` (a store of its own: its points are incidents, not market windows) and ``similar`` lists
the past incidents nearest in cosine similarity. Ids are deterministic (uuid5 of pair, time and seq), so
remembering an incident twice replaces it. The payload's ``horizon_end`` is the incident time (int epoch
seconds): ``similar(before=T)`` searches with ``ended_by`` and keeps the incidents strictly before ``T``.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from cyber_pipelines.patterns.store import Hit, VectorStore
from cyber_pipelines.vsm.events import Event, utc

NAMESPACE = uuid.UUID("6548453f-c841-5d45-a349-d5250bebc364")  # uuid5(NAMESPACE_URL, "cyber-pipelines:incidents")
# Kinds with a block of the vector, in order; any other kind counts as "other", except the derived ones
# (pain, temporal matches, incidents, policy and prospecting decisions: reactions, not symptoms).
FEATURE_KINDS = (
    "run_failure",
    "check_failure",
    "zombie",
    "staleness",
    "queue",
    "breaker",
    "pair_state",
    "run_success",
    "check_success",
    "other",
)
DERIVED_KINDS = frozenset({"pain", "temporal", "incident", "policy", "prospect"})
TROUBLE_KINDS = frozenset({"run_failure", "check_failure", "zombie", "staleness"})
BIAS = 0.25  # the constant component (before normalization): an empty window is a valid direction
HEAD = 2  # bias and pair share come first


def _epoch(moment: datetime) -> float:
    return moment.timestamp() if moment.tzinfo is not None else moment.replace(tzinfo=UTC).timestamp()


def _window(events: Iterable[Event], at: datetime, window_minutes: float) -> list[tuple[float, Event]]:
    end = _epoch(at)
    start = end - 60.0 * window_minutes
    return [(t, e) for e in events if start < (t := _epoch(e.at)) <= end]


def kind_counts(events: Iterable[Event], at: datetime, window_minutes: float = 60) -> dict[str, int]:
    """Events per kind in the window ``(at - window_minutes, at]``, by kind name."""
    counts: dict[str, int] = {}
    for _, event in _window(events, at, window_minutes):
        counts[event.kind] = counts.get(event.kind, 0) + 1
    return dict(sorted(counts.items()))


def incident_vector(events: Iterable[Event], at: datetime, window_minutes: float = 60, dim: int = 32) -> np.ndarray:
    """A unit-length float32 vector of the events in ``(at - window_minutes, at]``.

    Layout (``B = (dim - 2) // len(FEATURE_KINDS)`` time buckets, 3 at dim 32): ``[0]`` the bias ``BIAS``;
    ``[1]`` the share of the window's pairs that had trouble (a kind in ``TROUBLE_KINDS``); then one block
    of ``B`` per kind of ``FEATURE_KINDS``: ``log1p`` of the count in each bucket, oldest bucket first;
    the ``(dim - 2) % len(FEATURE_KINDS)`` last components are zero. Derived kinds are left out."""
    buckets = (dim - HEAD) // len(FEATURE_KINDS)
    if buckets < 1:
        raise ValueError(f"incident_vector: dim must be at least {HEAD + len(FEATURE_KINDS)}, got {dim}")
    if window_minutes <= 0:
        raise ValueError(f"incident_vector: window_minutes must be positive, got {window_minutes}")
    column = {kind: i for i, kind in enumerate(FEATURE_KINDS)}
    counts = np.zeros((len(FEATURE_KINDS), buckets))
    start, width = _epoch(at) - 60.0 * window_minutes, 60.0 * window_minutes / buckets
    pairs: set[str] = set()
    troubled: set[str] = set()
    for t, event in _window(events, at, window_minutes):
        if event.kind in DERIVED_KINDS:
            continue
        counts[column.get(event.kind, column["other"]), min(buckets - 1, int((t - start) / width))] += 1
        if event.pair is not None:
            pairs.add(event.pair)
            if event.kind in TROUBLE_KINDS:
                troubled.add(event.pair)
    vector = np.zeros(dim)
    vector[0] = BIAS
    vector[1] = len(troubled) / len(pairs) if pairs else 0.0
    vector[HEAD : HEAD + counts.size] = np.log1p(counts).ravel()
    return (vector / np.linalg.norm(vector)).astype(np.float32)


def _uuid(incident_id: str) -> str:
    try:
        return str(uuid.UUID(incident_id))
    except (ValueError, TypeError, AttributeError):
        raise ValueError(f"incident id {incident_id!r} is not a UUID") from None


def incident_id(pair: str | None, at: datetime, seq: int) -> str:
    """The deterministic id of an incident: uuid5 of pair, UTC time and the seq of its breaker event."""
    return str(uuid.uuid5(NAMESPACE, f"{pair or ''}|{utc(at).isoformat()}|{seq}"))


@dataclass(frozen=True)
class Incident:
    """A breaker trip: ``pair`` None for the system breaker; ``kinds`` the event counts of its window."""

    id: str
    pair: str | None
    at: datetime
    reason: str
    kinds: dict[str, int] = field(default_factory=dict)
    seq: int = 0  # the breaker event's

    @classmethod
    def create(
        cls, pair: str | None, at: datetime, reason: str, kinds: Mapping[str, int] | None = None, seq: int = 0
    ) -> Incident:
        return cls(incident_id(pair, at, seq), pair, utc(at), reason, dict(kinds or {}), seq)

    def payload(self) -> dict[str, Any]:
        epoch = math.floor(self.at.timestamp())
        return {
            "incident": True,
            "pair": self.pair,
            "timestamp": epoch,
            "horizon_end": epoch,  # the store's time filter (ended_by)
            "at": self.at.isoformat(),
            "reason": self.reason,
            "kinds": dict(self.kinds),
            "seq": self.seq,
        }

    @classmethod
    def from_hit(cls, hit: Hit) -> Incident | None:
        """The incident of a search hit (None for a point that is not an incident)."""
        p = hit.payload
        if not p.get("incident"):
            return None
        kinds = {str(k): int(v) for k, v in (p.get("kinds") or {}).items()}
        return cls(hit.id, p.get("pair"), datetime.fromisoformat(p["at"]), str(p.get("reason", "")), kinds, p["seq"])


def incident_of(
    trip: Event, events: Iterable[Event], window_minutes: float = 60, dim: int = 32
) -> tuple[Incident, np.ndarray]:
    """The incident of a breaker ``trip`` event and the embedding of the events before it."""
    window = list(events)
    kinds = kind_counts(window, trip.at, window_minutes)
    incident = Incident.create(trip.pair, trip.at, trip.reason, kinds, trip.seq)
    return incident, incident_vector(window, trip.at, window_minutes, dim)


class IncidentMemory:
    """Incidents in a vector store: ``remember``, ``similar``, ``get``, ``similar_to``."""

    def __init__(self, store: VectorStore) -> None:
        self.store = store

    def remember(self, incident: Incident, vector: np.ndarray) -> None:
        """Store (or replace: the id is deterministic) ``incident`` with its embedding."""
        self.store.upsert([incident.id], np.asarray(vector, np.float32).reshape(1, -1), [incident.payload()])

    def similar(self, vector: np.ndarray, k: int = 5, before: datetime | None = None) -> list[tuple[Incident, float]]:
        """The ``k`` incidents most cosine-similar to ``vector`` (only those strictly before ``before``)."""
        if k < 1:
            raise ValueError(f"similar: k must be positive, got {k}")
        cutoff = None if before is None else utc(before)
        ended_by = None if cutoff is None else math.floor(cutoff.timestamp())
        limit = k
        while True:
            fetch = limit + (8 if cutoff is not None else 0)  # those in cutoff's own second may fall out
            hits = self.store.search(vector, fetch, ended_by=ended_by, exact=True)
            found = [(i, h.score) for h in hits if (i := Incident.from_hit(h)) is not None]
            kept = [(i, s) for i, s in found if cutoff is None or i.at < cutoff]
            if len(kept) >= k or len(hits) < fetch:
                return sorted(kept, key=lambda x: (-x[1], x[0].at, x[0].id))[:k]
            limit *= 2

    def get(self, incident_id: str) -> Incident | None:
        """The incident with this id (None when unknown); ValueError for an id that is not a UUID."""
        wanted = _uuid(incident_id)
        vector = self.vector(wanted)
        if vector is None:
            return None
        total, k = self.store.count(), 16
        while True:  # the store returns payloads from searches only: find the point by its own vector
            for hit in self.store.search(vector, min(k, max(total, 1)), exact=True):
                if hit.id == wanted:
                    return Incident.from_hit(hit)
            if k >= total:
                return None
            k *= 4

    def vector(self, incident_id: str) -> np.ndarray | None:
        """The stored (unit-length) embedding of an incident, None when unknown."""
        try:
            return self.store.vectors([_uuid(incident_id)])[0]
        except KeyError:
            return None

    def similar_to(self, incident_id: str, k: int = 5) -> list[tuple[Incident, float]]:
        """The ``k`` past incidents (strictly earlier) most similar to a remembered one; KeyError if unknown."""
        incident = self.get(incident_id)
        vector = self.vector(incident_id)
        if incident is None or vector is None:
            raise KeyError(f"no incident {incident_id} in the incident memory")
        return self.similar(vector, k, before=incident.at)
