"""The automation gate of the viable system: no automation for a pair that is hibernated or whose
circuit breaker (or the system's) is open.

``VsmAllows`` is a custom ``AutomationCondition`` (evaluated on the code server: the automation sensors
set ``use_user_code_server``); it reads the VSM event log (again only when the log has grown).
"""

from functools import lru_cache

import dagster as dg

from cyber_pipelines.vsm.events import EventLog, default_url


@lru_cache(maxsize=4)
def _log(url: str) -> EventLog:
    return EventLog(url)


@lru_cache(maxsize=4)
def _blocked(url: str, last_seq: int) -> frozenset[str]:
    """Pair keys whose automation is stopped ('*': all of them), as of event ``last_seq``."""
    from cyber_pipelines.vsm.system import current_state

    state = current_state(_log(url), [])
    blocked = set(state.blocked())
    if state.system.state == "open":
        blocked.add("*")
    return frozenset(blocked)


def blocked_pairs() -> frozenset[str]:
    """Read again only when the log has grown."""
    url = default_url()
    return _blocked(url, _log(url).last_seq())


def _pair_of_key(key: str) -> str:
    return str(key).split("|")[-1]


class VsmAllows(dg.AutomationCondition):
    """True for the partitions of pairs that are neither hibernated nor behind an open circuit breaker
    (nothing is true while the system breaker is open). Unpartitioned and non-pair assets follow the
    system breaker only."""

    @property
    def name(self) -> str:
        return "vsm_allows"

    def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:
        blocked = blocked_pairs()
        candidates = context.candidate_subset
        if "*" in blocked:
            return dg.AutomationResult(context, context.get_empty_subset())
        if not blocked or context.partitions_def is None:
            return dg.AutomationResult(context, candidates)
        keys = candidates.expensively_compute_partition_keys()
        allowed = {k for k in keys if _pair_of_key(k) not in blocked}
        return dg.AutomationResult(context, candidates.compute_intersection_with_partition_keys(allowed))


VSM_ALLOWS = VsmAllows()
