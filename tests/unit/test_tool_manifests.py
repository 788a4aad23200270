"""tools/*.yaml: every AgentTool validates against the API and has a sound parameter schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from agentrun import api, builtin_tools

TOOLS = Path(__file__).resolve().parents[2] / "tools"
JSON_TYPES = {"object", "string", "integer", "number", "boolean", "array", "null"}


def agent_tools() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(TOOLS.glob("*.yaml")):
        with path.open() as f:
            docs += [d for d in yaml.safe_load_all(f) if d and d.get("kind") == "AgentTool"]
    return docs


DOCS = agent_tools()
IDS = [d["metadata"]["name"] for d in DOCS]


def test_the_builtin_catalog_is_present() -> None:
    assert {"k8s-get", "rollout-restart"} <= set(IDS)


@pytest.mark.parametrize("doc", DOCS, ids=IDS)
def test_validates_as_agent_tool(doc: dict[str, Any]) -> None:
    tool = api.AgentTool.model_validate(doc)
    assert tool.apiVersion == "agentrun.dev/v1alpha1"
    assert len(tool.spec.description) >= 80  # the model chooses tools by this text


def _check_schema(schema: dict[str, Any], where: str) -> None:
    assert schema.get("type") in JSON_TYPES, where
    assert isinstance(schema.get("description", ""), str), where
    if schema["type"] == "object":
        props = schema.get("properties", {})
        assert isinstance(props, dict), where
        for name, sub in props.items():
            _check_schema(sub, f"{where}.{name}")
        assert set(schema.get("required", [])) <= set(props), where
    if schema["type"] == "array":
        _check_schema(schema["items"], f"{where}[]")


@pytest.mark.parametrize("doc", DOCS, ids=IDS)
def test_parameters_are_a_closed_json_schema_object(doc: dict[str, Any]) -> None:
    params = api.AgentTool.model_validate(doc).spec.parameters
    _check_schema(params, doc["metadata"]["name"])
    assert params["additionalProperties"] is False
    for name, prop in params["properties"].items():
        assert prop.get("description"), f"{name} needs a description for the model"


@pytest.mark.parametrize("doc", DOCS, ids=IDS)
def test_builtin_exists_and_takes_exactly_the_declared_arguments(doc: dict[str, Any]) -> None:
    tool = api.AgentTool.model_validate(doc)
    if tool.spec.image or tool.spec.command:
        pytest.skip("not a built-in tool")
    builtin = tool.spec.builtin or doc["metadata"]["name"]
    assert builtin in builtin_tools.REGISTRY
    assert set(tool.spec.parameters["properties"]) == builtin_tools.ARGUMENTS[builtin]


def test_effects() -> None:
    effects = {d["metadata"]["name"]: d["spec"]["effect"] for d in DOCS}
    assert effects["k8s-get"] == "read"
    assert effects["rollout-restart"] == "write"
