"""Materialize one or many partitions in a single run (single-run backfills).

Dagster records one materialization per partition but takes one metadata set and one DataVersion for
the run: a one-partition run reports that partition's content hash; a range reports a hash over the
partitions' hashes and a Markdown table with each partition's rows and hash.
"""

import hashlib
from collections.abc import Callable, Mapping
from typing import Any

import dagster as dg
import polars as pl

from cyber_pipelines.report import markdown_table
from cyber_pipelines.storage import TableStore, content_hash


def run_partition_keys(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext) -> list[str]:
    """The partition keys this run covers (one, or a range from a single-run backfill)."""
    op_context = context.op_execution_context if isinstance(context, dg.AssetCheckExecutionContext) else context
    if not (op_context.has_partition_key or op_context.has_partition_key_range):
        raise dg.Failure("run this with a partition or a partition range")
    return list(op_context.partition_keys)


def latest_metadata(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey, partitions: list[str] | None = None
) -> dict[str, Any] | None:
    """The metadata values of the asset's latest materialization (among ``partitions``, if given)."""
    if partitions is not None and not partitions:
        return None
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=partitions), limit=1
    ).records
    if not records or records[0].asset_materialization is None:
        return None
    return {k: v.value for k, v in records[0].asset_materialization.metadata.items()}


def write_partitions(
    frames: Mapping[str, pl.DataFrame],
    store: TableStore,
    source: str,
    table: str,
    parts_of: Callable[[str], tuple[str, ...]],
    metadata: Mapping[str, Any],
) -> dg.MaterializeResult:
    """Write every frame atomically (after all were produced) and describe them for the UI."""
    hashes: dict[str, str] = {}
    for key, frame in frames.items():
        store.write(frame, source, table, *parts_of(key))
        hashes[key] = content_hash(frame)
    if len(hashes) == 1:
        version = next(iter(hashes.values()))
    else:
        lines = "\n".join(f"{k}:{v}" for k, v in sorted(hashes.items()))
        version = hashlib.sha256(lines.encode()).hexdigest()[:24]
    overview = pl.DataFrame(
        {
            "partition": list(hashes),
            "rows": [frames[k].height for k in hashes],
            "content_hash": list(hashes.values()),
        }
    )
    first = next(iter(frames))
    return dg.MaterializeResult(
        data_version=dg.DataVersion(version),
        metadata={
            "source": source,
            "partitions": len(frames),
            "rows": sum(f.height for f in frames.values()),
            "path": dg.MetadataValue.path(str(store.path(source, table, *parts_of(first)))),
            "content_hash": version,
            **metadata,
            "partitions_written": dg.MetadataValue.md(markdown_table(overview)),
        },
    )
