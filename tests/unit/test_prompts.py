"""Prompt files: front matter, versions, sha256, errors and the shipped prompts."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from agentrun.llm.context import PROMPT_VARIABLES
from agentrun.llm.prompts import (
    PromptError,
    PromptNotFound,
    list_prompts,
    load_prompt,
    placeholders,
    prompts_dir,
    render,
)

REPO_PROMPTS = Path(__file__).resolve().parents[2] / "prompts"


def write(directory: Path, filename: str, name: str, version: str, body: str = "Body.") -> Path:
    path = directory / filename
    path.write_text(f"---\nname: {name}\nversion: {version}\ndescription: d\n---\n{body}\n")
    return path


def test_load_newest_and_pinned(tmp_path: Path) -> None:
    write(tmp_path, "triage.md", "triage", "2", "two")
    write(tmp_path, "triage.v10.md", "triage", "10", "ten")
    write(tmp_path, "triage.v9.md", "triage", "9", "nine")
    newest = load_prompt("triage", directory=tmp_path)
    assert (newest.version, newest.text) == ("10", "ten\n")
    assert load_prompt("triage", "2", directory=tmp_path).text == "two\n"


def test_sha256_is_of_the_file_bytes(tmp_path: Path) -> None:
    path = write(tmp_path, "p.md", "p", "1")
    prompt = load_prompt("p", directory=tmp_path)
    assert prompt.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert prompt.description == "d"
    assert prompt.path == path


def test_missing_prompt_names_it(tmp_path: Path) -> None:
    write(tmp_path, "p.md", "p", "1")
    with pytest.raises(PromptNotFound, match=r"prompt 'q' not found.*available: p@1"):
        load_prompt("q", directory=tmp_path)
    with pytest.raises(PromptNotFound, match=r"prompt 'p' version '7' not found"):
        load_prompt("p", "7", directory=tmp_path)
    with pytest.raises(PromptNotFound, match="missing dir"):
        load_prompt("p", directory=tmp_path / "nope")


def test_malformed_files_are_errors_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "bad.md").write_text("no front matter\n")
    with pytest.raises(PromptError, match=r"bad\.md"):
        load_prompt("x", directory=tmp_path)
    (tmp_path / "bad.md").write_text("---\nversion: 1\n---\nx\n")
    with pytest.raises(PromptError, match="needs 'name'"):
        load_prompt("x", directory=tmp_path)


def test_duplicate_version_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, "a.md", "p", "1")
    write(tmp_path, "b.md", "p", "1")
    with pytest.raises(PromptError, match="more than once"):
        load_prompt("p", directory=tmp_path)


def test_dotfiles_are_skipped(tmp_path: Path) -> None:
    (tmp_path / ".hidden.md").write_text("garbage")
    write(tmp_path, "p.md", "p", "1")
    assert [p.name for p in list_prompts(tmp_path)] == ["p"]


def test_env_selects_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTRUN_PROMPTS_DIR", str(tmp_path))
    assert prompts_dir() == tmp_path
    monkeypatch.delenv("AGENTRUN_PROMPTS_DIR")
    assert prompts_dir() == REPO_PROMPTS


def test_render_is_substitution_only() -> None:
    text = "Hi {{ run.name }}, {{run.name}}! {{ __import__('os') }} {{ other }}"
    out = render(text, {"run.name": "{{ other }}", "other": "o"})
    # Values are not re-rendered; expressions are not placeholders at all.
    assert out == "Hi {{ other }}, {{ other }}! {{ __import__('os') }} o"
    assert placeholders(text) == {"run.name", "other"}


def test_shipped_prompts_parse_and_use_known_variables() -> None:
    shipped = list_prompts(REPO_PROMPTS)
    assert shipped
    for prompt in shipped:
        assert placeholders(prompt.text) <= PROMPT_VARIABLES, prompt.path


def test_sre_agent_prompt_v2() -> None:
    prompt = load_prompt("sre-agent", directory=REPO_PROMPTS)
    assert prompt.version == "2"
    text = prompt.text.lower()
    for phrase in (
        "read tools",
        "write tool",
        "approve",
        "`done`",
        "root cause",
        "evidence",
        "one write tool alone",
        "run together",
        "untrusted",
    ):
        assert phrase in text, phrase
