"""The chart installs the CRDs, prompts and tool catalog from copies of the top-level crds/,
prompts/ and tools/ (Helm cannot read outside the chart). `make chart-sync` refreshes the
copies; these tests fail when a copy, or what the chart renders from it, drifts."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chart.helm import CHART, ROOT, by_kind, one, render, source_docs

FILES = CHART / "files"
SYNC = "out of date: run `make chart-sync`"
# (top-level source, chart copy, the files that are copied)
COPIES = [
    (ROOT / "crds", FILES / "crds", "*.yaml"),
    (ROOT / "prompts", FILES / "prompts", "*"),
    (ROOT / "tools", FILES / "tools", "*.yaml"),
]


def _files(directory: Path, pattern: str) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.glob(pattern)) if p.is_file()}


@pytest.mark.parametrize(("source", "copy", "pattern"), COPIES, ids=["crds", "prompts", "tools"])
def test_chart_copy_is_identical(source: Path, copy: Path, pattern: str) -> None:
    want, have = _files(source, pattern), _files(copy, pattern)
    assert want, f"nothing to copy in {source}"
    assert sorted(have) == sorted(want), f"{copy.relative_to(ROOT)} file list {SYNC}"
    for name, data in want.items():
        assert have[name] == data, f"{copy.relative_to(ROOT)}/{name} {SYNC}"


def test_rendered_crds_are_the_generated_crds() -> None:
    docs = render()
    rendered = {d["metadata"]["name"]: d for d in by_kind(docs, "CustomResourceDefinition")}
    sources = [d for p in sorted((ROOT / "crds").glob("*.yaml")) for d in source_docs(p)]
    assert sorted(rendered) == sorted(d["metadata"]["name"] for d in sources)
    for src in sources:
        crd = rendered[src["metadata"]["name"]]
        assert crd["spec"] == src["spec"], f"{src['metadata']['name']}: spec differs"
        assert {k: crd[k] for k in src if k != "metadata"} == {
            k: v for k, v in src.items() if k != "metadata"
        }


def test_rendered_prompts_are_the_prompt_files() -> None:
    cm = one(render(), "ConfigMap", "agentrun-prompts")
    files = {p.name: p.read_text() for p in sorted((ROOT / "prompts").iterdir()) if p.is_file()}
    assert cm["data"] == files


def test_rendered_tool_catalog_is_the_tool_manifests() -> None:
    docs = render(set_json=['toolNamespaces=["prod"]'])
    tools = {d["metadata"]["name"]: d for d in by_kind(docs, "AgentTool")}
    sources = [
        d
        for p in sorted((ROOT / "tools").glob("*.yaml"))
        for d in source_docs(p)
        if d["kind"] == "AgentTool"
    ]
    assert sorted(tools) == sorted(d["metadata"]["name"] for d in sources)
    for src in sources:
        tool = tools[src["metadata"]["name"]]
        assert tool["spec"] == src["spec"]
        assert tool["metadata"]["namespace"] == "prod"
        assert src["metadata"].get("labels", {}).items() <= tool["metadata"]["labels"].items()


def test_rendered_tool_cluster_roles_are_tools_rbac() -> None:
    """Named <fullname>-tool-*, so for the release `agentrun` exactly as in tools/rbac.yaml."""
    docs = render()
    sources = [d for d in source_docs(ROOT / "tools" / "rbac.yaml") if d["kind"] == "ClusterRole"]
    assert {d["metadata"]["name"] for d in sources} == {"agentrun-tool-read", "agentrun-tool-write"}
    for src in sources:
        role = one(docs, "ClusterRole", src["metadata"]["name"])
        assert role["rules"] == src["rules"]
    other = render(release="team-a")
    for src in sources:
        name = src["metadata"]["name"].replace("agentrun-", "team-a-agentrun-")
        assert one(other, "ClusterRole", name)["rules"] == src["rules"]


def test_readme_documents_every_value() -> None:
    """Every top-level group and documented key of values.yaml has a row in the README table."""
    import yaml

    readme = (CHART / "README.md").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def leaves(value: object, prefix: str = "") -> list[str]:
        if isinstance(value, dict) and value:
            return [k for key, v in value.items() for k in leaves(v, f"{prefix}{key}.")]
        return [prefix.rstrip(".")]

    for key in leaves(values):
        # A key is covered by its own row or by a row for one of its parents.
        parts = key.split(".")
        covered = any(f"| `{'.'.join(parts[:i])}` |" in readme for i in range(len(parts), 0, -1))
        assert covered, f"charts/agentrun/README.md has no row for {key}"
