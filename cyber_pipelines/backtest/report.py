"""Per-pair backtest reports and an equal-weight portfolio comparison across pairs (no Dagster).

``backtest_pair`` runs a strategy set on one pair's feature table; the first strategy is the baseline
(by default the TA-only ``rule_of_three``) and every other strategy is tested against it on paired
per-bar returns (``significance.compare_to_baseline``: one-sided block-bootstrap p-value and a
bootstrap interval for the Sharpe difference). Positions are computed on the whole table (they are
causal, so the rolling confidence windows get history) and traded only from row ``WARMUP_BARS`` on,
where every indicator is defined.

``compare_portfolio`` builds, per strategy, an equal-weight portfolio of the pairs: on the timestamps
that every pair has, each pair's per-bar return ``E_t / E_{t-1} - 1`` (between consecutive common
timestamps) is averaged across pairs, i.e. the portfolio is rebalanced to equal weights every bar at
no extra cost (each pair already paid its own trading costs). Trade statistics pool the pairs'
trades entered in the common window; exposure is the pairs' mean exposure.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from cyber_pipelines.backtest.engine import BacktestConfig, BacktestResult, infer_bars_per_year, run_backtest
from cyber_pipelines.backtest.metrics import METRIC_NAMES, SHARPE_FORMULA, bar_returns, equity_metrics, trade_metrics
from cyber_pipelines.backtest.significance import SignificanceResult, compare_to_baseline
from cyber_pipelines.backtest.strategies import CrossMoat, RuleOfThree, SmaCross, Strategy
from cyber_pipelines.features.indicators import WARMUP_BARS
from cyber_pipelines.report import markdown_table
from cyber_pipelines.storage import TableStore, write_text_atomic

# Hourly bars: a one-day average against a four-day one. The textbook 10/20 was made for daily bars;
# on hourly bars it flips several times a day, and at 0.72% round-trip costs it would measure costs.
SMA_FAST, SMA_SLOW = 24, 96
N_BOOT = 2000
BACKTESTS_DIR = "backtests"  # <data>/<source>/backtests/<PAIR>.json and comparison.json
EQUITY_TABLE = "backtest_equity"  # <data>/<source>/backtest_equity/<PAIR>.parquet and portfolio.parquet
PORTFOLIO = "portfolio"
COMPARISON = "comparison"
# metrics published as numbers (Dagster plots numeric metadata over time)
SUMMARY_METRICS = ("total_return", "cagr", "sharpe", "sortino", "max_drawdown", "win_rate", "profit_factor", "n_trades")
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
Metrics = dict[str, dict[str, float]]  # strategy -> metric -> value


def default_strategies() -> list[Strategy]:
    """The baseline ``RuleOfThree`` first, then ``CrossMoat`` and ``SmaCross(24, 96)``."""
    return [RuleOfThree(), CrossMoat(), SmaCross(fast=SMA_FAST, slow=SMA_SLOW)]


def json_safe(value: Any) -> Any:
    """Plain JSON types: non-finite floats -> None, tuples -> lists, datetimes -> ISO strings."""
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    raise TypeError(f"not JSON-able: {type(value).__name__}")


def _float(value: Any) -> float:
    return math.nan if value is None else float(value)


def write_json_atomic(data: Mapping[str, Any], path: Path) -> Path:
    """Write ``data`` as JSON via a temp file in the same folder and a rename (no NaN allowed)."""
    return write_text_atomic(json.dumps(data, indent=1, allow_nan=False), path)


def _significance_from_json(data: Mapping[str, Any]) -> SignificanceResult:
    values = dict(data)
    lo, hi = values.pop("sharpe_diff_ci")
    kwargs: dict[str, Any] = {
        f.name: (_float(values[f.name]) if f.type in ("float", float) else values[f.name])
        for f in fields(SignificanceResult)
        if f.name in values
    }
    return SignificanceResult(**kwargs, sharpe_diff_ci=(_float(lo), _float(hi)))


def _pct(value: float) -> str:
    return f"{value:+.2%}" if math.isfinite(value) else "n/a"


def _num(value: float, digits: int = 2) -> str:
    if math.isinf(value):
        return "inf"
    return f"{value:.{digits}f}" if math.isfinite(value) else "n/a"


def results_markdown(
    metrics: Metrics, significance: Mapping[str, SignificanceResult], baseline: str, config: BacktestConfig
) -> str:
    """The results table (one row per strategy, baseline first) with the Sharpe formula and the costs."""
    rows = []
    for name, m in metrics.items():
        sig = significance.get(name)
        rows.append(
            {
                "strategy": f"{name} (baseline)" if name == baseline else name,
                "total_return": _pct(m["total_return"]),
                "CAGR": _pct(m["cagr"]),
                "Sharpe": _num(m["sharpe"]),
                "Sortino": _num(m["sortino"]),
                "max DD": _pct(m["max_drawdown"]),
                "win rate": _pct(m["win_rate"]).lstrip("+"),
                "profit factor": _num(m["profit_factor"]),
                "trades": str(int(m["n_trades"])),
                "p vs baseline": f"{sig.p_value:.4f}" if sig else "",
                "Sharpe diff CI": (
                    f"{sig.sharpe_diff:+.2f} [{sig.sharpe_diff_ci[0]:+.2f}, {sig.sharpe_diff_ci[1]:+.2f}]"
                    if sig
                    else ""
                ),
            }
        )
    side = "long/short" if config.allow_short else "long only"
    confidence = next(iter(significance.values())).confidence if significance else 0.95
    notes = [
        f"{SHARPE_FORMULA}.",
        f"p vs baseline: one-sided circular block bootstrap on paired per-bar returns (H0: no better than "
        f"{baseline}); Sharpe diff CI: strategy minus baseline, {confidence:.0%} bootstrap percentile interval.",
        f"Costs per side: fee {config.fee:.2%} + slippage {config.slippage:.2%}; fill {config.fill}; {side}; "
        f"position size x{config.size_multiplier:g}.",
    ]
    return markdown_table(pl.DataFrame(rows)) + "\n\n" + "\n\n".join(notes)


def numeric_summary(metrics: Metrics, significance: Mapping[str, SignificanceResult]) -> dict[str, float]:
    """``<metric>/<strategy>``, ``p_value/<strategy>`` and ``sharpe_diff/<strategy>``: finite numbers only."""
    out: dict[str, float] = {}
    for name, m in metrics.items():
        for metric in SUMMARY_METRICS:
            if math.isfinite(m[metric]):
                out[f"{metric}/{name}"] = int(m[metric]) if metric == "n_trades" else float(m[metric])
    for name, sig in significance.items():
        for key, value in (("p_value", sig.p_value), ("sharpe_diff", sig.sharpe_diff)):
            if math.isfinite(value):
                out[f"{key}/{name}"] = float(value)
    return out


def _config_from_json(data: Mapping[str, Any]) -> BacktestConfig:
    return BacktestConfig(**data)


@dataclass(frozen=True)
class PairBacktest:
    """Every strategy's backtest of one pair, and each non-baseline strategy's test against the baseline."""

    pair: str
    baseline: str
    config: BacktestConfig
    bars_per_year: float
    warmup_bars: int
    metrics: Metrics  # strategy -> METRIC_NAMES -> value, baseline first
    significance: dict[str, SignificanceResult]  # non-baseline strategy -> test vs the baseline
    curves: pl.DataFrame  # timestamp + one equity column per strategy
    trades: pl.DataFrame  # TRADE_SCHEMA: strategy + the engine's trade list

    @property
    def strategies(self) -> list[str]:
        return list(self.metrics)

    def markdown(self) -> str:
        return results_markdown(self.metrics, self.significance, self.baseline, self.config)

    def numeric_summary(self) -> dict[str, float]:
        return numeric_summary(self.metrics, self.significance)

    def to_json_dict(self) -> dict[str, Any]:
        """JSON-safe dict (non-finite numbers -> None); the equity curves are stored separately."""
        ts = self.curves["timestamp"]
        return json_safe(
            {
                "kind": "pair_backtest",
                "pair": self.pair,
                "baseline": self.baseline,
                "strategies": self.strategies,
                "config": asdict(self.config),
                "bars_per_year": self.bars_per_year,
                "warmup_bars": self.warmup_bars,
                "bars": self.curves.height,
                "start": ts[0],
                "end": ts[-1],
                "metrics": self.metrics,
                "significance": {k: v.to_dict() for k, v in self.significance.items()},
                "trades": self.trades.to_dicts(),
                "sharpe_formula": SHARPE_FORMULA,
            }
        )

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Any], curves: pl.DataFrame) -> PairBacktest:
        """Inverse of ``to_json_dict`` given the stored equity curves (None -> NaN)."""
        if data.get("kind") != "pair_backtest":
            raise ValueError(f"not a pair backtest result (kind={data.get('kind')!r})")
        missing = [s for s in ("timestamp", *data["strategies"]) if s not in curves.columns]
        if missing:
            raise ValueError(f"equity curves of {data['pair']} lack columns {missing}")
        trades = [
            {
                **t,
                "entry_time": datetime.fromisoformat(t["entry_time"]),
                "exit_time": datetime.fromisoformat(t["exit_time"]),
            }
            for t in data["trades"]
        ]
        return cls(
            pair=data["pair"],
            baseline=data["baseline"],
            config=_config_from_json(data["config"]),
            bars_per_year=float(data["bars_per_year"]),
            warmup_bars=int(data["warmup_bars"]),
            metrics={s: {k: _float(v) for k, v in m.items()} for s, m in data["metrics"].items()},
            significance={s: _significance_from_json(v) for s, v in data["significance"].items()},
            curves=curves.select("timestamp", *data["strategies"]),
            trades=pl.DataFrame(trades, schema=TRADE_SCHEMA),
        )


def backtest_pair(
    features: pl.DataFrame,
    config: BacktestConfig,
    strategies: Sequence[Strategy] | None = None,
    *,
    pair: str = "",
    warmup_bars: int = WARMUP_BARS,
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> PairBacktest:
    """Backtest ``strategies`` (default ``default_strategies()``; the first is the baseline) on one pair."""
    strategies = list(strategies) if strategies is not None else default_strategies()
    if not strategies:
        raise ValueError("no strategies to backtest")
    names = [s.name for s in strategies]
    if len(set(names)) != len(names) or "timestamp" in names:
        raise ValueError(f"strategy names must be unique and not 'timestamp', got {names}")
    label = pair or "features"
    if features.height < warmup_bars + 11:
        raise ValueError(
            f"{label}: {features.height} feature rows; need at least {warmup_bars + 11} "
            f"({warmup_bars} warm-up bars plus 11 to trade and test)"
        )
    traded = features.slice(warmup_bars)
    results: dict[str, BacktestResult] = {}
    for strategy in strategies:
        targets = strategy.positions(features)
        results[strategy.name] = run_backtest(traded, targets[warmup_bars:], config, name=strategy.name)
    base = results[names[0]]
    significance = {
        name: compare_to_baseline(r.returns, base.returns, base.bars_per_year, n_boot=n_boot, seed=seed)
        for name, r in results.items()
        if name != names[0]
    }
    curves = pl.DataFrame({"timestamp": traded["timestamp"].cast(TRADE_SCHEMA["entry_time"])}).with_columns(
        pl.Series(name, r.equity["equity"]) for name, r in results.items()
    )
    trades = pl.concat(
        [
            r.trades.with_columns(strategy=pl.lit(name)).select(pl.col(c).cast(t) for c, t in TRADE_SCHEMA.items())
            for name, r in results.items()
        ]
    )
    return PairBacktest(
        pair=pair,
        baseline=names[0],
        config=config,
        bars_per_year=base.bars_per_year,
        warmup_bars=warmup_bars,
        metrics={name: dict(r.metrics) for name, r in results.items()},
        significance=significance,
        curves=curves,
        trades=trades,
    )


@dataclass(frozen=True)
class Comparison:
    """Equal-weight portfolios of the pairs, one per strategy, tested against the baseline portfolio."""

    pairs: list[str]
    baseline: str
    config: BacktestConfig
    bars_per_year: float
    metrics: Metrics
    significance: dict[str, SignificanceResult]
    curves: pl.DataFrame  # timestamp + portfolio equity per strategy
    by_pair: pl.DataFrame  # pair, strategy, total_return, sharpe, p_value (vs that pair's baseline)

    @property
    def strategies(self) -> list[str]:
        return list(self.metrics)

    def markdown(self) -> str:
        """Portfolio results, then each pair's Sharpe ratio per strategy."""
        table = results_markdown(self.metrics, self.significance, self.baseline, self.config)
        wide = self.by_pair.pivot(on="strategy", index="pair", values="sharpe").select("pair", *self.strategies)
        head = f"Equal-weight portfolio of {len(self.pairs)} pair(s): {', '.join(self.pairs)}."
        return f"{head}\n\n{table}\n\nSharpe by pair:\n\n{markdown_table(wide, float_digits=3)}"

    def numeric_summary(self) -> dict[str, float]:
        return numeric_summary(self.metrics, self.significance)

    def to_json_dict(self) -> dict[str, Any]:
        ts = self.curves["timestamp"]
        return json_safe(
            {
                "kind": "strategy_comparison",
                "pairs": self.pairs,
                "baseline": self.baseline,
                "strategies": self.strategies,
                "config": asdict(self.config),
                "bars_per_year": self.bars_per_year,
                "bars": self.curves.height,
                "start": ts[0],
                "end": ts[-1],
                "portfolio": "equal weight, rebalanced every bar, on the timestamps common to all pairs",
                "metrics": self.metrics,
                "significance": {k: v.to_dict() for k, v in self.significance.items()},
                "by_pair": self.by_pair.to_dicts(),
                "sharpe_formula": SHARPE_FORMULA,
            }
        )


