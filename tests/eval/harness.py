"""The eval suite's machinery: load a case, drive a run through the pure core, score it.

A case is a directory under tests/eval/cases/ (see docs/eval.md):

    alert.json      the Alertmanager v4 webhook payload, as Alertmanager sends it
    recording.yaml  the model's answers per step (replay), the tool outputs the agent sees,
                    the human decisions on approvals
    expected.yaml   the model's tool calls in order, the approval requested, findings
    requests.json   golden: the exact model requests (messages + tools) of the replay

The run is driven like runner.py drives it, in pure code: decide(), then its actions: a
CallModel builds the request with the real context builder and asks a model (the recording,
or a live model through the real ModelClient); a CreateJob is answered from the recorded
tool outputs, compacted by the operator's own jobs.compact_result; a pending approval gets
the recorded human decision. The alert becomes the run's input through the receiver's own
routing.run_input, so the model sees exactly what a real alert would give it.
"""

from __future__ import annotations

import copy
import difflib
import json
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from openai.types.chat import ChatCompletionMessage

from agentrun.api import (
    ANNOTATION_ANSWER,
    ANNOTATION_APPROVE,
    ANNOTATION_REJECT,
    TERMINAL_PHASES,
    ActionState,
    AgentRun,
    AgentSpec,
    AgentToolSpec,
    ModelSpec,
    PromptRef,
    Usage,
)
from agentrun.api.naming import canonical_json, output_name
from agentrun.engine.core import (
    CallModel,
    Config,
    CreateJob,
    InvalidAction,
    JobObservation,
    JobPhase,
    ModelReply,
    ModelUnavailable,
    Observations,
    RemoveAnnotations,
    ToolCall,
    ToolCalls,
    batch_key,
    decide,
)
from agentrun.llm import context, toolcall
from agentrun.llm.prompts import Prompt, load_prompt
from agentrun.llm.tokens import estimate, estimate_request
from agentrun.operator.jobs import COMPACT_LIMIT, compact_result
from agentrun.receiver import routing
from agentrun.tool.envelope import Envelope
from tests.modelserver.server import entry_message

ROOT = Path(__file__).resolve().parents[2]
EVAL_DIR = Path(__file__).resolve().parent
CASES_DIR = EVAL_DIR / "cases"
TOOLS_DIR = ROOT / "tools"
# The chart's default Agent: the one definition the chart installs, the demo runs and every
# case runs as, so a change to the shipped agent shows up here.
AGENT_FILE = ROOT / "charts" / "agentrun" / "agents" / "sre-agent.yaml"
AGENT_NAME = str(yaml.safe_load(AGENT_FILE.read_text())["metadata"]["name"])
REPLAY_MODEL = "eval-replay"  # the recording answers; live mode uses $AGENTRUN_MODEL
NOW = datetime(2025, 6, 3, 14, 5, 0, tzinfo=UTC)
REFRESH = "make eval-refresh"
# Arguments that tune a read rather than choose what is read: ignored when a live model's
# call is matched against the recorded ones.
TUNING_ARGS = frozenset(
    {"limit", "tailLines", "sinceSeconds", "sinceMinutes", "maxSeries", "step", "range", "time"}
)
LIVE_DEFAULT_MODEL = "gpt-4o-mini"

ModelFn = Callable[
    [AgentRun, Config, int, list[dict[str, Any]], list[dict[str, Any]]],
    Awaitable[ModelReply | ModelUnavailable],
]


# ---------------------------------------------------------------- cases


@dataclass
class Case:
    name: str
    path: Path
    alert: dict[str, Any]
    recording: dict[str, Any]
    expected: dict[str, Any]
    # An exported run (kubectl agentrun export): its name, namespace, uid, agentRef, input
    # and limits, replayed as they were instead of an alert.json through the receiver.
    run: dict[str, Any] | None = None

    @property
    def golden_path(self) -> Path:
        return self.path / "requests.json"

    def golden(self) -> list[dict[str, Any]] | None:
        if not self.golden_path.exists():
            return None
        data: dict[str, Any] = json.loads(self.golden_path.read_text())
        # The tool definitions are stored once, unless a request's differ.
        return [{**r, "tools": r.get("tools", data.get("tools"))} for r in data["requests"]]


