"""`cyber-pipelines`: ingest and export through Dagster from the shell, and the offline demo."""

from __future__ import annotations

import argparse
import sys
from datetime import date, timedelta
from pathlib import Path

import polars as pl

from cyber_pipelines.keys import normalize_pair, pair_to_key
from cyber_pipelines.storage import GITHUB_SOURCES, MARKET_SOURCES


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from exc


def _days(start: date, end: date) -> list[date]:
    if end < start:
        raise SystemExit(f"error: --end {end} is before --start {start}")
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


def _pairs(text: str) -> list[str]:
    try:
        return [normalize_pair(p) for p in text.split(",") if p.strip()]
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
    return repos


def cmd_ingest(args: argparse.Namespace) -> int:
    from cyber_pipelines.orchestrate import ingest_github, ingest_market

    days = _days(args.start, args.end)
    if args.repos:
        if args.source not in GITHUB_SOURCES:
            raise SystemExit(f"error: with --repos, --source must be one of {GITHUB_SOURCES}")
        outcomes = ingest_github(args.repos, days, args.source)
    else:
        if args.source not in MARKET_SOURCES:
            raise SystemExit(f"error: --source must be one of {MARKET_SOURCES}, or github with --repos")
        if not args.pairs:
            raise SystemExit("error: --pairs is required for market sources (or --repos for GitHub activity)")
        outcomes = ingest_market(args.pairs, days, args.source)
    failed = [o for o in outcomes if not o.success]
    for o in outcomes:
        print(f"{'ok  ' if o.success else 'FAIL'} {o.partition}  run {o.run_id[:8]}  {o.message}")
    print(f"{len(outcomes) - len(failed)} of {len(outcomes)} partitions materialized")
    return 1 if failed else 0


