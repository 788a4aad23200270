"""The CLI's commands against a fake cluster: what they print, annotate, and exit with."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from agentrun.cli import main as cli
from tests.unit.test_cli_render import HASH, a_run

NOW = datetime(2024, 5, 1, 10, 7, 0, tzinfo=UTC)


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


class FakeKube:
    namespace = "s-1"

    def __init__(self, *runs: dict[str, Any]) -> None:
        self.runs = {(r["metadata"]["namespace"], r["metadata"]["name"]): r for r in runs}
        self.annotations: list[tuple[str, str, str, str]] = []
        self.created: list[dict[str, Any]] = []
        self.agents = {("s-1", "agent")}
        self.cms: dict[str, dict[str, str]] = {}
        self.job_pods: dict[str, list[str]] = {}
        self.logs: dict[str, str] = {}
        self.labelled: dict[str, list[tuple[str, list[str]]]] = {}  # selector -> pods

    def get_run(self, name: str, namespace: str) -> dict[str, Any]:
        if (namespace, name) not in self.runs:
            raise cli.CliError(f'agentrun "{name}" not found', cli.EXIT_NOT_FOUND)
        return self.runs[(namespace, name)]

    def list_runs(self, namespace: str | None, selector: str | None) -> list[dict[str, Any]]:
        return [r for (ns, _), r in self.runs.items() if namespace in (None, ns)]

    def annotate(self, name: str, namespace: str, key: str, value: str) -> None:
        self.annotations.append((namespace, name, key, value))

    def create_run(self, manifest: dict[str, Any]) -> dict[str, Any]:
        body: dict[str, Any] = json.loads(json.dumps(manifest))
        body["metadata"].setdefault("name", body["metadata"].pop("generateName", "") + "x1y2z")
        self.created.append(body)
        self.runs[(body["metadata"]["namespace"], body["metadata"]["name"])] = body
        return body

    def agent_exists(self, name: str, namespace: str) -> bool | None:
        return (namespace, name) in self.agents

    def configmap_data(self, name: str, namespace: str) -> dict[str, str] | None:
        return self.cms.get(name)

    def configmaps(self, namespace: str, selector: str) -> list[tuple[str, dict[str, str]]]:
        return []

    def pods(self, namespace: str, selector: str) -> list[str]:
        return self.job_pods.get(selector.removeprefix("job-name="), [])

    def pod_containers(self, namespace: str, selector: str) -> list[tuple[str, list[str]]]:
        return self.labelled.get(selector, [])

    def pod_log(self, pod: str, namespace: str, container: str = "tool") -> str:
        return self.logs[pod if container == "tool" else f"{pod}/{container}"]


def call(kube: FakeKube, *argv: str, stdin: io.StringIO | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(
        list(argv),
        kube=kube,  # type: ignore[arg-type]
        out=out,
        err=err,
        stdin=stdin or io.StringIO(),
        now=lambda: NOW,
    )
    return code, out.getvalue(), err.getvalue()


def test_list_and_show_and_json() -> None:
    kube = FakeKube(a_run())
    code, out, _ = call(kube, "list")
    assert code == 0 and "rollout-restart" in out and "6m54s" in out
    code, out, _ = call(kube, "list", "-o", "json")
    assert code == 0 and json.loads(out)["items"][0]["metadata"]["name"] == "run"
    code, out, _ = call(kube, "show", "run")
    assert code == 0 and "Timeline" in out and "\x1b[" not in out
    code, out, _ = call(kube, "show", "run", "-o", "yaml")
    assert code == 0 and out.startswith("apiVersion: agentrun.dev/v1alpha1\n")
    code, _, err = call(kube, "-n", "other", "list")
    assert code == 0 and "No agentruns found in other namespace" in err


def test_show_missing_run_exits_3() -> None:
    code, _, err = call(FakeKube(), "show", "nope")
    assert code == cli.EXIT_NOT_FOUND and 'agentrun "nope" not found' in err


def test_approve_yes_annotates_the_pending_hash() -> None:
    kube = FakeKube(a_run())
    code, out, _ = call(kube, "approve", "run", "--yes")
    assert code == 0
    assert kube.annotations == [("s-1", "run", "agentrun.dev/approve", HASH)]
    assert "rollout-restart" in out and HASH in out and "approved" in out


def test_approve_without_tty_refuses_and_names_the_way_out() -> None:
    kube = FakeKube(a_run())
    code, _, err = call(kube, "approve", "run")
    assert code == cli.EXIT_DECLINED
    assert "not a terminal" in err and f"--yes (with --hash {HASH}" in err
    assert kube.annotations == []


@pytest.mark.parametrize(("reply", "code"), [("y\n", 0), ("yes\n", 0), ("\n", 6), ("n\n", 6)])
def test_approve_asks_on_a_tty(reply: str, code: int) -> None:
    kube = FakeKube(a_run())
    got, out, _ = call(kube, "approve", "run", stdin=Tty(reply))
    assert got == code
    assert "Approve? [y/N] " in out
    assert len(kube.annotations) == (1 if code == 0 else 0)


def test_approve_with_another_hash_or_nothing_pending_exits_4() -> None:
    kube = FakeKube(a_run())
    code, _, err = call(kube, "approve", "run", "--yes", "--hash", "0" * 64)
    assert code == cli.EXIT_STATE and f"hash {HASH}, not {'0' * 64}" in err
    assert call(kube, "approve", "run", "--yes", "--hash", HASH)[0] == 0
    idle = FakeKube(a_run(phase="Succeeded", pendingAction=None))
    code, _, err = call(idle, "approve", "run", "--yes")
    assert code == cli.EXIT_STATE and "no pending action (phase Succeeded)" in err
    assert idle.annotations == []


def test_reject_and_answer() -> None:
    kube = FakeKube(a_run())
    code, _, _ = call(kube, "reject", "run", "--reason", "not now")
    assert code == 0 and kube.annotations == [("s-1", "run", "agentrun.dev/reject", "not now")]
    assert call(kube, "reject", "run")[0] == cli.EXIT_USAGE  # --reason is required
    code, _, err = call(kube, "answer", "run", "yes do it")
    assert code == cli.EXIT_STATE and "not waiting for input" in err
    asking = FakeKube(a_run(phase="AwaitingInput", pendingAction=None))
    assert call(asking, "answer", "run", "-", stdin=io.StringIO("go ahead\n"))[0] == 0
    assert asking.annotations == [("s-1", "run", "agentrun.dev/answer", "go ahead")]
    assert call(asking, "reject", "run", "--reason", "x")[0] == cli.EXIT_STATE


def test_logs_prefers_the_configmap_then_the_pod_log() -> None:
    kube = FakeKube(a_run())
    kube.cms["run-s1-abc123-out"] = {"output.txt": "raw evidence\n"}
    code, out, _ = call(kube, "logs", "run", "--step", "1")
    assert (code, out) == (0, "raw evidence\n")
    assert call(kube, "logs", "run")[1] == "raw evidence\n"  # the last step with a Job
    kube.cms.clear()
    kube.job_pods["run-s1-abc123"] = ["pod-a"]
    kube.logs["pod-a"] = "from the pod\n"
    assert call(kube, "logs", "run", "--step", "1")[1] == "from the pod\n"
    kube.job_pods.clear()
    code, _, err = call(kube, "logs", "run", "--step", "1")
    assert code == cli.EXIT_NOT_FOUND and "no output is left for step 1" in err
    assert call(kube, "logs", "run", "--step", "7")[0] == cli.EXIT_NOT_FOUND


def test_run_creates_from_input_and_prints_the_name() -> None:
    kube = FakeKube()
    doc = json.dumps({"alert": {"labels": {"alertname": "X"}}})
    code, out, _ = call(
        kube, "run", "--agent", "agent", "--task", "Look", "--input", "-", stdin=io.StringIO(doc)
    )
    assert (code, out) == (0, "agent-x1y2z\n")
    assert kube.created[0]["spec"] == {
        "agentRef": "agent",
        "input": {"task": "Look", "context": {"alert": {"labels": {"alertname": "X"}}}},
    }
    code, _, err = call(kube, "run", "--agent", "agent", "--input", "-", stdin=io.StringIO(doc))
    assert code == cli.EXIT_USAGE and "--task" in err
    code, _, err = call(kube, "run", "--agent", "ghost", "--task", "x")
    assert code == cli.EXIT_NOT_FOUND and 'agent "ghost" not found' in err
    bad = io.StringIO("{not json")
    assert call(kube, "run", "--agent", "agent", "--input", "-", stdin=bad)[0] == cli.EXIT_USAGE


@pytest.mark.parametrize(
    ("phase", "code"),
    [
        ("Succeeded", 0),
        ("Failed", 5),
        ("Cancelled", 5),
        ("AwaitingApproval", 7),
        ("AwaitingInput", 8),
    ],
)
def test_run_wait_exit_codes(phase: str, code: int, monkeypatch: pytest.MonkeyPatch) -> None:
    kube = FakeKube()
    real_create = kube.create_run

    def create(manifest: dict[str, Any]) -> dict[str, Any]:
        body = real_create(manifest)
        body["status"] = a_run(phase=phase)["status"]
        return body

    monkeypatch.setattr(kube, "create_run", create)
    got, out, err = call(kube, "run", "--agent", "agent", "--task", "x", "--name", "r", "--wait")
    assert got == code
    assert out.startswith(f"r\nr: {phase}\n")
    assert f"r: {phase} (step 2)" in err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert call(FakeKube(), "frobnicate")[0] == cli.EXIT_USAGE
    assert call(FakeKube(), "list", "-o", "xml")[0] == cli.EXIT_USAGE
    assert "invalid choice" in capsys.readouterr().err
    assert call(FakeKube(), "--help")[0] == 0


def test_logs_of_a_call_grouped_with_others_reads_its_own_container() -> None:
    def result(step: int, container: str) -> dict[str, Any]:
        return {
            "step": step,
            "type": "ToolResult",
            "time": "2026-01-01T00:00:00Z",
            "jobRef": "run-s1-abc123",
            "container": container,
        }

    kube = FakeKube(a_run(thread=[result(1, "tool-0"), result(2, "tool-1")]))
    kube.cms["run-s1-abc123-tool-1-out"] = {"output.txt": "step 2 evidence\n"}
    assert call(kube, "logs", "run", "--step", "2")[1] == "step 2 evidence\n"
    kube.job_pods["run-s1-abc123"] = ["pod-a"]
    kube.logs["pod-a/tool-0"] = "step 1 from its container\n"
    assert call(kube, "logs", "run", "--step", "1")[1] == "step 1 from its container\n"


def test_logs_of_a_dropped_step_find_every_container_of_a_grouped_job_by_label() -> None:
    # The thread dropped step 1 for size; its grouped Job's pod has a container per call.
    kube = FakeKube(a_run(thread=[], currentAction=None, batch=[], step=3))
    selector = "agentrun.dev/run=run,agentrun.dev/step=1"
    kube.labelled[selector] = [("pod-a", ["tool-0", "tool-1"])]
    kube.logs["pod-a/tool-0"] = "events\n"
    kube.logs["pod-a/tool-1"] = "deploys\n"
    code, out, _ = call(kube, "logs", "run", "--step", "1")
    assert code == 0
    assert out == "==> pod/pod-a tool-0 <==\nevents\n==> pod/pod-a tool-1 <==\ndeploys\n"
