"""runbook: the runbook for an alert, from a tree of Markdown files, a ConfigMap, or the
alert's own runbook_url.

Runbooks are kept as teams keep them: a directory tree of any depth (for example a checkout
of the public collection kube-prometheus alerts link to, `content/runbooks/<component>/
<AlertName>.md`, Hugo front matter with `title` and `weight`), or a team's own files whose
front matter lists the alerts they cover:

    ---
    alerts: [KubePodCrashLooping]
    title: A pod is crash looping
    ---
    # KubePodCrashLooping
    One paragraph on what the alert means.
    ## Diagnosis
    ...
    ## Mitigation
    ...

A file matches an alert by the front matter's alert list, by its H1, or by its file name,
case-insensitively; `_index.md` section pages (and a README) only by the front matter.

Sources, from the tool's settings only (its AgentTool env, owned by a tool-admin): the
directory AGENTRUN_RUNBOOKS_DIR (default: tools/runbooks in the repository, when present) and
the ConfigMap AGENTRUN_RUNBOOKS_CONFIGMAP in the run's namespace (each `*.md` key one
runbook). A match in the ConfigMap wins over the directory: it is the cluster's own.

The alert's `runbook_url` annotation is read from the run itself (the tool reads its own
AgentRun, AGENTRUN_RUN), never from an argument: the model names an alert, never a URL or a
source. The URL is first mapped onto the directory (the file whose path ends like the URL's,
e.g. .../runbooks/kubernetes/kubepodcrashlooping -> kubernetes/KubePodCrashLooping.md),
which then wins over a match by name. Only when nothing local matches is it fetched, and only
when it is under a base URL the operator allows (AGENTRUN_ALLOWED_RUNBOOK_URLS, put into the
tool's env by the operator from its own settings): no redirect leaves the allow-list, the
body is bounded, HTML is reduced to text, and the runner redacts the output like any other.
"""

from __future__ import annotations

import os
import re
import urllib.error
import urllib.request
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from agentrun.engine.policy import ENV_RUNBOOK_URLS, url_allowed

from .common import (
    ToolError,
    api_error,
    api_path,
    arguments,
    clip,
    get_object,
    namespace_of,
    request,
)

ARGUMENTS = frozenset({"alert", "section"})
TYPES: dict[str, type | tuple[type, ...]] = {"alert": str, "section": str}
DIR_ENV, CONFIGMAP_ENV = "AGENTRUN_RUNBOOKS_DIR", "AGENTRUN_RUNBOOKS_CONFIGMAP"
URLS_ENV = ENV_RUNBOOK_URLS
REPO_RUNBOOKS = Path(__file__).resolve().parents[4] / "tools" / "runbooks"
SECTION_ORDER = ("diagnosis", "mitigation")
SUMMARY_SECTION = "meaning"  # the public collection's first section says what the alert means
MAX_SECTION_CHARS = 6000
MAX_RUNBOOK_FILES = 2000
MAX_WALKED_DIRS = 2000
MAX_FILE_BYTES = 256 * 1024
MAX_FETCH_BYTES = 512 * 1024
FETCH_TIMEOUT_SECONDS = 10
MAX_REDIRECTS = 3
MAX_ALERT_URLS = 3
EXTENSIONS = (".md", ".markdown")
INDEX = "_index"
# Files of a tree that are about the tree, not an alert: never matched by their name.
NOT_RUNBOOKS = frozenset({INDEX, "index", "readme", "contributing", "changelog", "license"})
FRONT_MATTER = re.compile(r"\A---\s*\n(.*?)\n---\s*(\n|\Z)", re.S)
HEADING = re.compile(r"^##\s+(.+?)\s*#*\s*$", re.M)
TITLE = re.compile(r"^#\s+(.+?)\s*#*\s*$", re.M)
DETAILS_TAGS = re.compile(r"^\s*</?(details|summary)>\s*$|</?(details|summary)>", re.M)
# Where a match came from: the cluster's ConfigMap first, then the directory, then the web.
ORIGINS = ("configmap", "dir", "url")
# How a file matched, best first (a runbook_url mapped onto the tree counts most).
BY_URL, BY_FRONT_MATTER, BY_H1, BY_FILE_NAME = 5, 4, 3, 2
MATCHED_BY = {
    BY_FRONT_MATTER: "front matter alerts",
    BY_H1: "H1",
    BY_FILE_NAME: "file name",
}


