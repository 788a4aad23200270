"""An in-memory Kubernetes API for the runner's unit tests: the agentrun.kube.client calls the
runner makes, with the semantics it relies on (merge patches, resourceVersion conflicts,
create-or-409), and a log of the calls in order, with the thread each ran in."""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass, field
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from agentrun.kube import client as kube


def merge(target: Any, patch: Any) -> Any:
    """RFC 7386: applies a JSON merge patch (null removes a key, objects merge, rest replaces)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge(out.get(key), value)
    return out


@dataclass
class Call:
    verb: str
    name: str
    body: Any = None
    thread: int = 0


@dataclass
class FakeKube:
    runs: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    jobs: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    configmaps: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    # Status writes still to lose to someone else's write landing just before them (a 409).
    interfere: int = 0
    _version: int = 100

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for name in (
            "get_run",
            "patch_run_status",
            "remove_annotations",
            "create_job",
            "read_job",
            "delete_job",
            "ensure_configmap",
            "record_event",
        ):
            monkeypatch.setattr(kube, name, getattr(self, name))

    def add_run(self, body: dict[str, Any]) -> dict[str, Any]:
        meta = body["metadata"]
        self._bump(body)
        self.runs[(meta["namespace"], meta["name"])] = body
        return copy.deepcopy(body)

    def verbs(self) -> list[str]:
        return [c.verb for c in self.calls]

    def status_writes(self) -> list[dict[str, Any]]:
        return [c.body for c in self.calls if c.verb == "patch_status"]

    def _bump(self, body: dict[str, Any]) -> None:
        self._version += 1
        body["metadata"]["resourceVersion"] = str(self._version)

    def _log(self, verb: str, name: str, body: Any = None) -> None:
        self.calls.append(Call(verb, name, copy.deepcopy(body), threading.get_ident()))

    # ---- the agentrun.kube.client functions

    def get_run(self, api: k8s.ApiClient, ns: str, name: str) -> dict[str, Any] | None:
        self._log("get_run", name)
        found = self.runs.get((ns, name))
        return copy.deepcopy(found) if found is not None else None

    def patch_run_status(
        self,
        api: k8s.ApiClient,
        ns: str,
        name: str,
        status: dict[str, Any],
        resource_version: str | None = None,
    ) -> dict[str, Any]:
        body = self.runs.get((ns, name))
        if body is None:
            raise ApiException(status=404, reason="NotFound")
        if self.interfere > 0:
            self.interfere -= 1
            labels = body["metadata"].setdefault("labels", {})
            labels["touched"] = str(int(labels.get("touched", "0")) + 1)
            self._bump(body)
        if resource_version and resource_version != body["metadata"]["resourceVersion"]:
            self._log("conflict", name, status)
            raise ApiException(status=409, reason="Conflict")
        self._log("patch_status", name, status)
        body["status"] = merge(body.get("status") or {}, status)
        self._bump(body)
        return copy.deepcopy(body)

    def remove_annotations(
        self, api: k8s.ApiClient, ns: str, name: str, keys: list[str]
    ) -> dict[str, Any] | None:
        body = self.runs.get((ns, name))
        if body is None:
            return None
        self._log("remove_annotations", name, keys)
        body["metadata"] = merge(body["metadata"], {"annotations": dict.fromkeys(keys)})
        self._bump(body)
        return copy.deepcopy(body)

    def create_job(self, api: k8s.ApiClient, manifest: dict[str, Any]) -> dict[str, Any] | None:
        meta = manifest["metadata"]
        key = (meta["namespace"], meta["name"])
        self._log("create_job", meta["name"], manifest)
        if key in self.jobs:
            return None
        job = copy.deepcopy(manifest)
        job["metadata"]["uid"] = f"uid-{meta['name']}"
        self.jobs[key] = job
        return copy.deepcopy(job)

    def read_job(self, api: k8s.ApiClient, ns: str, name: str) -> dict[str, Any] | None:
        self._log("read_job", name)
        found = self.jobs.get((ns, name))
        return copy.deepcopy(found) if found is not None else None

    def delete_job(self, api: k8s.ApiClient, ns: str, name: str) -> None:
        self._log("delete_job", name)
        self.jobs.pop((ns, name), None)

    def ensure_configmap(self, api: k8s.ApiClient, manifest: dict[str, Any]) -> None:
        meta = manifest["metadata"]
        self._log("ensure_configmap", meta["name"])
        self.configmaps.setdefault((meta["namespace"], meta["name"]), copy.deepcopy(manifest))

    def record_event(
        self, api: k8s.ApiClient, run: dict[str, Any], type_: str, reason: str, message: str
    ) -> None:
        self._log("event", reason, message)
