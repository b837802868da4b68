"""Small readers of Dagster run results shared by the asset tests."""

from __future__ import annotations

import dagster as dg


def tag(mat: dg.AssetMaterialization, name: str) -> str:
    assert mat.tags is not None and name in mat.tags, mat.tags
    return mat.tags[name]


def check_outcomes(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


def failure_text(result: dg.ExecuteInProcessResult) -> str:
    return "\n".join(
        e.step_failure_data.error.to_string()
        for e in result.all_events
        if e.is_step_failure and e.step_failure_data and e.step_failure_data.error
    )
