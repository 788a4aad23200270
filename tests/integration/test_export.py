"""`kubectl agentrun export RUN --case NAME` on the local cluster: a finished run (a read, a
write approved, the answer) becomes an eval case that `make eval` replays green, making the
very requests the operator sent the model; the replay goes red when the prompt changes."""

from __future__ import annotations

import asyncio
import difflib
import json
from pathlib import Path

import pytest
import yaml

from agentrun.api import ANNOTATION_APPROVE
from tests.eval import harness
from tests.eval import run as eval_run
from tests.integration.spine import READ, Spine, done
from tests.integration.test_cli import ok, plugin


def test_export_a_finished_run_and_replay_it(
    spine: Spine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    spine.setup(
        [READ, spine.write(), done("web was stuck; restarted it.")],
        prefetch=[{"tool": "k8s-get", "arguments": {"kind": "Deployment", "name": "web"}}],
    )
    spine.start(input={"task": "Investigate web.", "context": {"note": "password=hunter2hunter2"}})
    refused = plugin(spine, "export", "run", "--case", "web-stuck", "--dir", str(tmp_path))
    assert refused.returncode == 4, refused
    assert "has not finished" in refused.stderr and not (tmp_path / "web-stuck").exists()
    pending = spine.wait_phase("AwaitingApproval")["pendingAction"]
    spine.annotate(ANNOTATION_APPROVE, pending["actionHash"])
    spine.wait_phase("Succeeded")

    exported = plugin(spine, "export", "run", "--case", "web-stuck", "--dir", str(tmp_path))
    assert ok(exported).strip() == str(tmp_path / "web-stuck")
    assert "make eval-refresh EVAL_ARGS='--case web-stuck'" in exported.stderr
    case_dir = tmp_path / "web-stuck"
    assert sorted(p.name for p in case_dir.iterdir()) == [
        "expected.yaml",
        "recording.yaml",
        "run.yaml",
    ]
    text = "".join(p.read_text() for p in case_dir.iterdir())
    assert "hunter2hunter2" not in text  # redacted
    expected = yaml.safe_load((case_dir / "expected.yaml").read_text())
    assert expected["tools"] == ["k8s-get", "rollout-restart"]
    assert expected["approval"] == spine.write()
    assert expected["phase"] == "Succeeded"
    recording = yaml.safe_load((case_dir / "recording.yaml").read_text())
    assert recording["decisions"] == [{"approve": True}]
    assert "model" not in recording["agent"]
    again = plugin(spine, "export", "run", "--case", "web-stuck", "--dir", str(tmp_path))
    assert again.returncode == 4 and "pass --force" in again.stderr

    # The replay makes the very requests the operator sent the scripted model.
    case = harness.load_case("web-stuck", tmp_path)
    out = asyncio.run(harness.replay(case))
    assert harness.replay_problems(case, out) == []
    sent = spine.model_requests()
    # (the credential the run's input carried is masked in the case: the one difference)
    replayed = [r["messages"] for r in out.requests]
    live = json.loads(json.dumps([r["messages"] for r in sent]).replace("hunter2hunter2", "****"))
    assert replayed == live, "\n".join(
        difflib.unified_diff(
            json.dumps(live, indent=1).splitlines(),
            json.dumps(replayed, indent=1).splitlines(),
            "operator",
            "replay",
            lineterm="",
        )
    )
    assert [r["tools"] for r in out.requests] == [r["tools"] for r in sent]

    # Live replay of the namespace's recorded incidents: without a key it says what it
    # would do and exits non-zero; with one (the scripted model playing the same answers
    # through the real openai client) every run replays to the same actions.
    live = ["--live", "--from-runs", spine.namespace, "--kubeconfig", str(spine.cluster.kubeconfig)]
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert eval_run.main(live) == 2
    said = capsys.readouterr().err
    assert f"would export every finished AgentRun of namespace {spine.namespace}" in said
    assert "Runs there now: run." in said and "OPENAI_API_KEY is not set" in said
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("OPENAI_BASE_URL", spine.server.base_url)
    monkeypatch.setenv("AGENTRUN_MODEL", spine.model)
    assert eval_run.main(live) == 0
    table = capsys.readouterr().out
    assert f"eval live ({spine.model})" in table and "1/1 cases pass" in table
    row = next(line for line in table.splitlines() if line.startswith("run "))
    assert row.split()[:4] == ["run", "exact", "yes", "1/1"] and row.split()[-1] == "pass"
    monkeypatch.delenv("OPENAI_API_KEY")

    # make eval: record the golden once, then green; red when the prompt changes.
    args = ["--cases", str(tmp_path)]
    assert eval_run.main([*args, "--refresh"]) == 0
    assert eval_run.main(args) == 0
    assert "1/1 cases pass" in capsys.readouterr().out
    real = harness.prompt_of

    def changed(agent):  # type: ignore[no-untyped-def]
        p = real(agent)
        return type(p)(p.name, p.version, p.text.replace("SRE agent", "SRE bot"), p.sha256)

    monkeypatch.setattr(harness, "prompt_of", changed)
    assert eval_run.main(args) == 1
    err = capsys.readouterr().err
    assert "eval case web-stuck: the model requests changed (prompt drift)" in err
    assert "+You are an SRE bot" in err
