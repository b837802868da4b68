"""`cyber-pipelines vsm`: the viable system from the shell.

- ``status``: each pair's state, size, P&L, pain and breaker; the system breaker; the policy in force;
  the last events. Read-only (it records nothing).
- ``tick``: the VSM sensors once against the instance, in the daemon's order (for scripts and tests).
- ``similar``: the past incidents (breaker trips) most similar to one.
- ``wake``: a hibernated pair becomes active again (a ``pair_state`` event; nothing else changes).

Argument handling and printing only: the decisions are in ``cyber_pipelines.vsm``, the reading of the
instance in ``sensors/vsm.py`` and the ledger in ``assets/vsm.py``.
"""

from __future__ import annotations

import argparse
import uuid
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cyber_pipelines.cli import CliError, Report, _non_negative_int, _pair, _Parser, _positive_int, _use_demo_home
from cyber_pipelines.keys import pair_to_key

if TYPE_CHECKING:
    import dagster as dg

    from cyber_pipelines.resources import VsmResource
    from cyber_pipelines.vsm.events import Event, EventLog
    from cyber_pipelines.vsm.policy import PolicyInForce

SHOWN_KINDS = ("policy", "zombie", "temporal", "breaker", "pair_state")  # a tick prints these events one by one
HOME_HELP = "a home made by `demo` (default: DAGSTER_HOME and CYBER_DATA_DIR)"


# -- shared ----------------------------------------------------------------------------------------
def _open(args: argparse.Namespace) -> tuple[dg.DagsterInstance, VsmResource, EventLog]:
    """The instance (``--home``'s, else DAGSTER_HOME's), the VSM resource and its event log."""
    _use_demo_home(args)
    from cyber_pipelines.instance import get_instance
    from cyber_pipelines.resources import VsmResource

    instance = get_instance()
    vsm = VsmResource()
    try:
        log = vsm.log()
    except RuntimeError as exc:  # a bad CYBER_VSM_DB or an unreachable server, in one line
        raise CliError(str(exc), code=1) from None
    return instance, vsm, log


def _policy(vsm: VsmResource) -> PolicyInForce:
    from cyber_pipelines.vsm.policy import PolicyError

    try:
        return vsm.policy()
    except PolicyError as exc:  # a bad file and no last good policy to fall back on
        raise CliError(str(exc)) from None


def _incident(event: Event) -> str | None:
    """The incident id of a breaker trip (what ``vsm similar`` takes), None for other events."""
    from cyber_pipelines.vsm.incidents import incident_id

    return (
        incident_id(event.pair, event.at, event.seq) if event.kind == "breaker" and event.decision == "open" else None
    )


def _event_json(event: Event) -> dict[str, Any]:
    incident = _incident(event)
    return {**event.to_json(), **({"incident": incident} if incident else {})}


def _event_line(event: Event) -> str:
    incident = _incident(event)
    return (
        f"  {event.seq:>6} {event.at:%Y-%m-%d %H:%M:%S} {event.kind:<13} {event.pair or 'system':<12} "
        f"{event.decision:<10} {event.reason}" + (f" (incident {incident})" if incident else "")
    )