def _check_compatible(pairs: Mapping[str, PairBacktest]) -> PairBacktest:
    if not pairs:
        raise ValueError("no pair backtests to compare")
    first_key, first = next(iter(pairs.items()))
    for key, result in pairs.items():
        if result.baseline != first.baseline or result.strategies != first.strategies:
            raise ValueError(
                f"{key} was backtested with baseline {result.baseline} and strategies {result.strategies}, "
                f"{first_key} with {first.baseline} and {first.strategies}; rerun them with the same set"
            )
        if result.config != first.config:
            raise ValueError(
                f"{key} and {first_key} were backtested with different settings ({result.config} vs "
                f"{first.config}); rerun them with the same costs and fills"
            )
    return first


def compare_portfolio(pairs: Mapping[str, PairBacktest], *, n_boot: int = N_BOOT, seed: int = 0) -> Comparison:
    """Equal-weight portfolio per strategy across ``pairs`` (see the module docstring)."""
    first = _check_compatible(pairs)
    names = first.strategies
    common = None
    for key, result in pairs.items():
        frame = result.curves.select("timestamp", *[pl.col(s).alias(f"{key}\x1f{s}") for s in names])
        common = frame if common is None else common.join(frame, on="timestamp", how="inner")
    assert common is not None
    common = common.sort("timestamp")
    if common.height < 11:
        raise ValueError(f"the pairs share {common.height} timestamps; need at least 11 to compare portfolios")
    ts = common["timestamp"]
    bpy = first.config.bars_per_year or infer_bars_per_year(ts)
    e0 = first.config.initial_cash
    returns: dict[str, np.ndarray] = {}
    metrics: Metrics = {}
    curves = pl.DataFrame({"timestamp": ts})
    all_trades = pl.concat([r.trades for r in pairs.values()]).filter(pl.col("entry_time").is_between(ts[0], ts[-1]))
    for name in names:
        equity = common.select(f"{key}\x1f{name}" for key in pairs).to_numpy()
        port = bar_returns(equity).mean(axis=1)
        returns[name] = port
        curve = e0 * np.concatenate([[1.0], np.cumprod(1.0 + port)])
        curves = curves.with_columns(pl.Series(name, curve))
        stats = {k: float(v[0]) for k, v in equity_metrics(curve[:, None], np.zeros((ts.len(), 1)), e0, bpy).items()}
        trades = all_trades.filter(pl.col("strategy") == name)
        pnl = trades["pnl"].to_numpy()
        per_trade = trade_metrics(pnl, trades["return"].to_numpy(), np.zeros(pnl.size, dtype=np.int64), 1)
        stats.update({k: float(v[0]) for k, v in per_trade.items()})
        stats["exposure"] = float(np.mean([r.metrics[name]["exposure"] for r in pairs.values()]))
        metrics[name] = {k: stats[k] for k in METRIC_NAMES}
    significance = {
        name: compare_to_baseline(returns[name], returns[first.baseline], bpy, n_boot=n_boot, seed=seed)
        for name in names
        if name != first.baseline
    }
    by_pair = pl.DataFrame(
        [
            {
                "pair": key,
                "strategy": name,
                "total_return": r.metrics[name]["total_return"],
                "sharpe": r.metrics[name]["sharpe"],
                "p_value": r.significance[name].p_value if name in r.significance else None,
            }
            for key, r in pairs.items()
            for name in names
        ],
        schema={
            "pair": pl.String,
            "strategy": pl.String,
            "total_return": pl.Float64,
            "sharpe": pl.Float64,
            "p_value": pl.Float64,
        },
    )
    return Comparison(
        pairs=list(pairs),
        baseline=first.baseline,
        config=first.config,
        bars_per_year=bpy,
        metrics=metrics,
        significance=significance,
        curves=curves,
        by_pair=by_pair,
    )


