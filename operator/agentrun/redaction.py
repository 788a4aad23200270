"""Masks values that look like credentials in free text (pure).

Used by the tool runner on every built-in tool's output and by the operator on everything a
tool Job produced, custom tools included, before it reaches status, Events or the model.
"""

from __future__ import annotations

import re
from typing import Any

MASK = "****"
SENSITIVE_NAME = re.compile(
    r"(passw(or)?d|passwd|pwd|secret|token|api[-_]?key|access[-_]?key|private[-_]?key|"
    r"credential|auth|session|cookie|signature|dsn)",
    re.IGNORECASE,
)
_REDACTIONS: list[tuple[re.Pattern[str], str]] = [
    # -----BEGIN ... PRIVATE KEY----- blocks
    (
        re.compile(
            r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(-----END [A-Z ]*PRIVATE KEY-----|$)", re.S
        ),
        "-----BEGIN PRIVATE KEY-----" + MASK + "-----END PRIVATE KEY-----",
    ),
    # Authorization: Bearer xxx / Basic xxx
    (re.compile(r"\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]{8,}", re.IGNORECASE), r"\1 " + MASK),
    # JWTs
    (re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{4,}"), MASK),
    # AWS access key ids, GitHub/GitLab/Slack/OpenAI-style tokens
    (re.compile(r"\b(AKIA|ASIA)[A-Z0-9]{16}\b"), MASK),
    (re.compile(r"\b(ghp|gho|ghu|ghs|ghr|glpat|xox[abprs]|sk)[-_][A-Za-z0-9_-]{16,}"), MASK),
    # user:password@ in URLs
    (re.compile(r"(://[^/\s:@]+):[^/\s@]+@"), r"\1:" + MASK + "@"),
    # password=..., "token": "...", api_key: ...
    (
        re.compile(
            # \b and bounded repeats: linear time on long runs of word characters
            r"(?P<k>\b[\w.-]{0,40}?(passw(or)?d|passwd|pwd|secret|token|api[-_]?key|"
            r"access[-_]?key|private[-_]?key|credential)[\w.-]{0,40})"
            r"(?P<sep>[\"']?\s{0,5}[:=]\s{0,5}[\"']?)"
            r"(?P<v>[^\s\"',;&}]+)",
            re.IGNORECASE,
        ),
        r"\g<k>\g<sep>" + MASK,
    ),
]


def redact(text: str) -> str:
    """Masks values that look like credentials in free text (logs, messages)."""
    for pattern, replacement in _REDACTIONS:
        text = pattern.sub(replacement, text)
    return text


def redact_value(value: Any) -> Any:
    """redact() on every string of a JSON-able value, keys kept."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list):
        return [redact_value(v) for v in value]
    if isinstance(value, dict):
        return {k: redact_value(v) for k, v in value.items()}
    return value
