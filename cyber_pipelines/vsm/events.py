"""The VSM event log: every decision of the viable system with its reason, persisted and totally ordered.

One table (``vsm_events``) behind SQLAlchemy: SQLite under the Dagster instance by default
(``<DAGSTER_HOME>/vsm/events.db``), PostgreSQL (or any SQLAlchemy URL) when ``CYBER_VSM_DB`` is set. The
order is the autoincrement ``seq``: appends from several processes are serialized by the database, so
``seq`` is a total order that every reader sees the same way. Events are never updated or deleted.

Kinds used across the layer (free text is allowed; these are the ones the VSM parts write and read):
``run_failure``, ``run_success``, ``check_failure``, ``check_warning``, ``check_success``, ``zombie``, ``pain``,
``breaker``, ``pair_state``, ``prospect``, ``policy``, ``temporal``, ``staleness``, ``queue``, ``incident``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

SYSTEM = ""  # the pair of a system-wide event (stored as '', shown as None)

_metadata = sa.MetaData()
EVENTS = sa.Table(
    "vsm_events",
    _metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.Float, nullable=False, index=True),  # epoch seconds, UTC
    sa.Column("kind", sa.String(64), nullable=False, index=True),
    sa.Column("pair", sa.String(64), nullable=False, index=True),
    sa.Column("decision", sa.String(128), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("data", sa.Text, nullable=False),  # JSON object
    sa.Column("key", sa.String(200), nullable=True, unique=True),  # an event recorded once (a run's end, a check)
)


@dataclass(frozen=True)
class Event:
    """One VSM event. ``pair`` is a partition key (``BTC-USD``) or None for the whole system."""

    kind: str
    decision: str
    reason: str
    at: datetime
    pair: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    seq: int = 0  # 0 until the log has stored it
    key: str | None = None  # when set, the log stores the event once (e.g. ``run:<id>``): readers may overlap

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": self.at.isoformat(),
            "kind": self.kind,
            "pair": self.pair,
            "decision": self.decision,
            "reason": self.reason,
            "data": dict(self.data),
        }


def utc(moment: datetime | None = None) -> datetime:
    """``moment`` (naive = UTC) as an aware UTC datetime; now when None."""
    if moment is None:
        return datetime.now(UTC)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def default_url(dagster_home: str | os.PathLike[str] | None = None) -> str:
    """``CYBER_VSM_DB`` when set, else SQLite at ``<DAGSTER_HOME>/vsm/events.db``."""
    configured = os.environ.get("CYBER_VSM_DB")
    if configured:
        return configured
    home = Path(dagster_home or os.environ.get("DAGSTER_HOME") or Path.cwd() / ".dagster_home")
    folder = home.resolve() / "vsm"
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'events.db'}"


def _engine_url(url: str) -> sa.URL:
    """A plain ``postgresql://`` URL uses psycopg2 (the driver dagster-postgres uses too)."""
    parsed = sa.make_url(url)
    return parsed.set(drivername="postgresql+psycopg2") if parsed.drivername == "postgresql" else parsed


def _redacted(url: str) -> str:
    return sa.make_url(url).render_as_string(hide_password=True)


class EventLog:
    """Append and read VSM events (see the module docstring)."""

    def __init__(self, url: str | None = None) -> None:
        self.url = url or default_url()
        try:
            self.engine = sa.create_engine(_engine_url(self.url))
            _metadata.create_all(self.engine)
        except Exception as exc:  # a bad URL or an unreachable server: say which, never the password
            cause = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__])[0]
            raise RuntimeError(f"VSM event log {_redacted(self.url)} cannot be opened: {cause}") from exc
        if self.engine.dialect.name == "sqlite":
            with self.engine.begin() as conn:
                conn.exec_driver_sql("PRAGMA journal_mode=WAL")

    def __repr__(self) -> str:
        return f"EventLog({_redacted(self.url)})"

    def append(
        self,
        kind: str,
        decision: str,
        reason: str,
        *,
        pair: str | None = None,
        data: Mapping[str, Any] | None = None,
        at: datetime | None = None,
    ) -> Event:
        return self.extend([Event(kind, decision, reason, utc(at), pair, dict(data or {}))])[0]

    def extend(self, events: Iterable[Event]) -> list[Event]:
        """Store ``events`` in one transaction, in order; returns those stored, with their ``seq`` (an event
        whose ``key`` is in the log already is skipped)."""
        stored: list[Event] = []
        with self.engine.begin() as conn:
            for event in events:
                if not event.kind or not event.decision:
                    raise ValueError(f"VSM event needs a kind and a decision: {event!r}")
                row = {
                    "at": utc(event.at).timestamp(),
                    "kind": event.kind,
                    "pair": event.pair or SYSTEM,
                    "decision": event.decision,
                    "reason": event.reason,
                    "data": json.dumps(dict(event.data), sort_keys=True, default=str),
                    "key": event.key,
                }
                if event.key is not None:
                    taken = conn.execute(sa.select(EVENTS.c.seq).where(EVENTS.c.key == event.key)).first()
                    if taken is not None:
                        continue
                seq = conn.execute(sa.insert(EVENTS).values(**row)).inserted_primary_key[0]  # type: ignore[index]
                stored.append(replace(event, at=utc(event.at), seq=int(seq)))
        return stored

    def query(
        self,
        *,
        after_seq: int = 0,
        since: datetime | None = None,
        kinds: Sequence[str] | None = None,
        pair: str | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[Event]:
        """Events with ``seq > after_seq`` (and ``at >= since``, of ``kinds``, of ``pair``), in log order
        (the newest ``limit`` when ``newest_first``)."""
        stmt = sa.select(EVENTS).where(EVENTS.c.seq > after_seq)
        if since is not None:
            stmt = stmt.where(EVENTS.c.at >= utc(since).timestamp())
        if kinds:
            stmt = stmt.where(EVENTS.c.kind.in_(list(kinds)))
        if pair is not None:
            stmt = stmt.where(EVENTS.c.pair == pair)
        stmt = stmt.order_by(EVENTS.c.seq.desc() if newest_first else EVENTS.c.seq)
        if limit is not None:
            stmt = stmt.limit(limit)
        with self.engine.connect() as conn:
            return [_event(row) for row in conn.execute(stmt).mappings()]

    def recent(self, limit: int = 50, *, pair: str | None = None, kinds: Sequence[str] | None = None) -> list[Event]:
        """The newest ``limit`` events, oldest first."""
        return list(reversed(self.query(pair=pair, kinds=kinds, limit=limit, newest_first=True)))

    def latest(self, kind: str) -> dict[str | None, Event]:
        """The newest event of ``kind`` per pair (None: the system-wide one)."""
        newest = (
            sa.select(sa.func.max(EVENTS.c.seq).label("seq")).where(EVENTS.c.kind == kind).group_by(EVENTS.c.pair)
        ).subquery()
        stmt = sa.select(EVENTS).join(newest, EVENTS.c.seq == newest.c.seq)
        with self.engine.connect() as conn:
            events = [_event(row) for row in conn.execute(stmt).mappings()]
        return {event.pair: event for event in events}

    def last_seq(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(EVENTS.c.seq), 0))).scalar_one())

    def count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(EVENTS)).scalar_one())

    def close(self) -> None:
        self.engine.dispose()


def _event(row: Any) -> Event:
    return Event(
        kind=row["kind"],
        decision=row["decision"],
        reason=row["reason"],
        at=datetime.fromtimestamp(row["at"], UTC),
        pair=row["pair"] or None,
        data=json.loads(row["data"]),
        seq=int(row["seq"]),
        key=row["key"],
    )
