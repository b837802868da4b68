"""The production configuration on one machine, without containers: ``make local-prod`` / ``make local-prod-stop``.

``python -m cyber_pipelines.localprod start|stop|status|env`` starts, in process groups of their own:

- the code location as a gRPC server (``dagster code-server start`` on 127.0.0.1:4000),
- Celery workers on the broker (``celery -A dagster_celery.app worker``, what ``dagster-celery worker
  start`` runs): every run is a Celery task (the instance's ``CeleryRunLauncher``),
- the daemon (``dagster-daemon run``: run queue, sensors, schedules, backfills, run monitoring),
- the webserver on 127.0.0.1:``PORT`` (3000), over a workspace that points at the gRPC server,

with run, event log and schedule storage in PostgreSQL (a database of its own, created if missing), the
instance in ``.local-prod/dagster_home`` (docker/local-prod/dagster.yaml) and the data in
``.local-prod/data``. It records what it started (pid, command line and start time of each process) in
``.local-prod/pids.json``, waits until each process is healthy and returns. ``stop`` signals exactly
those process groups (SIGTERM, SIGKILL after a timeout), each only after checking that its pid still
runs the recorded command since the recorded time, so a reused pid is never signalled.

Settings come from the environment: ``CYBER_LOCAL_PROD_DIR`` (``.local-prod``), ``CYBER_POSTGRES_URL``
(``postgresql://postgres@127.0.0.1:5432/cyber_pipelines``), ``CYBER_CELERY_BROKER`` and
``CYBER_CELERY_BACKEND`` (``redis://127.0.0.1:6379/0``), ``CYBER_GRPC_PORT`` (4000),
``CYBER_CELERY_WORKERS`` (2), ``CYBER_VSM_DB`` (the VSM event log; default: the same database, table
``vsm_events``). The instance file names its settings by variable (no URL or password is
written to disk); ``env`` prints them for a shell that should reach the same instance.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess  # nosec B404: starts and checks the venv's own dagster and celery commands
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from cyber_pipelines.instance import PROJECT_ROOT

CONFIG_DIR = PROJECT_ROOT / "docker" / "local-prod"
LOCATION = "cyber_pipelines"
CODE_MODULE = "cyber_pipelines.definitions"
HOST = "127.0.0.1"
DEFAULTS = {
    "CYBER_POSTGRES_URL": "postgresql://postgres@127.0.0.1:5432/cyber_pipelines",
    "CYBER_CELERY_BROKER": "redis://127.0.0.1:6379/0",
    "CYBER_CELERY_BACKEND": "redis://127.0.0.1:6379/0",
}
START_TIMEOUT_S = float(os.environ.get("CYBER_LOCAL_PROD_TIMEOUT", "300"))  # a loaded 2-core machine is slow
# What `dagster-celery worker start` passes; one task (one run) at a time per worker, in a thread of the worker
# process: the prefork pool's processes are daemonic, and Python refuses them the step processes of the jobs'
# multiprocess executor ("daemonic processes are not allowed to have children"). The price: Celery cannot kill a
# task in a thread, so "Terminate" in the UI does not stop a running run; `make local-prod-stop` does.
WORKER_ARGS = ["--prefetch-multiplier=1", "--loglevel=INFO", "--pool=threads", "--concurrency=1"]
STOP_TIMEOUT_S = 20.0  # SIGTERM first; SIGKILL for what is still there after this long
# Celery reads this module (found on the workers' PYTHONPATH) as dagster-celery's worker CLI writes it,
# except that the URLs come from the environment instead of being written into the file.
CELERY_CONFIG = """\
# Written by cyber_pipelines.localprod: the Celery app of dagster_celery.app imports this module.
import os

