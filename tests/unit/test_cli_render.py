"""The CLI's pure rendering: durations, the list table, the timeline, the run input."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from agentrun.cli import view

NOW = datetime(2024, 5, 1, 10, 7, 0, tzinfo=UTC)
HASH = "f00d" * 16


def a_run(**status: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "phase": "AwaitingApproval",
        "step": 2,
        "startTime": "2024-05-01T10:00:01Z",
        "conditions": [
            {"type": "Running", "status": "True", "reason": "Running"},
            {"type": "ApprovalPending", "status": "True", "reason": "AwaitingApproval"},
        ],
        "promptRef": {"name": "sre-agent", "version": "3", "sha256": "abcdef0123456789" * 4},
        "usage": {"promptTokens": 100, "completionTokens": 20, "totalTokens": 120, "modelCalls": 2},
        "thread": [
            {
                "step": 1,
                "type": "ToolCall",
                "time": "2024-05-01T10:00:02Z",
                "tool": "k8s-get",
                "arguments": {"kind": "Deployment", "name": "web"},
                "content": 'k8s-get {"kind":"Deployment","name":"web"}',
            },
            {
                "step": 1,
                "type": "ToolResult",
                "time": "2024-05-01T10:00:05Z",
                "tool": "k8s-get",
                "content": "Deployment web: 1/1 ready\nimage web:1",
                "jobRef": "run-s1-abc123",
                "outputRef": "run-s1-abc123-out",
            },
            {
                "step": 2,
                "type": "ToolCall",
                "time": "2024-05-01T10:00:06Z",
                "tool": "rollout-restart",
                "arguments": {"name": "web", "namespace": "s-1"},
                "content": 'rollout-restart {"name":"web","namespace":"s-1"}',
            },
        ],
        "pendingAction": {
            "step": 2,
            "tool": "rollout-restart",
            "arguments": {"name": "web", "namespace": "s-1"},
            "actionHash": HASH,
            "requestedTime": "2024-05-01T10:00:06Z",
            "approveCommand": f"kubectl annotate agentrun run -n s-1 agentrun.dev/approve={HASH}",
        },
    }
    base.update(status)
    return {
        "apiVersion": "agentrun.dev/v1alpha1",
        "kind": "AgentRun",
        "metadata": {
            "name": "run",
            "namespace": "s-1",
            "creationTimestamp": "2024-05-01T10:00:00Z",
        },
        "spec": {"agentRef": "agent", "input": {"task": "Investigate web.", "context": {}}},
        "status": base,
    }


# ---------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-5, "<invalid>"),
        (-0.5, "0s"),
        (0, "0s"),
        (59, "59s"),
        (119, "119s"),
        (120, "2m"),
        (192, "3m12s"),
        (600, "10m"),
        (179 * 60, "179m"),
        (3 * 3600, "3h"),
        (3 * 3600 + 5 * 60, "3h5m"),
        (30 * 3600, "30h"),
        (3 * 86400 + 4 * 3600, "3d4h"),
        (3 * 86400, "3d"),
        (100 * 86400, "100d"),
        (800 * 86400, "2y70d"),
        (3650 * 86400, "10y"),
    ],
)
def test_human_duration_matches_kubectl(seconds: float, text: str) -> None:
    assert view.human_duration(seconds) == text


def test_times_tolerate_missing_and_bad_values() -> None:
    assert view.parse_time(None) is None
    assert view.parse_time("yesterday") is None
    assert view.since(None, NOW) == ""
    assert view.since("2024-05-01T10:06:00Z", NOW) == "60s"
    assert view.span("2024-05-01T10:00:00Z", "2024-05-01T12:03:04Z") == "2h3m4s"
    assert view.span("2024-05-01T10:00:00Z", "2024-05-01T10:00:09Z") == "9s"
    assert view.span("2024-05-01T10:00:00Z", None) == ""
    assert view.offset("2024-05-01T10:00:00Z", "2024-05-01T10:01:03Z") == "+1m3s"


# ---------------------------------------------------------------- list


def test_list_shows_pending_tool_and_how_long_it_waited() -> None:
    text = view.render_list([a_run()], NOW)
    header, row = text.splitlines()
    assert header.split() == ["NAME", "PHASE", "STEP", "AGENT", "PENDING", "WAITING", "AGE"]
    assert row.split() == [
        "run",
        "AwaitingApproval",
        "2",
        "agent",
        "rollout-restart",
        "6m54s",
        "7m",
    ]
    # Columns line up, kubectl style: each header starts where its cells start.
    assert header.index("PENDING") == row.index("rollout-restart")


def test_list_all_namespaces_sorts_and_marks_runs_waiting_on_nothing() -> None:
    done = a_run(phase="Succeeded", pendingAction=None)
    done["metadata"] = {**done["metadata"], "namespace": "a", "name": "zz"}
    asking = a_run(
        phase="AwaitingInput",
        pendingAction=None,
        pendingInput={"step": 2, "question": "Which?", "requestedTime": "2024-05-01T10:06:30Z"},
    )
    text = view.render_list([asking, done], NOW, all_namespaces=True)
    lines = [line.split() for line in text.splitlines()]
    assert lines[0][:2] == ["NAMESPACE", "NAME"]
    assert lines[1] == ["a", "zz", "Succeeded", "2", "agent", "<none>", "7m"]
    assert lines[2] == ["s-1", "run", "AwaitingInput", "2", "agent", "input", "30s", "7m"]


def test_a_fresh_run_without_status_is_pending() -> None:
    run = a_run()
    del run["status"]
    assert view.list_row(run, NOW) == ["run", "Pending", "0", "agent", "<none>", "", "7m"]


def test_table_colours_keep_alignment() -> None:
    style = view.Style(colour=True)
    text = view.render_table(["A", "B"], [["x", "1"], ["long", "2"]], paint={0: style.bold})
    lines = text.splitlines()
    assert lines[1] == "\x1b[1mx\x1b[0m      1"
    assert lines[2] == "\x1b[1mlong\x1b[0m   2"
    assert view.Style(colour=False).phase("Failed") == "Failed"


# ---------------------------------------------------------------- show


def test_show_header_has_prompt_tokens_times_and_conditions() -> None:
    text = view.render_run(a_run(), NOW)
    assert text.startswith("AgentRun s-1/run   AwaitingApproval\n")
    assert "Prompt:      sre-agent v3 (sha256 abcdef012345)" in text
    assert "Tokens:      120 (100 prompt + 20 completion, 2 model calls)" in text
    assert "Started:     2024-05-01T10:00:01Z" in text
    assert "Duration:    6m59s (still going)" in text
    assert "Conditions:  Running=True (Running), ApprovalPending=True (AwaitingApproval)" in text
    assert "\x1b[" not in text


def test_show_prints_the_trace_id_and_a_link_when_the_ui_address_is_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    monkeypatch.delenv(view.TRACE_URL_ENV, raising=False)
    assert "Trace:" not in view.render_run(a_run(), NOW)  # tracing off: no id to show
    assert f"  Trace:       {trace}\n" in view.render_run(a_run(traceID=trace), NOW)
    monkeypatch.setenv(view.TRACE_URL_ENV, "http://localhost:16686/trace/{trace_id}")
    text = view.render_run(a_run(traceID=trace), NOW)
    assert f"  Trace:       {trace}   http://localhost:16686/trace/{trace}\n" in text


def test_show_timeline_has_steps_tools_arguments_content_and_links() -> None:
    text = view.render_run(a_run(), NOW)
    timeline = text.split("Timeline\n")[1].split("\n\n")[0].splitlines()
    assert timeline == [
        '  step 1  ToolCall    k8s-get {"kind": "Deployment", "name": "web"}  +1s',
        "  step 1  ToolResult  k8s-get  +4s",
        "            Deployment web: 1/1 ready",
        "            image web:1",
        "            job/run-s1-abc123  configmap/run-s1-abc123-out",
        '  step 2  ToolCall    rollout-restart {"name": "web", "namespace": "s-1"}  +5s',
    ]


def test_show_pending_action_has_the_exact_approve_command() -> None:
    text = view.render_run(a_run(), NOW)
    pending = text.split("Pending action")[1]
    assert pending.startswith(" (step 2, waiting 6m54s)")
    assert "Tool:           rollout-restart" in pending
    assert f"Hash:           {HASH}" in pending
    assert (
        f"Approve:        kubectl annotate agentrun run -n s-1 agentrun.dev/approve={HASH}"
        in pending
    )
    assert "kubectl agentrun approve run -n s-1" in pending
    # No frozen snapshot (an older operator): the approver is told, not shown a guess.
    assert "What runs:      not recorded: what runs is the live AgentTool" in pending


SNAPSHOT = {
    "builtin": "scale",
    "effect": "write",
    "image": "ghcr.io/agentrun/agentrun:0.1.0",
    "command": ["agentrun-tool", "--flag", "two words"],
    "serviceAccountName": "agentrun-tool-write",
    "env": [{"name": "MODE", "value": "safe"}],
    "resources": {
        "requests": {"cpu": "50m", "memory": "64Mi"},
        "limits": {"cpu": "500m", "memory": "256Mi"},
    },
    "timeoutSeconds": 120,
    "outputLimitBytes": 65536,
    "specDigest": "d1" * 32,
}


def test_pending_action_shows_everything_that_will_run() -> None:
    run = a_run()
    run["status"]["pendingAction"].update(
        tool="scale-web",
        arguments={"name": "web", "replicas": 2},
        snapshot=SNAPSHOT,
        preconditions={"fromReplicas": 1, "toReplicas": 2, "deploymentUID": "u-9"},
        expiresTime="2024-05-02T10:00:06Z",
    )
    pending = view.render_pending(run, NOW)
    assert pending[1:-3] == [
        "  Tool:           scale-web",
        '  Arguments:      {"name": "web", "replicas": 2}',
        "  Built-in:       scale",
        "  Effect:         write",
        "  Image:          ghcr.io/agentrun/agentrun:0.1.0",
        "  Command:        agentrun-tool --flag 'two words'",
        "  ServiceAccount: agentrun-tool-write",
        "  Env:            MODE=safe",
        "  Resources:      requests cpu=50m memory=64Mi; limits cpu=500m memory=256Mi",
        "  Timeout:        120s, output up to 65536 bytes",
        f"  Spec digest:    {'d1' * 32}",
        "  Preconditions:  replicas 1 -> 2, deploymentUID=u-9",
        "  Expires:        2024-05-02T10:00:06Z (in 23h)",
        f"  Hash:           {HASH}",
    ]


def test_pending_action_cannot_rewrite_the_approvers_terminal() -> None:
    # A command or argument with escape sequences (clear the line, print a harmless image)
    # is shown escaped: the approver sees what is really there.
    run = a_run()
    snap = {**SNAPSHOT, "command": ["sh", "-c", "curl evil\x1b[2K\rharmless"]}
    run["status"]["pendingAction"].update(snapshot=snap)
    text = "\n".join(view.render_pending(run, NOW))
    assert "\x1b" not in text and "\r" not in text
    assert "curl evil\\x1b[2K\\rharmless" in text


def test_show_finished_run_has_approvals_result_and_duration() -> None:
    run = a_run(
        phase="Succeeded",
        pendingAction=None,
        completionTime="2024-05-01T10:01:31Z",
        conditions=[{"type": "Succeeded", "status": "True", "reason": "Done"}],
        approvals=[
            {
                "step": 2,
                "tool": "rollout-restart",
                "actionHash": HASH,
                "decision": "Approved",
                "approver": "alice",
                "time": "2024-05-01T10:01:00Z",
            }
        ],
        result={"answer": "web restarted;\nit was stuck."},
    )
    text = view.render_run(run, NOW)
    assert "Pending action" not in text
    assert "Completed:   2024-05-01T10:01:31Z" in text
    assert "Duration:    1m30s\n" in text
    assert "  step 2   Approved  rollout-restart f00df00df00d by alice at 2024-05-01T10:01:00Z" in (
        text
    )
    assert text.endswith("Result\n            web restarted;\n            it was stuck.\n")


def test_show_failed_run_says_why_and_question_says_how_to_answer() -> None:
    failed = a_run(
        phase="Failed",
        pendingAction=None,
        conditions=[
            {"type": "Succeeded", "status": "False", "reason": "TooManyErrors", "message": "3 x"}
        ],
    )
    assert "Reason:      3 x" in view.render_run(failed, NOW)
    asking = a_run(
        phase="AwaitingInput",
        pendingAction=None,
        pendingInput={
            "step": 2,
            "question": "Restart now?",
            "urgency": "high",
            "requestedTime": "2024-05-01T10:06:00Z",
        },
    )
    text = view.render_run(asking, NOW)
    assert "Question (step 2, waiting 60s)" in text
    assert "Restart now?" in text
    assert "kubectl agentrun answer run -n s-1 '<your answer>'" in text


def test_long_content_is_shortened_unless_full() -> None:
    run = a_run()
    run["status"]["thread"][1]["content"] = "\n".join(f"line {i}" for i in range(30))
    short_text = view.render_run(run, NOW)
    assert "line 7" in short_text and "line 8" not in short_text
    assert "[... 22 more lines; --full shows all]" in short_text
    assert "line 29" in view.render_run(run, NOW, full=True)


def test_show_notes_dropped_events_and_a_running_job() -> None:
    run = a_run(
        phase="Running",
        pendingAction=None,
        threadDropped=4,
        currentAction={
            "step": 3,
            "tool": "k8s-get",
            "arguments": {"kind": "Pod"},
            "state": "Ready",
            "jobRef": "run-s3-aaaaaa",
            "requestedTime": "2024-05-01T10:06:50Z",
        },
    )
    text = view.render_run(run, NOW)
    assert "[4 earlier events dropped for size]" in text
    assert "Running (step 3)" in text and "job/run-s3-aaaaaa  since 10s" in text


def test_show_lists_each_call_of_a_batch_with_its_job_container_and_state() -> None:
    def call(step: int, tool: str, container: str, result: Any = None) -> dict[str, Any]:
        return {
            "step": step,
            "tool": tool,
            "arguments": {"namespace": "shop"},
            "state": "Running",
            "jobRef": "run-p0-aaaaaa",
            "container": container,
            "prefetch": True,
            "requestedTime": "2024-05-01T10:06:55Z",
            "result": result,
        }

    run = a_run(
        phase="Running",
        pendingAction=None,
        batch=[
            call(0, "k8s-events", "c0", {"type": "ToolResult", "content": "..."}),
            call(0, "recent-deploys", "c1", {"type": "Error", "content": "timed out"}),
            call(0, "runbook", "c2"),
        ],
    )
    text = view.render_run(run, NOW)
    assert "Running together (prefetch, 2 of 3 done)" in text
    lines = text.splitlines()
    row = next(i for i, line in enumerate(lines) if "recent-deploys" in line)
    assert "error" in lines[row] and '{"namespace": "shop"}' in lines[row]
    assert "job/run-p0-aaaaaa container c1  since 5s" in lines[row + 1]
    assert "running  runbook" in text and "done     k8s-events" in text


# ---------------------------------------------------------------- run input


def test_input_with_task_and_context() -> None:
    doc = {"task": "Why?", "context": {"alert": {"labels": {"a": "b"}}}}
    assert view.build_input(doc, None) == doc
    assert view.build_input(doc, "Other") == {"task": "Other", "context": doc["context"]}


def test_input_as_bare_context_needs_task() -> None:
    alert = {"alert": {"labels": {"alertname": "KubePodCrashLooping"}}}
    assert view.build_input(alert, "Look") == {"task": "Look", "context": alert}
    assert view.build_input(None, "Look") == {"task": "Look", "context": {}}
    with pytest.raises(view.InputError, match="--task"):
        view.build_input(alert, None)
    with pytest.raises(view.InputError, match="no task"):
        view.build_input({"context": {}}, None)
    with pytest.raises(view.InputError, match="object"):
        view.build_input([1, 2], "x")
    with pytest.raises(view.InputError, match="context"):
        view.build_input({"task": "x", "context": [1]}, None)


def test_run_manifest_names_or_generates() -> None:
    body = view.run_manifest("agent", "ns", {"task": "t", "context": {}}, None)
    assert body["metadata"] == {"namespace": "ns", "generateName": "agent-"}
    assert body["spec"] == {"agentRef": "agent", "input": {"task": "t", "context": {}}}
    assert view.run_manifest("agent", "ns", {"task": "t"}, "mine")["metadata"]["name"] == "mine"


def test_outcome_and_dump() -> None:
    assert "rollout-restart" in view.outcome(a_run(), NOW)
    done = a_run(phase="Succeeded", pendingAction=None, result={"answer": "fine"})
    assert view.outcome(done, NOW) == "run: Succeeded\nfine\n"
    assert json.loads(view.dump({"a": 1}, "json")) == {"a": 1}
    assert view.dump({"a": 1}, "yaml") == "a: 1\n"
