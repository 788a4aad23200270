"""The kubectl plugin driven as a user drives it: the real kubectl binary finds
`kubectl-agentrun` on PATH and runs it against the local control plane."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from tests.integration.spine import READ, Spine, done
from tests.support import stack

KUBECTL = "/usr/bin/kubectl" if Path("/usr/bin/kubectl").exists() else shutil.which("kubectl")


def plugin(
    spine: Spine, *args: str, input: str | None = None, namespaced: bool = True
) -> subprocess.CompletedProcess[str]:
    """`kubectl agentrun ARGS -n NS` with the cluster's kubeconfig; stdin is not a TTY."""
    assert KUBECTL, "kubectl is not installed"
    env = {
        **os.environ,
        "PATH": f"{stack.VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "KUBECONFIG": str(spine.cluster.kubeconfig),
    }
    env.pop("NO_COLOR", None)
    ns = ["-n", spine.namespace] if namespaced else []
    return subprocess.run(
        [KUBECTL, "agentrun", *args, *ns],
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_list_show_approve_logs_of_a_run(spine: Spine) -> None:
    spine.setup([READ, spine.write(), done("web restarted; it was stuck.")])
    spine.start()
    status = spine.wait_phase("AwaitingApproval")
    pending = status["pendingAction"]

    header, *rows = ok(plugin(spine, "list")).splitlines()
    assert header.split() == ["NAME", "PHASE", "STEP", "AGENT", "PENDING", "WAITING", "AGE"]
    assert [r.split()[:5] for r in rows] == [
        ["run", "AwaitingApproval", "2", "agent", "rollout-restart"]
    ]
    assert "\x1b[" not in header + rows[0]  # no colours: stdout is not a TTY
    listed = json.loads(ok(plugin(spine, "list", "-o", "json")))
    assert [i["metadata"]["name"] for i in listed["items"]] == ["run"]
    everywhere = ok(plugin(spine, "list", "-A", namespaced=False))
    assert everywhere.startswith("NAMESPACE") and spine.namespace in everywhere

    shown = ok(plugin(spine, "show", "run"))
    read_result = status["thread"][1]
    assert shown.startswith(f"AgentRun {spine.namespace}/run   AwaitingApproval\n")
    assert "Prompt:      sre-agent v" in shown
    assert "k8s-get {" in shown and '"kind": "Deployment"' in shown
    # A raw-output ConfigMap exists only for an output the thread could not keep whole.
    ref = read_result.get("outputRef")
    assert (ref is not None) == ("[truncated:" in read_result["content"])
    links = f"job/{read_result['jobRef']}" + (f"  configmap/{ref}" if ref else "")
    assert links + "\n" in shown or links + " " in shown
    assert f"Approve:        {pending['approveCommand']}" in shown

    # No terminal to ask on and no --yes: refused, nothing annotated, nothing ran.
    refused = plugin(spine, "approve", "run")
    assert refused.returncode == 6, refused
    assert "not a terminal" in refused.stderr and pending["actionHash"] in refused.stderr
    assert "rollout-restart" in refused.stdout  # it still showed what would have run
    # What runs is the frozen snapshot the operator recorded: the approver sees it all.
    snap = pending["snapshot"]
    for line in (
        f"  Image:          {snap['image']}",
        f"  Command:        {' '.join(snap['command'])}",
        f"  ServiceAccount: {snap['serviceAccountName']}",
        "  Effect:         write",
        f"  Timeout:        {snap['timeoutSeconds']}s",
        f"  Spec digest:    {snap['specDigest']}",
        f"  Hash:           {pending['actionHash']}",
    ):
        assert line in refused.stdout
    if pending.get("expiresTime"):
        assert f"  Expires:        {pending['expiresTime']} (in " in refused.stdout
    assert "agentrun.dev/approve" not in spine.get()["metadata"].get("annotations", {})
    assert spine.status()["phase"] == "AwaitingApproval" and len(spine.jobs()) == 1

    wrong = plugin(spine, "approve", "run", "--yes", "--hash", "0" * 64)
    assert wrong.returncode == 4 and f"not {'0' * 64}" in wrong.stderr

    approved = ok(plugin(spine, "approve", "run", "--yes", "--hash", pending["actionHash"]))
    assert "approved: rollout-restart" in approved
    status = spine.wait_phase("Succeeded")
    assert [a["decision"] for a in status["approvals"]] == ["Approved"]

    again = plugin(spine, "approve", "run", "--yes")
    assert again.returncode == 4 and "no pending action (phase Succeeded)" in again.stderr

    raw = ok(plugin(spine, "logs", "run", "--step", "1"))  # the ConfigMap, else the pod's log
    if ref:
        cm = stack.get(spine.cluster, "configmap", ref, spine.namespace)
        assert cm is not None and raw.rstrip("\n") == cm["data"]["output.txt"].rstrip("\n")
    assert '"Deployment"' in raw and '"web"' in raw

    finished = ok(plugin(spine, "show", "run"))
    assert "Succeeded" in finished.splitlines()[0]
    assert "Completed:" in finished and "Duration:" in finished
    assert "  step 2   Approved  rollout-restart" in finished
    assert finished.rstrip().endswith("web restarted; it was stuck.")
    as_json = json.loads(ok(plugin(spine, "show", "run", "-o", "json")))
    assert as_json["status"]["phase"] == "Succeeded"

    missing = plugin(spine, "show", "nope")
    assert missing.returncode == 3 and 'agentrun "nope" not found' in missing.stderr


def test_run_from_stdin_waits_for_approval_then_reject(spine: Spine) -> None:
    spine.setup([spine.write(), done("Left it alone as asked.")])
    alert = {"alert": {"labels": {"alertname": "KubePodCrashLooping", "pod": "web-1"}}}
    doc = json.dumps({"task": "Investigate web.", "context": alert})

    started = plugin(
        spine, "run", "--agent", "agent", "--input", "-", "--name", "r", "--wait", input=doc
    )
    assert started.returncode == 7, started  # stopped at AwaitingApproval
    lines = started.stdout.splitlines()
    assert lines[0] == "r" and lines[1] == "r: AwaitingApproval"
    body = spine.get("r")
    assert body["spec"]["input"] == {"task": "Investigate web.", "context": alert}
    assert body["status"]["pendingAction"]["approveCommand"] in started.stdout

    assert plugin(spine, "reject", "r").returncode == 2  # --reason is required
    rejected = ok(plugin(spine, "reject", "r", "--reason", "not during peak hours"))
    assert "rejected: rollout-restart" in rejected
    status = spine.wait_phase("Succeeded", name="r")
    assert [(a["decision"], a["reason"]) for a in status["approvals"]] == [
        ("Rejected", "not during peak hours")
    ]
    assert spine.jobs("r") == []
    again = plugin(spine, "reject", "r", "--reason", "x")
    assert again.returncode == 4

    nobody = plugin(spine, "answer", "r", "hello")
    assert nobody.returncode == 4 and "not waiting for input" in nobody.stderr

    generated = ok(plugin(spine, "run", "--agent", "agent", "--task", "Check web."))
    name = generated.strip()
    assert name.startswith("agent-") and spine.get(name)["spec"]["agentRef"] == "agent"

    ghost = plugin(spine, "run", "--agent", "ghost", "--task", "x")
    assert ghost.returncode == 3 and 'agent "ghost" not found' in ghost.stderr
    bad = plugin(spine, "run", "--agent", "agent", "--input", "-", input='{"no": "task"}')
    assert bad.returncode == 2 and "--task" in bad.stderr
