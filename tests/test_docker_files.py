"""Static validation of the container deployment in docker/ (no Docker engine runs on these machines).

- docker/dagster.yaml goes through Dagster's own loader (``InstanceRef.from_dir``: the instance schema and
  its cross-field rules), with the environment the compose file gives the Dagster containers; the storage
  and compute-log classes are imported and their config checked against their schemas; the run launcher
  and run coordinator are instantiated (neither connects to anything when built).
- docker/workspace.yaml and docker/celery.yaml go through Dagster's and dagster-celery's validators.
- docker-compose.yml is parsed and checked for structure (images, healthchecks, depends_on, volumes,
  ports on 127.0.0.1, variables documented in .env.example, no secrets inline) and against the other
  files (network and volume names, env vars, ports, paths copied into the image).
- The Dockerfile: a non-root final stage, torch from the CPU index before the project, what it copies.
- ``docker compose config`` renders the file when the client has the compose plugin (not here: skipped).
"""

from __future__ import annotations

import ast
import fnmatch
import importlib
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
COMPOSE_FILE = DOCKER / "docker-compose.yml"
ENV_EXAMPLE = DOCKER / ".env.example"
DOCKERFILE = DOCKER / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"  # the build context is the repository root

SECRET_NAME = re.compile(r"PASSWORD|TOKEN|SECRET|API_KEY", re.IGNORECASE)
PLACEHOLDERS = {"", "change-me"}
HEALTHY, COMPLETED = "service_healthy", "service_completed_successfully"

# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}, ${VAR:+alt}, $VAR; $$ is a literal $.
_VARIABLE = re.compile(
    r"\$\$|\$\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}|\$(?P<plain>[A-Za-z_][A-Za-z0-9_]*)"
)


# --- helpers --------------------------------------------------------------------------------------------


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE_FILE)


def env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f".env.example: not NAME=value: {line!r}"
            values[name.strip()] = value.strip()
    return values


def strings(node: Any) -> Iterator[str]:
    """Every string value in a parsed YAML tree."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, Mapping):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)


def variables(text: str) -> set[str]:
    return {m["braced"] or m["plain"] for m in _VARIABLE.finditer(text) if m.group(0) != "$$"}


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Compose's variable substitution (the subset this file uses); raises for an unmet ``:?``/``?``."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match["braced"] or match["plain"], match["op"], match["arg"]
        value = env.get(name)
        if op in (":?", "?") and (value is None or (op == ":?" and value == "")):
            raise ValueError(f"{name}: {arg}")
        if op in (":-", "-") and (value is None or (op == ":-" and value == "")):
            return arg
        if op in (":+", "+"):
            return arg if value else ""
        return value or ""

    return _VARIABLE.sub(substitute, text)


def resolved(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, Mapping):
        return {key: resolved(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [resolved(value, env) for value in node]
    return node


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def command(service: Mapping[str, Any]) -> list[str]:
    cmd = service.get("command") or []
    return cmd.split() if isinstance(cmd, str) else [str(part) for part in cmd]


def option(cmd: list[str], *names: str) -> str:
    for i, part in enumerate(cmd[:-1]):
        if part in names:
            return cmd[i + 1]
    raise AssertionError(f"none of {names} in {cmd}")


def is_one_shot(service: Mapping[str, Any]) -> bool:
    return str(service.get("restart", "no")) == "no"


def image_services(spec: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run the project's image (built from docker/Dockerfile)."""
    return {name: s for name, s in spec["services"].items() if "build" in s}


def dagster_env_refs(node: Any) -> set[str]:
    """Names of the ``{env: NAME}`` entries of a Dagster YAML file."""
    if isinstance(node, Mapping):
        if set(node) == {"env"}:
            return {str(node["env"])}
        return set().union(*(dagster_env_refs(v) for v in node.values())) if node else set()
    if isinstance(node, list):
        return set().union(*(dagster_env_refs(v) for v in node)) if node else set()
    return set()


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    lines, current = [], ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    out = []
    for line in lines:
        keyword, _, args = line.partition(" ")
        out.append((keyword.upper(), args.strip()))
    return out


