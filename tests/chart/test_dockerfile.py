"""The Dockerfile read as text (fast, no build): its base, entrypoints, user and context.
`make image` builds it for real with buildah; tests/realnode runs tool Jobs from that image
on a real node."""

from __future__ import annotations

import re
import tomllib

import yaml

from tests.chart.helm import CHART, ROOT

DOCKERFILE = (ROOT / "Dockerfile").read_text()


def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE)  # join continuation lines
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_slim_python_base_matching_the_package() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == ">=3.11"
    args = dict(
        rest.split("=", 1) for word, rest in _instructions() if word == "ARG" and "=" in rest
    )
    assert re.fullmatch(r"python:3\.1[1-9]-slim(-\w+)?", args["PYTHON_IMAGE"])
    froms = [rest for word, rest in _instructions() if word == "FROM"]
    assert froms and all(f.startswith("${PYTHON_IMAGE}") for f in froms)


def test_installs_the_package_with_pip_and_both_entrypoints() -> None:
    runs = " ".join(rest for word, rest in _instructions() if word == "RUN")
    # The package with its mcp extra: the MCP client that MCP tool Jobs run (agentrun-tool).
    assert re.search(r"pip install [^&]*\s\"\.\[mcp\]\"(\s|$)", runs), "the package is installed"
    assert "agentrun.tool.mcp_client, mcp" in runs  # importable in the image
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["agentrun-operator"] == "agentrun.operator.main:main"
    assert project["scripts"]["agentrun-tool"] == "agentrun.tool.runner:main"
    assert "agentrun-tool" in runs  # the tool runner is checked present in the image
    copies = [rest for word, rest in _instructions() if word == "COPY"]
    assert "operator ./operator" in copies and any(c.startswith("pyproject.toml") for c in copies)
    entry = [rest for word, rest in _instructions() if word == "ENTRYPOINT"]
    assert entry == ['["agentrun-operator"]']


def test_runs_as_non_root_65532() -> None:
    users = [rest for word, rest in _instructions() if word == "USER"]
    assert users and users[-1] in ("65532", "65532:65532")
    # The chart runs the same user.
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["podSecurityContext"]["runAsUser"] == 65532
    assert values["securityContext"]["runAsUser"] == 65532


def test_dockerignore_keeps_the_context_small() -> None:
    lines = [
        ln.strip()
        for ln in (ROOT / ".dockerignore").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    assert lines[0] == "*"  # deny by default, then allow what the image needs
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    sources = {
        rest.split()[0].rstrip("/")
        for word, rest in _instructions()
        if word == "COPY" and not rest.startswith("--from")
    }
    needed = {s for src in sources for s in src.split() if s not in (".", "./")}
    assert {"pyproject.toml", "README.md", "operator", "prompts", "tools/runbooks"} <= allowed
    assert needed <= allowed, f"COPY sources ignored by .dockerignore: {needed - allowed}"


def test_chart_default_image_is_this_image() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["image"]["repository"] == "ghcr.io/agentrun/agentrun"
    assert "ghcr.io/agentrun/agentrun" in DOCKERFILE
