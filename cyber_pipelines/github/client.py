"""GitHub REST access through PyGithub: retries, rate-limit waits, a day cache and token-free errors.

Transient faults (5xx, 429, rate-limit 403, connection errors) are retried by PyGithub's ``GithubRetry``
(a ``urllib3.Retry``): a primary rate-limit 403 waits until ``X-RateLimit-Reset`` (+1 s), a secondary one
``secondary_rate_wait``, a 429 honours ``Retry-After``, other faults back off exponentially with jitter.
A wait longer than ``max_rate_limit_wait`` or exhausted retries end in ``GitHubTransientError``; a 404
is permanent (``RepoNotFoundError``). Errors are rebuilt from status and GitHub's message only (never
the request or its headers) and chained ``from None``; the token is also scrubbed from every message.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import cast

import polars as pl
import requests
from github import (
    Auth,
    BadAttributeException,
    Github,
    GithubException,
    GithubRetry,
    RateLimitExceededException,
    UnknownObjectException,
)
from github.Commit import Commit
from github.Repository import Repository

from cyber_pipelines.github.activity import build_activity, repo_to_key
from cyber_pipelines.storage import StoragePath, as_path, write_text_atomic

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.github.com"


class GitHubError(RuntimeError):
    """A GitHub request failed; the message names the repo and never holds the token."""


class GitHubTransientError(GitHubError):
    """Rate limit, 429, 5xx or network fault that outlasted the retries: try again later."""


class GitHubPermanentError(GitHubError):
    """Bad credentials, forbidden or an unexpected answer: retrying will not help."""


class RepoNotFoundError(ValueError):
    """The repository does not exist (or the token cannot see it): GitHub answered 404."""


@dataclass(frozen=True)
class GitHubSettings:
    """Connection settings; ``token`` is kept out of ``repr``."""

    token: str | None = field(default=None, repr=False)
    base_url: str = field(default_factory=lambda: os.environ.get("CYBER_GITHUB_URL") or DEFAULT_BASE_URL)
    timeout: int = 15  # seconds per HTTP request
    retries: int = 5  # retries per request for transient faults
    per_page: int = 100  # GitHub's maximum page size
    backoff_factor: float = 1.0  # exponential backoff (s) for 5xx / network faults
    max_rate_limit_wait: float = 900.0  # longest wait (s) for a rate-limit reset before giving up
    seconds_between_requests: float = 0.25  # PyGithub's pacing between requests

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"GitHub base_url must be http(s)://..., got {self.base_url!r}")
        if self.timeout <= 0 or self.retries < 0 or not 1 <= self.per_page <= 100:
            raise ValueError("GitHub settings: timeout > 0, retries >= 0 and 1 <= per_page <= 100 required")
        if self.max_rate_limit_wait < 0 or self.backoff_factor < 0 or self.seconds_between_requests < 0:
            raise ValueError("GitHub settings: waits and backoff must be >= 0")

    @classmethod
    def from_env(cls, **overrides: object) -> GitHubSettings:
        """Token from ``GITHUB_TOKEN`` (optional: unauthenticated limits apply without it)."""
        values: dict[str, object] = {"token": os.environ.get("GITHUB_TOKEN") or None, **overrides}
        return cls(**values)  # type: ignore[arg-type]


def make_github(settings: GitHubSettings) -> Github:
    """A PyGithub client with ``GithubRetry`` for rate limits, 429 and 5xx, bounded by the settings."""
    wait = settings.max_rate_limit_wait
    retry = GithubRetry(
        total=settings.retries,
        backoff_factor=settings.backoff_factor,
        backoff_jitter=settings.backoff_factor / 2,
        backoff_max=60.0,
        status_forcelist=[429, *range(500, 600)],  # GithubRetry adds 403 (rate limits only)
        retry_after_max=int(wait),
        secondary_rate_wait=min(60.0, wait),
        max_rate_limit_wait=wait,
        raise_on_status=False,  # exhausted: hand the last answer to PyGithub, which raises its exception
    )
    return Github(
        auth=Auth.Token(settings.token) if settings.token else None,
        base_url=settings.base_url,
        timeout=settings.timeout,
        per_page=settings.per_page,
        retry=retry,
        seconds_between_requests=settings.seconds_between_requests,
    )


@dataclass(frozen=True)
class DayRecord:
    """What one day of a repo is built from; ``open_issues``/``stars`` are a snapshot at fetch time."""

    commits: list[tuple[datetime, str]]  # (committer date, author id)
    open_issues: int
    stars: int
    stats_commits: int | None  # the day's count from /stats/commit_activity, None if unavailable

    def to_json(self) -> str:
        return json.dumps(
            {
                "commits": [[ts.isoformat(), author] for ts, author in self.commits],
                "open_issues": self.open_issues,
                "stars": self.stars,
                "stats_commits": self.stats_commits,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> DayRecord:
        raw = json.loads(text)
        commits = [(datetime.fromisoformat(ts), str(author)) for ts, author in raw["commits"]]
        stats = raw["stats_commits"]
        return cls(commits, int(raw["open_issues"]), int(raw["stars"]), None if stats is None else int(stats))


@dataclass(frozen=True)
class ActivityFetch:
    """A fetched day: the activity frame plus the stats cross-check and whether it came from the cache."""

    repo: str
    day: date
    frame: pl.DataFrame
    stats_commits: int | None
    from_cache: bool


SETTLE_DAYS = 7  # days after which late-pushed commits are rare enough to treat a day as final


class ActivityCache:
    """Complete days (before today, UTC) by (repo, day), in memory and as JSON under ``folder``."""

    def __init__(self, folder: str | StoragePath | None = None) -> None:
        self.folder = as_path(folder) if folder is not None else None
        self._memory: dict[tuple[str, date], DayRecord] = {}

    def _path(self, repo: str, day: date) -> StoragePath | None:
        return self.folder / repo_to_key(repo) / f"{day.isoformat()}.json" if self.folder else None

    def get(self, repo: str, day: date) -> DayRecord | None:
        if (repo, day) in self._memory:
            return self._memory[(repo, day)]
        path = self._path(repo, day)
        if path is None or not path.exists():
            return None
        try:
            record = DayRecord.from_json(path.read_text())
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring unreadable GitHub cache file %s: %s", path, exc)
            return None
        self._memory[(repo, day)] = record
        return record

    def put(self, repo: str, day: date, record: DayRecord) -> bool:
        """Store a settled day; returns False (and stores nothing) for the last ``SETTLE_DAYS`` days.

        Commits are dated by committer date, and commits pushed or merged later keep their older dates:
        a recent day can still grow, so only days older than the settle window are treated as final."""
        if day >= datetime.now(UTC).date() - timedelta(days=SETTLE_DAYS):
            return False
        self._memory[(repo, day)] = record
        path = self._path(repo, day)
        if path is not None:
            write_text_atomic(record.to_json(), path)
        return True


def _redact(text: str, token: str | None) -> str:
    return text.replace(token, "***") if token else text


def _translate(exc: Exception, repo: str, token: str | None) -> Exception:
    """A project exception for a PyGithub/requests one, built from its status and message only."""
    if isinstance(exc, UnknownObjectException):
        return RepoNotFoundError(f"GitHub repository {repo!r} not found (404)")
    if isinstance(exc, GithubException):
        data = exc.data if isinstance(exc.data, dict) else {}
        message = _redact(str(data.get("message") or exc.message or ""), token)[:300]
        text = f"GitHub answered {exc.status} for {repo}: {message}".rstrip(": ")
        if isinstance(exc, RateLimitExceededException):
            return GitHubTransientError(f"{text} (rate limit still exceeded after waiting)")
        if exc.status == 429 or exc.status >= 500:
            return GitHubTransientError(f"{text} (retries exhausted)")
        if exc.status == 401:
            return GitHubPermanentError(f"{text} (check GITHUB_TOKEN)")
        return GitHubPermanentError(text)
    if isinstance(exc, requests.RequestException):
        return GitHubTransientError(f"network error for {repo}: {type(exc).__name__}: {_redact(str(exc), token)}")
    return GitHubPermanentError(f"unexpected answer from GitHub for {repo}: {type(exc).__name__}")


def _author_id(commit: Commit) -> str:
    """The author's login, else a hash of the git author's e-mail (or name): no e-mail is stored."""
    if commit.author is not None and commit.author.login:
        return commit.author.login
    git_author = commit.commit.author
    ident = (git_author.email or git_author.name or "").strip().lower() if git_author else ""
    return "anon-" + hashlib.sha256(ident.encode()).hexdigest()[:12]


def _stats_commits(repo: Repository, day: date) -> int | None:
    """The day's commits per ``/stats/commit_activity`` (weeks start on Sunday; last 52 weeks only)."""
    weeks = repo.get_stats_commit_activity()  # PyGithub re-asks while GitHub answers 202 (computing)
    index = (day.weekday() + 1) % 7
    week_start = day - timedelta(days=index)
    for week in weeks or []:
        if week.week.astimezone(UTC).date() == week_start:
            days = cast(list[int], week.days)  # PyGithub annotates it as int; it is the 7 day counts
            return int(days[index])
    return None


