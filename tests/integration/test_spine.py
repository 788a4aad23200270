"""An AgentRun end to end on the real control plane: model step, read Job, approval, resume."""

from __future__ import annotations

import hashlib
import json
import urllib.request
from collections.abc import Callable
from typing import Any

from agentrun.api.naming import action_hash
from tests.integration.spine import READ, Spine, condition, done, thread_types
from tests.support import stack
from tests.support.stack import OperatorProcess
from tests.support.webhook import WebhookSink

MALFORMED = {"raw_tool_calls": [{"name": "k8s-get", "arguments": '{"kind": "Deployment"'}]}


def test_happy_path_read_then_approved_write_then_done(spine: Spine) -> None:
    spine.setup([READ, spine.write(), done("web restarted; it was stuck.")])
    spine.start()

    status = spine.wait_phase("AwaitingApproval")
    pending = status["pendingAction"]
    assert pending["tool"] == "rollout-restart"
    assert pending["arguments"] == {"name": "web", "namespace": spine.namespace}
    uid = spine.get()["metadata"]["uid"]
    snap = pending["snapshot"]
    assert (snap["serviceAccountName"], snap["command"]) == (
        "agentrun-tool-write",
        ["agentrun-tool"],
    )
    assert pending["actionHash"] == action_hash(
        uid, 2, "rollout-restart", pending["arguments"], snap["specDigest"]
    )
    assert pending["approveCommand"] == (
        f"kubectl annotate agentrun run -n {spine.namespace} "
        f"agentrun.dev/approve={pending['actionHash']}"
    )
    assert condition(status, "ApprovalPending")["status"] == "True"
    # Nothing was written before the approval: only the read Job exists.
    assert [j["metadata"]["labels"]["agentrun.dev/tool"] for j in spine.jobs()] == ["k8s-get"]
    requested = [e for e in spine.events() if e["reason"] == "ApprovalRequested"]
    assert requested and pending["approveCommand"] in requested[0]["message"]

    columns = spine.cluster.kubectl("get", "agentruns", "-n", spine.namespace).stdout
    assert "AwaitingApproval" in columns and "rollout-restart" in columns

    spine.annotate("agentrun.dev/approve", pending["actionHash"])
    status = spine.wait_phase("Succeeded")

    assert status["result"]["answer"] == "web restarted; it was stuck."
    assert thread_types(status) == [
        (1, "ToolCall"),
        (1, "ToolResult"),
        (2, "ToolCall"),
        (2, "Approval"),
        (2, "ToolResult"),
        (3, "Done"),
    ]
    approvals = status["approvals"]
    assert [(a["step"], a["decision"], a["actionHash"]) for a in approvals] == [
        (2, "Approved", pending["actionHash"])
    ]
    assert "pendingAction" not in status and "currentAction" not in status
    assert condition(status, "Succeeded")["status"] == "True"
    assert status["usage"]["modelCalls"] == 3 and status["usage"]["totalTokens"] > 0
    prompt_file = stack.ROOT / "prompts" / "sre-agent.md"
    assert status["promptRef"]["sha256"] == hashlib.sha256(prompt_file.read_bytes()).hexdigest()
    # The approval annotation was consumed: it can never approve anything else.
    assert "agentrun.dev/approve" not in spine.get()["metadata"].get("annotations", {})

    jobs = {j["metadata"]["labels"]["agentrun.dev/step"]: j for j in spine.jobs()}
    assert sorted(jobs) == ["1", "2"]
    read, write = jobs["1"], jobs["2"]
    pod = read["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "agentrun-tool-read"
    assert write["spec"]["template"]["spec"]["serviceAccountName"] == "agentrun-tool-write"
    assert read["spec"]["backoffLimit"] == 0
    assert read["metadata"]["ownerReferences"][0]["kind"] == "AgentRun"
    sc = pod["containers"][0]["securityContext"]
    assert sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"]
    assert sc["capabilities"]["drop"] == ["ALL"]
    # The write really happened, under the write ServiceAccount.
    web = stack.get(spine.cluster, "deployment", "web", spine.namespace)
    assert web is not None
    assert "kubectl.kubernetes.io/restartedAt" in web["spec"]["template"]["metadata"]["annotations"]
    # A raw output the thread cannot keep whole is kept outside it, linked from the thread;
    # one it keeps whole gets no ConfigMap (one request less per call).
    result = status["thread"][1]
    ref = result.get("outputRef")
    assert (ref is not None) == ("[truncated:" in result["content"])
    listed = spine.cluster.kubectl("get", "configmaps", "-n", spine.namespace, "-o", "name")
    outputs = [n.removeprefix("configmap/") for n in listed.stdout.split()]
    assert [c for c in outputs if c.endswith("-out")] == ([ref] if ref else [])
    if ref:
        cm = stack.get(spine.cluster, "configmap", ref, spine.namespace)
        assert cm is not None and "Deployment" in json.dumps(cm["data"])


def test_approval_with_another_hash_runs_nothing(spine: Spine) -> None:
    spine.setup([spine.write(), done()])
    spine.start()
    status = spine.wait_phase("AwaitingApproval")
    right = status["pendingAction"]["actionHash"]

    spine.annotate("agentrun.dev/approve", "0" * 64)
    status = spine.wait(
        lambda: (
            (s := spine.status())
            and condition(s, "ApprovalPending")["reason"] == "ApprovalMismatch"
            and s
        ),
        "the mismatch to be reported",
    )
    assert status["phase"] == "AwaitingApproval"
    message = condition(status, "ApprovalPending")["message"]
    assert "does not match" in message and right in message
    assert spine.jobs() == []
    assert [a["decision"] for a in status["approvals"]] == ["Refused"]
    warnings = [e for e in spine.events() if e["reason"] == "ApprovalMismatch"]
    assert warnings and warnings[0]["type"] == "Warning"

    # The same wrong approval again: counted on the one Event, as client-go's recorder does.
    spine.annotate("agentrun.dev/approve", "1" * 64)
    spine.wait(lambda: len(spine.status()["approvals"]) == 2, "the second refusal")
    spine.annotate("agentrun.dev/approve", "1" * 64)
    spine.wait(lambda: len(spine.status()["approvals"]) == 3, "the third refusal")

    def counted() -> list[dict[str, Any]] | None:
        found = [e for e in spine.events() if e["reason"] == "ApprovalMismatch"]
        return found if sum(e.get("count", 1) for e in found) == 3 else None

    mismatches = spine.wait(counted, "three mismatches counted")
    assert sorted(e.get("count", 1) for e in mismatches) == [1, 2]  # "0..." once, "1..." twice

    spine.annotate("agentrun.dev/approve", right)
    status = spine.wait_phase("Succeeded")
    assert [a["decision"] for a in status["approvals"]] == ["Refused"] * 3 + ["Approved"]
    assert len(spine.jobs()) == 1


def test_rejection_goes_back_to_the_model_and_nothing_runs(spine: Spine) -> None:
    spine.setup([spine.write(), done("Left it alone as asked.")])
    spine.start()
    spine.wait_phase("AwaitingApproval")

    spine.annotate("agentrun.dev/reject", "not during peak hours")
    status = spine.wait_phase("Succeeded")

    assert spine.jobs() == []
    assert [(a["decision"], a["reason"]) for a in status["approvals"]] == [
        ("Rejected", "not during peak hours")
    ]
    assert (1, "Rejection") in thread_types(status)
    # The model saw the denial and its reason in its next request.
    seen = json.dumps(spine.model_requests(step=2)[-1]["messages"])
    assert "not during peak hours" in seen


def test_malformed_tool_call_is_shown_to_the_model_and_the_run_recovers(spine: Spine) -> None:
    spine.setup([MALFORMED, READ, done()])
    spine.start()
    status = spine.wait_phase("Succeeded")

    assert thread_types(status) == [(1, "Error"), (2, "ToolCall"), (2, "ToolResult"), (3, "Done")]
    assert "JSON" in status["thread"][0]["content"] or "json" in status["thread"][0]["content"]
    assert status["consecutiveErrors"] == 0
    seen = json.dumps(spine.model_requests(step=2)[-1]["messages"])
    assert "<error" in seen


def test_three_consecutive_errors_fail_the_run_with_a_reason(spine: Spine) -> None:
    spine.setup([MALFORMED, {"text": "I think it is fine."}, MALFORMED, done()])
    spine.start()
    status = spine.wait_phase("Failed")

    succeeded = condition(status, "Succeeded")
    assert succeeded["status"] == "False" and succeeded["reason"] == "TooManyErrors"
    assert "3 consecutive errors" in succeeded["message"]
    assert status["step"] == 3 and "completionTime" in status
    assert any(e["reason"] == "TooManyErrors" for e in spine.events())


def test_max_steps_stops_a_run_that_never_finishes(spine: Spine) -> None:
    spine.setup([READ] * 5, limits={"maxSteps": 2})
    spine.start()
    status = spine.wait_phase("Failed")

    assert condition(status, "Succeeded")["reason"] == "MaxStepsExceeded"
    assert len(spine.jobs()) == 2
    assert len(spine.model_requests()) == 2


def test_missing_agent_is_reported_on_the_run(spine: Spine) -> None:
    spine.setup([done()])
    stack.apply(
        spine.cluster, [stack.run_manifest("orphan", spine.namespace, "no-such-agent", "x")]
    )
    status = spine.wait_phase("Failed", name="orphan")

    cond = condition(status, "Succeeded")
    assert cond["reason"] == "InvalidSpec"
    assert "spec.agentRef" in cond["message"] and "no-such-agent" in cond["message"]
    assert any(
        e["reason"] == "InvalidSpec" and e["type"] == "Warning" for e in spine.events("orphan")
    )


def test_the_schema_refuses_what_it_can_say(spine: Spine) -> None:
    spine.setup([done()])
    bad = stack.run_manifest("bad", spine.namespace, "Not_A_Name", "x", limits={"maxSteps": 0})
    proc = spine.cluster.kubectl("apply", "-f", "-", input=json.dumps(bad), check=False)
    assert proc.returncode != 0
    assert "spec.agentRef" in proc.stderr and "spec.limits.maxSteps" in proc.stderr
    assert stack.get(spine.cluster, "agentrun", "bad", spine.namespace) is None


def test_cancel_while_awaiting_approval(spine: Spine) -> None:
    spine.setup([spine.write(), done()])
    spine.start()
    spine.wait_phase("AwaitingApproval")

    spine.cluster.kubectl(
        "patch",
        "agentrun",
        "run",
        "-n",
        spine.namespace,
        "--type=merge",
        "-p",
        '{"spec": {"cancel": true}}',
    )
    status = spine.wait_phase("Cancelled")
    assert condition(status, "Succeeded")["reason"] == "Cancelled"
    assert "pendingAction" not in status
    assert spine.jobs() == []


# ---- kill the operator at each point where it could lose or repeat work ----

Starter = Callable[..., OperatorProcess]


def _job_uids(spine: Spine) -> dict[str, str]:
    return {
        j["metadata"]["labels"]["agentrun.dev/step"]: j["metadata"]["uid"] for j in spine.jobs()
    }


def test_crash_between_recording_a_tool_call_and_creating_its_job(
    own_operator: tuple[Spine, Starter],
) -> None:
    spine, start = own_operator
    spine.setup([READ, done()])
    op = start(AGENTRUN_FAULT="crash-before-job-create")
    spine.start()
    assert op.wait_exit(60) == 70  # died right after recording step 1's tool call
    status = spine.status()
    assert status["currentAction"]["state"] == "Ready" and spine.jobs() == []

    start()
    status = spine.wait_phase("Succeeded")
    assert list(_job_uids(spine)) == ["1"]
    assert len(spine.pods(spine.jobs()[0]["metadata"]["name"])) == 1
    # The model was not asked again for the step it had already answered.
    assert len(spine.model_requests(step=1)) == 1
    assert thread_types(status).count((1, "ToolCall")) == 1


def test_kill_while_the_job_runs(own_operator: tuple[Spine, Starter]) -> None:
    spine, start = own_operator
    spine.setup([{"tool": "slow-get", "arguments": {"kind": "Deployment", "name": "web"}}, done()])
    op = start()
    spine.start()
    spine.wait(lambda: spine.jobs(), "the slow Job to be created")
    uids = _job_uids(spine)
    op.kill()

    spine.wait(
        lambda: any(
            c["type"] == "Complete" for c in spine.jobs()[0]["status"].get("conditions", [])
        ),
        "the Job to finish while no operator runs",
    )
    start()
    status = spine.wait_phase("Succeeded")
    assert _job_uids(spine) == uids
    assert len(spine.pods(spine.jobs()[0]["metadata"]["name"])) == 1
    assert thread_types(status) == [(1, "ToolCall"), (1, "ToolResult"), (2, "Done")]


def test_kill_while_awaiting_approval_then_approve_while_down(
    own_operator: tuple[Spine, Starter],
) -> None:
    spine, start = own_operator
    spine.setup([spine.write(), done()])
    op = start()
    spine.start()
    status = spine.wait_phase("AwaitingApproval")
    op.kill()

    spine.annotate("agentrun.dev/approve", status["pendingAction"]["actionHash"])
    start()
    status = spine.wait_phase("Succeeded")
    assert len(spine.jobs()) == 1
    assert [a["decision"] for a in status["approvals"]] == ["Approved"]
    assert len(spine.model_requests(step=1)) == 1


def test_human_input_pauses_the_run_until_answered(spine: Spine) -> None:
    ask = {"tool": "request_human_input", "arguments": {"question": "Is web safe to restart?"}}
    spine.setup([ask, done("Restart deferred per the on-call's answer.")])
    spine.start()
    status = spine.wait_phase("AwaitingInput")
    assert status["pendingInput"]["question"] == "Is web safe to restart?"
    assert "agentrun.dev/answer" in status["pendingInput"]["answerCommand"]
    assert any(e["reason"] == "InputRequested" for e in spine.events())

    spine.annotate("agentrun.dev/answer", "not before 18:00")
    status = spine.wait_phase("Succeeded")
    assert (1, "Answer") in thread_types(status)
    assert "not before 18:00" in json.dumps(spine.model_requests(step=2)[-1]["messages"])
    assert "agentrun.dev/answer" not in spine.get()["metadata"].get("annotations", {})


def test_prefetch_puts_evidence_in_the_first_prompt(spine: Spine) -> None:
    prefetch = [
        {"tool": "k8s-get", "arguments": {"kind": "Deployment", "name": "{{ input.context.app }}"}}
    ]
    spine.setup([done()], prefetch=prefetch)
    spine.start(input={"task": "Investigate.", "context": {"app": "web"}})
    status = spine.wait_phase("Succeeded")

    assert thread_types(status)[:2] == [(0, "ToolCall"), (0, "ToolResult")]
    assert status["thread"][0]["arguments"] == {"kind": "Deployment", "name": "web"}
    jobs = spine.jobs()
    assert len(jobs) == 1 and "-p0-" in jobs[0]["metadata"]["name"]
    first = json.dumps(spine.model_requests(step=1)[0]["messages"])
    assert "tool_result" in first and "web" in first


def _ran_together(pod: dict[str, Any]) -> bool:
    """Whether a pod's containers ran at the same time: each started before any ended."""
    states = [cs["state"]["terminated"] for cs in pod["status"]["containerStatuses"]]
    return max(str(t["startedAt"]) for t in states) < min(str(t["finishedAt"]) for t in states)


def _grouped(spine: Spine, job: dict[str, Any]) -> list[tuple[str, int]]:
    """A grouped Job's calls, (container, step), checked against its pod's containers."""
    calls = json.loads(job["metadata"]["annotations"]["agentrun.dev/calls"])
    containers = job["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == [c["container"] for c in calls]
    assert len({json.dumps(c["securityContext"]) for c in containers}) == 1
    [pod] = spine.pods(job["metadata"]["name"])
    assert _ran_together(pod)
    return [(c["container"], c["step"]) for c in calls]


def test_prefetch_calls_run_together_before_the_first_model_call(spine: Spine) -> None:
    # Three calls of a tool that takes 4 s: one after the other they would take 12 s.
    prefetch = [
        {"tool": "slow-get", "arguments": {"kind": "Deployment", "name": "web"}},
        {"tool": "slow-get", "arguments": {"kind": "Pod"}},
        {"tool": "slow-get", "arguments": {"kind": "Deployment", "name": "{{ input.context.x }}"}},
        {"tool": "slow-get", "arguments": {"kind": "Service"}},
    ]
    spine.setup([done()], prefetch=prefetch)
    spine.start()
    status = spine.wait_phase("Succeeded")

    # The three calls share ServiceAccount, image and timeout: one Job (the first call's
    # name), a container each, all running at once.
    [job] = spine.jobs()
    assert job["metadata"]["name"].split("-")[-2] == "p0"
    assert _grouped(spine, job) == [("tool-0", 0), ("tool-1", 0), ("tool-2", 0)]
    types = thread_types(status)
    assert (
        types[:7]
        == [(0, "ToolCall"), (0, "ToolCall"), (0, "Error"), (0, "ToolCall")]
        + [(0, "ToolResult")] * 3
    )
    results = [e for e in status["thread"] if e["type"] == "ToolResult"]
    assert [r["container"] for r in results] == ["tool-0", "tool-1", "tool-2"]
    calls = [e for e in status["thread"] if e["type"] == "ToolCall"]
    assert [c["arguments"]["kind"] for c in calls] == ["Deployment", "Pod", "Service"]
    assert "input has no input.context.x" in status["thread"][2]["content"]
    # The model was asked once, after every prefetch Job had finished.
    assert status["usage"]["modelCalls"] == 1
    first = json.dumps(spine.model_requests(step=1)[0]["messages"])
    assert first.count("<tool_result") >= 3


def test_reads_in_one_reply_run_together_and_a_write_beside_them_waits(spine: Spine) -> None:
    together = {
        "raw_tool_calls": [
            {"name": "slow-get", "arguments": {"kind": "Deployment", "name": "web"}},
            {"name": "rollout-restart", "arguments": spine.write()["arguments"]},
            {"name": "slow-get", "arguments": {"kind": "Pod"}},
        ]
    }
    # The scripted model answers by step; the reads took steps 1 and 2, so step 2 is not asked.
    spine.setup([together, done("never asked"), spine.write(), done("Restarted web.")])
    spine.start()
    status = spine.wait_phase("AwaitingApproval")

    # The two reads ran together in one Job, each its own step and container; the write was
    # not proposed with them.
    [reads] = spine.jobs()
    assert reads["metadata"]["labels"]["agentrun.dev/step"] == "1"
    assert _grouped(spine, reads) == [("tool-0", 1), ("tool-1", 2)]
    assert thread_types(status)[:5] == [
        (1, "ToolCall"),
        (2, "ToolCall"),
        (2, "Error"),
        (1, "ToolResult"),
        (2, "ToolResult"),
    ]
    assert "rollout-restart was not proposed" in status["thread"][2]["content"]
    # Proposed alone at the next model call, it waits for its own approval.
    assert status["pendingAction"]["step"] == 3
    assert status["usage"]["modelCalls"] == 2
    spine.annotate("agentrun.dev/approve", status["pendingAction"]["actionHash"])
    status = spine.wait_phase("Succeeded")
    assert [j["metadata"]["labels"]["agentrun.dev/tool"] for j in spine.jobs()].count(
        "rollout-restart"
    ) == 1
    assert status["step"] == 4


def _metrics(op: OperatorProcess) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{op.metrics_port}/metrics", timeout=5) as r:
        return str(r.read().decode())


def test_metrics_show_runs_waiting_for_approval_steps_tokens_and_tool_jobs(
    spine: Spine, shared_operator: OperatorProcess
) -> None:
    spine.setup([READ, spine.write(), done()])
    spine.start()
    spine.wait_phase("AwaitingApproval")
    text = _metrics(shared_operator)
    assert 'agentrun_runs_awaiting_approval{agent="agent"}' in text
    assert 'agentrun_approval_wait_seconds_max{agent="agent"}' in text
    assert 'agentrun_tool_job_duration_seconds_count{outcome="ok",tool="k8s-get"}' in text
    assert 'agentrun_tokens_total{agent="agent",kind="prompt"' in text
    assert 'agentrun_model_request_duration_seconds_count{agent="agent"' in text
    assert 'agentrun_steps_total{agent="agent"}' in text


def test_notifications_carry_the_approve_command_and_the_result(spine: Spine) -> None:
    with WebhookSink() as sink:
        spine.setup([spine.write(), done("Restarted web.")])
        agent = stack.get(spine.cluster, "agent", "agent", spine.namespace)
        assert agent is not None
        agent["spec"]["notify"] = {"webhookURL": sink.url, "format": "generic"}
        stack.apply(spine.cluster, [agent])
        spine.start()
        status = spine.wait_phase("AwaitingApproval")
        asked = sink.wait_for(lambda p: p.get("event") == "AwaitingApproval")
        assert asked["pendingAction"]["actionHash"] == status["pendingAction"]["actionHash"]
        assert status["pendingAction"]["approveCommand"] in json.dumps(asked)

        spine.annotate("agentrun.dev/approve", status["pendingAction"]["actionHash"])
        spine.wait_phase("Succeeded")
        finished = sink.wait_for(lambda p: p.get("event") == "Succeeded")
        assert "Restarted web." in json.dumps(finished)
