"""agentrun-tool: the envelope contract, the Secret refusal, output bounds, tool shaping.

No cluster: API calls are replaced by a fake `request`; the subprocess tests run with no
kubeconfig at all, which also proves the refusals happen before any API call.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from agentrun.operator import jobs
from agentrun.tool import builtins as builtin_tools
from agentrun.tool import runner as toolrunner
from agentrun.tool.builtins import k8s_get, rollout_restart
from agentrun.tool.envelope import Envelope

ROOT = Path(__file__).resolve().parents[2]
KEYS = {"agentrunEnvelope", "tool", "ok", "output", "error", "truncated"}


def run_cli(*args: str, **env: str) -> tuple[int, dict[str, Any], str]:
    environ = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    environ.update(env, PYTHONPATH=str(ROOT / "operator"))
    proc = subprocess.run(
        [sys.executable, "-m", "agentrun.tool.runner", *args],
        capture_output=True,
        text=True,
        env=environ,
        timeout=60,
    )
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, proc.stdout  # stdout is the envelope alone
    return proc.returncode, json.loads(lines[-1]), proc.stderr


def run_main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code = toolrunner.main(list(argv))
    out = capsys.readouterr().out.splitlines()
    return code, json.loads(out[-1])


# ---------------------------------------------------------------- the CLI contract


def test_usage_error_still_prints_an_envelope() -> None:
    code, env, stderr = run_cli()
    assert code == 2
    assert set(env) == KEYS
    assert env["agentrunEnvelope"] == 1
    assert env["ok"] is False and env["output"] is None and env["truncated"] is False
    assert env["error"].startswith("usage error:")
    assert "usage error" in stderr


def test_the_operator_reads_what_the_runner_writes() -> None:
    env = Envelope("t", False, {"a": ["é"]}, "boom", True)
    parsed = jobs.parse_envelope(toolrunner.render(env, 4096).decode())
    assert parsed == Envelope("t", False, {"a": ["é"]}, "boom", True)


def test_invalid_json_arguments_are_a_usage_error() -> None:
    code, env, _ = run_cli("k8s-get", "{nope")
    assert (code, env["tool"], env["ok"]) == (2, "k8s-get", False)
    assert "not valid JSON" in env["error"]


def test_unknown_tool_is_a_usage_error() -> None:
    code, env, _ = run_cli("rm-rf", "{}")
    assert code == 2 and "unknown tool" in env["error"]


@pytest.mark.parametrize("kind", ["Secret", "secrets", " SECRET "])
def test_secrets_are_refused(kind: str) -> None:
    code, env, _ = run_cli("k8s-get", json.dumps({"kind": kind, "name": "db", "namespace": "x"}))
    assert code == 0  # the tool ran; the refusal is a result the model sees
    assert set(env) == KEYS
    assert (env["tool"], env["ok"]) == ("k8s-get", False)
    assert "Secrets are never read" in env["error"]


def test_arguments_file(tmp_path: Path) -> None:
    path = tmp_path / "args.json"
    path.write_text(json.dumps({"kind": "Secret", "name": "db"}))
    code, env, _ = run_cli("k8s-get", "--arguments-file", str(path))
    assert code == 0 and "Secrets are never read" in env["error"]


def test_arguments_twice_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "args.json"
    path.write_text("{}")
    code, env, _ = run_cli("k8s-get", "{}", "--arguments-file", str(path))
    assert code == 2 and "not both" in env["error"]


def test_unknown_argument_is_a_tool_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, env = run_main(capsys, "k8s-get", '{"kind": "Pod", "verbose": true}')
    assert code == 0 and env["ok"] is False and "unknown arguments" in env["error"]


def test_success_and_stdout_noise(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def noisy(args: dict[str, Any]) -> Any:
        print("a library printing to stdout")
        return {"echo": args}

    monkeypatch.setitem(builtin_tools.REGISTRY, "echo", noisy)
    code = toolrunner.main(["echo", '{"x": "é"}'])
    captured = capsys.readouterr()
    assert code == 0
    assert captured.out.count("\n") == 1  # the print went to stderr
    env = json.loads(captured.out)
    assert env == {**env, "ok": True, "output": {"echo": {"x": "é"}}, "error": None}
    assert "a library printing" in captured.err


def test_crash_exits_non_zero_with_envelope(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def boom(args: dict[str, Any]) -> Any:
        raise RuntimeError("kaput")

    monkeypatch.setitem(builtin_tools.REGISTRY, "boom", boom)
    code, env = run_main(capsys, "boom", "{}")
    assert code == 1
    assert env["ok"] is False and "RuntimeError: kaput" in env["error"]


@pytest.mark.parametrize("output", ["y" * 50_000, {"items": ['"quoted"' * 10] * 2000}])
def test_output_is_bounded_and_flagged(
    output: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(builtin_tools.REGISTRY, "big", lambda args: output)
    monkeypatch.setenv("AGENTRUN_OUTPUT_LIMIT", "4096")
    code = toolrunner.main(["big", "{}"])
    line = capsys.readouterr().out.strip()
    env = json.loads(line)
    assert code == 0
    assert len(line.encode()) <= 4096
    assert env["truncated"] is True and env["ok"] is True
    assert "[truncated by agentrun-tool" in env["output"]


def test_small_output_is_not_flagged(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(builtin_tools.REGISTRY, "small", lambda args: "fine")
    monkeypatch.setenv("AGENTRUN_OUTPUT_LIMIT", "4096")
    _, env = run_main(capsys, "small", "{}")
    assert (env["output"], env["truncated"]) == ("fine", False)


# ---------------------------------------------------------------- k8s-get, with a fake API


class FakeAPI:
    def __init__(self, responses: dict[str, Any]) -> None:
        self.responses = responses
        self.calls: list[tuple[str, str, dict[str, str]]] = []

    def __call__(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        self.calls.append((method, path, dict(kw.get("query") or [])))
        value = self.responses.get(path)
        if isinstance(value, ApiException):
            raise value
        if value is None:
            raise ApiException(status=404, reason="Not Found", body='{"message": "nope"}')
        return dict(value)


POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {
        "name": "web-1",
        "namespace": "prod",
        "uid": "u",
        "resourceVersion": "9",
        "managedFields": [{"manager": "kubelet"}],
        "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{...}", "a": "b"},
        "ownerReferences": [{"kind": "ReplicaSet", "name": "web-abc", "uid": "x"}],
    },
    "spec": {
        "containers": [
            {
                "name": "web",
                "image": "web:1",
                "terminationMessagePath": "/dev/termination-log",
                "volumeMounts": [{"name": "kube-api-access-x1", "mountPath": "/var/run"}],
            }
        ],
        "volumes": [{"name": "kube-api-access-x1", "projected": {}}],
        "tolerations": [{"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}],
        "dnsPolicy": "ClusterFirst",
    },
    "status": {
        "phase": "Running",
        "containerStatuses": [
            {
                "name": "web",
                "ready": False,
                "restartCount": 4,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"reason": "Error", "exitCode": 1}},
            }
        ],
    },
}
EVENTS = {
    "items": [
        {"reason": "Pulled", "type": "Normal", "lastTimestamp": "2026-01-01T00:00:01Z"},
        {"reason": "BackOff", "type": "Warning", "lastTimestamp": "2026-01-01T00:05:00Z"},
    ]
}


def test_k8s_get_one_object_compact_with_events(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeAPI(
        {"/api/v1/namespaces/prod/pods/web-1": POD, "/api/v1/namespaces/prod/events": EVENTS}
    )
    monkeypatch.setattr(k8s_get, "request", fake)
    out = k8s_get.run({"kind": "pods", "name": "web-1", "namespace": "prod"})
    assert list(out)[:4] == ["kind", "apiVersion", "metadata", "status"]  # status before spec
    text = json.dumps(out)
    for noise in ("managedFields", "last-applied", "resourceVersion", "kube-api-access"):
        assert noise not in text
    assert "not-ready" not in text and "terminationMessagePath" not in text
    assert out["metadata"]["ownerReferences"] == ["ReplicaSet/web-abc"]
    assert [e["reason"] for e in out["events"]] == ["BackOff", "Pulled"]  # newest first
    assert fake.calls[1][2] == {
        "fieldSelector": "involvedObject.kind=Pod,involvedObject.name=web-1"
    }


def test_k8s_get_list_is_bounded_and_summarized(monkeypatch: pytest.MonkeyPatch) -> None:
    listing = {"metadata": {"continue": "tok"}, "items": [POD] * 3}
    fake = FakeAPI({"/api/v1/namespaces/prod/pods": listing})
    monkeypatch.setattr(k8s_get, "request", fake)
    out = k8s_get.run({"kind": "Pod", "namespace": "prod", "labelSelector": "app=web"})
    assert fake.calls[0][2] == {"limit": "20", "labelSelector": "app=web"}
    assert (out["kind"], out["count"], out["more"]) == ("PodList", 3, True)
    row = out["items"][0]
    assert row["ready"] == "0/1" and row["restarts"] == 4
    assert "web: CrashLoopBackOff" in row["problems"]


def test_k8s_get_namespace_defaults_to_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeAPI({"/apis/apps/v1/namespaces/team-a/deployments": {"items": []}})
    monkeypatch.setattr(k8s_get, "request", fake)
    monkeypatch.setenv("AGENTRUN_NAMESPACE", "team-a")
    assert k8s_get.run({"kind": "deploy"})["count"] == 0


def test_k8s_get_cluster_scoped(monkeypatch: pytest.MonkeyPatch) -> None:
    node = {"metadata": {"name": "n1"}, "status": {"images": [{"names": ["x"]}]}}
    fake = FakeAPI({"/api/v1/nodes/n1": node, "/api/v1/events": {"items": []}})
    monkeypatch.setattr(k8s_get, "request", fake)
    out = k8s_get.run({"kind": "Node", "name": "n1", "namespace": "ignored"})
    assert "images" not in json.dumps(out)


def test_k8s_get_not_found_and_forbidden_are_readable(monkeypatch: pytest.MonkeyPatch) -> None:
    forbidden = ApiException(status=403, reason="Forbidden", body='{"message": "no way"}')
    fake = FakeAPI({"/api/v1/namespaces/prod/configmaps/x": forbidden})
    monkeypatch.setattr(k8s_get, "request", fake)
    with pytest.raises(builtin_tools.ToolError, match="Pod gone in namespace prod not found"):
        k8s_get.run({"kind": "Pod", "name": "gone", "namespace": "prod"})
    with pytest.raises(builtin_tools.ToolError, match=r"forbidden.*no way"):
        k8s_get.run({"kind": "ConfigMap", "name": "x", "namespace": "prod"})


def test_k8s_get_events_forbidden_does_not_fail_the_get(monkeypatch: pytest.MonkeyPatch) -> None:
    forbidden = ApiException(status=403, reason="Forbidden", body="{}")
    fake = FakeAPI(
        {"/api/v1/namespaces/prod/pods/web-1": POD, "/api/v1/namespaces/prod/events": forbidden}
    )
    monkeypatch.setattr(k8s_get, "request", fake)
    out = k8s_get.run({"kind": "Pod", "name": "web-1", "namespace": "prod"})
    assert out["events"].startswith("events unavailable")


def test_k8s_get_unknown_kind_uses_discovery_and_still_refuses_secrets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    discovery = {
        "resources": [
            {"name": "widgets", "kind": "Widget", "namespaced": True, "shortNames": ["wd"]},
            {"name": "widgets/status", "kind": "Widget", "namespaced": True},
        ]
    }
    fake = FakeAPI(
        {
            "/apis/example.com/v1": discovery,
            "/apis/example.com/v1/namespaces/prod/widgets/w": {"metadata": {"name": "w"}},
            "/api/v1": {"resources": [{"name": "secrets", "kind": "Secret", "namespaced": True}]},
        }
    )
    monkeypatch.setattr(k8s_get, "request", fake)
    monkeypatch.setattr(k8s_get, "object_events", lambda *a: [])
    out = k8s_get.run(
        {"kind": "wd", "name": "w", "namespace": "prod", "apiVersion": "example.com/v1"}
    )
    assert out["kind"] == "Widget"
    with pytest.raises(builtin_tools.ToolError, match="pass apiVersion"):
        k8s_get.run({"kind": "Gadget"})
    fake.calls.clear()
    with pytest.raises(builtin_tools.ToolError, match="Secrets are never read"):
        k8s_get.run({"kind": "Secret ", "apiVersion": "v1"})
    assert fake.calls == []


def test_rollout_restart_patches_the_template(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def fake(method: str, path: str, **kw: Any) -> dict[str, Any]:
        seen.update(method=method, path=path, **kw)
        return {"metadata": {"generation": 7}, "spec": {"replicas": 3}, "status": {}}

    monkeypatch.setattr(rollout_restart, "request", fake)
    out = rollout_restart.run({"name": "web", "namespace": "prod"})
    assert (seen["method"], seen["path"]) == (
        "PATCH",
        "/apis/apps/v1/namespaces/prod/deployments/web",
    )
    assert seen["content_type"] == "application/strategic-merge-patch+json"
    annotations = seen["body"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["kubectl.kubernetes.io/restartedAt"] == out["restartedAt"]
    assert out["generation"] == 7 and "generation 7" in out["summary"]


def test_rollout_restart_requires_namespace() -> None:
    with pytest.raises(builtin_tools.ToolError, match="namespace"):
        rollout_restart.run({"name": "web"})