def shown(path: Path) -> Path:
    """A path as the user types it: relative to the repository when under it."""
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def case_names(cases_dir: Path = CASES_DIR) -> list[str]:
    return sorted(p.name for p in cases_dir.iterdir() if (p / "recording.yaml").is_file())


def load_case(name: str, cases_dir: Path = CASES_DIR) -> Case:
    path = cases_dir / name
    exported = path / "run.yaml"
    run = yaml.safe_load(exported.read_text()) if exported.is_file() else None
    alert = {} if run is not None else json.loads((path / "alert.json").read_text())
    return Case(
        name=name,
        path=path,
        alert=alert,
        recording=yaml.safe_load((path / "recording.yaml").read_text()) or {},
        expected=yaml.safe_load((path / "expected.yaml").read_text()) or {},
        run=run,
    )


def load_catalog(directory: Path = TOOLS_DIR) -> dict[str, AgentToolSpec]:
    """The AgentTool catalog that ships (tools/*.yaml): the eval offers the real tools."""
    found: dict[str, AgentToolSpec] = {}
    for path in sorted(directory.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "AgentTool":
                found[doc["metadata"]["name"]] = AgentToolSpec.model_validate(doc["spec"])
    return found


def agent_spec(case: Case, model: ModelSpec | None = None) -> AgentSpec:
    """The chart's default Agent (AGENT_FILE), with the case's `agent:` overrides; its model
    is the replay's unless a live one is given."""
    doc = yaml.safe_load(AGENT_FILE.read_text())
    spec = dict(doc["spec"])
    spec.update(case.recording.get("agent") or {})
    agent = AgentSpec.model_validate(spec)
    return agent.model_copy(update={"model": model or ModelSpec(name=REPLAY_MODEL)})


def prompt_of(agent: AgentSpec) -> Prompt:
    return load_prompt(agent.prompt.name, agent.prompt.version)


def make_config(case: Case, model: ModelSpec | None = None) -> tuple[Config, Prompt]:
    agent = agent_spec(case, model)
    catalog = load_catalog()
    # An exported case brings the tools its run was offered: the shipped catalog's own
    # definition wins (so a catalog change shows here too), the recorded one fills the rest.
    for name, spec in (case.recording.get("agentTools") or {}).items():
        if name not in catalog:
            catalog[name] = AgentToolSpec.model_validate(spec)
    missing = [t for t in agent.tools if t not in catalog]
    if missing:
        raise ValueError(f"eval agent lists tools missing from {TOOLS_DIR}: {missing}")
    prompt = prompt_of(agent)
    config = Config.of(
        agent=agent,
        tools={t: catalog[t] for t in agent.tools},
        prompt=PromptRef(name=prompt.name, version=prompt.version, sha256=prompt.sha256),
    )
    return config, prompt


def make_run(case: Case) -> AgentRun:
    """The AgentRun the receiver would create for this alert (its default route), or, for
    an exported case, the run as it was (same name and uid, so the same Job names)."""
    if case.run is not None:
        r = case.run
        spec = {"agentRef": r["agentRef"], "input": r["input"], "limits": r.get("limits") or {}}
        meta = {"name": r["name"], "namespace": r["namespace"], "uid": r["uid"], "generation": 1}
        return AgentRun.model_validate({"metadata": meta, "spec": spec})
    notification = routing.Notification.model_validate(case.alert)
    firing = [a for a in notification.alerts if a.status == "firing"] or notification.alerts
    namespace = firing[0].labels.get("namespace", "default")
    route = routing.Route(name="eval", agent=AGENT_NAME)
    part = routing.Partition(route=route, namespace=namespace, alerts=list(notification.alerts))
    return AgentRun.model_validate(
        {
            "metadata": {
                "name": f"eval-{case.name}",
                "namespace": namespace,
                "uid": f"00000000-0000-4000-8000-{abs(hash_name(case.name)):012d}"[:36],
                "generation": 1,
            },
            "spec": {"agentRef": AGENT_NAME, "input": routing.run_input(part, notification)},
        }
    )


def hash_name(name: str) -> int:
    """A stable number from a name (Python's hash() is salted per process)."""
    return int.from_bytes(name.encode()[:6].ljust(6, b"-"), "big") % 10**12


# ---------------------------------------------------------------- tool outputs


def find_recording(
    case: Case, tool: str, arguments: dict[str, Any], namespace: str
) -> dict[str, Any] | None:
    """The recorded output of this call: exact arguments first; else the same tool with the
    same arguments once tuning arguments (limits, ranges) and a namespace equal to the run's
    are left out; else a recording of the tool marked `match: tool` (any call of it)."""
    recorded: list[dict[str, Any]] = case.recording.get("tools") or []
    same_tool = [r for r in recorded if r.get("tool") == tool]
    for rec in same_tool:
        if canonical_json(rec.get("arguments") or {}) == canonical_json(arguments):
            return rec

    def key(args: dict[str, Any]) -> str:
        kept = {
            k: str(v).lower() if isinstance(v, str) else v
            for k, v in args.items()
            if k not in TUNING_ARGS and not (k == "namespace" and v == namespace)
        }
        return canonical_json(kept)

    for rec in same_tool:
        if key(rec.get("arguments") or {}) == key(arguments):
            return rec
    for rec in same_tool:
        if rec.get("match") == "tool":
            return rec
    return None


def no_recording(case: Case, tool: str, arguments: dict[str, Any]) -> str:
    recorded = [
        f"{r['tool']} {canonical_json(r.get('arguments') or {})}"
        for r in case.recording.get("tools") or []
        if r.get("tool") == tool
    ]
    known = "; ".join(recorded) if recorded else "none"
    return (
        f"no recording: eval case {case.name!r} has no recorded output for {tool} "
        f"{canonical_json(arguments)} (recorded calls of {tool}: {known})"
    )


def job_result(case: Case, run: AgentRun, job: CreateJob, missing: list[str]) -> JobObservation:
    namespace = str(run.metadata.get("namespace", "default"))
    rec = find_recording(case, job.tool, job.arguments, namespace)
    if rec is None:
        text = no_recording(case, job.tool, job.arguments)
        missing.append(text)
        envelope = Envelope(tool=job.tool, ok=False, output=None, error=text)
    else:
        envelope = Envelope(
            tool=job.tool,
            ok=bool(rec.get("ok", True)),
            output=rec.get("output"),
            error=rec.get("error"),
            truncated=bool(rec.get("truncated", False)),
        )
    # As the operator does: a raw-output ConfigMap only for a log longer than the thread keeps.
    line = json.dumps(envelope.to_dict(), ensure_ascii=False, default=str)
    own = f"{job.name}-{job.container}" if job.container else job.name  # a grouped call's
    ref = output_name(own) if len(line) + 1 > COMPACT_LIMIT else None
    content = compact_result(envelope, output_ref=ref)
    key = f"{job.name}/{job.container}" if job.container else job.name
    return JobObservation(key, JobPhase.SUCCEEDED, "Complete", "", envelope.ok, content, ref)


# ---------------------------------------------------------------- driving a run


@dataclass
class Outcome:
    case: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)  # the model's tool calls
    approvals: list[dict[str, Any]] = field(default_factory=list)  # approvals requested
    missing: list[str] = field(default_factory=list)  # tool calls without a recording
    answer: str = ""
    phase: str = ""
    steps: int = 0
    usage: Usage = field(default_factory=Usage)
    run: AgentRun | None = None

    @property
    def tools(self) -> list[str]:
        return [c["tool"] for c in self.calls]


