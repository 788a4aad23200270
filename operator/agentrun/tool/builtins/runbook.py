"""runbook: the runbook for an alert, from a directory of Markdown files and/or a ConfigMap.

A runbook is Markdown with YAML front matter naming the alerts it covers:

    ---
    alerts: [KubePodCrashLooping]
    title: A pod is crash looping
    ---
    One paragraph on what the alert means.
    ## Diagnosis
    ...
    ## Mitigation
    ...

Sources, from the tool's settings only (its AgentTool env, owned by a tool-admin): the
directory AGENTRUN_RUNBOOKS_DIR (default: tools/runbooks in the repository, when present) and
the ConfigMap AGENTRUN_RUNBOOKS_CONFIGMAP in the run's namespace (each `*.md` key one
runbook). The ConfigMap wins over the directory for the same alert: it is the cluster's own.
The model names an alert, never a source: the alert is matched against the runbooks read,
not used as a path, so no argument reaches a file outside the directory or another object.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

from .common import ToolError, api_path, arguments, clip, get_object, namespace_of

ARGUMENTS = frozenset({"alert", "section"})
TYPES: dict[str, type | tuple[type, ...]] = {"alert": str, "section": str}
DIR_ENV, CONFIGMAP_ENV = "AGENTRUN_RUNBOOKS_DIR", "AGENTRUN_RUNBOOKS_CONFIGMAP"
REPO_RUNBOOKS = Path(__file__).resolve().parents[4] / "tools" / "runbooks"
SECTION_ORDER = ("diagnosis", "mitigation")
MAX_SECTION_CHARS = 6000
MAX_RUNBOOK_FILES = 500
FRONT_MATTER = re.compile(r"\A---\s*\n(.*?)\n---\s*(\n|\Z)", re.S)
HEADING = re.compile(r"^##\s+(.+?)\s*#*\s*$", re.M)


def run(args: dict[str, Any]) -> Any:
    arguments(args, TYPES, {"alert"})  # an unknown argument (e.g. a `configMap`) is refused
    alert = str(args["alert"]).strip()
    section = str(args.get("section") or "").strip().lower() or None
    if section and section not in (*SECTION_ORDER, "all"):
        raise ToolError("section must be Diagnosis, Mitigation or all")
    books: list[dict[str, Any]] = []
    notes: list[str] = []
    configmap = os.environ.get(CONFIGMAP_ENV, "").strip()
    if configmap:
        namespace = namespace_of({})
        cm = get_object(
            api_path("v1", "configmaps", namespace, str(configmap)),
            f"runbook ConfigMap {configmap} in namespace {namespace}",
        )
        for key, text in sorted((cm.get("data") or {}).items()):
            if key.endswith((".md", ".markdown")):
                books.append(parse(str(text), f"configmap/{configmap}/{key}"))
    directory = runbooks_dir()
    if directory is not None:
        for path in sorted(directory.glob("*.md"))[:MAX_RUNBOOK_FILES]:
            try:
                text = path.read_text(encoding="utf-8")
                books.append(parse(text, f"{directory.name}/{path.name}"))
            except (OSError, UnicodeDecodeError) as exc:
                notes.append(f"skipped {path.name}: {exc}")
    elif not configmap:
        raise ToolError(
            f"no runbooks configured: a tool-admin sets {DIR_ENV} or {CONFIGMAP_ENV} in the "
            "AgentTool's env"
        )
    return lookup(books, alert, section, notes)


def runbooks_dir() -> Path | None:
    configured = os.environ.get(DIR_ENV)
    path = Path(configured) if configured else REPO_RUNBOOKS
    return path if path.is_dir() else None


# ---------------------------------------------------------------- pure parts


def parse(text: str, source: str) -> dict[str, Any]:
    """Front matter, the text before the first section, and the `## ` sections."""
    meta: dict[str, Any] = {}
    m = FRONT_MATTER.match(text)
    if m:
        try:
            loaded = yaml.safe_load(m.group(1))
        except yaml.YAMLError:
            loaded = None
        meta = loaded if isinstance(loaded, dict) else {}
        text = text[m.end() :]
    alerts = meta.get("alerts") or meta.get("alert") or []
    if isinstance(alerts, str):
        alerts = [alerts]
    headings = list(HEADING.finditer(text))
    intro = text[: headings[0].start()] if headings else text
    intro = re.sub(r"^#\s+.*$", "", intro, count=1, flags=re.M).strip()  # the H1 title
    sections = []
    for i, h in enumerate(headings):
        end = headings[i + 1].start() if i + 1 < len(headings) else len(text)
        sections.append({"title": h.group(1), "text": text[h.end() : end].strip()})
    title_match = re.search(r"^#\s+(.+)$", text, re.M)
    return {
        "source": source,
        "alerts": [str(a) for a in alerts],
        "title": str(meta.get("title") or (title_match.group(1) if title_match else "")),
        "severity": meta.get("severity"),
        "summary": intro,
        "sections": sections,
        "stem": source.rsplit("/", 1)[-1].rsplit(".", 1)[0],
    }


def score(book: dict[str, Any], alert: str) -> int:
    """3: named in the front matter; 2: the file is named after it; 0: no match."""
    wanted = alert.lower()
    if any(a.lower() == wanted for a in book["alerts"]):
        return 3
    if book["stem"].lower() == wanted:
        return 2
    return 0


def order_sections(sections: list[dict[str, Any]], section: str | None) -> list[dict[str, Any]]:
    """Diagnosis first, then Mitigation, then the rest; or only the one asked for."""

    def rank(s: dict[str, Any]) -> int:
        title = s["title"].strip().lower()
        for i, name in enumerate(SECTION_ORDER):
            if title.startswith(name):
                return i
        return len(SECTION_ORDER)

    ordered = sorted(sections, key=rank)  # stable: the file's order among equals
    if section in SECTION_ORDER:
        ordered = [s for s in ordered if s["title"].strip().lower().startswith(str(section))]
    return [{"title": s["title"], "text": clip(s["text"], MAX_SECTION_CHARS)} for s in ordered]


def lookup(
    books: list[dict[str, Any]], alert: str, section: str | None, notes: list[str]
) -> dict[str, Any]:
    scored = [(score(b, alert), i, b) for i, b in enumerate(books)]
    matches = [(s, i, b) for s, i, b in scored if s > 0]
    if not matches:
        known = sorted({a for b in books for a in (b["alerts"] or [b["stem"]])})
        raise ToolError(
            f"no runbook for alert {alert!r}; runbooks exist for: {known[:50]}"
            + (f" (and {len(known) - 50} more)" if len(known) > 50 else "")
        )
    # Best match first; at equal score the ConfigMap (read first) before the directory.
    matches.sort(key=lambda m: (-m[0], m[1]))
    best = matches[0][2]
    sections = order_sections(best["sections"], section)
    out: dict[str, Any] = {
        "alert": alert,
        "title": best["title"] or None,
        "source": best["source"],
        "severity": best["severity"],
        "summary": clip(best["summary"], 1500) or None,
        "sections": sections,
    }
    if section in SECTION_ORDER and not sections:
        out["note"] = f"the runbook has no {section} section"
    others = [m[2]["source"] for m in matches[1:]]
    if others:
        out["otherRunbooks"] = others
    if notes:
        out["warnings"] = notes
    return {k: v for k, v in out.items() if v is not None}