def equity_plot_png(curves: pl.DataFrame, title: str, *, baseline: str | None = None, max_points: int = 2000) -> bytes:
    """Equity curves (timestamp + one column per strategy) as a PNG; the baseline drawn dashed black."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.figure import Figure

    series = [c for c in curves.columns if c != "timestamp"]
    if "timestamp" not in curves.columns or not series or curves.height < 2:
        raise ValueError(
            f"equity curves need a timestamp and at least one equity column over 2+ rows, got {curves.columns}"
        )
    if not isinstance(curves["timestamp"].dtype, pl.Datetime):
        raise ValueError(f"curves.timestamp must be a datetime column, got {curves['timestamp'].dtype}")
    data = curves.gather_every(max(1, math.ceil(curves.height / max_points)))
    x = data["timestamp"].dt.replace_time_zone(None).to_numpy()
    fig = Figure(figsize=(8, 3.5), dpi=90)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for name in series:
        is_base = name == baseline
        ax.plot(
            x,
            data[name].to_numpy(),
            linewidth=1.2,
            label=name,
            color="black" if is_base else None,
            linestyle="--" if is_base else "-",
        )
    locator = AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    ax.set_ylabel("equity")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _json_path(store: TableStore, source: str, name: str) -> Path:
    return store.path(source, BACKTESTS_DIR, name).with_suffix(".json")


def save_pair_backtest(store: TableStore, source: str, pair_key: str, result: PairBacktest) -> tuple[Path, Path]:
    """Write ``backtests/<PAIR>.json`` and ``backtest_equity/<PAIR>.parquet`` atomically; return both paths."""
    curves = store.write(result.curves, source, EQUITY_TABLE, pair_key)
    return write_json_atomic(result.to_json_dict(), _json_path(store, source, pair_key)), curves


def has_pair_backtest(store: TableStore, source: str, pair_key: str) -> bool:
    return _json_path(store, source, pair_key).exists() and store.exists(source, EQUITY_TABLE, pair_key)


def load_pair_backtest(store: TableStore, source: str, pair_key: str) -> PairBacktest:
    """Read what ``save_pair_backtest`` wrote (``FileNotFoundError`` naming the missing file)."""
    path = _json_path(store, source, pair_key)
    if not path.exists():
        raise FileNotFoundError(f"no stored backtest for {pair_key} from source {source!r} ({path})")
    with open(path) as fh:
        data = json.load(fh)
    return PairBacktest.from_json_dict(data, store.read(source, EQUITY_TABLE, pair_key))


def save_comparison(store: TableStore, source: str, comparison: Comparison) -> tuple[Path, Path]:
    """Write ``backtests/comparison.json`` and ``backtest_equity/portfolio.parquet``; return both paths."""
    curves = store.write(comparison.curves, source, EQUITY_TABLE, PORTFOLIO)
    return write_json_atomic(comparison.to_json_dict(), _json_path(store, source, COMPARISON)), curves
