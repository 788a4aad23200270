"""runbook: a tree as teams keep it, the alert's runbook_url mapped onto it or fetched.

The tree is tests/fixtures/runbooks, written in the layout of the public collection
kube-prometheus alerts link to (content/runbooks/<component>/<AlertName>.md, Hugo front
matter with title/weight and no alert list, `_index.md` pages, a nested directory). The
runbook_url comes from the run the tool reads (its AgentRun, faked here: the real read is in
tests/integration/test_tools.py); fetches go to a real HTTP server on loopback.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from kubernetes.client.exceptions import ApiException

from agentrun.tool import runner as toolrunner
from agentrun.tool.builtins import ToolError, runbook

ROOT = Path(__file__).resolve().parents[2]
TREE = ROOT / "tests" / "fixtures" / "runbooks"
COLLECTION = "https://runbooks.prometheus-operator.dev/runbooks"


def alert_run(*alerts: tuple[str, str | None]) -> dict[str, Any]:
    """An AgentRun body as the receiver makes it: the first alert, and all of them."""
    shaped = [
        {
            "labels": {"alertname": name, "namespace": "shop"},
            "annotations": {"runbook_url": url} if url else {},
        }
        for name, url in alerts
    ]
    context: dict[str, Any] = {"alert": shaped[0]}
    if len(shaped) > 1:
        context["alerts"] = shaped
    return {"spec": {"input": {"task": "t", "context": context}}}


@pytest.fixture
def tree(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(runbook.DIR_ENV, str(TREE))
    monkeypatch.delenv(runbook.CONFIGMAP_ENV, raising=False)
    monkeypatch.delenv(runbook.URLS_ENV, raising=False)
    monkeypatch.delenv("AGENTRUN_RUN", raising=False)


def as_run(monkeypatch: pytest.MonkeyPatch, body: dict[str, Any] | Exception) -> list[str]:
    """The tool runs for the run `r` in `shop`, whose body is `body`; returns the paths read."""
    monkeypatch.setenv("AGENTRUN_RUN", "r")
    monkeypatch.setenv("AGENTRUN_NAMESPACE", "shop")
    read: list[str] = []

    def request(method: str, path: str, **_: Any) -> dict[str, Any]:
        read.append(f"{method} {path}")
        if isinstance(body, Exception):
            raise body
        return body

    monkeypatch.setattr(runbook, "request", request)
    return read


# ---------------------------------------------------------------- the tree


@pytest.mark.usefixtures("tree")
def test_the_collection_layout_matches_by_h1_file_name_any_depth_any_case() -> None:
    out = runbook.run({"alert": "kubepodcrashlooping"})
    assert out["source"] == "runbooks/content/runbooks/kubernetes/KubePodCrashLooping.md"
    assert out["title"] == "Kube Pod Crash Looping"  # front matter without an alert list
    assert out["matchedBy"] == "H1"
    # The collection's "Meaning" is the summary; Diagnosis and Mitigation come first.
    assert out["summary"].startswith("A container of the pod keeps exiting")
    assert "<details>" not in out["summary"] and "Full context" in out["summary"]
    assert [s["title"] for s in out["sections"]] == ["Diagnosis", "Mitigation", "Impact"]

    nested = runbook.run({"alert": "KubePersistentVolumeFillingUp", "section": "Mitigation"})
    assert nested["source"].endswith("kubernetes/storage/KubePersistentVolumeFillingUp.md")
    assert [s["title"] for s in nested["sections"]] == ["Mitigation"]

    # The file is named otherwise: the H1 finds it.
    by_h1 = runbook.run({"alert": "NodeFilesystemAlmostOutOfSpace"})
    assert by_h1["source"].endswith("node/filesystem-almost-out-of-space.md")


@pytest.mark.usefixtures("tree")
def test_index_pages_and_other_files_are_never_runbooks() -> None:
    with pytest.raises(ToolError) as err:
        runbook.run({"alert": "_index"})
    message = str(err.value)
    assert "no runbook for alert '_index'" in message
    known = message.split("runbooks exist for: ")[1]
    assert "KubePodCrashLooping" in known and "TargetDown" in known
    assert "NodeFilesystemAlmostOutOfSpace" in known  # by its H1, not its file name
    assert "_index" not in known and "Kubernetes" not in known and "README" not in known
    with pytest.raises(ToolError, match="no runbook for alert 'Kubernetes'"):
        runbook.run({"alert": "Kubernetes"})  # a section page's H1 is not an alert


def test_the_walk_skips_hidden_directories_and_is_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".git" / "x").mkdir(parents=True)
    (tmp_path / ".git" / "x" / "Hidden.md").write_text("# Hidden\n")
    (tmp_path / "a" / "b" / "c").mkdir(parents=True)
    for i in range(5):
        (tmp_path / "a" / "b" / "c" / f"Alert{i}.md").write_text(f"# Alert{i}\n")
    notes: list[str] = []
    files = runbook.markdown_files(tmp_path, notes)
    assert [f.name for f in files] == [f"Alert{i}.md" for i in range(5)] and not notes
    monkeypatch.setattr(runbook, "MAX_RUNBOOK_FILES", 3)
    assert len(runbook.markdown_files(tmp_path, notes)) == 3
    assert notes == [f"stopped reading {tmp_path.name} after 5 files"]


# ---------------------------------------------------------------- runbook_url from the run


@pytest.mark.usefixtures("tree")
def test_the_alerts_runbook_url_is_mapped_onto_the_tree(monkeypatch: pytest.MonkeyPatch) -> None:
    read = as_run(
        monkeypatch,
        alert_run(("KubePodCrashLooping", f"{COLLECTION}/kubernetes/kubepodcrashlooping/")),
    )
    out = runbook.run({"alert": "KubePodCrashLooping"})
    assert read == ["GET /apis/agentrun.dev/v1alpha1/namespaces/shop/agentruns/r"]
    assert out["source"].endswith("content/runbooks/kubernetes/KubePodCrashLooping.md")
    assert out["matchedBy"] == f"runbook_url {COLLECTION}/kubernetes/kubepodcrashlooping/"


def test_a_mapped_runbook_url_wins_over_a_match_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two components carry a page of the same name; the alert's URL says which one."""
    for component in ("etcd", "kubernetes"):
        (tmp_path / component).mkdir()
        (tmp_path / component / "TargetDown.md").write_text(f"# TargetDown\n{component} one\n")
    monkeypatch.setenv(runbook.DIR_ENV, str(tmp_path))
    monkeypatch.delenv(runbook.CONFIGMAP_ENV, raising=False)
    url = "https://wiki.corp/sre/kubernetes/TargetDown.html"
    as_run(monkeypatch, alert_run(("KubePodCrashLooping", None), ("TargetDown", url)))
    out = runbook.run({"alert": "TargetDown"})
    assert out["source"] == f"{tmp_path.name}/kubernetes/TargetDown.md"
    assert out["summary"] == "kubernetes one" and out["otherRunbooks"] == [
        f"{tmp_path.name}/etcd/TargetDown.md"
    ]
    # Another alert's URL is never used: only alerts of the name asked for count.
    monkeypatch.setenv(runbook.URLS_ENV, "https://wiki.corp/")
    with pytest.raises(ToolError, match="no runbook for alert 'Other'"):
        runbook.run({"alert": "Other"})


