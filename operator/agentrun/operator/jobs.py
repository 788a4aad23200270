"""Tool calls as Jobs, pure: manifests in, observations out. No I/O here (kube.py does it)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from agentrun.api import (
    API_VERSION,
    LABEL_RUN,
    LABEL_STEP,
    LABEL_TOOL,
    AgentRun,
    Effect,
    ToolSnapshot,
)
from agentrun.api.naming import canonical_json, output_name
from agentrun.engine.core import FORGED, JOB_DEADLINE, CreateJob, JobObservation, JobPhase
from agentrun.tool.builtins.common import PRECONDITIONS_ENV
from agentrun.tool.envelope import ENVELOPE_KEY, Envelope
from agentrun.tool.mcp_digest import HEADER_PREFIX as MCP_HEADER_PREFIX

TRACEPARENT_ENV = "TRACEPARENT"  # W3C trace context of the tool call (tracing on)
OTEL_ENV_PREFIX = "OTEL_"  # the exporter's settings a traced call's container gets with it

ANNOTATION_ACTION_HASH = "agentrun.dev/action-hash"
ANNOTATION_JOB = "agentrun.dev/job"
# A grouped Job's calls: [{container, step, tool, actionHash}], in the order asked.
ANNOTATION_CALLS = "agentrun.dev/calls"
GROUP_TOOL = "batch"  # the tool label of a grouped Job whose calls are of several tools
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "agentrun"
CONTAINER = "tool"
TOOL_UID = 65532  # the distroless "nonroot" user
JOB_TTL_SECONDS = 3600
OUTPUT_CONFIGMAP_LIMIT = 512 * 1024  # a ConfigMap holds at most 1 MiB in total
COMPACT_LIMIT = 4000
# How long a tool pod may wait for a node (scheduling, image, sandbox) before its Job gives
# up: a tool's timeoutSeconds bounds its run on the node (the pod's deadline), not the queue
# an incident storm makes in front of it (the Job's deadline is the sum).
DEFAULT_START_SECONDS = 300
LOG_TAIL_LINES = 20


# ---------------------------------------------------------------- manifests


def label_value(value: str) -> str:
    """Label values are <= 63 chars and must start and end alphanumeric."""
    return value[:63].strip("-_.")


def owner_reference(run_name: str, run_uid: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "AgentRun",
        "name": run_name,
        "uid": run_uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def step_labels(run_name: str, step: int, tool_name: str) -> dict[str, str]:
    return {
        LABEL_RUN: label_value(run_name),
        LABEL_STEP: str(step),
        LABEL_TOOL: label_value(tool_name),
        LABEL_MANAGED_BY: MANAGED_BY,
    }


def _resources(tool: ToolSnapshot) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for kind in ("requests", "limits"):
        values = getattr(tool.resources, kind).model_dump(exclude_none=True)
        if values:
            out[kind] = values
    return out


@dataclass(frozen=True)
class GroupCall:
    """One call of a grouped Job: its own container, step, tool, arguments and hash."""

    container: str
    step: int
    tool_name: str
    tool: ToolSnapshot
    arguments: dict[str, Any]
    action_hash: str
    traceparent: str | None = None  # its own span's (tracing on)


def _tool_container(
    *,
    name: str,
    volume: str,
    run_name: str,
    run_namespace: str,
    step: int,
    tool_name: str,
    tool: ToolSnapshot,
    arguments: dict[str, Any],
    preconditions: dict[str, Any] | None,
    traceparent: str | None,
) -> dict[str, Any]:
    run_env = [
        {"name": "AGENTRUN_RUN", "value": run_name},
        {"name": "AGENTRUN_NAMESPACE", "value": run_namespace},
        {"name": "AGENTRUN_STEP", "value": str(step)},
        {"name": "AGENTRUN_OUTPUT_LIMIT", "value": str(tool.outputLimitBytes)},
    ]
    if preconditions:
        run_env.append({"name": PRECONDITIONS_ENV, "value": canonical_json(preconditions)})
    if traceparent:  # tracing on: spans from inside the tool join the run's trace
        run_env.append({"name": TRACEPARENT_ENV, "value": traceparent})
    # The tool's own settings first: the run's variables after them win (last one counts).
    tool_env = [{"name": e.name, "value": e.value} for e in tool.env]
    container: dict[str, Any] = {
        "name": name,
        "image": tool.image,
        "command": list(tool.command),
        "args": [tool.builtin or tool_name, canonical_json(arguments)],
        "env": [*tool_env, *run_env],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "resources": _resources(tool),
        # A crash without output still tells the model something.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [{"name": volume, "mountPath": "/tmp"}],
    }
    if tool.envFromSecret:
        # An MCP server's headers: the kubelet reads the Secret, never the operator or the SA.
        container["envFrom"] = [
            {"secretRef": {"name": tool.envFromSecret}, "prefix": MCP_HEADER_PREFIX}
        ]
    return container


def _job(
    *,
    run_name: str,
    run_namespace: str,
    run_uid: str,
    job_name: str,
    tool: ToolSnapshot,
    labels: dict[str, str],
    annotations: dict[str, str],
    containers: list[dict[str, Any]],
    start_seconds: int,
) -> dict[str, Any]:
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        # Counted by the kubelet from the pod's start on the node: the tool's own run time.
        "activeDeadlineSeconds": tool.timeoutSeconds,
        "serviceAccountName": tool.serviceAccountName,
        "automountServiceAccountToken": True,  # the tools call the API
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": TOOL_UID,
            "runAsGroup": TOOL_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": containers,
        # The root filesystem is read-only; scratch space for tools that need it, one volume
        # per container so that calls grouped in one pod share no files.
        "volumes": [
            {"name": c["volumeMounts"][0]["name"], "emptyDir": {"sizeLimit": "64Mi"}}
            for c in containers
        ],
    }
    spec: dict[str, Any] = {}
    if tool.effect is Effect.READ:
        # Write Jobs are kept (until the run is deleted): a vanished write Job could not be
        # told from one never created, and must never be created again.
        spec["ttlSecondsAfterFinished"] = JOB_TTL_SECONDS
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name,
            "namespace": run_namespace,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [owner_reference(run_name, run_uid)],
        },
        "spec": {
            "backoffLimit": 0,  # a tool call runs at most once; a write is never retried
            "activeDeadlineSeconds": tool.timeoutSeconds + start_seconds,
            **spec,
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": pod_spec,
            },
        },
    }


def build_job(
    *,
    run_name: str,
    run_namespace: str,
    run_uid: str,
    step: int,
    tool_name: str,
    tool: ToolSnapshot,
    arguments: dict[str, Any],
    job_name: str,
    action_hash: str,
    preconditions: dict[str, Any] | None = None,
    traceparent: str | None = None,
    start_seconds: int = DEFAULT_START_SECONDS,
) -> dict[str, Any]:
    """The batch/v1 Job for one tool call, built only from the frozen snapshot of what was
    proposed (and approved); its name makes a repeated create a harmless 409."""
    container = _tool_container(
        name=CONTAINER,
        volume="tmp",
        run_name=run_name,
        run_namespace=run_namespace,
        step=step,
        tool_name=tool_name,
        tool=tool,
        arguments=arguments,
        preconditions=preconditions,
        traceparent=traceparent,
    )
    return _job(
        run_name=run_name,
        run_namespace=run_namespace,
        run_uid=run_uid,
        job_name=job_name,
        tool=tool,
        labels=step_labels(run_name, step, tool_name),
        annotations={ANNOTATION_ACTION_HASH: action_hash},
        containers=[container],
        start_seconds=start_seconds,
    )


def build_group_job(
    *,
    run_name: str,
    run_namespace: str,
    run_uid: str,
    job_name: str,
    calls: list[GroupCall],
    start_seconds: int = DEFAULT_START_SECONDS,
) -> dict[str, Any]:
    """One Job for read calls of a batch that share ServiceAccount, image and timeout: one
    container per call, each exactly the container its own Job would have (own command,
    arguments, env, resources, security context and /tmp). Under one ServiceAccount no call
    gains API rights; one pod instead of N saves the apiserver ~14 requests per call."""
    first = calls[0]
    tools = {c.tool_name for c in calls}
    labels = step_labels(run_name, first.step, tools.pop() if len(tools) == 1 else GROUP_TOOL)
    listed = [
        {"container": c.container, "step": c.step, "tool": c.tool_name, "actionHash": c.action_hash}
        for c in calls
    ]
    containers = [
        _tool_container(
            name=c.container,
            volume=f"tmp-{c.container}",
            run_name=run_name,
            run_namespace=run_namespace,
            step=c.step,
            tool_name=c.tool_name,
            tool=c.tool,
            arguments=c.arguments,
            preconditions=None,
            traceparent=c.traceparent,
        )
        for c in calls
    ]
    return _job(
        run_name=run_name,
        run_namespace=run_namespace,
        run_uid=run_uid,
        job_name=job_name,
        tool=first.tool,
        labels=labels,
        annotations={ANNOTATION_CALLS: canonical_json(listed)},
        containers=containers,
        start_seconds=start_seconds,
    )


# ---------------------------------------------------------------- provenance

# What decides what a tool pod does: a Job or pod that differs in any of these is not ours.
_RUNS = ("image", "command", "args", "env", "envFrom")


def _what_runs(pod_spec: dict[str, Any]) -> dict[str, Any]:
    """What each container runs, by name; the single container of a Job of one call ("tool")
    by the field's own name, so a refusal says which field (and of a group, which call)."""
    containers = list(pod_spec.get("containers") or [])
    out: dict[str, Any] = {
        "serviceAccountName": pod_spec.get("serviceAccountName"),
        "containers": [c.get("name") for c in containers],
        "initContainers": len(pod_spec.get("initContainers") or []),
    }
    for c in containers:
        prefix = "" if c.get("name") == CONTAINER else f"{c.get('name')} "
        # The trace context and exporter say nothing about what runs (and tracing may be
        # switched on or off across a restart while a Job runs).
        env = [
            {"name": e.get("name"), "value": e.get("value", "")}
            for e in c.get("env") or []
            if not _tracing(str(e.get("name", "")))
        ]
        out.update({f"{prefix}{k}": c.get(k) for k in _RUNS if k != "env"})
        out[f"{prefix}env"] = env
    return out


