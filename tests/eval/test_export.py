"""`kubectl agentrun export` round trip, in pure code: each eval case's replayed run, exported
as a case (cli.export.build_case), replays to the same run and the very same model requests
(its requests.json), with its credentials redacted. The cluster version of this test is
tests/integration/test_export.py."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentrun.cli import export
from agentrun.tool.envelope import Envelope
from agentrun.tool.redaction import redact_value
from tests.eval import harness


def as_cluster(case: harness.Case) -> harness.Case:
    """The case as a cluster would have run it: the tool runner redacts every output."""
    recording = copy.deepcopy(case.recording)
    for rec in recording.get("tools") or []:
        for key in ("output", "error"):
            if rec.get(key) is not None:
                rec[key] = redact_value(rec[key])
    return dataclasses.replace(case, recording=recording)


def as_cluster_run(case: harness.Case) -> tuple[dict[str, Any], dict[str, dict[str, str]]]:
    """The case's replayed run as the apiserver would return it, and its output ConfigMaps."""
    out = asyncio.run(harness.replay(case))
    assert out.run is not None
    run = out.run.model_dump(mode="json", exclude_none=True)
    outputs: dict[str, dict[str, str]] = {}
    for event in out.run.status.thread:
        if event.outputRef and event.tool:
            rec = harness.find_recording(
                case,
                event.tool,
                _call_args(out.run.status.thread, event),
                run["metadata"]["namespace"],
            )
            if rec is not None:
                env = Envelope(
                    event.tool, bool(rec.get("ok", True)), rec.get("output"), rec.get("error")
                )
                outputs[event.outputRef] = {"output.json": json.dumps(env.to_dict())}
    return run, outputs


def _call_args(thread: Any, result: Any) -> dict[str, Any]:
    calls = [e for e in thread if e.type.value == "ToolCall" and e.step == result.step]
    calls = [c for c in calls if c.tool == result.tool]
    return dict(calls[0].arguments or {}) if calls else {}


def agent_and_tools(case: harness.Case) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    agent = harness.agent_spec(case).model_dump(mode="json", exclude_none=True)
    catalog = harness.load_catalog()
    tools = {t: catalog[t].model_dump(mode="json") for t in agent["tools"]}
    return agent, tools


def exported(case: harness.Case, tmp: Path, name: str) -> harness.Case:
    run, outputs = as_cluster_run(case)
    agent, tools = agent_and_tools(case)
    built = export.build_case(run, agent, tools, outputs)
    (tmp / name).mkdir()
    for file, text in built.files.items():
        (tmp / name / file).write_text(text)
    return harness.load_case(name, tmp)


@pytest.mark.parametrize("name", harness.case_names())
def test_an_exported_run_replays_to_the_same_run_and_requests(name: str, tmp_path: Path) -> None:
    case = as_cluster(harness.load_case(name))
    source = asyncio.run(harness.replay(case))
    again = exported(case, tmp_path, f"{name}-export")
    out = asyncio.run(harness.replay(again))
    assert harness.replay_problems(again, out) == []
    # Same prompt, same evidence, same names: the very requests the source's model got.
    assert out.requests == source.requests
    assert out.answer == source.answer and out.approvals == source.approvals
    assert again.expected["phase"] == case.expected.get("phase", "Succeeded")
    assert again.expected["tools"] == case.expected["tools"]
    assert again.expected["approval"] == case.expected["approval"]


def test_an_export_redacts_credentials_and_refuses_an_unfinished_run(tmp_path: Path) -> None:
    case = as_cluster(harness.load_case("job-failed"))
    run, outputs = as_cluster_run(case)
    run["spec"]["input"]["context"]["note"] = (
        "password=hunter2hunter2 token: ghp_abcdefghijklmnopqrstuvwxyz0123456789"
    )
    agent, tools = agent_and_tools(case)
    built = export.build_case(run, agent, tools, outputs)
    text = "\n".join(built.files.values())
    assert "hunter2hunter2" not in text and "ghp_abcdefghijklmnopqrstuvwxyz0123456789" not in text
    assert yaml.safe_load(built.files["run.yaml"])["name"] == "eval-job-failed"
    unfinished = {**run, "status": {**run["status"], "completionTime": None}}
    with pytest.raises(export.ExportRefused, match="has not finished"):
        export.build_case(unfinished, agent, tools, outputs)


def test_a_changed_prompt_turns_an_exported_case_red(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    again = exported(as_cluster(harness.load_case("readiness-probe")), tmp_path, "probe")
    harness.write_golden(again, asyncio.run(harness.replay(again)))
    assert harness.golden_diff(again, asyncio.run(harness.replay(again))) is None
    real = harness.prompt_of

    def changed(agent):  # type: ignore[no-untyped-def]
        p = real(agent)
        return type(p)(p.name, p.version, p.text.replace("SRE agent", "SRE bot"), p.sha256)

    monkeypatch.setattr(harness, "prompt_of", changed)
    diff = harness.golden_diff(again, asyncio.run(harness.replay(again)))
    assert diff is not None and "+You are an SRE bot" in diff


def test_reads_one_reply_asked_for_together_are_exported_as_one_reply(tmp_path: Path) -> None:
    # Steps 2 and 3 of the recording become one reply of two read calls (they run together,
    # each its own step, so step 3 is never asked): the export must replay them together too.
    case = as_cluster(harness.load_case("replicas-mismatch"))
    model = case.recording["model"]
    together = {
        "raw_tool_calls": [
            {"name": model[1]["tool"], "arguments": model[1]["arguments"]},
            {"name": model[2]["tool"], "arguments": model[2]["arguments"]},
        ]
    }
    recording = {**case.recording, "model": [model[0], together, {"text": "gap"}, *model[3:]]}
    case = dataclasses.replace(case, recording=recording)
    source = asyncio.run(harness.replay(case))
    again = exported(case, tmp_path, "together")
    assert again.recording["model"][1] == together
    out = asyncio.run(harness.replay(again))
    assert out.requests == source.requests
    assert len(out.requests) == len(model) - 1  # one model request for the two reads
    assert out.answer == source.answer