@pytest.mark.usefixtures("tree")
def test_a_run_that_cannot_be_read_says_so_and_the_lookup_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    forbidden = ApiException(status=403, reason="Forbidden", body='{"message": "no get"}')
    as_run(monkeypatch, forbidden)
    out = runbook.run({"alert": "TargetDown"})
    assert out["source"].endswith("general/TargetDown.md")
    assert out["warnings"] == [
        "the alert's runbook_url was not consulted: forbidden: the tool's ServiceAccount may "
        "not access AgentRun r: no get"
    ]
    as_run(monkeypatch, ApiException(status=404, reason="Not Found"))
    assert "warnings" not in runbook.run({"alert": "TargetDown"})  # a deleted run: nothing


# ---------------------------------------------------------------- runbook_url fetched


class _Site(http.server.BaseHTTPRequestHandler):
    pages: ClassVar[dict[str, tuple[int, str, bytes, dict[str, str]]]] = {}
    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.seen.append(self.path)
        status, ctype, body, headers = self.pages.get(self.path, (404, "text/plain", b"", {}))
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def site() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Site)
    _Site.pages.clear()
    _Site.seen.clear()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


HTML = b"""<html><head><title>x</title><script>var leak = 1;</script></head><body>
<nav><a href="/">Every other runbook</a></nav>
<article><h1>CheckoutLatencyHigh</h1><p>The checkout p99 is over 2s.</p>
<h2>Diagnosis</h2><ul><li>Read the traces of /pay</li>
<li>token ghp_abcdefghijklmnopqrstuvwxyz0123456789</li></ul>
<h2>Mitigation</h2><p>Scale the checkout Deployment.</p></article>
<footer>wiki footer</footer></body></html>"""