def _annotate(run: AgentRun, key: str, value: str) -> AgentRun:
    meta = copy.deepcopy(run.metadata)
    meta.setdefault("annotations", {})[key] = value
    return run.model_copy(update={"metadata": meta})


def _remove(run: AgentRun, keys: tuple[str, ...]) -> AgentRun:
    meta = copy.deepcopy(run.metadata)
    ann = meta.get("annotations") or {}
    for k in keys:
        ann.pop(k, None)
    meta["annotations"] = ann
    return run.model_copy(update={"metadata": meta})


async def drive(
    case: Case, model: ModelFn, config: Config, prompt: Prompt, max_rounds: int = 400
) -> Outcome:
    """Runs the case's alert to a terminal phase (or until nothing moves) in pure code."""
    out = Outcome(case=case.name)
    run = make_run(case)
    jobs: dict[str, JobObservation] = {}
    decisions = list(case.recording.get("decisions") or [])
    answers = list(case.recording.get("answers") or [])
    asked: set[str] = set()
    pending: ModelReply | ModelUnavailable | None = None
    for _ in range(max_rounds):
        retry = isinstance(pending, ModelUnavailable)
        cur = run.status.currentAction
        job = None
        if cur is not None and cur.state is not ActionState.AWAITING_APPROVAL:
            job = jobs.get(cur.jobRef, JobObservation(cur.jobRef, JobPhase.NOT_FOUND))
        batch = {
            batch_key(c): jobs.get(batch_key(c), JobObservation(batch_key(c), JobPhase.NOT_FOUND))
            for c in run.status.batch
            if c.result is None
        }
        status, actions = decide(
            run, Observations(now=NOW, config=config, model=pending, job=job, batch=batch)
        )
        pending = None
        run = run.model_copy(update={"status": status})
        moved = retry
        for action in actions:
            if isinstance(action, CallModel):
                messages = context.build_messages(
                    run, prompt.text, config.tools, config.agent.contextBudgetTokens
                )
                definitions = toolcall.tool_definitions(config.tools)
                # JSON round trip: what goes over the wire, and what requests.json holds.
                out.requests.append(
                    json.loads(
                        json.dumps(
                            {"step": action.step, "messages": messages, "tools": definitions}
                        )
                    )
                )
                pending = await model(run, config, action.step, messages, definitions)
                made = pending.action if isinstance(pending, ModelReply) else None
                for i, call in enumerate(made.calls if isinstance(made, ToolCalls) else [made]):
                    if isinstance(call, ToolCall):
                        step = action.step + i  # each read of a batch is a step of its own
                        out.calls.append(
                            {"step": step, "tool": call.tool, "arguments": call.arguments}
                        )
                moved = True
            elif isinstance(action, CreateJob):
                for one in action.group or (action,):  # a grouped Job: each its container
                    seen = job_result(case, run, one, out.missing)
                    jobs.setdefault(seen.name, seen)
                moved = True
            elif isinstance(action, RemoveAnnotations):
                run = _remove(run, action.keys)
        if status.phase in TERMINAL_PHASES:
            break
        pending_action = status.pendingAction
        if pending_action is not None and pending_action.actionHash not in asked:
            asked.add(pending_action.actionHash)
            out.approvals.append(
                {"tool": pending_action.tool, "arguments": pending_action.arguments}
            )
            decision = decisions.pop(0) if decisions else {"approve": True}
            if "reject" in decision:
                run = _annotate(run, ANNOTATION_REJECT, str(decision["reject"]))
            else:
                run = _annotate(run, ANNOTATION_APPROVE, pending_action.actionHash)
            moved = True
        elif status.pendingInput is not None and ANNOTATION_ANSWER not in (
            run.metadata.get("annotations") or {}
        ):
            answer = answers.pop(0) if answers else "Nobody is available; use what you have."
            run = _annotate(run, ANNOTATION_ANSWER, str(answer))
            moved = True
        if not moved:
            break
    out.run = run
    out.phase = run.status.phase.value
    out.steps = run.status.step
    out.usage = run.status.usage
    out.answer = run.status.result.answer if run.status.result else ""
    return out