broker_url = os.environ["CYBER_CELERY_BROKER"]
result_backend = os.environ["CYBER_CELERY_BACKEND"]
"""


class LocalProdError(Exception):
    """A one-line reason why local-prod did not start (or stop); nothing it started is left running."""


@dataclass(frozen=True)
class Settings:
    root: Path
    port: int
    grpc_port: int
    postgres_url: str
    broker: str
    backend: str
    workers: int
    vsm_db: str = ""  # the VSM event log; empty: the same PostgreSQL database

    @classmethod
    def from_env(cls, port: int | None = None) -> Settings:
        env = os.environ
        return cls(
            root=Path(env.get("CYBER_LOCAL_PROD_DIR") or PROJECT_ROOT / ".local-prod").resolve(),
            port=port if port is not None else int(env.get("PORT") or 3000),
            grpc_port=int(env.get("CYBER_GRPC_PORT") or 4000),
            postgres_url=env.get("CYBER_POSTGRES_URL") or DEFAULTS["CYBER_POSTGRES_URL"],
            broker=env.get("CYBER_CELERY_BROKER") or DEFAULTS["CYBER_CELERY_BROKER"],
            backend=env.get("CYBER_CELERY_BACKEND") or DEFAULTS["CYBER_CELERY_BACKEND"],
            workers=int(env.get("CYBER_CELERY_WORKERS") or 2),
            vsm_db=env.get("CYBER_VSM_DB") or "",
        )

    @property
    def dagster_home(self) -> Path:
        return self.root / "dagster_home"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def pid_file(self) -> Path:
        return self.root / "pids.json"

    @property
    def celery_dir(self) -> Path:
        return self.root / "celery"

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def environment(self) -> dict[str, str]:
        """What every process gets: the instance, its storage and broker, the data and landing folders."""
        return {
            "DAGSTER_HOME": str(self.dagster_home),
            "CYBER_DATA_DIR": str(self.data_dir),
            "CYBER_LANDING_DIR": str(self.data_dir / "inbox"),
            "CYBER_POSTGRES_URL": sqlalchemy_url(self.postgres_url),
            "CYBER_CELERY_BROKER": self.broker,
            "CYBER_CELERY_BACKEND": self.backend,
            "CYBER_VSM_DB": self.vsm_db or sqlalchemy_url(self.postgres_url),  # its own table, vsm_events
        }


# -- the processes and their records ---------------------------------------------------------------
@dataclass(frozen=True)
class Started:
    """One process that start() launched, the leader of a process group of its own (pgid == pid)."""

    name: str
    pid: int
    cmdline: list[str]
    create_time: float
    log: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "pid": self.pid,
            "cmdline": self.cmdline,
            "create_time": self.create_time,
            "log": self.log,
        }


def read_records(settings: Settings) -> list[Started]:
    if not settings.pid_file.exists():
        return []
    data = json.loads(settings.pid_file.read_text())
    return [Started(**p) for p in data.get("processes", [])]


def _write_records(settings: Settings, records: list[Started]) -> None:
    data = {
        "url": settings.url,
        "grpc_port": settings.grpc_port,
        "dagster_home": str(settings.dagster_home),
        "database": _redact(settings.postgres_url),
        "processes": [r.as_dict() for r in records],
    }
    tmp = settings.pid_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(settings.pid_file)


def is_ours(record: Started) -> bool | None:
    """True: the pid runs the recorded command since the recorded time. False: gone. None: reused by another."""
    import psutil

    try:
        process = psutil.Process(record.pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False  # exited, not yet reaped by its parent
        same = abs(process.create_time() - record.create_time) < 0.05 and process.cmdline() == record.cmdline
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    except psutil.AccessDenied:
        return None
    return True if same else None


def group_members(pgid: int) -> list[int]:
    """Pids whose process group is ``pgid`` (a group's id is never reused while one of them lives)."""
    import psutil

    members = []
    for pid in psutil.pids():
        try:
            if os.getpgid(pid) == pgid and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                members.append(pid)
        except (ProcessLookupError, psutil.NoSuchProcess, psutil.ZombieProcess, PermissionError):
            continue
    return members


def _spawn(name: str, argv: list[str], env: Mapping[str, str], logs: Path) -> Started:
    import psutil

    log = logs / f"{name}.log"
    with log.open("ab") as out:
        process = subprocess.Popen(  # nosec B603: the venv's own executables, no shell
            argv,
            cwd=PROJECT_ROOT,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() signals the group, children included
        )
    info = psutil.Process(process.pid)  # Popen returns once the exec succeeded: this is the real command ...
    cmdline = info.cmdline()
    for _ in range(100):  # ... though /proc/<pid>/cmdline can read empty for a moment right after the exec
        if cmdline or process.poll() is not None:
            break
        time.sleep(0.02)
        cmdline = info.cmdline()
    return Started(name, process.pid, cmdline, info.create_time(), str(log))


# -- checks ------------------------------------------------------------------------------------------
def port_is_free(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do: TIME_WAIT is free
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _port_open(port: int, host: str = HOST) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def sqlalchemy_url(url: str) -> str:
    """The URL dagster-postgres gets: SQLAlchemy 2.1 reads a bare ``postgresql://`` as psycopg 3, we have psycopg2."""
    scheme, sep, rest = url.partition("://")
    return f"postgresql+psycopg2://{rest}" if sep and scheme in ("postgresql", "postgres") else url


def libpq_url(url: str) -> str:
    """The URL psycopg2 (libpq) takes: no ``+driver`` in the scheme."""
    scheme, sep, rest = url.partition("://")
    return f"postgresql://{rest}" if sep and scheme.startswith("postgres") else url


def ensure_database(postgres_url: str) -> bool:
    """Create the URL's database when it is missing (connecting to ``postgres`` on the same server)."""
    import psycopg2
    from psycopg2 import sql

    parts = urlsplit(libpq_url(postgres_url))
    name = parts.path.lstrip("/")
    if not name:
        raise LocalProdError(f"{_redact(postgres_url)} names no database")
    admin = urlunsplit(parts._replace(path="/postgres"))
    try:
        connection = psycopg2.connect(admin, connect_timeout=5)
    except psycopg2.OperationalError as exc:
        reason = " ".join(str(exc).split())
        raise LocalProdError(f"PostgreSQL at {_redact(admin)} cannot be reached: {reason}") from None
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cursor.fetchone():
                return False
            cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            return True
    finally:
        connection.close()


def drop_database(postgres_url: str) -> None:
    """Drop the URL's database (tests use throwaway ones); closes what is still connected first."""
    import psycopg2
    from psycopg2 import sql

    parts = urlsplit(libpq_url(postgres_url))
    name = parts.path.lstrip("/")
    connection = psycopg2.connect(urlunsplit(parts._replace(path="/postgres")), connect_timeout=5)
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    finally:
        connection.close()


def _check_broker(broker: str) -> None:
    from kombu import Connection

    try:
        with Connection(broker, connect_timeout=5) as connection:
            connection.ensure_connection(max_retries=1)
    except Exception as exc:  # kombu raises the transport's own errors
        raise LocalProdError(f"the Celery broker {_redact(broker)} cannot be reached: {exc}") from None


def graphql(url: str, query: str, variables: Mapping[str, Any] | None = None, timeout: float = 30.0) -> Any:
    """POST a query to the webserver's GraphQL API; its ``data``, or a RuntimeError naming the errors."""
    body = json.dumps({"query": query, "variables": dict(variables or {})}).encode()
    request = urllib.request.Request(  # nosec B310: http to our own webserver
        f"{url}/graphql", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:  # nosec B310: our own webserver
        payload = json.loads(response.read())
    if payload.get("errors"):
        raise RuntimeError("; ".join(e.get("message", str(e)) for e in payload["errors"]))
    return payload["data"]


LOCATION_QUERY = """
{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus
    locationOrLoadError { __typename ... on PythonError { message causes { message } } } } } } }
"""
DAEMONS_QUERY = "{ instance { daemonHealth { allDaemonStatuses { daemonType required healthy } } } }"


def _server_info(settings: Settings) -> bool:
    try:
        with urllib.request.urlopen(f"{settings.url}/server_info", timeout=5) as response:  # nosec B310: ours
            return "dagster_webserver_version" in json.loads(response.read())
    except (OSError, ValueError):
        return False


def _location_loaded(settings: Settings) -> bool:
    entries = graphql(settings.url, LOCATION_QUERY)["workspaceOrError"].get("locationEntries") or []
    for entry in entries:
        if entry["name"] != LOCATION or entry["loadStatus"] != "LOADED":
            continue
        loaded = entry["locationOrLoadError"] or {}
        if loaded.get("__typename") == "PythonError":
            root = ([loaded] + (loaded.get("causes") or []))[-1]  # the innermost cause names the real error
            message = " ".join(str(root.get("message", "")).split())[:400]
            raise LocalProdError(f"the code location {LOCATION} does not load: {message}")
        return loaded.get("__typename") == "RepositoryLocation"
    return False


def _daemons_healthy(settings: Settings) -> bool:
    statuses = graphql(settings.url, DAEMONS_QUERY)["instance"]["daemonHealth"]["allDaemonStatuses"]
    return bool(statuses) and all(s["healthy"] for s in statuses if s["required"])


def _grpc_healthy(settings: Settings, env: Mapping[str, str]) -> bool:
    if not _port_open(settings.grpc_port):
        return False
    check = [sys.executable, "-m", "dagster", "api", "grpc-health-check", "-p", str(settings.grpc_port), "-h", HOST]
    done = subprocess.run(check, env=dict(env), capture_output=True, timeout=60)  # nosec B603: venv's dagster
    return done.returncode == 0


def workers_answer(settings: Settings, names: Iterable[str]) -> bool:
    from celery import Celery

    wanted = set(names)
    app = Celery("localprod-ping", broker=settings.broker, backend=settings.backend)
    try:
        replies = app.control.ping(destination=sorted(wanted), timeout=2.0)
    finally:
        app.close()
    answered = {name for reply in replies for name in reply}
    return wanted <= answered


def worker_names(settings: Settings) -> list[str]:
    return [f"localprod{i + 1}@{socket.gethostname()}" for i in range(settings.workers)]


# -- start -------------------------------------------------------------------------------------------
def _last_line(log: str) -> str:
    try:
        lines = [line.strip() for line in Path(log).read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


def _wait(
    what: str,
    healthy: Callable[[], bool],
    log: Path,
    records: list[Started],
    deadline: float,
    progress: Callable[[str], None],
) -> None:
    """Poll ``healthy`` until true; fail when a started process has exited or the deadline passes."""
    while True:
        for record in records:
            if not is_ours(record):
                last = _last_line(record.log)
                raise LocalProdError(
                    f"{record.name} exited while waiting for {what} (log {record.log}" + (f": {last})" if last else ")")
                )
        try:
            up = healthy()
        except LocalProdError:
            raise
        except Exception:  # not up yet (connection refused, GraphQL not ready)
            up = False
        if up:
            progress(f"{what}: healthy")
            return
        if time.monotonic() > deadline:
            raise LocalProdError(f"{what} was not healthy within {START_TIMEOUT_S:.0f} s (see {log})")
        time.sleep(1.0)


def _prepare(settings: Settings) -> Path:
    """Instance folder (dagster.yaml copied), workspace with the gRPC port, the Celery config module."""
    for folder in (settings.dagster_home, settings.data_dir / "inbox", settings.root / "logs", settings.celery_dir):
        folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(CONFIG_DIR / "dagster.yaml", settings.dagster_home / "dagster.yaml")
    workspace = (CONFIG_DIR / "workspace.yaml").read_text().replace("port: 4000", f"port: {settings.grpc_port}")
    (settings.root / "workspace.yaml").write_text(workspace)
    (settings.celery_dir / "dagster_celery_config.py").write_text(CELERY_CONFIG)
    return settings.root / "workspace.yaml"


def _prepare_instance(env: Mapping[str, str]) -> None:
    """Create the storage tables once (before several processes race to) and set the project's pools."""
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        import dagster as dg

        from cyber_pipelines.instance import ensure_pool_limits

        with dg.DagsterInstance.get() as instance:
            ensure_pool_limits(instance)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def commands(settings: Settings, workspace: Path) -> list[tuple[str, list[str]]]:
    """The processes, in start order: code server, workers, daemon, webserver."""
    bin_dir = Path(sys.executable).parent
    grpc = [str(bin_dir / "dagster"), "code-server", "start", "-h", HOST, "-p", str(settings.grpc_port)]
    grpc += ["-m", CODE_MODULE, "-d", str(PROJECT_ROOT), "--location-name", LOCATION]
    workers = [
        (
            f"worker{i + 1}",
            [str(bin_dir / "celery"), "-A", "dagster_celery.app", "worker", "-Q", "dagster", "-n", name, *WORKER_ARGS],
        )
        for i, name in enumerate(worker_names(settings))
    ]
    daemon = [str(bin_dir / "dagster-daemon"), "run", "-w", str(workspace)]
    webserver = [str(bin_dir / "dagster-webserver"), "-h", HOST, "-p", str(settings.port), "-w", str(workspace)]
    return [("code-server", grpc), *workers, ("daemon", daemon), ("webserver", webserver)]


def start(settings: Settings, progress: Callable[[str], None] = print) -> list[Started]:
    began = time.monotonic()
    running = [r for r in read_records(settings) if is_ours(r)]
    if running:
        raise LocalProdError(
            f"already running from {settings.root} (pids {', '.join(str(r.pid) for r in running)}); "
            "stop it first: make local-prod-stop"
        )
    for port, what in ((settings.port, "webserver"), (settings.grpc_port, "gRPC code server")):
        if not port_is_free(port):
            raise LocalProdError(
                f"port {port} on {HOST} ({what}) is taken; nothing was started. Choose another: "
                + ("make local-prod PORT=..." if what == "webserver" else "CYBER_GRPC_PORT=...")
            )
    _check_broker(settings.broker)
    created = ensure_database(settings.postgres_url)
    progress(f"database {_redact(settings.postgres_url)}" + (" created" if created else " exists"))
    workspace = _prepare(settings)
    env = {**os.environ, **settings.environment()}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    _prepare_instance(settings.environment())

    logs = settings.root / "logs"
    records: list[Started] = []
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        planned = commands(settings, workspace)
        for name, argv in planned:
            if name == "daemon":  # the daemon and the webserver load the location from the running server
                grpc_up = partial(_grpc_healthy, settings, env)
                _wait("the gRPC code server", grpc_up, logs / "code-server.log", records, deadline, progress)
            paths = [str(settings.celery_dir), env.get("PYTHONPATH", "")]  # the workers' Celery config module
            extra = {"PYTHONPATH": os.pathsep.join(filter(None, paths))} if name.startswith("worker") else {}
            records.append(_spawn(name, argv, {**env, **extra}, logs))
            _write_records(settings, records)  # after each: a failed start is still stopped exactly
        names = worker_names(settings)
        checks: list[tuple[str, Callable[[], bool], str]] = [
            ("the webserver", lambda: _server_info(settings), "webserver"),
            (f"the code location {LOCATION}", lambda: _location_loaded(settings), "code-server"),
            (f"{len(names)} Celery workers", lambda: workers_answer(settings, names), "worker1"),
            ("the daemon", lambda: _daemons_healthy(settings), "daemon"),
        ]
        for what, healthy, log in checks:
            _wait(what, healthy, logs / f"{log}.log", records, deadline, progress)
    except BaseException:
        stop(settings, progress=lambda _line: None)
        raise
    took = time.monotonic() - began
    progress(f"local-prod is up in {took:.0f} s: {settings.url} (logs in {logs}; stop: make local-prod-stop)")
    return records


# -- stop --------------------------------------------------------------------------------------------
def _signal(pgid: int, leader: bool, sig: signal.Signals) -> None:
    try:
        if leader:
            os.killpg(pgid, sig)
        else:  # the leader is gone: its group's remaining members, one by one
            for pid in group_members(pgid):
                os.kill(pid, sig)
    except ProcessLookupError:
        pass


def stop(settings: Settings, timeout: float = STOP_TIMEOUT_S, progress: Callable[[str], None] = print) -> int:
    """Stop the recorded process groups; return how many were still running. Removes the pid file."""
    records = read_records(settings)
    if not records:
        progress(f"local-prod is not running (no {settings.pid_file})")
        return 0
    targets: list[tuple[Started, bool]] = []  # (record, leader still ours)
    for record in reversed(records):  # webserver and daemon first, the code server last
        ours = is_ours(record)
        if ours is None:
            progress(f"{record.name}: pid {record.pid} now runs another command; left alone")
        elif ours or group_members(record.pid):
            targets.append((record, bool(ours)))
    for record, leader in targets:
        _signal(record.pid, leader, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(group_members(r.pid) for r, _ in targets):
        time.sleep(0.2)
    for record, _leader in targets:
        if group_members(record.pid):
            progress(f"{record.name}: still running after {timeout:.0f} s; SIGKILL")
            _signal(record.pid, is_ours(record) is True, signal.SIGKILL)
    for record, _leader in targets:
        stop_by = time.monotonic() + 10
        while group_members(record.pid) and time.monotonic() < stop_by:
            time.sleep(0.1)
    settings.pid_file.unlink(missing_ok=True)
    progress(f"local-prod stopped ({len(targets)} of {len(records)} process groups were running)")
    return len(targets)


def status(settings: Settings, progress: Callable[[str], None] = print) -> bool:
    records = read_records(settings)
    if not records:
        progress("local-prod is not running")
        return False
    up = True
    for record in records:
        ours = is_ours(record)
        state = "running" if ours else ("gone" if ours is False else "pid reused by another command")
        up = up and bool(ours)
        progress(f"{record.name:12} pid {record.pid:>7}  {state}")
    url = json.loads(settings.pid_file.read_text()).get("url", settings.url)
    progress(f"UI: {url}" if up else "local-prod is partly down: make local-prod-stop, then make local-prod")
    return up


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cyber_pipelines.localprod", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["start", "stop", "status", "env"])
    parser.add_argument("--port", type=int, default=None, help="webserver port (default: PORT or 3000)")
    args = parser.parse_args(argv)
    settings = Settings.from_env(args.port)
    try:
        if args.command == "start":
            start(settings)
        elif args.command == "stop":
            stop(settings)
        elif args.command == "status":
            return 0 if status(settings) else 3
        else:
            for key, value in settings.environment().items():
                print(f"export {key}={shlex.quote(value)}")
    except LocalProdError as exc:
        print(f"local-prod: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
