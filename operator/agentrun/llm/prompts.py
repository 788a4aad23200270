"""Versioned prompt templates: prompts/<file>.md with YAML front matter, reviewed like code.

A file's front matter (name, version, description) is the source of truth, so several
versions of one prompt can live side by side (sre-agent.md, sre-agent.v2.md, ...). The
sha256 of the file bytes goes into the run's status (promptRef) so a run records exactly
which text it was given.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

ENV_DIR = "AGENTRUN_PROMPTS_DIR"
# {{ run.name }}: dotted names only, so a template can never evaluate anything.
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_.]*)\s*\}\}")
_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|\Z)", re.DOTALL)


class PromptError(Exception):
    """A prompt is missing or malformed; the message names it."""


class PromptNotFound(PromptError):
    pass


@dataclass(frozen=True)
class Prompt:
    name: str
    version: str
    text: str
    sha256: str
    description: str = ""
    path: Path | None = None


def prompts_dir() -> Path:
    """$AGENTRUN_PROMPTS_DIR, else the repository's top-level prompts/ (a source checkout)."""
    env = os.environ.get(ENV_DIR)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "prompts"


def parse_prompt(data: bytes, source: str = "<prompt>") -> Prompt:
    """Parses one prompt file's bytes (front matter + body)."""
    try:
        raw = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise PromptError(f"prompt file {source} is not UTF-8: {e}") from None
    match = _FRONT_MATTER.match(raw)
    if match is None:
        raise PromptError(f"prompt file {source} has no YAML front matter (--- ... ---)")
    try:
        meta = yaml.safe_load(match.group(1)) or {}
    except yaml.YAMLError as e:
        raise PromptError(f"prompt file {source} has invalid front matter: {e}") from None
    if not isinstance(meta, dict) or not meta.get("name") or meta.get("version") is None:
        raise PromptError(f"prompt file {source} front matter needs 'name' and 'version'")
    return Prompt(
        name=str(meta["name"]),
        version=str(meta["version"]),  # YAML reads `version: 1` as an int
        text=raw[match.end() :].strip() + "\n",
        sha256=hashlib.sha256(data).hexdigest(),
        description=str(meta.get("description") or ""),
    )


# path -> (inode, mtime, size) and the prompt parsed from it: every model step resolves its
# prompt, and a stat is much cheaper than reading and parsing the front matter again.
_PARSED: dict[Path, tuple[tuple[int, int, int], Prompt]] = {}


def _parsed(path: Path) -> Prompt:
    st = path.stat()
    key = (st.st_ino, st.st_mtime_ns, st.st_size)
    hit = _PARSED.get(path)
    if hit is not None and hit[0] == key:
        return hit[1]
    prompt = parse_prompt(path.read_bytes(), str(path))
    _PARSED[path] = (key, prompt)
    return prompt


def list_prompts(directory: Path | None = None) -> list[Prompt]:
    """Every prompt file in the directory; a malformed file raises, naming the file."""
    base = directory if directory is not None else prompts_dir()
    if not base.is_dir():
        return []
    found = []
    # ConfigMap mounts add hidden ..data entries: skip dotfiles.
    for path in sorted(base.glob("*.md")):
        if path.name.startswith(".") or not path.is_file():
            continue
        prompt = _parsed(path)
        found.append(
            Prompt(
                prompt.name, prompt.version, prompt.text, prompt.sha256, prompt.description, path
            )
        )
    return found


def _version_key(version: str) -> tuple[tuple[int, int, str], ...]:
    # "10" > "9" and "1.10" > "1.9"; non-numeric parts compare as text after numbers.
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"[.\-]", version))


def load_prompt(name: str, version: str | None = None, directory: Path | None = None) -> Prompt:
    """The prompt with this name: the pinned version, or the newest one when version is None."""
    base = directory if directory is not None else prompts_dir()
    candidates = [p for p in list_prompts(base) if p.name == name]
    if version is not None:
        candidates = [p for p in candidates if p.version == str(version)]
    if not candidates:
        wanted = f"prompt {name!r}" + (f" version {version!r}" if version is not None else "")
        available = ", ".join(sorted(f"{p.name}@{p.version}" for p in list_prompts(base)))
        where = f"{base} (set ${ENV_DIR} to change)" if base.is_dir() else f"missing dir {base}"
        raise PromptNotFound(f"{wanted} not found in {where}; available: {available or 'none'}")
    best = max(candidates, key=lambda p: _version_key(p.version))
    if sum(p.version == best.version for p in candidates) > 1:
        raise PromptError(f"prompt {name!r} version {best.version!r} is defined more than once")
    return best


def placeholders(text: str) -> set[str]:
    return set(_PLACEHOLDER.findall(text))


def render(text: str, values: Mapping[str, str]) -> str:
    """Substitutes {{ name }} placeholders; unknown ones are left as they are (tests check
    that shipped prompts only use known names, see PROMPT_VARIABLES in context.py)."""
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), text)
