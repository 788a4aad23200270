"""`make eval EVAL_ARGS="--live --from-runs NS"`: the recorded incidents of a namespace as
eval cases, for re-running them against another model or prompt.

Each finished AgentRun of the namespace is exported in memory with the CLI's own export
(`kubectl agentrun export`: its input, its tools' recorded outputs, its human decisions,
its expected behaviour drafted from what happened) into a scratch directory, which the live
mode then drives like any case: same actions? same approval asked? findings found? tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from agentrun.cli import export
from agentrun.cli.main import Kube, export_case


@dataclass
class Incidents:
    names: list[str] = field(default_factory=list)  # case directories written
    skipped: list[str] = field(default_factory=list)  # runs not exportable, with why


def list_runs(namespace: str, kubeconfig: str | None) -> list[str]:
    """The names of the namespace's AgentRuns (any phase), for saying what would run."""
    kube = Kube.connect(kubeconfig, None)
    return sorted(r["metadata"]["name"] for r in kube.list_runs(namespace, None))


def write_cases(namespace: str, kubeconfig: str | None, directory: Path) -> Incidents:
    """Each finished run of the namespace as a case directory under `directory`."""
    kube = Kube.connect(kubeconfig, None)
    found = Incidents()
    runs = sorted(kube.list_runs(namespace, None), key=lambda r: r["metadata"]["name"])
    for run in runs:
        name = run["metadata"]["name"]
        try:
            case = export_case(kube, run)
        except export.ExportRefused as err:
            found.skipped.append(f"{name}: {err}")
            continue
        (directory / name).mkdir(parents=True, exist_ok=True)
        for file, text in case.files.items():
            (directory / name / file).write_text(text)
        found.names.append(name)
    return found
