"""`cyber-pipelines`: one-line errors before any run, honest counts, clamping, runs with their code location.

The end-to-end tests launch real runs the way the UI does (a code server and a run subprocess), so each
costs seconds; they use one pair and one or two months. The rest checks what happens before any run.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from fakes.kraken import FakeKraken
from polars.testing import assert_frame_equal

from cyber_pipelines import cli
from cyber_pipelines.cli import main
from cyber_pipelines.orchestrate import RunSpec, parallel_runs, plan_github, plan_market, plan_moat, split_blocks
from cyber_pipelines.synthetic.market import simulate_ohlcv

RANGE = ["--start", "2024-01-01", "--end", "2024-01-03"]
TODAY = datetime.now(UTC).date()


@pytest.fixture(autouse=True)
def restored_environment() -> Iterator[None]:
    """The demo and `ui --home` point the environment at their home; put it back after each test."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def instance_at(home: Path) -> dg.DagsterInstance:
    return dg.DagsterInstance.from_config(str(home))


def assert_no_runs(home: Path) -> None:
    """Nothing was launched: the instance was not even created, or it holds no run and no pair."""
    if (home / "dagster.yaml").exists():
        instance = instance_at(home)
        assert instance.get_runs() == []
        assert instance.get_dynamic_partitions("pairs") == []


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert "Traceback" not in err
    return lines[0]


def write_config(path: Path, effect_size: str = "1.0") -> Path:
    path.write_text(
        "start_date: '2024-01-01'\n"
        "pairs: [BTC/USD, ETH/USD]\n"
        f"synthetic: {{seed: 7, effect_size: {effect_size}, lag_hours: 6}}\n"
        "repos: {ethereum/go-ethereum: [ETH]}\n"
    )
    return path


