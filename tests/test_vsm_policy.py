"""S5 policy: bad policy files are refused with one line naming the file and the setting; the keeper keeps
the last good policy in force (across processes: it is kept in a file) and never one it cannot read."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cyber_pipelines.vsm.policy import DEFAULT_POLICY, PolicyError, PolicyKeeper, load_policy, policy_path

GOOD = DEFAULT_POLICY.read_text()


def edited(tmp_path: Path, old: str, new: str) -> Path:
    assert old in GOOD, old
    path = tmp_path / "policy.yaml"
    path.write_text(GOOD.replace(old, new))
    return path


def test_the_default_policy_loads_and_says_what_the_design_says() -> None:
    policy = load_policy()
    assert [(p.pnl, p.size) for p in policy.ledger.probation] == [(-0.05, 0.5), (-0.10, 0.25)]
    assert (policy.ledger.hibernate_pnl, policy.ledger.hibernate_days) == (-0.15, 90)
    assert (policy.active.max_pairs, policy.active.cooldown_minutes, policy.breaker.trip) == (15, 60, 0.8)
    assert len(policy.temporal) >= 10
    assert policy.prospecting.teams["hft"].government == 0 and policy.prospecting.teams["hft"].logistics == 0


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("trip: 0.8 ", "trip: 1.8 ", "breaker.trip: Input should be less than 1"),
        ("max_pairs: 15", "max_pairs: 0", "active.max_pairs: Input should be greater than or equal to 1"),
        ("max_pairs: 15", "max_pairz: 15", "active.max_pairs: missing setting"),
        ("hysteresis: 0.01", "hysteresis: 0.01\n  colour: red", "ledger.colour: unknown setting"),
        ("- {pnl: -0.10, size: 0.25}", "- {pnl: -0.10, size: 0.75}", "probation levels must go down"),
        ("hibernate_pnl: -0.15", "hibernate_pnl: -0.08", "hibernate_pnl must be at or below"),
        ("failure_burst: {count: 3, minutes: 5", "failure_burst: {count: -3, minutes: 5", "count must be a positive"),
        ("failure_burst:", "failure_bursts:", "unknown temporal rule 'failure_bursts'"),
        ("swing: {", "scalp: {", "teams must be exactly hft, day_trade, swing"),
        ("weights: {drawdown: 1.0, failed_checks: 0.8, stale_data: 0.5, failed_runs: 1.0}",
         "weights: {drawdown: 0, failed_checks: 0, stale_data: 0, failed_runs: 0}", "at least one pain weight"),
        ("version: 1", "version: 1\n  nested: [", "not valid YAML at line"),
    ],
)  # fmt: skip
def test_a_bad_policy_file_is_refused_in_one_line_naming_the_file_and_setting(
    tmp_path: Path, old: str, new: str, message: str
) -> None:
    path = edited(tmp_path, old, new)
    with pytest.raises(PolicyError) as error:
        load_policy(path)
    text = str(error.value)
    assert message in text and str(path) in text and "\n" not in text


def test_a_missing_file_and_a_policy_that_is_not_a_mapping(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CYBER_POLICY", str(tmp_path / "nowhere.yaml"))
    with pytest.raises(PolicyError, match=r"policy file not found: .*nowhere.yaml \(named by CYBER_POLICY\)"):
        load_policy()
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(PolicyError, match="expected a mapping of settings, got list"):
        load_policy(tmp_path / "list.yaml")
    assert policy_path() == (tmp_path / "nowhere.yaml").resolve()


def test_the_keeper_keeps_the_last_good_policy_in_force_until_a_valid_edit(tmp_path: Path) -> None:
    raw = yaml.safe_load(GOOD)
    raw["breaker"]["trip"] = 0.6
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(raw))
    keeper = PolicyKeeper(tmp_path / "kept" / "last_good.json", path)
    first = keeper.current()
    assert first.error is None and first.policy.breaker.trip == 0.6

    path.write_text(GOOD.replace("trip: 0.8 ", "trip: oops "))  # a bad edit
    refused = PolicyKeeper(tmp_path / "kept" / "last_good.json", path).current()  # a new process: from the file
    assert refused.policy.breaker.trip == 0.6 and refused.source == str(path.resolve())
    assert refused.error is not None and "breaker.trip" in refused.error

    path.write_text(GOOD)  # a valid edit comes into force
    fixed = keeper.current()
    assert fixed.error is None and fixed.policy.breaker.trip == 0.8


def test_without_a_last_good_policy_a_bad_file_is_an_error(tmp_path: Path) -> None:
    path = edited(tmp_path, "trip: 0.8 ", "trip: 9 ")
    with pytest.raises(PolicyError, match="and no last good policy is kept at"):
        PolicyKeeper(tmp_path / "last_good.json", path).current()
