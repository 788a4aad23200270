"""A run's trace, end to end: the real operator with the real OpenTelemetry SDK and OTLP/HTTP
exporter, on the real control plane, sending to an OTLP/HTTP receiver (tests/support/otlp.py
says why not a collector binary). The alert receiver creates the run (its request span links
to the run's trace); the run reads, waits for an approval while its operator is killed, and
writes under a new operator: still one trace, with every span under the run's, and each
tool's own span (sent by agentrun-tool in the Job's pod) under its execute_tool span."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Iterator

import pytest

from agentrun.api.naming import span_id, trace_id
from tests.integration.spine import READ, Spine, done
from tests.support.alerting import ReceiverThread
from tests.support.otlp import OtlpReceiver, ReceivedSpan
from tests.support.stack import OperatorProcess

Starter = Callable[..., OperatorProcess]


@pytest.fixture
def collector() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver().start()
    yield receiver
    receiver.stop()


def _wait_spans(collector: OtlpReceiver, names: list[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = [s.name for s in collector.spans]
        if all(got.count(n) >= names.count(n) for n in names):
            return
        time.sleep(0.1)
    raise AssertionError(f"spans {names} not all received: {[s.name for s in collector.spans]}")


def _create_through_the_receiver(spine: Spine) -> ReceiverThread:
    """The run, made by the receiver's /runs (tracing on from the same variables)."""
    recv = ReceiverThread(
        {
            "defaultNamespace": spine.namespace,
            "auth": {"allowUnauthenticated": True},
            "api": {"agents": ["agent"]},
        },
        spine.cluster.kubeconfig,
    )
    recv.start()
    body = {"agent": "agent", "task": "Investigate web.", "name": "run"}
    request = urllib.request.Request(
        f"{recv.url}/runs", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        assert answer.status == 201
    return recv


def test_one_trace_for_a_run_with_a_read_an_approval_and_a_write_across_a_restart(
    own_operator: tuple[Spine, Starter],
    collector: OtlpReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spine, start = own_operator
    spine.setup([READ, spine.write(), done("web restarted.")])
    otel = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "200",  # ms: the spans before the kill are out by then
    }
    for key, value in otel.items():  # the receiver, in this process
        monkeypatch.setenv(key, value)
    op = start(**otel)
    recv = _create_through_the_receiver(spine)
    waiting = spine.wait_phase("AwaitingApproval")
    model = spine.model
    _wait_spans(collector, [f"chat {model}", f"chat {model}", "execute_tool k8s-get"])
    op.kill()  # SIGKILL: whatever it still held is lost; what it had sent stays in the trace

    pending = waiting["pendingAction"]
    spine.cluster.kubectl(
        "annotate", "agentrun", "run", "-n", spine.namespace,
        f"agentrun.dev/approve={pending['actionHash']}", "agentrun.dev/decided-by=alice",
    )  # fmt: skip
    op = start(**otel)
    status = spine.wait_phase("Succeeded")
    recv.stop()  # its batched span is flushed on the way out
    tools = ["agentrun-tool k8s-get", "agentrun-tool rollout-restart"]
    _wait_spans(collector, ["invoke_agent agent", "approval rollout-restart", "POST /runs", *tools])
    op.stop()  # SIGTERM: the batched spans are flushed on the way out

    run = spine.get()
    uid = run["metadata"]["uid"]
    assert status["traceID"] == trace_id(uid)
    # The receiver's request: a trace of its own, linked to the run's.
    [request] = collector.named("POST /runs")
    assert (request.service, request.kind) == ("agentrun-receiver", "server")
    assert request.links == [(trace_id(uid), span_id(uid, "run"))]
    assert request.attributes["http.response.status_code"] == 201
    assert request.trace_id != status["traceID"]
    spans = [s for s in collector.spans if s is not request]
    assert {s.trace_id for s in spans} == {status["traceID"]}, "one trace for the whole run"
    assert {s.service for s in spans} == {"agentrun-operator", "agentrun-tool"}
    by_name: dict[str, list[ReceivedSpan]] = {}
    for s in spans:
        by_name.setdefault(s.name, []).append(s)
    assert sorted((n, len(v)) for n, v in by_name.items()) == sorted(
        [
            ("invoke_agent agent", 1),
            (f"chat {model}", 3),
            ("execute_tool k8s-get", 1),
            ("agentrun-tool k8s-get", 1),
            ("approval rollout-restart", 1),
            ("execute_tool rollout-restart", 1),
            ("agentrun-tool rollout-restart", 1),
        ]
    )
    [root] = by_name["invoke_agent agent"]
    assert (root.span_id, root.parent) == (span_id(uid, "run"), None)
    mine = [s for s in spans if s.service == "agentrun-operator"]
    assert all(s.parent == root.span_id for s in mine if s is not root)
    # The run's span covers all of it, from creation to the end.
    assert all(root.start_ns <= s.start_ns and s.end_ns <= root.end_ns for s in spans)
    a = root.attributes
    assert a["gen_ai.operation.name"] == "invoke_agent"
    assert (a["gen_ai.agent.name"], a["gen_ai.agent.id"]) == ("agent", f"{spine.namespace}/agent")
    assert (a["agentrun.run.name"], a["agentrun.run.namespace"]) == ("run", spine.namespace)
    assert (a["agentrun.run.uid"], a["agentrun.run.phase"], a["agentrun.run.steps"]) == (
        uid,
        "Succeeded",
        3,
    )
    assert a["gen_ai.usage.input_tokens"] == status["usage"]["promptTokens"]
    assert root.error is None

    steps = sorted(s.attributes["agentrun.step"] for s in by_name[f"chat {model}"])
    assert steps == [1, 2, 3]
    for chat in by_name[f"chat {model}"]:
        c = chat.attributes
        assert chat.kind == "client"
        assert (c["gen_ai.operation.name"], c["gen_ai.provider.name"]) == ("chat", "openai")
        assert c["gen_ai.request.model"] == model
        assert c["gen_ai.usage.input_tokens"] > 0 and c["gen_ai.usage.output_tokens"] > 0
        expected = ("stop",) if c["agentrun.step"] == 3 else ("tool_calls",)
        assert c["gen_ai.response.finish_reasons"] == expected
        assert "gen_ai.output.messages" not in c  # content only when opted in

    jobs = {j["metadata"]["labels"]["agentrun.dev/tool"]: j for j in spine.jobs()}
    for tool in ("k8s-get", "rollout-restart"):
        [span] = by_name[f"execute_tool {tool}"]
        job = jobs[tool]
        name = job["metadata"]["name"]
        env = {
            e["name"]: e.get("value")
            for e in job["spec"]["template"]["spec"]["containers"][0]["env"]
        }
        # The pod's trace context is this span: spans from inside the tool join under it.
        assert env["TRACEPARENT"] == f"00-{status['traceID']}-{span.span_id}-01"
        assert span.span_id == span_id(uid, name)
        t = span.attributes
        assert (t["gen_ai.operation.name"], t["gen_ai.tool.name"]) == ("execute_tool", tool)
        assert (t["gen_ai.tool.call.id"], t["agentrun.job.name"]) == (name, name)
        assert t["agentrun.tool.outcome"] == "succeeded"
        assert t["agentrun.job.uid"] == job["metadata"]["uid"]
        assert "gen_ai.tool.call.result" not in t
        # The tool's own span, from inside its pod, under this one.
        [own] = by_name[f"agentrun-tool {tool}"]
        assert (own.service, own.parent) == ("agentrun-tool", span.span_id)
        o = own.attributes
        assert (o["gen_ai.tool.name"], o["agentrun.tool.outcome"]) == (tool, "succeeded")
        assert (o["agentrun.run.name"], o["agentrun.run.namespace"]) == ("run", spine.namespace)
        assert o["agentrun.tool.output_bytes"] > 0 and "gen_ai.tool.call.result" not in o
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == collector.endpoint

    [wait] = by_name["approval rollout-restart"]
    w = wait.attributes
    assert (w["agentrun.approval.decision"], w["agentrun.approval.decided_by"]) == (
        "Approved",
        "alice",
    )
    assert w["agentrun.approval.action_hash"] == pending["actionHash"]
    # It waited through the kill and the restart: at least as long as the span says.
    assert w["agentrun.approval.wait_seconds"] == pytest.approx(
        (wait.end_ns - wait.start_ns) / 1e9, abs=0.01
    )
    [write] = by_name["execute_tool rollout-restart"]
    assert wait.end_ns <= write.start_ns  # the write ran after its approval