def test_an_allowed_runbook_url_is_fetched_bounded_and_redacted(
    site: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(runbook.DIR_ENV, str(TREE))  # nothing there matches the alert
    monkeypatch.setenv(runbook.URLS_ENV, f"{site}/sre/")
    _Site.pages["/sre/checkout-latency"] = (200, "text/html; charset=utf-8", HTML, {})
    as_run(monkeypatch, alert_run(("CheckoutLatencyHigh", f"{site}/sre/checkout-latency")))
    # Through the tool runner, as in the Job: the output is redacted there.
    envelope, code = toolrunner.execute(["runbook", '{"alert": "CheckoutLatencyHigh"}'])
    assert code == 0 and envelope.ok, envelope.error
    out = envelope.output
    assert out["source"] == f"{site}/sre/checkout-latency"
    assert out["matchedBy"] == f"runbook_url {site}/sre/checkout-latency (fetched)"
    assert (
        out["title"] == "CheckoutLatencyHigh" and out["summary"] == "The checkout p99 is over 2s."
    )
    diagnosis, mitigation = out["sections"]
    assert diagnosis["title"] == "Diagnosis" and "- Read the traces of /pay" in diagnosis["text"]
    assert "abcdefghijklmnop" not in diagnosis["text"] and "****" in diagnosis["text"]
    assert mitigation["text"] == "Scale the checkout Deployment."
    assert "leak" not in str(out) and "Every other runbook" not in str(out)

    # Markdown as is; a page over the bound is cut and says so.
    big = b"# Big\n## Diagnosis\n" + b"x" * (runbook.MAX_FETCH_BYTES + 10)
    _Site.pages["/sre/big.md"] = (200, "text/markdown", big, {})
    as_run(monkeypatch, alert_run(("Big", f"{site}/sre/big.md")))
    out = runbook.run({"alert": "Big"})
    assert out["warnings"] == [
        f"the page is over {runbook.MAX_FETCH_BYTES} bytes; only the start was read"
    ]


def test_a_runbook_url_off_the_allow_list_is_never_fetched(
    site: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(runbook.DIR_ENV, str(TREE))
    monkeypatch.delenv(runbook.URLS_ENV, raising=False)
    _Site.pages["/x"] = (200, "text/markdown", b"# X\n", {})
    as_run(monkeypatch, alert_run(("X", f"{site}/x")))
    with pytest.raises(ToolError) as err:
        runbook.run({"alert": "X"})
    assert f"the alert's runbook_url {site}/x matches no file here" in str(err.value)
    assert "(none are allowed)" in str(err.value) and "runbooks.allowedURLs" in str(err.value)
    monkeypatch.setenv(runbook.URLS_ENV, f"{site}/sre/")  # another path of the same host
    with pytest.raises(ToolError, match=r"is not under the runbook URLs the operator allows"):
        runbook.run({"alert": "X"})
    assert _Site.seen == []

    # A redirect off the allow-list is not followed; one within it is.
    _Site.pages["/sre/moved"] = (302, "text/plain", b"", {"Location": f"{site}/x"})
    as_run(monkeypatch, alert_run(("X", f"{site}/sre/moved")))
    with pytest.raises(ToolError, match=r"redirects .* to a URL that is not allowed"):
        runbook.run({"alert": "X"})
    assert _Site.seen == ["/sre/moved"]
    _Site.pages["/sre/moved"] = (301, "text/plain", b"", {"Location": f"{site}/sre/x/"})
    _Site.pages["/sre/x/"] = (200, "text/plain; charset=utf-8", b"# X\n## Mitigation\nok\n", {})
    assert runbook.run({"alert": "X"})["sections"] == [{"title": "Mitigation", "text": "ok"}]

    _Site.pages["/sre/img"] = (200, "image/png", b"\x89PNG", {})
    as_run(monkeypatch, alert_run(("X", f"{site}/sre/img")))
    with pytest.raises(ToolError, match="Content-Type image/png"):
        runbook.run({"alert": "X"})
    as_run(monkeypatch, alert_run(("X", f"{site}/sre/gone")))
    with pytest.raises(ToolError, match="answered HTTP 404"):
        runbook.run({"alert": "X"})


def test_a_local_match_is_used_without_fetching(site: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(runbook.DIR_ENV, str(TREE))
    monkeypatch.setenv(runbook.URLS_ENV, f"{site}/")
    as_run(monkeypatch, alert_run(("TargetDown", f"{site}/wiki/target-is-down")))
    out = runbook.run({"alert": "TargetDown"})
    assert out["source"].endswith("general/TargetDown.md") and _Site.seen == []


def test_only_a_url_and_nothing_else_configured(
    site: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(runbook.DIR_ENV, str(tmp_path / "none"))
    monkeypatch.setattr(runbook, "REPO_RUNBOOKS", tmp_path / "none")
    monkeypatch.delenv(runbook.CONFIGMAP_ENV, raising=False)
    monkeypatch.setenv(runbook.URLS_ENV, f"{site}/")
    _Site.pages["/y.md"] = (200, "text/markdown", b"# Y\nWhat Y means.\n", {})
    as_run(monkeypatch, alert_run(("Y", f"{site}/y.md")))
    assert runbook.run({"alert": "Y"})["summary"] == "What Y means."
    monkeypatch.delenv("AGENTRUN_RUN")
    with pytest.raises(ToolError, match="no runbooks configured"):
        runbook.run({"alert": "Y"})


def test_html_text_keeps_headings_and_lists() -> None:
    text = runbook.html_text(
        "<div><h3>Deep</h3><p>a&amp;b</p><ol><li>one</li><li>two</li></ol><pre>x  y</pre></div>"
    )
    assert text == "## Deep\n\na&b\n\n- one\n- two\n\nx y"
