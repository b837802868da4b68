"""Drive the landing folder as the daemon does: a sensor tick, the intake runs it asks for, the next tick."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from run_results import failure_text

from cyber_pipelines.definitions import defs
from cyber_pipelines.landing.layout import DONE_SUFFIX
from cyber_pipelines.resources import MarketDataResource
from sensors.landing import landing_sensor


class Landing:
    """The landing folder of ``instance``: the sensor's cursor is carried from tick to tick and the new
    pairs a tick asks for are added as partitions, as the daemon would."""

    def __init__(self, instance: dg.DagsterInstance, folder: Path) -> None:
        self.instance, self.folder = instance, folder
        self.cursor: str | None = None

    def tick(self) -> list[dg.RunRequest]:
        context = dg.build_sensor_context(
            instance=self.instance, cursor=self.cursor, resources={"market": MarketDataResource()}
        )
        result = landing_sensor(context)
        assert isinstance(result, dg.SensorResult), result
        for request in result.dynamic_partitions_requests or []:
            assert isinstance(request, dg.AddDynamicPartitionsRequest)
            self.instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        self.cursor = result.cursor
        return list(result.run_requests or [])

    def drop(self, files: dict[str, str]) -> list[dg.RunRequest]:
        """Drop ``files`` (each with a ``.done`` marker) and run their intake; the ingest requests that follow."""
        self.folder.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (self.folder / name).write_text(text)
            (self.folder / f"{name}{DONE_SUFFIX}").touch()
        intakes = self.tick()
        assert intakes and {r.job_name for r in intakes} == {"landing_intake"}, intakes
        for request in intakes:
            intake = defs.resolve_job_def("landing_intake").execute_in_process(
                instance=self.instance, run_config=request.run_config, tags=request.tags, raise_on_error=False
            )
            assert intake.success, failure_text(intake)
        return self.tick()