# -- status ----------------------------------------------------------------------------------------
def status_data(instance: dg.DagsterInstance, log: EventLog, current: PolicyInForce, events: int) -> dict[str, Any]:
    """Pairs, system breaker and pain, policy and the last ``events`` events, as one JSON-ready mapping."""
    from cyber_pipelines.vsm.system import current_state
    from sensors.vsm import active_pairs, status_rows

    state = current_state(log, active_pairs(instance))
    trips = {pair: _incident(e) for pair, e in log.latest("breaker").items()}
    rows = [{**row, "incident": trips.get(row["pair"])} for row in status_rows(state)]
    return {
        "log": repr(log),
        "events_in_log": log.count(),
        "policy": {"digest": current.policy.digest(), "source": current.source, "refused_edit": current.error},
        "system": {
            "breaker": state.system.state,
            "breaker_reason": state.system.reason,
            "pain": state.system_pain,
            "incident": trips.get(None),
        },
        "pairs": rows,
        "blocked": state.blocked(),
        "events": [_event_json(e) for e in log.recent(events)] if events else [],
    }


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_status(report: Report, data: dict[str, Any]) -> None:
    policy, system = data["policy"], data["system"]
    report.line(f"policy {policy['digest']} from {policy['source']}")
    if policy["refused_edit"]:
        report.line(f"  refused edit (the policy above stays in force): {policy['refused_edit']}")
    incident = f" (incident {system['incident']})" if system["incident"] and system["breaker"] == "open" else ""
    report.line(
        f"system: breaker {system['breaker']}, pain {_num(system['pain'], '.2f')}: {system['breaker_reason']}{incident}"
    )
    if data["pairs"]:
        report.line(f"{len(data['pairs'])} pair(s):")
        report.line(f"  {'pair':<12} {'state':<10} {'level':>5} {'size':>5} {'P&L':>8} {'pain':>5}  breaker")
        for row in data["pairs"]:
            breaker = f"{row['breaker']}: {row['breaker_reason']}"
            if row["incident"] and row["breaker"] == "open":
                breaker += f" (incident {row['incident']})"
            stopped = data["blocked"].get(row["pair"], "").split(":")[0]  # hibernated, or a breaker open
            report.line(
                f"  {row['pair']:<12} {row['state']:<10} {row['level']:>5} {row['size']:>5g} "
                f"{_num(row['pnl'], '+8.2%'):>8} {_num(row['pain'], '5.2f'):>5}  {breaker}"
                + (f" [stopped: {stopped}]" if stopped and stopped != "breaker open" else "")
            )
    else:
        report.line("no pairs yet (no pair partitions and no ledger entries)")
    if not data["events_in_log"]:
        report.line(f"no events yet in {data['log']} (the VSM sensors, or `cyber-pipelines vsm tick`, record them)")
    elif data["events"]:
        report.line(f"last {len(data['events'])} of {data['events_in_log']} events in {data['log']}:")
        for event in data["events"]:
            incident = f" (incident {event['incident']})" if event.get("incident") else ""
            report.line(
                f"  {event['seq']:>6} {event['at'][:19].replace('T', ' ')} {event['kind']:<13} "
                f"{event['pair'] or 'system':<12} {event['decision']:<10} {event['reason']}{incident}"
            )


def cmd_vsm_status(args: argparse.Namespace) -> int:
    """Each pair's state, pain and breaker, the system's, the policy in force and the last events."""
    instance, vsm, log = _open(args)
    data = status_data(instance, log, _policy(vsm), args.events)
    report = Report(args.json, {"command": "vsm status", **data})
    print_status(report, data)
    report.finish(True)
    return 0


# -- tick ------------------------------------------------------------------------------------------
def cmd_vsm_tick(args: argparse.Namespace) -> int:
    """Evaluate the VSM sensors once and print what was recorded, then the status."""
    instance, vsm, log = _open(args)
    _policy(vsm)  # a policy that cannot be read at all fails here, in one line
    from sensors.vsm import vsm_tick

    outcome = vsm_tick(instance, vsm, log)
    recorded = outcome.recorded
    counts = dict(Counter(e.kind for e in recorded))
    trips = [e for e in recorded if _incident(e)]
    transitions = [e for e in recorded if e.kind in ("breaker", "pair_state")]
    data = status_data(instance, log, outcome.current, args.events)
    report = Report(
        args.json,
        {
            "command": "vsm tick",
            "recorded": counts,
            "steps": {step: len(events) for step, events in outcome.steps.items()},
            "trips": [_event_json(e) for e in trips],
            "transitions": [_event_json(e) for e in transitions],
            "status": data,
        },
    )
    summary = ", ".join(f"{kind} {n}" for kind, n in counts.items())
    report.line(f"tick recorded {len(recorded)} event(s)" + (f": {summary}" if summary else " (nothing changed)"))
    for event in recorded:
        if event.kind in SHOWN_KINDS:
            report.line(_event_line(event))
    report.line()
    print_status(report, data)
    report.finish(True)
    return 0


# -- similar ---------------------------------------------------------------------------------------
def _incident_arg(text: str) -> str:
    if text == "latest":
        return text
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an incident id: {text!r} (a UUID printed by status or tick, or latest)"
        ) from None


def _latest_trip(log: EventLog) -> Event:
    for event in log.query(kinds=["breaker"], newest_first=True):
        if event.decision == "open":
            return event
    raise CliError(f"no breaker trip in {log!r} yet: no incident to compare", code=1)


