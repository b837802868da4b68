"""S4 intelligence: scan the market for pairs worth researching and add the best as 'pairs' partitions.

Scoring, the teams' consensus, max active pairs, the cooldown and the per-tick limit are decided by
``cyber_pipelines.vsm.prospect.select_additions``; this module gathers its inputs (candidates from the
synthetic market or the exchange, moat activity from the storage, the active pairs, the last addition
from the VSM log) and records the decision as ``prospect`` events.

Pattern scores are not attached: the pattern layer (analog forecast skill) exists only for active pairs,
and candidates are by definition not active.
"""

import json
import os
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import dagster as dg

from assets.partitions import PAIRS, pair_partitions
from cyber_pipelines.keys import pair_base, pair_to_key
from cyber_pipelines.resources import MarketDataResource, StorageResource, VsmResource
from cyber_pipelines.vsm.events import Event, EventLog
from cyber_pipelines.vsm.prospect import (
    Candidate,
    Decision,
    attach,
    read_moat_activity,
    scan_exchange,
    scan_synthetic,
    select_additions,
)
from cyber_pipelines.vsm.system import current_state

QUOTE = "USD"
SCAN_DAYS = 7
# Candidates fetched from an exchange per tick (one candles call each, ~1 s apart under Kraken's rate limit):
# keeps the tick well under Dagster's 60 s timeout.
EXCHANGE_CANDIDATES = 20
TICK_RETRIES = 1  # a tick retries an exchange call once; the next tick is the real retry
SHOWN = 3  # candidates named in the tick's text


def now_utc() -> datetime:
    """The tick's clock (tests freeze it)."""
    return datetime.now(UTC)


def last_addition(log: EventLog, now: datetime, cooldown_minutes: float) -> datetime | None:
    """When prospecting last added a pair, if within the cooldown (an older one cannot hold an addition back)."""
    since = now - timedelta(minutes=cooldown_minutes)
    added = [e.at for e in log.query(kinds=["prospect"], since=since) if e.decision == "added"]
    return max(added, default=None)


def exchange_candidates(market: MarketDataResource, active: Sequence[str], now: datetime) -> list[Candidate]:
    """Candidates from the resource's exchange (its id, URL and timeout; fewer retries than a run)."""
    from cyber_pipelines.market.exchange import ExchangeSettings, make_exchange  # ccxt: only when scanning it

    settings = ExchangeSettings(
        exchange_id=market.exchange_id,
        timeout_ms=market.timeout_ms,
        max_retries=min(market.max_retries, TICK_RETRIES),
        api_url=market.exchange_url or os.environ.get("CYBER_EXCHANGE_URL") or None,
    )
    exchange = make_exchange(settings)
    return scan_exchange(
        exchange, QUOTE, SCAN_DAYS, EXCHANGE_CANDIDATES, active_pairs=active, now=now, settings=settings
    )


def ranked_lines(decision: Decision, *, rejected_only: bool = False) -> list[str]:
    """``pair: reason`` of the scored candidates, best score first."""
    pairs = [s.pair for s in decision.scores if not rejected_only or s.pair in decision.rejected]
    return [f"{pair}: {decision.reasons[pair]}" for pair in pairs]


def prospect_events(decision: Decision, now: datetime) -> list[Event]:
    """One ``added`` event per added pair (its score summary), one ``rejected`` event for all the others."""
    scores = {s.pair: s for s in decision.scores}
    events = [
        Event("prospect", "added", decision.reasons[pair], now, pair_to_key(pair), scores[pair].as_dict())
        for pair in decision.added
    ]
    if decision.rejected:
        best = "; ".join(ranked_lines(decision, rejected_only=True)[:SHOWN])
        data = {
            "reasons": decision.rejected,
            "scores": {p: scores[p].as_dict() for p in decision.rejected if p in scores},
        }
        reason = f"{len(decision.rejected)} candidate(s) not added; {best}"
        events.append(Event("prospect", "rejected", reason, now, None, data))
    return events


@dg.sensor(
    minimum_interval_seconds=3600,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description=(
        "S4 prospecting: hourly, scans the market (the synthetic market, or the exchange's USD markets and their "
        "last 7 days of hourly candles), scores each pair on 8 points (cross-moat activity weighted 2x), and adds "
        "the best as a 'pairs' partition on a 2-of-3 team consensus, never above the policy's max active pairs nor "
        "within its cooldown. Every decision is a prospect event. Off by default: it changes the research universe."
    ),
)
def prospecting_sensor(
    context: dg.SensorEvaluationContext, vsm: VsmResource, market: MarketDataResource, storage: StorageResource
) -> dg.SensorResult | dg.SkipReason:
    now = now_utc()
    policy = vsm.policy().policy
    log = vsm.log()
    active = sorted(context.instance.get_dynamic_partitions(PAIRS))
    system = current_state(log, active).system
    if system.state == "open":
        return dg.SkipReason(f"system breaker open: no new pairs while the system hurts ({system.reason})")
    source = market.resolve_source()
    if source == "landing":
        return dg.SkipReason("market source is landing: new pairs arrive as dropped files, there is no market to scan")
    if source == "synthetic":
        candidates = scan_synthetic(now, active_pairs=active, days=SCAN_DAYS)
    else:
        try:
            candidates = exchange_candidates(market, active, now)
        except Exception as exc:  # any exchange fault ends the tick with its cause, never a crash
            cause = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            return dg.SkipReason(f"exchange scan failed: {type(exc).__name__}: {cause}")
    moats = read_moat_activity(storage.store(), source, {pair_base(c.pair) for c in candidates}, now)
    last = last_addition(log, now, policy.active.cooldown_minutes)
    decision = select_additions(attach(candidates, moats), active, last, now, policy)
    log.extend(prospect_events(decision, now))
    cursor = json.dumps({"at": now.isoformat(), "scanned": len(candidates), "added": list(decision.added)})
    if not decision.added:
        context.update_cursor(cursor)
        lines = "; ".join(ranked_lines(decision)[:SHOWN]) or "no candidates"
        return dg.SkipReason(f"no pair added of {len(candidates)} scanned ({len(active)} active): {lines}")
    keys = [pair_to_key(p) for p in decision.added]
    for line in ranked_lines(decision):
        context.log.info(line)
    return dg.SensorResult(dynamic_partitions_requests=[pair_partitions.build_add_request(keys)], cursor=cursor)
