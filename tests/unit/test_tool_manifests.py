"""tools/*.yaml: every AgentTool validates against the API and has a sound parameter schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml

from agentrun import api
from agentrun.llm import toolcall
from agentrun.tool import builtins as builtin_tools
from agentrun.tool.builtins import scale

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


def test_every_builtin_has_a_manifest() -> None:
    assert set(builtin_tools.REGISTRY) <= set(IDS)
    assert set(builtin_tools.REGISTRY) == set(builtin_tools.ARGUMENTS)


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
    assert {n for n, e in effects.items() if e == "write"} == builtin_tools.WRITE_TOOLS
    assert effects["k8s-get"] == "read"
    for name in builtin_tools.WRITE_TOOLS:
        assert "approval" in next(
            d["spec"]["description"] for d in DOCS if d["metadata"]["name"] == name
        ), f"{name}: the model should know a write waits for a human"


def test_scale_maximum_in_the_schema_is_the_tools_own_bound() -> None:
    [doc] = [d for d in DOCS if d["metadata"]["name"] == "scale"]
    replicas = doc["spec"]["parameters"]["properties"]["replicas"]
    assert replicas["maximum"] == scale.DEFAULT_MAX and replicas["minimum"] == 0
    assert str(scale.DEFAULT_MAX) in doc["spec"]["description"]


def test_schema_bounds_are_enforced_before_a_call() -> None:
    """The operator validates a model's arguments against these schemas (toolcall)."""
    [doc] = [d for d in DOCS if d["metadata"]["name"] == "scale"]
    model = toolcall.validator_for(doc["spec"]["parameters"])
    model.model_validate({"name": "web", "namespace": "prod", "replicas": 20})
    for bad in ({"replicas": 21}, {"replicas": -1}, {"replicas": 2, "force": True}):
        with pytest.raises(pydantic.ValidationError):
            model.model_validate({"name": "web", "namespace": "prod", **bad})


# ---------------------------------------------------------------- tools/rbac.yaml


def cluster_roles() -> dict[str, list[dict[str, Any]]]:
    with (TOOLS / "rbac.yaml").open() as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    return {d["metadata"]["name"]: d["rules"] for d in docs if d["kind"] == "ClusterRole"}


def grants(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_read_role_never_touches_secrets_and_never_writes() -> None:
    read = grants(cluster_roles()["agentrun-tool-read"])
    assert not [g for g in read if g[1].startswith("secrets") or g[1] == "*" or g[0] == "*"]
    assert {verb for _, _, verb in read} == {"get", "list", "watch"}
    for needed in [
        ("", "pods", "list"),
        ("", "pods/log", "get"),
        ("", "events", "list"),
        ("", "configmaps", "get"),
        ("apps", "replicasets", "list"),
        ("apps", "controllerrevisions", "list"),
        ("apps", "deployments", "get"),
    ]:
        assert needed in read, needed


def test_write_role_is_exactly_what_the_write_tools_use() -> None:
    write = grants(cluster_roles()["agentrun-tool-write"])
    assert write == {
        ("apps", "deployments", "get"),  # all Deployment write tools read first
        ("apps", "deployments", "patch"),  # rollout-restart, rollout-undo
        ("apps", "replicasets", "list"),  # rollout-undo finds the revision
        ("apps", "deployments/scale", "patch"),  # scale
        ("apps", "statefulsets/scale", "patch"),  # scale
        ("apps", "statefulsets", "get"),  # scale reads the replicas before
        ("", "pods", "get"),  # delete-pod: uid precondition, owner
        ("", "pods", "delete"),  # delete-pod
    }