def cmd_vsm_similar(args: argparse.Namespace) -> int:
    """The past incidents most similar to one (by the embedding of the events before each trip)."""
    from cyber_pipelines.config import data_dir
    from cyber_pipelines.resources import VectorStoreResource
    from cyber_pipelines.vsm.incidents import IncidentMemory
    from sensors.vsm import INCIDENT_DIM

    _, _, log = _open(args)
    wanted = _incident(_latest_trip(log)) if args.incident == "latest" else args.incident
    assert wanted is not None
    vectors, root = VectorStoreResource(), data_dir()
    where = vectors.location(root, "vsm", "incidents")
    try:
        with vectors.session(root, "vsm", INCIDENT_DIM, kind="incidents") as store:
            memory = IncidentMemory(store)
            remembered = store.count()
            if remembered == 0:
                raise CliError(f"the incident memory is empty ({where}): no breaker trip remembered yet", code=1)
            incident = memory.get(wanted)
            if incident is None:
                raise CliError(f"no incident {wanted} among the {remembered} in the incident memory ({where})", code=1)
            found = memory.similar_to(wanted, args.k)
    except RuntimeError as exc:  # the embedded shard is open in another process (the daemon)
        raise CliError(str(exc), code=1) from None
    rows: list[dict[str, Any]] = [
        {"id": i.id, "pair": i.pair, "at": i.at.isoformat(), "similarity": round(score, 4), "reason": i.reason,
         "kinds": i.kinds}
        for i, score in found
    ]  # fmt: skip
    query = {"id": incident.id, "pair": incident.pair, "at": incident.at.isoformat(), "reason": incident.reason,
             "kinds": incident.kinds}  # fmt: skip
    report = Report(args.json, {"command": "vsm similar", "incident": query, "remembered": remembered, "similar": rows})
    report.line(
        f"incident {incident.id}: {incident.pair or 'system'} at {incident.at:%Y-%m-%d %H:%M:%S}: {incident.reason}"
    )
    if not rows:
        report.line(f"no earlier incident among the {remembered} remembered")
    else:
        report.line(f"{len(rows)} most similar earlier incident(s) of {remembered} remembered:")
    for row in rows:
        kinds = ", ".join(f"{k} {n}" for k, n in row["kinds"].items())
        report.line(
            f"  {row['similarity']:.3f}  {row['pair'] or 'system':<12} {row['at'][:19].replace('T', ' ')}  {row['id']}"
        )
        report.line(f"         {row['reason']}" + (f" [{kinds}]" if kinds else ""))
    report.finish(True)
    return 0


# -- wake ------------------------------------------------------------------------------------------
def cmd_vsm_wake(args: argparse.Namespace) -> int:
    """Wake a hibernated pair: one ``pair_state`` event with the ledger's woken entry."""
    from cyber_pipelines.vsm.events import utc
    from cyber_pipelines.vsm.ledger import LedgerEntry, wake

    instance, vsm, log = _open(args)
    key = pair_to_key(args.pair)
    event = log.latest("pair_state").get(key)
    if event is None:
        known = key in instance.get_dynamic_partitions("pairs")
        raise CliError(f"{key} is not hibernated: " + ("it has no ledger entry yet" if known else "unknown pair"), 1)
    entry = LedgerEntry.from_json(event.data)
    if entry.state != "hibernated":
        raise CliError(f"{key} is not hibernated ({entry.state}: {entry.reason})", code=1)
    woken = wake(entry, _policy(vsm).policy.ledger, args.reason, utc())
    stored = log.append("pair_state", woken.state, woken.reason, pair=key, data=woken.to_json())
    report = Report(args.json, {"command": "vsm wake", "pair": key, "event": stored.to_json()})
    report.line(f"{key}: {woken.reason} (event {stored.seq})")
    report.finish(True)
    return 0


# -- the parser ------------------------------------------------------------------------------------
def add_vsm_parser(sub: Any, common: argparse.ArgumentParser, reports: argparse.ArgumentParser) -> None:
    """``vsm status|tick|similar|wake`` under the CLI's subcommands."""
    vsm = sub.add_parser("vsm", parents=[common], help="the viable system: status, one tick, incidents, waking pairs")
    vsm_sub = vsm.add_subparsers(dest="action", required=True, parser_class=_Parser)

    def command(name: str, help: str, func: Any) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = vsm_sub.add_parser(name, parents=[common, reports], help=help)
        parser.add_argument("--home", type=Path, default=None, help=HOME_HELP)
        parser.set_defaults(func=func)
        return parser

    status = command(
        "status", "per pair: state, size, P&L, pain, breaker; the system; the policy; the last events", cmd_vsm_status
    )
    status.add_argument("--events", type=_non_negative_int, default=10, help="last events shown (default 10)")
    ticked = command("tick", "evaluate the VSM sensors once against the instance, as the daemon would", cmd_vsm_tick)
    ticked.add_argument("--events", type=_non_negative_int, default=10, help="last events shown (default 10)")
    similar = command("similar", "the past incidents (breaker trips) most similar to one", cmd_vsm_similar)
    similar.add_argument("incident", type=_incident_arg, help="an incident id (printed for trips) or latest")
    similar.add_argument("--k", type=_positive_int, default=5, help="incidents listed (default 5)")
    woken = command("wake", "wake a hibernated pair (active again at the level its P&L gives)", cmd_vsm_wake)
    woken.add_argument("pair", type=_pair, help="e.g. BTC/USD or BTC-USD")
    woken.add_argument("--reason", default="cyber-pipelines vsm wake", help="recorded with the wake")