def _tracing(name: str) -> bool:
    return name == TRACEPARENT_ENV or name.startswith(OTEL_ENV_PREFIX)


def job_mismatch(job: dict[str, Any], manifest: dict[str, Any]) -> str | None:
    """Why a found Job is not the one built from the snapshot (None: it is). A Job made under
    the predicted name by someone else runs something else, or for another run."""
    name = (job.get("metadata") or {}).get("name", "")
    owners = {r.get("uid") for r in (job.get("metadata") or {}).get("ownerReferences") or []}
    run_uid = manifest["metadata"]["ownerReferences"][0]["uid"]
    if run_uid not in owners:
        return f"Job {name} is not owned by this run"
    got = _what_runs(((job.get("spec") or {}).get("template") or {}).get("spec") or {})
    want = _what_runs(manifest["spec"]["template"]["spec"])
    diff = sorted(k for k in {*want, *got} if got.get(k) != want.get(k))
    return f"Job {name} differs from the approved action in {', '.join(diff)}" if diff else None


def pod_mismatch(pod: dict[str, Any], job: dict[str, Any]) -> str | None:
    """Why a pod is not the Job's own (None: it is): the job controller makes it, owned by the
    Job's uid, running the Job's template. A pod made by hand with the Job's labels is not."""
    meta, job_meta = pod.get("metadata") or {}, job.get("metadata") or {}
    refs: list[dict[str, Any]] = meta.get("ownerReferences") or []
    owner = next((r for r in refs if r.get("controller")), {})
    if not job_meta.get("uid") or owner.get("uid") != job_meta.get("uid"):
        return f"pod {meta.get('name')} is not controlled by Job {job_meta.get('name')}"
    got = _what_runs(pod.get("spec") or {})
    want = _what_runs(((job.get("spec") or {}).get("template") or {}).get("spec") or {})
    diff = sorted(k for k in {*want, *got} if got.get(k) != want.get(k))
    if diff:
        return f"pod {meta.get('name')} differs from its Job's template in {', '.join(diff)}"
    return None


