"""The status write's merge patch: what the apiserver merges must equal what was decided."""

from __future__ import annotations

from typing import Any

from agentrun.operator.persist import merge_patch


def apply(target: Any, patch: Any) -> Any:
    """RFC 7386 as the apiserver applies it."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply(result.get(key), value)
    return result


def test_a_nested_key_the_new_status_lacks_is_removed_not_merged() -> None:
    before = {
        "phase": "Running",
        "currentAction": {"tool": "k8s-get", "arguments": {"kind": "Deployment", "name": "web"}},
        "thread": [{"type": "ToolCall"}],
    }
    after = {
        "phase": "AwaitingApproval",
        "currentAction": {
            "tool": "rollout-restart",
            "arguments": {"name": "web", "namespace": "x"},
        },
        "thread": [{"type": "ToolCall"}, {"type": "ToolResult"}],
    }
    patch = merge_patch(before, after)
    assert patch["currentAction"]["arguments"] == {"kind": None, "namespace": "x"}
    assert apply(before, patch) == after


def test_only_changes_are_sent_and_removed_keys_are_nulled() -> None:
    before = {"phase": "Running", "usage": {"prompt": 1, "completion": 2}, "pendingAction": {}}
    after = {"phase": "Running", "usage": {"prompt": 1, "completion": 5}}
    patch = merge_patch(before, after)
    assert patch == {"usage": {"completion": 5}, "pendingAction": None}
    assert apply(before, patch) == after
    assert merge_patch(after, after) == {}
