"""Spans from outside the operator that join a run's trace: the tool's own span under its
execute_tool span (TRACEPARENT and the exporter's settings in its pod), and the receiver's
request span linked to the runs it made. Off, neither imports anything of OpenTelemetry."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agentrun.api.naming import RUN_SPAN, span_id, trace_id, traceparent
from agentrun.operator import jobs
from agentrun.otel import build, parse_traceparent, pod_env
from agentrun.receiver.server import Receiver
from agentrun.tool import runner as toolrunner
from agentrun.tool.envelope import Envelope
from tests.support.otlp import OtlpReceiver, ReceivedSpan
from tests.unit.test_jobs import job
from tests.unit.test_receiver import AUTH, FakeStore, _StaticTokens, config, notification

ROOT = Path(__file__).resolve().parents[2]
UID = "0f1e2d3c-aaaa-bbbb-cccc-000000000001"
PARENT = traceparent(UID, "r1-s1-abc")
NO_OTEL = "assert not [m for m in sys.modules if m.startswith('opentelemetry')], 'imported'"


def python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "KUBECONFIG"))}
    environ.update(env, PYTHONPATH=str(ROOT / "operator"))
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environ, timeout=60
    )


@pytest.fixture
def collector() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver().start()
    yield receiver
    receiver.stop()


def wait_spans(collector: OtlpReceiver, n: int) -> list[ReceivedSpan]:
    deadline = time.monotonic() + 10
    while len(collector.spans) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    return list(collector.spans)


# ---------------------------------------------------------------- the tool's pod


def test_the_tool_pod_gets_the_operators_exporter_but_not_its_headers_or_files() -> None:
    operator_env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_HEADERS": "x-token=secret",
        "OTEL_EXPORTER_OTLP_CERTIFICATE": "/etc/ca.pem",
        "OTEL_SERVICE_NAME": "agentrun-operator",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true",
        "HOME": "/root",
    }
    assert pod_env(operator_env) == {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true",
        "OTEL_SERVICE_NAME": "agentrun-tool",
    }
    assert pod_env({"OTEL_TRACES_EXPORTER": "console"}) == {}  # nowhere to send: context only


def test_a_traced_job_gets_the_exporter_in_its_env_which_is_not_what_it_runs() -> None:
    exporter = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}
    traced = jobs.with_exporter(job(traceparent=PARENT), exporter)
    container = traced["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["TRACEPARENT"] == PARENT
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://c:4318"
    # Only a traced container: no TRACEPARENT, no exporter.
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in str(jobs.with_exporter(job(), exporter))
    # Tracing switched on or off across a restart: the Job is still ours...
    assert jobs.job_mismatch(traced, job()) is None
    assert jobs.job_mismatch(job(), traced) is None
    # ...but any other difference in its env is not.
    container["env"].append({"name": "X", "value": "1"})
    assert jobs.job_mismatch(traced, job()) is not None


@pytest.mark.parametrize(
    "env",
    [
        {"TRACEPARENT": PARENT},  # the operator traces to a console: no endpoint here
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"},  # no context: not a traced call
        {},
    ],
)
def test_the_tool_runner_imports_nothing_of_opentelemetry_unless_traced(
    env: dict[str, str],
) -> None:
    code = f"import sys\nfrom agentrun.tool import runner\nrunner.main(['no-such-tool'])\n{NO_OTEL}"
    proc = python(code, **env)
    assert proc.returncode == 0, proc.stderr


def test_the_tools_span_is_a_child_of_its_execute_tool_span(collector: OtlpReceiver) -> None:
    env = {
        "TRACEPARENT": PARENT,
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
        "OTEL_SERVICE_NAME": "agentrun-tool",
        "AGENTRUN_RUN": "r1",
        "AGENTRUN_NAMESPACE": "prod",
        "AGENTRUN_STEP": "3",
    }
    proc = python(
        "import sys\nfrom agentrun.tool import runner\nsys.exit(runner.main(['no-such-tool']))",
        **env,
    )
    assert proc.returncode == 2, proc.stderr
    [span] = wait_spans(collector, 1)
    assert (span.trace_id, span.parent) == parse_traceparent(PARENT)
    assert (span.name, span.service) == ("agentrun-tool no-such-tool", "agentrun-tool")
    a = span.attributes
    assert (a["gen_ai.tool.name"], a["agentrun.tool.outcome"]) == ("no-such-tool", "usage_error")
    assert a["agentrun.tool.output_bytes"] == len(proc.stdout.strip().encode())
    assert (a["agentrun.run.name"], a["agentrun.run.namespace"], a["agentrun.step"]) == (
        "r1",
        "prod",
        3,
    )
    assert "gen_ai.tool.call.result" not in a  # no content unless opted in
    assert span.error == "usage_error"  # the outcome, not the message


def test_opted_in_the_tools_span_holds_its_result_redacted(
    collector: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "ghp_" + "a1B2c3D4" * 5
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint)
    failed = Envelope("k8s-get", False, None, f"forbidden with token {secret}")
    line = toolrunner.render(failed, 4096)
    env = {
        "TRACEPARENT": PARENT,
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
        "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true",
    }
    now = datetime.now(UTC)
    assert toolrunner.send_span(failed, 0, line, (now, now), env)
    [span] = wait_spans(collector, 1)
    assert span.attributes["agentrun.tool.outcome"] == "failed"
    result = span.attributes["gen_ai.tool.call.result"]
    assert "forbidden with token ghp_" in result and span.error
    assert "forbidden with token" in span.error
    assert secret not in result and secret not in span.error


def test_a_collector_that_is_down_costs_the_tool_little_and_never_its_result() -> None:
    began = time.monotonic()
    proc = python(
        "import sys\nfrom agentrun.tool import runner\nsys.exit(runner.main(['no-such-tool']))",
        TRACEPARENT=PARENT,
        OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9",  # discard port: refused
    )
    assert proc.returncode == 2
    assert '"agentrunEnvelope"' in proc.stdout.splitlines()[0]
    assert time.monotonic() - began < 15


# ---------------------------------------------------------------- the receiver


class UidStore(FakeStore):
    async def create_run(self, manifest: dict[str, Any]) -> dict[str, Any] | None:
        made = await super().create_run(manifest)
        if made is not None:
            made["metadata"]["uid"] = f"uid-{len(self.runs)}"
        return made


def test_the_receivers_request_span_links_to_the_run_it_created_and_then_recorded_on() -> None:
    exporter = InMemorySpanExporter()

    async def main() -> None:
        store = UidStore()
        tracer = build("agentrun-receiver", exporter, False, batch=False)
        recv = Receiver(config(), store, clock=lambda: 0.0, tracer=tracer)
        recv.tokens = _StaticTokens()
        async with TestClient(TestServer(recv.app())) as client:
            for _ in range(2):  # created, then a repeat of the group
                resp = await client.post("/alertmanager", json=notification(), headers=AUTH)
                assert resp.status == 200
            caller = traceparent("caller", "x")
            await client.post("/runs", json={}, headers={**AUTH, "traceparent": caller})
            assert (await client.get("/healthz")).status == 200

    asyncio.run(main())
    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == ["POST /alertmanager"] * 2 + ["POST /runs"]
    links = [
        [
            (
                f"{x.context.trace_id:032x}",
                f"{x.context.span_id:016x}",
                why,
            )
            for x in s.links
            for why in [(x.attributes or {}).get("agentrun.link")]
        ]
        for s in spans
    ]
    run = (trace_id("uid-1"), span_id("uid-1", RUN_SPAN))
    assert links == [[(*run, "created")], [(*run, "deduplicated")], []]
    first = spans[0]
    assert first.kind.name == "SERVER"
    assert dict(first.attributes or {})["http.response.status_code"] == 200
    # A request's own trace, not the run's; a caller's traceparent makes it a child.
    assert format(first.context.trace_id, "032x") != run[0]
    assert format(spans[2].context.trace_id, "032x") == trace_id("caller")
    assert (
        dict(spans[2].attributes or {})["http.response.status_code"] == 400
    )  # an invalid request: still a span


def test_the_receiver_without_otel_variables_imports_nothing_of_opentelemetry() -> None:
    code = (
        "import sys\nfrom agentrun.receiver import server\n"
        "assert server.otel.setup('agentrun-receiver') is None\n" + NO_OTEL
    )
    proc = python(code)
    assert proc.returncode == 0, proc.stderr
