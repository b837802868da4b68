"""Backtest results on disk: ``<data>/<source>/backtests/<PAIR>.json`` (and ``comparison.json``) beside
the equity curves in ``backtest_equity/<PAIR>.parquet`` (``portfolio.parquet``), written atomically."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime
from typing import Any

import polars as pl

from cyber_pipelines.backtest.engine import BacktestConfig
from cyber_pipelines.backtest.evaluation import PairEvaluation, StrategyReport
from cyber_pipelines.backtest.metrics import SHARPE_FORMULA
from cyber_pipelines.backtest.portfolio import PORTFOLIO_KIND, PortfolioEvaluation
from cyber_pipelines.backtest.render import verdict_lines
from cyber_pipelines.jsonable import jsonable
from cyber_pipelines.storage import StoragePath, TableStore, write_text_atomic

BACKTESTS_DIR = "backtests"
EQUITY_TABLE = "backtest_equity"
PORTFOLIO = "portfolio"
COMPARISON = "comparison"
PAIR_KIND = "pair_evaluation"
COMPARISON_KIND = "strategy_comparison"
FAMILY = (
    "every strategy on every pair and on the portfolio: Holm over their verdicts (verdict p = the larger of the raw "
    "p against cash and the random null), and per reference Holm over their tests against it"
)
TRADE_SCHEMA: dict[str, pl.DataType] = {
    "strategy": pl.String(),
    "entry_time": pl.Datetime("us", "UTC"),
    "exit_time": pl.Datetime("us", "UTC"),
    "entry_price": pl.Float64(),
    "exit_price": pl.Float64(),
    "size": pl.Float64(),
    "pnl": pl.Float64(),
    "return": pl.Float64(),
    "is_open": pl.Boolean(),
}


def write_json_atomic(data: dict[str, Any], path: StoragePath) -> StoragePath:
    """``data`` as JSON (no NaN: non-finite numbers become null) via a temp file and a rename."""
    return write_text_atomic(json.dumps(jsonable(data), indent=1, allow_nan=False), path)


def _json_path(store: TableStore, source: str, name: str) -> StoragePath:
    return store.path(source, BACKTESTS_DIR, name).with_suffix(".json")


def pair_json(result: PairEvaluation) -> dict[str, Any]:
    ts = result.curves["timestamp"]
    return {
        "kind": PAIR_KIND,
        "pair": result.pair,
        "config": asdict(result.config),
        "bars_per_year": result.bars_per_year,
        "train_bars": result.train_bars,
        "test_bars": result.test_bars,
        "oos_bars": result.curves.height,
        "oos_start": ts[0],
        "oos_end": ts[-1],
        "strategies": {name: rep.to_dict() for name, rep in result.strategies.items()},
        "buy_and_hold": result.buy_and_hold,
        "verdicts": verdict_lines(result.strategies),
        "trades": result.trades.select(list(TRADE_SCHEMA)).to_dicts(),
        "sharpe_formula": SHARPE_FORMULA,
    }


def pair_from_json(data: dict[str, Any], curves: pl.DataFrame) -> PairEvaluation:
    if data.get("kind") != PAIR_KIND:
        raise ValueError(f"not a pair backtest result (kind={data.get('kind')!r}): backtest the pair again")
    names = list(data["strategies"])
    missing = [c for c in ("timestamp", *names) if c not in curves.columns]
    if missing:
        raise ValueError(f"equity curves of {data['pair']} lack columns {missing}")
    trades = [{**t, **{k: datetime.fromisoformat(t[k]) for k in ("entry_time", "exit_time")}} for t in data["trades"]]
    return PairEvaluation(
        pair=data["pair"],
        config=BacktestConfig(**data["config"]),
        bars_per_year=float(data["bars_per_year"]),
        train_bars=int(data["train_bars"]),
        test_bars=int(data["test_bars"]),
        strategies={name: StrategyReport.from_dict(rep) for name, rep in data["strategies"].items()},
        buy_and_hold={k: float("nan") if v is None else float(v) for k, v in data["buy_and_hold"].items()},
        curves=curves,
        trades=pl.DataFrame(trades, schema=TRADE_SCHEMA),
    )


def save_pair(store: TableStore, source: str, pair_key: str, result: PairEvaluation) -> tuple[StoragePath, StoragePath]:
    """Write the pair's JSON and equity curves; return both paths."""
    curves = store.write(result.curves, source, EQUITY_TABLE, pair_key)
    return write_json_atomic(pair_json(result), _json_path(store, source, pair_key)), curves


def has_pair(store: TableStore, source: str, pair_key: str) -> bool:
    return _json_path(store, source, pair_key).exists() and store.exists(source, EQUITY_TABLE, pair_key)


def stored_size_multiplier(store: TableStore, source: str, pair_key: str) -> float | None:
    """The position size the pair's stored backtest ran at (None: no stored backtest)."""
    path = _json_path(store, source, pair_key)
    if not path.exists():
        return None
    return float(json.loads(path.read_text())["config"]["size_multiplier"])


def load_pair(store: TableStore, source: str, pair_key: str) -> PairEvaluation:
    """Read what ``save_pair`` wrote (``FileNotFoundError`` naming the missing file)."""
    path = _json_path(store, source, pair_key)
    if not path.exists():
        raise FileNotFoundError(f"no stored backtest for {pair_key} from source {source!r} ({path})")
    data = json.loads(path.read_text())
    return pair_from_json(data, store.read(source, EQUITY_TABLE, pair_key))


def comparison_json(result: PortfolioEvaluation) -> dict[str, Any]:
    ts = result.curves["timestamp"]

    def compact(rep: StrategyReport) -> dict[str, Any]:
        out = rep.to_dict()
        out.pop("random_null_sharpes")
        return out

    return {
        "kind": COMPARISON_KIND,
        "pairs": result.pairs,
        "portfolio": PORTFOLIO_KIND,
        "costs": result.config_label,
        "bars_per_year": result.bars_per_year,
        "oos_bars": result.curves.height,
        "oos_start": ts[0],
        "oos_end": ts[-1],
        "strategies": {name: compact(rep) for name, rep in result.strategies.items()},
        "buy_and_hold": result.buy_and_hold,
        "verdicts": verdict_lines(result.strategies),
        "by_pair": {
            pair: {name: compact(rep) for name, rep in reports.items()} for pair, reports in result.pair_reports.items()
        },
        "family": FAMILY,
        "sharpe_formula": SHARPE_FORMULA,
    }


def save_comparison(store: TableStore, source: str, result: PortfolioEvaluation) -> tuple[StoragePath, StoragePath]:
    """Write ``comparison.json`` and ``portfolio.parquet``; return both paths."""
    curves = store.write(result.curves, source, EQUITY_TABLE, PORTFOLIO)
    return write_json_atomic(comparison_json(result), _json_path(store, source, COMPARISON)), curves


def load_comparison(store: TableStore, source: str) -> dict[str, Any]:
    path = _json_path(store, source, COMPARISON)
    if not path.exists():
        raise FileNotFoundError(f"no stored strategy comparison from source {source!r} ({path})")
    data: dict[str, Any] = json.loads(path.read_text())
    return data
