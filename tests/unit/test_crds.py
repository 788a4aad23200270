"""The CRDs in crds/ are generated from the pydantic models; this fails when they drift."""

from __future__ import annotations

from pathlib import Path

import yaml

from agentrun.api import crdgen

ROOT = Path(__file__).resolve().parents[2]


def test_crd_files_match_the_models() -> None:
    for fname, text in crdgen.render_all().items():
        path = ROOT / "crds" / fname
        assert path.exists(), f"{path} missing; run `make crds`"
        assert path.read_text() == text, f"{path} drifted from api.py; run `make crds`"


def test_agentrun_crd_has_status_printer_columns_and_short_name() -> None:
    crd = yaml.safe_load((ROOT / "crds" / "agentruns.agentrun.dev.yaml").read_text())
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["Phase"] == ".status.phase"
    assert columns["Pending"] == ".status.pendingAction.tool"
    assert crd["spec"]["names"]["shortNames"] == ["ar"]


def test_schema_is_structural_without_refs_or_unions() -> None:
    for text in crdgen.render_all().values():
        assert "$ref" not in text and "anyOf" not in text and "$defs" not in text
        schema = yaml.safe_load(text.split("\n", 1)[1])["spec"]["versions"][0]["schema"]
        _assert_typed(schema["openAPIV3Schema"], "root")


def _assert_typed(node: dict[str, object], path: str) -> None:
    assert "type" in node, f"{path} has no type"
    props = node.get("properties")
    if isinstance(props, dict):
        for name, sub in props.items():
            _assert_typed(sub, f"{path}.{name}")
    items = node.get("items")
    if isinstance(items, dict):
        _assert_typed(items, f"{path}[]")