def forged(name: str, why: str) -> JobObservation:
    text = (
        f"Tool result refused: {why}. The operator did not create it; its output was not "
        "read. The tool did not run as proposed."
    )
    return JobObservation(
        name=name, phase=JobPhase.FAILED, reason=FORGED, message=why, content=text
    )


def output_configmap(
    *,
    run_name: str,
    run_namespace: str,
    run_uid: str,
    step: int,
    tool_name: str,
    job_name: str,
    raw: str | Envelope,
    limit: int = OUTPUT_CONFIGMAP_LIMIT,
    container: str | None = None,
) -> dict[str, Any]:
    """The raw output of a step, bounded, kept outside the prompt and linked from the thread
    (of a call grouped in a Job with others: named after its container too)."""
    if isinstance(raw, Envelope):
        key, text = "output.json", json.dumps(raw.to_dict(), indent=1, ensure_ascii=False)
    else:
        key, text = "output.txt", raw
    text, cut = _cut_bytes(text, limit)
    data = {key: text}
    if cut:
        data["truncated"] = f"{cut} more bytes were dropped (limit {limit} bytes)"
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": output_name(f"{job_name}-{container}" if container else job_name),
            "namespace": run_namespace,
            "labels": step_labels(run_name, step, tool_name),
            "annotations": {ANNOTATION_JOB: job_name},
            "ownerReferences": [owner_reference(run_name, run_uid)],
        },
        "data": data,
    }


