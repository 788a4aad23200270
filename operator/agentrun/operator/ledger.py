"""What this process knows of tool Jobs, shared by observe (which reads it) and execute.

Nothing here is needed to resume after a restart: a Job whose uid is not known is checked
against the manifest built from the run's frozen snapshot before its result is taken, and a
run whose Job is not known steps on the Job's own watch events through its ownerReference.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Key = tuple[str, str]  # (namespace, Job name)


@dataclass
class JobLedger:
    # The uid of each tool Job this process created or verified: a result is taken only from
    # that Job's own pod; a Job or pod made by someone else under the name is refused.
    uids: dict[Key, str] = field(default_factory=dict)
    # The run of each tool Job created or observed: a tool pod that succeeded steps its run
    # at once, without waiting for the Job's Complete condition.
    runs: dict[Key, str] = field(default_factory=dict)
    # Jobs whose create found one of the name already there (filled in worker threads).
    existed: set[Key] = field(default_factory=set)
    # Each tool Job's uid and status as the watch last delivered them: a step reads its Job
    # from here instead of a GET (one only for a Job of a known uid, so nothing unverified).
    states: dict[Key, tuple[str, dict[str, Any]]] = field(default_factory=dict)

    def uid(self, namespace: str, job: str) -> str | None:
        return self.uids.get((namespace, job))

    def verified(self, namespace: str, job: str, uid: str) -> None:
        self.uids[(namespace, job)] = uid

    def exists(self, namespace: str, run: str, job: str) -> None:
        self.runs[(namespace, job)] = run

    def run_of(self, namespace: str, job: str) -> str | None:
        return self.runs.get((namespace, job))

    def gone(self, namespace: str, job: str) -> None:
        self.runs.pop((namespace, job), None)
        self.uids.pop((namespace, job), None)
        self.states.pop((namespace, job), None)

    def watched(self, namespace: str, body: dict[str, Any]) -> None:
        """A watch event of a tool Job: its uid and the status fields a step reads."""
        meta, status = body.get("metadata") or {}, body.get("status") or {}
        kept = {k: status[k] for k in ("conditions", "startTime", "completionTime") if k in status}
        self.states[(namespace, str(meta.get("name") or ""))] = (str(meta.get("uid") or ""), kept)

    def state(self, namespace: str, job: str) -> dict[str, Any] | None:
        """The Job as last watched, if it is the one of the known uid (else None: GET it)."""
        known, watched = self.uids.get((namespace, job)), self.states.get((namespace, job))
        if known is None or watched is None or watched[0] != known:
            return None
        return {"metadata": {"name": job, "uid": known}, "status": watched[1]}

    def found_existing(self, namespace: str, job: str) -> None:
        self.existed.add((namespace, job))

    def take_existed(self, namespace: str, job: str) -> bool:
        """Whether a create of this Job found it already there (asked once)."""
        if (namespace, job) in self.existed:
            self.existed.discard((namespace, job))
            return True
        return False
