"""Small readers of Dagster run results shared by the asset tests.

An ingest run records one materialization per partition and one evaluation per partition and check,
so the readers key them by partition; ``check_outcomes`` of a run over one partition stays a plain
``{check: passed}``.
"""

from __future__ import annotations

from typing import Any

import dagster as dg


def tag(mat: dg.AssetMaterialization, name: str) -> str:
    assert mat.tags is not None and name in mat.tags, mat.tags
    return mat.tags[name]


def values(metadata: dg.AssetMaterialization | dg.AssetCheckEvaluation) -> dict[str, Any]:
    """The metadata of a materialization or check evaluation as plain values."""
    return {k: v.value for k, v in metadata.metadata.items()}


def materializations(result: dg.ExecuteInProcessResult, node: str) -> dict[str, dg.AssetMaterialization]:
    """partition -> the run's materialization of it (asserting one each)."""
    mats = result.asset_materializations_for_node(node)
    by_partition = {str(m.partition): m for m in mats}
    assert len(by_partition) == len(mats), f"{node}: more than one materialization of a partition"
    return by_partition


def evaluations(result: dg.ExecuteInProcessResult) -> dict[tuple[str, str], dg.AssetCheckEvaluation]:
    """(partition, check) -> the run's evaluation (asserting one each)."""
    evals = result.get_asset_check_evaluations()
    by_key = {(str(e.partition), e.check_name): e for e in evals}
    assert len(by_key) == len(evals), "more than one evaluation of a check on a partition"
    return by_key


def check_outcomes(result: dg.ExecuteInProcessResult, partition: str | None = None) -> dict[str, bool]:
    """check -> passed, for ``partition`` (default: the run's only partition)."""
    by_key = evaluations(result)
    partitions = {p for p, _ in by_key}
    if partition is None:
        assert len(partitions) <= 1, f"the run evaluated several partitions {sorted(partitions)}: name one"
        return {check: e.passed for (_, check), e in by_key.items()}
    return {check: e.passed for (p, check), e in by_key.items() if p == partition}


def failure_text(result: dg.ExecuteInProcessResult) -> str:
    return "\n".join(
        e.step_failure_data.error.to_string()
        for e in result.all_events
        if e.is_step_failure and e.step_failure_data and e.step_failure_data.error
    )
