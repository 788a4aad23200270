"""What an approver is shown of a pending write: everything that will run (pure).

One reading of `status.pendingAction` for `kubectl agentrun approve`, `show` and the approval
notification, so the terminal and the Slack message cannot disagree about what an approval
covers. Works on the plain JSON dict: a CLI of another version still shows what it can.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

# A snapshot is what the Job is built from; without one the operator did not freeze it.
NO_SNAPSHOT = "not recorded: what runs is the live AgentTool, not frozen with this proposal"


def printable(text: Any) -> str:
    """Control characters escaped: a command or argument cannot rewrite the approver's
    terminal (an ANSI sequence hiding the real image, say)."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in str(text))


def arguments_text(arguments: Any) -> str:
    if arguments is None:
        return ""
    return printable(json.dumps(arguments, sort_keys=True, ensure_ascii=False))


def _env_text(env: Any) -> str:
    if not isinstance(env, list) or not env:
        return "(none)"
    pairs = [
        f"{e.get('name')}={shlex.quote(str(e.get('value', '')))}"
        for e in env
        if isinstance(e, dict)
    ]
    return printable(" ".join(pairs))


def _resources_text(resources: Any) -> str:
    if not isinstance(resources, dict):
        return ""
    parts = []
    for which in ("requests", "limits"):
        values = resources.get(which)
        if isinstance(values, dict) and values:
            shown = " ".join(f"{k}={v}" for k, v in values.items() if v is not None)
            parts.append(f"{which} {shown}")
    return printable("; ".join(parts))


def preconditions_text(preconditions: Any) -> str:
    """The target state the write was proposed on; replicas read as from -> to."""
    if not isinstance(preconditions, dict) or not preconditions:
        return ""
    rest = dict(preconditions)
    parts = []
    if "fromReplicas" in rest or "toReplicas" in rest:
        before, after = rest.pop("fromReplicas", "?"), rest.pop("toReplicas", "?")
        parts.append(f"replicas {before} -> {after}")
    parts += [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in rest.items()]
    return printable(", ".join(parts))


def action_rows(action: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, text) rows of a pendingAction dict, in the order an approver reads them."""
    rows = [
        ("Tool", printable(action.get("tool", ""))),
        ("Arguments", arguments_text(action.get("arguments", {}))),
    ]
    snap = action.get("snapshot")
    if isinstance(snap, dict):
        builtin = snap.get("builtin")
        if builtin and builtin != action.get("tool"):
            rows.append(("Built-in", printable(builtin)))
        command = snap.get("command")
        rows += [
            ("Effect", printable(snap.get("effect", "?"))),
            ("Image", printable(snap.get("image", "?"))),
            (
                "Command",
                printable(shlex.join(str(c) for c in command))
                if isinstance(command, list)
                else "?",
            ),
            ("ServiceAccount", printable(snap.get("serviceAccountName", "?"))),
            ("Env", _env_text(snap.get("env"))),
            ("Resources", _resources_text(snap.get("resources"))),
            (
                "Timeout",
                f"{snap.get('timeoutSeconds', '?')}s, output up to "
                f"{snap.get('outputLimitBytes', '?')} bytes",
            ),
            ("Spec digest", printable(snap.get("specDigest", ""))),
        ]
    else:
        rows.append(("What runs", NO_SNAPSHOT))
    pre = preconditions_text(action.get("preconditions"))
    if pre:
        rows.append(("Preconditions", pre))
    if action.get("expiresTime"):
        rows.append(("Expires", printable(action["expiresTime"])))
    rows.append(("Hash", printable(action.get("actionHash", ""))))
    return rows