def _cut_bytes(text: str, limit: int) -> tuple[str, int]:
    """Cuts text to at most limit UTF-8 bytes; returns it and how many bytes were dropped."""
    raw = text.encode("utf-8", errors="replace")
    if len(raw) <= limit:
        return text, 0
    return raw[:limit].decode("utf-8", errors="ignore"), len(raw) - limit


# ---------------------------------------------------------------- results


def parse_envelope(log_text: str | bytes | None) -> Envelope | None:
    """The last line that is a JSON object carrying the envelope key; anything before is junk."""
    if log_text is None:
        return None
    if isinstance(log_text, bytes):
        log_text = log_text.decode("utf-8", errors="replace")
    for line in reversed(log_text.splitlines()):
        line = line.strip()
        if not line.startswith("{") or ENVELOPE_KEY not in line:
            continue
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if not isinstance(value, dict) or ENVELOPE_KEY not in value:
            continue
        error = value.get("error")
        return Envelope(
            tool=str(value.get("tool", "")),
            ok=value.get("ok") is True,
            output=value.get("output"),
            error=None if error is None else str(error),
            truncated=value.get("truncated") is True,
        )
    return None


def _dumps(value: Any) -> str:
    # Not sorted: the tools put the most relevant fields (status) first.
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


# Keys whose values read oldest-first (logs): shortening keeps their end, the newest lines.
TAIL_KEYS = frozenset({"log", "logs", "tail", "output"})


def _shrink(value: Any, max_str: int, max_items: int, tail: bool = False) -> Any:
    """Shortens long strings and lists in place of cutting the JSON in the middle."""
    if isinstance(value, str) and len(value) > max_str:
        if tail:
            return f"[{len(value) - max_str} earlier chars]..." + value[-max_str:]
        return value[:max_str] + f"...[{len(value) - max_str} more chars]"
    if isinstance(value, list):
        if tail and len(value) > max_items:
            kept = [_shrink(v, max_str, max_items) for v in value[-max_items:]]
            return [f"...[{len(value) - max_items} earlier items]", *kept]
        items = [_shrink(v, max_str, max_items) for v in value[:max_items]]
        if len(value) > max_items:
            items.append(f"...[{len(value) - max_items} more items]")
        return items
    if isinstance(value, dict):
        return {k: _shrink(v, max_str, max_items, k in TAIL_KEYS) for k, v in value.items()}
    return value


def compact_result(
    envelope: Envelope, limit: int = COMPACT_LIMIT, output_ref: str | None = None
) -> str:
    """What the model sees of a result: error first, then the output, never silently cut."""
    head = "" if envelope.ok else f"error: {envelope.error or 'the tool reported a failure'}\n"
    suffix = ""
    if envelope.truncated:
        suffix = "\n[the tool runner truncated this output at its output limit]"
    output = envelope.output
    body = _dumps(output) if output not in (None, "", {}, []) else ""
    budget = limit - len(suffix) - len(head)
    for max_str, max_items in ((1000, 20), (300, 10), (100, 5)):
        if len(body) <= budget or isinstance(output, str):
            break
        body = _dumps(_shrink(output, max_str, max_items))
    text = (head + body).rstrip("\n")
    budget += len(head)
    if len(text) > budget:
        where = f"; full output in ConfigMap {output_ref}" if output_ref else ""

        def note(n: int) -> str:
            return f"\n[truncated: {n} more chars{where}]"

        keep = max(0, budget - len(note(len(text))))
        text = text[:keep] + note(len(text) - keep)
    return (text + suffix).strip("\n")


