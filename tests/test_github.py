"""GitHub activity: arithmetic by hand, repo keys, and the PyGithub client against a fake GitHub API."""

from __future__ import annotations

import logging
import math
import time
import traceback
from collections import Counter
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import github
import polars as pl
import pytest
from fakes.github import FakeCommit, FakeGitHub, FakeRepo

from cyber_pipelines.config import load_repo_map, load_settings
from cyber_pipelines.github.activity import build_activity, key_to_repo, repo_to_key
from cyber_pipelines.github.client import (
    SETTLE_DAYS,
    ActivityCache,
    GitHubSettings,
    GitHubTransientError,
    RepoNotFoundError,
    fetch_day_activity,
    fetch_day_report,
    fetch_many,
    make_github,
)
from cyber_pipelines.github.schema import ACTIVITY_SCHEMA

CANARY = "ghp_CANARY0123456789abcdefCANARY"
DAY = (datetime.now(UTC) - timedelta(days=10)).date()  # settled (cacheable), and inside the stats' 52 weeks
START = datetime.combine(DAY, datetime.min.time(), tzinfo=UTC)


@pytest.fixture(autouse=True)
def fast_github(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(github.Consts, "PROCESSING_202_WAIT_TIME", 0.01)
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    monkeypatch.delenv("CYBER_GITHUB_URL", raising=False)


def settings(api: FakeGitHub, **overrides: object) -> GitHubSettings:
    values: dict[str, object] = {
        "token": CANARY,
        "base_url": api.base_url,
        "retries": 3,
        "backoff_factor": 0.01,
        "max_rate_limit_wait": 10.0,
        "seconds_between_requests": 0.0,
        **overrides,
    }
    return GitHubSettings(**values)  # type: ignore[arg-type]


def busy_repo() -> FakeRepo:
    """230 commits on DAY (3 pages of 100) by 5 logins plus 2 account-less e-mails, and 2 outside it."""
    commits = [
        FakeCommit(START + timedelta(minutes=6 * i), login=f"dev{i % 5}" if i % 10 else None, email=f"m{i % 20}@x")
        for i in range(230)
    ]
    commits += [
        FakeCommit(START - timedelta(seconds=1), login="early"),
        FakeCommit(START + timedelta(days=1)),
    ]
    return FakeRepo("ethereum/go-ethereum", commits, open_issues=9, stars=47_000)


# --- build_activity: arithmetic checked by hand -----------------------------------------------------
def test_build_activity_by_hand() -> None:
    at = lambda h, m: datetime(2024, 3, 5, h, m, tzinfo=UTC)  # noqa: E731
    plus2 = timezone(timedelta(hours=2))
    commits = [
        (at(3, 5), "alice"),
        (at(3, 50), "bob"),
        (datetime(2024, 3, 5, 5, 30, tzinfo=plus2), "alice"),  # 03:30 UTC
        (at(7, 0), "alice"),
        (at(23, 59), "carol"),
    ]
    df = build_activity("ethereum/go-ethereum", date(2024, 3, 5), commits, open_issues=4, stars=10)
    assert df.schema == pl.Schema(ACTIVITY_SCHEMA)
    assert df.height == 24
    assert df["timestamp"][0] == datetime(2024, 3, 5, tzinfo=UTC)
    assert df["timestamp"][23] == datetime(2024, 3, 5, 23, tzinfo=UTC)
    by_hour = dict(zip(df["timestamp"].dt.hour(), zip(df["commits"], df["authors"], strict=True), strict=True))
    assert by_hour[3] == (3, 2) and by_hour[7] == (1, 1) and by_hour[23] == (1, 1)
    assert sum(c for c, _ in by_hour.values()) == 5 and by_hour[0] == (0, 0)
    # 3 contributors, 5 commits, 4 open issues: 3 * ln(6) / 2 and 5 / 3
    assert df["contributors"].unique().to_list() == [3]
    assert df["dependency_entropy"].to_list() == pytest.approx([3 * math.log(6) / 2] * 24)
    assert df["novelty"].to_list() == pytest.approx([5 / 3] * 24)
    assert set(df["repo"]) == {"ethereum/go-ethereum"} and set(df["stars"]) == {10}


def test_build_activity_zero_commits_and_zero_open_issues() -> None:
    empty = build_activity("a/b", date(2024, 3, 5), [], open_issues=0, stars=0)
    assert empty.height == 24 and empty["commits"].sum() == 0 and empty["authors"].sum() == 0
    assert set(empty["dependency_entropy"]) == {0.0} and set(empty["novelty"]) == {0.0}
    one = build_activity("a/b", date(2024, 3, 5), [(datetime(2024, 3, 5, 9, tzinfo=UTC), "x")], 0, 1)
    # zero open issues divide by 1: 1 * ln(2) / 1
    assert one["dependency_entropy"].to_list() == pytest.approx([math.log(2)] * 24)
    assert set(one["novelty"]) == {1.0}


@pytest.mark.parametrize(
    ("commits", "reason"),
    [
        ([(datetime(2024, 3, 6, 0, 0, tzinfo=UTC), "a")], "outside 2024-03-05"),
        ([(datetime(2024, 3, 4, 23, 59, tzinfo=UTC), "a")], "outside 2024-03-05"),
        ([(datetime(2024, 3, 5, 1), "a")], "timezone-aware"),
        ([(datetime(2024, 3, 5, 1, tzinfo=UTC), "")], "non-empty author"),
    ],
)
def test_build_activity_rejects_bad_commits(commits: list[tuple[datetime, str]], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        build_activity("a/b", date(2024, 3, 5), commits, 1, 1)


def test_build_activity_rejects_negative_counts_and_bad_repo() -> None:
    with pytest.raises(ValueError, match="open_issues and stars"):
        build_activity("a/b", date(2024, 3, 5), [], -1, 0)
    with pytest.raises(ValueError, match="not a GitHub repository"):
        build_activity("a_b/c", date(2024, 3, 5), [], 0, 0)


# --- repo keys and the repo map -----------------------------------------------------------------------
def test_repo_keys_round_trip_and_are_safe() -> None:
    repos = [*load_repo_map(), "o/a__b", "x/.github", "a-b/c.d_e-f"]
    for repo in repos:
        key = repo_to_key(repo)
        assert key_to_repo(key) == repo
        assert not any(bad in key for bad in ("|", ",", "[", "]", "/", "..."))
    assert repo_to_key("ethereum/go-ethereum") == "ethereum__go-ethereum"
    assert key_to_repo("o__a__b") == "o/a__b"


@pytest.mark.parametrize(
    "repo",
    [
        "owner",
        "a_b/c",
        "-ab/c",
        "ab-/c",
        "a--b/c",
        "a/b/c",
        "o/na|me",
        "o/a...b",
        "o/..",
        "o/",
        "x" * 40 + "/y",
    ],
)
def test_repo_to_key_rejects_invalid_names(repo: str) -> None:
    with pytest.raises(ValueError, match="not a GitHub repository"):
        repo_to_key(repo)


@pytest.mark.parametrize("key", ["ethereum-go-ethereum", "a_b__c", "o__a|b", "__x", "o__"])
def test_key_to_repo_rejects_invalid_keys(key: str) -> None:
    with pytest.raises(ValueError, match="not a repository partition key"):
        key_to_repo(key)


def test_load_repo_map_default_and_bad_config(tmp_path: Path) -> None:
    repos = load_repo_map()
    assert repos["Uniswap/v3-core"] == ["ETH", "UNI"] and repos["solana-labs/solana"] == ["SOL"]
    assert len(repos) == 10
    base = "start_date: '2024-01-01'\npairs: [BTC/USD]\n"
    cases = {
        "bad_name.yaml": ("repos:\n  not_a/repo: [ETH]\n", "not a GitHub repository"),
        "no_symbols.yaml": ("repos:\n  a/b: []\n", "non-empty list"),
        "bad_symbol.yaml": ("repos:\n  a/b: [E|H]\n", "invalid asset symbols"),
        "case_dupe.yaml": ("repos:\n  a/b: [ETH]\n  A/B: [ETH]\n", "GitHub ignores case"),
    }
    for name, (text, reason) in cases.items():
        path = tmp_path / name
        path.write_text(base + text)
        with pytest.raises(ValueError, match=reason):
            load_repo_map(str(path))
    ok = tmp_path / "ok.yaml"
    ok.write_text(base + "repos:\n  a/b: [eth, sol, ETH]\n")
    assert load_repo_map(str(ok)) == {"a/b": ["ETH", "SOL"]}
    assert load_settings(str(ok)).repos == {"a/b": ["ETH", "SOL"]}


# --- the client against the fake API ------------------------------------------------------------------
def expected_hourly(repo: FakeRepo) -> dict[int, int]:
    inside = [c.committed for c in repo.commits if START <= c.committed < START + timedelta(days=1)]
    return dict(Counter(ts.hour for ts in inside))


def test_pagination_gives_every_commit_once_and_stats_cross_check() -> None:
    repo = busy_repo()
    with FakeGitHub([repo], stats_pending=2) as api:
        report = fetch_day_report(make_github(settings(api)), repo.full_name, DAY)
        pages = [s for s in api.requests if s.path.endswith("/commits")]
    df = report.frame
    assert df.schema == pl.Schema(ACTIVITY_SCHEMA) and df.height == 24
    hourly = {h: c for h, c in zip(df["timestamp"].dt.hour(), df["commits"], strict=True) if c}
    assert hourly == expected_hourly(repo) and df["commits"].sum() == 230
    assert len(pages) == 3 and [s.query.get("page") for s in pages] == [None, "2", "3"]
    assert all(s.query["since"] == f"{DAY}T00:00:00Z" and s.query["per_page"] == "100" for s in pages)
    # 5 logins + the account-less commits (i % 10 == 0: e-mails m0 and m10) hashed into 2 authors
    assert set(df["contributors"]) == {7}
    assert set(df["open_issues"]) == {9} and set(df["stars"]) == {47_000}
    # /stats/commit_activity answered 202 twice, then 200 with the same day count
    assert api.count("/stats/commit_activity") == 3
    assert report.stats_commits == 230 and not report.from_cache
    # no per-commit completion requests: repo + 3 pages + 3 stats calls
    assert len(api.requests) == 7


def test_stats_contributors_202_then_200() -> None:
    repo = busy_repo()
    with FakeGitHub([repo], stats_pending=3) as api:
        stats = make_github(settings(api)).get_repo(repo.full_name).get_stats_contributors()
        assert api.count("/stats/contributors") == 4
    assert stats is not None
    totals = {s.author.login: s.total for s in stats}
    assert totals == dict(Counter(c.login for c in repo.commits if c.login))
    assert sum(w.c for s in stats for w in s.weeks) == sum(totals.values())


def test_rate_limit_403_is_waited_out() -> None:
    repo = busy_repo()
    with FakeGitHub([repo]) as api:
        api.rate_limit(1, reset_in=1.0, path="/commits")
        began = time.monotonic()
        df = fetch_day_activity(make_github(settings(api)), repo.full_name, DAY, stats=False)
        waited = time.monotonic() - began
        assert api.count("/commits") == 4  # the refused first page, then 3 pages
    assert df["commits"].sum() == 230
    assert waited >= 1.0  # waited for X-RateLimit-Reset rather than hammering the API


def test_429_retry_after_is_honoured() -> None:
    repo = busy_repo()
    with FakeGitHub([repo]) as api:
        api.too_many_requests(1, retry_after=1, path="/repos/ethereum/go-ethereum")
        began = time.monotonic()
        df = fetch_day_activity(make_github(settings(api)), repo.full_name, DAY, stats=False)
        assert time.monotonic() - began >= 1.0
    assert df["commits"].sum() == 230


def test_rate_limit_beyond_max_wait_and_exhausted_5xx_are_transient() -> None:
    repo = busy_repo()
    with FakeGitHub([repo]) as api:
        gh = make_github(settings(api, max_rate_limit_wait=5.0))
        api.rate_limit(1, reset_in=3600)
        began = time.monotonic()
        with pytest.raises(GitHubTransientError, match="rate limit") as rate:
            fetch_day_activity(gh, repo.full_name, DAY)
        assert time.monotonic() - began < 5  # gave up at once instead of sleeping an hour
        api.server_error(10, status=502)
        before = len(api.requests)
        with pytest.raises(GitHubTransientError, match="502") as bad_gateway:
            fetch_day_activity(gh, repo.full_name, DAY)
        assert len(api.requests) - before == 4  # first try + 3 retries
    assert "ethereum/go-ethereum" in str(rate.value) and "ethereum/go-ethereum" in str(bad_gateway.value)


def test_404_names_the_repo_and_fetch_many_goes_on() -> None:
    good, other = busy_repo(), FakeRepo("near/nearcore", [FakeCommit(START + timedelta(hours=5), login="n")])
    empty = FakeRepo("vyperlang/vyper", empty=True, open_issues=2)
    with FakeGitHub([good, other, empty]) as api:
        gh = make_github(settings(api))
        with pytest.raises(RepoNotFoundError, match="ghost/missing"):
            fetch_day_activity(gh, "ghost/missing", DAY)
        frames, errors = fetch_many(
            gh,
            ["ethereum/go-ethereum", "ghost/missing", "not a repo", "near/nearcore", "vyperlang/vyper"],
            DAY,
        )
    assert set(frames) == {"ethereum/go-ethereum", "near/nearcore", "vyperlang/vyper"}
    assert isinstance(errors["ghost/missing"], RepoNotFoundError) and "ghost/missing" in str(errors["ghost/missing"])
    assert isinstance(errors["not a repo"], ValueError)
    assert frames["near/nearcore"]["commits"].sum() == 1 and frames["ethereum/go-ethereum"]["commits"].sum() == 230
    assert frames["vyperlang/vyper"]["commits"].sum() == 0  # empty repository (409) = no commits


def test_canary_token_is_sent_but_never_leaks(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    for name in ("github", "urllib3", "requests", "cyber_pipelines"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    repo = busy_repo()
    texts: list[str] = []
    with FakeGitHub([repo]) as api:
        gh = make_github(settings(api, max_rate_limit_wait=3.0))
        frames, errors = fetch_many(gh, ["ethereum/go-ethereum", "ghost/missing"], DAY)
        api.server_error(10, status=503, path="/stats")  # stats fail: logged, the fetch goes on
        frames["stats-failed"] = fetch_day_activity(gh, repo.full_name, DAY - timedelta(days=1))
        api.rate_limit(1, reset_in=3600)
        with pytest.raises(GitHubTransientError) as rate:
            fetch_day_activity(gh, repo.full_name, DAY)
        errors["rate"] = rate.value
        seen = api.authorizations
    assert seen and all(a == f"token {CANARY}" for a in seen)
    assert set(errors) == {"ghost/missing", "rate"}
    for exc in errors.values():
        texts += [str(exc), repr(exc), *map(repr, exc.args), *traceback.format_exception(exc)]
    texts += [r.getMessage() for r in caplog.records] + [repr(r.args) for r in caplog.records]
    texts += [frame.write_csv() for frame in frames.values()]
    texts.append(repr(settings(api)))
    assert len(caplog.records) > 10  # PyGithub and urllib3 did log at DEBUG
    assert not [t for t in texts if CANARY in t]


def test_token_echoed_by_the_server_is_scrubbed() -> None:
    with FakeGitHub([busy_repo()]) as api:
        api.server_error(1, status=400, message=f"bad header token {CANARY}")
        with pytest.raises(Exception) as info:
            fetch_day_activity(make_github(settings(api)), "ethereum/go-ethereum", DAY)
    assert CANARY not in "".join(traceback.format_exception(info.value)) and "***" in str(info.value)


def test_cache_prevents_a_second_fetch(tmp_path: Path) -> None:
    repo = busy_repo()
    with FakeGitHub([repo]) as api:
        gh = make_github(settings(api))
        cache = ActivityCache(tmp_path / "cache")
        first = fetch_day_report(gh, repo.full_name, DAY, cache=cache)
        calls = len(api.requests)
        second = fetch_day_report(gh, repo.full_name, DAY, cache=cache)
        # a new process (next sensor tick) reads the JSON on disk
        third = fetch_day_report(gh, repo.full_name, DAY, cache=ActivityCache(tmp_path / "cache"))
        assert len(api.requests) == calls
        assert (tmp_path / "cache" / "ethereum__go-ethereum" / f"{DAY}.json").exists()
        # today is incomplete: never cached
        today = datetime.now(UTC).date()
        fetch_day_activity(gh, repo.full_name, today, cache=cache, stats=False)
        fetch_day_activity(gh, repo.full_name, today, cache=cache, stats=False)
        assert sum(s.path == "/repos/ethereum/go-ethereum" for s in api.requests) == 3
        # nor is a recent day: late-pushed commits can still land on it
        recent = today - timedelta(days=SETTLE_DAYS - 1)
        fetch_day_activity(gh, repo.full_name, recent, cache=cache, stats=False)
        fetch_day_activity(gh, repo.full_name, recent, cache=cache, stats=False)
        assert sum(s.path == "/repos/ethereum/go-ethereum" for s in api.requests) == 5
        # an unreadable cache file is ignored and refetched
        (tmp_path / "cache" / "ethereum__go-ethereum" / f"{DAY}.json").write_text("{not json")
        before = len(api.requests)
        fourth = fetch_day_report(gh, repo.full_name, DAY, cache=ActivityCache(tmp_path / "cache"))
        assert len(api.requests) > before and not fourth.from_cache
    assert not first.from_cache and second.from_cache and third.from_cache
    assert first.frame.equals(second.frame) and first.frame.equals(third.frame)
    assert third.stats_commits == 230


def test_settings_from_env_and_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", CANARY)
    monkeypatch.setenv("CYBER_GITHUB_URL", "http://127.0.0.1:9")
    s = GitHubSettings.from_env(retries=1)
    assert s.token == CANARY and s.base_url == "http://127.0.0.1:9" and s.retries == 1
    assert CANARY not in repr(s)
    monkeypatch.delenv("CYBER_GITHUB_URL")
    assert GitHubSettings().base_url == "https://api.github.com" and GitHubSettings().token is None
    with pytest.raises(ValueError, match="base_url"):
        GitHubSettings(base_url="ftp://x")
    with pytest.raises(ValueError, match="per_page"):
        GitHubSettings(per_page=500)
    with pytest.raises(ValueError, match="future"):
        fetch_day_activity(make_github(s), "a/b", datetime.now(UTC).date() + timedelta(days=2))


def test_unreachable_server_is_transient() -> None:
    with FakeGitHub() as api:
        url = api.base_url
    gh = make_github(GitHubSettings(token=CANARY, base_url=url, retries=1, backoff_factor=0.01))
    with pytest.raises(GitHubTransientError, match="network error") as info:
        fetch_day_activity(gh, "a/b", DAY)
    assert CANARY not in str(info.value)
