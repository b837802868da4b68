"""The security gate of `make test`: secrets, a static security lint, the YAML configs, the dependencies.

- Secrets: detect-secrets scans the git-tracked files against ``.secrets.baseline``; a secret that is not in
  the baseline fails, and every secret in the baseline must be audited as not real (``is_secret: false``:
  the fake servers' test tokens). After an intended change: ``detect-secrets scan --baseline
  .secrets.baseline`` then ``detect-secrets audit .secrets.baseline``.
- Bandit over cyber_pipelines/, assets/ and sensors/ with the config in pyproject.toml: no finding of
  medium or high severity; a waiver is ``# nosec BXXX: <reason>`` on the line.
- YAML: every tracked YAML file parses; the root dagster.yaml and workspace.yaml validate against Dagster's
  own schemas, the pipeline config and the VSM policy through the project's loaders (the docker/ files
  are validated in test_docker_files.py).
- pip-audit of the installed environment: fails on a known vulnerability; where its advisory service
  cannot be reached (as on these machines: PyPI's JSON API answers 404, so every dependency comes back
  "could not be audited" while pip-audit itself exits 0), the test is skipped with that reason, never
  passed.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import string
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT / ".secrets.baseline"
BANDIT_TARGETS = ("cyber_pipelines", "assets", "sensors")


def _tool(name: str) -> str:
    """A console script of the venv this test runs in (the dev extras install them), else from PATH."""
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed: `pip install -e '.[dev]'` (make install) provides it")
    return found


def _git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


# -- secrets ------------------------------------------------------------------------------------------
def _secret_ids(results: dict) -> set[tuple[str, str, str]]:
    return {(name, r["type"], r["hashed_secret"]) for name, found in results.items() for r in found}


def new_secrets(repo: Path, baseline: Path, work: Path) -> list[str]:
    """Secrets in ``repo``'s git-tracked files that ``baseline`` does not hold, as 'file:line type'.

    Scans with the baseline's own plugins and filters (a copy is rescanned, the baseline stays untouched).
    """
    copy = work / "rescanned.baseline"
    shutil.copyfile(baseline, copy)
    proc = subprocess.run(
        [_tool("detect-secrets"), "scan", "--baseline", str(copy)],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, f"detect-secrets scan failed: {proc.stderr.strip()[-2000:]}"
    known = _secret_ids(json.loads(baseline.read_text())["results"])
    now = json.loads(copy.read_text())["results"]
    return sorted(
        f"{name}:{r['line_number']} {r['type']}"
        for name, found in now.items()
        for r in found
        if (name, r["type"], r["hashed_secret"]) not in known
    )


def test_no_secret_in_the_tracked_files_beyond_the_audited_baseline(tmp_path: Path) -> None:
    found = new_secrets(ROOT, BASELINE, tmp_path)
    assert not found, (
        "possible secrets not in .secrets.baseline (remove them; if one is a fake, run `detect-secrets scan "
        "--baseline .secrets.baseline` and `detect-secrets audit .secrets.baseline`):\n  " + "\n  ".join(found)
    )


def test_the_baseline_holds_only_secrets_audited_as_not_real() -> None:
    baseline = json.loads(BASELINE.read_text())
    unaudited = [
        f"{name}:{r['line_number']} {r['type']} (is_secret: {r.get('is_secret', 'not audited')})"
        for name, found in baseline["results"].items()
        for r in found
        if r.get("is_secret") is not False
    ]
    assert not unaudited, "the baseline holds secrets not audited as fakes:\n  " + "\n  ".join(unaudited)
    # the scan excludes only what is not the project's: the venv, data, demo homes, the baseline itself
    excluded = [f for f in baseline["filters_used"] if f["path"].endswith("should_exclude_file")]
    assert excluded and all(not re.search(p, "cyber_pipelines/cli.py") for p in excluded[0]["pattern"])


def _fake_aws_key() -> str:
    return "AKIA" + "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(16))


def test_the_secrets_gate_catches_a_planted_secret(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git("init", "-q", cwd=repo)
    shutil.copyfile(BASELINE, repo / ".secrets.baseline")
    # Made at run time, so that this file holds no secret itself.
    (repo / "settings.py").write_text(
        f'AWS_ACCESS_KEY_ID = "{_fake_aws_key()}"\ndb_password = "{secrets.token_hex(20)}"\n'
    )
    (repo / "untracked.py").write_text(f'api_token = "{secrets.token_hex(20)}"\n')
    _git("add", "settings.py", ".secrets.baseline", cwd=repo)
    found = new_secrets(repo, repo / ".secrets.baseline", tmp_path)
    assert any(f.startswith("settings.py:1 AWS Access Key") for f in found), found
    assert any(f.startswith("settings.py:2 ") for f in found), found
    assert not any(f.startswith("untracked.py") for f in found), "only git-tracked files are scanned"


# -- bandit -------------------------------------------------------------------------------------------
def bandit_report(*targets: str, cwd: Path = ROOT) -> dict:
    proc = subprocess.run(
        [_tool("bandit"), "-c", str(ROOT / "pyproject.toml"), "-r", *targets, "-f", "json", "-q"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    try:  # exit code 1 means "found something" (of any severity): the report tells
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"bandit gave no report (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")
    assert not report["errors"], f"bandit could not scan: {report['errors']}"
    return report


def serious(report: dict) -> list[str]:
    return [
        f"{r['filename']}:{r['line_number']} {r['test_id']} ({r['issue_severity']}, confidence "
        f"{r['issue_confidence']}): {r['issue_text']}"
        for r in report["results"]
        if r["issue_severity"] in ("MEDIUM", "HIGH")
    ]


def test_bandit_finds_nothing_of_medium_or_high_severity() -> None:
    report = bandit_report(*BANDIT_TARGETS)
    scanned = {Path(name).as_posix() for name in report["metrics"] if name != "_totals"}
    expected = {p.relative_to(ROOT).as_posix() for t in BANDIT_TARGETS for p in (ROOT / t).rglob("*.py")}
    assert expected <= scanned, f"bandit skipped {sorted(expected - scanned)} (an exclude in pyproject.toml?)"
    found = serious(report)
    assert not found, (
        "bandit findings of medium+ severity (fix each, or waive it on its line with "
        "`# nosec BXXX: <reason>`):\n  " + "\n  ".join(found)
    )


def test_every_bandit_waiver_names_its_test_and_its_reason() -> None:
    waiver = re.compile(r"#\s*nosec\b(?P<rest>.*)$")
    good = re.compile(r"^\s+B\d{3}(\s*,\s*B\d{3})*\s*:\s*\S.{3,}")
    bad = []
    for target in BANDIT_TARGETS:
        for path in sorted((ROOT / target).rglob("*.py")):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                match = waiver.search(line)
                if match and not good.match(match.group("rest")):
                    bad.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not bad, "waivers need the form `# nosec BXXX: <reason>`:\n  " + "\n  ".join(bad)


def test_the_bandit_gate_catches_planted_findings(tmp_path: Path) -> None:
    planted = tmp_path / "planted"
    planted.mkdir()
    (planted / "risky.py").write_text(
        "import subprocess\n\nimport yaml\n\n\n"
        "def run(command, text):\n"
        "    subprocess.call(command, shell=True)\n"
        "    return yaml.load(text, Loader=yaml.Loader)\n"
    )
    found = serious(bandit_report("planted", cwd=tmp_path))
    assert any(" B602 " in f for f in found) and any(" B506 " in f for f in found), found


# -- YAML configs -------------------------------------------------------------------------------------
def _yaml_files() -> list[str]:
    try:
        names = _git("ls-files", "--", "*.yml", "*.yaml").split()
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: the same set from the tree
        skip = (".venv", "data", ".demo", "build", "node_modules")
        names = [
            p.relative_to(ROOT).as_posix()
            for p in [*ROOT.rglob("*.yml"), *ROOT.rglob("*.yaml")]
            if p.relative_to(ROOT).parts[0] not in skip
        ]
    return sorted(n for n in names if (ROOT / n).is_file())


def test_the_yaml_files_are_found() -> None:
    names = set(_yaml_files())
    expected = {"dagster.yaml", "workspace.yaml", "cyber_pipelines/pipeline.yaml", "cyber_pipelines/vsm/policy.yaml"}
    assert expected <= names, sorted(expected - names)


@pytest.mark.parametrize("name", _yaml_files())
def test_every_yaml_file_parses(name: str) -> None:
    with open(ROOT / name) as fh:
        documents = [doc for doc in yaml.safe_load_all(fh) if doc is not None]
    assert documents, f"{name} is empty"
    assert all(isinstance(doc, dict) for doc in documents), f"{name}: expected mappings"


def test_the_instance_config_validates_against_dagsters_schema() -> None:
    from dagster._core.instance.config import dagster_instance_config

    config, custom_class = dagster_instance_config(str(ROOT))  # reads ROOT/dagster.yaml, raises when invalid
    assert custom_class is None
    assert config["telemetry"]["enabled"] is False
    assert config["concurrency"]["runs"]["max_concurrent_runs"] >= 1


def test_dagsters_instance_schema_rejects_a_bad_config(tmp_path: Path) -> None:
    from dagster._core.errors import DagsterInvalidConfigError
    from dagster._core.instance.config import dagster_instance_config

    text = (ROOT / "dagster.yaml").read_text().replace("max_concurrent_runs: 2", "max_concurrent_runs: two")
    assert text != (ROOT / "dagster.yaml").read_text(), "the probe no longer edits dagster.yaml: update it"
    (tmp_path / "dagster.yaml").write_text(text)
    with pytest.raises(DagsterInvalidConfigError):
        dagster_instance_config(str(tmp_path))
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\nrun_monitorin:\n  enabled: true\n")
    with pytest.raises(DagsterInvalidConfigError):
        dagster_instance_config(str(tmp_path))


def test_the_workspace_validates_against_dagsters_schema() -> None:
    import importlib.util

    from dagster._core.workspace.config_schema import ensure_workspace_config

    path = ROOT / "workspace.yaml"
    config = ensure_workspace_config(yaml.safe_load(path.read_text()), str(path))
    entries = config["load_from"]
    assert isinstance(entries, list)
    modules = [entry["python_module"]["module_name"] for entry in entries]
    assert modules == ["cyber_pipelines.definitions"]
    assert importlib.util.find_spec(modules[0]) is not None


def test_dagsters_workspace_schema_rejects_a_bad_config() -> None:
    from dagster._core.errors import DagsterInvalidConfigError
    from dagster._core.workspace.config_schema import ensure_workspace_config

    with pytest.raises(DagsterInvalidConfigError):
        ensure_workspace_config({"load_from": [{"python_module": {"modul_name": "x"}}]}, "workspace.yaml")


def test_the_pipeline_config_and_the_vsm_policy_validate() -> None:
    from cyber_pipelines.config import load_settings
    from cyber_pipelines.vsm.policy import load_policy

    settings = load_settings(str(ROOT / "cyber_pipelines" / "pipeline.yaml"))
    assert settings.pairs
    policy = load_policy(ROOT / "cyber_pipelines" / "vsm" / "policy.yaml")
    assert policy.model_dump()  # strict pydantic models: an unknown or mistyped key raised above


# -- dependencies -------------------------------------------------------------------------------------
def test_no_known_vulnerability_in_the_installed_dependencies(tmp_path: Path) -> None:
    """pip-audit over this environment. Skipped, never passed, when its advisory service cannot answer."""
    out = tmp_path / "audit.json"
    command = [sys.executable, "-m", "pip_audit", "--format", "json", "--output", str(out)]
    command += ["--progress-spinner", "off", "--timeout", "10", "--skip-editable"]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=180)
    except subprocess.TimeoutExpired:
        pytest.skip("pip-audit: no answer from its advisory service within 180 s; the dependencies were NOT audited")
    if not out.exists() or not out.read_text().strip():
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(
            f"pip-audit could not reach its advisory service (exit {proc.returncode}: {last[:300]}); NOT audited"
        )
    deps = json.loads(out.read_text())["dependencies"]
    vulnerable = [
        f"{d['name']} {d['version']}: "
        + ", ".join(v["id"] + (f" (fixed in {v['fix_versions']})" if v.get("fix_versions") else "") for v in d["vulns"])
        for d in deps
        if d.get("vulns")
    ]
    assert not vulnerable, "known vulnerabilities:\n  " + "\n  ".join(vulnerable)
    unaudited = [d for d in deps if "skip_reason" in d]
    if unaudited or not deps:
        example = unaudited[0]["skip_reason"] if unaudited else "no dependency listed"
        pytest.skip(
            f"pip-audit could not audit {len(unaudited)} of {len(deps)} installed dependencies (e.g. '{example}'): "
            "its advisory service (PyPI's JSON API) is not reachable from here; NOT audited"
        )