def _fetch_record(gh: Github, repo: str, day: date, stats: bool) -> DayRecord:
    start = datetime.combine(day, time(), tzinfo=UTC)
    end = start + timedelta(days=1)
    remote = gh.get_repo(repo)
    open_issues, stars = remote.open_issues_count, remote.stargazers_count
    commits: list[tuple[datetime, str]] = []
    try:
        # GitHub filters since/until on the committer date (until is inclusive, second resolution).
        for commit in remote.get_commits(since=start, until=end - timedelta(seconds=1)):
            commits.append((commit.commit.committer.date.astimezone(UTC), _author_id(commit)))
    except GithubException as exc:
        if exc.status != 409:  # 409 "Git Repository is empty": no commits at all
            raise
    inside = [(ts, author) for ts, author in commits if start <= ts < end]
    if len(inside) != len(commits):
        log.warning("%s %s: dropped %d commits dated outside the day", repo, day, len(commits) - len(inside))
    stats_commits = None
    if stats:
        try:
            stats_commits = _stats_commits(remote, day)
        except GithubException as exc:
            log.warning("%s: /stats/commit_activity unavailable (%s)", repo, exc.status)
    if stats_commits is not None and stats_commits != len(inside):
        log.warning(
            "%s %s: %d commits listed, /stats/commit_activity counts %d (it dates by author and may lag)",
            repo,
            day,
            len(inside),
            stats_commits,
        )
    return DayRecord(inside, open_issues, stars, stats_commits)


