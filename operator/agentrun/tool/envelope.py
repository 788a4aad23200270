"""The tool runner's result envelope: the last JSON line of a tool Job's stdout.

Standard library only: the tool runner imports it on every tool call, so it must stay cheap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ENVELOPE_KEY = "agentrunEnvelope"


@dataclass(frozen=True)
class Envelope:
    tool: str
    ok: bool
    output: Any
    error: str | None = None
    truncated: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            ENVELOPE_KEY: 1,
            "tool": self.tool,
            "ok": self.ok,
            "output": self.output,
            "error": self.error,
            "truncated": self.truncated,
        }