# ---------------------------------------------------------------- models


def recorded_model(case: Case) -> ModelFn:
    """The replay model: the recording's answer for each step, parsed by toolcall."""
    entries: list[dict[str, Any]] = case.recording.get("model") or []

    async def answer(
        run: AgentRun,
        config: Config,
        step: int,
        messages: list[dict[str, Any]],
        definitions: list[dict[str, Any]],
    ) -> ModelReply | ModelUnavailable:
        if 1 <= step <= len(entries):
            entry = entries[step - 1]
        else:
            entry = {"done": f"recording ended (case {case.name}, step {step})"}
        message = entry_message(entry, lambda i: f"call_{step}_{i}")
        action: Any = toolcall.parse_reply(
            ChatCompletionMessage.model_validate(message), config.tools
        )
        if "invalid" in entry:
            # An exported run's invalid reply: its raw text is not kept, the error it gave is.
            action = InvalidAction(message=str(entry["invalid"]))
        prompt_tokens = estimate_request(messages, definitions)
        completion_tokens = estimate(json.dumps(message))
        usage = Usage(
            promptTokens=prompt_tokens,
            completionTokens=completion_tokens,
            totalTokens=prompt_tokens + completion_tokens,
            modelCalls=1,
        )
        return ModelReply(action=action, usage=usage)

    return answer