def fetch_day_report(
    gh: Github, repo: str, day: date, *, cache: ActivityCache | None = None, stats: bool = True
) -> ActivityFetch:
    """Fetch (or read from ``cache``) one UTC day of ``repo``; see ``fetch_day_activity``."""
    repo_to_key(repo)  # validates the name before any request
    if day > datetime.now(UTC).date():
        raise ValueError(f"{repo}: {day} is in the future")
    record = cache.get(repo, day) if cache is not None else None
    from_cache = record is not None
    if record is None:
        token = _token_of(gh)
        try:
            record = _fetch_record(gh, repo, day, stats)
        except (GithubException, BadAttributeException) as exc:
            raise _translate(exc, repo, token) from None
        except requests.RequestException as exc:
            raise _translate(exc, repo, token) from None
        if cache is not None:
            cache.put(repo, day, record)
    frame = build_activity(repo, day, record.commits, record.open_issues, record.stars)
    return ActivityFetch(repo, day, frame, record.stats_commits, from_cache)


def fetch_day_activity(
    gh: Github, repo: str, day: date, *, cache: ActivityCache | None = None, stats: bool = True
) -> pl.DataFrame:
    """The day's hourly activity of ``repo`` in ``ACTIVITY_SCHEMA``.

    Commits come from ``GET /repos/{repo}/commits?since&until`` (all pages), bucketed by committer date
    (the date GitHub filters on, so every commit lands in exactly one day). ``open_issues`` (GitHub counts
    pull requests too) and ``stars`` are a snapshot at fetch time, not the values of ``day``. With
    ``stats``, ``/stats/commit_activity`` cross-checks the day's commit count (logged, and returned by
    ``fetch_day_report``). Raises ``RepoNotFoundError``, ``GitHubTransientError``, ``GitHubPermanentError``.
    """
    return fetch_day_report(gh, repo, day, cache=cache, stats=stats).frame


def fetch_many(
    gh: Github, repos: list[str], day: date, *, cache: ActivityCache | None = None, stats: bool = True
) -> tuple[dict[str, pl.DataFrame], dict[str, Exception]]:
    """Fetch ``day`` for each repo; a failing repo lands in the errors and the others go on."""
    frames: dict[str, pl.DataFrame] = {}
    errors: dict[str, Exception] = {}
    for repo in repos:
        try:
            frames[repo] = fetch_day_activity(gh, repo, day, cache=cache, stats=stats)
        except (GitHubError, ValueError) as exc:
            log.warning("GitHub activity for %s on %s failed: %s", repo, day, exc)
            errors[repo] = exc
    return frames, errors


def _token_of(gh: Github) -> str | None:
    """The client's token, only to scrub it from error texts."""
    auth = gh.requester.auth
    with contextlib.suppress(AttributeError):
        return auth.token if isinstance(auth, Auth.Token) else None
    return None