def _write_table(df: pl.DataFrame, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".csv":
        df.write_csv(out)
    elif out.suffix == ".parquet":
        df.write_parquet(out)
    else:
        raise SystemExit(f"error: --out must end in .csv or .parquet, got {out.name!r}")


def _export_days(args: argparse.Namespace, table: str, key: str, label: str) -> int:
    """Write the stored day partitions ``<source>/<table>/<key>/<day>`` of the date range to ``--out``."""
    from cyber_pipelines import config
    from cyber_pipelines.storage import TableStore

    if args.out.suffix not in (".csv", ".parquet"):
        raise SystemExit(f"error: --out must end in .csv or .parquet, got {args.out.name!r}")
    store = TableStore(config.data_dir())
    frames, missing = [], []
    for day in _days(args.start, args.end):
        if store.exists(args.source, table, key, day.isoformat()):
            frames.append(store.read(args.source, table, key, day.isoformat()))
        else:
            missing.append(day.isoformat())
    if not frames:
        print(
            f"error: nothing stored for {label} from source {args.source!r} in {args.start}..{args.end}",
            file=sys.stderr,
        )
        return 2
    stored = pl.concat(frames).sort("timestamp")
    _write_table(stored, args.out)
    if missing:
        print(f"warning: {len(missing)} day(s) not stored: {', '.join(missing[:10])}", file=sys.stderr)
    print(f"wrote {stored.height} rows of {label} ({args.source}) to {args.out}")
    return 0


def cmd_export_ohlcv(args: argparse.Namespace) -> int:
    return _export_days(args, "ohlcv", pair_to_key(args.pair), args.pair)


def cmd_export_github(args: argparse.Namespace) -> int:
    from cyber_pipelines.config import resolve_source
    from cyber_pipelines.github.activity import repo_to_key

    args.source = resolve_source("github", GITHUB_SOURCES, args.source)
    return _export_days(args, "github_activity", repo_to_key(args.repo), args.repo)


def cmd_features(args: argparse.Namespace) -> int:
    from cyber_pipelines.features.ohlcv_csv import compute_features_file
    from cyber_pipelines.market.schema import OhlcvError

    try:
        table = compute_features_file(args.input, args.output)
    except (OhlcvError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {table.height} rows x {len(table.columns)} columns of features to {args.output}")
    return 0


def _param(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    try:
        if not sep or not name.strip():
            raise ValueError
        return name.strip(), float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--param takes NAME=NUMBER, got {text!r}") from None


def cmd_backtest(args: argparse.Namespace) -> int:
    import json

    from cyber_pipelines.backtest import backtest_csv
    from cyber_pipelines.market.schema import OhlcvError

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
        )
    except (OhlcvError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        width = max(len(k) for k in result)
        for key, value in result.items():
            shown = f"{value:.6g}" if isinstance(value, float) else value
            print(f"{key:<{width}}  {shown}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from cyber_pipelines.orchestrate import run_demo

    return run_demo(days=args.days, pairs=args.pairs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cyber-pipelines", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    ingest = sub.add_parser("ingest", help="materialize OHLCV partitions through Dagster (runs show in the UI)")
    ingest.add_argument("--source", required=True, help="synthetic | ccxt | landing; with --repos: synthetic | github")
    ingest.add_argument("--pairs", type=_pairs, help="comma-separated, e.g. BTC/USD,ETH/USD")
    ingest.add_argument("--repos", type=_repos, help="GitHub activity instead: owner/name,...")
    ingest.add_argument("--start", type=_day, required=True)
    ingest.add_argument("--end", type=_day, required=True)
    ingest.set_defaults(func=cmd_ingest)

    export = sub.add_parser("export", help="write stored tables to CSV or Parquet")
    export_sub = export.add_subparsers(dest="table", required=True)
    ohlcv = export_sub.add_parser("ohlcv", help="stored OHLCV candles of one pair")
    ohlcv.add_argument("--source", required=True, choices=MARKET_SOURCES)
    ohlcv.add_argument("--pair", type=normalize_pair, required=True)
    ohlcv.add_argument("--start", type=_day, required=True)
    ohlcv.add_argument("--end", type=_day, required=True)
    ohlcv.add_argument("--out", type=Path, required=True)
    ohlcv.set_defaults(func=cmd_export_ohlcv)
    activity = export_sub.add_parser("github-activity", help="stored GitHub activity of one repo")
    activity.add_argument("--source", choices=GITHUB_SOURCES, help="default: CYBER_GITHUB_SOURCE or synthetic")
    activity.add_argument("--repo", type=lambda r: _repos(r)[0], required=True, help="owner/name")
    activity.add_argument("--start", type=_day, required=True)
    activity.add_argument("--end", type=_day, required=True)
    activity.add_argument("--out", type=Path, required=True)
    activity.set_defaults(func=cmd_export_github)

    features = sub.add_parser("features", help="compute the indicator features of any OHLCV CSV")
    features.add_argument("--input", type=Path, required=True, help="CSV with Date/timestamp, Open..Volume")
    features.add_argument("--output", type=Path, required=True, help="FILE.parquet or FILE.csv")
    features.set_defaults(func=cmd_features)

    backtest = sub.add_parser("backtest", help="backtest a strategy on any OHLCV CSV")
    backtest.add_argument("--data", type=Path, required=True, help="CSV with Date/timestamp, Open..Volume")
    backtest.add_argument("--strategy", required=True, help="sma_cross | rule_of_three | cross_moat")
    backtest.add_argument("--param", type=_param, action="append", default=[], help="NAME=VALUE, repeatable")
    backtest.add_argument("--fee", type=float, default=0.0026, help="per side (default 0.0026)")
    backtest.add_argument("--slippage", type=float, default=0.0010, help="per side (default 0.0010)")
    backtest.add_argument("--fill", choices=("next_open", "close"), default="next_open")
    backtest.add_argument("--stop-loss", type=float, default=None, help="exit at this fraction against the position")
    backtest.add_argument("--size", type=float, default=1.0, help="position size multiplier (probation: 0.5, 0.25)")
    backtest.add_argument("--json", action="store_true", help="print the metrics as JSON")
    backtest.set_defaults(func=cmd_backtest)

    demo = sub.add_parser("demo", help="materialize the whole pipeline offline on the synthetic source")
    demo.add_argument("--days", type=int, default=None, help="days of data (default from the demo settings)")
    demo.add_argument("--pairs", type=_pairs, default=None, help="pairs (default: the configured pairs)")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    import warnings

    warnings.filterwarnings("ignore", message=r".*(beta|preview|superseded).*")  # Dagster API-stability notes
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