def live_model_spec() -> ModelSpec:
    return ModelSpec(
        name=os.environ.get("AGENTRUN_MODEL") or LIVE_DEFAULT_MODEL,
        baseURL=os.environ.get("OPENAI_BASE_URL") or None,
        timeoutSeconds=int(os.environ.get("AGENTRUN_EVAL_TIMEOUT", "120")),
        maxRetries=3,
    )


def live_model(client: Any, prompt: Prompt, api_key: str | None) -> ModelFn:
    """A live model through the operator's own ModelClient (the real openai client)."""

    async def answer(
        run: AgentRun,
        config: Config,
        step: int,
        messages: list[dict[str, Any]],
        definitions: list[dict[str, Any]],
    ) -> ModelReply | ModelUnavailable:
        reply: ModelReply | ModelUnavailable = await client.next_action(
            run, config, prompt.text, api_key, step
        )
        return reply

    return answer


async def replay(case: Case) -> Outcome:
    config, prompt = make_config(case)
    return await drive(case, recorded_model(case), config, prompt)


# ---------------------------------------------------------------- scoring


@dataclass
class Score:
    case: str
    tools: str  # exact | in order | no
    approval: bool
    findings: int
    findings_total: int
    missing_findings: list[str]
    steps: int
    tokens: int
    phase: str
    unrecorded: int

    @property
    def ok(self) -> bool:
        return (
            self.tools != "no"
            and self.approval
            and self.findings == self.findings_total
            and self.phase == "Succeeded"
        )


def _subsequence(needle: list[str], hay: list[str]) -> bool:
    it = iter(hay)
    return all(any(x == y for y in it) for x in needle)


def _found(finding: str | list[str], answer: str) -> bool:
    options = finding if isinstance(finding, list) else [finding]
    return any(str(o).lower() in answer.lower() for o in options)


def score(case: Case, out: Outcome) -> Score:
    expected_tools: list[str] = case.expected.get("tools") or []
    if out.tools == expected_tools:
        tools = "exact"
    elif _subsequence(expected_tools, out.tools):
        tools = "in order"
    else:
        tools = "no"
    want = case.expected.get("approval")
    if want is None:
        approval = not out.approvals
    else:
        approval = bool(out.approvals) and out.approvals[0] == {
            "tool": want["tool"],
            "arguments": want.get("arguments") or {},
        }
    findings: list[str | list[str]] = case.expected.get("findings") or []
    missing = [
        str(f) if not isinstance(f, list) else " | ".join(map(str, f))
        for f in findings
        if not _found(f, out.answer)
    ]
    return Score(
        case=case.name,
        tools=tools,
        approval=approval,
        findings=len(findings) - len(missing),
        findings_total=len(findings),
        missing_findings=missing,
        steps=out.steps,
        tokens=out.usage.totalTokens,
        phase=out.phase,
        unrecorded=len(out.missing),
    )


