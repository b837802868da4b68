"""`cyber-pipelines`: ingest and export through Dagster from the shell, and the offline demo."""

from __future__ import annotations

import argparse
import sys
from datetime import date, timedelta
from pathlib import Path

import polars as pl

from cyber_pipelines.keys import normalize_pair, pair_to_key
from cyber_pipelines.storage import MARKET_SOURCES


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


def cmd_ingest(args: argparse.Namespace) -> int:
    from cyber_pipelines.orchestrate import ingest_market

    if args.source not in MARKET_SOURCES:
        raise SystemExit(f"error: --source must be one of {MARKET_SOURCES} (github: with --repos)")
    if not args.pairs:
        raise SystemExit("error: --pairs is required for market sources")
    outcomes = ingest_market(args.pairs, _days(args.start, args.end), args.source)
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


def cmd_export(args: argparse.Namespace) -> int:
    from cyber_pipelines import config
    from cyber_pipelines.storage import TableStore

    store = TableStore(config.data_dir())
    key = pair_to_key(args.pair)
    frames, missing = [], []
    for day in _days(args.start, args.end):
        if store.exists(args.source, "ohlcv", key, day.isoformat()):
            frames.append(store.read(args.source, "ohlcv", key, day.isoformat()))
        else:
            missing.append(day.isoformat())
    if not frames:
        print(
            f"error: nothing stored for {args.pair} from source {args.source!r} in {args.start}..{args.end}",
            file=sys.stderr,
        )
        return 2
    table = pl.concat(frames).sort("timestamp")
    _write_table(table, args.out)
    if missing:
        print(f"warning: {len(missing)} day(s) not stored: {', '.join(missing[:10])}", file=sys.stderr)
    print(f"wrote {table.height} rows of {args.pair} ({args.source}) to {args.out}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from cyber_pipelines.orchestrate import run_demo

    return run_demo(days=args.days, pairs=args.pairs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cyber-pipelines", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    ingest = sub.add_parser(
        "ingest", help="materialize OHLCV partitions through Dagster (runs show in the UI)"
    )
    ingest.add_argument("--source", required=True, help="synthetic | ccxt | landing")
    ingest.add_argument("--pairs", type=_pairs, help="comma-separated, e.g. BTC/USD,ETH/USD")
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
    ohlcv.set_defaults(func=cmd_export)

    demo = sub.add_parser("demo", help="materialize the whole pipeline offline on the synthetic source")
    demo.add_argument("--days", type=int, default=None, help="days of data (default from the demo settings)")
    demo.add_argument("--pairs", type=_pairs, default=None, help="pairs (default: the configured pairs)")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