def run(args: dict[str, Any]) -> Any:
    arguments(args, TYPES, {"alert"})  # an unknown argument (e.g. a `configMap`) is refused
    alert = str(args["alert"]).strip()
    section = str(args.get("section") or "").strip().lower() or None
    if section and section not in (*SECTION_ORDER, "all"):
        raise ToolError("section must be Diagnosis, Mitigation or all")
    notes: list[str] = []
    books: list[dict[str, Any]] = []
    configmap = os.environ.get(CONFIGMAP_ENV, "").strip()
    if configmap:
        books += read_configmap(configmap)
    directory = runbooks_dir()
    if directory is not None:
        books += read_tree(directory, notes)
    urls = alert_urls(alert, notes)
    allowed = tuple(u.strip() for u in os.environ.get(URLS_ENV, "").split(",") if u.strip())
    if not configmap and directory is None and not urls:
        raise ToolError(
            f"no runbooks configured: a tool-admin sets {DIR_ENV} or {CONFIGMAP_ENV} in the "
            "AgentTool's env (chart value tools.env.runbook), or the alert carries a "
            "runbook_url under the operator's allowed runbook URLs"
        )
    try:
        return lookup(books, alert, section, notes, urls)
    except NoRunbook as missing:
        fetchable = [u for u in urls if url_allowed(u, allowed)]
        if not fetchable:
            raise ToolError(str(missing) + refused_urls(urls, allowed)) from None
        book = fetch(fetchable[0], allowed)
        return lookup([book], alert, section, notes, urls, fetched=True)


def runbooks_dir() -> Path | None:
    configured = os.environ.get(DIR_ENV)
    path = Path(configured) if configured else REPO_RUNBOOKS
    return path if path.is_dir() else None


# ---------------------------------------------------------------- sources


def read_configmap(name: str) -> list[dict[str, Any]]:
    namespace = namespace_of({})
    cm = get_object(
        api_path("v1", "configmaps", namespace, name),
        f"runbook ConfigMap {name} in namespace {namespace}",
    )
    return [
        parse(str(text), f"configmap/{name}/{key}", key, origin="configmap")
        for key, text in sorted((cm.get("data") or {}).items())
        if key.endswith(EXTENSIONS)
    ]


def markdown_files(directory: Path, notes: list[str]) -> list[Path]:
    """Every Markdown file under directory, any depth, in a stable order; hidden directories
    (.git of a checkout) and symlinked directories are not entered; bounded."""
    found: list[Path] = []
    for walked, (top, dirs, files) in enumerate(os.walk(directory), start=1):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(top) / f for f in sorted(files) if f.endswith(EXTENSIONS)]
        if len(found) >= MAX_RUNBOOK_FILES or walked >= MAX_WALKED_DIRS:
            notes.append(f"stopped reading {directory.name} after {len(found)} files")
            break
    return found[:MAX_RUNBOOK_FILES]


def read_tree(directory: Path, notes: list[str]) -> list[dict[str, Any]]:
    books = []
    for path in markdown_files(directory, notes):
        rel = path.relative_to(directory).as_posix()
        try:
            if path.stat().st_size > MAX_FILE_BYTES:
                notes.append(f"skipped {rel}: over {MAX_FILE_BYTES} bytes")
                continue
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            notes.append(f"skipped {rel}: {exc}")
            continue
        books.append(parse(text, f"{directory.name}/{rel}", rel))
    return books


