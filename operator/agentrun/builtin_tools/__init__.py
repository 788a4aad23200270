"""Built-in tools of the tool runner: name -> callable(arguments) -> JSON-able output.

A tool raises ToolError for a result the model should see as a failure (not found,
forbidden, refused); anything else escaping a tool is a crash.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .common import ToolError
from .k8s_get import ARGUMENTS as K8S_GET_ARGUMENTS
from .k8s_get import run as run_k8s_get
from .rollout_restart import ARGUMENTS as ROLLOUT_RESTART_ARGUMENTS
from .rollout_restart import run as run_rollout_restart

Tool = Callable[[dict[str, Any]], Any]

REGISTRY: dict[str, Tool] = {
    "k8s-get": run_k8s_get,
    "rollout-restart": run_rollout_restart,
}

# The argument names each tool accepts; tools/*.yaml must declare exactly these (tested).
ARGUMENTS: dict[str, frozenset[str]] = {
    "k8s-get": K8S_GET_ARGUMENTS,
    "rollout-restart": ROLLOUT_RESTART_ARGUMENTS,
}

__all__ = ["ARGUMENTS", "REGISTRY", "Tool", "ToolError"]