def _tail_lines(text: str, lines: int = LOG_TAIL_LINES, chars: int = 2000) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])[-chars:]


def completed_by_pod(name: str, pod: dict[str, Any]) -> dict[str, Any]:
    """The Job as it will be once the job controller has seen its pod succeed. Our Jobs run
    one pod and never retry it (backoffLimit 0), so a succeeded pod is a complete Job; under
    load the controller's Complete condition follows seconds later."""
    ends = [
        str((cs.get("state") or {}).get("terminated", {}).get("finishedAt") or "")
        for cs in (pod.get("status") or {}).get("containerStatuses") or []
    ]
    finished = max(ends, default="") or None
    status = {
        "startTime": (pod.get("status") or {}).get("startTime"),
        "completionTime": finished,
        "conditions": [{"type": "Complete", "status": "True", "reason": "PodSucceeded"}],
    }
    return {"metadata": {"name": name}, "status": status}


def job_finished(job: dict[str, Any]) -> bool:
    """Complete or Failed: only then are its pod's log and exit code final."""
    return _condition(job, "Complete") is not None or _condition(job, "Failed") is not None


def _condition(job: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("type") == type_ and c.get("status") == "True":
            return dict(c)
    return None


def _terminated(pod: dict[str, Any] | None, container: str = CONTAINER) -> dict[str, Any] | None:
    if pod is None:
        return None
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        if cs.get("name") == container:
            state = (cs.get("state") or {}).get("terminated")
            return dict(state) if state else None
    return None


def _waiting(pod: dict[str, Any] | None) -> str:
    if pod is None:
        return "no pod yet"
    status = pod.get("status") or {}
    for cs in status.get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting")
        if waiting:
            return f"waiting: {waiting.get('reason', '')} {waiting.get('message', '')}".strip()
    return f"pod {status.get('phase', 'Pending')}"


def job_observation(
    job: dict[str, Any] | None,
    pod: dict[str, Any] | None,
    log_text: str | None,
    output_ref: str | None,
    *,
    name: str = "",
    container: str | None = None,
) -> JobObservation:
    """Maps a Job, its pod and its log to what the core needs; no Job means NOT_FOUND.
    `container`: of a grouped Job, the call's own container, whose outcome is its own."""
    if job is None:
        return JobObservation(name=name, phase=JobPhase.NOT_FOUND)
    name = (job.get("metadata") or {}).get("name", name)
    complete, failed = _condition(job, "Complete"), _condition(job, "Failed")
    if complete is None and failed is None:
        return JobObservation(name=name, phase=JobPhase.RUNNING, message=_waiting(pod))

    if failed is not None:
        failed = _deadline(job, failed, pod)
    term = _terminated(pod, container or CONTAINER) or {}
    if container is not None:
        complete, failed = _own_outcome(complete, failed, term)
    exit_code = term.get("exitCode")
    parts = [f"exit code {exit_code}" if exit_code is not None else ""]
    parts += [term.get("reason", ""), (failed or {}).get("reason", "")]
    message = ", ".join(dict.fromkeys(p for p in parts if p))
    envelope = parse_envelope(log_text)
    if complete is not None:
        if envelope is not None:
            content = compact_result(envelope, output_ref=output_ref)
            return JobObservation(
                name, JobPhase.SUCCEEDED, "Complete", message, envelope.ok, content, output_ref
            )
        if log_text is None:
            text = f"Job {name} completed but its output could not be read."
            return JobObservation(name, JobPhase.SUCCEEDED, "NoOutput", message, False, text)
        # A custom tool without an envelope: its plain output is the result.
        content = compact_result(Envelope("", True, log_text), output_ref=output_ref)
        return JobObservation(
            name, JobPhase.SUCCEEDED, "Complete", message, True, content, output_ref
        )

    assert failed is not None
    reason = str(failed.get("reason") or term.get("reason") or "Failed")
    detail = str(failed.get("message") or "")
    if reason == JOB_DEADLINE:
        message = detail  # what its pod was doing says why, more than an exit code
    if envelope is not None:
        content = compact_result(envelope, output_ref=output_ref)
    else:
        logs = _tail_lines(log_text or str(term.get("message") or ""))
        content = f"{message or reason}; {detail}".strip("; ")
        content += f"\nlast log lines:\n{logs}" if logs else "\n(no output)"
    return JobObservation(
        name, JobPhase.FAILED, reason, message or detail, False, content, output_ref
    )


_DEADLINES = ("DeadlineExceeded", JOB_DEADLINE)


def _deadline(
    job: dict[str, Any], failed: dict[str, Any], pod: dict[str, Any] | None
) -> dict[str, Any]:
    """Which deadline failed a Job: the pod's (DeadlineExceeded: the tool ran for its whole
    timeout; the Job then fails for its backoff limit) or the Job's (JobDeadlineExceeded:
    its pod waited for a node, or started too late to finish). A Job of an operator from
    before the pod deadline has only the Job's, which was the tool's timeout."""
    pod_status = (pod or {}).get("status") or {}
    if pod_status.get("reason") == "DeadlineExceeded":
        return {**failed, "reason": "DeadlineExceeded", "message": pod_status.get("message", "")}
    if failed.get("reason") != "DeadlineExceeded":
        return failed
    spec = job.get("spec") or {}
    if "activeDeadlineSeconds" not in ((spec.get("template") or {}).get("spec") or {}):
        return failed
    waited = f"its Job's deadline of {spec.get('activeDeadlineSeconds')}s passed"
    return {**failed, "reason": JOB_DEADLINE, "message": f"{waited} ({_waiting(pod)})"}


def _own_outcome(
    complete: dict[str, Any] | None, failed: dict[str, Any] | None, term: dict[str, Any]
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """A grouped call's outcome from its own container: the pod (and Job) fails when any of
    its calls fails, but a call that exited 0 keeps its result; one that failed on its own
    (an error, OOMKilled) says so; past the Job's deadline, one not done timed out."""
    if term.get("exitCode") == 0:
        return complete or {"type": "Complete", "status": "True", "reason": "Complete"}, None
    if failed is not None and failed.get("reason") not in _DEADLINES and term:
        return None, {"type": "Failed", "reason": term.get("reason") or "Error", "message": ""}
    return complete, failed


def manifest_for(
    run: AgentRun,
    action: CreateJob,
    traceparent: Callable[[str], str] | None = None,
    exporter: Mapping[str, str] | None = None,
    start_seconds: int = DEFAULT_START_SECONDS,
) -> dict[str, Any]:
    """The Job manifest of an action: only from its frozen snapshot; a grouped action's, one
    container per call. `traceparent` (tracing on): the TRACEPARENT of a call's span from
    its part of the run (its Job's name; a grouped call's f"{job}/{container}"); `exporter`:
    where a tool sends its own span (RunTracer.exporter_env), for every traced container;
    `start_seconds`: how long its pod may wait for a node (the policy's)."""
    manifest = _manifest(run, action, traceparent, start_seconds)
    return with_exporter(manifest, exporter or {})


def with_exporter(manifest: dict[str, Any], exporter: Mapping[str, str]) -> dict[str, Any]:
    """Adds the exporter's settings to each container that has a TRACEPARENT."""
    for c in manifest["spec"]["template"]["spec"]["containers"]:
        if exporter and any(e["name"] == TRACEPARENT_ENV for e in c["env"]):
            c["env"] += [{"name": k, "value": v} for k, v in exporter.items()]
    return manifest


def _manifest(
    run: AgentRun,
    action: CreateJob,
    traceparent: Callable[[str], str] | None,
    start_seconds: int,
) -> dict[str, Any]:

    def parent(part: str) -> str | None:
        return traceparent(part) if traceparent is not None else None

    if action.group:
        return build_group_job(
            run_name=run.metadata["name"],
            run_namespace=run.metadata["namespace"],
            run_uid=run.metadata["uid"],
            job_name=action.name,
            calls=[
                GroupCall(
                    container=a.container or CONTAINER,
                    step=a.step,
                    tool_name=a.tool,
                    tool=a.snapshot,
                    arguments=a.arguments,
                    action_hash=a.actionHash,
                    traceparent=parent(f"{action.name}/{a.container}"),
                )
                for a in action.group
            ],
            start_seconds=start_seconds,
        )
    return build_job(
        run_name=run.metadata["name"],
        run_namespace=run.metadata["namespace"],
        run_uid=run.metadata["uid"],
        step=action.step,
        tool_name=action.tool,
        tool=action.snapshot,
        arguments=action.arguments,
        job_name=action.name,
        action_hash=action.actionHash,
        preconditions=action.preconditions,
        traceparent=parent(action.name),
        start_seconds=start_seconds,
    )