def alert_urls(alert: str, notes: list[str]) -> list[str]:
    """The runbook_url annotations of the run's alerts named `alert`, read from the run
    itself (AGENTRUN_RUN): the alert's sender set them, the model never does."""
    name, namespace = os.environ.get("AGENTRUN_RUN"), os.environ.get("AGENTRUN_NAMESPACE")
    if not name or not namespace:
        return []
    try:
        body = request("GET", api_path("agentrun.dev/v1alpha1", "agentruns", namespace, name))
    except ApiException as exc:
        if exc.status != 404:  # a run deleted meanwhile has nothing to say
            error = api_error(exc, f"AgentRun {name}")
            notes.append(f"the alert's runbook_url was not consulted: {error}")
        return []
    except (ConfigException, OSError, ValueError, ToolError) as exc:
        notes.append(f"the alert's runbook_url was not consulted: {exc}")
        return []
    return urls_of(body, alert)


def urls_of(run: dict[str, Any], alert: str) -> list[str]:
    context = (((run.get("spec") or {}).get("input") or {}).get("context")) or {}
    alerts = [context.get("alert"), *(context.get("alerts") or [])]
    urls: list[str] = []
    for a in alerts:
        if not isinstance(a, dict):
            continue
        labels, annotations = a.get("labels") or {}, a.get("annotations") or {}
        if str(labels.get("alertname", "")).lower() != alert.lower():
            continue
        url = str(annotations.get("runbook_url") or "").strip()
        if url.startswith(("http://", "https://")) and url not in urls:
            urls.append(url)
    return urls[:MAX_ALERT_URLS]


