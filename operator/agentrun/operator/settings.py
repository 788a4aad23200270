"""The operator's settings for the adapter loop (from the environment, see main.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from agentrun.engine import policy
from agentrun.operator import jobs


@dataclass
class Settings:
    # What the admin allows tools to run (images, ServiceAccounts) and the default image.
    policy: policy.Policy = field(default_factory=policy.Policy)
    output_limit_bytes: int = 512 * 1024
    # How long a step waits for a model answer to write it together with the record that
    # asked for it (see runner.Runner._coalesce); 0 writes each round at once.
    coalesce_seconds: float = 0.25
    # All raw outputs one run may keep in ConfigMaps: a run that loops over huge outputs
    # stops filling etcd (its compacted results still reach the thread).
    run_output_budget_bytes: int = 8 * 1024 * 1024
    # How long a tool pod may wait for a node before its Job gives up (AGENTRUN_TOOL_START_
    # SECONDS, chart value tools.startSeconds); the tool's timeout counts once it runs.
    tool_start_seconds: int = jobs.DEFAULT_START_SECONDS
    # Runs in progress at once (started, not waiting for a human, not finished); a new run
    # past it waits, Pending with reason Queued, first come first served. What a burst of
    # runs in flight costs in memory is bounded by it (docs/benchmarks.md). 0: no cap.
    max_active_runs: int = 200