def replay_problems(case: Case, out: Outcome) -> list[str]:
    """Everything a replay must get exactly right (its model answers are recorded)."""
    s = score(case, out)
    problems = []
    if s.tools != "exact":
        problems.append(f"tools called {out.tools}, expected {case.expected.get('tools')}")
    if not s.approval:
        problems.append(
            f"approvals requested {out.approvals}, expected {case.expected.get('approval')}"
        )
    if s.missing_findings:
        problems.append(f"final answer lacks {s.missing_findings}: {out.answer!r}")
    want_phase = case.expected.get("phase", "Succeeded")
    if out.phase != want_phase:
        problems.append(f"phase {out.phase}, expected {want_phase}")
    problems += [f"unrecorded tool call: {m}" for m in out.missing]
    return [f"eval case {case.name}: {p}" for p in problems]


def table(scores: list[Score], title: str) -> str:
    head = ("case", "tools", "approval", "findings", "steps", "tokens", "phase", "result")
    rows = [
        (
            s.case,
            s.tools,
            "yes" if s.approval else "NO",
            f"{s.findings}/{s.findings_total}",
            str(s.steps),
            str(s.tokens),
            s.phase,
            "pass" if s.ok else "FAIL",
        )
        for s in scores
    ]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = [title, "  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    passed = sum(s.ok for s in scores)
    lines.append(f"{passed}/{len(scores)} cases pass; {sum(s.tokens for s in scores)} tokens")
    return "\n".join(lines)


# ---------------------------------------------------------------- golden requests


def golden_document(case: Case, out: Outcome) -> str:
    shared = out.requests[0]["tools"] if out.requests else []
    doc = {
        "comment": (
            f"The model requests of eval case {case.name!r} in replay, generated by "
            f"`{REFRESH}`: do not edit by hand. A change to a prompt, the context builder "
            "or the tool catalog that changes a request fails `make test` until this file "
            "is refreshed and the diff reviewed."
        ),
        "tools": shared,
        "requests": [
            {k: v for k, v in r.items() if k != "tools" or v != shared} for r in out.requests
        ],
    }
    return json.dumps(doc, indent=1, ensure_ascii=False) + "\n"


def write_golden(case: Case, out: Outcome) -> None:
    case.golden_path.write_text(golden_document(case, out))


def _content_lines(request: dict[str, Any]) -> list[str]:
    lines = []
    for m in request.get("messages") or []:
        lines.append(f"=== {m.get('role')} message")
        lines += str(m.get("content", "")).splitlines()
    lines.append("=== tools")
    lines += json.dumps(request.get("tools"), indent=1, sort_keys=True).splitlines()
    return lines


def golden_diff(case: Case, out: Outcome, max_lines: int = 80) -> str | None:
    """None when the requests equal requests.json; else a readable diff and what to do."""
    golden = case.golden()
    fix = (
        f"If the change is intended, re-record with `{REFRESH}` and review the diff of "
        f"{shown(case.golden_path)} before committing it."
    )
    if golden is None:
        return f"eval case {case.name}: {shown(case.golden_path)} is missing. {fix}"
    if golden == out.requests:
        return None
    lines: list[str] = []
    if len(golden) != len(out.requests):
        lines.append(f"recorded {len(golden)} model requests, the replay made {len(out.requests)}")
    seen: dict[str, Any] = {}
    for i in range(max(len(golden), len(out.requests))):
        old = golden[i] if i < len(golden) else {}
        new = out.requests[i] if i < len(out.requests) else {}
        if old == new:
            continue
        step = new.get("step", old.get("step"))
        hunks = list(
            difflib.unified_diff(_content_lines(old), _content_lines(new), n=2, lineterm="")
        )[2:]
        body = "\n".join(h for h in hunks if not h.startswith("@@"))
        if body in seen:
            lines.append(f"(step {step}: the same change as step {seen[body]})")
            continue
        seen[body] = step
        lines += [f"--- requests.json (recorded) step {step}", f"+++ replay (now) step {step}"]
        lines += hunks
        if len(lines) > max_lines:
            break
    if len(lines) > max_lines:
        lines = [*lines[:max_lines], f"... (diff cut at {max_lines} lines)"]
    return (
        f"eval case {case.name}: the model requests changed (prompt drift).\n"
        + "\n".join(lines)
        + f"\n{fix}"
    )
