"""`cyber-pipelines`: ingest and export through Dagster from the shell, CSV features and backtests, the offline demo.

Results go to stdout (one JSON document with --json), progress and errors to stderr. A failure is one
line naming its root cause (the full trace with --verbose, and on the run's page in the UI); the exit
status is 0 only on success, 1 when work failed, 2 for a bad request (arguments, config).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

from cyber_pipelines.keys import normalize_pair, pair_to_key
from cyber_pipelines.storage import GITHUB_SOURCES, MARKET_SOURCES, StoragePath, as_path, is_remote

DEFAULT_DEMO_HOME = Path(".demo")
DEFAULT_PORT = 3000


class CliError(Exception):
    """A one-line error for the user; ``code`` 2 for a bad request, 1 for failed work."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line (``--help`` shows the usage)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


@dataclass
class Report:
    """What a command tells: stdout lines (or one JSON document) and warnings on stderr."""

    json_mode: bool
    data: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def line(self, text: str = "") -> None:
        if not self.json_mode:
            print(text, flush=True)

    def warn(self, text: str) -> None:
        self.warnings.append(text)
        print(f"warning: {text}", file=sys.stderr, flush=True)

    def finish(self, ok: bool) -> None:
        if self.json_mode:
            print(json.dumps({"ok": ok, **self.data, "warnings": self.warnings}, indent=2, default=str))


# -- argument types ------------------------------------------------------------------------------
def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from exc


