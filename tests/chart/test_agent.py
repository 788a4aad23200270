"""The chart's default Agent: one definition (agents/sre-agent.yaml), rendered as is.

The same file is what `make demo` and `make eval` run (tests/eval/harness.py reads it), so
these tests pin that the chart renders exactly that spec, with only the model from values,
and that it is the incident workflow: every read tool, the write tools, prefetch of the
runbook, the alert's workload and the Warning events, placeholders intact.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from agentrun.api import Agent, AgentToolSpec, Effect
from agentrun.engine.policy import Policy, snapshot
from agentrun.tool.builtins import REGISTRY
from tests.chart.helm import CHART, by_kind, render

AGENT_FILE = CHART / "agents" / "sre-agent.yaml"
TOOLS = Path(__file__).resolve().parents[2] / "tools"


def catalog() -> dict[str, AgentToolSpec]:
    found = {}
    for path in TOOLS.glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "AgentTool":
                found[doc["metadata"]["name"]] = AgentToolSpec.model_validate(doc["spec"])
    return found


def test_the_default_agent_is_the_file_with_the_model_from_values() -> None:
    source = yaml.safe_load(AGENT_FILE.read_text())
    docs = render(
        sets=["model.name=my-model", "model.apiKeySecretRef.name=model-api-key"],
        set_json=['toolNamespaces=["prod","staging"]'],
    )
    agents = by_kind(docs, "Agent")
    assert sorted(a["metadata"]["namespace"] for a in agents) == ["prod", "staging"]
    for agent in agents:
        assert agent["metadata"]["name"] == "sre-agent"
        spec = dict(agent["spec"])
        assert spec.pop("model") == {
            "name": "my-model",
            "apiKeySecretRef": {"name": "model-api-key", "key": "api-key"},
        }
        expected = dict(source["spec"])
        del expected["model"]
        assert spec == expected  # placeholders and all, untouched by Helm
        Agent.model_validate(agent)
    assert not by_kind(
        render(sets=["agent.enabled=false"], set_json=['toolNamespaces=["p"]']), "Agent"
    )


def test_the_default_agent_is_the_incident_workflow() -> None:
    agent = Agent.model_validate(yaml.safe_load(AGENT_FILE.read_text())).spec
    tools = catalog()
    snaps = {name: snapshot(name, spec, Policy()) for name, spec in tools.items()}
    reads = {n for n, s in snaps.items() if s.effect is Effect.READ}
    writes = {n for n, s in snaps.items() if s.effect is Effect.WRITE}
    # The whole catalog: every read tool and every write tool, all built-ins.
    assert set(agent.tools) == reads | writes == set(REGISTRY)
    prefetch = {call.tool: call.arguments for call in agent.prefetch}
    assert set(prefetch) <= reads
    assert prefetch["runbook"] == {"alert": "{{ input.context.alert.labels.alertname }}"}
    assert prefetch["alert-workload"] == {"labels": "{{ input.context.alert.labels }}"}
    assert prefetch["k8s-events"] == {
        "namespace": "{{ input.context.alert.labels.namespace | default(run.namespace) }}",
        "type": "Warning",
    }