def refused_urls(urls: list[str], allowed: tuple[str, ...]) -> str:
    if not urls:
        return ""
    where = f"({', '.join(allowed)})" if allowed else "(none are allowed)"
    return (
        f"; the alert's runbook_url {urls[0]} matches no file here and is not under the "
        f"runbook URLs the operator allows {where}: a platform admin sets them (chart value "
        "runbooks.allowedURLs), or mounts the collection and sets " + DIR_ENV
    )


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to another allowed URL, at most MAX_REDIRECTS times."""

    def __init__(self, allowed: tuple[str, ...]) -> None:
        self.allowed = allowed
        self.count = 0

    def redirect_request(
        self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str
    ) -> Any:
        self.count += 1
        if self.count > MAX_REDIRECTS or not url_allowed(newurl, self.allowed):
            raise ToolError(
                f"runbook_url {req.full_url} redirects (HTTP {code}) to a URL that is not "
                "allowed; nothing was read from it"
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def fetch(url: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    """GET of an allowed runbook_url: bounded, no redirect off the allow-list, Markdown or
    text as is, HTML reduced to its text with its headings as Markdown headings."""
    if not url_allowed(url, allowed):  # checked by the caller too; never fetch otherwise
        raise ToolError(f"runbook_url {url} is not allowed")
    opener = urllib.request.build_opener(_Redirects(allowed))
    req = urllib.request.Request(
        url,
        headers={
            "Accept": "text/markdown, text/plain;q=0.9, text/html;q=0.8",
            "User-Agent": "agentrun-tool runbook",
        },
    )
    try:
        with opener.open(req, timeout=FETCH_TIMEOUT_SECONDS) as resp:
            content_type = str(resp.headers.get("Content-Type") or "").lower()
            charset = resp.headers.get_content_charset() or "utf-8"
            raw = resp.read(MAX_FETCH_BYTES + 1)
    except urllib.error.HTTPError as exc:
        raise ToolError(f"runbook_url {url} answered HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ToolError(f"runbook_url {url} could not be fetched: {reason}") from None
    cut = len(raw) > MAX_FETCH_BYTES
    text = raw[:MAX_FETCH_BYTES].decode(charset, errors="replace")
    if "html" in content_type:
        text = html_text(text)
    elif content_type and not content_type.startswith(("text/", "application/markdown")):
        raise ToolError(
            f"runbook_url {url} answered Content-Type {content_type}; only Markdown, text or "
            "HTML is read"
        )
    book = parse(text, url, urlsplit(url).path, origin="url")
    if cut:
        book["cut"] = f"the page is over {MAX_FETCH_BYTES} bytes; only the start was read"
    return book


class _HtmlText(HTMLParser):
    """An HTML page as Markdown-ish text: headings as #/##, list items as -, the <article>
    or <main> alone when the page has one (a docs site's navigation is noise)."""

    SKIP = frozenset({"script", "style", "nav", "header", "footer", "aside", "svg", "noscript"})
    BLOCK = frozenset({"p", "div", "br", "tr", "pre", "ul", "ol", "table", "section", "li"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.all: list[str] = []
        self.main: list[str] = []
        self.skipping = 0
        self.in_main = 0

    def _out(self, text: str) -> None:
        if self.skipping:
            return
        self.all.append(text)
        if self.in_main:
            self.main.append(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIP:
            self.skipping += 1
        elif tag in ("article", "main"):
            self.in_main += 1
        elif re.fullmatch(r"h[1-6]", tag):
            self._out("\n\n" + "#" * min(int(tag[1]), 2) + " ")
        elif tag == "li":
            self._out("\n- ")
        elif tag in self.BLOCK:
            self._out("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP:
            self.skipping = max(0, self.skipping - 1)
        elif tag in ("article", "main"):
            self.in_main = max(0, self.in_main - 1)
        elif re.fullmatch(r"h[1-6]", tag) or (tag in self.BLOCK and tag != "li"):
            self._out("\n")

    def handle_data(self, data: str) -> None:
        self._out(data)


def html_text(html: str) -> str:
    parser = _HtmlText()
    parser.feed(html)
    parser.close()
    text = "".join(parser.main if "".join(parser.main).strip() else parser.all)
    lines = [re.sub(r"[ \t]+", " ", line).strip() for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


# ---------------------------------------------------------------- pure parts


def _segments(path: str) -> list[str]:
    """Path segments, lower case, without an extension or a trailing index page."""
    parts = [p for p in path.lower().split("/") if p]
    if parts and parts[-1] in ("index.html", "index.htm", "index.md", "_index.md"):
        parts.pop()
    if parts:
        parts[-1] = re.sub(r"\.(md|markdown|html?)$", "", parts[-1])
    return parts


def parse(
    text: str, source: str, relpath: str | None = None, origin: str = "dir"
) -> dict[str, Any]:
    """Front matter, the H1, the text before the first section, and the `## ` sections."""
    meta: dict[str, Any] = {}
    m = FRONT_MATTER.match(text)
    if m:
        try:
            loaded = yaml.safe_load(m.group(1))
        except yaml.YAMLError:
            loaded = None
        meta = loaded if isinstance(loaded, dict) else {}
        text = text[m.end() :]
    text = DETAILS_TAGS.sub("", text)
    alerts = meta.get("alerts") or meta.get("alert") or []
    if isinstance(alerts, str):
        alerts = [alerts]
    headings = list(HEADING.finditer(text))
    intro = text[: headings[0].start()] if headings else text
    title_match = TITLE.search(intro)
    intro = TITLE.sub("", intro, count=1).strip()
    sections = []
    for i, h in enumerate(headings):
        end = headings[i + 1].start() if i + 1 < len(headings) else len(text)
        sections.append({"title": h.group(1), "text": text[h.end() : end].strip()})
    stem = source.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    h1 = title_match.group(1).strip() if title_match else ""
    return {
        "source": source,
        "origin": origin,
        "path": _segments(relpath if relpath is not None else stem),
        "alerts": [str(a) for a in alerts if a],
        "h1": h1,
        "title": str(meta.get("title") or h1),
        "severity": meta.get("severity"),
        "summary": intro,
        "sections": sections,
        "stem": stem,
    }


def url_suffix(book: dict[str, Any], url: str) -> int:
    """How many trailing path segments the book's path shares with the URL's (0: none)."""
    if book["stem"].lower() in NOT_RUNBOOKS or book["origin"] == "url":
        return 0
    ours, theirs = book["path"], _segments(urlsplit(url).path)
    n = 0
    while n < min(len(ours), len(theirs)) and ours[-1 - n] == theirs[-1 - n]:
        n += 1
    return n


def score(book: dict[str, Any], alert: str, urls: list[str] | tuple[str, ...] = ()) -> int:
    """BY_URL: the alert's runbook_url maps onto the file; BY_FRONT_MATTER: named in the front
    matter; BY_H1: the H1 is the alert's name; BY_FILE_NAME: the file is named after it."""
    wanted = alert.lower()
    if any(url_suffix(book, u) for u in urls):
        return BY_URL
    if any(a.lower() == wanted for a in book["alerts"]):
        return BY_FRONT_MATTER
    if book["stem"].lower() in NOT_RUNBOOKS:
        return 0
    if book["h1"].lower() == wanted:
        return BY_H1
    return BY_FILE_NAME if book["stem"].lower() == wanted else 0


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


class NoRunbook(ToolError):
    """No runbook matched the alert."""


def _known(books: list[dict[str, Any]]) -> list[str]:
    names = set()
    for b in books:
        if b["alerts"]:
            names.update(b["alerts"])
        elif b["stem"].lower() not in NOT_RUNBOOKS:
            names.add(b["h1"] if re.fullmatch(r"[A-Za-z][\w:-]*", b["h1"]) else b["stem"])
    return sorted(names)


def lookup(
    books: list[dict[str, Any]],
    alert: str,
    section: str | None,
    notes: list[str],
    urls: list[str] | tuple[str, ...] = (),
    *,
    fetched: bool = False,
) -> dict[str, Any]:
    scored = [(score(b, alert, urls), i, b) for i, b in enumerate(books)]
    matches = [(s, i, b) for s, i, b in scored if s > 0 or fetched]
    if not matches:
        known = _known(books)
        raise NoRunbook(
            f"no runbook for alert {alert!r}; runbooks exist for: {known[:50]}"
            + (f" (and {len(known) - 50} more)" if len(known) > 50 else "")
        )

    # The cluster's ConfigMap before the directory; then the best match, then the longest
    # runbook_url path in common, then the order read.
    def key(m: tuple[int, int, dict[str, Any]]) -> tuple[int, int, int, int]:
        s, i, b = m
        suffix = max((url_suffix(b, u) for u in urls), default=0)
        return (ORIGINS.index(b["origin"]), -s, -suffix, i)

    matches.sort(key=key)
    best_score, _, best = matches[0]
    sections = list(best["sections"])
    summary = best["summary"]
    meaning = [s for s in sections if s["title"].strip().lower() == SUMMARY_SECTION]
    if not summary and meaning:
        summary = meaning[0]["text"]
        sections = [s for s in sections if s is not meaning[0]]
    sections = order_sections(sections, section)
    if fetched:
        how = f"runbook_url {best['source']} (fetched)"
    elif best_score == BY_URL:
        url = next(u for u in urls if url_suffix(best, u))
        how = f"runbook_url {url}"
    else:
        how = MATCHED_BY[best_score]
    out: dict[str, Any] = {
        "alert": alert,
        "title": best["title"] or None,
        "source": best["source"],
        "matchedBy": how,
        "severity": best["severity"],
        "summary": clip(summary, 1500) or None,
        "sections": sections,
    }
    if section in SECTION_ORDER and not sections:
        out["note"] = f"the runbook has no {section} section"
    others = [m[2]["source"] for m in matches[1:]]
    if others:
        out["otherRunbooks"] = others
    warnings = [*notes, *([best["cut"]] if best.get("cut") else [])]
    if warnings:
        out["warnings"] = warnings
    return {k: v for k, v in out.items() if v is not None}
