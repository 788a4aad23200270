"""Tool definitions for the model and validation of its one tool call per turn (pure).

Factor 4 "tools are structured outputs": the model's reply is parsed into typed actions (a
ToolCall, several ToolCalls, Done, RequestInput), or an InvalidAction whose message tells the
model what to fix.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import lru_cache
from typing import Annotated, Any

import pydantic
from openai.types.chat import ChatCompletionMessage
from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field

from agentrun.api import AgentToolSpec, Effect, Urgency
from agentrun.api.naming import canonical_json
from agentrun.engine.core import Done, InvalidAction, RequestInput, ToolCall, ToolCalls
from agentrun.engine.offered import unknown_tool
from agentrun.text import clip

DONE_TOOL = "done"
DONE_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "answer": {
            "type": "string",
            "minLength": 1,
            "description": "Final report: root cause, evidence, actions taken or recommended.",
        }
    },
    "required": ["answer"],
    "additionalProperties": False,
}
INPUT_TOOL = "request_human_input"
INPUT_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "question": {
            "type": "string",
            "minLength": 1,
            "description": "One precise question only a human can answer.",
        },
        "urgency": {"type": "string", "enum": ["low", "normal", "high"], "default": "normal"},
    },
    "required": ["question"],
    "additionalProperties": False,
}
BUILTIN_TOOLS = (DONE_TOOL, INPUT_TOOL)
_EFFECT_NOTE = {
    Effect.READ: "[read-only; runs at once]",
    Effect.WRITE: "[write; runs only after a human approves it]",
}


def tool_definitions(tools: dict[str, AgentToolSpec]) -> list[dict[str, Any]]:
    """OpenAI function tools, sorted by name (a stable prefix caches well), then `done`."""
    defs = []
    for name in sorted(tools):
        if name in BUILTIN_TOOLS:
            continue  # the built-in wins; config resolution refuses such a tool
        spec = tools[name]
        params = dict(spec.parameters)
        params.setdefault("type", "object")
        params.setdefault("properties", {})
        defs.append(
            _function(name, f"{spec.description.strip()} {_EFFECT_NOTE[spec.effect]}", params)
        )
    ask_doc = (
        "Ask a human a question when only a person can answer it (intent, a business "
        "constraint, a missing credential); the run waits for the answer."
    )
    defs.append(_function(INPUT_TOOL, ask_doc, INPUT_PARAMETERS))
    done_doc = "Finish the run with your final answer. Call it when done or when stuck."
    defs.append(_function(DONE_TOOL, done_doc, DONE_PARAMETERS))
    return defs


def _function(name: str, description: str, parameters: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {"name": name, "description": description, "parameters": parameters},
    }


# ---------------------------------------------------------------- JSON schema -> pydantic


class _Unset:
    """Default of an optional property without a schema default: left out of the result."""

    def __repr__(self) -> str:
        return "<unset>"


UNSET: Any = _Unset()


def _no_bool(value: Any) -> Any:
    # Lax pydantic reads true as 1: for `replicas` that is a surprise, not a convenience.
    if isinstance(value, bool):
        raise ValueError("expected a number, got a boolean")
    return value


_SCALARS: dict[str, Any] = {
    "string": str,
    "integer": Annotated[int, BeforeValidator(_no_bool)],
    "boolean": bool,
    "number": Annotated[int | float, BeforeValidator(_no_bool)],
}


def validator_for(schema: dict[str, Any]) -> type[pydantic.BaseModel]:
    """A pydantic model validating arguments against a JSON schema of type object.

    Supported: type (string/integer/number/boolean/array/object/null, or a list of them),
    properties, required, default, enum, const, additionalProperties (false forbids extra
    keys, a schema validates them), items, minimum/maximum (and exclusive), minLength/
    maxLength, minItems/maxItems, pattern. Anything else is accepted without checking.
    """
    if schema.get("type", "object") != "object":
        raise ValueError(f"tool parameters must be a JSON schema of type object, got {schema!r}")
    return _cached(canonical_json(schema))


@lru_cache(maxsize=256)
def _cached(schema_json: str) -> type[pydantic.BaseModel]:
    return _object_model(json.loads(schema_json), "Arguments")


def _object_model(schema: dict[str, Any], title: str) -> type[pydantic.BaseModel]:
    props: dict[str, Any] = schema.get("properties") or {}
    required = set(schema.get("required") or [])
    extra = schema.get("additionalProperties", True)
    fields: dict[str, Any] = {}
    for i, (key, sub) in enumerate(props.items()):
        sub = sub if isinstance(sub, dict) else {}
        annotation = _annotation(sub, f"{title}_{key}")
        default: Any = ... if key in required else sub.get("default", UNSET)
        # Internal names, the JSON key as alias: keys may be any string ("label-selector",
        # "model_config") without clashing with Python or pydantic.
        fields[f"f{i}"] = (annotation, Field(default, alias=key))
    if isinstance(extra, dict):
        extra_type = _annotation(extra, f"{title}_extra")
        config = ConfigDict(extra="allow", populate_by_name=False)
        model = pydantic.create_model(title, __config__=config, **fields)
        return _with_extra_check(model, extra_type)
    config = ConfigDict(extra="allow" if extra else "forbid", populate_by_name=False)
    return pydantic.create_model(title, __config__=config, **fields)


def _with_extra_check(model: type[pydantic.BaseModel], extra_type: Any) -> type[pydantic.BaseModel]:
    """additionalProperties given as a schema: extra keys are kept, their values validated."""
    adapter: pydantic.TypeAdapter[dict[str, Any]] = pydantic.TypeAdapter(dict[str, extra_type])

    class WithExtra(model):  # type: ignore[valid-type,misc]
        @pydantic.model_validator(mode="after")
        def _check_extra(self) -> Any:
            if self.model_extra:
                self.model_extra.update(adapter.validate_python(self.model_extra))
            return self

    WithExtra.__name__ = model.__name__
    return WithExtra


def _annotation(schema: dict[str, Any], title: str) -> Any:
    kinds = schema.get("type")
    if isinstance(kinds, list):
        members = [_annotation({**schema, "type": k}, title) for k in kinds]
        base: Any = members[0]
        for m in members[1:]:
            base = base | m
        return base
    checks: list[Callable[[Any], Any]] = []
    if "enum" in schema:
        checks.append(_one_of(list(schema["enum"])))
    if "const" in schema:
        checks.append(_one_of([schema["const"]]))
    constraints = _constraints(schema)
    if kinds == "null":
        base = type(None)
    elif kinds in _SCALARS:
        base = _SCALARS[kinds]
    elif kinds == "array":
        items = schema.get("items")
        base = list[_annotation(items, f"{title}_item") if isinstance(items, dict) else Any]  # type: ignore[misc]
    elif kinds == "object" and "properties" in schema:
        base = _object_model(schema, title)
    elif kinds == "object":
        extra = schema.get("additionalProperties")
        base = dict[str, _annotation(extra, f"{title}_value") if isinstance(extra, dict) else Any]  # type: ignore[misc]
    else:
        base = Any
    if constraints:
        base = Annotated[base, Field(**constraints)]
    for check in checks:
        base = Annotated[base, AfterValidator(check)]
    return base


def _constraints(schema: dict[str, Any]) -> dict[str, Any]:
    names = {
        "minimum": "ge",
        "maximum": "le",
        "exclusiveMinimum": "gt",
        "exclusiveMaximum": "lt",
        "pattern": "pattern",
    }
    if schema.get("type") == "array":
        names |= {"minItems": "min_length", "maxItems": "max_length"}
    elif schema.get("type") == "string":
        names |= {"minLength": "min_length", "maxLength": "max_length"}
    out = {}
    for key, arg in names.items():
        value = schema.get(key)
        # draft-4 style boolean exclusiveMinimum is ignored, not misread as a bound
        if value is not None and not isinstance(value, bool):
            out[arg] = value
    return out


def _one_of(allowed: list[Any]) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if value not in allowed:
            raise ValueError(f"must be one of {json.dumps(allowed)}")
        return value

    return check


def dump(model: pydantic.BaseModel) -> dict[str, Any]:
    """Validated arguments as plain JSON-able data under their schema keys, defaults applied,
    unset optional properties left out."""
    out: dict[str, Any] = {}
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        if value is UNSET:
            continue
        out[info.alias or name] = _plain(value)
    for key, value in (model.model_extra or {}).items():
        out[key] = _plain(value)
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, pydantic.BaseModel):
        return dump(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


# ---------------------------------------------------------------- the model's reply


def parse_reply(
    message: ChatCompletionMessage, tools: dict[str, AgentToolSpec]
) -> ToolCall | ToolCalls | Done | RequestInput | InvalidAction:
    """One valid action, several valid tool calls (parallel tool calls: the core runs the
    reads together), or an InvalidAction the model reads next turn."""
    calls: list[tuple[str, str]] = []
    for call in message.tool_calls or []:
        if call.type != "function":
            return InvalidAction(f"Unsupported tool call type {call.type!r}; call a function tool.")
        calls.append((call.function.name, call.function.arguments))
    if not calls and message.function_call is not None:  # the legacy single-call field
        calls.append((message.function_call.name, message.function_call.arguments))
    if not calls:
        text = (message.content or message.refusal or "").strip()
        said = f' (you wrote: "{clip(text, 300, "...", collapse_space=True)}")' if text else ""
        return InvalidAction(
            f"Your reply had no tool call{said}. Every reply calls a tool; "
            f"call `{DONE_TOOL}` with your final answer when you are finished."
        )
    if len(calls) == 1:
        return _parse_call(*calls[0], tools)
    parsed: list[ToolCall] = []
    for i, (name, raw) in enumerate(calls, 1):
        action = _parse_call(name, raw, tools)
        if isinstance(action, InvalidAction):
            return InvalidAction(
                f"Call {i} of {len(calls)}: {action.message} None of the calls ran."
            )
        if not isinstance(action, ToolCall):
            return InvalidAction(
                f"`{name}` is called alone, not beside other calls; none of the "
                f"{len(calls)} calls ran."
            )
        parsed.append(action)
    return ToolCalls(calls=tuple(parsed))


def _parse_call(
    name: str, raw: str, tools: dict[str, AgentToolSpec]
) -> ToolCall | Done | RequestInput | InvalidAction:
    unknown = unknown_tool(name, tools, BUILTIN_TOOLS)
    if unknown is not None:
        return InvalidAction(unknown)
    args = _arguments(name, raw)
    if isinstance(args, InvalidAction):
        return args
    schema = _schema(name, tools)
    try:
        validated = dump(validator_for(schema).model_validate(args))
    except pydantic.ValidationError as e:
        return InvalidAction(f"Invalid arguments for {name}: {summarise(e)}. {_expected(schema)}")
    except ValueError as e:  # the tool's own schema is unusable: a config problem
        return InvalidAction(f"Tool {name} cannot be called: {e}")
    if name == DONE_TOOL:
        return Done(answer=str(validated["answer"]))
    if name == INPUT_TOOL:
        return RequestInput(
            question=str(validated["question"]),
            urgency=Urgency(validated.get("urgency", "normal")),
        )
    return ToolCall(tool=name, arguments=validated)


def _schema(name: str, tools: dict[str, AgentToolSpec]) -> dict[str, Any]:
    if name == DONE_TOOL:
        return DONE_PARAMETERS
    if name == INPUT_TOOL:
        return INPUT_PARAMETERS
    return tools[name].parameters


def _arguments(name: str, raw: str | None) -> dict[str, Any] | InvalidAction:
    if raw is None or not raw.strip():
        return {}  # some servers send "" for a call without arguments
    try:
        args = json.loads(raw)
    except json.JSONDecodeError as e:
        return InvalidAction(
            f"Arguments for {name} are not valid JSON ({e.msg} at position {e.pos}); "
            "send one JSON object matching the tool's parameters."
        )
    if not isinstance(args, dict):
        return InvalidAction(
            f"Arguments for {name} must be a JSON object, got {type(args).__name__}."
        )
    return args


def summarise(error: pydantic.ValidationError, limit: int = 8) -> str:
    """`field.sub: message; ...` using the schema's keys, at most `limit` entries."""
    parts = []
    for err in error.errors(include_url=False)[:limit]:
        loc = ".".join(str(p) for p in err["loc"]) or "(arguments)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        parts.append(f"{loc}: {msg}")
    more = error.error_count() - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def _expected(schema: dict[str, Any]) -> str:
    props: dict[str, Any] = schema.get("properties") or {}
    if not props:
        return "This tool takes no arguments: send {}."
    required = set(schema.get("required") or [])
    desc = ", ".join(
        f"{k} ({v.get('type', 'any') if isinstance(v, dict) else 'any'}"
        f"{', required' if k in required else ''})"
        for k, v in props.items()
    )
    return f"Expected: {desc}."
