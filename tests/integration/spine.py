"""Helpers for the end-to-end tests of a run: set up a namespace, script the model, follow a run."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from tests.cluster import LocalCluster
from tests.modelserver import ScriptedModelServer
from tests.support import stack

TERMINAL = ("Succeeded", "Failed", "Cancelled")

# A tool that takes a few seconds, so an operator can be killed while its Job runs.
SLOW_TOOL: dict[str, Any] = {
    "apiVersion": "agentrun.dev/v1alpha1",
    "kind": "AgentTool",
    "metadata": {"name": "slow-get"},
    "spec": {
        "description": "k8s-get, slowly.",
        "effect": "read",
        "builtin": "k8s-get",
        "command": ["sh", "-c", 'sleep 4; exec agentrun-tool "$0" "$1"'],
        "parameters": {
            "type": "object",
            "properties": {"kind": {"type": "string"}, "name": {"type": "string"}},
            "required": ["kind"],
        },
    },
}

WORKLOAD: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web", "labels": {"app": "web"}},
    "spec": {
        "replicas": 1,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {
                "containers": [{"name": "web", "image": "web:1", "command": ["sleep", "600"]}]
            },
        },
    },
}

READ = {"tool": "k8s-get", "arguments": {"kind": "Deployment", "name": "web"}}


def shell_tool(name: str, script: str, timeout: int = 30, description: str = "") -> dict[str, Any]:
    """A read tool whose Job runs a shell script instead of a built-in (cheap: no Python)."""
    return {
        "apiVersion": "agentrun.dev/v1alpha1",
        "kind": "AgentTool",
        "metadata": {"name": name},
        "spec": {
            "description": description or f"fault tool {name}",
            "effect": "read",
            "command": ["sh", "-c", script],
            "timeoutSeconds": timeout,
        },
    }


def done(answer: str = "All done.") -> dict[str, Any]:
    return {"done": answer}


@dataclass
class Spine:
    """One namespace with the tool catalog, a workload, and an Agent on a scripted model."""

    cluster: LocalCluster
    server: ScriptedModelServer
    namespace: str

    def write(self) -> dict[str, Any]:
        """The scripted write action: restart the namespace's Deployment."""
        return {
            "tool": "rollout-restart",
            "arguments": {"name": "web", "namespace": self.namespace},
        }

    @property
    def model(self) -> str:
        return f"scripted-{self.namespace}"

    def setup(
        self,
        script: list[dict[str, Any]],
        limits: dict[str, Any] | None = None,
        prefetch: list[dict[str, Any]] | None = None,
    ) -> None:
        stack.prepare_namespace(self.cluster, self.namespace)
        self.server.set_scripts({self.model: script})
        agent = stack.agent_manifest(
            "agent",
            self.namespace,
            self.model,
            self.server.base_url,
            ["k8s-get", "rollout-restart", "slow-get"],
            limits=limits,
        )
        if prefetch:
            agent["spec"]["prefetch"] = prefetch
        docs = [
            {**WORKLOAD, "metadata": {**WORKLOAD["metadata"], "namespace": self.namespace}},
            {**SLOW_TOOL, "metadata": {"name": "slow-get", "namespace": self.namespace}},
            agent,
        ]
        stack.apply(self.cluster, docs)

    def start(self, name: str = "run", **spec: Any) -> None:
        stack.apply(
            self.cluster,
            [stack.run_manifest(name, self.namespace, "agent", "Investigate web.", **spec)],
        )

    def get(self, name: str = "run") -> dict[str, Any]:
        body = stack.get(self.cluster, "agentrun", name, self.namespace)
        assert body is not None, f"AgentRun {self.namespace}/{name} not found"
        return body

    def status(self, name: str = "run") -> dict[str, Any]:
        status: dict[str, Any] = self.get(name).get("status", {})
        return status

    def wait_phase(self, *phases: str, name: str = "run", timeout: float = 60) -> dict[str, Any]:
        last: dict[str, Any] = {}

        def check() -> dict[str, Any] | None:
            nonlocal last
            last = self.status(name)
            return last if last.get("phase") in phases else None

        try:
            return stack.wait_for(check, timeout, f"phase {phases} of {name}", every=0.2)
        except TimeoutError as err:
            raise AssertionError(f"{err}; last status:\n{json.dumps(last, indent=1)}") from None

    def wait(self, check: Any, what: str, timeout: float = 60) -> Any:
        return stack.wait_for(check, timeout, what, every=0.2)

    def jobs(self, name: str = "run") -> list[dict[str, Any]]:
        out = self.cluster.kubectl(
            "get", "jobs", "-n", self.namespace, "-l", f"agentrun.dev/run={name}", "-o", "json"
        ).stdout
        items: list[dict[str, Any]] = json.loads(out)["items"]
        return items

    def pods(self, job: str) -> list[dict[str, Any]]:
        out = self.cluster.kubectl(
            "get", "pods", "-n", self.namespace, "-l", f"job-name={job}", "-o", "json"
        ).stdout
        items: list[dict[str, Any]] = json.loads(out)["items"]
        return items

    def events(self, name: str = "run") -> list[dict[str, Any]]:
        out = self.cluster.kubectl(
            "get",
            "events",
            "-n",
            self.namespace,
            "--field-selector",
            f"involvedObject.name={name},involvedObject.kind=AgentRun",
            "-o",
            "json",
        ).stdout
        items: list[dict[str, Any]] = json.loads(out)["items"]
        return items

    def annotate(self, key: str, value: str, name: str = "run") -> None:
        self.cluster.kubectl(
            "annotate", "agentrun", name, "-n", self.namespace, f"{key}={value}", "--overwrite"
        )

    def model_requests(self, step: int | None = None) -> list[dict[str, Any]]:
        return [
            r
            for r in self.server.requests
            if r.get("model") == self.model and (step is None or r.get("step") == step)
        ]


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    for cond in status.get("conditions", []):
        if cond["type"] == type_:
            return dict(cond)
    raise AssertionError(f"no {type_} condition in {status.get('conditions')}")


def thread_types(status: dict[str, Any]) -> list[tuple[int, str]]:
    return [(e["step"], e["type"]) for e in status.get("thread", [])]


def pause(seconds: float) -> None:
    time.sleep(seconds)