def dockerfile_stages() -> list[tuple[str, list[tuple[str, str]]]]:
    stages: list[tuple[str, list[tuple[str, str]]]] = []
    for keyword, args in dockerfile_instructions():
        if keyword == "FROM":
            parts = args.split()
            name = parts[-1] if len(parts) >= 3 and parts[-2].upper() == "AS" else f"stage{len(stages)}"
            stages.append((name, []))
        elif stages:
            stages[-1][1].append((keyword, args))
    return stages


def copies_into_image() -> dict[str, str]:
    """Source (in the build context) -> destination of each COPY from the context (not --from)."""
    copies = {}
    for _, instructions in dockerfile_stages():
        for keyword, args in instructions:
            if keyword == "COPY" and "--from" not in args:
                *sources, destination = [p for p in args.split() if not p.startswith("--")]
                for source in sources:
                    copies[source] = destination
    return copies


def dockerignored(path: str) -> bool:
    """Whether .dockerignore excludes ``path`` (relative to the context; last matching rule wins).

    Docker anchors a rule at the context root (no basename matching as in .gitignore); ``**/`` matches
    any depth, and a rule on a folder covers what is in it."""
    parts = Path(path).parts

    def matches(pattern: str) -> bool:
        if pattern.startswith("**/"):
            segments = ("/".join(parts[j : i + 1]) for i in range(len(parts)) for j in range(i + 1))
            return any(fnmatch.fnmatch(segment, pattern[3:]) for segment in segments)
        return any(fnmatch.fnmatch("/".join(parts[: i + 1]), pattern) for i in range(len(parts)))

    excluded = False
    for raw in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        rule = raw.strip()
        if rule and not rule.startswith("#") and matches(rule.lstrip("!").strip("/")):
            excluded = not rule.startswith("!")
    return excluded


