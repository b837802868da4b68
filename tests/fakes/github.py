"""A fake GitHub REST API on 127.0.0.1 that speaks the wire format PyGithub reads.

Routes: ``/repos/{o}/{r}``, ``/repos/{o}/{r}/commits`` (``since``/``until`` on the committer date,
newest first, ``per_page``/``page`` with ``Link`` headers pointing at ``/repositories/{id}/commits`` on
this server's host:port, as GitHub does), ``/repos/{o}/{r}/stats/contributors`` and
``/stats/commit_activity`` (202 while "computing", then 200), ``/rate_limit``; anything else is GitHub's
404. Faults (rate-limit 403, 429 with ``Retry-After``, 5xx) are injected for the next matching requests.
Every request is recorded with its ``Authorization`` header.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

PRIMARY_RATE_LIMIT = (
    "API rate limit exceeded for 127.0.0.1. (But here's the good news: Authenticated requests get a "
    "higher rate limit. Check out the documentation for more details.)"
)
SECONDARY_RATE_LIMIT = "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."
_DOCS = "https://docs.github.com/rest"


@dataclass(frozen=True)
class FakeCommit:
    committed: datetime  # committer date (what since/until filter on)
    login: str | None = None  # GitHub account of the author; None = no linked account
    name: str = "Dev"
    email: str = "dev@example.org"

    def sha(self, repo: str, index: int) -> str:
        return hashlib.sha1(f"{repo}:{index}:{self.committed.isoformat()}".encode()).hexdigest()


@dataclass
class FakeRepo:
    full_name: str
    commits: list[FakeCommit] = field(default_factory=list)
    open_issues: int = 0
    stars: int = 0
    id: int = 0
    empty: bool = False  # a repository without any commit: /commits answers 409


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    query: dict[str, str]
    authorization: str | None


@dataclass
class _Fault:
    status: int
    remaining: int
    path: str | None
    message: str
    reset_in: float | None = None
    retry_after: int | None = None


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeGitHub:
    """Context manager: ``with FakeGitHub([FakeRepo(...)]) as api: Github(base_url=api.base_url)``."""

    def __init__(self, repos: Iterable[FakeRepo] = (), *, stats_pending: int = 1) -> None:
        self._repos: dict[str, FakeRepo] = {}
        for repo in repos:
            self.add_repo(repo)
        self.stats_pending = stats_pending
        self.requests: list[Seen] = []
        self._faults: list[_Fault] = []
        self._stats_calls: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle -----------------------------------------------------------------------------------
    def __enter__(self) -> FakeGitHub:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                fake._handle(self)

            def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    @property
    def base_url(self) -> str:
        assert self._server is not None, "use FakeGitHub as a context manager"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # --- setup and injection -------------------------------------------------------------------------
    def add_repo(self, repo: FakeRepo) -> None:
        if not repo.id:
            repo.id = 1000 + len(self._repos)
        self._repos[repo.full_name.lower()] = repo

    def rate_limit(self, count: int = 1, *, reset_in: float = 1.0, path: str | None = None) -> None:
        """The next ``count`` requests (whose path contains ``path``) get a primary rate-limit 403."""
        with self._lock:
            self._faults.append(_Fault(403, count, path, PRIMARY_RATE_LIMIT, reset_in=reset_in))

    def too_many_requests(self, count: int = 1, *, retry_after: int = 1, path: str | None = None) -> None:
        """The next ``count`` requests get a secondary rate-limit 429 with ``Retry-After``."""
        with self._lock:
            self._faults.append(_Fault(429, count, path, SECONDARY_RATE_LIMIT, retry_after=retry_after))

    def server_error(
        self, count: int = 1, *, status: int = 502, path: str | None = None, message: str = "Server Error"
    ) -> None:
        """The next ``count`` requests get ``status`` with ``message`` in GitHub's JSON error body."""
        with self._lock:
            self._faults.append(_Fault(status, count, path, message))

    # --- what the server saw -------------------------------------------------------------------------
    def count(self, fragment: str = "") -> int:
        """How many requests had ``fragment`` in their path."""
        with self._lock:
            return sum(fragment in seen.path for seen in self.requests)

    @property
    def authorizations(self) -> list[str | None]:
        with self._lock:
            return [seen.authorization for seen in self.requests]

    # --- wire format ---------------------------------------------------------------------------------
    def _user(self, login: str) -> dict[str, Any]:
        uid = int(hashlib.sha1(login.encode()).hexdigest()[:6], 16)
        return {
            "login": login,
            "id": uid,
            "node_id": f"U_{uid}",
            "avatar_url": f"{self.base_url}/avatars/{login}",
            "url": f"{self.base_url}/users/{login}",
            "html_url": f"{self.base_url}/{login}",
            "type": "User",
            "site_admin": False,
        }

    def _repo_json(self, repo: FakeRepo) -> dict[str, Any]:
        owner = repo.full_name.split("/")[0]
        url = f"{self.base_url}/repos/{repo.full_name}"
        return {
            "id": repo.id,
            "node_id": f"R_{repo.id}",
            "name": repo.full_name.split("/")[1],
            "full_name": repo.full_name,
            "private": False,
            "owner": self._user(owner),
            "html_url": f"{self.base_url}/{repo.full_name}",
            "url": url,
            "commits_url": f"{url}/commits{{/sha}}",
            "fork": False,
            "default_branch": "main",
            "open_issues_count": repo.open_issues,
            "open_issues": repo.open_issues,
            "stargazers_count": repo.stars,
            "watchers_count": repo.stars,
            "created_at": "2015-01-01T00:00:00Z",
            "updated_at": "2024-01-01T00:00:00Z",
            "pushed_at": "2024-01-01T00:00:00Z",
        }

    def _commit_json(self, repo: FakeRepo, index: int, commit: FakeCommit) -> dict[str, Any]:
        sha = commit.sha(repo.full_name, index)
        url = f"{self.base_url}/repos/{repo.full_name}"
        person = {"name": commit.name, "email": commit.email, "date": _iso(commit.committed)}
        user = self._user(commit.login) if commit.login else None
        return {
            "sha": sha,
            "node_id": f"C_{sha[:12]}",
            "url": f"{url}/commits/{sha}",
            "html_url": f"{self.base_url}/{repo.full_name}/commit/{sha}",
            "comments_url": f"{url}/commits/{sha}/comments",
            "commit": {
                "url": f"{url}/git/commits/{sha}",
                "author": person,
                "committer": person,
                "message": f"change {index}",
                "tree": {"sha": sha, "url": f"{url}/git/trees/{sha}"},
                "comment_count": 0,
            },
            "author": user,
            "committer": user,
            "parents": [],
        }

    def _commits(self, repo: FakeRepo, query: dict[str, str], path: str) -> tuple[int, Any, dict[str, str]]:
        try:
            since = datetime.fromisoformat(query["since"]) if "since" in query else None
            until = datetime.fromisoformat(query["until"]) if "until" in query else None
            per_page = min(int(query.get("per_page", 30)), 100)
            page = int(query.get("page", 1))
        except ValueError as exc:
            return 422, {"message": f"Validation Failed: {exc}", "documentation_url": _DOCS}, {}
        indexed = [
            (i, c)
            for i, c in enumerate(repo.commits)
            if (since is None or c.committed >= since) and (until is None or c.committed <= until)
        ]
        indexed.sort(key=lambda ic: ic[1].committed, reverse=True)
        last = max(1, math.ceil(len(indexed) / per_page))
        body = [self._commit_json(repo, i, c) for i, c in indexed[(page - 1) * per_page : page * per_page]]
        links = []
        base = f"{self.base_url}/repositories/{repo.id}/commits"

        def link(target: int, rel: str) -> str:
            return f'<{base}?{urlencode({**query, "page": target})}>; rel="{rel}"'

        if page > 1:
            links += [link(page - 1, "prev"), link(1, "first")]
        if page < last:
            links = [link(page + 1, "next"), link(last, "last"), *links]
        return 200, body, ({"Link": ", ".join(links)} if links else {})

    def _weeks(self, repo: FakeRepo) -> tuple[datetime, list[FakeCommit]]:
        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        this_week = today - timedelta(days=(today.weekday() + 1) % 7)  # weeks start on Sunday
        first = this_week - timedelta(weeks=51)
        return first, [c for c in repo.commits if first <= c.committed < first + timedelta(weeks=52)]

    def _commit_activity(self, repo: FakeRepo) -> list[dict[str, Any]]:
        first, commits = self._weeks(repo)
        days = [[0] * 7 for _ in range(52)]
        for commit in commits:
            offset = (commit.committed - first).days
            days[offset // 7][offset % 7] += 1
        return [
            {"days": counts, "total": sum(counts), "week": int((first + timedelta(weeks=k)).timestamp())}
            for k, counts in enumerate(days)
        ]

    def _contributors(self, repo: FakeRepo) -> list[dict[str, Any]]:
        first, commits = self._weeks(repo)
        out = []
        for login in sorted({c.login for c in commits if c.login}):
            counts = [0] * 52
            for c in commits:
                if c.login == login:
                    counts[(c.committed - first).days // 7] += 1
            weeks = [
                {"w": int((first + timedelta(weeks=k)).timestamp()), "a": 0, "d": 0, "c": n}
                for k, n in enumerate(counts)
            ]
            out.append({"author": self._user(login), "total": sum(counts), "weeks": weeks})
        return out

    def _route(self, path: str, query: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        not_found: tuple[int, Any, dict[str, str]] = (
            404,
            {"message": "Not Found", "documentation_url": _DOCS, "status": "404"},
            {},
        )
        if path == "/rate_limit":
            core = {"limit": 5000, "remaining": 4999, "reset": int(time.time()) + 3600, "used": 1}
            return 200, {"resources": {"core": core, "search": core, "graphql": core}, "rate": core}, {}
        match = re.fullmatch(r"/repos/([^/]+/[^/]+)(/.*)?", path) or re.fullmatch(r"/repositories/(\d+)(/.*)?", path)
        if not match:
            return not_found
        ref, rest = match.group(1), match.group(2) or ""
        repo = (
            self._repos.get(ref.lower())
            if "/" in ref
            else next((r for r in self._repos.values() if str(r.id) == ref), None)
        )
        if repo is None:
            return not_found
        if rest == "":
            return 200, self._repo_json(repo), {}
        if rest == "/commits" and repo.empty:
            return (
                409,
                {"message": "Git Repository is empty.", "documentation_url": _DOCS, "status": "409"},
                {},
            )
        if rest == "/commits":
            return self._commits(repo, query, path)
        if rest in ("/stats/contributors", "/stats/commit_activity"):
            with self._lock:
                calls = self._stats_calls.get((repo.full_name, rest), 0)
                self._stats_calls[(repo.full_name, rest)] = calls + 1
            if calls < self.stats_pending:
                return 202, {}, {}
            return (
                200,
                (self._contributors(repo) if rest.endswith("contributors") else self._commit_activity(repo)),
                {},
            )
        return not_found

    def _fault_for(self, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.remaining > 0 and (fault.path is None or fault.path in path):
                    fault.remaining -= 1
                    return fault
        return None

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(handler.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        with self._lock:
            self.requests.append(Seen("GET", parts.path, query, handler.headers.get("Authorization")))
            used = len(self.requests)
        reset = int(time.time()) + 3600
        headers = {"X-RateLimit-Limit": "5000", "X-RateLimit-Remaining": str(max(0, 5000 - used))}
        fault = self._fault_for(parts.path)
        if fault is not None:
            status, body = fault.status, {"message": fault.message, "documentation_url": _DOCS}
            if fault.reset_in is not None:
                reset = math.ceil(time.time() + fault.reset_in)
                headers["X-RateLimit-Remaining"] = "0"
            if fault.retry_after is not None:
                headers["Retry-After"] = str(fault.retry_after)
        else:
            status, body, extra = self._route(parts.path, query)
            headers.update(extra)
        headers.update({"X-RateLimit-Reset": str(reset), "X-RateLimit-Resource": "core"})
        data = json.dumps(body).encode()
        handler.send_response(status)
        headers.update({"Content-Type": "application/json; charset=utf-8", "Content-Length": str(len(data))})
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(data)
