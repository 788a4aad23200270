"""Prometheus metrics of the operator, served on their own port (`--metrics`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry(auto_describe=True)

STEPS = Counter(
    "agentrun_steps_total", "Model steps taken, by agent.", ["agent"], registry=REGISTRY
)
TRANSITIONS = Counter(
    "agentrun_phase_transitions_total", "Runs entering a phase.", ["phase"], registry=REGISTRY
)
TOOL_JOB_SECONDS = Histogram(
    "agentrun_tool_job_duration_seconds",
    "Tool Job run time (pod start to finish), by tool and outcome.",
    ["tool", "outcome"],
    buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900),
    registry=REGISTRY,
)
MODEL_SECONDS = Histogram(
    "agentrun_model_request_duration_seconds",
    "Model request latency including the client's retries, by agent, model and outcome.",
    ["agent", "model", "outcome"],
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120),
    registry=REGISTRY,
)
MODEL_ERRORS = Counter(
    "agentrun_model_errors_total",
    "Model requests that failed after retries.",
    ["agent", "model"],
    registry=REGISTRY,
)
TOKENS = Counter(
    "agentrun_tokens_total",
    "Tokens used, by agent, model and kind (prompt, completion).",
    ["agent", "model", "kind"],
    registry=REGISTRY,
)


@dataclass(frozen=True)
class RunSnapshot:
    phase: str
    agent: str
    approval_requested: datetime | None


class RunsCollector(Collector):
    """Runs by phase and approval waits, computed at scrape time from the runner's view."""

    def __init__(
        self,
        snapshot: Callable[[], Iterable[RunSnapshot]],
        now: Callable[[], datetime],
        load: Callable[[], tuple[int, int]] = lambda: (0, 0),
    ):
        self.snapshot = snapshot
        self.now = now
        self.load = load  # (runs in progress, new runs queued behind the cap)

    def collect(self) -> Iterable[Metric]:
        by_phase = GaugeMetricFamily(
            "agentrun_runs", "Runs seen by this operator, by phase.", labels=["phase"]
        )
        waiting = GaugeMetricFamily(
            "agentrun_runs_awaiting_approval",
            "Runs waiting for an approval, by agent.",
            labels=["agent"],
        )
        longest = GaugeMetricFamily(
            "agentrun_approval_wait_seconds_max",
            "How long the oldest pending approval has waited, by agent.",
            labels=["agent"],
        )
        phases: dict[str, int] = {}
        counts: dict[str, int] = {}
        oldest: dict[str, float] = {}
        now = self.now()
        for run in self.snapshot():
            phases[run.phase] = phases.get(run.phase, 0) + 1
            counts.setdefault(run.agent, 0)  # an explicit 0, so sum() is 0 rather than empty
            if run.approval_requested is not None:
                counts[run.agent] = counts.get(run.agent, 0) + 1
                age = (now - run.approval_requested).total_seconds()
                oldest[run.agent] = max(oldest.get(run.agent, 0.0), age)
        for phase, n in sorted(phases.items()):
            by_phase.add_metric([phase], n)
        for agent, n in sorted(counts.items()):
            waiting.add_metric([agent], n)
            longest.add_metric([agent], oldest.get(agent, 0.0))
        active, queued = self.load()
        return [
            by_phase,
            waiting,
            longest,
            GaugeMetricFamily(
                "agentrun_runs_in_progress",
                "Runs working now (started, not waiting for a human, not finished).",
                value=active,
            ),
            GaugeMetricFamily(
                "agentrun_runs_queued",
                "New runs waiting to start behind the cap on runs in progress.",
                value=queued,
            ),
        ]


_served: list[RunsCollector] = []


def serve(address: str, collector: RunsCollector) -> None:
    """Starts the /metrics endpoint in a thread, e.g. address "0.0.0.0:9090".

    Once per process: when kopf runs the startup handler again after a failure, the new
    runner's view replaces the old one behind the same endpoint.
    """
    if _served:
        _served[0].snapshot, _served[0].now = collector.snapshot, collector.now
        _served[0].load = collector.load
        return
    REGISTRY.register(collector)
    host, _, port = address.rpartition(":")
    start_http_server(int(port), addr=host or "0.0.0.0", registry=REGISTRY)
    _served.append(collector)