# --- before any run: config and requests --------------------------------------------------------
@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("start_date: '2024-01-01'\npairs: [BTC/USD\n", "not valid YAML at line"),
        ("start_date: '2024-01-01'\npairs: [SOLUSD]\n", "not a trading pair: 'SOLUSD'"),
        (
            "start_date: '2024-01-01'\npairs: [BTC/USD]\nsynthetic: {seed: -3}\n",
            "synthetic.seed must be an integer >= 0",
        ),
        ("- just\n- a list\n", "expected a mapping of settings"),
        (None, "pipeline config not found"),
    ],
)
@pytest.mark.parametrize("command", ["ingest", "demo"])
def test_config_errors_are_one_line_before_any_run(
    config: str | None,
    message: str,
    command: str,
    isolated_dirs: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = isolated_dirs / "pipeline.yaml"
    if config is not None:
        path.write_text(config)
    monkeypatch.setenv("CYBER_CONFIG", str(path))
    argv = {
        "ingest": ["ingest", "--source", "synthetic", "--pairs", "BTC/USD", *RANGE],
        "demo": ["demo", "--days", "3", "--home", str(isolated_dirs / "demo")],
    }[command]
    assert main(argv) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith("error: ") and message in line and str(path) in line
    assert_no_runs(isolated_dirs / "dagster_home")
    assert not (isolated_dirs / "demo").exists()
    assert main([*argv, "--verbose"]) == 2
    assert "Traceback (most recent call last)" in capsys.readouterr().err  # the trace only on request


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["ingest", "--source", "synthetic", "--pairs", "SOLUSD", *RANGE], 2, "not a trading pair: 'SOLUSD'"),
        (
            ["ingest", "--source", "synthetic", "--pairs", "BTC/USD", "--start", "2024-13-01", "--end", "2024-01-02"],
            2,
            "not a date (YYYY-MM-DD): '2024-13-01'",
        ),
        (["ingest", "--source", "synthetic", "--repos", "not a repo", *RANGE], 2, "not a GitHub repository"),
        (
            ["ingest", "--source", "synthetic", "--pairs", "BTC/USD", "--start", "2023-12-31", "--end", "2024-01-02"],
            2,
            "2023-12-31 is before the first partition day 2024-01-01",
        ),
        (
            ["ingest", "--source", "synthetic", "--pairs", "BTC/USD", "--start", "2024-01-05", "--end", "2024-01-02"],
            2,
            "--end 2024-01-02 is before --start 2024-01-05",
        ),
        (["ingest", "--source", "binance", "--pairs", "BTC/USD", *RANGE], 2, "--source must be one of"),
        (["ingest", "--source", "synthetic", *RANGE], 2, "--pairs is required"),
        (["ingest", "--source", "synthetic", "--pairs", "BTC/USD"], 2, "--start and --end are required"),
        (["ingest", "--source", "ccxt", "--repos", "ethereum/go-ethereum", *RANGE], 2, "--source must be one of"),
        (["ingest", "--source", "synthetic", "--repos", "a/b", *RANGE], 2, "a/b: not in the pipeline config's repos"),
        (["export", "ohlcv", "--pair", "BTC/USD", *RANGE, "--out", "btc.txt"], 2, "--out must end in .csv or .parquet"),
        (["export", "ohlcv", "--source", "kraken", "--pair", "BTC/USD", *RANGE, "--out", "x.csv"], 2, "invalid choice"),
        (["features", "--input", "missing.csv", "--output", "f.parquet"], 2, "missing.csv"),
        (["backtest", "--data", "missing.csv", "--strategy", "sma_cross"], 2, "missing.csv"),
        (["demo", "--days", "0"], 2, "expected a whole number >= 1"),
    ],
)
def test_bad_requests_are_one_line_and_launch_nothing(
    argv: list[str],
    code: int,
    message: str,
    tmp_path: Path,
    isolated_dirs: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse: usage errors
        rc = int(exc.code or 0)
    assert rc == code
    assert message in one_error_line(capsys.readouterr().err)
    assert_no_runs(isolated_dirs / "dagster_home")
    assert list(tmp_path.glob("*.*")) == []  # no output file


@pytest.mark.parametrize("flag", ["--start", "--end"])
def test_dates_in_the_future_are_refused(flag: str, isolated_dirs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    future = (TODAY + timedelta(days=3)).isoformat()
    dates = {"--start": future, "--end": future} if flag == "--start" else {"--start": "2024-01-01", "--end": future}
    argv = ["ingest", "--source", "synthetic", "--pairs", "BTC/USD", *(x for kv in dates.items() for x in kv)]
    assert main(argv) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"{flag} {future} is in the future (today is {TODAY} UTC)" in line
    assert_no_runs(isolated_dirs / "dagster_home")


def test_help_everywhere(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (
        [],
        ["ingest"],
        ["export"],
        ["export", "ohlcv"],
        ["export", "github-activity"],
        ["features"],
        ["backtest"],
        ["sweep"],
        ["demo"],
        ["ui"],
    ):
        with pytest.raises(SystemExit) as exc:
            main([*argv, "--help"])
        assert exc.value.code == 0
        assert "usage: cyber-pipelines" in capsys.readouterr().out


# --- plans: what the counts say -------------------------------------------------------------------
def test_plans_count_months_partitions_days_and_runs() -> None:
    jan, feb = date(2024, 1, 1), date(2024, 2, 1)
    pairs = ["BTC-USD", "ETH-USD", "SOL-USD"]
    market = plan_market(pairs, [jan, feb], "synthetic", pairs, date(2024, 6, 1))
    assert market.describe() == ("2 months x 3 pairs = 6 pair-month partitions in 1 run, days 2024-01-01..2024-02-29")
    (first,) = market.specs
    assert (str(first.first), str(first.last)) == ("2024-01-01|BTC-USD", "2024-02-01|SOL-USD")
    assert first.tags()["dagster/asset_partition_range_start"] == "2024-01-01|BTC-USD"
    apart = plan_market(["BTC-USD", "SOL-USD"], [jan], "synthetic", pairs, date(2024, 6, 1))
    assert len(apart.specs) == 2  # not neighbours in the partition list: a rectangle would take ETH too

    # The open month ends at the last complete day.
    assert plan_moat([feb], "synthetic", date(2024, 2, 10)).describe() == (
        "1 month = 1 moat-month partition in 1 run, days 2024-02-01..2024-02-10"
    )

    # Repos next to each other in the instance's partition list share a run (a rectangle of partitions).
    order = ["a__x", "b__y", "c__z", "d__w"]
    github = plan_github(["d__w", "a__x", "b__y"], [jan], "synthetic", order, date(2024, 6, 1))
    assert [(str(s.first), str(s.last)) for s in github.specs] == [
        ("2024-01-01|a__x", "2024-01-01|b__y"),
        ("2024-01-01|d__w", "2024-01-01|d__w"),
    ]
    assert github.describe().startswith("1 month x 3 repos = 3 repo-month partitions in 2 runs")


def test_plans_halve_the_largest_block_for_runs_that_go_at_once() -> None:
    jan, feb = date(2024, 1, 1), date(2024, 2, 1)
    pairs = ["BTC-USD", "ETH-USD", "SOL-USD", "DOT-USD", "ADA-USD"]
    market = plan_market(pairs, [jan, feb], "synthetic", pairs, date(2024, 6, 1), runs=2)
    assert [(str(s.first), str(s.last)) for s in market.specs] == [
        ("2024-01-01|BTC-USD", "2024-02-01|SOL-USD"),
        ("2024-01-01|DOT-USD", "2024-02-01|ADA-USD"),
    ]
    assert sum(s.partitions for s in market.specs) == market.partitions == 10
    assert split_blocks([["a", "b", "c", "d"], ["e"]], 4) == [["a"], ["b"], ["c", "d"], ["e"]]
    assert split_blocks([["a"], ["b"]], 4) == [["a"], ["b"]]  # a block of one key is not split


def test_parallel_runs_follow_the_instance_and_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    with dg.instance_for_test(overrides={"concurrency": {"runs": {"max_concurrent_runs": 3}}}) as instance:
        monkeypatch.setattr(os, "cpu_count", lambda: 2)
        assert parallel_runs(instance) == 2
        monkeypatch.setattr(os, "cpu_count", lambda: 8)
        assert parallel_runs(instance) == 3


def test_one_partition_runs_carry_the_partition_tags_the_ui_sets() -> None:
    key = dg.MultiPartitionKey({"month": "2024-01-01", "pair": "BTC-USD"})
    tags = RunSpec("market_ingest", "BTC-USD 2024-01", key, key).tags()
    assert tags["dagster/partition"] == "2024-01-01|BTC-USD"
    assert (tags["dagster/partition/month"], tags["dagster/partition/pair"]) == ("2024-01-01", "BTC-USD")
    assert "dagster/asset_partition_range_start" not in tags


# --- export: the source that stored the data, and where it looked ----------------------------------
def store_month(data: Path, source: str, pair_key: str, month: date, days: int) -> pl.DataFrame:
    candles = simulate_ohlcv(
        pair_key.replace("-", "/"),
        month,
        month + timedelta(days=days - 1),
        seed=7,
        effect_size=1.0,
        lag_hours=6,
        origin=date(2024, 1, 1),
    )
    folder = data / source / "ohlcv" / pair_key
    folder.mkdir(parents=True, exist_ok=True)
    candles.write_parquet(folder / f"{month:%Y-%m}.parquet")
    return candles


def test_export_reads_the_source_that_stored_the_pair_and_says_where_it_looked(
    isolated_dirs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = isolated_dirs / "data"
    out = tmp_path / "out" / "btc.csv"
    base = ["export", "ohlcv", "--pair", "BTC/USD", "--start", "2024-01-30", "--end", "2024-02-02", "--out", str(out)]

    assert main(base) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "nothing stored for BTC/USD under" in line
    for source in ("synthetic", "ccxt", "landing"):
        assert str(data / source / "ohlcv" / "BTC-USD") in line

    jan = store_month(data, "landing", "BTC-USD", date(2024, 1, 1), 31)
    feb = store_month(data, "landing", "BTC-USD", date(2024, 2, 1), 1)  # only Feb 1 stored
    assert main([*base, "--json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert (report["ok"], report["source"], report["rows"]) == (True, "landing", 24 * 3)
    assert report["days_missing"] == ["2024-02-02"]
    assert report["read_from"] == str(data / "landing" / "ohlcv" / "BTC-USD")
    assert "source: landing (the only source holding BTC/USD" in captured.err
    assert "1 day(s) not stored" in captured.err
    exported = pl.read_csv(out, try_parse_dates=True)
    assert exported.height == 72
    expected = pl.concat([jan, feb]).filter(pl.col("timestamp").dt.date() >= date(2024, 1, 30))
    assert_frame_equal(exported.select("close"), expected.select("close"))

    # Asked for another source: nothing there, and it says who does hold the pair.
    assert main([*base, "--source", "ccxt"]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert f"nothing stored for BTC/USD from source 'ccxt': looked in {data / 'ccxt' / 'ohlcv' / 'BTC-USD'}" in line
    assert "stored by: landing" in line

    # A range outside what is stored names the months that are.
    far = ["--start", "2024-03-01", "--end", "2024-03-02"]
    assert main([*base[:4], *far, "--out", str(out), "--source", "landing"]) == 1
    assert "(months stored: 2024-01..2024-02)" in one_error_line(capsys.readouterr().err)

    # Two sources hold it: it asks which.
    store_month(data, "synthetic", "BTC-USD", date(2024, 1, 1), 31)
    assert main(base) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "BTC/USD is stored by 2 sources: synthetic" in line and "choose one with --source" in line
    assert main([*base, "--source", "synthetic"]) == 0
    assert "wrote 48 rows of BTC/USD (synthetic)" in capsys.readouterr().out


def test_export_github_activity_finds_its_source(
    isolated_dirs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cyber_pipelines.github.activity import build_activity
    from cyber_pipelines.synthetic.activity import simulate_commits, simulate_repo_snapshot

    day = date(2024, 1, 2)
    commits = simulate_commits("ethereum/go-ethereum", ["ETH"], day, seed=7, origin=date(2024, 1, 1), lag_hours=6)
    issues, stars = simulate_repo_snapshot("ethereum/go-ethereum", day, seed=7, origin=date(2024, 1, 1))
    activity = build_activity("ethereum/go-ethereum", day, commits, issues, stars)
    folder = isolated_dirs / "data" / "github" / "github_activity" / "ethereum__go-ethereum"
    folder.mkdir(parents=True)
    activity.write_parquet(folder / "2024-01.parquet")
    out = tmp_path / "geth.parquet"
    argv = ["export", "github-activity", "--repo", "ethereum/go-ethereum", *RANGE, "--out", str(out)]
    assert main(argv) == 0
    assert f"wrote {activity.height} rows of ethereum/go-ethereum (github)" in capsys.readouterr().out
    assert_frame_equal(pl.read_parquet(out), activity)
    assert main([*argv, "--source", "synthetic"]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "looked in" in line and "synthetic/github_activity/ethereum__go-ethereum" in line
    assert "stored by: github" in line


def test_export_never_writes_into_the_storage_root(isolated_dirs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = isolated_dirs / "data" / "synthetic" / "ohlcv" / "BTC-USD" / "2024-01.parquet"
    assert main(["export", "ohlcv", "--pair", "BTC/USD", *RANGE, "--out", str(target)]) == 2
    assert "is inside the storage root" in one_error_line(capsys.readouterr().err)


# --- ui -----------------------------------------------------------------------------------------------
@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        yield held.getsockname()[1]


def test_ui_on_a_taken_port_says_so_and_starts_nothing(
    taken_port: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_exec(*args: object) -> None:
        raise AssertionError("dagster dev must not start")

    monkeypatch.setattr(cli.os, "execv", no_exec)
    assert main(["ui", "--port", str(taken_port)]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert f"port {taken_port} on 127.0.0.1 is taken" in line and "nothing was started" in line
    assert f"PORT={taken_port + 1}" in line


def test_ui_serves_a_home_only_if_the_demo_made_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    started: list[list[str]] = []
    monkeypatch.setattr(cli.os, "execv", lambda path, argv: started.append(argv))
    monkeypatch.setattr(cli.os, "chdir", lambda path: None)
    assert main(["ui", "--home", str(tmp_path / "nothing"), "--port", "0"]) == 2
    assert "is not a home made by `cyber-pipelines demo`" in one_error_line(capsys.readouterr().err)

    from cyber_pipelines.instance import fresh_home

    home = fresh_home(tmp_path / "demo")
    (home / "pipeline.yaml").write_text("start_date: '2024-01-01'\npairs: [BTC/USD]\n")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    main(["ui", "--home", str(home), "--port", str(port)])
    (argv,) = started
    assert argv[1:3] == ["dev", "-w"] and argv[-2:] == ["-p", str(port)]
    assert os.environ["DAGSTER_HOME"] == str(home / "dagster_home")
    assert os.environ["CYBER_DATA_DIR"] == str(home / "data")
    assert os.environ["CYBER_CONFIG"] == str(home / "pipeline.yaml")


def test_a_home_is_wiped_only_if_it_is_one(tmp_path: Path) -> None:
    from cyber_pipelines.instance import fresh_home

    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="is not a cyber-pipelines home"):
        fresh_home(precious)
    assert (precious / "notes.txt").exists()
    home = fresh_home(tmp_path / "home")
    (home / "old").write_text("stale")
    assert list(fresh_home(home).iterdir()) == [home / ".cyber-pipelines-home"]


# --- ccxt: pairs checked against the exchange, ranges clamped to its clock -------------------------
@pytest.fixture
def kraken(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeKraken]:
    with FakeKraken() as fake:  # clock frozen at 2024-06-01 12:30 UTC
        monkeypatch.setenv("CYBER_EXCHANGE_URL", fake.url)
        yield fake


def test_an_unknown_exchange_pair_is_refused_before_it_becomes_a_partition(
    kraken: FakeKraken, isolated_dirs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["ingest", "--source", "ccxt", "--pairs", "BTC/USD,FOO/BAR", "--start", "2024-05-01", "--end", "2024-05-31"]
    assert main(argv) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "kraken does not list FOO/BAR among its 3 spot markets; nothing was added or run" in line
    assert_no_runs(isolated_dirs / "dagster_home")
    assert kraken.ohlc_requests == []


def test_ccxt_range_past_the_exchange_clock_is_clamped_and_the_run_shows_like_a_ui_run(
    kraken: FakeKraken, isolated_dirs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["ingest", "--source", "ccxt", "--pairs", "btc-usd", "--start", "2024-05-20", "--end", "2024-06-01"]
    assert main([*argv, "--json"]) == 0
    captured = capsys.readouterr()
    assert "warning: --end 2024-06-01 is past the last complete day on kraken's clock 2024-05-31" in captured.err
    assert "clamped to 2024-05-20..2024-05-31" in captured.err
    assert "run 1/1 BTC-USD 2024-05" in captured.err  # progress on stderr
    report = json.loads(captured.out)  # one JSON document on stdout
    assert report["ok"] and report["plans"][0]["months"] == ["2024-05"]
    assert (report["plans"][0]["first_day"], report["plans"][0]["last_day"]) == ("2024-05-01", "2024-05-31")
    assert (report["partitions_materialized"], report["rows"]) == (1, 31 * 24)
    assert any("clamped" in w for w in report["warnings"])

    instance = instance_at(isolated_dirs / "dagster_home")
    (run,) = instance.get_runs()
    assert (run.job_name, run.status) == ("market_ingest", dg.DagsterRunStatus.SUCCESS)
    assert run.tags["dagster/partition"] == "2024-05-01|BTC-USD"  # one partition: shown in the run lists
    # Created from the code location that workspace.yaml loads, as the UI creates runs.
    assert run.remote_job_origin is not None
    assert run.remote_job_origin.location_name == "cyber_pipelines.definitions"
    assert instance.get_materialized_partitions(dg.AssetKey("ohlcv_candles")) == {"2024-05-01|BTC-USD"}


# --- synthetic end to end: counts, failures in one line, --verbose ---------------------------------
def test_ingest_counts_what_happened_and_export_writes_the_stored_rows(
    isolated_dirs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["ingest", "--source", "synthetic", "--pairs", "BTC/USD", "--start", "2024-01-15", "--end", "2024-02-10"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert (
        "market (synthetic): 2 months x 1 pair = 2 pair-month partitions in 1 run, days 2024-01-01..2024-02-29" in out
    )
    assert f"2 partition(s), {24 * 60} rows materialized in 1 run(s) (0 failed)" in out

    instance = instance_at(isolated_dirs / "dagster_home")
    (run,) = instance.get_runs()
    assert run.tags["dagster/asset_partition_range_start"] == "2024-01-01|BTC-USD"
    assert run.tags["dagster/asset_partition_range_end"] == "2024-02-01|BTC-USD"
    assert run.remote_job_origin is not None
    assert instance.get_materialized_partitions(dg.AssetKey("ohlcv_candles")) == {
        "2024-01-01|BTC-USD",
        "2024-02-01|BTC-USD",
    }
    export = tmp_path / "btc.parquet"
    assert main(["export", "ohlcv", "--pair", "BTC/USD", *RANGE, "--out", str(export)]) == 0
    stored = pl.read_parquet(isolated_dirs / "data" / "synthetic" / "ohlcv" / "BTC-USD" / "2024-01.parquet")
    assert_frame_equal(pl.read_parquet(export), stored.head(72))


def test_a_failed_run_is_one_line_with_its_root_cause_and_the_trace_only_with_verbose(
    isolated_dirs: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A valid config whose planted effect is so large that prices overflow: the OHLCV gate blocks every day.
    monkeypatch.setenv("CYBER_CONFIG", str(write_config(isolated_dirs / "p.yaml", effect_size="1000000.0")))
    argv = ["ingest", "--source", "synthetic", "--pairs", "BTC/USD", "--start", "2024-01-01", "--end", "2024-01-02"]
    assert main(argv) == 1
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1
    assert "BTC/USD 2024-01-02: ohlcv_price_integrity (close > 0 and finite: 7 row(s)" in errors[0]
    assert "Stack Trace" not in captured.err and "Traceback" not in captured.err
    assert "FAIL BTC-USD 2024-01" in captured.out

    assert main([*argv, "--verbose"]) == 1
    assert "Stack Trace" in capsys.readouterr().err


# --- the demo ---------------------------------------------------------------------------------------
def test_demo_uses_exactly_its_pairs_and_days_in_its_own_home(
    isolated_dirs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = isolated_dirs / "demo"
    (home).mkdir()
    (home / ".cyber-pipelines-home").write_text("")
    (home / "stale.txt").write_text("from an earlier demo")
    argv = ["demo", "--days", "12", "--pairs", "ETH/USD", "--home", str(home), "--json"]
    assert main([*argv, "--train-days", "7", "--test-days", "3", "--seed", "3", "--sign", "-1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["pairs"] == ["ETH/USD"] and report["days"] == 12
    layers = ["market", "github", "moat", "features", "encoder", "memory", "analogs", "backtests", "comparison"]
    layers.append("ledger")
    assert [layer["layer"] for layer in report["layers"]] == layers
    assert report["vsm"]["recorded"]["run_success"] == len(instance_at(home / "dagster_home").get_runs())
    assert report["vsm"]["trips"] == []  # a healthy demo trips no breaker
    last = TODAY - timedelta(days=1)
    assert (report["first_day"], report["last_day"]) == ((last - timedelta(days=11)).isoformat(), last.isoformat())

    assert not (home / "stale.txt").exists()
    assert not (isolated_dirs / "dagster_home").exists() and not (isolated_dirs / "data").exists()
    instance = instance_at(home / "dagster_home")
    assert instance.get_dynamic_partitions("pairs") == ["ETH-USD"]
    assert {r.job_name for r in instance.get_runs()} >= {
        "market_ingest",
        "features",
        "train_pattern_encoder",
        "pattern_memory",
        "forecast_analogs",
        "compare_strategies",
        "update_ledger",
    }
    stored = pl.read_parquet(list((home / "data" / "synthetic" / "ohlcv" / "ETH-USD").glob("*.parquet")))
    assert stored.height == 12 * 24  # exactly the demo's days
    assert set(report["leadlag"]) == {"ETH-USD"}
    # the planted settings of the command line, in the demo's own config
    assert report["synthetic"]["seed"] == 3 and report["synthetic"]["effect_sign"] == -1
    assert "effect_sign: -1" in (home / "pipeline.yaml").read_text()
    # the answer: per strategy its fitted parameters per window, OOS figures, raw and adjusted p, a verdict
    comparison = report["comparison"]
    assert comparison["pairs"] == ["ETH-USD"] and len(comparison["verdicts"]) == 5  # analog_knn the fifth
    assert "analog_knn" in comparison["strategies"]
    for name, strategy in comparison["strategies"].items():
        windows = comparison["by_pair"]["ETH-USD"][name]["windows"]
        assert windows and all("params" in w for w in windows)
        assert {"total_return", "gross_return", "cost_drag", "turnover_per_year"} <= set(strategy["oos"])
        refs = {t["reference"] for t in strategy["tests"]}
        assert {"cash", "buy_and_hold", "random_entry"} <= refs
        assert all(t["p_adjusted"] >= t["p_value"] for t in strategy["tests"])
        assert strategy["verdict"].startswith(("significant", "not significant"))


def test_demo_refuses_a_history_too_short_for_walk_forward(
    isolated_dirs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", "--days", "30", "--home", str(isolated_dirs / "demo")]) == 2
    err = capsys.readouterr().err
    assert "--days 30 is too short for walk-forward" in err and "= 120 days" in err
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--sign", "2"])
    assert exc.value.code == 2 and "expected +1 or -1" in capsys.readouterr().err


def test_demo_stops_at_the_first_failed_layer_and_shows_no_results(
    isolated_dirs: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CYBER_CONFIG", str(write_config(isolated_dirs / "p.yaml", effect_size="1000000.0")))
    argv = ["demo", "--days", "3", "--pairs", "BTC/USD", "--home", str(isolated_dirs / "demo")]
    assert main([*argv, "--train-days", "2", "--test-days", "1"]) == 1
    captured = capsys.readouterr()
    assert "market     FAILED (1 of 1 runs)" in captured.out
    assert "lead-lag" not in captured.out and "strategy comparison" not in captured.out
    assert (
        "demo stopped at the market layer; not run: github, moat, features, encoder, memory, analogs, backtests, "
        "comparison" in captured.err
    )
    errors = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "BTC/USD" in errors[0]
    runs = instance_at(isolated_dirs / "demo" / "dagster_home").get_runs()
    assert [r.job_name for r in runs] == ["market_ingest"]


# --- landing: the CLI takes in the folder as the intake run does, then ingests ---------------------
def test_ingest_from_landing_takes_in_the_folder_quarantines_bad_files_and_materializes(
    isolated_dirs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    landing = isolated_dirs / "landing"
    landing.mkdir()
    candles = simulate_ohlcv(
        "SOL/USD", date(2024, 3, 1), date(2024, 3, 2), seed=3, effect_size=1.0, lag_hours=6, origin=date(2024, 1, 1)
    )
    candles.with_columns(pl.col("timestamp").dt.epoch("s")).write_csv(landing / "SOL-USD.csv")
    (landing / "prices.csv").write_text("timestamp,open,high,low,close,volume\n1709251200,1,1,1,1,1\n")

    assert main(["ingest", "--source", "landing", "--min-age", "0"]) == 1  # a file was rejected
    captured = capsys.readouterr()
    assert "accepted SOL-USD.csv: SOL/USD, 2 day(s)" in captured.err
    assert "warning: quarantined prices.csv:" in captured.err
    assert "error: landing file not ingested: prices.csv:" in captured.err
    assert "market (landing): 1 month x 1 pair = 1 pair-month partition in 1 run" in captured.out
    assert "1 partition(s)" in captured.out
    assert "48 rows materialized in 1 run(s) (0 failed, 1 landing file(s) not ingested)" in captured.out
    assert (landing / "quarantine" / "prices.csv").exists()
    assert list((landing / "pending").glob("*.json")) == []  # the sensor will not ingest it again

    instance = instance_at(isolated_dirs / "dagster_home")
    assert instance.get_materialized_partitions(dg.AssetKey("ohlcv_candles")) == {"2024-03-01|SOL-USD"}
    stored = pl.read_parquet(isolated_dirs / "data" / "landing" / "ohlcv" / "SOL-USD" / "2024-03.parquet")
    assert_frame_equal(stored, candles, check_dtypes=False)

    assert main(["ingest", "--source", "landing", "--min-age", "0"]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert f"nothing to ingest: no new landing file in {landing}" in line


# --- features and backtest on a CSV ------------------------------------------------------------------
def us_dated_csv(path: Path, n: int = 60) -> Path:
    rows = ["Date,Open,High,Low,Close,Volume"]
    for i in range(n):
        day = date(2024, 1, 1) + timedelta(days=i)
        price = 100 + i + (i % 7)
        rows.append(f"{day:%m/%d/%Y},{price},{price + 2},{price - 2},{price + 1},{1000 + i}")
    path.write_text("\n".join(rows) + "\n")
    return path


def test_features_and_backtest_need_and_take_date_format_and_never_overwrite_the_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prices = us_dated_csv(tmp_path / "prices.csv")
    before = prices.read_bytes()
    out = tmp_path / "features.parquet"
    assert main(["features", "--input", str(prices), "--output", str(out)]) == 2
    assert "--date-format" in one_error_line(capsys.readouterr().err)
    assert not out.exists()

    assert main(["features", "--input", str(prices), "--output", str(out), "--date-format", "%m/%d/%Y", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["ok"], report["rows"]) == (True, 60)
    assert report["first_timestamp"].startswith("2024-01-01") and report["last_timestamp"].startswith("2024-02-29")

    assert main(["features", "--input", str(prices), "--output", str(prices), "--date-format", "%m/%d/%Y"]) == 2
    assert "input" in one_error_line(capsys.readouterr().err)
    assert prices.read_bytes() == before

    argv = ["backtest", "--data", str(prices), "--strategy", "sma_cross", "--param", "fast=5", "--param", "slow=10"]
    assert main(argv) == 2
    assert "--date-format" in one_error_line(capsys.readouterr().err)
    assert main([*argv, "--date-format", "%m/%d/%Y", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True
    assert main([*argv, "--json"]) == 2  # a failure with --json is still one JSON document on stdout
    failed = json.loads(capsys.readouterr().out)
    assert failed["ok"] is False and "--date-format" in failed["error"]


def test_backtest_applies_stop_loss_and_probation_size(capsys: pytest.CaptureFixture[str]) -> None:
    import backtesting

    goog = str(Path(backtesting.__file__).parent / "test" / "GOOG.csv")
    base = ["backtest", "--data", goog, "--strategy", "sma_cross", "--param", "fast=10", "--param", "slow=20", "--json"]
    assert main(base) == 0
    full = json.loads(capsys.readouterr().out)
    assert full["calendar"] == "equities" and full["bars_per_year"] == 252  # weekday-only daily bars
    assert full["metrics"]["cagr"] is not None and full["annualized_note"] is None  # 8.5 years
    assert main([*base, "--size", "0.5", "--stop-loss", "0.03"]) == 0
    half = json.loads(capsys.readouterr().out)
    assert half["metrics"]["max_drawdown"] > full["metrics"]["max_drawdown"]  # smaller losses at half size
    assert half["final_equity"] < full["final_equity"]
    assert main([*base, "--size", "2"]) == 2  # a bad request
    assert "size_multiplier" in one_error_line(capsys.readouterr().err)


def test_backtest_fits_a_tuned_strategy_walk_forward(capsys: pytest.CaptureFixture[str]) -> None:
    import backtesting

    goog = str(Path(backtesting.__file__).parent / "test" / "GOOG.csv")
    base = ["backtest", "--data", goog, "--strategy", "sma_grid", "--json"]
    assert main([*base, "--train-bars", "500", "--test-bars", "250"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["fitted"] == "walk-forward, out of sample" and out["bars"] == 2148 - 500
    assert len(out["windows"]) == 7 and all(w["params"]["fast"] < w["params"]["slow"] for w in out["windows"])
    assert out["in_sample_metrics"]["sharpe"] is not None
    assert main([*base]) == 0  # unfitted: run as constructed, and said so
    assert json.loads(capsys.readouterr().out)["fitted"].startswith("no")
    assert main([*base, "--train-bars", "500"]) == 2
    assert "both train_bars and test_bars" in one_error_line(capsys.readouterr().err)


def test_backtest_annualizes_by_the_calendar_and_flags_fill_close(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import numpy as np

    n = 2000
    rng = np.random.default_rng(0)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    start = datetime(2024, 1, 1, tzinfo=UTC)
    frame = pl.DataFrame(
        {
            "timestamp": [start + timedelta(hours=i) for i in range(n)],
            "open": close,
            "high": close * 1.01,
            "low": close * 0.99,
            "close": close,
            "volume": np.ones(n),
        }
    )
    keep = np.sort(np.concatenate([[0], rng.choice(np.arange(1, n), int(0.9 * n) - 1, replace=False)]))
    data = tmp_path / "hourly.csv"
    frame[keep.tolist()].write_csv(data)  # 10% of the hours missing
    base = ["backtest", "--data", str(data), "--strategy", "sma_cross", "--param", "fast=5", "--param", "slow=20"]
    assert main([*base, "--json"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert out["calendar"] == "24/7" and out["bars_per_year"] == pytest.approx(8766)
    assert out["fill_note"] is None and out["optimistic_fill"] is False and "optimistic" not in captured.err
    # 83 days: no CAGR or Calmar (JSON null), and the reason
    assert out["metrics"]["cagr"] is None and out["metrics"]["calmar"] is None
    assert out["annualized_note"] == "sample of 83 days < 1 year"

    assert main([*base, "--json", "--fill", "close"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert out["optimistic_fill"] is True and "optimistic" in out["fill_note"]
    assert "warning: fill=close is optimistic" in captured.err

    assert main([*base, "--json", "--calendar", "equities"]) == 0
    assert json.loads(capsys.readouterr().out)["bars_per_year"] == pytest.approx(252 * 6.5)
    assert main([*base, "--json", "--bars-per-year", "1000"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["bars_per_year"] == 1000 and out["calendar"] == "config"
    with pytest.raises(SystemExit):
        main([*base, "--calendar", "24/7", "--bars-per-year", "1000"])  # one or the other
    capsys.readouterr()


# --- sweep: the best of an SMA grid after data snooping ----------------------------------------------
def goog_csv() -> str:
    import backtesting

    return str(Path(backtesting.__file__).parent / "test" / "GOOG.csv")


def test_sweep_names_the_best_pair_and_tests_it_with_spa(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["sweep", "--help"])
    assert exc.value.code == 0 and "START:STOP[:STEP]" in capsys.readouterr().out
    base = ["sweep", "--data", goog_csv(), "--fast", "5:20:5", "--slow", "20,40,60", "--reps", "200"]
    assert main([*base, "--benchmark", "buy_and_hold", "--json"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert (out["ok"], out["command"], out["benchmark"], out["rule"]) == (True, "sweep", "buy_and_hold", "cross")
    assert out["fast"] == [5, 10, 15, 20] and out["slow"] == [20, 40, 60] and out["n_members"] == 11
    assert out["best_fast"] < out["best_slow"] and out["best_slow"] in (20, 40, 60)
    assert out["best_sharpe"] == out["best_metrics"]["sharpe"] and out["benchmark_sharpe"] is not None
    assert 0 <= out["spa_lower"] <= out["spa_consistent"] <= out["spa_upper"] <= 1 and 0 < out["naive_p"] <= 1
    assert out["verdict"].startswith("the best of 11 pairs") and "buy_and_hold after data snooping" in out["verdict"]
    assert out["calendar"] == "equities" and out["bars"] == out["candles"] - 1 == 2147
    assert "sweeping 11 pairs" in captured.err  # progress on stderr, results on stdout

    assert main(base) == 0  # the text report: best pair, metrics, SPA p-values beside the naive p, a verdict
    text = capsys.readouterr().out
    assert text.startswith("best of 11 pairs (cross): sma(")
    assert "SPA vs cash: lower p" in text and "consistent p" in text and "naive" in text
    assert text.strip().splitlines()[-1].startswith("verdict: the best of 11 pairs")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--fast", "5:x", "--slow", "10:20"], "expected START:STOP[:STEP]"),
        (["--fast", "20:5", "--slow", "10:20"], "got '20:5'"),
        (["--fast", "5", "--slow", "0:10:2"], "windows >= 1"),
        (["--fast", "5:10:0", "--slow", "20"], "got '5:10:0'"),
        (["--fast", "30", "--slow", "10:20"], "no fast < slow"),
        (["--fast", "5", "--slow", "5000"], "too few for an SMA of 5000 bars"),
        (["--fast", "5", "--slow", "20", "--benchmark", "rule_of_three"], "invalid choice"),
    ],
)
def test_sweep_refuses_bad_ranges_in_one_line(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        rc = main(["sweep", "--data", goog_csv(), *args])
    except SystemExit as exc:  # argparse: usage errors
        rc = int(exc.code or 0)
    assert rc == 2
    line = one_error_line(capsys.readouterr().err)
    assert message in line
    if "too few" in message:
        assert "GOOG.csv" in line  # names the file


def test_sweep_names_a_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.csv"
    assert main(["sweep", "--data", str(missing), "--fast", "5", "--slow", "20", "--json"]) == 2
    captured = capsys.readouterr()
    assert str(missing) in one_error_line(captured.err)
    failed = json.loads(captured.out)
    assert failed["ok"] is False and failed["command"] == "sweep" and "missing.csv" in failed["error"]
