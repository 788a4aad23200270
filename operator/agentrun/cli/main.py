"""`agentrun` and `kubectl agentrun`: see, approve, reject, answer and start AgentRuns.

One program under two names (console scripts `agentrun` and `kubectl-agentrun`). It follows
the kubeconfig like kubectl (--kubeconfig, KUBECONFIG, --context, the context's namespace)
and exits with codes scripts can rely on (docs/cli.md). Rendering lives in agentrun.cli.view
(pure); cluster calls go through agentrun.kube.client.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, NoReturn

import yaml

from agentrun.api import (
    ANNOTATION_ANSWER,
    ANNOTATION_APPROVE,
    ANNOTATION_REJECT,
    LABEL_RUN,
    LABEL_STEP,
    NAME_PATTERN,
)
from agentrun.api.naming import output_name
from agentrun.cli import view

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_STATE = 4  # nothing pending, another action pending, or not awaiting input
EXIT_RUN_FAILED = 5  # run --wait: Failed or Cancelled
EXIT_DECLINED = 6  # approve: answered no, or no terminal to ask on and no --yes
EXIT_AWAITING_APPROVAL = 7  # run --wait: stopped at AwaitingApproval
EXIT_AWAITING_INPUT = 8  # run --wait: stopped at AwaitingInput
EXIT_TIMEOUT = 9  # run --wait --timeout: still going

SA_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
OUTPUT_KEYS = ("output.txt", "output.json")
WAIT_STOP = {
    "Succeeded": EXIT_OK,
    "Failed": EXIT_RUN_FAILED,
    "Cancelled": EXIT_RUN_FAILED,
    "AwaitingApproval": EXIT_AWAITING_APPROVAL,
    "AwaitingInput": EXIT_AWAITING_INPUT,
}


class CliError(Exception):
    """A failure with its message for the user and the exit code it maps to."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------- the cluster


