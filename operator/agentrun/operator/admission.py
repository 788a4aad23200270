"""Admission rules for AgentRuns: who may decide, who decided, what may change. No I/O here.

The operator serves these as admission webhooks (handlers.py). A human decision is one of
the annotations `agentrun.dev/approve`, `agentrun.dev/reject` and `agentrun.dev/answer`;
adding or changing one needs the custom verb `approve` on `agentruns` in the run's namespace,
checked with a SubjectAccessReview (the way cert-manager guards `approve` on signers).
Removing one is always allowed: the operator clears them after use. The mutating webhook
stamps the deciding user on the run (`agentrun.dev/decided-by`), and the runner copies it
into `status.approvals[].approver` with the decision and its time.

An approval proxy (the receiver's ServiceAccount, for Slack buttons; `--approval-proxy`)
decides for someone else: it sets `agentrun.dev/decided-for` with the decision, after its own
SubjectAccessReview of that user, and the mutating webhook stamps that user instead and removes
the annotation. From anyone else `decided-for` is refused, so the name in the audit is always
either the requester's or one a trusted proxy vouched for.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from agentrun.api import (
    ANNOTATION_ANSWER,
    ANNOTATION_APPROVE,
    ANNOTATION_DECIDED_BY,
    ANNOTATION_DECIDED_FOR,
    ANNOTATION_REJECT,
    GROUP,
)

HUMAN_ANNOTATIONS = (ANNOTATION_APPROVE, ANNOTATION_REJECT, ANNOTATION_ANSWER)
APPROVE_VERB = "approve"
RESOURCE = "agentruns"
DEFAULT_APPROVER_ROLE = "agentrun-approver"
# Fields that make a run what it is; changing them mid-run would rewrite its meaning.
IMMUTABLE_AFTER_START = ("agentRef", "input", "model", "prompt", "forkOf")

# The ids of the two handlers; the webhook URL path is "/<id>" (chart: clientConfig.service.path).
VALIDATE_ID = "validate-agentrun"
MUTATE_ID = "mutate-agentrun"
WEBHOOK_IDS = (VALIDATE_ID, MUTATE_ID)


class WebhookMode(StrEnum):
    NONE = "none"
    LOCAL = "local"  # self-signed cert, URL clientConfig, kopf registers the configurations
    INCLUSTER = "incluster"  # cert/key from files; the chart registers the configurations


@dataclass(frozen=True)
class WebhookOptions:
    mode: WebhookMode = WebhookMode.NONE
    addr: str = ""  # listen address; "" = the mode's default
    port: int = 9443
    host: str = ""  # the host in the URL the apiserver calls (local mode)
    cert: str = ""
    key: str = ""
    config_name: str = "agentrun.dev"  # the managed webhook configurations' name (local mode)
    approver_role: str = DEFAULT_APPROVER_ROLE
    # Users (the receiver's ServiceAccount) whose decided-for annotation names the decider.
    approval_proxies: tuple[str, ...] = ()


@dataclass(frozen=True)
class User:
    """The requesting user, as the apiserver authenticated it (request.userInfo)."""

    username: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def from_userinfo(cls, info: Mapping[str, Any] | None) -> User:
        info = info or {}
        extra = info.get("extra") or {}
        return cls(
            username=str(info.get("username") or ""),
            uid=str(info.get("uid") or ""),
            groups=tuple(str(g) for g in info.get("groups") or ()),
            extra={str(k): tuple(str(v) for v in vs or ()) for k, vs in extra.items()},
        )


def _annotations(body: Mapping[str, Any] | None) -> dict[str, str]:
    if not body:
        return {}
    meta = body.get("metadata") or {}
    return dict(meta.get("annotations") or {})


def decisions_made(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> list[str]:
    """The human-decision annotations this request adds or changes (not those it removes)."""
    before, after = _annotations(old), _annotations(new)
    return [k for k in HUMAN_ANNOTATIONS if k in after and before.get(k) != after[k]]


def acting_user(
    old: Mapping[str, Any] | None,
    new: Mapping[str, Any] | None,
    username: str,
    proxies: Collection[str] = (),
) -> str:
    """Who a decision is recorded for: the requester, or the user a trusted proxy names in
    decided-for (it checked that user's `approve` itself; the webhook checks the proxy's)."""
    named = _annotations(new).get(ANNOTATION_DECIDED_FOR)
    if username in proxies and named and decisions_made(old, new):
        return named
    return username


def stamp(
    old: Mapping[str, Any] | None,
    new: Mapping[str, Any] | None,
    username: str,
    proxies: Collection[str] = (),
) -> dict[str, str | None]:
    """The annotation changes the mutating webhook makes: who decided, and nothing forged.

    A request that makes a decision is stamped with its user (for a trusted proxy, the user
    it decides for; decided-for is then removed). A request that sets the stamp without making
    a decision gets the previous stamp back (a removal is kept): nobody can write someone
    else's name into the audit. decided-for from anyone else is left for the validating
    webhook to refuse.
    """
    before, after = _annotations(old), _annotations(new)
    proxy = username in proxies
    consumed: dict[str, str | None] = (
        {ANNOTATION_DECIDED_FOR: None} if proxy and ANNOTATION_DECIDED_FOR in after else {}
    )
    if decisions_made(old, new):
        acting = acting_user(old, new, username, proxies)
        stamped = after.get(ANNOTATION_DECIDED_BY)
        if proxy and not consumed and stamped and stamped != before.get(ANNOTATION_DECIDED_BY):
            # A reinvocation after this webhook already turned decided-for into the stamp.
            return {}
        return consumed if stamped == acting else {ANNOTATION_DECIDED_BY: acting, **consumed}
    if ANNOTATION_DECIDED_BY in after and after[ANNOTATION_DECIDED_BY] != before.get(
        ANNOTATION_DECIDED_BY
    ):
        return {ANNOTATION_DECIDED_BY: before.get(ANNOTATION_DECIDED_BY), **consumed}
    return consumed


def forged_stamp(
    old: Mapping[str, Any] | None,
    new: Mapping[str, Any] | None,
    username: str,
    proxies: Collection[str] = (),
) -> str | None:
    """A refusal when the stamp on the (mutated) object is not this request's own doing, or
    names a user the request may not speak for."""
    before, after = _annotations(old), _annotations(new)
    named = after.get(ANNOTATION_DECIDED_FOR)
    if named is not None and named != before.get(ANNOTATION_DECIDED_FOR):
        trusted = ", ".join(proxies) or "none configured"
        return (
            f"{ANNOTATION_DECIDED_FOR} is honoured only with a decision from the approval "
            f"proxies the operator trusts ({trusted}); user {username!r} may not set it"
        )
    value = after.get(ANNOTATION_DECIDED_BY)
    if value is None or value == before.get(ANNOTATION_DECIDED_BY):
        return None
    if value == username and decisions_made(old, new):
        return None
    if username in proxies and decisions_made(old, new):
        return None  # the mutating webhook stamped the user the proxy decided for
    return (
        f"{ANNOTATION_DECIDED_BY} is set by the agentrun admission webhook to the user who "
        f"decides; it cannot be set to {value!r} by user {username!r}"
    )


def access_review(user: User, namespace: str, name: str) -> dict[str, Any]:
    """The SubjectAccessReview asking whether the user may approve this run."""
    spec: dict[str, Any] = {
        "user": user.username,
        "groups": list(user.groups),
        "resourceAttributes": {
            "namespace": namespace,
            "verb": APPROVE_VERB,
            "group": GROUP,
            "resource": RESOURCE,
            **({"name": name} if name else {}),
        },
    }
    if user.uid:
        spec["uid"] = user.uid
    if user.extra:
        spec["extra"] = {k: list(v) for k, v in user.extra.items()}
    return {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": spec,
    }


def review_allowed(review: Mapping[str, Any]) -> tuple[bool, str]:
    """(allowed, the authorizer's reason) from a SubjectAccessReview response."""
    status = review.get("status") or {}
    allowed = bool(status.get("allowed")) and not status.get("denied")
    return allowed, str(status.get("reason") or status.get("evaluationError") or "")


def refusal(
    user: User, namespace: str, keys: list[str], role: str = DEFAULT_APPROVER_ROLE, why: str = ""
) -> str:
    """The message a refused decision gets: who, where, and exactly which permission."""
    what = ", ".join(keys)
    message = (
        f'user "{user.username}" may not approve agentruns in namespace "{namespace}": '
        f'needs verb "{APPROVE_VERB}" on {RESOURCE}.{GROUP} (see the {role} ClusterRole) '
        f"to set {what}"
    )
    return f"{message}; authorizer: {why}" if why else message


def spec_violations(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> list[str]:
    """Refusals for spec changes that would change a started run's meaning."""
    if not old or not new:
        return []
    started = (old.get("status") or {}).get("startTime")
    if not started:
        return []
    before, after = old.get("spec") or {}, new.get("spec") or {}
    return [
        f"spec.{key} cannot change after the run started (at {started}); "
        "create a new AgentRun instead (spec.cancel stops this one)"
        for key in IMMUTABLE_AFTER_START
        if before.get(key) != after.get(key)
    ]


def spec_warnings(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> list[str]:
    """Allowed but worth saying: new limits on a started run apply from its next step."""
    if not old or not new or not (old.get("status") or {}).get("startTime"):
        return []
    before, after = (old.get("spec") or {}).get("limits"), (new.get("spec") or {}).get("limits")
    if (before or {}) == (after or {}):
        return []
    return ["spec.limits changed on a started run: the new limits apply from its next step"]


def unknown_webhook(request: Mapping[str, Any], webhook: str | None) -> dict[str, Any]:
    """A refusal for a call on a path no handler serves: fail closed, never allow by default."""
    return {
        "apiVersion": request.get("apiVersion", "admission.k8s.io/v1"),
        "kind": request.get("kind", "AdmissionReview"),
        "response": {
            "uid": (request.get("request") or {}).get("uid", ""),
            "allowed": False,
            "status": {
                "code": 500,
                "message": (
                    f"agentrun webhook: no handler at path /{webhook or ''}; "
                    f"use /{VALIDATE_ID} (validating) or /{MUTATE_ID} (mutating)"
                ),
            },
        },
    }
