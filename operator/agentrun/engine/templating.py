"""Fills `{{ input.context.alert.labels.namespace }}` placeholders in prefetch arguments (pure)."""

from __future__ import annotations

import re
from typing import Any

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][\w.-]*)\s*\}\}")


class MissingValue(KeyError):
    """A placeholder names a value the run's input does not have."""


def lookup(values: dict[str, Any], path: str) -> Any:
    node: Any = values
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            raise MissingValue(path)
        node = node[part]
    return node


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
        return lookup(values, whole.group(1))
    return _PLACEHOLDER.sub(lambda m: str(lookup(values, m.group(1))), template)
