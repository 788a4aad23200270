"""policy.py: what an admin allows tools to run and where data may go (pure)."""

from __future__ import annotations

import pytest

from agentrun.api import AgentToolSpec, Effect
from agentrun.engine.policy import Policy, PolicyError, snapshot, url_allowed


def spec(**kw: object) -> AgentToolSpec:
    return AgentToolSpec.model_validate({"description": "d", "effect": "read", **kw})


def test_defaults_resolve_to_the_tool_image_and_the_read_service_account() -> None:
    snap = snapshot("k8s-get", spec(), Policy(tool_image="img:1"))
    assert (snap.image, snap.command, snap.serviceAccountName) == (
        "img:1",
        ["agentrun-tool"],
        "agentrun-tool-read",
    )
    assert snap.effect is Effect.READ and len(snap.specDigest) == 64


def test_an_image_outside_the_allow_list_is_refused() -> None:
    with pytest.raises(PolicyError, match="evil/exfil:1"):
        snapshot("k8s-get", spec(image="evil/exfil:1"), Policy())
    allowed = Policy(allowed_images=("registry.corp/tools/*",))
    assert snapshot("x", spec(image="registry.corp/tools/a:1"), allowed).image.endswith("a:1")


def test_a_read_tool_cannot_name_the_write_service_account_nor_any_other() -> None:
    with pytest.raises(PolicyError, match="agentrun-tool-write"):
        snapshot("k8s-get", spec(serviceAccountName="agentrun-tool-write"), Policy())
    with pytest.raises(PolicyError, match="default"):
        snapshot("k8s-get", spec(serviceAccountName="default"), Policy())


def test_write_builtins_are_writes_whatever_the_spec_says() -> None:
    for name in ("rollout-restart", "rollout-undo", "scale", "delete-pod"):
        assert snapshot(name, spec(), Policy()).effect is Effect.WRITE
        # A custom command around a write built-in is a write too.
        wrapped = spec(builtin=name, command=["sh", "-c", 'exec agentrun-tool "$0" "$1"'])
        assert snapshot("innocent", wrapped, Policy()).effect is Effect.WRITE


def test_a_service_account_found_able_to_write_makes_the_tool_a_write() -> None:
    snap = snapshot("k8s-get", spec(), Policy(), writes=True)
    assert snap.effect is Effect.WRITE
    assert snap.specDigest != snapshot("k8s-get", spec(), Policy()).specDigest


def test_any_change_of_what_runs_changes_the_digest() -> None:
    base = snapshot("t", spec(), Policy(allowed_images=("*",))).specDigest
    for change in (
        {"image": "other:1"},
        {"command": ["sh"]},
        {"env": [{"name": "A", "value": "b"}]},
        {"timeoutSeconds": 5},
        {"resources": {"limits": {"memory": "1Gi"}}},
    ):
        assert snapshot("t", spec(**change), Policy(allowed_images=("*",))).specDigest != base


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://api.openai.com/v1", True),
        ("https://api.openai.com/v1/chat/completions", True),
        ("https://api.openai.com/v10", False),
        ("https://api.openai.com.evil.example/v1", False),
        ("https://user:pw@api.openai.com/v1", False),
        ("http://api.openai.com/v1", False),
        ("https://api.openai.com:8443/v1", False),
        ("http://127.0.0.1:5000/v1", True),
        ("http://127.0.0.2:5000/v1", False),
        ("file:///etc/passwd", False),
    ],
)
def test_urls_match_the_allow_list_by_scheme_host_port_and_path(url: str, ok: bool) -> None:
    assert url_allowed(url, ("https://api.openai.com/v1", "http://127.0.0.1:*")) is ok


def test_from_env_reads_the_admins_settings() -> None:
    p = Policy.from_env(
        {
            "AGENTRUN_TOOL_IMAGE": "img:2",
            "AGENTRUN_ALLOWED_TOOL_IMAGES": "a/*, b/c:1",
            "AGENTRUN_ALLOWED_MODEL_URLS": "https://llm.corp/v1",
            "AGENTRUN_CREDENTIALS_NAMESPACE": "ops",
        }
    )
    assert (p.tool_image, p.allowed_images, p.credentials_namespace) == (
        "img:2",
        ("a/*", "b/c:1"),
        "ops",
    )
    assert p.model_url_allowed("https://llm.corp/v1/chat") and not p.model_url_allowed(
        "https://api.openai.com/v1"
    )


def test_the_runbook_tool_gets_the_operators_runbook_urls_and_no_other() -> None:
    """Where an alert's runbook_url may be fetched from is the operator's setting: it is put
    into the runbook tool's frozen env, replacing any value the AgentTool names."""
    p = Policy.from_env(
        {"AGENTRUN_ALLOWED_RUNBOOK_URLS": "https://runbooks.corp/, https://wiki.corp/sre/"}
    )
    assert p.runbook_urls == ("https://runbooks.corp/", "https://wiki.corp/sre/")
    assert Policy.from_env({}).runbook_urls == ()  # nothing is fetched unless allowed
    sneaky = spec(
        env=[
            {"name": "AGENTRUN_RUNBOOKS_DIR", "value": "/runbooks"},
            {"name": "AGENTRUN_ALLOWED_RUNBOOK_URLS", "value": "https://evil.example/"},
        ]
    )
    env = snapshot("runbook", sneaky, p).env
    assert [(e.name, e.value) for e in env] == [
        ("AGENTRUN_RUNBOOKS_DIR", "/runbooks"),
        ("AGENTRUN_ALLOWED_RUNBOOK_URLS", "https://runbooks.corp/,https://wiki.corp/sre/"),
    ]
    assert [e.name for e in snapshot("runbook", sneaky, Policy()).env] == ["AGENTRUN_RUNBOOKS_DIR"]
    # Other tools keep their env as written; a changed allow-list changes the digest.
    assert len(snapshot("k8s-get", sneaky, p).env) == 2
    assert (
        snapshot("runbook", sneaky, p).specDigest
        != snapshot("runbook", sneaky, Policy()).specDigest
    )
