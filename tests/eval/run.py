"""`make eval`: the regression suite of real alerts (see docs/eval.md).

    python -m tests.eval.run                  replay every case (deterministic, no network);
                                              then the live mode if OPENAI_API_KEY is set
    python -m tests.eval.run --live           only the live mode (needs OPENAI_API_KEY)
    python -m tests.eval.run --refresh        re-record every case's requests.json
    python -m tests.eval.run --case NAME      only this case (repeatable)
    python -m tests.eval.run --cases DIR      the cases under DIR (default tests/eval/cases)

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
from pathlib import Path

from agentrun.engine.policy import Policy
from agentrun.llm.model import DEFAULT_BASE_URL, ModelClient

from . import harness


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
    names: list[str], api_key: str, cases: Path = harness.CASES_DIR
) -> list[harness.Score]:
    spec = harness.live_model_spec()
    # Whoever runs the eval picked the endpoint: it is the one allowed.
    client = ModelClient(Policy(model_urls=(spec.baseURL or DEFAULT_BASE_URL,)))
    scores = []
    try:
        for name in names:
            case = harness.load_case(name, cases)
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


def _live(names: list[str], cases: Path = harness.CASES_DIR) -> int:
    api_key = os.environ["OPENAI_API_KEY"]
    spec = harness.live_model_spec()
    where = spec.baseURL or "the OpenAI API"
    print(f"eval live: model {spec.name} at {where}; tools answered from the recordings")
    scores = asyncio.run(_live_cases(names, api_key, cases))
    print(harness.table(scores, f"eval live ({spec.name})"))
    return 0 if all(s.ok for s in scores) else 1


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
    args = parser.parse_args(argv)
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
        return _live(names, args.cases)
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
    return max(status, _live(names, args.cases))


if __name__ == "__main__":
    sys.exit(main())
