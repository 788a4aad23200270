"""Tool definitions, JSON schema -> pydantic validation, and parsing the model's reply."""

from __future__ import annotations

import json
from typing import Any

import pydantic
import pytest
from openai.types.chat import ChatCompletionMessage

from agentrun.api import AgentToolSpec, Effect
from agentrun.engine.core import Done, InvalidAction, ToolCall, ToolCalls
from agentrun.llm.toolcall import dump, parse_reply, tool_definitions, validator_for

GET_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "kind": {"type": "string", "enum": ["Pod", "Deployment"]},
        "namespace": {"type": "string", "default": "default", "pattern": "^[a-z0-9-]+$"},
        "name": {"type": "string", "minLength": 1, "maxLength": 63},
        "label-selector": {"type": "string"},
        "tail": {"type": "integer", "minimum": 1, "maximum": 1000},
    },
    "required": ["kind"],
    "additionalProperties": False,
}
TOOLS = {
    "k8s-get": AgentToolSpec(description="Get objects.", effect=Effect.READ, parameters=GET_SCHEMA),
    "rollout-restart": AgentToolSpec(
        description="Restart a deployment.\nMore detail.",
        effect=Effect.WRITE,
        parameters={
            "type": "object",
            "properties": {"deployment": {"type": "string"}, "namespace": {"type": "string"}},
            "required": ["deployment", "namespace"],
        },
    ),
}


def message(*calls: tuple[str, str], content: str | None = None) -> ChatCompletionMessage:
    tool_calls = [
        {"id": f"c{i}", "type": "function", "function": {"name": n, "arguments": a}}
        for i, (n, a) in enumerate(calls)
    ]
    return ChatCompletionMessage.model_validate(
        {"role": "assistant", "content": content, "tool_calls": tool_calls or None}
    )


def test_tool_definitions_sorted_with_effect_and_done_last() -> None:
    defs = tool_definitions(TOOLS)
    names = [d["function"]["name"] for d in defs]
    assert names == ["k8s-get", "rollout-restart", "request_human_input", "done"]
    assert all(d["type"] == "function" for d in defs)
    assert "read-only" in defs[0]["function"]["description"]
    assert "human approves" in defs[1]["function"]["description"]
    assert defs[0]["function"]["parameters"] == GET_SCHEMA
    done = defs[-1]["function"]["parameters"]
    assert done["required"] == ["answer"]
    assert done["properties"]["answer"]["type"] == "string"


def test_tool_definitions_fill_in_minimal_schema_and_skip_a_tool_named_done() -> None:
    tools = {
        "noargs": AgentToolSpec(description="x", effect=Effect.READ, parameters={}),
        "done": AgentToolSpec(description="imposter", effect=Effect.WRITE),
    }
    defs = tool_definitions(tools)
    assert [d["function"]["name"] for d in defs] == ["noargs", "request_human_input", "done"]
    assert defs[0]["function"]["parameters"] == {"type": "object", "properties": {}}
    assert "imposter" not in defs[1]["function"]["description"]


def test_validator_applies_defaults_and_omits_unset_optionals() -> None:
    model = validator_for(GET_SCHEMA)
    assert dump(model.model_validate({"kind": "Pod"})) == {"kind": "Pod", "namespace": "default"}
    args = {"kind": "Pod", "label-selector": "app=web", "tail": 10}
    assert dump(model.model_validate(args)) == {**args, "namespace": "default"}


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ({}, "kind"),
        ({"kind": "Secret"}, "kind"),
        ({"kind": "Pod", "tail": 0}, "tail"),
        ({"kind": "Pod", "tail": "lots"}, "tail"),
        ({"kind": "Pod", "tail": True}, "tail"),
        ({"kind": "Pod", "namespace": "Bad_NS"}, "namespace"),
        ({"kind": "Pod", "name": ""}, "name"),
        ({"kind": "Pod", "extra": 1}, "extra"),
    ],
)
def test_validator_rejects(args: dict[str, Any], field: str) -> None:
    with pytest.raises(pydantic.ValidationError) as err:
        validator_for(GET_SCHEMA).model_validate(args)
    assert field in [str(e["loc"][0]) for e in err.value.errors()]


def test_validator_nested_objects_arrays_numbers_and_open_objects() -> None:
    schema = {
        "type": "object",
        "properties": {
            "query": {"type": "string"},
            "window": {
                "type": "object",
                "properties": {"minutes": {"type": "integer", "default": 5}},
                "additionalProperties": False,
            },
            "labels": {"type": "array", "items": {"type": "string"}, "maxItems": 2},
            "ratio": {"type": "number"},
            "flags": {"type": "object"},
            "model_config": {"type": ["string", "null"]},
        },
    }
    model = validator_for(schema)
    out = dump(
        model.model_validate(
            {"window": {}, "labels": ["a"], "ratio": 2, "flags": {"x": 1}, "model_config": None}
        )
    )
    assert out == {
        "window": {"minutes": 5},
        "labels": ["a"],
        "ratio": 2,
        "flags": {"x": 1},
        "model_config": None,
    }
    assert isinstance(out["ratio"], int)  # a JSON number stays an int when it is one
    assert dump(model.model_validate({"unknown": 1})) == {"unknown": 1}  # schema allows extras
    for bad in ({"labels": ["a", "b", "c"]}, {"labels": [1]}, {"window": {"hours": 1}}):
        with pytest.raises(pydantic.ValidationError):
            model.model_validate(bad)