class Kube:
    """The few API calls the CLI makes, on a client configured like kubectl's."""

    def __init__(self, api: Any, namespace: str) -> None:
        # Imported here, not at the top, so `--help` and usage errors need no client.
        from agentrun.kube import client

        self.kube = client
        self.api = api
        self.namespace = namespace

    def get_run(self, name: str, namespace: str) -> dict[str, Any]:
        run = _absent_on_404(self.kube.get_run, self.api, namespace, name)
        if run is None:
            raise CliError(
                f'agentrun "{name}" not found in namespace "{namespace}"', EXIT_NOT_FOUND
            )
        return run

    def list_runs(self, namespace: str | None, selector: str | None) -> list[dict[str, Any]]:
        return self.kube.list_runs(self.api, namespace, selector)

    def annotate(self, name: str, namespace: str, key: str, value: str) -> None:
        """Like `kubectl annotate --overwrite`: a merge patch of one annotation."""
        self.kube.annotate_run(self.api, namespace, name, {key: value})

    def create_run(self, manifest: dict[str, Any]) -> dict[str, Any]:
        return self.kube.post_run(self.api, manifest)

    def agent_exists(self, name: str, namespace: str) -> bool | None:
        """Whether the Agent exists; None when we may not look."""
        try:
            return _absent_on_404(self.kube.get_agent, self.api, namespace, name) is not None
        except Exception as err:
            if getattr(err, "status", None) == 403:
                return None
            raise

    def object_spec(self, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
        """The spec of an Agent or AgentTool; None when it is gone (or we may not look)."""
        read = self.kube.get_agent if kind == "Agent" else self.kube.get_tool
        try:
            body = _absent_on_404(read, self.api, namespace, name)
        except Exception as err:
            if getattr(err, "status", None) == 403:
                return None
            raise
        return None if body is None else dict(body.get("spec") or {})

    def configmap_data(self, name: str, namespace: str) -> dict[str, str] | None:
        cm = _absent_on_404(self.kube.get_configmap, self.api, namespace, name)
        return None if cm is None else dict(cm.get("data") or {})

    def configmaps(self, namespace: str, selector: str) -> list[tuple[str, dict[str, str]]]:
        found = self.kube.list_configmaps(self.api, namespace, selector)
        return [(cm["metadata"]["name"], dict(cm.get("data") or {})) for cm in found]

    def pods(self, namespace: str, selector: str) -> list[str]:
        return [name for name, _ in self.pod_containers(namespace, selector)]

    def pod_containers(self, namespace: str, selector: str) -> list[tuple[str, list[str]]]:
        """The pods of a selector, oldest first, each with its containers' names."""
        found = self.kube.list_pods(self.api, namespace, selector)
        # RFC 3339 UTC timestamps sort as text.
        ordered = sorted(found, key=lambda p: p["metadata"].get("creationTimestamp") or "")
        return [
            (p["metadata"]["name"], [c["name"] for c in p["spec"].get("containers", [])])
            for p in ordered
        ]

    def pod_log(self, pod: str, namespace: str, container: str = "tool") -> str:
        return self.kube.pod_log(self.api, namespace, pod, container=container)

    @classmethod
    def connect(cls, kubeconfig: str | None, context: str | None) -> Kube:
        from kubernetes import client
        from kubernetes import config as untyped

        config: Any = untyped
        path = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
        try:
            contexts, active = config.list_kube_config_contexts(config_file=path)
        except config.ConfigException as err:
            if not kubeconfig and not context and os.environ.get("KUBERNETES_SERVICE_HOST"):
                cfg = client.Configuration()
                config.load_incluster_config(client_configuration=cfg)
                ns = SA_NAMESPACE_FILE.read_text().strip() if SA_NAMESPACE_FILE.exists() else ""
                return cls(client.ApiClient(cfg), ns or "default")
            raise CliError(f"no usable kubeconfig ({path}): {err}") from None
        chosen = active
        if context:
            chosen = next((c for c in contexts or [] if c.get("name") == context), None)
            if chosen is None:
                raise CliError(f'context "{context}" not found in the kubeconfig ({path})')
        namespace = ((chosen or {}).get("context") or {}).get("namespace") or "default"
        try:
            api = config.new_client_from_config(
                config_file=path, context=context, persist_config=False
            )
        except config.ConfigException as err:
            raise CliError(f"cannot use kubeconfig {path}: {err}") from None
        return cls(api, namespace)


def _absent_on_404(
    read: Callable[[Any, str, str], dict[str, Any] | None], api: Any, namespace: str, name: str
) -> dict[str, Any] | None:
    """None for any 404: a bare one too (the CRD not installed), as for a missing object."""
    try:
        return read(api, namespace, name)
    except Exception as err:
        if getattr(err, "status", None) == 404:
            return None
        raise


# ---------------------------------------------------------------- commands


class Context:
    """What every command gets: the cluster, the namespace, where to write, and how."""

    def __init__(
        self,
        args: argparse.Namespace,
        kube: Kube,
        out: IO[str],
        err: IO[str],
        stdin: IO[str],
        now: Callable[[], datetime],
    ) -> None:
        self.args = args
        self.kube = kube
        self.out, self.err, self.stdin = out, err, stdin
        self.now = now
        self.namespace: str = args.namespace or kube.namespace
        colour = _isatty(out) and not os.environ.get("NO_COLOR") and not args.no_color
        self.style = view.Style(bool(colour))

    def print(self, text: str = "", end: str = "\n") -> None:
        self.out.write(text + end)
        self.out.flush()

    def note(self, text: str) -> None:
        self.err.write(text + "\n")
        self.err.flush()


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def cmd_list(ctx: Context) -> int:
    args = ctx.args
    namespace = None if args.all_namespaces else ctx.namespace
    runs = ctx.kube.list_runs(namespace, args.selector)
    if args.output:
        body = {"apiVersion": "v1", "kind": "List", "items": runs, "metadata": {}}
        ctx.print(view.dump(body, args.output), end="")
        return EXIT_OK
    if not runs:
        where = "" if namespace is None else f" in {namespace} namespace"
        ctx.note(f"No agentruns found{where}.")
        return EXIT_OK
    ctx.print(view.render_list(runs, ctx.now(), bool(args.all_namespaces), ctx.style), end="")
    return EXIT_OK


def cmd_show(ctx: Context) -> int:
    run = ctx.kube.get_run(ctx.args.name, ctx.namespace)
    if ctx.args.output:
        ctx.print(view.dump(run, ctx.args.output), end="")
    else:
        ctx.print(view.render_run(run, ctx.now(), ctx.style, full=ctx.args.full), end="")
    return EXIT_OK


def _pending(ctx: Context, run: dict[str, Any]) -> dict[str, Any]:
    pending = (run.get("status") or {}).get("pendingAction")
    if not isinstance(pending, dict) or not pending.get("actionHash"):
        raise CliError(
            f"{ctx.namespace}/{ctx.args.name} has no pending action "
            f"(phase {view.phase_of(run)}); nothing to decide",
            EXIT_STATE,
        )
    return pending


def _check_hash(ctx: Context, pending: dict[str, Any]) -> None:
    want = ctx.args.hash
    if want and want != pending["actionHash"]:
        raise CliError(
            f"the pending action of {ctx.namespace}/{ctx.args.name} is {pending.get('tool')} "
            f"with hash {pending['actionHash']}, not {want}; nothing changed",
            EXIT_STATE,
        )


def cmd_approve(ctx: Context) -> int:
    args = ctx.args
    run = ctx.kube.get_run(args.name, ctx.namespace)
    pending = _pending(ctx, run)
    _check_hash(ctx, pending)
    ctx.print("\n".join(view.render_pending(run, ctx.now(), ctx.style)))
    if not args.yes:
        if not _isatty(ctx.stdin):
            raise CliError(
                "stdin is not a terminal, so there is no one to ask: nothing approved. "
                f"Pass --yes (with --hash {pending['actionHash']} to pin this exact action).",
                EXIT_DECLINED,
            )
        ctx.print("Approve? [y/N] ", end="")
        reply = ctx.stdin.readline()
        if reply.strip().lower() not in ("y", "yes"):
            ctx.note("Not approved; nothing changed.")
            return EXIT_DECLINED
        # Someone may have decided while we asked: approve only what was shown.
        fresh = _pending(ctx, ctx.kube.get_run(args.name, ctx.namespace))
        if fresh["actionHash"] != pending["actionHash"]:
            raise CliError(
                "the pending action changed while you were asked (now "
                f"{fresh.get('tool')} {fresh['actionHash'][:12]}); nothing approved",
                EXIT_STATE,
            )
    ctx.kube.annotate(args.name, ctx.namespace, ANNOTATION_APPROVE, pending["actionHash"])
    ctx.print(
        f"agentrun.agentrun.dev/{args.name} approved: {pending.get('tool')} "
        f"(hash {pending['actionHash'][:12]}) runs next"
    )
    return EXIT_OK


def cmd_reject(ctx: Context) -> int:
    args = ctx.args
    reason = args.reason.strip()
    if not reason:
        raise CliError("--reason must not be empty: the model and the audit see it", EXIT_USAGE)
    run = ctx.kube.get_run(args.name, ctx.namespace)
    pending = _pending(ctx, run)
    _check_hash(ctx, pending)
    ctx.kube.annotate(args.name, ctx.namespace, ANNOTATION_REJECT, reason)
    ctx.print(
        f"agentrun.agentrun.dev/{args.name} rejected: {pending.get('tool')} "
        f"(hash {pending['actionHash'][:12]}) will not run; the model is told why"
    )
    return EXIT_OK


def cmd_answer(ctx: Context) -> int:
    args = ctx.args
    text = str(ctx.stdin.read() if args.text == "-" else args.text).strip()
    if not text:
        raise CliError("the answer must not be empty", EXIT_USAGE)
    run = ctx.kube.get_run(args.name, ctx.namespace)
    status = run.get("status") or {}
    if view.phase_of(run) != "AwaitingInput" and not status.get("pendingInput"):
        raise CliError(
            f"{ctx.namespace}/{args.name} is not waiting for input "
            f"(phase {view.phase_of(run)}); nothing changed",
            EXIT_STATE,
        )
    ctx.kube.annotate(args.name, ctx.namespace, ANNOTATION_ANSWER, text)
    ctx.print(f"agentrun.agentrun.dev/{args.name} answered")
    return EXIT_OK


def step_jobs(
    run: dict[str, Any], step: int | None
) -> tuple[int | None, list[tuple[str, str, str]]]:
    """The step asked for (default: the last one with a Job) and its (job, container, output)
    names; the container is "tool" but for a call grouped in a Job with others."""
    status = run.get("status") or {}
    refs: list[tuple[int, str, str, str]] = []
    for event in status.get("thread") or []:
        job = event.get("jobRef") if isinstance(event, dict) else None
        if job:
            container = str(event.get("container") or "")
            refs.append((int(event.get("step", 0)), job, container, event.get("outputRef") or ""))
    current = status.get("currentAction")
    # A running read Job stays Ready in status (no write for its creation).
    if isinstance(current, dict) and current.get("state") in ("JobCreated", "Ready"):
        refs.append((int(current.get("step", 0)), current["jobRef"], "", ""))
    for call in status.get("batch") or []:  # a batch still running
        if isinstance(call, dict) and call.get("jobRef"):
            refs.append((int(call.get("step", 0)), call["jobRef"], call.get("container") or "", ""))
    if step is None:
        if not refs:
            return None, []
        step = max(s for s, _, _, _ in refs)
    seen: dict[tuple[str, str], str] = {}
    for s, job, container, out in refs:
        if s == step:
            own = output_name(f"{job}-{container}" if container else job)
            seen[(job, container)] = seen.get((job, container)) or out or own
    return step, [(job, container or "tool", out) for (job, container), out in seen.items()]


def _print_output(ctx: Context, data: dict[str, str]) -> bool:
    for key in OUTPUT_KEYS:
        if key in data:
            ctx.print(data[key], end="" if data[key].endswith("\n") else "\n")
            if data.get("truncated"):
                ctx.note(f"note: output truncated: {data['truncated']}")
            return True
    return False


def cmd_logs(ctx: Context) -> int:
    args = ctx.args
    ns = ctx.namespace
    run = ctx.kube.get_run(args.name, ns)
    step, jobs = step_jobs(run, args.step)
    if step is None:
        raise CliError(f"{ns}/{args.name} has run no tool yet", EXIT_NOT_FOUND)
    if not jobs:
        if not _logs_by_label(ctx, step):
            raise CliError(f"{ns}/{args.name} has no tool output for step {step}", EXIT_NOT_FOUND)
        return EXIT_OK
    if not _logs_of_jobs(ctx, jobs):
        raise CliError(f"no output is left for step {step} of {ns}/{args.name}", EXIT_NOT_FOUND)
    return EXIT_OK


def _logs_by_label(ctx: Context, step: int) -> bool:
    """The thread may have dropped the step's events for size: find its objects by label.
    Whether any output was printed."""
    from agentrun.operator.jobs import label_value

    ns = ctx.namespace
    selector = f"{LABEL_RUN}={label_value(ctx.args.name)},{LABEL_STEP}={step}"
    outputs = ctx.kube.configmaps(ns, selector)
    found = False
    for name, data in outputs:
        if len(outputs) > 1:
            ctx.print(f"==> configmap/{name} <==")
        found = _print_output(ctx, data) or found
    if not found:
        # A Job of calls grouped together has a container per call, none named "tool".
        for pod, containers in ctx.kube.pod_containers(ns, selector):
            for container in containers:
                if len(containers) > 1:
                    ctx.print(f"==> pod/{pod} {container} <==")
                ctx.print(ctx.kube.pod_log(pod, ns, container), end="")
                found = True
    return found


def _logs_of_jobs(ctx: Context, jobs: list[tuple[str, str, str]]) -> bool:
    """Each call's stored output, else its container's log in its Job's last pod. Whether
    any output was printed."""
    ns = ctx.namespace
    found = False
    for job, container, out in jobs:
        if len(jobs) > 1:
            ctx.print(
                f"==> job/{job} <==" if container == "tool" else f"==> job/{job} {container} <=="
            )
        stored = ctx.kube.configmap_data(out, ns)
        if stored is not None and _print_output(ctx, stored):
            found = True
            continue
        pods = ctx.kube.pods(ns, f"job-name={job}")
        if pods:
            ctx.print(ctx.kube.pod_log(pods[-1], ns, container), end="")
            found = True
        else:
            ctx.note(f"job/{job}: neither configmap/{out} nor a pod of the Job is left")
    return found


def _read_input(ctx: Context) -> Any:
    source = ctx.args.input
    if source is None:
        return None
    try:
        text = ctx.stdin.read() if source == "-" else Path(source).read_text()
    except OSError as err:
        raise CliError(f"cannot read --input {source}: {err.strerror}", EXIT_USAGE) from None
    try:
        return yaml.safe_load(text)  # JSON, or YAML for hand-written input
    except yaml.YAMLError as err:
        raise CliError(f"--input {source} is not valid JSON/YAML: {err}", EXIT_USAGE) from None


def cmd_run(ctx: Context) -> int:
    args = ctx.args
    ns = ctx.namespace
    try:
        spec_input = view.build_input(_read_input(ctx), args.task)
    except view.InputError as err:
        raise CliError(str(err), EXIT_USAGE) from None
    if ctx.kube.agent_exists(args.agent, ns) is False:
        raise CliError(f'agent "{args.agent}" not found in namespace "{ns}"', EXIT_NOT_FOUND)
    created = ctx.kube.create_run(view.run_manifest(args.agent, ns, spec_input, args.name))
    name = created["metadata"]["name"]
    if not args.wait:
        if args.output:
            ctx.print(view.dump(created, args.output), end="")
        else:
            ctx.print(name)
        return EXIT_OK
    if not args.output:
        ctx.print(name)
    run = follow(ctx, name, args.timeout)
    if args.output:
        ctx.print(view.dump(run, args.output), end="")
    else:
        ctx.print(view.outcome(run, ctx.now(), ctx.style), end="")
    phase = view.phase_of(run)
    return WAIT_STOP.get(phase, EXIT_TIMEOUT)


def _source(ctx: Context, ref: str) -> tuple[str, str]:
    """RUN or NAMESPACE/RUN: the source's namespace and name. A fork lives in its source's
    namespace (its Agent, tools and evidence are there): another one is refused."""
    namespace, _, name = ref.rpartition("/")
    if not namespace:
        return ctx.namespace, name
    if ctx.args.namespace and namespace != ctx.args.namespace:
        raise CliError(
            f"cannot fork {ref} into namespace {ctx.args.namespace}: a fork lives in its "
            f"source's namespace ({namespace}); use -n {namespace}",
            EXIT_USAGE,
        )
    return namespace, name


def cmd_fork(ctx: Context) -> int:
    from pydantic import ValidationError

    from agentrun.api import AgentRunStatus
    from agentrun.engine import fork

    args = ctx.args
    ns, name = _source(ctx, args.run)
    try:
        prompt = view.parse_prompt(args.prompt) if args.prompt else None
    except view.InputError as err:
        raise CliError(str(err), EXIT_USAGE) from None
    source = ctx.kube.get_run(name, ns)
    try:
        status = AgentRunStatus.model_validate(source.get("status") or {})
        fork_of = fork.plan(name, source["metadata"].get("uid", ""), status, args.from_step)
    except ValidationError as err:
        raise CliError(f"cannot read the status of {ns}/{name}: {err}") from None
    except fork.ForkRefused as err:
        raise CliError(f"cannot fork {ns}/{name}: {err}", EXIT_STATE) from None
    if args.agent and ctx.kube.agent_exists(args.agent, ns) is False:
        raise CliError(f'agent "{args.agent}" not found in namespace "{ns}"', EXIT_NOT_FOUND)
    manifest = view.fork_manifest(
        source,
        fork_of.model_dump(mode="json", exclude_none=True),
        name=args.name or (f"{name[:40]}-fork-s{args.from_step}" if args.dry_run else None),
        agent=args.agent,
        model=args.model,
        prompt=prompt,
    )
    if args.dry_run:
        ctx.print(view.dump(manifest, args.output or "yaml"), end="")
        return EXIT_OK
    created = ctx.kube.create_run(manifest)
    if args.output:
        ctx.print(view.dump(created, args.output), end="")
    else:
        ctx.print(created["metadata"]["name"])
    spec = manifest["spec"]
    what = [f"agent {spec['agentRef']}"]
    what += [f"model {spec['model']}"] if spec.get("model") else []
    what += [f"prompt {view.prompt_text(spec['prompt'])}"] if spec.get("prompt") else []
    left = f", {fork_of.omitted} earlier ones left out" if fork_of.omitted else ""
    ctx.note(
        f"Forked {ns}/{name} at step {args.from_step}: {len(fork_of.events)} events inherited"
        f"{left}; step {args.from_step + 1} goes live with {', '.join(what)}"
    )
    return EXIT_OK


def export_case(kube: Kube, run: dict[str, Any]) -> Any:
    """A finished run as an eval case (cli.export.Case): reads its Agent, the Agent's
    AgentTools and the run's output ConfigMaps. Raises export.ExportRefused."""
    from agentrun.cli import export

    ns = str((run.get("metadata") or {}).get("namespace", kube.namespace))
    spec = run.get("spec") or {}
    agent = kube.object_spec("Agent", str(spec.get("agentRef", "")), ns)
    tools: dict[str, dict[str, Any]] = {}
    for tool in (agent or {}).get("tools") or []:
        found = kube.object_spec("AgentTool", str(tool), ns)
        if found is not None:
            tools[str(tool)] = found
    refs = {e.get("outputRef") for e in (run.get("status") or {}).get("thread") or []}
    outputs = {}
    for ref in sorted(r for r in refs if isinstance(r, str) and r):
        data = kube.configmap_data(ref, ns)
        if data is not None:
            outputs[ref] = data
    return export.build_case(run, agent, tools, outputs)


def cmd_export(ctx: Context) -> int:
    from agentrun.cli import export

    args = ctx.args
    if not re.fullmatch(NAME_PATTERN, args.case):
        raise CliError(f"--case {args.case!r}: use lowercase letters, digits and -", EXIT_USAGE)
    target = Path(args.dir) / args.case
    if target.exists() and not args.force:
        raise CliError(f"{target} exists; pass --force to overwrite it", EXIT_STATE)
    ns = ctx.namespace
    run = ctx.kube.get_run(args.run, ns)
    try:
        case = export_case(ctx.kube, run)
    except export.ExportRefused as err:
        raise CliError(f"cannot export {ns}/{args.run}: {err}", EXIT_STATE) from None
    target.mkdir(parents=True, exist_ok=True)
    for name, text in case.files.items():
        (target / name).write_text(text)
    ctx.print(str(target))
    for note in case.notes:
        ctx.note(f"note: {note}")
    ctx.note(
        f"Exported {ns}/{args.run} to {target}; review expected.yaml (its findings are a "
        f"draft), then record its golden requests: make eval-refresh EVAL_ARGS='--case "
        f"{args.case}'"
    )
    return EXIT_OK


def cmd_diff(ctx: Context) -> int:
    from agentrun.cli import diff

    runs = []
    for ref in (ctx.args.run_a, ctx.args.run_b):
        namespace, _, name = ref.rpartition("/")
        runs.append(ctx.kube.get_run(name, namespace or ctx.namespace))
    ctx.print(diff.render_diff(runs[0], runs[1]), end="")
    return EXIT_OK


def follow(ctx: Context, name: str, timeout: float | None, every: float = 0.5) -> dict[str, Any]:
    """Follows a run to a terminal phase or one that waits for a human; notes progress."""
    deadline = time.monotonic() + timeout if timeout else None
    last: tuple[str, int] | None = None
    while True:
        try:
            run = ctx.kube.get_run(name, ctx.namespace)
        except CliError as err:
            if err.code == EXIT_NOT_FOUND:
                gone = f"agentrun {ctx.namespace}/{name} was deleted"
                raise CliError(gone, EXIT_NOT_FOUND) from None
            raise
        phase = view.phase_of(run)
        step = int((run.get("status") or {}).get("step") or 0)
        if (phase, step) != last:
            ctx.note(f"{name}: {phase} (step {step})")
            last = (phase, step)
        if phase in WAIT_STOP:
            return run
        if deadline is not None and time.monotonic() > deadline:
            ctx.note(f"{name}: still {phase} after {timeout:g}s; stopped waiting")
            return run
        time.sleep(every)


# ---------------------------------------------------------------- arguments


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _common(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """kubectl's connection flags; accepted before and after the command."""

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    parser.add_argument("--kubeconfig", default=default(None), help="path to the kubeconfig")
    parser.add_argument("--context", default=default(None), help="kubeconfig context to use")
    parser.add_argument(
        "-n",
        "--namespace",
        default=default(None),
        help="namespace (default: the context's namespace, else default)",
    )
    parser.add_argument(
        "--no-color", action="store_true", default=default(False), help="never colour output"
    )


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = _Parser(
        prog=prog,
        description="See, approve, reject, answer and start agentrun.dev AgentRuns.",
        epilog="Exit codes: 0 ok, 1 error, 2 usage, 3 not found, 4 wrong state (nothing "
        "pending), 5 run failed, 6 not confirmed, 7 awaiting approval, 8 awaiting input, "
        "9 timed out. See docs/cli.md.",
    )
    _common(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def command(name: str, help_: str, fn: Callable[[Context], int]) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        _common(p, suppress=True)
        p.set_defaults(func=fn)
        return p

    def output(p: argparse.ArgumentParser) -> None:
        p.add_argument("-o", "--output", choices=("json", "yaml"), help="print the object(s)")

    p = command("list", "list AgentRuns with what they wait for and how long", cmd_list)
    p.add_argument("-A", "--all-namespaces", action="store_true", help="across all namespaces")
    p.add_argument("-l", "--selector", help="label selector, as for kubectl get")
    output(p)

    p = command("show", "a run as a readable timeline", cmd_show)
    p.add_argument("name")
    p.add_argument("--full", action="store_true", help="do not shorten long event content")
    output(p)

    p = command("approve", "show the pending write action and approve it", cmd_approve)
    p.add_argument("name")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask (for scripts)")
    p.add_argument("--hash", help="approve only if the pending action has this hash")

    p = command("reject", "reject the pending write action; the model is told why", cmd_reject)
    p.add_argument("name")
    p.add_argument("--reason", required=True, help="why (the model and the audit see it)")
    p.add_argument("--hash", help="reject only if the pending action has this hash")

    p = command("answer", "answer the question of a run awaiting input", cmd_answer)
    p.add_argument("name")
    p.add_argument("text", help="the answer ('-' reads it from stdin)")

    p = command("logs", "a step's raw tool output", cmd_logs)
    p.add_argument("name")
    p.add_argument("--step", type=int, help="the step (default: the last step that ran a tool)")

    p = command("run", "start an AgentRun", cmd_run)
    p.add_argument("--agent", required=True, help="the Agent to run")
    p.add_argument(
        "--input",
        metavar="FILE",
        help='JSON {"task": ..., "context": {...}} (or with --task just the context); - is stdin',
    )
    p.add_argument("--task", help="the task text (overrides a task in --input)")
    p.add_argument("--name", help="the run's name (default: generated from the agent's)")
    p.add_argument(
        "--wait",
        action="store_true",
        help="follow the run until it ends or waits for a human; the exit code says which",
    )
    p.add_argument("--timeout", type=float, help="with --wait: stop waiting after SECONDS")
    output(p)

    _fork_and_export(command, output)
    return parser


def _fork_and_export(
    command: Callable[[str, str, Callable[[Context], int]], argparse.ArgumentParser],
    output: Callable[[argparse.ArgumentParser], None],
) -> None:
    p = command(
        "fork",
        "a new run that goes on from a step of RUN with another prompt, model or agent",
        cmd_fork,
    )
    p.add_argument("run", metavar="RUN", help="the source run (NAME or NAMESPACE/NAME)")
    p.add_argument(
        "--from-step",
        type=int,
        required=True,
        metavar="N",
        help="inherit the source's steps 0..N; the fork's model takes step N+1",
    )
    p.add_argument("--prompt", metavar="NAME[@VERSION]", help="another prompt (a prompts/ file)")
    p.add_argument("--model", help="another model name, on the Agent's endpoint")
    p.add_argument("--agent", help="another Agent (default: the source's)")
    p.add_argument("--name", help="the fork's name (default: generated, <run>-fork-xxxxx)")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the fork's manifest (for kubectl apply) instead of creating it",
    )
    output(p)

    p = command("diff", "where two runs diverge: actions, approvals, answers, tokens", cmd_diff)
    p.add_argument("run_a", metavar="RUN_A", help="a run (NAME or NAMESPACE/NAME)")
    p.add_argument("run_b", metavar="RUN_B", help="another run, e.g. a fork of RUN_A")

    p = command("export", "write a finished run as an eval case (make eval replays it)", cmd_export)
    p.add_argument("run", metavar="RUN")
    p.add_argument("--case", required=True, metavar="NAME", help="the case's name")
    p.add_argument(
        "--dir",
        default="tests/eval/cases",
        help="where the case directory goes (default: tests/eval/cases)",
    )
    p.add_argument("--force", action="store_true", help="overwrite an existing case directory")


def _api_message(err: Exception) -> str:
    body = getattr(err, "body", None)
    if body:
        try:
            return str(json.loads(body).get("message") or body)
        except (ValueError, AttributeError):
            return str(body)
    return str(getattr(err, "reason", "") or err)


def main(
    argv: Sequence[str] | None = None,
    *,
    kube: Kube | None = None,
    out: IO[str] | None = None,
    err: IO[str] | None = None,
    stdin: IO[str] | None = None,
    now: Callable[[], datetime] | None = None,
) -> int:
    """The entry point of both console scripts; returns the exit code."""
    out, err, stdin = out or sys.stdout, err or sys.stderr, stdin or sys.stdin
    invoked = os.path.basename(sys.argv[0]) if sys.argv else "agentrun"
    prog = "kubectl agentrun" if invoked.startswith("kubectl-") else "agentrun"
    try:
        args = build_parser(prog).parse_args(argv)
    except SystemExit as stop:  # --help (0) or a usage error (2)
        return stop.code if isinstance(stop.code, int) else EXIT_USAGE
    try:
        kube = kube or Kube.connect(args.kubeconfig, args.context)
        ctx = Context(args, kube, out, err, stdin, now or (lambda: datetime.now(UTC)))
        code: int = args.func(ctx)
        return code
    except CliError as failure:
        err.write(f"error: {failure}\n")
        return failure.code
    except KeyboardInterrupt:
        err.write("interrupted\n")
        return 130
    except Exception as failure:
        status = getattr(failure, "status", None)
        if status is not None and hasattr(failure, "body"):
            code = EXIT_NOT_FOUND if status == 404 else EXIT_ERROR
            err.write(f"error: the API server answered {status}: {_api_message(failure)}\n")
            return code
        if type(failure).__module__.startswith("urllib3"):
            err.write(f"error: cannot reach the API server: {failure}\n")
            return EXIT_ERROR
        raise


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
