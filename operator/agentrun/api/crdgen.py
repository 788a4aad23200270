"""The CRD manifests in crds/, generated from the pydantic models in agentrun.api."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from agentrun.api import GROUP, VERSION, Agent, AgentRun, AgentTool, MCPServer

# Keywords a structural schema (apiextensions.k8s.io/v1, Kubernetes 1.20) accepts.
_KEEP = {
    "type",
    "description",
    "properties",
    "required",
    "items",
    "enum",
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minItems",
    "maxItems",
    "additionalProperties",
    "x-kubernetes-preserve-unknown-fields",
}


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:
            target = defs[node["$ref"].rsplit("/", 1)[-1]]
            merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
            return _resolve(merged, defs)
        options = node.get("anyOf")
        if options is not None:
            # Optional[X] is X: absence already means null for Kubernetes.
            real = [o for o in options if o.get("type") != "null"]
            if len(real) == 1:
                rest = {k: v for k, v in node.items() if k != "anyOf"}
                return _resolve({**real[0], **rest}, defs)
        return {k: _resolve(v, defs) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(v, defs) for v in node]
    return node


def _structural(node: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key not in _KEEP:
            continue
        if key == "properties":
            out[key] = {name: _structural(sub) for name, sub in value.items()}
        elif key == "items":
            out[key] = _structural(value)
        elif key == "additionalProperties":
            if isinstance(value, dict):
                out[key] = _structural(value)
            # `false` is the default behaviour (pruning) and not allowed beside properties.
        else:
            out[key] = value
    if out.get("x-kubernetes-preserve-unknown-fields"):
        out["type"] = "object"
        out.pop("additionalProperties", None)
    elif (
        out.get("type") == "object"
        and "properties" not in out
        and "additionalProperties" not in out
    ):
        out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def openapi_schema(model: type[BaseModel]) -> dict[str, Any]:
    raw = model.model_json_schema(mode="validation")
    defs = raw.pop("$defs", {})
    schema = _structural(_resolve(raw, defs))
    props = schema["properties"]
    props["metadata"] = {"type": "object"}
    props["apiVersion"] = {"type": "string"}
    props["kind"] = {"type": "string"}
    schema["required"] = [r for r in schema.get("required", []) if r not in {"metadata"}]
    return schema


_KINDS: list[dict[str, Any]] = [
    {
        "model": AgentRun,
        "plural": "agentruns",
        "singular": "agentrun",
        "short": ["ar"],
        "status": True,
        "columns": [
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Step", "type": "integer", "jsonPath": ".status.step"},
            {"name": "Agent", "type": "string", "jsonPath": ".spec.agentRef"},
            {"name": "Pending", "type": "string", "jsonPath": ".status.pendingAction.tool"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
    },
    {
        "model": Agent,
        "plural": "agents",
        "singular": "agent",
        "short": ["agt"],
        "status": False,
        "columns": [
            {"name": "Model", "type": "string", "jsonPath": ".spec.model.name"},
            {"name": "Prompt", "type": "string", "jsonPath": ".spec.prompt.name"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
    },
    {
        "model": AgentTool,
        "plural": "agenttools",
        "singular": "agenttool",
        "short": ["atool"],
        "status": False,
        "columns": [
            {"name": "Effect", "type": "string", "jsonPath": ".spec.effect"},
            {"name": "Builtin", "type": "string", "jsonPath": ".spec.builtin"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
    },
    {
        "model": MCPServer,
        "plural": "mcpservers",
        "singular": "mcpserver",
        "short": ["mcps"],
        "status": True,
        "columns": [
            {
                "name": "Ready",
                "type": "string",
                "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
            },
            {
                "name": "Reason",
                "type": "string",
                "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
            },
            {"name": "Listed", "type": "date", "jsonPath": ".status.lastListTime"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
    },
]


def crd(kind: dict[str, Any]) -> dict[str, Any]:
    model: type[BaseModel] = kind["model"]
    name = model.__name__
    version: dict[str, Any] = {
        "name": VERSION,
        "served": True,
        "storage": True,
        "schema": {"openAPIV3Schema": openapi_schema(model)},
        "additionalPrinterColumns": kind["columns"],
    }
    if kind["status"]:
        version["subresources"] = {"status": {}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{kind['plural']}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": name,
                "listKind": f"{name}List",
                "plural": kind["plural"],
                "singular": kind["singular"],
                "shortNames": kind["short"],
            },
            "versions": [version],
        },
    }


HEADER = "# Generated by `python -m agentrun.api.crdgen` from operator/agentrun/api; do not edit.\n"


def render_all() -> dict[str, str]:
    """File name -> YAML text, for every CRD."""
    return {
        f"{k['plural']}.{GROUP}.yaml": HEADER + yaml.safe_dump(crd(k), sort_keys=False)
        for k in _KINDS
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("crds"))
    parser.add_argument("--check", action="store_true", help="fail when files differ")
    args = parser.parse_args(argv)
    drift = []
    for fname, text in render_all().items():
        path = args.out / fname
        if args.check:
            if not path.exists() or path.read_text() != text:
                drift.append(str(path))
        else:
            args.out.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if drift:
        print(f"CRDs out of date: {', '.join(drift)}; run `make crds`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