def test_validator_additional_properties_schema() -> None:
    model = validator_for({"type": "object", "additionalProperties": {"type": "integer"}})
    assert dump(model.model_validate({"a": 1})) == {"a": 1}
    with pytest.raises(pydantic.ValidationError):
        model.model_validate({"a": "x"})


def test_validator_refuses_non_object_schema() -> None:
    with pytest.raises(ValueError, match="type object"):
        validator_for({"type": "string"})


def test_valid_call_becomes_tool_call_with_defaults() -> None:
    got = parse_reply(message(("k8s-get", json.dumps({"kind": "Pod"}))), TOOLS)
    assert got == ToolCall(tool="k8s-get", arguments={"kind": "Pod", "namespace": "default"})


def test_done_becomes_done() -> None:
    assert parse_reply(message(("done", '{"answer": "fixed"}')), TOOLS) == Done(answer="fixed")
    bad = parse_reply(message(("done", "{}")), TOOLS)
    assert isinstance(bad, InvalidAction)
    assert "answer" in bad.message


def test_text_only_is_invalid() -> None:
    got = parse_reply(message(content="I think the pod is crashing."), TOOLS)
    assert isinstance(got, InvalidAction)
    assert "no tool call" in got.message
    assert "Every reply calls a tool" in got.message
    assert "`done`" in got.message
    assert "crashing" in got.message


def test_done_beside_another_call_is_invalid_and_nothing_runs() -> None:
    got = parse_reply(message(("k8s-get", '{"kind":"Pod"}'), ("done", '{"answer":"x"}')), TOOLS)
    assert isinstance(got, InvalidAction)
    assert "`done` is called alone" in got.message and "none of the 2 calls ran" in got.message


def test_several_valid_calls_are_parsed_in_order() -> None:
    got = parse_reply(
        message(("k8s-get", '{"kind":"Pod"}'), ("k8s-get", '{"kind":"Deployment"}')), TOOLS
    )
    assert isinstance(got, ToolCalls)
    assert [c.arguments["kind"] for c in got.calls] == ["Pod", "Deployment"]


def test_one_bad_call_among_several_says_which_and_nothing_runs() -> None:
    got = parse_reply(message(("k8s-get", '{"kind":"Pod"}'), ("k8s-get", '{"kind": 3')), TOOLS)
    assert isinstance(got, InvalidAction)
    assert got.message.startswith("Call 2 of 2:") and "None of the calls ran" in got.message


def test_unknown_tool_lists_allowed() -> None:
    got = parse_reply(message(("kubectl-exec", "{}")), TOOLS)
    assert isinstance(got, InvalidAction)
    assert "'kubectl-exec'" in got.message
    assert "k8s-get, rollout-restart, done" in got.message


@pytest.mark.parametrize(
    ("raw", "expect"),
    [
        ('{"kind": "Pod"', "not valid JSON"),
        ('["Pod"]', "must be a JSON object, got list"),
        ('{"kind": "Pod", "tail": "many"}', "tail:"),
        ('{"namespace": "x"}', "kind: Field required"),
        ('{"kind": "Pod", "verb": "delete"}', "verb: unknown field"),
        ('{"kind": "Node"}', 'kind: must be one of ["Pod", "Deployment"]'),
    ],
)
def test_bad_arguments_are_invalid_with_field_names(raw: str, expect: str) -> None:
    got = parse_reply(message(("k8s-get", raw)), TOOLS)
    assert isinstance(got, InvalidAction)
    assert "k8s-get" in got.message
    assert expect in got.message


def test_schema_error_message_lists_expected_parameters() -> None:
    got = parse_reply(message(("rollout-restart", '{"deployment": "web"}')), TOOLS)
    assert isinstance(got, InvalidAction)
    assert "namespace: Field required" in got.message
    assert "Expected: deployment (string, required), namespace (string, required)" in got.message


def test_empty_arguments_mean_no_arguments() -> None:
    tools = {"ping": AgentToolSpec(description="x", effect=Effect.READ)}
    assert parse_reply(message(("ping", "")), tools) == ToolCall(tool="ping", arguments={})


def test_legacy_function_call_field_is_accepted() -> None:
    msg = ChatCompletionMessage.model_validate(
        {
            "role": "assistant",
            "content": None,
            "function_call": {"name": "done", "arguments": '{"answer": "ok"}'},
        }
    )
    assert parse_reply(msg, TOOLS) == Done(answer="ok")
