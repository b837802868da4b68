"""Keep the dynamic partitions in step with the pipeline config."""

import dagster as dg

from assets.partitions import pair_partitions, repo_partitions
from cyber_pipelines.config import load_repo_map, load_settings
from cyber_pipelines.github.activity import repo_to_key
from cyber_pipelines.keys import pair_to_key


@dg.sensor(
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Adds the trading pairs and GitHub repos listed in the pipeline config as partitions.",
)
def config_partitions_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    requests = []
    for partitions, keys in (
        (pair_partitions, [pair_to_key(p) for p in load_settings().pairs]),
        (repo_partitions, [repo_to_key(r) for r in load_repo_map()]),
    ):
        existing = set(context.instance.get_dynamic_partitions(str(partitions.name)))
        missing = [k for k in keys if k not in existing]
        if missing:
            requests.append(partitions.build_add_request(missing))
    if not requests:
        return dg.SkipReason("every configured pair and repo is a partition already")
    return dg.SensorResult(dynamic_partitions_requests=requests)
