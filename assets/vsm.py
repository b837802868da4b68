"""VSM layer: the S3 P&L ledger of the pairs.

``pnl_ledger`` follows each pair's latest out-of-sample backtest (the policy's ledger strategy) and
records every change of a pair's state (probation level, hibernation) as a ``pair_state`` event; the
backtests take their position size from it (``size_multiplier``).
"""

from datetime import UTC, datetime
from typing import Any

import dagster as dg

from assets.backtests import backtest_results
from assets.batch import latest_sources
from assets.features import DEPS_UPDATED_AND_CHECKED
from assets.partitions import PAIRS
from cyber_pipelines.resources import StorageResource, VsmResource
from cyber_pipelines.vsm.events import Event, EventLog
from cyber_pipelines.vsm.ledger import LedgerEntry, ledger_entry, read_curve, transition_reason

LEDGER_CODE_VERSION = "ledger-1"


def update_ledger(
    instance: dg.DagsterInstance, storage: StorageResource, log: EventLog, strategy_policy: Any, now: datetime
) -> tuple[list[LedgerEntry], list[Event]]:
    """Every pair's ledger entry; ``pair_state`` events for those whose state changed (stored)."""
    previous = {pair: LedgerEntry.from_json(e.data) for pair, e in log.latest("pair_state").items() if pair}
    pairs = sorted(set(instance.get_dynamic_partitions(PAIRS)) | set(previous))
    sources = latest_sources(instance, backtest_results.key, pairs)
    entries, events = [], []
    for pair in pairs:
        source = sources.get(pair)
        curve = None if source is None else read_curve(storage.store(), source, pair, strategy_policy.strategy)
        entry = ledger_entry(pair, curve, previous.get(pair), strategy_policy)
        entries.append(entry)
        reason = transition_reason(previous.get(pair), entry)
        if reason is not None:
            events.append(Event("pair_state", entry.state, reason, now, pair, entry.to_json()))
    return entries, (log.extend(events) if events else [])


def ledger_markdown(entries: list[LedgerEntry]) -> str:
    lines = [
        "| pair | state | level | size | P&L | drawdown | days below | reason |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for e in entries:
        lines.append(
            f"| {e.pair} | {e.state} | {e.level} | {e.size_multiplier:g} | {e.pnl:+.2%} | {e.drawdown:.2%} "
            f"| {e.days_below} | {e.reason} |"
        )
    return "\n".join(lines)


@dg.asset(
    deps=[dg.AssetDep(backtest_results, partition_mapping=dg.AllPartitionMapping())],
    group_name="vsm",
    kinds={"polars"},
    code_version=LEDGER_CODE_VERSION,
    automation_condition=DEPS_UPDATED_AND_CHECKED,
    description=(
        "S3 control: each pair's P&L ledger from its latest out-of-sample backtest (the policy's ledger strategy): "
        "P&L, drawdown, probation level (P&L <= -5%: size 0.5, <= -10%: 0.25, left only past a hysteresis margin) "
        "and hibernation (<= -15% for 90 days: no more processing, patterns and adapters kept, woken by "
        "`cyber-pipelines vsm wake`). Every change is a pair_state event; backtest_results sizes positions from it."
    ),
)
def pnl_ledger(context: dg.AssetExecutionContext, storage: StorageResource, vsm: VsmResource) -> dg.MaterializeResult:
    current = vsm.policy()
    if current.error:
        context.log.warning(f"policy edit refused, the last good policy stays in force: {current.error}")
    entries, events = update_ledger(context.instance, storage, vsm.log(), current.policy.ledger, datetime.now(UTC))
    for event in events:
        context.log.info(f"{event.pair}: {event.reason}")
    return dg.MaterializeResult(
        metadata={
            "pairs": len(entries),
            "active": sum(e.state == "active" for e in entries),
            "on_probation": sum(e.state == "probation" for e in entries),
            "hibernated": sum(e.state == "hibernated" for e in entries),
            "changes": len(events),
            "strategy": current.policy.ledger.strategy,
            "policy": current.policy.digest(),
            "ledger": dg.MetadataValue.md(ledger_markdown(entries)),
        }
    )
