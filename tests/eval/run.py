"""`make eval`: the regression suite of real alerts (see docs/eval.md).

    python -m tests.eval.run                  replay every case (deterministic, no network);
                                              then the live mode if OPENAI_API_KEY is set
    python -m tests.eval.run --live           only the live mode (needs OPENAI_API_KEY)
    python -m tests.eval.run --refresh        re-record every case's requests.json
    python -m tests.eval.run --case NAME      only this case (repeatable)
    python -m tests.eval.run --cases DIR      the cases under DIR (default tests/eval/cases)
    python -m tests.eval.run --live --from-runs NS [--kubeconfig PATH] [--prompt NAME[@V]]
                                              re-run the finished AgentRuns of namespace NS
                                              (exported like `kubectl agentrun export`)

Live mode: each case against the model AGENTRUN_MODEL (default gpt-4o-mini) at
OPENAI_BASE_URL (default the OpenAI API) through the operator's ModelClient, tools answered
from the recordings; prints a score table. The exit status is that of the replay (or of the
live mode with --live: non-zero when a case fails).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path

from agentrun.cli import view
from agentrun.engine.policy import Policy
from agentrun.llm.model import DEFAULT_BASE_URL, ModelClient

from . import from_runs, harness


def _replay(names: list[str], refresh: bool, cases: Path = harness.CASES_DIR) -> int:
    scores, failures = [], []
    for name in names:
        case = harness.load_case(name, cases)
        out = asyncio.run(harness.replay(case))
        if refresh:
            before = case.golden()
            harness.write_golden(case, out)
            changed = "unchanged" if before == out.requests else "re-recorded"
            print(f"{harness.shown(case.golden_path)}: {changed}")
        else:
            diff = harness.golden_diff(case, out)
            if diff:
                failures.append(diff)
        failures += harness.replay_problems(case, out)
        scores.append(harness.score(case, out))
    print(harness.table(scores, "eval replay (recorded model answers, deterministic)"))
    for failure in failures:
        print("\nFAIL " + failure, file=sys.stderr)
    return 1 if failures else 0


async def _live_cases(
    names: list[str],
    api_key: str,
    cases: Path = harness.CASES_DIR,
    prompt_choice: dict[str, str] | None = None,
) -> list[harness.Score]:
    spec = harness.live_model_spec()
    # Whoever runs the eval picked the endpoint: it is the one allowed.
    client = ModelClient(Policy(model_urls=(spec.baseURL or DEFAULT_BASE_URL,)))
    scores = []
    try:
        for name in names:
            case = harness.load_case(name, cases)
            if prompt_choice is not None:
                agent = {**(case.recording.get("agent") or {}), "prompt": prompt_choice}
                case.recording = {**case.recording, "agent": agent}
            config, prompt = harness.make_config(case, spec)
            out = await harness.drive(
                case, harness.live_model(client, prompt, api_key), config, prompt
            )
            s = harness.score(case, out)
            scores.append(s)
            detail = f"tools {out.tools}; approvals {out.approvals}"
            if s.missing_findings:
                detail += f"; missing findings {s.missing_findings}"
            if out.missing:
                detail += f"; {len(out.missing)} unrecorded tool calls"
            print(f"  {name}: {out.phase} after {out.steps} steps; {detail}", flush=True)
    finally:
        await client.close()
    return scores


def _live(
    names: list[str],
    cases: Path = harness.CASES_DIR,
    prompt_choice: dict[str, str] | None = None,
) -> int:
    api_key = os.environ["OPENAI_API_KEY"]
    spec = harness.live_model_spec()
    where = spec.baseURL or "the OpenAI API"
    print(f"eval live: model {spec.name} at {where}; tools answered from the recordings")
    scores = asyncio.run(_live_cases(names, api_key, cases, prompt_choice))
    print(harness.table(scores, f"eval live ({spec.name})"))
    return 0 if all(s.ok for s in scores) else 1


def _from_runs(args: argparse.Namespace, prompt_choice: dict[str, str] | None) -> int:
    """--live --from-runs NS: the namespace's finished runs, re-run live; without a model
    key, what it would do, and a non-zero exit."""
    spec = harness.live_model_spec()
    where = spec.baseURL or "the OpenAI API"
    prompt = view.prompt_text(prompt_choice) if prompt_choice else "each run's own"
    plan = (
        f"eval live --from-runs {args.from_runs}: would export every finished AgentRun of "
        f"namespace {args.from_runs} as a case (like kubectl agentrun export) and re-run it "
        f"against model {spec.name} at {where} with prompt {prompt}, tools answered from "
        "each run's recorded outputs and approvals from its recorded decisions, then print "
        "per run: same actions, same approval asked, findings found, steps, tokens, phase."
    )
    if not os.environ.get("OPENAI_API_KEY"):
        print(plan, file=sys.stderr)
        try:
            runs = from_runs.list_runs(args.from_runs, args.kubeconfig)
            print(f"Runs there now: {', '.join(runs) or 'none'}.", file=sys.stderr)
        except Exception as err:  # the cluster is only listed to say more
            print(f"(could not list the runs: {err})", file=sys.stderr)
        print(
            "Nothing ran: OPENAI_API_KEY is not set. Set it (and OPENAI_BASE_URL, "
            "AGENTRUN_MODEL for another endpoint or model).",
            file=sys.stderr,
        )
        return 2
    with tempfile.TemporaryDirectory(prefix="eval-from-runs-") as scratch:
        found = from_runs.write_cases(args.from_runs, args.kubeconfig, Path(scratch))
        for why in found.skipped:
            print(f"  skipped {why}")
        if not found.names:
            print(f"eval live: no finished AgentRun in namespace {args.from_runs}", file=sys.stderr)
            return 2
        return _live(found.names, Path(scratch), prompt_choice)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.eval.run", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--live", action="store_true", help="only the live mode")
    parser.add_argument("--refresh", action="store_true", help="re-record requests.json")
    parser.add_argument("--case", action="append", default=[], help="only this case")
    parser.add_argument(
        "--cases", type=Path, default=harness.CASES_DIR, help="the directory of the cases"
    )
    parser.add_argument(
        "--from-runs", metavar="NS", help="with --live: the finished AgentRuns of namespace NS"
    )
    parser.add_argument("--kubeconfig", help="with --from-runs: the cluster (default: kubectl's)")
    parser.add_argument(
        "--prompt", metavar="NAME[@VERSION]", help="live: run every case with this prompt"
    )
    args = parser.parse_args(argv)
    try:
        prompt_choice = view.parse_prompt(args.prompt) if args.prompt else None
    except view.InputError as err:
        parser.error(str(err))
    if args.from_runs:
        if not args.live:
            parser.error("--from-runs goes with --live (a recorded incident has no golden yet)")
        return _from_runs(args, prompt_choice)
    names = harness.case_names(args.cases)
    unknown = sorted(set(args.case) - set(names))
    if unknown:
        parser.error(f"unknown case(s) {unknown}; cases: {', '.join(names)}")
    names = [n for n in names if not args.case or n in args.case]
    has_key = bool(os.environ.get("OPENAI_API_KEY"))
    if args.live:
        if not has_key:
            print("eval live: OPENAI_API_KEY is not set; nothing to run", file=sys.stderr)
            return 2
        return _live(names, args.cases, prompt_choice)
    status = _replay(names, args.refresh, args.cases)
    if args.refresh:
        return status
    if not has_key:
        print(
            "\neval live: skipped, OPENAI_API_KEY is not set. Set it (and optionally "
            "OPENAI_BASE_URL and AGENTRUN_MODEL) to score a real model on these cases."
        )
        return status
    print()
    return max(status, _live(names, args.cases, prompt_choice))


if __name__ == "__main__":
    sys.exit(main())
