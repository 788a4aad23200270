"""MCP servers as tool sources, end to end on the local cluster with the shared operator.

The operator lists each MCPServer with a tools/list Job and a run's MCP calls are tool Jobs:
the local node runs `agentrun-tool mcp-list/mcp-call`, whose MCP client (the official SDK)
starts the stdio server in the same pod under the tool's ServiceAccount. Servers: the
tests' own (tests/mcpserver, on the SDK's MCPServer; good and bad modes) and
kubernetes-mcp-server, the Go server from containers/kubernetes-mcp-server (tests/setup/mcp.sh).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.spine import Spine, done
from tests.support import stack

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("AGENTRUN_CACHE", Path.home() / ".cache" / "agentrun")) / "mcp"
K8S_MCP = CACHE / "kubernetes-mcp-server-0.0.67" / "kubernetes-mcp-server"
EVERYTHING = (
    CACHE
    / "server-everything-2026.8.31"
    / "node_modules"
    / "@modelcontextprotocol"
    / "server-everything"
    / "dist"
    / "index.js"
)


def mcp_server(
    name: str, namespace: str, mode: str = "ok", env: dict[str, str] | None = None, **spec: Any
) -> dict[str, Any]:
    variables = [{"name": "PYTHONPATH", "value": str(ROOT)}]
    variables += [{"name": k, "value": v} for k, v in (env or {}).items()]
    command = [sys.executable, "-m", "tests.mcpserver", "stdio", "--mode", mode]
    return {
        "apiVersion": "agentrun.dev/v1alpha1",
        "kind": "MCPServer",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"stdio": {"command": command, "env": variables}, "timeoutSeconds": 20, **spec},
    }


def agent(spine: Spine, tools: list[str]) -> dict[str, Any]:
    return stack.agent_manifest("agent", spine.namespace, spine.model, spine.server.base_url, tools)


def ready(spine: Spine, name: str, want: str = "True", timeout: float = 60) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        body = stack.get(spine.cluster, "mcpserver", name, spine.namespace) or {}
        status: dict[str, Any] = body.get("status") or {}
        for c in status.get("conditions") or []:
            if c["type"] == "Ready" and c["status"] == want:
                return status
        return None

    status: dict[str, Any] = spine.wait(check, f"MCPServer {name} Ready={want}", timeout)
    return status


def approve(spine: Spine, status: dict[str, Any]) -> None:
    digest = status["pendingAction"]["actionHash"]
    spine.cluster.kubectl(
        "annotate", "agentrun", "run", "-n", spine.namespace, f"agentrun.dev/approve={digest}"
    )


def results(status: dict[str, Any]) -> list[str]:
    return [e["content"] for e in status["thread"] if e["type"] in ("ToolResult", "Error")]


def test_a_run_calls_mcp_tools_reads_at_once_and_writes_only_after_approval(
    spine: Spine,
) -> None:
    ns = spine.namespace
    spine.setup(
        [
            {"tool": "mcp__testsrv__add", "arguments": {"a": 2, "b": 3}},
            {"tool": "mcp__testsrv__echo", "arguments": {"message": "hi"}},
            done("Added and echoed."),
        ]
    )
    stack.apply(spine.cluster, [mcp_server("testsrv", ns, readTools=["add"])])
    status = ready(spine, "testsrv")
    assert [t["name"] for t in status["tools"]] == ["echo", "add", "wipe"]
    assert status["tools"][0]["annotations"]["readOnlyHint"] is True
    assert len(status["digest"]) == 64
    stack.apply(spine.cluster, [agent(spine, ["mcp:testsrv/add", "mcp:testsrv/echo"])])
    spine.start()

    # add is a read (readTools): it ran at once. echo hints readOnlyHint, which is not
    # trusted: it waits for a human, pinned to the server, tool, arguments and list digest.
    st = spine.wait_phase("AwaitingApproval")
    assert "5" in results(st)[0]
    pending = st["pendingAction"]
    assert pending["tool"] == "mcp__testsrv__echo"
    assert pending["arguments"] == {"message": "hi"}
    env = {e["name"]: e["value"] for e in pending["snapshot"]["env"]}
    assert env["AGENTRUN_MCP_TOOL"] == "echo"
    assert env["AGENTRUN_MCP_DIGEST"] == status["digest"]
    assert "tests.mcpserver" in env["AGENTRUN_MCP_SERVER"]
    assert pending["snapshot"]["serviceAccountName"] == "agentrun-tool-write"
    assert not [e for e in st["thread"] if "echo: hi" in e["content"]]

    approve(spine, st)
    st = spine.wait_phase("Succeeded", "Failed")
    assert st["phase"] == "Succeeded", st
    assert "echo: hi" in results(st)[1]
    assert st["result"]["answer"] == "Added and echoed."


def test_a_tools_list_changed_between_proposal_and_approval_runs_nothing(
    spine: Spine, tmp_path: Path
) -> None:
    ns = spine.namespace
    marker, wiped = tmp_path / "version", tmp_path / "wiped"
    marker.write_text("v1")
    spine.setup([{"tool": "mcp__changing__wipe", "arguments": {"namespace": ns}}, done("Stopped.")])
    env = {"MCP_MARKER_FILE": str(marker), "MCP_WIPE_FILE": str(wiped)}
    stack.apply(spine.cluster, [mcp_server("changing", ns, mode="changing", env=env)])
    ready(spine, "changing")
    stack.apply(spine.cluster, [agent(spine, ["mcp:changing/wipe"])])
    spine.start()
    st = spine.wait_phase("AwaitingApproval")

    marker.write_text("v2")  # the server now lists other descriptions: another digest
    approve(spine, st)
    st = spine.wait_phase("Succeeded", "Failed")
    text = results(st)[0]
    assert "tools/list changed since this call was proposed" in text, text
    assert "wipe was not called" in text
    assert not wiped.exists()  # the tool never ran
    assert st["approvals"][0]["decision"] == "Approved"


@pytest.mark.parametrize(
    ("mode", "reason", "words"),
    [
        ("hang", "NoAnswer", "gave no valid answer"),
        ("garbage", "NoAnswer", "gave no valid answer"),
    ],
)
def test_a_bad_server_is_not_ready_with_a_reason_and_its_runs_fail_clearly(
    spine: Spine, mode: str, reason: str, words: str
) -> None:
    ns = spine.namespace
    spine.setup([done("unreachable")])
    stack.apply(spine.cluster, [mcp_server("bad", ns, mode=mode, timeoutSeconds=15)])
    status = ready(spine, "bad", want="False")
    (cond,) = [c for c in status["conditions"] if c["type"] == "Ready"]
    assert cond["reason"] == reason and words in cond["message"], cond
    stack.apply(spine.cluster, [agent(spine, ["mcp:bad/echo"])])
    spine.start()
    st = spine.wait_phase("Failed")
    (failed,) = [c for c in st["conditions"] if c["type"] == "Succeeded"]
    assert failed["reason"] == "MCPServerNotReady"
    assert "MCPServer bad is not Ready" in failed["message"]


def test_an_mcp_result_of_5_mb_is_bounded_like_any_tool_output(spine: Spine) -> None:
    ns = spine.namespace
    spine.setup(
        [{"tool": "mcp__huge__echo", "arguments": {"message": "x"}}, done("Too much output.")]
    )
    server = mcp_server("huge", ns, mode="huge", readTools=["echo"], outputLimitBytes=65536)
    stack.apply(spine.cluster, [server])
    ready(spine, "huge")
    stack.apply(spine.cluster, [agent(spine, ["mcp:huge/echo"])])
    spine.start()
    st = spine.wait_phase("Succeeded", "Failed")
    assert st["phase"] == "Succeeded"
    text = results(st)[0]
    assert "truncated" in text and len(text) < 5000
    ref = next(e for e in st["thread"] if e["type"] == "ToolResult")["outputRef"]
    cm = stack.get(spine.cluster, "configmap", ref, ns)
    assert cm is not None and len(json.dumps(cm["data"])) < 200_000


def test_a_streamable_http_server_answers_from_the_tool_job(spine: Spine) -> None:
    ns = spine.namespace
    port = stack.free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.mcpserver", "http", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        spine.setup([{"tool": "mcp__web__add", "arguments": {"a": 40, "b": 2}}, done("42.")])
        server: dict[str, Any] = {
            "apiVersion": "agentrun.dev/v1alpha1",
            "kind": "MCPServer",
            "metadata": {"name": "web", "namespace": ns},
            "spec": {
                "streamableHttp": {"url": f"http://127.0.0.1:{port}/mcp"},
                "readTools": ["add"],
                "timeoutSeconds": 20,
            },
        }
        outside = {**server, "metadata": {"name": "outside", "namespace": ns}}
        outside["spec"] = {
            **server["spec"],
            "streamableHttp": {"url": "http://mcp.example.com/mcp"},
        }
        stack.apply(spine.cluster, [server, outside])
        ready(spine, "web")
        refused = ready(spine, "outside", want="False")
        (cond,) = [c for c in refused["conditions"] if c["type"] == "Ready"]
        assert cond["reason"] == "NotAllowed" and "allowed MCP URLs" in cond["message"]
        stack.apply(spine.cluster, [agent(spine, ["mcp:web/add"])])
        spine.start()
        st = spine.wait_phase("Succeeded", "Failed")
        assert st["phase"] == "Succeeded", st
        assert "42" in results(st)[0]
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def mcp_servers() -> None:
    subprocess.run(["bash", str(ROOT / "tests" / "setup" / "mcp.sh")], check=True)


@pytest.fixture(scope="module")
def kubernetes_mcp_server(mcp_servers: None) -> Iterator[Path]:
    yield K8S_MCP


@pytest.fixture
def server_everything(mcp_servers: None) -> Iterator[str]:
    """The reference server (Streamable HTTP) on a loopback port, as its README starts it."""
    port = stack.free_port()
    proc = subprocess.Popen(
        ["node", str(EVERYTHING), "streamableHttp"],
        env={**os.environ, "PORT": str(port)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()  # "MCP Streamable HTTP Server listening on port P"
        assert f"listening on port {port}" in line, line + proc.stderr.read()
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        proc.wait(10)


def test_the_reference_server_everything_is_listed_its_read_tool_runs_and_a_write_waits(
    spine: Spine, server_everything: str
) -> None:
    """@modelcontextprotocol/server-everything from npm, which no one here wrote: its echo is
    marked a read by the admin and runs at once; get-sum says readOnlyHint but is not in
    readTools, so it waits for approval, pinned to the digest of the server's own list."""
    ns = spine.namespace
    spine.setup(
        [
            {"tool": "mcp__everything__echo", "arguments": {"message": "from the reference"}},
            {"tool": "mcp__everything__get-sum", "arguments": {"a": 40, "b": 2}},
            done("Echoed and summed."),
        ]
    )
    server: dict[str, Any] = {
        "apiVersion": "agentrun.dev/v1alpha1",
        "kind": "MCPServer",
        "metadata": {"name": "everything", "namespace": ns},
        "spec": {
            "streamableHttp": {"url": server_everything},
            "readTools": ["echo"],
            "timeoutSeconds": 20,
        },
    }
    stack.apply(spine.cluster, [server])
    status = ready(spine, "everything")
    tools = {t["name"]: t for t in status["tools"]}
    assert {"echo", "get-sum", "trigger-long-running-operation"} <= set(tools)
    assert tools["get-sum"]["annotations"]["readOnlyHint"] is True  # a hint, not trusted
    assert len(status["digest"]) == 64
    (cond,) = [c for c in status["conditions"] if c["type"] == "Ready"]
    assert cond["reason"] == "Listed" and f"{len(tools)} tools" in cond["message"], cond
    assert status["digest"][:12] in cond["message"], cond
    stack.apply(spine.cluster, [agent(spine, ["mcp:everything/echo", "mcp:everything/get-sum"])])
    spine.start()

    st = spine.wait_phase("AwaitingApproval")
    assert "Echo: from the reference" in results(st)[0], results(st)
    pending = st["pendingAction"]
    assert pending["tool"] == "mcp__everything__get-sum"
    assert pending["arguments"] == {"a": 40, "b": 2}
    env = {e["name"]: e["value"] for e in pending["snapshot"]["env"]}
    assert env["AGENTRUN_MCP_TOOL"] == "get-sum"
    assert env["AGENTRUN_MCP_DIGEST"] == status["digest"]
    assert json.loads(env["AGENTRUN_MCP_SERVER"])["url"] == server_everything

    approve(spine, st)
    st = spine.wait_phase("Succeeded", "Failed")
    assert st["phase"] == "Succeeded", st
    assert "42" in results(st)[1], results(st)
    assert st["result"]["answer"] == "Echoed and summed."


