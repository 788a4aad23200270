"""`kubectl agentrun fork` on the local cluster: a finished run forked from a step with another
model, its source deleted at once; reads reused, the write proposed afresh and run only on
the fork's own approval; a fork of the fork applied as plain YAML; the refusals."""

from __future__ import annotations

import json

import yaml

from agentrun.api import ANNOTATION_APPROVE
from tests.integration.spine import READ, Spine, condition, done
from tests.integration.test_cli import ok, plugin

READ_DB = {"tool": "k8s-get", "arguments": {"kind": "Service", "name": "web"}}


def job_steps(spine: Spine, run: str) -> list[tuple[str, str]]:
    return sorted(
        (j["metadata"]["labels"]["agentrun.dev/step"], j["metadata"]["labels"]["agentrun.dev/tool"])
        for j in spine.jobs(run)
    )


def test_fork_a_finished_run_from_a_step_with_another_model(spine: Spine) -> None:
    spine.setup([READ, READ_DB, spine.write(), done("web restarted; it was stuck.")])
    spine.start()
    pending = spine.wait_phase("AwaitingApproval")["pendingAction"]
    spine.annotate(ANNOTATION_APPROVE, pending["actionHash"])
    source = spine.wait_phase("Succeeded")
    assert job_steps(spine, "run") == [("1", "k8s-get"), ("2", "k8s-get"), ("3", "rollout-restart")]

    # Refusals, each with its reason and exit code; nothing is created.
    never = plugin(spine, "fork", "run", "--from-step", "9")
    assert never.returncode == 4, never
    assert "run never reached step 9: it is at step 4 (phase Succeeded)" in never.stderr
    written = plugin(spine, "fork", "run", "--from-step", "3")
    assert written.returncode == 4, written
    assert "step 3 of run run is the write rollout-restart" in written.stderr
    assert "a write is never replayed" in written.stderr
    missing = plugin(spine, "fork", "nope", "--from-step", "1")
    assert missing.returncode == 3, missing
    assert f'agentrun "nope" not found in namespace "{spine.namespace}"' in missing.stderr
    across = plugin(spine, "fork", "elsewhere/run", "--from-step", "1")
    assert across.returncode == 2, across
    assert "a fork lives in its source's namespace (elsewhere)" in across.stderr
    no_agent = plugin(spine, "fork", "run", "--from-step", "1", "--agent", "nobody")
    assert no_agent.returncode == 3 and 'agent "nobody" not found' in no_agent.stderr
    runs = json.loads(
        spine.cluster.kubectl("get", "agentruns", "-n", spine.namespace, "-o", "json").stdout
    )
    assert [r["metadata"]["name"] for r in runs["items"]] == ["run"]

    # The fork, on another model whose step 3 is the same write; the source deleted at once.
    other = f"{spine.model}-fork"
    spine.server.set_scripts(
        {other: [done("unused"), done("unused"), spine.write(), done("restarted, forked.")]}
    )
    created = plugin(spine, "fork", "run", "--from-step", "2", "--model", other, "--name", "fork")
    assert ok(created) == "fork\n"
    assert "Forked" in created.stderr and "4 events inherited" in created.stderr
    spine.cluster.kubectl("delete", "agentrun", "run", "-n", spine.namespace)

    status = spine.wait_phase("AwaitingApproval", name="fork")
    assert status["step"] == 3
    inherited = [e for e in status["thread"] if e.get("inheritedFrom")]
    assert [{k: v for k, v in e.items() if k != "inheritedFrom"} for e in inherited] == [
        e for e in source["thread"] if e["step"] <= 2
    ]
    assert {e["inheritedFrom"] for e in inherited} == {"run"}
    # Reads reused, not re-run: the fork has no Job at all before its approval.
    assert job_steps(spine, "fork") == []
    # The fork's model saw exactly what the source's model saw at step 3 (but its own name).
    asked = [r for r in spine.server.requests if r["model"] == other]
    assert [r["step"] for r in asked] == [3]
    fork_names = json.dumps(asked[0]["messages"]).replace(f"{spine.namespace}/fork", "NAME")
    source_names = json.dumps(spine.model_requests(step=3)[0]["messages"])
    assert fork_names == source_names.replace(f"{spine.namespace}/run", "NAME")

    # The source's approval is no approval of the fork's: nothing runs.
    spine.annotate(ANNOTATION_APPROVE, pending["actionHash"], name="fork")
    spine.wait(
        lambda: condition(spine.status("fork"), "ApprovalPending")["reason"] == "ApprovalMismatch",
        "the source's hash refused on the fork",
    )
    assert job_steps(spine, "fork") == []
    own = spine.status("fork")["pendingAction"]["actionHash"]
    assert own != pending["actionHash"]
    ok(plugin(spine, "approve", "fork", "--yes", "--hash", own))
    done_fork = spine.wait_phase("Succeeded", name="fork")
    assert job_steps(spine, "fork") == [("3", "rollout-restart")]
    assert done_fork["result"]["answer"] == "restarted, forked."
    assert [a["decision"] for a in done_fork["approvals"]] == ["Refused", "Approved"]

    shown = ok(plugin(spine, "show", "fork"))
    assert "  Fork of:     run (uid " in shown and "from step 2: 4 events inherited" in shown
    assert f"  Overrides:   model {other}, prompt sre-agent@" in shown
    assert shown.count("[inherited from run]") == 4
    assert "--- live from step 3 ---" in shown

    # A fork of the fork, as plain YAML through kubectl apply; its inherited events keep
    # the run they happened in.
    refused = plugin(spine, "fork", "fork", "--from-step", "3")
    assert refused.returncode == 4 and "a write is never replayed" in refused.stderr
    manifest = ok(plugin(spine, "fork", "fork", "--from-step", "2", "--dry-run"))
    doc = yaml.safe_load(manifest)
    assert doc["metadata"]["name"] == "fork-fork-s2"
    assert doc["spec"]["forkOf"]["name"] == "fork" and doc["spec"]["model"] == other
    spine.cluster.kubectl("apply", "-f", "-", input=manifest)
    again = spine.wait_phase("AwaitingApproval", name="fork-fork-s2")
    assert [e["inheritedFrom"] for e in again["thread"][:4]] == ["run"] * 4
    assert again["pendingAction"]["tool"] == "rollout-restart"
    assert job_steps(spine, "fork-fork-s2") == []

    compared = ok(plugin(spine, "diff", "fork", "fork-fork-s2"))
    assert "B is a fork of A from step 2 (steps 0-2 inherited)" in compared
    assert "Same actions in steps 1-3; first divergence at step 4:" in compared
    assert "  A: step 4   done: restarted, forked." in compared
    assert "  B: (no more steps)" in compared
    assert "step 3 rollout-restart Approved" in compared
    assert "  B: step 3 rollout-restart waiting" in compared
    gone = plugin(spine, "diff", "run", "fork")
    assert gone.returncode == 3 and 'agentrun "run" not found' in gone.stderr
