"""Built-in tools of the tool runner: name -> callable(arguments) -> JSON-able output.

A tool raises ToolError for a result the model should see as a failure (not found,
forbidden, refused); anything else escaping a tool is a crash.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

from . import (
    alert_workload,
    delete_pod,
    k8s_describe,
    k8s_events,
    k8s_get,
    pod_logs,
    prometheus_query,
    recent_deploys,
    rollout_restart,
    rollout_undo,
    runbook,
    scale,
)
from .common import ToolError

Tool = Callable[[dict[str, Any]], Any]

MODULES: dict[str, ModuleType] = {
    # read
    "k8s-get": k8s_get,
    "k8s-describe": k8s_describe,
    "k8s-events": k8s_events,
    "pod-logs": pod_logs,
    "recent-deploys": recent_deploys,
    "prometheus-query": prometheus_query,
    "runbook": runbook,
    "alert-workload": alert_workload,
    # write
    "rollout-restart": rollout_restart,
    "rollout-undo": rollout_undo,
    "scale": scale,
    "delete-pod": delete_pod,
}

REGISTRY: dict[str, Tool] = {name: module.run for name, module in MODULES.items()}

# The argument names each tool accepts; tools/*.yaml must declare exactly these (tested).
ARGUMENTS: dict[str, frozenset[str]] = {
    name: frozenset(module.ARGUMENTS) for name, module in MODULES.items()
}

WRITE_TOOLS = frozenset({"rollout-restart", "rollout-undo", "scale", "delete-pod"})

__all__ = ["ARGUMENTS", "MODULES", "REGISTRY", "WRITE_TOOLS", "Tool", "ToolError"]
