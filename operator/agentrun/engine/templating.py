"""Fills `{{ input.context.alert.labels.namespace }}` placeholders in prefetch arguments (pure).

A placeholder may name a fallback for a value the input lacks, so one Agent serves alerts
that carry a label and alerts that do not:

    {{ input.context.alert.labels.namespace | default(run.namespace) }}
    {{ input.context.alert.labels.container | default("") }}
"""

from __future__ import annotations

import re
from typing import Any

_PATH = r"[A-Za-z_][\w.-]*"
_PLACEHOLDER = re.compile(
    r"\{\{\s*(" + _PATH + r")"
    r"(?:\s*\|\s*default\(\s*(?:(" + _PATH + r")|\"([^\"]*)\"|'([^']*)')\s*\))?\s*\}\}"
)


class MissingValue(KeyError):
    """A placeholder names a value the run's input does not have (and no fallback)."""


def lookup(values: dict[str, Any], path: str) -> Any:
    node: Any = values
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            raise MissingValue(path)
        node = node[part]
    return node


def _value(values: dict[str, Any], m: re.Match[str]) -> Any:
    path, fallback_path, double, single = m.groups()
    try:
        return lookup(values, path)
    except MissingValue:
        if fallback_path is not None:
            return lookup(values, fallback_path)
        if double is not None or single is not None:
            return double if double is not None else single
        raise


def fill(template: Any, values: dict[str, Any]) -> Any:
    """A string that is one placeholder becomes the value itself; others are interpolated."""
    if isinstance(template, dict):
        return {k: fill(v, values) for k, v in template.items()}
    if isinstance(template, list):
        return [fill(v, values) for v in template]
    if not isinstance(template, str):
        return template
    whole = _PLACEHOLDER.fullmatch(template.strip())
    if whole:
        return _value(values, whole)
    return _PLACEHOLDER.sub(lambda m: str(_value(values, m)), template)
