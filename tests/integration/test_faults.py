"""Faults and bad input: every failure ends with a reason a person can act on, nothing is lost,
nothing runs twice, and the operator keeps serving other runs."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.integration.spine import (
    READ,
    Spine,
    condition,
    done,
    pause,
    shell_tool,
    thread_types,
)
from tests.support import stack
from tests.support.stack import OperatorProcess


def add_tools(spine: Spine, *tools: dict[str, Any]) -> None:
    docs = [{**t, "metadata": {**t["metadata"], "namespace": spine.namespace}} for t in tools]
    agent = stack.get(spine.cluster, "agent", "agent", spine.namespace)
    assert agent is not None
    agent["spec"]["tools"] += [t["metadata"]["name"] for t in tools]
    stack.apply(spine.cluster, [*docs, agent])


def call(name: str) -> dict[str, Any]:
    return {"tool": name, "arguments": {}}


# ---- the model misbehaves ----


def test_a_429_storm_is_retried_and_the_run_goes_on(spine: Spine) -> None:
    spine.setup([{"error": 429, "times": 4, "then": READ}, done()])
    spine.start()
    status = spine.wait_phase("Succeeded")
    # 3 attempts (maxRetries 2) failed once; the retry after the backoff got through.
    assert thread_types(status)[0] == (0, "Error")
    assert "429" in status["thread"][0]["content"]
    assert len(spine.model_requests(step=1)) == 5
    assert status["consecutiveErrors"] == 0


def test_a_model_that_keeps_failing_fails_the_run_with_the_cause(spine: Spine) -> None:
    spine.setup([{"error": 503, "times": 100, "then": done()}])
    spine.start()
    status = spine.wait_phase("Failed", timeout=90)
    cond = condition(status, "Succeeded")
    assert cond["reason"] == "TooManyErrors"
    assert "503" in cond["message"]


def test_model_timeouts_fail_the_run_with_the_cause(spine: Spine) -> None:
    spine.setup([{"delay": 3, "then": done()}])
    agent = stack.get(spine.cluster, "agent", "agent", spine.namespace)
    assert agent is not None
    agent["spec"]["model"].update({"timeoutSeconds": 1, "maxRetries": 0})
    stack.apply(spine.cluster, [agent])
    spine.start()
    status = spine.wait_phase("Failed", timeout=90)
    assert "timed out" in condition(status, "Succeeded")["message"]


def test_done_beside_a_tool_call_is_refused_then_recovered(spine: Spine) -> None:
    both = {
        "raw_tool_calls": [
            {"name": "k8s-get", "arguments": '{"kind": "Pod"}'},
            {"name": "done", "arguments": '{"answer": "Nothing to see."}'},
        ]
    }
    spine.setup([both, READ, done()])
    spine.start()
    status = spine.wait_phase("Succeeded")
    assert "`done` is called alone" in status["thread"][0]["content"]
    assert "none of the 2 calls ran" in status["thread"][0]["content"]
    assert len(spine.jobs()) == 1  # neither of the two calls ran; step 2's read did


def test_truncated_json_arguments_are_an_error_the_model_sees(spine: Spine) -> None:
    cut = {"raw_tool_calls": [{"name": "k8s-get", "arguments": '{"kind": "Depl'}]}
    spine.setup([cut, done()])
    spine.start()
    status = spine.wait_phase("Succeeded")
    assert "not valid JSON" in status["thread"][0]["content"]


# ---- tools misbehave ----


def test_a_tool_that_fails_is_an_error_with_its_exit_code(spine: Spine) -> None:
    spine.setup([call("crash"), done()])
    add_tools(spine, shell_tool("crash", "echo 'panic: nil map' >&2; exit 3"))
    spine.start()
    status = spine.wait_phase("Succeeded")
    error = status["thread"][1]
    assert error["type"] == "Error" and "crash failed" in error["content"]
    assert "3" in error["content"] or "panic" in error["content"]
    assert len(spine.pods(spine.jobs()[0]["metadata"]["name"])) == 1  # backoffLimit 0


def test_a_tool_past_its_deadline_is_stopped_and_reported(spine: Spine) -> None:
    spine.setup([call("hang"), done()])
    add_tools(spine, shell_tool("hang", "sleep 120", timeout=2))
    spine.start()
    status = spine.wait_phase("Succeeded", timeout=90)
    assert "timed out after 2s" in status["thread"][1]["content"]


@contextmanager
def cordoned(spine: Spine) -> Iterator[None]:
    """No new pod is scheduled meanwhile: the queue an incident storm makes on a full node."""
    node = spine.cluster.node_name
    spine.cluster.kubectl("cordon", node)
    try:
        yield
    finally:
        spine.cluster.kubectl("uncordon", node)


def test_a_tool_pod_that_waits_for_a_node_is_not_timed_out_by_the_wait(spine: Spine) -> None:
    # Before: the Job's deadline was the tool's timeout, counted from its creation, so a pod
    # that waited 2s for a node was a timeout and the evidence was lost.
    spine.setup([call("quick"), done()])
    add_tools(spine, shell_tool("quick", "echo 'replicas: 0/3 ready'", timeout=2))
    with cordoned(spine):
        spine.start()
        job = spine.wait(lambda: next(iter(spine.jobs()), None), "the tool's Job")
        pause(4)  # twice the tool's timeout, its pod Pending
        pods = spine.pods(job["metadata"]["name"])
        assert [p["status"]["phase"] for p in pods] == ["Pending"]
    status = spine.wait_phase("Succeeded", timeout=90)
    assert thread_types(status)[:2] == [(1, "ToolCall"), (1, "ToolResult")]
    assert "replicas: 0/3 ready" in status["thread"][1]["content"]


def test_a_tool_pod_that_never_gets_a_node_is_an_error_that_says_so(
    own_operator: tuple[Spine, Callable[..., OperatorProcess]],
) -> None:
    spine, start = own_operator
    spine.setup([call("quick"), done()])
    add_tools(spine, shell_tool("quick", "echo never", timeout=2))
    start(AGENTRUN_TOOL_START_SECONDS="3")
    with cordoned(spine):
        spine.start()
        try:  # the error, then the model's answer; on a timeout, the run's status is shown
            status = spine.wait_phase("Succeeded", timeout=120)
        except AssertionError as err:
            jobs = [j.get("status") for j in spine.jobs()]
            raise AssertionError(f"{err}\nits Jobs' status: {json.dumps(jobs)}") from None
    error = status["thread"][1]
    assert error["type"] == "Error"
    assert "was not done when its Job's deadline passed: it waited for a node" in error["content"]
    assert "deadline of 5s passed" in error["content"]
    assert "never" not in error["content"]  # it did not run


def test_a_job_deleted_by_hand_is_reported_and_not_run_again(spine: Spine) -> None:
    spine.setup([call("slow"), done()])
    add_tools(spine, shell_tool("slow", "sleep 20"))
    spine.start()
    job = spine.wait(lambda: spine.jobs(), "the Job")[0]["metadata"]["name"]
    spine.cluster.kubectl("delete", "job", job, "-n", spine.namespace, "--wait=false")
    status = spine.wait_phase("Succeeded", timeout=90)
    assert "disappeared" in status["thread"][1]["content"]
    assert spine.jobs() == [] or all(j["metadata"]["name"] == job for j in spine.jobs())


def test_a_run_moves_on_when_its_tool_pod_succeeds_not_when_the_job_says_so(
    spine: Spine,
) -> None:
    """Under load the job controller marks a Job Complete seconds after its pod succeeded; the
    run does not wait for that. Here the controller is paused (SIGSTOP) once the pod is bound,
    so the Job never says Complete while the run goes on."""
    if spine.cluster.attached:
        pytest.skip("an attached cluster (AGENTRUN_KUBECONFIG) cannot pause its controllers")
    spine.setup([call("short"), done()])
    add_tools(spine, shell_tool("short", "sleep 5; echo 'web: 3/3 ready'"))
    spine.start()
    job = spine.wait(lambda: spine.jobs(), "the Job")[0]["metadata"]["name"]
    spine.wait(lambda: any(p["spec"].get("nodeName") for p in spine.pods(job)), "the pod bound")
    manager = next(p for p in spine.cluster.procs if p.name == "kube-controller-manager")
    os.kill(manager.pid, signal.SIGSTOP)
    try:
        status = spine.wait_phase("Succeeded", timeout=60)
        seen = stack.get(spine.cluster, "job", job, spine.namespace)
    finally:
        os.kill(manager.pid, signal.SIGCONT)
    assert thread_types(status) == [(1, "ToolCall"), (1, "ToolResult"), (2, "Done")]
    assert "web: 3/3 ready" in status["thread"][1]["content"]
    assert seen is not None
    conditions = (seen.get("status") or {}).get("conditions") or []
    assert not any(c["type"] == "Complete" for c in conditions), conditions


def test_a_tool_printing_5_mb_is_bounded_everywhere(spine: Spine) -> None:
    spine.setup([call("flood"), done()])
    add_tools(spine, shell_tool("flood", "head -c 5000000 /dev/zero | tr '\\0' x; echo"))
    spine.start()
    status = spine.wait_phase("Succeeded", timeout=90)
    result = status["thread"][1]
    assert len(result["content"]) <= 4000
    cm = stack.get(spine.cluster, "configmap", result["outputRef"], spine.namespace)
    assert cm is not None
    stored = sum(len(v) for v in cm.get("data", {}).values())
    assert 0 < stored <= 1024 * 1024
    assert len(json.dumps(spine.get())) < 512 * 1024


def test_non_utf8_tool_output_is_kept_readable(spine: Spine) -> None:
    spine.setup([call("binary"), done()])
    add_tools(spine, shell_tool("binary", "printf 'ok \\377\\376 bytes\\n'"))
    spine.start()
    status = spine.wait_phase("Succeeded")
    assert "bytes" in status["thread"][1]["content"]


# ---- others write the run mid-step ----


def test_edits_by_others_during_a_model_call_are_kept_and_the_model_is_asked_once(
    spine: Spine,
) -> None:
    # The operator's status write is conditional on the version it decided from; a label and
    # an annotation written while the model thinks make it a 409, and it decides again.
    spine.setup([{"delay": 3, "then": READ}, done()])
    spine.start()
    spine.wait(lambda: spine.model_requests(step=1), "the first model request")
    spine.cluster.kubectl("label", "agentrun", "run", "-n", spine.namespace, "team=sre")
    spine.annotate("example.com/ticket", "OPS-1")
    status = spine.wait_phase("Succeeded")
    assert len(spine.model_requests(step=1)) == 1
    assert thread_types(status) == [(1, "ToolCall"), (1, "ToolResult"), (2, "Done")]
    assert len(spine.jobs()) == 1
    meta = spine.get()["metadata"]
    assert meta["labels"]["team"] == "sre"
    assert meta["annotations"]["example.com/ticket"] == "OPS-1"


def test_a_status_write_onto_a_stale_version_is_refused(spine: Spine) -> None:
    from kubernetes import client, config

    from agentrun.kube import client as kube

    spine.setup([{"delay": 10, "then": done()}])  # the operator stays out of the way
    spine.start()
    spine.wait(lambda: spine.model_requests(step=1), "the first model request")
    api = config.new_client_from_config(  # type: ignore[no-untyped-call]
        str(spine.cluster.kubeconfig)
    )
    stale = spine.get()["metadata"]["resourceVersion"]
    spine.annotate("example.com/ticket", "OPS-2")
    with pytest.raises(client.ApiException) as refused:
        kube.patch_run_status(api, spine.namespace, "run", {"step": 99}, stale)
    assert refused.value.status == 409
    assert spine.status().get("step", 0) != 99


# ---- bad input ----


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"agentRef": "UPPER_case"}, "spec.agentRef"),
        ({"input": {"task": ""}}, "spec.input.task"),
        ({"limits": {"maxSteps": 0}}, "spec.limits.maxSteps"),
        ({"limits": {"maxConsecutiveErrors": -1}}, "spec.limits.maxConsecutiveErrors"),
        ({"limits": {"timeoutSeconds": 10**9}}, "spec.limits.timeoutSeconds"),
        ({"limits": {"maxSteps": "many"}}, "spec.limits.maxSteps"),
        ({"cancel": "yes"}, "spec.cancel"),
    ],
)
def test_the_schema_refuses_invalid_fields(spine: Spine, spec: dict[str, Any], field: str) -> None:
    stack.prepare_namespace(spine.cluster, spine.namespace)
    run = stack.run_manifest("bad", spine.namespace, "agent", "x")
    run["spec"].update(spec)
    proc = spine.cluster.kubectl(
        "apply", "--validate=false", "-f", "-", input=json.dumps(run), check=False
    )
    assert proc.returncode != 0, proc.stdout
    assert field in proc.stderr


def test_an_input_larger_than_the_apiserver_accepts_is_refused(spine: Spine) -> None:
    stack.prepare_namespace(spine.cluster, spine.namespace)
    run = stack.run_manifest("huge", spine.namespace, "agent", "x")
    run["spec"]["input"]["context"] = {"blob": "y" * (4 * 1024 * 1024)}
    proc = spine.cluster.kubectl(
        "apply", "--validate=false", "-f", "-", input=json.dumps(run), check=False
    )
    assert proc.returncode != 0
    assert "too large" in proc.stderr.lower() or "exceeds" in proc.stderr.lower()


def test_an_agent_listing_a_missing_tool_fails_the_run_clearly(spine: Spine) -> None:
    spine.setup([done()])
    agent = stack.get(spine.cluster, "agent", "agent", spine.namespace)
    assert agent is not None
    agent["spec"]["tools"].append("no-such-tool")
    stack.apply(spine.cluster, [agent])
    spine.start()
    cond = condition(spine.wait_phase("Failed"), "Succeeded")
    assert cond["reason"] == "InvalidAgent" and "no-such-tool" in cond["message"]


def test_a_missing_api_key_secret_fails_the_run_naming_the_secret(spine: Spine) -> None:
    spine.setup([done()])
    agent = stack.get(spine.cluster, "agent", "agent", spine.namespace)
    assert agent is not None
    agent["spec"]["model"]["apiKeySecretRef"] = {"name": "model-key", "key": "api-key"}
    stack.apply(spine.cluster, [agent])
    spine.start()
    cond = condition(spine.wait_phase("Failed", timeout=90), "Succeeded")
    assert "model-key" in cond["message"]
    assert "sk-" not in json.dumps(spine.get())


def test_the_operator_survived_all_of_it(spine: Spine, shared_operator: OperatorProcess) -> None:
    assert shared_operator.proc is not None and shared_operator.proc.poll() is None
    spine.setup([READ, done()])
    spine.start()
    spine.wait_phase("Succeeded")
    assert "Traceback" not in shared_operator.log_tail(2000)
