"""Prompt tokens per step over a 50-step run with large tool outputs: compacted vs naive.

`python -m benchmarks.context_tokens` (or `make bench-context`). Pure: no cluster, no model.
The compacted request is what the operator sends (context.build_context within the Agent's
budget); the naive one appends every event whole, as a plain chat transcript would.
"""

from __future__ import annotations

import argparse
import json
import sys

from agentrun.api import (
    AgentRun,
    AgentRunSpec,
    AgentRunStatus,
    AgentToolSpec,
    Effect,
    EventType,
    RunInput,
    ThreadEvent,
)
from agentrun.llm.context import build_context
from agentrun.llm.prompts import load_prompt

NAIVE_BUDGET = 10**9  # no budget: everything appended whole
TOOLS = {
    "k8s-describe": AgentToolSpec(
        description="Describe an object with its status and recent events.",
        effect=Effect.READ,
        parameters={
            "type": "object",
            "properties": {"kind": {"type": "string"}, "name": {"type": "string"}},
        },
    ),
    "pod-logs": AgentToolSpec(description="Tail a pod's log.", effect=Effect.READ),
}


def tool_output(step: int, size: int) -> str:
    """A realistic large result: describe-like JSON with many events and log-ish lines."""
    events = [
        {
            "type": "Warning",
            "reason": "BackOff",
            "count": i + step,
            "message": f"Back-off restarting failed container app in pod web-{step}-{i} "
            f"(exit code 1, OOMKilled after {i * 3} s)",
        }
        for i in range(size // 160)
    ]
    return json.dumps({"kind": "Pod", "name": f"web-{step}", "events": events})[:size]


def run_at(step: int, size: int) -> AgentRun:
    thread: list[ThreadEvent] = []
    for s in range(1, step + 1):
        tool = "k8s-describe" if s % 2 else "pod-logs"
        args = {"kind": "Pod", "name": f"web-{s}"}
        thread.append(
            ThreadEvent(
                step=s,
                type=EventType.TOOL_CALL,
                time="t",
                tool=tool,
                arguments=args,
                content=json.dumps(args),
            )
        )
        thread.append(
            ThreadEvent(
                step=s,
                type=EventType.TOOL_RESULT,
                time="t",
                tool=tool,
                content=tool_output(s, size),
                outputRef=f"run-s{s}-out",
            )
        )
    return AgentRun(
        metadata={"name": "bench", "namespace": "ops", "uid": "u"},
        spec=AgentRunSpec(agentRef="sre", input=RunInput(task="Pods of web crash-loop.")),
        status=AgentRunStatus(step=step, thread=thread),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--output-bytes", type=int, default=20_000)
    parser.add_argument("--budget", type=int, default=16_000)
    args = parser.parse_args(argv)
    prompt = load_prompt("sre-agent").text
    rows = []
    for step in range(1, args.steps + 1):
        run = run_at(step, args.output_bytes)
        compact = build_context(run, prompt, TOOLS, args.budget).stats.tokens
        naive = build_context(run, prompt, TOOLS, NAIVE_BUDGET).stats.tokens
        rows.append((step, compact, naive))
    print(
        f"prompt tokens per step (estimate), {args.output_bytes} B tool outputs, "
        f"budget {args.budget}"
    )
    print(f"{'step':>5} {'compacted':>10} {'naive':>10} {'naive/compacted':>16}")
    for step, compact, naive in rows:
        if step in (1, 2, 5, 10, 20, 30, 40, 50) or step == args.steps:
            print(f"{step:>5} {compact:>10} {naive:>10} {naive / compact:>15.1f}x")
    later = [c for s, c, _ in rows if s >= min(10, args.steps)]
    last = rows[-1]
    ratio = last[2] / last[1]
    print(
        f"compacted from step 10 on: min {min(later)}, max {max(later)} "
        f"(flat: max <= budget {args.budget}: {max(later) <= args.budget})"
    )
    print(f"ratio at step {last[0]}: {ratio:.1f}x smaller than the naive thread (target >= 5x)")
    return 0 if ratio >= 5 and max(c for _, c, _ in rows) <= args.budget else 1


if __name__ == "__main__":
    sys.exit(main())
