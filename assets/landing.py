"""The landing intake run: files the landing sensor found stable are parsed, quarantined or staged.

Thin wiring around ``cyber_pipelines.landing.intake`` (the CLI calls the same code). The sensor then
reads the manifests this run leaves in ``<landing>/pending/`` and requests the ingest runs.
"""

from typing import Any

import dagster as dg
import polars as pl
from pydantic import Field

from cyber_pipelines.landing.intake import IntakeReport, Listed, intake_files
from cyber_pipelines.report import markdown_table
from cyber_pipelines.resources import MarketDataResource

INTAKE_OP = "intake_landing_files"


class LandingFileConfig(dg.Config):
    name: str = Field(description="file name inside the landing folder")
    size: int = Field(description="size in bytes when the sensor listed it; a changed file is left for later")
    mtime_ns: int = Field(description="modification time (ns) when the sensor listed it")
    etag: str = Field(default="", description="on object storage: the object's ETag when the sensor listed it")


class IntakeConfig(dg.Config):
    files: list[LandingFileConfig] = Field(default_factory=list, description="the files to take in")


def _summary(report: IntakeReport) -> dict[str, Any]:
    rows = [
        (s.file, "staged", f"{s.kind} {s.pair or ''}".strip(), f"{len(s.days)} day(s), sequence {s.sequence}")
        for s in report.accepted
    ]
    rows += [(name, "quarantined", "", reason) for name, reason in report.quarantined]
    rows += [(name, "left in place", "", why) for name, why in report.left]
    rows += [(name, "failed", "", error) for name, error in report.failed]
    table = pl.DataFrame(rows, schema=["file", "outcome", "what", "detail"], orient="row")
    return {
        "staged": len(report.accepted),
        "quarantined": len(report.quarantined),
        "left_in_place": len(report.left),
        "failed": len(report.failed),
        "files": dg.MetadataValue.md(markdown_table(table)),
    }


@dg.op(
    name=INTAKE_OP,
    out=dg.Out(dg.Nothing),
    description=(
        "Parse each listed landing file: a bad one moves to `quarantine/` with `<name>.reason.txt`, a good one "
        "is staged whole under a new sequence and archived to `processed/` if its content is unchanged."
    ),
)
def landing_intake_op(context: dg.OpExecutionContext, config: IntakeConfig, market: MarketDataResource) -> dg.Output:
    landing = market.landing_path()
    report = intake_files(landing, [Listed(f.name, f.size, f.mtime_ns, f.etag or None) for f in config.files])
    for staged in report.accepted:
        days = f"{staged.days[0]}..{staged.days[-1]}" if staged.days else "no days"
        what = staged.pair or "moat records"
        context.log.info(f"staged {staged.file}: {what}, {len(staged.days)} day(s) {days}, sequence {staged.sequence}")
    for name, reason in report.quarantined:
        context.log.warning(f"quarantined {name}: {reason}")
    for name, why in report.left:
        context.log.info(f"left {name} in place: {why}")
    metadata = _summary(report)
    if report.failed:
        raise dg.Failure(
            description="; ".join(f"{name}: {error}" for name, error in report.failed)
            + f" (the files stay in {landing}; nothing of them was lost)",
            metadata=metadata,
        )
    return dg.Output(None, metadata=metadata)


@dg.job(
    name="landing_intake",
    description="Take in landing files the landing sensor found stable: quarantine bad ones, stage good ones.",
    tags={"cyber/layer": "landing"},
)
def landing_intake_job() -> None:
    landing_intake_op()
