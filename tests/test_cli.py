"""`cyber-pipelines` ingest/export: runs land on the DAGSTER_HOME instance; exports hold the stored rows."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from cyber_pipelines.cli import main
from cyber_pipelines.instance import get_instance
from cyber_pipelines.market.schema import OHLCV_SCHEMA

RANGE = ["--start", "2024-01-01", "--end", "2024-01-03"]
DAYS = ["2024-01-01", "2024-01-02", "2024-01-03"]
GETH = "ethereum__go-ethereum"


def stored(data: Path, source: str, table: str, key: str, days: list[str]) -> pl.DataFrame:
    return pl.concat([pl.read_parquet(data / source / table / key / f"{day}.parquet") for day in days])


def assert_no_runs(home: Path) -> None:
    """Nothing was launched: the instance was not even created, or it holds no run."""
    if home.exists():
        assert get_instance().get_runs() == []


def read_export(path: Path, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    if path.suffix == ".parquet":
        return pl.read_parquet(path)
    raw = pl.read_csv(path, infer_schema=False)
    return raw.with_columns(
        pl.col("timestamp").str.to_datetime(time_unit="us", time_zone="UTC"),
        *[pl.col(c).cast(t) for c, t in schema.items() if c != "timestamp"],
    )


def test_ingest_market_runs_on_the_instance_and_export_writes_the_stored_rows(
    isolated_dirs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["ingest", "--source", "synthetic", "--pairs", "BTC/USD", *RANGE]) == 0
    assert "1 of 1 partitions materialized" in capsys.readouterr().out

    instance = dg.DagsterInstance.get()
    assert Path(instance.root_directory) == (isolated_dirs / "dagster_home").resolve()
    (run,) = instance.get_runs()
    assert (run.job_name, run.status) == ("market_ingest", dg.DagsterRunStatus.SUCCESS)
    assert run.tags["dagster/asset_partition_range_start"] == "2024-01-01|BTC-USD"
    assert run.tags["dagster/asset_partition_range_end"] == "2024-01-03|BTC-USD"
    assert instance.get_materialized_partitions(dg.AssetKey("ohlcv_candles")) == {f"{d}|BTC-USD" for d in DAYS}
    assert instance.get_dynamic_partitions("pairs") == ["BTC-USD"]

    expected = stored(isolated_dirs / "data", "synthetic", "ohlcv", "BTC-USD", DAYS)
    assert expected.height == 72
    for name in ("btc.csv", "btc.parquet"):
        out = tmp_path / "exports" / name
        args = ["export", "ohlcv", "--source", "synthetic", "--pair", "btc-usd", *RANGE, "--out", str(out)]
        assert main(args) == 0
        assert f"wrote 72 rows of BTC/USD (synthetic) to {out}" in capsys.readouterr().out
        assert_frame_equal(read_export(out, OHLCV_SCHEMA), expected)

    # A range partly stored: what is there, and a warning naming the missing days.
    partial = tmp_path / "partial.parquet"
    args = ["export", "ohlcv", "--source", "synthetic", "--pair", "BTC/USD"]
    assert main([*args, "--start", "2024-01-02", "--end", "2024-01-05", "--out", str(partial)]) == 0
    assert "2 day(s) not stored: 2024-01-04, 2024-01-05" in capsys.readouterr().err
    assert_frame_equal(pl.read_parquet(partial), expected.slice(24))

    # Another source's namespace holds nothing.
    nothing = tmp_path / "none.csv"
    assert main(["export", "ohlcv", "--source", "ccxt", "--pair", "BTC/USD", *RANGE, "--out", str(nothing)]) == 2
    assert "nothing stored for BTC/USD from source 'ccxt'" in capsys.readouterr().err
    assert not nothing.exists()


def test_ingest_github_synthetic_and_export_github_activity(
    isolated_dirs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["ingest", "--source", "synthetic", "--repos", "ethereum/go-ethereum", *RANGE]) == 0
    assert "1 of 1 partitions materialized" in capsys.readouterr().out
    instance = dg.DagsterInstance.get()
    (run,) = instance.get_runs()
    assert (run.job_name, run.status) == ("github_ingest", dg.DagsterRunStatus.SUCCESS)
    assert instance.get_materialized_partitions(dg.AssetKey("github_activity")) == {f"{d}|{GETH}" for d in DAYS}

    expected = stored(isolated_dirs / "data", "synthetic", "github_activity", GETH, DAYS)
    assert expected.height == 72
    out = tmp_path / "geth.parquet"
    assert main(["export", "github-activity", "--repo", "ethereum/go-ethereum", *RANGE, "--out", str(out)]) == 0
    assert_frame_equal(pl.read_parquet(out), expected)
    csv_out = tmp_path / "geth.csv"
    args = ["export", "github-activity", "--source", "synthetic", "--repo", "ethereum/go-ethereum", *RANGE]
    assert main([*args, "--out", str(csv_out)]) == 0
    from cyber_pipelines.github.schema import ACTIVITY_SCHEMA

    assert_frame_equal(read_export(csv_out, ACTIVITY_SCHEMA), expected)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["ingest", "--source", "synthetic", "--pairs", "BTC/USD", "--start", "2023-12-31", "--end", "2024-01-02"],
            "2023-12-31 is before the first partition day 2024-01-01",
        ),
        (
            ["ingest", "--source", "synthetic", "--pairs", "BTC/USD", "--start", "2024-01-05", "--end", "2024-01-02"],
            "--end 2024-01-02 is before --start 2024-01-05",
        ),
        (["ingest", "--source", "binance", "--pairs", "BTC/USD", *RANGE], "--source must be one of"),
        (["ingest", "--source", "synthetic", *RANGE], "--pairs is required"),
        (["ingest", "--source", "ccxt", "--repos", "ethereum/go-ethereum", *RANGE], "--source must be one of"),
        (
            ["export", "ohlcv", "--source", "synthetic", "--pair", "BTC/USD", *RANGE, "--out", "btc.txt"],
            "--out must end in .csv or .parquet, got 'btc.txt'",
        ),
        (
            ["export", "github-activity", "--repo", "ethereum/go-ethereum", *RANGE, "--out", "g.json"],
            "--out must end in .csv or .parquet, got 'g.json'",
        ),
    ],
)
def test_bad_requests_exit_with_a_message_and_launch_nothing(
    argv: list[str], message: str, tmp_path: Path, isolated_dirs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert message in str(exc.value.code)
    assert_no_runs(isolated_dirs / "dagster_home")
    assert list(tmp_path.glob("*.*")) == []  # no output file


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["ingest", "--source", "synthetic", "--pairs", "BTCUSD", *RANGE], "not a trading pair: 'BTCUSD'"),
        (
            ["ingest", "--source", "synthetic", "--pairs", "BTC/USD", "--start", "2024-13-01", "--end", "2024-01-02"],
            "not a date (YYYY-MM-DD): '2024-13-01'",
        ),
        (["ingest", "--source", "synthetic", "--repos", "not a repo", *RANGE], "not a GitHub repository"),
        (["export", "ohlcv", "--source", "kraken", "--pair", "BTC/USD", *RANGE, "--out", "x.csv"], "invalid choice"),
    ],
)
def test_bad_arguments_are_usage_errors_naming_the_value(
    argv: list[str], message: str, isolated_dirs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert_no_runs(isolated_dirs / "dagster_home")


def test_backtest_cli_applies_stop_loss_and_probation_size(capsys: pytest.CaptureFixture[str]) -> None:
    import json as _json

    import backtesting

    goog = str(Path(backtesting.__file__).parent / "test" / "GOOG.csv")
    base = ["backtest", "--data", goog, "--strategy", "sma_cross", "--param", "fast=10", "--param", "slow=20", "--json"]
    assert main(base) == 0
    full = _json.loads(capsys.readouterr().out)
    assert main([*base, "--size", "0.5", "--stop-loss", "0.03"]) == 0
    half = _json.loads(capsys.readouterr().out)
    assert half["metrics"]["max_drawdown"] > full["metrics"]["max_drawdown"]  # smaller losses at half size
    assert half["final_equity"] < full["final_equity"]
    assert main([*base, "--size", "2"]) == 2
    assert "size_multiplier" in capsys.readouterr().err