@pytest.fixture
def container_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment of the daemon container (interpolated with .env.example), set in this process."""
    spec = resolved(compose(), env_example())
    env = environment(spec["services"]["daemon"])
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


# --- docker/dagster.yaml -----------------------------------------------------------------------------


def test_dagster_yaml_passes_dagsters_instance_loader(tmp_path: Path, container_env: dict[str, str]) -> None:
    from dagster._config import process_config
    from dagster._core.instance.ref import InstanceRef
    from dagster._core.run_coordinator import QueuedRunCoordinator
    from dagster_docker import DockerRunLauncher
    from dagster_docker.utils import validate_docker_image

    shutil.copyfile(DOCKER / "dagster.yaml", tmp_path / "dagster.yaml")
    ref = InstanceRef.from_dir(str(tmp_path))  # the schema and its cross-field rules, as `dagster` loads it

    # Storage and compute logs: the classes import and their config (env vars resolved) fits their schema.
    # Not instantiated: the PostgreSQL storage connects and creates tables when built.
    for data in (ref.storage_data, ref.run_storage_data, ref.event_storage_data, ref.schedule_storage_data):
        assert data is not None
        assert data.module_name == "dagster_postgres", data
    checked = {}
    for data in (ref.storage_data, ref.compute_logs_data):
        assert data is not None
        klass = getattr(importlib.import_module(data.module_name), data.class_name)
        result = process_config(klass.config_type(), yaml.safe_load(data.config_yaml))
        assert result.success, (data.class_name, [e.message for e in result.errors or []])
        checked[data.class_name] = result.value
    assert set(checked) == {"DagsterPostgresStorage", "LocalComputeLogManager"}, set(checked)
    postgres = checked["DagsterPostgresStorage"]
    assert postgres is not None
    assert postgres["postgres_db"]["hostname"] == "postgres"  # the compose service
    assert postgres["postgres_db"]["password"] == container_env["POSTGRES_PASSWORD"]
    # The SQLAlchemy engines find their driver (no connection is made): SQLAlchemy 2.1 reads a bare
    # postgresql:// as psycopg 3, which is not installed; dagster.yaml names psycopg2.
    from dagster_postgres.utils import pg_url_from_config

    from cyber_pipelines.vsm.events import _engine_url

    sqlalchemy.create_engine(pg_url_from_config(postgres)).dispose()
    sqlalchemy.create_engine(_engine_url(container_env["CYBER_VSM_DB"])).dispose()

    # Run launcher and coordinator: built for real (offline: the Docker client is made only at launch).
    assert ref.run_launcher_data is not None and ref.run_coordinator_data is not None
    launcher = ref.run_launcher_data.rehydrate(as_type=DockerRunLauncher)
    assert launcher.image == container_env["DAGSTER_IMAGE"]
    validate_docker_image(launcher.image)
    assert isinstance(ref.run_coordinator_data.rehydrate(), QueuedRunCoordinator)

    settings: dict[str, Any] = dict(ref.settings)
    assert settings["telemetry"]["enabled"] is False
    assert settings["run_monitoring"]["enabled"] is True
    assert settings["concurrency"]["runs"]["max_concurrent_runs"] >= 1


def test_dagster_yaml_fails_the_loader_when_broken(tmp_path: Path, container_env: dict[str, str]) -> None:
    """The loader really rejects a bad file (so the test above proves something)."""
    from dagster._core.errors import DagsterInvalidConfigError
    from dagster._core.instance.ref import InstanceRef

    config = load_yaml(DOCKER / "dagster.yaml")
    config["run_launcher"]["config"]["netwrk"] = config["run_launcher"]["config"].pop("network")
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    with pytest.raises(Exception, match="netwrk"):
        InstanceRef.from_dir(str(tmp_path)).run_launcher_data.rehydrate()  # type: ignore[union-attr]

    config = load_yaml(DOCKER / "dagster.yaml")
    config["concurrency"]["pools"]["granularity"] = "step"
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    with pytest.raises(DagsterInvalidConfigError, match="granularity"):
        InstanceRef.from_dir(str(tmp_path))


def test_every_pool_of_the_assets_has_a_nonzero_limit() -> None:
    """Pools without a limit of their own get ``pools.default_limit``; the others are set by the compose
    ``init`` service from ``cyber_pipelines.instance.POOL_LIMITS`` (dagster.yaml has no per-pool limit)."""
    from cyber_pipelines.instance import POOL_LIMITS

    pools: set[str] = set()
    for path in sorted((ROOT / "assets").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        constants = {
            target.id: node.value.value
            for node in tree.body
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
            for target in node.targets
            if isinstance(target, ast.Name)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.keyword) and node.arg == "pool":
                if isinstance(node.value, ast.Constant):
                    pools.add(str(node.value.value))
                elif isinstance(node.value, ast.Name) and node.value.id in constants:
                    pools.add(str(constants[node.value.id]))
                elif isinstance(node.value, ast.Name):  # imported constant
                    pools.add(str(__import__(f"assets.{path.stem}", fromlist=["_"]).__dict__[node.value.id]))
    assert pools, "no pool= found in assets/"
    default_limit = load_yaml(DOCKER / "dagster.yaml")["concurrency"]["pools"]["default_limit"]
    limits = {pool: POOL_LIMITS.get(pool, default_limit) for pool in pools}
    assert all(limit >= 1 for limit in limits.values()), limits
    init = " ".join(command(compose()["services"]["init"]))
    assert "get_instance" in init or "ensure_pool_limits" in init, "the init service must set POOL_LIMITS"


# --- docker/workspace.yaml and docker/celery.yaml ------------------------------------------------------


def test_workspace_yaml_validates_and_points_at_the_code_server() -> None:
    from dagster._core.workspace.config_schema import process_workspace_config

    workspace = load_yaml(DOCKER / "workspace.yaml")
    result = process_workspace_config(workspace)
    assert result.success, [e.message for e in result.errors or []]
    (entry,) = workspace["load_from"]
    grpc = entry["grpc_server"]
    services = compose()["services"]
    assert grpc["host"] in services, f"workspace host {grpc['host']} is no compose service"
    server = command(services[grpc["host"]])
    assert int(option(server, "-p", "--port")) == grpc["port"]
    assert option(server, "-h", "--host") == "0.0.0.0"  # reachable from the other containers
    assert option(server, "--location-name") == grpc["location_name"]
    assert option(server, "-m", "--module-name") == "cyber_pipelines.definitions"

    broken = {"load_from": [{"grpc_server": {"host": "code-server", "prot": 4000}}]}
    assert not process_workspace_config(broken).success


def test_celery_yaml_validates_and_uses_the_compose_redis(container_env: dict[str, str]) -> None:
    from dagster_celery.cli import get_validated_config

    config = get_validated_config(str(DOCKER / "celery.yaml"))
    assert config["broker"] == container_env["DAGSTER_CELERY_BROKER_URL"]
    assert config["backend"] == container_env["DAGSTER_CELERY_BACKEND_URL"]
    services = compose()["services"]
    for url in (config["broker"], config["backend"]):
        assert re.match(r"redis://redis:6379/\d+$", url), url
    assert "redis" in services
    worker = command(services["celery-worker"])
    assert worker[:3] == ["dagster-celery", "worker", "start"]
    assert option(worker, "-A", "--app") == "dagster_celery.app"
    assert option(worker, "-y", "--config-yaml") == copies_into_image()["docker/celery.yaml"]


# --- docker-compose.yml ----------------------------------------------------------------------------------


def test_compose_services_are_complete() -> None:
    spec = compose()
    services = spec["services"]
    expected = {"postgres", "qdrant", "redis", "code-server", "webserver", "daemon", "celery-worker"}
    assert expected | {"metrics", "prometheus", "grafana"} <= set(services)
    declared_volumes = set(spec.get("volumes") or {})
    problems = []
    for name, service in services.items():
        if "image" not in service and "build" not in service:
            problems.append(f"{name}: neither image nor build")
        image = str(service.get("image", ""))
        if image and "build" not in service and (":" not in image or image.endswith(":latest")):
            problems.append(f"{name}: image {image} is not pinned to a version")
        if not is_one_shot(service) and not (service.get("healthcheck") or {}).get("test"):
            problems.append(f"{name}: long-running without a healthcheck")
        depends = service.get("depends_on") or {}
        if isinstance(depends, list):
            problems.append(f"{name}: depends_on without a condition")
            depends = {}
        for target, rule in depends.items():
            if target not in services:
                problems.append(f"{name}: depends_on unknown service {target}")
                continue
            condition = (rule or {}).get("condition")
            if condition == HEALTHY and not services[target].get("healthcheck"):
                problems.append(f"{name}: waits for {target} to be healthy, which has no healthcheck")
            elif condition == COMPLETED and not is_one_shot(services[target]):
                problems.append(f"{name}: waits for long-running {target} to complete")
            elif condition not in (HEALTHY, COMPLETED):
                problems.append(f"{name}: depends_on {target} with condition {condition}")
        for volume in service.get("volumes") or []:
            source = str(volume).split(":")[0]
            if not source.startswith((".", "/")) and source not in declared_volumes:
                problems.append(f"{name}: volume {source} is not declared")
        for port in service.get("ports") or []:
            if not str(port).startswith("127.0.0.1:"):
                problems.append(f"{name}: port {port} is published beyond 127.0.0.1")
    assert not problems, "\n".join(problems)
    assert {"webserver", "grafana"} <= {n for n, s in services.items() if s.get("ports")}


def test_compose_mounts_exist() -> None:
    """Bind-mounted files and folders exist; those of the monitoring helper are skipped while absent."""
    missing: list[str] = []
    pending: list[str] = []
    for name, service in compose()["services"].items():
        for volume in service.get("volumes") or []:
            source = str(volume).split(":")[0]
            if source.startswith("/"):
                assert source == "/var/run/docker.sock", f"{name}: host path {source} mounted"
            elif source.startswith("."):
                path = (DOCKER / source).resolve()
                if not path.exists():
                    (pending if source.startswith(("./prometheus", "./grafana")) else missing).append(
                        f"{name}: {source}"
                    )
    assert not missing, missing
    if pending:
        pytest.skip(f"not written yet (the monitoring files): {pending}")


def test_monitoring_files_match_the_compose_services() -> None:
    services = compose()["services"]
    prometheus_yml = DOCKER / "prometheus" / "prometheus.yml"
    provider = DOCKER / "grafana" / "provisioning" / "dashboards"
    if not prometheus_yml.exists() or not provider.exists():
        pytest.skip("docker/prometheus or docker/grafana not written yet")
    metrics = command(services["metrics"])
    target = f"metrics:{option(metrics, '--port')}"
    assert option(metrics, "--host") == "0.0.0.0"  # reachable from the prometheus container
    scraped = {
        t for job in load_yaml(prometheus_yml)["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]
    }
    assert target in scraped, (target, scraped)
    mounts = {str(v).split(":")[1] for v in services["grafana"]["volumes"]}
    for path in provider.glob("*.y*ml"):
        for item in load_yaml(path).get("providers") or []:
            assert item["options"]["path"] in mounts, (path.name, item["options"]["path"], mounts)
    for path in (DOCKER / "grafana" / "provisioning" / "datasources").glob("*.y*ml"):
        for source in load_yaml(path).get("datasources") or []:
            host = re.match(r"https?://([^:/]+)", source["url"])
            assert host and host.group(1) in services, source["url"]


def test_compose_variables_are_documented_and_secrets_required() -> None:
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    documented = env_example()
    used = set().union(*(variables(s) for s in strings(compose())))
    assert used, "no ${VAR} in the compose file"
    assert not used - set(documented), f"used in docker-compose.yml, missing in .env.example: {used - set(documented)}"
    resolved(compose(), documented)  # every ${VAR:?...} is met by .env.example
    # The secrets have no default: without docker/.env, compose stops with the message.
    for secret in ("POSTGRES_PASSWORD", "QDRANT_API_KEY", "GRAFANA_ADMIN_PASSWORD"):
        assert re.search(rf"\$\{{{secret}:\?", text), f"{secret} must be required (${{{secret}:?...}})"
        with pytest.raises(ValueError, match=secret):
            resolved(compose(), {k: v for k, v in documented.items() if k != secret})


def test_env_example_has_comments_and_only_placeholders() -> None:
    lines = ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        j = i - 1
        while j >= 0 and lines[j].strip() and not lines[j].lstrip().startswith("#"):
            j -= 1  # a block of variables under one comment
        assert j >= 0 and lines[j].lstrip().startswith("#"), f".env.example: {line!r} has no comment above"
    for name, value in env_example().items():
        if SECRET_NAME.search(name):
            assert value in PLACEHOLDERS, f".env.example: {name} holds a value, not a placeholder"


def test_no_secret_is_inline_in_compose() -> None:
    problems = []
    for name, service in compose()["services"].items():
        for key, value in environment(service).items():
            if SECRET_NAME.search(key) and not re.fullmatch(r"\$\{[A-Za-z_][A-Za-z0-9_]*(:?[-?][^}]*)?\}", value):
                problems.append(f"{name}: {key} is not a ${{VAR}} reference")
    for text in strings(compose()):
        for password in re.findall(r"://[^:/@\s]+:([^@\s]+)@", text):
            if not re.fullmatch(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}", password):
                problems.append(f"a URL carries a literal password: {text}")
    assert not problems, problems
    assert not any("change-me" in s for s in strings(compose()))


def test_compose_matches_dagster_yaml_and_the_image() -> None:
    spec = compose()
    services = spec["services"]
    instance = load_yaml(DOCKER / "dagster.yaml")
    launcher = instance["run_launcher"]["config"]
    # The run containers join the compose network and mount the compose volumes, by their fixed names.
    assert launcher["network"] == spec["networks"]["default"]["name"]
    names = {v.get("name"): key for key, v in spec["volumes"].items() if v}
    dagster = image_services(spec)
    for mount in launcher["container_kwargs"]["volumes"]:
        volume, target = mount.split(":")[:2]
        assert volume in names, f"run containers mount {volume}, not a named volume of the compose file"
        assert any(f"{names[volume]}:{target}" in map(str, s.get("volumes") or []) for s in dagster.values())
    assert instance["compute_logs"]["config"]["base_dir"] in {
        m.split(":")[1] for m in launcher["container_kwargs"]["volumes"]
    }
    # Every {env: NAME} of dagster.yaml and every forwarded variable is set in each Dagster container.
    needed = dagster_env_refs(instance) | set(launcher["env_vars"])
    for name, service in image_services(spec).items():
        missing = needed - set(environment(service))
        assert not missing, f"{name} lacks {missing}"
    assert environment(services["code-server"])["DAGSTER_CURRENT_IMAGE"] == services["code-server"]["image"]
    # The config files are where the commands look for them.
    copies = copies_into_image()
    dagster_home = next(
        m.group(1)
        for k, a in dockerfile_stages()[-1][1]
        if k == "ENV"
        for m in [re.search(r"DAGSTER_HOME=(\S+)", a)]
        if m
    )
    assert copies["docker/dagster.yaml"] == f"{dagster_home}/dagster.yaml"
    for name in ("webserver", "daemon"):
        assert option(command(services[name]), "-w", "--workspace") == copies["docker/workspace.yaml"]
    assert option(command(services["webserver"]), "-h", "--host") == "0.0.0.0"  # published on 127.0.0.1 only
    assert command(services["daemon"])[:2] == ["dagster-daemon", "run"]
    # The build: one image, built from the repository root with docker/Dockerfile.
    for name, service in image_services(spec).items():
        context = (DOCKER / service["build"]["context"]).resolve()
        assert context == ROOT, name
        assert (context / service["build"]["dockerfile"]).resolve() == DOCKERFILE
        assert service["image"] == services["code-server"]["image"]


# --- Dockerfile and .dockerignore ------------------------------------------------------------------------


def test_dockerfile_is_multi_stage_non_root_with_cpu_torch() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2, "a builder stage and a runtime stage"
    (builder, build), (_, runtime) = stages[0], stages[-1]
    users = [args for keyword, args in runtime if keyword == "USER"]
    assert users, "the final stage sets no USER: it would run as root"
    assert users[-1].split(":")[0] not in {"root", "0"}, users[-1]
    assert any(k == "COPY" and f"--from={builder}" in a and "/opt/venv" in a for k, a in runtime)
    assert not any(k == "RUN" and "pip install" in a for k, a in runtime), "installs belong in the builder"

    runs = [args for keyword, args in build if keyword == "RUN"]
    torch = next((i for i, a in enumerate(runs) if re.search(r"pip install .*torch==", a)), None)
    project = next((i for i, a in enumerate(runs) if re.search(r"pip install \.(\s|$)", a)), None)
    assert torch is not None and project is not None, runs
    assert torch < project or (torch == project and runs[torch].index("torch==") < runs[project].index("install .")), (
        "torch must be installed from the CPU index before the project"
    )
    assert "--index-url https://download.pytorch.org/whl/cpu" in runs[torch]
    pin = re.search(r"torch==(\S+)", runs[torch]).group(1)  # type: ignore[union-attr]
    makefile_pin = re.search(r"torch==(\S+)", (ROOT / "Makefile").read_text(encoding="utf-8"))
    assert makefile_pin and pin == makefile_pin.group(1), "the Dockerfile and the Makefile pin the same torch"

    exposed = {p for k, a in runtime if k == "EXPOSE" for p in a.split()}
    assert {"3000", "4000", "9464"} <= exposed, exposed
    env = " ".join(a for k, a in runtime if k == "ENV")
    assert "DAGSTER_HOME=" in env


def test_dockerfile_copies_exist_and_pass_dockerignore() -> None:
    assert DOCKERIGNORE.exists(), "the build context is the repository root: .dockerignore belongs there"
    for source in copies_into_image():
        assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
        assert not dockerignored(source), f"COPY {source}: excluded by .dockerignore"
        if (ROOT / source).is_dir():  # and none of the package's own files (code, YAML) is dropped
            files = [f for f in (ROOT / source).rglob("*") if f.suffix in {".py", ".yaml"}]
            dropped = [str(f.relative_to(ROOT)) for f in files if dockerignored(str(f.relative_to(ROOT)))]
            assert not dropped, f"COPY {source}: .dockerignore drops {dropped[:5]}"
    for never in (".venv", "docker/.env", ".env", "data", ".git"):
        assert dockerignored(never), f".dockerignore lets {never} into the build context"


def test_the_dockerignore_matcher_itself() -> None:
    assert dockerignored(".venv/bin/python")
    assert dockerignored("cyber_pipelines/__pycache__/x.pyc")
    assert dockerignored("cyber_pipelines.egg-info/PKG-INFO")
    assert not dockerignored("cyber_pipelines/data/x.py")  # `data` is anchored at the root
    assert not dockerignored("cyber_pipelines/definitions.py")
    assert not dockerignored("docker/.env.example")


# --- docker compose config (when the client can render it) ----------------------------------------------


def test_docker_compose_config_renders() -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker client on this machine")
    version = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, timeout=30, check=False)
    if version.returncode != 0:
        reason = (version.stderr or version.stdout).strip().splitlines()
        pytest.skip(
            f"`docker compose version` failed (no compose plugin): {reason[0] if reason else version.returncode}"
        )
    result = subprocess.run(
        [docker, "compose", "--env-file", str(ENV_EXAMPLE), "-f", str(COMPOSE_FILE), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