def _pairs(text: str) -> list[str]:
    try:
        pairs = [normalize_pair(p) for p in text.split(",") if p.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    if not pairs:
        raise argparse.ArgumentTypeError("no pair given")
    return list(dict.fromkeys(pairs))


def _pair(text: str) -> str:
    try:
        return normalize_pair(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _repos(text: str) -> list[str]:
    from cyber_pipelines.github.activity import repo_to_key

    repos = [r.strip() for r in text.split(",") if r.strip()]
    try:
        for repo in repos:
            repo_to_key(repo)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    if not repos:
        raise argparse.ArgumentTypeError("no repository given")
    return list(dict.fromkeys(repos))


def _number(kind: Callable[[str], float], minimum: float, strict: bool, what: str) -> Callable[[str], Any]:
    """An argparse type: ``kind(text)``, finite and ``> minimum`` (``strict``) or ``>= minimum``."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < minimum or (strict and value == minimum):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


_positive_int = _number(int, 1, False, "a whole number >= 1")
_non_negative_int = _number(int, 0, False, "a whole number >= 0")
_non_negative_float = _number(float, 0.0, False, "a finite number >= 0")
_positive_float = _number(float, 0.0, True, "a number > 0")


def _sign(text: str) -> int:
    if text.strip() not in ("1", "+1", "-1"):
        raise argparse.ArgumentTypeError(f"expected +1 or -1, got {text!r}")
    return int(text)


def _param(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    try:
        if not sep or not name.strip():
            raise ValueError
        return name.strip(), float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--param takes NAME=NUMBER, got {text!r}") from None


def _windows(text: str) -> list[int]:
    """SMA windows: START:STOP[:STEP] (STOP included, e.g. 5:50:5), a list 5,10,20, or one number."""
    usage = f"expected START:STOP[:STEP] (STOP included, e.g. 5:50:5), a list N,N,... or N, windows >= 1; got {text!r}"
    try:
        if ":" in text:
            parts = [int(p) for p in text.split(":")]
            if len(parts) not in (2, 3):
                raise ValueError
            start, stop, step = (*parts, 1) if len(parts) == 2 else parts
            if start < 1 or stop < start or step < 1:
                raise ValueError
            values = list(range(start, stop + 1, step))
        else:
            values = [int(p) for p in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(usage) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(usage)
    return sorted(set(values))


# -- shared checks -------------------------------------------------------------------------------
def _settings() -> Any:
    """The pipeline config, or a one-line error naming the file (before anything runs)."""
    from cyber_pipelines.config import load_settings

    try:
        return load_settings()
    except (ValueError, OSError) as exc:
        raise CliError(str(exc)) from None


def _today() -> date:
    return datetime.now(UTC).date()


def _days(start: date, end: date) -> list[date]:
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


def _check_range(start: date, end: date, first_day: date) -> None:
    """Order, the config's first day, and no date in the future (UTC)."""
    if end < start:
        raise CliError(f"--end {end} is before --start {start}")
    today = _today()
    for name, day in (("--start", start), ("--end", end)):
        if day > today:
            raise CliError(f"{name} {day} is in the future (today is {today} UTC)")
    if start < first_day:
        raise CliError(f"{start} is before the first partition day {first_day} (start_date of the pipeline config)")


def _clamp(start: date, end: date, last: date, why: str, report: Report) -> date:
    """End the range at ``last`` (the last complete day the source has), with a warning."""
    if start > last:
        raise CliError(f"nothing complete to ingest in {start}..{end}: {why} is {last}", code=1)
    if end > last:
        report.warn(f"--end {end} is past {why} {last}; clamped to {start}..{last}")
        return last
    return end


def _exchange_today(pairs: Sequence[str]) -> tuple[date, str]:
    """Check the pairs against the exchange's markets; return the exchange's date (UTC) and its id."""
    import ccxt

    from cyber_pipelines.market.exchange import ExchangeDataError, ExchangeSettings, list_markets, make_exchange

    try:
        exchange = make_exchange(ExchangeSettings())
        markets = set(list_markets(exchange))
        unknown = [p for p in pairs if p not in markets]
        if unknown:
            raise CliError(
                f"{exchange.id} does not list {', '.join(unknown)} among its {len(markets)} spot markets; "
                "nothing was added or run",
                code=1,
            )
        now_ms = exchange.fetch_time() if exchange.has.get("fetchTime") else exchange.milliseconds()
    except (ExchangeDataError, ccxt.BaseError, ValueError) as exc:
        raise CliError(f"exchange check failed: {str(exc).splitlines()[0]}", code=1) from None
    return datetime.fromtimestamp(int(now_ms) / 1000, UTC).date(), str(exchange.id)


# -- ingest --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Wanted:
    """What one layer should ingest: the keys (pairs, repos; none for moat) and months, with the days they hold."""

    layer: str
    keys: list[str]
    months: list[date]
    through: date  # the last complete day the source has
    since: date | None = None  # the first day that exists (landing: staged), if later than the months' start


def cmd_ingest(args: argparse.Namespace) -> int:
    settings = _settings()  # first: the code location reads the config when it is imported
    from assets.partitions import last_complete_day, months_of
    from cyber_pipelines.github.activity import repo_to_key

    report = Report(args.json, {"command": "ingest", "source": args.source})
    if args.repos and args.pairs:
        raise CliError("give --pairs or --repos, not both")
    if args.repos:
        if args.source not in GITHUB_SOURCES:
            raise CliError(f"with --repos, --source must be one of {', '.join(GITHUB_SOURCES)}")
    elif args.source not in MARKET_SOURCES:
        raise CliError(f"--source must be one of {', '.join(MARKET_SOURCES)} (or synthetic | github with --repos)")
    elif not args.pairs and args.source != "landing":
        raise CliError("--pairs is required for market sources (or --repos for GitHub activity)")
    if args.source != "landing" and (args.start is None or args.end is None):
        raise CliError("--start and --end are required (optional only with --source landing)")
    if (args.start is None) != (args.end is None):
        raise CliError("give both --start and --end, or neither")
    if args.start is not None:
        _check_range(args.start, args.end, settings.start_date)

    if args.source == "landing":
        return _ingest_landing(args, settings, report)
    wanted: list[Wanted] = []
    if args.repos:
        if args.source == "synthetic":
            unknown = [r for r in args.repos if r not in settings.repos]
            if unknown:
                raise CliError(
                    f"{', '.join(unknown)}: not in the pipeline config's repos (synthetic activity needs the assets "
                    "a repo informs)"
                )
        last_day = last_complete_day()
        end = _clamp(args.start, args.end, last_day, "the last complete day (UTC)", report)
        wanted = [Wanted("github", [repo_to_key(r) for r in args.repos], months_of(_days(args.start, end)), last_day)]
    else:
        if args.source == "ccxt":
            exchange_day, exchange_id = _exchange_today(args.pairs)
            last, why = exchange_day - timedelta(days=1), f"the last complete day on {exchange_id}'s clock"
        else:
            last, why = last_complete_day(), "the last complete day (UTC)"
        end = _clamp(args.start, args.end, last, why, report)
        wanted = [Wanted("market", [pair_to_key(p) for p in args.pairs], months_of(_days(args.start, end)), last)]
    return _report_runs(_run_ingest(wanted, args, report), report, args.verbose)


def _ingest_landing(args: argparse.Namespace, settings: Any, report: Report) -> int:
    """The landing folder first (as the intake run does), then the months of what it staged (or --pairs)."""
    from cyber_pipelines.landing.intake import discard_pending

    if args.start is not None:
        end = _clamp(args.start, args.end, _last_complete_day(), "the last complete day (UTC)", report)
        args.end = end
    wanted, intake = _landing_wanted(args, settings, report)
    results = _run_ingest(wanted, args, report)
    succeeded = {
        key if plan.layer == "market" else "moat"
        for plan, outcomes in results
        for key, outcome in zip(plan.keys or ("moat",), outcomes, strict=False)
        if outcome.success
    }
    # The CLI ran these ingests itself: the landing sensor need not request them again.
    done = [s for s in intake.accepted if (pair_to_key(s.pair) if s.pair else "moat") in succeeded]
    discard_pending(as_path(report.data["intake"]["landing"]), done)
    rejected = [f"{name}: {why}" for name, why in intake.quarantined + intake.failed]
    return _report_runs(results, report, args.verbose, rejected)


def _last_complete_day() -> date:
    from assets.partitions import last_complete_day

    return last_complete_day()


def _landing_wanted(args: argparse.Namespace, settings: Any, report: Report) -> tuple[list[Wanted], Any]:
    """Take in the landing folder as the intake run does (quarantine included); what it and the request cover."""
    from assets.partitions import last_complete_day, months_of
    from cyber_pipelines.config import landing_dir

    landing = landing_dir()
    intake = _intake(landing, args.min_age)
    report.data["intake"] = {
        "landing": str(landing),
        "accepted": [
            {"file": s.file, "kind": s.kind, "pair": s.pair, "days": len(s.days), "new": s.new} for s in intake.accepted
        ],
        "quarantined": [{"file": name, "reason": reason} for name, reason in intake.quarantined],
        "left": [{"file": name, "why": why} for name, why in intake.left],
        "failed": [{"file": name, "error": error} for name, error in intake.failed],
    }
    for s in intake.accepted:
        again = "" if s.new else " (the same content was staged before)"
        print(f"accepted {s.file}: {s.pair or s.kind}, {len(s.days)} day(s){again}", file=sys.stderr)
    for name, why in intake.left:
        print(f"left {name} for later: {why}", file=sys.stderr)
    for name, reason in intake.quarantined:
        report.warn(f"quarantined {name}: {reason} (moved to {landing / 'quarantine'})")
    last = last_complete_day()

    def usable(days: Sequence[date], what: str) -> list[date]:
        early = [d for d in days if d < settings.start_date]
        if early:
            report.warn(
                f"{what}: {len(early)} day(s) before the first partition day {settings.start_date} not ingested"
            )
        return [d for d in days if settings.start_date <= d <= last]

    wanted_days: dict[str, list[date]] = {}
    if args.pairs:
        for pair in args.pairs:
            days = (
                _days(args.start, args.end)
                if args.start
                else usable([d for s in intake.accepted if s.pair == pair for d in s.days], pair)
            )
            if not days:
                raise CliError(f"no --start/--end given and no new landing file for {pair} in {landing}")
            wanted_days[pair] = days
    else:
        for s in intake.accepted:
            if s.kind == "market" and s.pair:
                wanted_days.setdefault(s.pair, []).extend(usable(s.days, s.file))
    wanted: list[Wanted] = []
    for pair, days in wanted_days.items():
        if not days:
            continue
        staged = _staged_days(landing, pair, days)
        if not staged:
            raise CliError(
                f"no staged candles for {pair} in {min(days)}..{max(days)} (looked in {landing / 'staged'})", code=1
            )
        if args.start and (min(staged) > args.start or max(staged) < args.end):
            report.warn(
                f"staged candles for {pair} cover only {min(staged)}..{max(staged)} of {args.start}..{args.end}; "
                "ingesting the months they fall in"
            )
        wanted.append(Wanted("market", [pair_to_key(pair)], months_of(staged), staged[-1], staged[0]))
    moat_days = usable(sorted({d for s in intake.accepted if s.kind == "moat" for d in s.days}), "moat files")
    if moat_days:
        wanted.append(Wanted("moat", [], months_of(moat_days), moat_days[-1], moat_days[0]))
    if not wanted:
        problems = intake.quarantined + intake.failed
        raise CliError(
            f"nothing to ingest: no new landing file in {landing}"
            + (f" ({len(problems)} file(s) rejected, see above)" if problems else "")
            + (f" ({len(intake.left)} still being written)" if intake.left else "")
            + "; drop files there, or name --pairs with --start/--end to re-ingest staged candles",
            code=1,
        )
    return wanted, intake


def _intake(landing: StoragePath, min_age_s: float | None) -> Any:
    """Parse, quarantine and stage the landing folder's stable files, as the intake run does."""
    from cyber_pipelines.landing.intake import DEFAULT_MIN_AGE_S, process_landing

    if not is_remote(landing) and not landing.is_dir():  # on object storage an empty prefix is a folder
        raise CliError(f"no landing folder at {landing} (CYBER_LANDING_DIR)", code=1)
    return process_landing(landing, min_age_s=DEFAULT_MIN_AGE_S if min_age_s is None else min_age_s)


def _staged_days(landing: StoragePath, pair: str, days: Sequence[date]) -> list[date]:
    from cyber_pipelines.landing.staging import load_staged_days

    try:
        return sorted(load_staged_days(landing / "staged", pair, days))
    except FileNotFoundError as exc:
        raise CliError(str(exc), code=1) from None


def _run_ingest(wanted: Sequence[Wanted], args: argparse.Namespace, report: Report) -> list[tuple[Any, list[Any]]]:
    """Add the partitions, plan the runs, launch them (as many at once as the instance allows); each
    plan with its outcomes."""
    from cyber_pipelines import orchestrate as orc

    progress = orc.Progress()
    results: list[tuple[orc.IngestPlan, list[orc.RunOutcome]]] = []
    with _launched(progress, args.verbose) as launcher:
        instance = launcher.instance
        plans = []
        for want in wanted:
            if want.layer == "market":
                orc.ensure_partitions(instance, "pairs", want.keys)
                order = instance.get_dynamic_partitions("pairs")
                plans.append(
                    orc.plan_market(
                        want.keys, want.months, args.source, order, want.through, want.since, launcher.parallel
                    )
                )
            elif want.layer == "github":
                orc.ensure_partitions(instance, "repos", want.keys)
                order = instance.get_dynamic_partitions("repos")
                plans.append(
                    orc.plan_github(want.keys, want.months, args.source, order, want.through, launcher.parallel)
                )
            else:
                plans.append(orc.plan_moat(want.months, args.source, want.through, want.since))
        report.data["plans"] = [p.as_dict() for p in plans]
        for plan in plans:
            report.line(f"{plan.layer} ({plan.source}): {plan.describe()}")
            progress(f"{plan.layer}: {plan.describe()}")
            results.append((plan, launcher.run_all(plan.specs, plan.layer)))
    report.data["elapsed_s"] = round(progress.elapsed(), 2)
    return results


@contextmanager
def _launched(progress: Any, verbose: bool) -> Iterator[Any]:
    """The launcher (the code server) for the command's runs; a code location that fails to load is one line."""
    from cyber_pipelines import orchestrate as orc

    try:
        launcher = orc.Launcher(progress=progress, verbose=verbose).__enter__()
    except orc.LaunchError as exc:
        if verbose and exc.trace:
            print(exc.trace, file=sys.stderr)
        raise CliError(str(exc), code=1) from None
    try:
        yield launcher
    finally:
        launcher.__exit__(None, None, None)


def _report_runs(
    results: Sequence[tuple[Any, list[Any]]], report: Report, verbose: bool, rejected: Sequence[str] = ()
) -> int:
    """Each run's line and the counts on stdout; each failure's root cause in one line on stderr."""
    outcomes = [o for _, plan_outcomes in results for o in plan_outcomes]
    failed = [o for o in outcomes if not o.success]
    for o in outcomes:
        state = "ok  " if o.success else "FAIL"
        report.line(f"{state} {o.label:<30} run {o.run_id[:8]}  {o.elapsed_s:5.1f} s  {o.message if o.success else ''}")
    partitions = sum(o.partitions for o in outcomes)
    rows = sum(o.rows for o in outcomes)
    overhead = sum(o.overhead_s for o in outcomes) / len(outcomes) if outcomes else 0.0
    report.data |= {
        "runs": [o.as_dict() for o in outcomes],
        "partitions_materialized": partitions,
        "rows": rows,
        "launch_overhead_s_per_run": round(overhead, 2),
    }
    not_taken = f", {len(rejected)} landing file(s) not ingested" if rejected else ""
    report.line(
        f"{partitions} partition(s), {rows} rows materialized in {len(outcomes)} run(s) "
        f"({len(failed)} failed{not_taken}), {report.data.get('elapsed_s', 0.0):.1f} s; "
        f"launch overhead {overhead:.1f} s per run"
    )
    for o in failed:
        print(f"error: {o.label} (run {o.run_id[:8]}): {o.message}", file=sys.stderr)
        if verbose and o.trace:
            print(o.trace, file=sys.stderr)
    if failed and not verbose:
        print("(the full trace: --verbose, or the run's page in the UI)", file=sys.stderr)
    for line in rejected:
        print(f"error: landing file not ingested: {line}", file=sys.stderr)
    ok = not failed and not rejected
    report.finish(ok)
    return 0 if ok else 1


# -- export --------------------------------------------------------------------------------------
def _check_out(out: Path) -> None:
    from cyber_pipelines.config import data_dir

    if out.suffix not in (".csv", ".parquet"):
        raise CliError(f"--out must end in .csv or .parquet, got {out.name!r}")
    root = data_dir()
    if isinstance(root, Path) and out.resolve().is_relative_to(root):
        raise CliError(f"--out {out} is inside the storage root {root}; write the export elsewhere")


def _export(args: argparse.Namespace, table: str, key: str, label: str, sources: tuple[str, ...]) -> int:
    """Write the stored rows of ``label`` in ``--start..--end`` from the source that stored them."""
    import polars as pl

    from cyber_pipelines.config import data_dir
    from cyber_pipelines.storage import TableStore, write_atomic

    report = Report(args.json, {"command": "export", "table": table, "key": label})
    _check_out(args.out)
    if args.end < args.start:
        raise CliError(f"--end {args.end} is before --start {args.start}")
    root = data_dir()
    folders = {s: root / s / table / key for s in sources}
    holders = [s for s, folder in folders.items() if folder.is_dir() and any(folder.glob("*.parquet"))]
    if args.source is None:
        if not holders:
            looked = ", ".join(str(f) for f in folders.values())
            raise CliError(f"nothing stored for {label} under {root}: looked in {looked}", code=1)
        if len(holders) > 1:
            where = ", ".join(f"{s} ({folders[s]})" for s in holders)
            raise CliError(f"{label} is stored by {len(holders)} sources: {where}; choose one with --source")
        source = holders[0]
        print(f"source: {source} (the only source holding {label} under {root})", file=sys.stderr)
    else:
        source = args.source
        if source not in holders:
            others = f"; stored by: {', '.join(holders)}" if holders else ""
            raise CliError(
                f"nothing stored for {label} from source {source!r}: looked in {folders[source]}{others}", code=1
            )
    days = _days(args.start, args.end)
    store = TableStore(root)
    stored = store.read_days(source, table, key, days=days)
    if stored.is_empty():
        months = sorted(p.stem for p in folders[source].glob("*.parquet") if not p.name.startswith("."))
        span = f"{months[0]}..{months[-1]}" if months else "none"
        raise CliError(
            f"nothing stored for {label} from source {source!r} in {args.start}..{args.end}: "
            f"looked in {folders[source]} (months stored: {span})",
            code=1,
        )
    have = set(stored["timestamp"].dt.date().to_list())
    missing = [d.isoformat() for d in days if d not in have]
    if args.out.suffix == ".csv":
        write_atomic(args.out, lambda tmp: stored.write_csv(tmp))
    else:
        write_atomic(args.out, lambda tmp: stored.write_parquet(tmp))
    if missing:
        shown = ", ".join(missing[:10]) + (", ..." if len(missing) > 10 else "")
        report.warn(f"{len(missing)} day(s) not stored in {folders[source]}: {shown}")
    report.data |= {
        "source": source,
        "rows": stored.height,
        "first_timestamp": str(stored["timestamp"].min()),
        "last_timestamp": str(stored["timestamp"].max()),
        "days_missing": missing,
        "read_from": str(folders[source]),
        "out": str(args.out),
    }
    report.line(f"wrote {stored.height} rows of {label} ({source}) to {args.out}")
    report.finish(True)
    assert isinstance(stored, pl.DataFrame)
    return 0


def cmd_export_ohlcv(args: argparse.Namespace) -> int:
    return _export(args, "ohlcv", pair_to_key(args.pair), args.pair, MARKET_SOURCES)


def cmd_export_github(args: argparse.Namespace) -> int:
    from cyber_pipelines.github.activity import repo_to_key

    return _export(args, "github_activity", repo_to_key(args.repo), args.repo, GITHUB_SOURCES)


# -- features and backtest -----------------------------------------------------------------------
def _input_error(exc: Exception) -> CliError:
    """A missing or unreadable CSV, an unknown strategy, bad parameters, an output over the input: all are
    bad requests (2), refused before any work."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return CliError(message, code=2)


def cmd_features(args: argparse.Namespace) -> int:
    from cyber_pipelines.features.ohlcv_csv import compute_features_file

    report = Report(args.json, {"command": "features"})
    began = time.perf_counter()
    try:
        table = compute_features_file(args.input, args.output, date_format=args.date_format)
    except (ValueError, OSError) as exc:
        raise _input_error(exc) from None
    report.data |= {
        "input": str(args.input),
        "output": str(args.output),
        "rows": table.height,
        "columns": len(table.columns),
        "first_timestamp": str(table["timestamp"].min()),
        "last_timestamp": str(table["timestamp"].max()),
        "elapsed_s": round(time.perf_counter() - began, 2),
    }
    report.line(f"wrote {table.height} rows x {len(table.columns)} columns of features to {args.output}")
    report.finish(True)
    return 0


def cmd_backtest(args: argparse.Namespace) -> int:
    from cyber_pipelines.backtest import backtest_csv
    from cyber_pipelines.orchestrate import Progress

    progress = Progress()
    try:
        result = backtest_csv(
            args.data,
            args.strategy,
            dict(args.param),
            fee=args.fee,
            slippage=args.slippage,
            fill=args.fill,
            stop_loss=args.stop_loss,
            size_multiplier=args.size,
            date_format=args.date_format,
            calendar=args.calendar,
            bars_per_year=args.bars_per_year,
            train_bars=args.train_bars,
            test_bars=args.test_bars,
        )
    except (ValueError, OSError) as exc:
        raise _input_error(exc) from None
    if result["fill_note"]:
        print(f"warning: {result['fill_note']}", file=sys.stderr)
    progress(f"backtested {args.strategy} on {args.data} in {progress.elapsed():.1f} s")
    if args.json:
        print(json.dumps({"ok": True, "command": "backtest", **result}, indent=2, default=str))
    else:
        width = max(len(k) for k in result)
        for key, value in result.items():
            shown = f"{value:.6g}" if isinstance(value, float) else value
            print(f"{key:<{width}}  {shown}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    """Sweep an SMA grid on a CSV, name the best pair by Sharpe and test it with Hansen's SPA."""
    from cyber_pipelines.backtest.engine import BacktestConfig, annualization
    from cyber_pipelines.backtest.snooping import best_of_grid
    from cyber_pipelines.features.ohlcv_csv import read_ohlcv_csv
    from cyber_pipelines.jsonable import jsonable

    began = time.perf_counter()

    def progress(text: str) -> None:  # the format of orchestrate.Progress, without importing Dagster
        print(f"[{time.perf_counter() - began:6.1f}s] {text}", file=sys.stderr, flush=True)

    try:
        config = BacktestConfig(
            fee=args.fee,
            slippage=args.slippage,
            fill=args.fill,
            calendar=args.calendar,
            bars_per_year=args.bars_per_year,
        )
        candles = read_ohlcv_csv(args.data, date_format=args.date_format)
    except (ValueError, OSError) as exc:
        raise _input_error(exc) from None
    pairs = [(f, s) for f in args.fast for s in args.slow if f < s]
    if not pairs:
        raise CliError(
            f"--fast {args.fast[0]}..{args.fast[-1]}, --slow {args.slow[0]}..{args.slow[-1]}: no fast < slow"
        )
    n_pairs, longest = len(pairs), max(s for _, s in pairs)
    if longest >= candles.height:
        raise CliError(f"{args.data}: {candles.height} candles, too few for an SMA of {longest} bars")
    if config.fill_note:
        print(f"warning: {config.fill_note}", file=sys.stderr)
    progress(
        f"read {candles.height} candles from {args.data}; sweeping {n_pairs} pairs and testing them against "
        f"{args.benchmark} (SPA, {args.reps} resamples)"
    )
    try:
        result = best_of_grid(
            candles,
            args.fast,
            args.slow,
            config,
            rule=args.rule,
            benchmark=args.benchmark,
            reps=args.reps,
            seed=args.seed,
        )
    except ValueError as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CliError(f"{args.data}: {message}") from None
    progress(f"swept and tested {result.n_members} pairs in {time.perf_counter() - began:.1f} s")
    ann = annualization(candles["timestamp"], config)
    if args.json:
        report = {
            "ok": True,
            "command": "sweep",
            "data": str(args.data),
            "candles": candles.height,
            "start": str(candles["timestamp"][0]),
            "end": str(candles["timestamp"][-1]),
            "calendar": ann.calendar,
            "fast": args.fast,
            "slow": args.slow,
            "fee": args.fee,
            "slippage": args.slippage,
            "fill": args.fill,
            "optimistic_fill": config.optimistic_fill,
            "fill_note": config.fill_note,
            **result.to_dict(),
        }
        print(json.dumps(jsonable(report), indent=2))
        return 0
    m = result.best_metrics

    def shown(value: float) -> str:
        return f"{value:.4g}" if math.isfinite(value) else "n/a"

    reference = "" if math.isnan(result.benchmark_sharpe) else f" ({args.benchmark}: {result.benchmark_sharpe:.3g})"
    print(f"best of {result.n_members} pairs ({args.rule}): sma({result.best_fast},{result.best_slow})")
    print(f"  sharpe {shown(result.best_sharpe)}{reference}, total return {shown(m['total_return'])}")
    print(
        f"  max drawdown {shown(m['max_drawdown'])}, trades {int(m['n_trades'])}, exposure {shown(m['exposure'])}, "
        f"cagr {shown(m['cagr'])}, final equity {shown(m['final_equity'])}"
    )
    print(
        f"SPA vs {args.benchmark}: lower p {result.spa_lower:.3f}, consistent p {result.spa_consistent:.3f}, "
        f"upper p {result.spa_upper:.3f}; the best alone (naive, no account of the search): p {result.naive_p:.4f}"
    )
    print(f"  stationary bootstrap, mean block {result.block_size} bars, {result.reps} resamples, seed {result.seed}")
    print(f"verdict: {result.verdict}")
    return 0


# -- demo ----------------------------------------------------------------------------------------
# Three years: walk-forward trains on 90 days before each 30 out of sample, and the share of seeds in
# which the planted effect (config default) is significant out of sample on the demo's portfolio was
# 75% of 20 with 730 days and 90% of 10 with 1095 (benchmarks/research_power.py; effect 0: none of 20).
DEMO_DAYS = 1095
DEMO_SYNTHETIC = {"seed": "seed", "effect": "effect_size", "lag": "lag_hours", "sign": "effect_sign"}


def _demo_config(
    settings_path: Path, first_day: date, pairs: Sequence[str], synthetic: Mapping[str, object] | None = None
) -> str:
    """The demo's pipeline config: the one in use, starting at the demo's first day, with only its pairs
    and the synthetic settings given on the command line."""
    import yaml

    raw = yaml.safe_load(settings_path.read_text()) or {}
    raw["start_date"] = first_day.isoformat()
    raw["pairs"] = list(pairs)
    raw["synthetic"] = {**(raw.get("synthetic") or {}), **(synthetic or {})}
    header = "# Written by `cyber-pipelines demo` from " + str(settings_path) + "\n"
    return header + yaml.safe_dump(raw, sort_keys=False)


def cmd_demo(args: argparse.Namespace) -> int:
    settings = _settings()  # the config in use must be valid before the demo copies it
    from assets.partitions import last_complete_day, months_of
    from cyber_pipelines import config
    from cyber_pipelines import orchestrate as orc
    from cyber_pipelines.github.activity import repo_to_key
    from cyber_pipelines.instance import fresh_home, use_home

    pairs = list(args.pairs or settings.pairs)
    n_days = args.days or DEMO_DAYS
    windows = {"train_days": args.train_days, "test_days": args.test_days}
    walk = f"walk-forward {args.train_days} days of training, {args.test_days} out of sample"
    if n_days < args.train_days + args.test_days:
        raise CliError(
            f"--days {n_days} is too short for walk-forward: it needs at least --train-days {args.train_days} + "
            f"--test-days {args.test_days} = {args.train_days + args.test_days} days"
        )
    through = last_complete_day()
    window = orc.demo_window(n_days, through)
    source_config = Path(os.environ.get("CYBER_CONFIG") or Path(config.__file__).with_name("pipeline.yaml")).resolve()
    try:
        home = fresh_home(args.home)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    planted = {key: getattr(args, flag) for flag, key in DEMO_SYNTHETIC.items() if getattr(args, flag) is not None}
    (home / "pipeline.yaml").write_text(_demo_config(source_config, window[0], pairs, planted))
    use_home(home)
    for kind in ("MARKET", "GITHUB", "MOAT"):
        os.environ[f"CYBER_{kind}_SOURCE"] = "synthetic"
    settings = _settings()
    pair_keys = [pair_to_key(p) for p in pairs]
    repo_keys = [repo_to_key(r) for r in settings.repos]
    months = months_of(window)

    report = Report(
        args.json,
        {
            "command": "demo",
            "home": str(home),
            "pairs": pairs,
            "days": n_days,
            "first_day": window[0].isoformat(),
            "last_day": window[-1].isoformat(),
            "synthetic": dataclasses.asdict(settings.synthetic),
            "walk_forward": windows,
            "layers": [],
        },
    )
    report.line(
        f"demo: {len(pairs)} pair(s) x {n_days} days ({window[0]}..{window[-1]}), synthetic source, "
        f"{len(repo_keys)} repos, home {home}"
    )
    progress = orc.Progress()
    with _launched(progress, args.verbose) as launcher:
        instance = launcher.instance
        orc.ensure_partitions(instance, "pairs", pair_keys)
        orc.ensure_partitions(instance, "repos", repo_keys)
        pair_order, repo_order = instance.get_dynamic_partitions("pairs"), instance.get_dynamic_partitions("repos")
        plans = {
            "market": orc.plan_market(pair_keys, months, "synthetic", pair_order, through, None, launcher.parallel),
            "github": orc.plan_github(repo_keys, months, "synthetic", repo_order, through, launcher.parallel),
            "moat": orc.plan_moat(months, "synthetic", through),
        }
        layers: list[tuple[str, str, Sequence[orc.RunSpec]]] = [
            *((name, plan.describe(), plan.specs) for name, plan in plans.items()),
            ("features", f"{len(pair_keys)} pair(s), one run each", orc.feature_specs(pair_keys, "synthetic")),
            (
                "encoder",
                f"the window encoder, trained on the windows of the first {args.train_days} days",
                [orc.encoder_spec(args.train_days)],
            ),
            ("memory", f"{len(pair_keys)} pair(s) into the vector store", orc.memory_specs(pair_keys)),
            ("analogs", f"{len(pair_keys)} pair(s), analog forecasts", orc.analog_specs(pair_keys, args.train_days)),
            *_model_layers(pair_keys, args.train_days, report),
            ("backtests", f"{len(pair_keys)} pair(s), one run each, {walk}", orc.backtest_specs(pair_keys, windows)),
            (
                "comparison",
                "the strategies and the lead-lag tests across pairs",
                [orc.comparison_spec(), orc.leadlag_summary_spec()],
            ),
            ("ledger", "the VSM's P&L ledger of the pairs (probation, hibernation)", [orc.ledger_spec()]),
        ]
        for index, (name, what, specs) in enumerate(layers):
            progress(f"{name}: {what}")
            began = time.perf_counter()
            outcomes = launcher.run_all(specs, name)
            elapsed = time.perf_counter() - began
            failed = [o for o in outcomes if not o.success]
            report.data["layers"].append(
                {
                    "layer": name,
                    "ok": not failed,
                    "elapsed_s": round(elapsed, 2),
                    "runs": [o.as_dict() for o in outcomes],
                }
            )
            state = f"{len(outcomes)} run(s) ok" if not failed else f"FAILED ({len(failed)} of {len(outcomes)} runs)"
            report.line(f"  {name:<10} {state} in {elapsed:.1f} s  ({what})")
            if failed:
                skipped = [n for n, _, _ in layers[index + 1 :]]
                for o in failed:
                    print(f"error: demo {name} layer: {o.label} (run {o.run_id[:8]}): {o.message}", file=sys.stderr)
                    if args.verbose and o.trace:
                        print(o.trace, file=sys.stderr)
                print(
                    f"demo stopped at the {name} layer"
                    + (f"; not run: {', '.join(skipped)}" if skipped else "")
                    + "; no results shown (the runs are in the UI: make ui)",
                    file=sys.stderr,
                )
                report.data |= {"failed_layer": name, "not_run": skipped}
                report.finish(False)
                return 1
        findings = orc.leadlag_findings(instance, pair_keys)
        vsm = _demo_vsm_tick(instance)
    comparison = orc.demo_comparison()
    overhead = [o["overhead_s"] for layer in report.data["layers"] for o in layer["runs"]]
    report.data |= {
        "leadlag": findings,
        "comparison": comparison,
        "elapsed_s": round(progress.elapsed(), 2),
        "launch_overhead_s_per_run": round(sum(overhead) / len(overhead), 2) if overhead else 0.0,
    }
    report.data["vsm"] = vsm
    report.line(orc.leadlag_summary(findings))
    report.line(orc.verdict_summary(comparison))
    report.line(vsm["summary"])
    report.line(f"demo done in {progress.elapsed():.1f} s; browse it: make ui  ->  http://127.0.0.1:{DEFAULT_PORT}")
    report.finish(True)
    return 0


def _demo_vsm_tick(instance: Any) -> dict[str, Any]:
    """One VSM tick over the demo's runs and checks (as the daemon would): what it recorded, one line."""
    from collections import Counter

    from cyber_pipelines.resources import VsmResource
    from sensors.vsm import vsm_tick

    vsm = VsmResource()
    log = vsm.log()
    try:
        outcome = vsm_tick(instance, vsm, log)
    finally:
        log.close()
    counts = dict(Counter(e.kind for e in outcome.recorded))
    trips = [e.pair or "system" for e in outcome.recorded if e.kind == "breaker" and e.decision == "open"]
    states = Counter(e.decision for e in outcome.steps["ledger"])
    summary = (
        f"VSM tick: {sum(counts.values())} event(s) ({', '.join(f'{k} {n}' for k, n in counts.items())}); "
        f"ledger {dict(states) or 'unchanged'}; breakers open: {', '.join(trips) or 'none'} "
        "(cyber-pipelines vsm status --home ...)"
    )
    return {"recorded": counts, "trips": trips, "summary": summary}


def _model_layers(pair_keys: Sequence[str], train_days: int, report: Report) -> list[tuple[str, str, list]]:
    """The models layers of the demo (base, then per pair its adapter and forecasts), or none with the reason."""
    from cyber_pipelines import orchestrate as orc

    minimum, validation = 21, min(30, train_days // 3)  # lifecycle.MIN_TRAIN_DAYS, validation_days_for (no torch here)
    if train_days < minimum:
        report.warn(
            f"models layers skipped: --train-days {train_days} < {minimum} (a week of warm-up, training, hold-out)"
        )
        return []
    return [
        ("base", f"the base forecaster, trained before the last {validation} of the first {train_days} days",
         [orc.base_forecaster_spec(train_days, validation)]),
        ("adapters", f"{len(pair_keys)} pair(s): LoRA adapter, promotion, forecasts", orc.pair_model_specs(pair_keys)),
    ]  # fmt: skip


def _use_demo_home(args: argparse.Namespace) -> None:
    """With ``--home``, read that demo home's instance, data and config (refused if ``demo`` did not make it)."""
    from cyber_pipelines.instance import is_home, use_home

    if args.home is not None:
        if not is_home(args.home):
            raise CliError(f"{args.home} is not a home made by `cyber-pipelines demo` (run `make demo` first)")
        use_home(args.home)


def _one_source(found: list[str], asked: str | None, what: str, hint: str) -> str:
    """The one source that has ``what`` (``asked`` if given), else a one-line error (exit 1)."""
    sources = [s for s in found if s == asked] if asked else found
    if len(sources) != 1:
        raise CliError(
            f"no {what}" + (f" for source {asked}" if asked else "") + f" ({hint})"
            if not sources
            else f"{what} from {', '.join(sources)}: choose one with --source",
            code=1,
        )
    return sources[0]


# -- patterns ------------------------------------------------------------------------------------
def _moment(text: str) -> datetime:
    """An ISO time (``2024-03-01T12:00``, naive = UTC, or with an offset) as an aware UTC datetime."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO time: {text!r} (e.g. 2024-03-01T12:00)") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def cmd_patterns_similar(args: argparse.Namespace) -> int:
    """The nearest admissible windows of a pair's window at a time, with what followed them."""
    from cyber_pipelines import config

    _use_demo_home(args)
    key = pair_to_key(args.pair)
    root = config.data_dir()
    source = _one_source(
        [s for s in MARKET_SOURCES if (root / s / "pattern_windows" / f"{key}.parquet").exists()],
        args.source,
        f"pattern windows of {args.pair} under {root}",
        "run `make demo`, or materialize pattern_windows",
    )
    from cyber_pipelines.orchestrate import Progress

    progress = Progress()
    progress(f"loading the {source} encoder, windows and vector store under {root}")
    from cyber_pipelines.patterns.encoder import encoder_name, load_encoder
    from cyber_pipelines.patterns.search import similar
    from cyber_pipelines.resources import ModelStoreResource, VectorStoreResource
    from cyber_pipelines.storage import TableStore

    store = TableStore(root)
    try:
        tensors, encoder_config, version = ModelStoreResource().store().load(encoder_name(source))
        model = load_encoder(tensors, encoder_config)
        windows = store.read(source, "pattern_windows", key)
        vectors = VectorStoreResource()
        with vectors.session(root, source, model.dim) as memory:
            points = memory.count()
            if points == 0:
                raise CliError(
                    f"the vector store is empty ({vectors.location(root, source)}): materialize pattern_embeddings", 1
                )
            found = similar(memory, model, windows, args.pair, args.at, args.k)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:  # RuntimeError: the shard is held elsewhere
        raise CliError(str(exc), code=1) from None
    progress(f"searched {points} windows in {progress.elapsed():.1f} s")
    report = Report(args.json, {"command": "patterns similar", "source": source, "encoder_version": version, **found})
    query = found["query"]
    report.line(
        f"{args.pair} window ending {query['window_end']} (known at {args.at.isoformat()}), {source} data; "
        f"{len(found['neighbours'])} nearest windows whose 24 h outcome was known by then:"
    )
    rows = [
        f"  {n['pair']:<9} {n['window_end'][:16]}  sim {n['similarity']:.3f}  ended {n['horizon_end'][:16]}  "
        + "  ".join(f"{h} {_signed_pct(n[h])}" for h in ("fwd_1h", "fwd_6h", "fwd_24h"))
        for n in found["neighbours"]
    ]
    for row in rows:
        report.line(row)
    followed = query["followed_by"]
    report.line(
        "what followed the query (not seen by the search): "
        + "  ".join(f"{h} {_signed_pct(v)}" for h, v in followed.items())
    )
    report.finish(True)
    return 0


def _signed_pct(value: float | None) -> str:
    return "   n/a " if value is None else f"{100 * (math.exp(value) - 1):+6.2f}%"


# -- models --------------------------------------------------------------------------------------
def cmd_models_status(args: argparse.Namespace) -> int:
    """Which model serves each pair (its promoted adapter or the base) and why."""
    _use_demo_home(args)
    from cyber_pipelines.models.lifecycle import base_name, status
    from cyber_pipelines.resources import ModelStoreResource

    store = ModelStoreResource().store()
    source = _one_source(
        [s for s in MARKET_SOURCES if store.latest(base_name(s)) is not None],
        args.source,
        f"base forecaster under {store.root}",
        "run `make demo`, or materialize base_forecaster",
    )
    try:
        found = status(store, source)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        raise CliError(f"cannot read the models under {store.root}: {exc}", code=1) from None
    report = Report(args.json, {"command": "models status", **found})
    periods = found["periods"] or {}
    report.line(
        f"{found['source']} base forecaster {found['base_version']} (trained on outcomes known by "
        f"{periods.get('validation_start', '?')[:10]}; promotion period to {periods.get('cutoff', '?')[:10]})"
    )
    for row in found["pairs"]:
        serves = ", ".join((row["decision"] or {}).get("serves") or [])
        served = f"adapter {row['adapter_version'][:8]} ({serves})" if row["model"] == "adapter" else "base"
        report.line(f"  {row['pair']:<10} {served:<28} {row['reason']}")
    report.finish(True)
    return 0


# -- ui ------------------------------------------------------------------------------------------
def port_is_free(host: str, port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def cmd_ui(args: argparse.Namespace) -> int:
    from cyber_pipelines.instance import PROJECT_ROOT, dagster_home, get_instance, is_home, use_home

    if args.home is not None:
        if not is_home(args.home):
            raise CliError(
                f"{args.home} is not a home made by `cyber-pipelines demo` (run `make demo` first, "
                "or serve the CLI's instance: `make ui UI_HOME=`)"
            )
        env = use_home(args.home)
        serving = f"the home {args.home.resolve()} (instance {env['DAGSTER_HOME']}, data {env['CYBER_DATA_DIR']})"
    else:
        serving = f"the instance {dagster_home()} (data {os.environ.get('CYBER_DATA_DIR') or Path('data').resolve()})"
    _settings()  # a broken config fails here, in one line, not inside the code server
    get_instance()  # the pool limits the runs need (vector_store: one at a time) are set on the instance
    if not port_is_free(args.host, args.port):
        raise CliError(
            f"port {args.port} on {args.host} is taken (another `dagster dev`?); nothing was started. "
            f"Choose another: make ui PORT={args.port + 1}, or --port",
            code=1,
        )
    dagster = Path(sys.executable).with_name("dagster")
    command = [str(dagster), "dev", "-w", str(PROJECT_ROOT / "workspace.yaml"), "-h", args.host, "-p", str(args.port)]
    print(f"serving {serving} on http://{args.host}:{args.port}", file=sys.stderr, flush=True)
    os.chdir(PROJECT_ROOT)
    os.execv(command[0], command)


# -- the parser ------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument(
        "--verbose", "-v", action="store_true", default=argparse.SUPPRESS, help="full traces of failures"
    )
    reports = _Parser(add_help=False)
    reports.add_argument("--json", action="store_true", help="print one JSON document to stdout")

    parser = _Parser(prog="cyber-pipelines", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--verbose", "-v", action="store_true", default=False, help="full traces of failures")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    ingest = sub.add_parser(
        "ingest",
        parents=[common, reports],
        help="materialize month partitions through Dagster (runs show in the UI)",
        description=(
            "Materialize the month partitions that --start..--end fall in (a month run ingests every day of "
            "its month up to the last complete day), one run per block of pairs added together. A range past "
            "the last complete day is "
            "clamped with a warning; dates in the future are refused. --source landing first processes the "
            "landing folder (as the landing sensor does) and then ingests what it accepted, or --pairs."
        ),
    )
    ingest.add_argument("--source", required=True, help="synthetic | ccxt | landing; with --repos: synthetic | github")
    ingest.add_argument("--pairs", type=_pairs, help="comma-separated, e.g. BTC/USD,ETH/USD")
    ingest.add_argument("--repos", type=_repos, help="GitHub activity instead: owner/name,...")
    ingest.add_argument("--start", type=_day, help="first day (YYYY-MM-DD); optional with --source landing")
    ingest.add_argument("--end", type=_day, help="last day (YYYY-MM-DD), clamped to the last complete day")
    ingest.add_argument(
        "--min-age",
        type=float,
        default=None,
        help="landing: take a file without a .done marker once unmodified this long (seconds; default 5)",
    )
    ingest.set_defaults(func=cmd_ingest)

    export = sub.add_parser("export", parents=[common], help="write stored tables to CSV or Parquet")
    export_sub = export.add_subparsers(dest="table", required=True, parser_class=_Parser)
    ohlcv = export_sub.add_parser("ohlcv", parents=[common, reports], help="stored OHLCV candles of one pair")
    ohlcv.add_argument("--source", choices=MARKET_SOURCES, help="default: the one source that stored the pair")
    ohlcv.add_argument("--pair", type=_pair, required=True)
    ohlcv.add_argument("--start", type=_day, required=True)
    ohlcv.add_argument("--end", type=_day, required=True)
    ohlcv.add_argument("--out", type=Path, required=True, help="FILE.csv or FILE.parquet")
    ohlcv.set_defaults(func=cmd_export_ohlcv)
    activity = export_sub.add_parser(
        "github-activity", parents=[common, reports], help="stored GitHub activity of one repo"
    )
    activity.add_argument("--source", choices=GITHUB_SOURCES, help="default: the one source that stored the repo")
    activity.add_argument("--repo", type=lambda r: _repos(r)[0], required=True, help="owner/name")
    activity.add_argument("--start", type=_day, required=True)
    activity.add_argument("--end", type=_day, required=True)
    activity.add_argument("--out", type=Path, required=True, help="FILE.csv or FILE.parquet")
    activity.set_defaults(func=cmd_export_github)

    date_format_help = "strftime format of the time column, e.g. %%m/%%d/%%Y (needed when day/month order is ambiguous)"
    features = sub.add_parser(
        "features", parents=[common, reports], help="compute the indicator features of any OHLCV CSV"
    )
    features.add_argument("--input", type=Path, required=True, help="CSV with Date/timestamp, Open..Volume")
    features.add_argument("--output", type=Path, required=True, help="FILE.parquet or FILE.csv (never the input)")
    features.add_argument("--date-format", default=None, help=date_format_help)
    features.set_defaults(func=cmd_features)

    # What backtest and sweep share: an OHLCV CSV, its costs, fills and annualization.
    market_csv = _Parser(add_help=False)
    market_csv.add_argument("--data", type=Path, required=True, help="CSV with Date/timestamp, Open..Volume")
    market_csv.add_argument("--fee", type=float, default=0.0026, help="per side (default 0.0026)")
    market_csv.add_argument("--slippage", type=float, default=0.0010, help="per side (default 0.0010)")
    market_csv.add_argument(
        "--fill",
        choices=("next_open", "close"),
        default="next_open",
        help="next_open (default) or close: optimistic, fills at the price that completed the signal",
    )
    annualize = market_csv.add_mutually_exclusive_group()
    annualize.add_argument(
        "--calendar",
        choices=("24/7", "equities"),
        default=None,
        help="annualize by this calendar: 24/7 (8766 hours a year) or equities (252 sessions); "
        "default: equities for weekday-only daily bars, else 24/7",
    )
    annualize.add_argument("--bars-per-year", type=_positive_float, default=None, help="annualize with N bars a year")
    market_csv.add_argument("--date-format", default=None, help=date_format_help)

    backtest = sub.add_parser(
        "backtest", parents=[common, reports, market_csv], help="backtest a strategy on any OHLCV CSV"
    )
    backtest.add_argument(
        "--strategy",
        required=True,
        help="sma_cross | sma_above | rule_of_three | cross_moat | moat_only | sma_grid (the last four are fitted: "
        "give --train-bars and --test-bars for walk-forward, out-of-sample figures)",
    )
    backtest.add_argument("--train-bars", type=_positive_int, default=None, help="walk-forward: rows each fit sees")
    backtest.add_argument("--test-bars", type=_positive_int, default=None, help="walk-forward: rows traded per fit")
    backtest.add_argument("--param", type=_param, action="append", default=[], help="NAME=VALUE, repeatable")
    backtest.add_argument("--stop-loss", type=float, default=None, help="exit at this fraction against the position")
    backtest.add_argument("--size", type=float, default=1.0, help="position size multiplier (probation: 0.5, 0.25)")
    backtest.set_defaults(func=cmd_backtest)

    sweep = sub.add_parser(
        "sweep",
        parents=[common, reports, market_csv],
        help="sweep an SMA grid on any OHLCV CSV; does its best pair beat a benchmark after data snooping?",
        description=(
            "Backtest every SMA pair with fast < slow, name the best by Sharpe, and test the whole grid with "
            "Hansen's (2005) SPA against --benchmark, so the p-value pays for the search; the naive p of the "
            "best alone is shown beside it."
        ),
    )
    sweep.add_argument("--fast", type=_windows, required=True, help="fast SMA windows: START:STOP[:STEP] or N,N,...")
    sweep.add_argument("--slow", type=_windows, required=True, help="slow SMA windows: START:STOP[:STEP] or N,N,...")
    sweep.add_argument(
        "--rule", choices=("cross", "above"), default="cross", help="trade crossings (default) or hold while above"
    )
    sweep.add_argument("--benchmark", choices=("cash", "buy_and_hold"), default="cash", help="default: cash")
    sweep.add_argument("--reps", type=_positive_int, default=1000, help="bootstrap resamples (default 1000)")
    sweep.add_argument("--seed", type=_non_negative_int, default=0, help="bootstrap seed (default 0)")
    sweep.set_defaults(func=cmd_sweep)

    demo = sub.add_parser(
        "demo",
        parents=[common, reports],
        help="run the whole pipeline offline on the synthetic source, in its own instance and data folder",
        description=(
            "Materialize every layer on the synthetic source for exactly --pairs x the last --days complete "
            "days, in a home folder of its own (a fresh Dagster instance, data folder and pipeline config; "
            "`make ui` serves it). Stops at the first layer that fails."
        ),
    )
    demo.add_argument(
        "--days", type=_positive_int, default=None, help=f"complete days of data ending yesterday (default {DEMO_DAYS})"
    )
    demo.add_argument("--pairs", type=_pairs, default=None, help="pairs (default: the configured pairs)")
    demo.add_argument("--seed", type=_non_negative_int, default=None, help="synthetic seed (default: the config's)")
    demo.add_argument(
        "--effect", type=_non_negative_float, default=None, help="planted activity -> market effect size (0: none)"
    )
    demo.add_argument("--lag", type=_non_negative_int, default=None, help="hours from an activity burst to the move")
    demo.add_argument("--sign", type=_sign, default=None, help="+1 or -1: direction of the planted drift")
    demo.add_argument(
        "--train-days", type=_positive_int, default=90, help="walk-forward: days of history each fit sees (default 90)"
    )
    demo.add_argument(
        "--test-days", type=_positive_int, default=30, help="walk-forward: days traded after each fit (default 30)"
    )
    demo.add_argument(
        "--home",
        type=Path,
        default=DEFAULT_DEMO_HOME,
        help=f"the demo's own folder, wiped first (default {DEFAULT_DEMO_HOME})",
    )
    demo.set_defaults(func=cmd_demo)

    patterns = sub.add_parser("patterns", parents=[common], help="search the pattern memory")
    patterns_sub = patterns.add_subparsers(dest="action", required=True, parser_class=_Parser)
    similar = patterns_sub.add_parser(
        "similar",
        parents=[common, reports],
        help="the nearest past windows of a pair's window at a time (only those whose outcome was known by then)",
    )
    similar.add_argument("--pair", type=_pair, required=True, help="e.g. BTC/USD")
    similar.add_argument("--at", type=_moment, required=True, help="ISO time, UTC unless an offset is given")
    similar.add_argument("--k", type=_positive_int, default=10, help="neighbours (default 10)")
    similar.add_argument("--source", choices=MARKET_SOURCES, help="default: the one source with the pair's windows")
    similar.add_argument(
        "--home", type=Path, default=None, help="a home made by `demo` (default: CYBER_DATA_DIR or ./data)"
    )
    similar.set_defaults(func=cmd_patterns_similar)

    models = sub.add_parser("models", parents=[common], help="the forecasters: which model serves each pair")
    models_sub = models.add_subparsers(dest="action", required=True, parser_class=_Parser)
    model_status = models_sub.add_parser(
        "status", parents=[common, reports], help="per pair: its promoted LoRA adapter or the base, and why"
    )
    model_status.add_argument("--source", choices=MARKET_SOURCES, help="default: the one source with a base model")
    model_status.add_argument(
        "--home", type=Path, default=None, help="a home made by `demo` (default: CYBER_DATA_DIR or ./data)"
    )
    model_status.set_defaults(func=cmd_models_status)

    from cyber_pipelines.vsm_cli import add_vsm_parser  # here: it imports this module

    add_vsm_parser(sub, common, reports)
    from cyber_pipelines.metrics_cli import add_metrics_parser  # here: it imports this module

    add_metrics_parser(sub, common, reports)

    ui = sub.add_parser("ui", parents=[common], help="serve the Dagster UI (dagster dev) over an instance")
    ui.add_argument("--home", type=Path, default=None, help="a home made by `demo` (default: DAGSTER_HOME and ./data)")
    ui.add_argument("--port", type=int, default=DEFAULT_PORT)
    ui.add_argument("--host", default="127.0.0.1")
    ui.set_defaults(func=cmd_ui)
    return parser


def main(argv: list[str] | None = None) -> int:
    import warnings

    warnings.filterwarnings("ignore", message=r".*(beta|preview|superseded).*")  # Dagster API-stability notes
    args = build_parser().parse_args(argv)
    args.json = getattr(args, "json", False)
    try:
        return int(args.func(args))
    except CliError as exc:
        if args.verbose:
            import traceback

            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        _json_failure(args, str(exc))
        return exc.code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as other shell tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 141
    except Exception as exc:  # a one-line error, the trace only on request
        if args.verbose:
            import traceback

            traceback.print_exc()
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        hint = "" if args.verbose else " (the full trace: --verbose)"
        print(f"error: {type(exc).__name__}{': ' + detail if detail else ''}{hint}", file=sys.stderr)
        _json_failure(args, f"{type(exc).__name__}: {detail}")
        return 1


def _json_failure(args: argparse.Namespace, error: str) -> None:
    """With ``--json``, a failure is still one JSON document on stdout."""
    if args.json:
        command = " ".join(filter(None, (args.command, getattr(args, "action", None))))
        print(json.dumps({"ok": False, "command": command, "error": error}, indent=2))


if __name__ == "__main__":
    sys.exit(main())