def test_kubernetes_mcp_server_lists_pods_under_a_read_only_account_and_cannot_delete(
    spine: Spine, kubernetes_mcp_server: Path
) -> None:
    ns = spine.namespace
    spine.setup(
        [
            {"tool": "mcp__kubernetes__pods_list_in_namespace", "arguments": {"namespace": ns}},
            {"tool": "mcp__kubernetes__pods_delete", "arguments": {"name": "POD", "namespace": ns}},
            done("Listed; the delete was refused."),
        ]
    )
    pod = spine.wait(
        lambda: next(
            iter(
                json.loads(spine.cluster.kubectl("get", "pods", "-n", ns, "-o", "json").stdout)[
                    "items"
                ]
            ),
            None,
        ),
        "the web pod",
    )
    pod_name = pod["metadata"]["name"]
    script = spine.server
    script.set_scripts(
        {
            spine.model: [
                {
                    "tool": "mcp__kubernetes__pods_list_in_namespace",
                    "arguments": {"namespace": ns},
                },
                {
                    "tool": "mcp__kubernetes__pods_delete",
                    "arguments": {"name": pod_name, "namespace": ns},
                },
                done("Listed; the delete was refused."),
            ]
        }
    )
    server = {
        "apiVersion": "agentrun.dev/v1alpha1",
        "kind": "MCPServer",
        "metadata": {"name": "kubernetes", "namespace": ns},
        "spec": {
            "stdio": {"command": [str(kubernetes_mcp_server)]},
            # Every call, writes included, under the read-only ServiceAccount.
            "serviceAccountName": "agentrun-tool-read",
            "readTools": ["pods_list_in_namespace"],
            "timeoutSeconds": 30,
        },
    }
    stack.apply(spine.cluster, [server])
    status = ready(spine, "kubernetes")
    names = {t["name"] for t in status["tools"]}
    assert {"pods_list_in_namespace", "pods_delete"} <= names
    stack.apply(
        spine.cluster,
        [agent(spine, ["mcp:kubernetes/pods_list_in_namespace", "mcp:kubernetes/pods_delete"])],
    )
    spine.start()
    st = spine.wait_phase("AwaitingApproval", timeout=90)
    assert pod_name in results(st)[0]
    assert st["pendingAction"]["tool"] == "mcp__kubernetes__pods_delete"
    assert st["pendingAction"]["snapshot"]["serviceAccountName"] == "agentrun-tool-read"
    approve(spine, st)
    st = spine.wait_phase("Succeeded", "Failed", timeout=90)
    text = results(st)[1]
    assert "forbidden" in text.lower(), text
    time.sleep(1)
    still = stack.get(spine.cluster, "pod", pod_name, ns)
    assert still is not None and not still["metadata"].get("deletionTimestamp")
