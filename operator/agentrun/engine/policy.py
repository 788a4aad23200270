"""What a platform admin allows: operator settings that no Agent, AgentTool or run can change.

Defining what runs (image, ServiceAccount) and where data may go (model and notification
endpoints, credentials) is an admin's right; specs written by namespace editors are checked
against this policy and resolved into a frozen ToolSnapshot. Pure, apart from reading the
environment once in from_env().
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from agentrun.api import AgentToolSpec, Effect, ToolSnapshot
from agentrun.api.naming import canonical_json

DEFAULT_TOOL_IMAGE = "ghcr.io/agentrun/agentrun:0.1.0"
DEFAULT_TOOL_COMMAND = ("agentrun-tool",)
READ_SERVICE_ACCOUNT = "agentrun-tool-read"
WRITE_SERVICE_ACCOUNT = "agentrun-tool-write"
DEFAULT_MODEL_URLS = ("https://api.openai.com/v1",)
DEFAULT_NOTIFY_URLS = ("https://hooks.slack.com/",)
DEFAULT_CREDENTIALS_NAMESPACE = "agentrun-system"
# A Secret the operator may read (model API keys, notification URLs) carries this label
# with the value "true" and lives in the credentials namespace.
CREDENTIALS_LABEL = "agentrun.dev/credentials"
# Built-in tools that change the cluster: a write whatever an AgentTool's spec says.
WRITE_BUILTINS = frozenset({"rollout-restart", "rollout-undo", "scale", "delete-pod"})

ENV_TOOL_IMAGE = "AGENTRUN_TOOL_IMAGE"
ENV_ALLOWED_IMAGES = "AGENTRUN_ALLOWED_TOOL_IMAGES"
ENV_READ_SAS = "AGENTRUN_READ_SERVICE_ACCOUNTS"
ENV_WRITE_SAS = "AGENTRUN_WRITE_SERVICE_ACCOUNTS"
ENV_MODEL_URLS = "AGENTRUN_ALLOWED_MODEL_URLS"
ENV_NOTIFY_URLS = "AGENTRUN_ALLOWED_NOTIFY_URLS"
# Base URLs a Streamable HTTP MCPServer may be under; none by default.
ENV_MCP_URLS = "AGENTRUN_ALLOWED_MCP_URLS"
# Base URLs an alert's runbook_url may be fetched from by the runbook tool; the operator puts
# its own value into that tool's env (frozen in the snapshot), whatever the AgentTool says.
ENV_RUNBOOK_URLS = "AGENTRUN_ALLOWED_RUNBOOK_URLS"
RUNBOOK_BUILTIN = "runbook"
ENV_CREDENTIALS_NAMESPACE = "AGENTRUN_CREDENTIALS_NAMESPACE"
IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class PolicyError(ValueError):
    """A spec asks for something the admin's policy does not allow; the message says what."""


def _split(value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in (value or "").split(",") if v.strip())


@dataclass(frozen=True)
class Policy:
    tool_image: str = DEFAULT_TOOL_IMAGE
    # fnmatch globs; the tool image is always allowed.
    allowed_images: tuple[str, ...] = ()
    read_service_accounts: tuple[str, ...] = (READ_SERVICE_ACCOUNT,)
    write_service_accounts: tuple[str, ...] = (WRITE_SERVICE_ACCOUNT,)
    model_urls: tuple[str, ...] = DEFAULT_MODEL_URLS
    notify_urls: tuple[str, ...] = DEFAULT_NOTIFY_URLS
    # None by default: an alert's runbook_url is fetched only from hosts an admin allowed.
    runbook_urls: tuple[str, ...] = ()
    mcp_urls: tuple[str, ...] = ()
    credentials_namespace: str = DEFAULT_CREDENTIALS_NAMESPACE

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Policy:
        env = dict(os.environ if env is None else env)
        namespace = env.get(ENV_CREDENTIALS_NAMESPACE, "")
        if not namespace and IN_CLUSTER_NAMESPACE.exists():
            namespace = IN_CLUSTER_NAMESPACE.read_text().strip()
        return cls(
            tool_image=env.get(ENV_TOOL_IMAGE) or DEFAULT_TOOL_IMAGE,
            allowed_images=_split(env.get(ENV_ALLOWED_IMAGES)),
            read_service_accounts=_split(env.get(ENV_READ_SAS)) or (READ_SERVICE_ACCOUNT,),
            write_service_accounts=_split(env.get(ENV_WRITE_SAS)) or (WRITE_SERVICE_ACCOUNT,),
            model_urls=_split(env.get(ENV_MODEL_URLS)) or DEFAULT_MODEL_URLS,
            notify_urls=_split(env.get(ENV_NOTIFY_URLS)) or DEFAULT_NOTIFY_URLS,
            runbook_urls=_split(env.get(ENV_RUNBOOK_URLS)),
            mcp_urls=_split(env.get(ENV_MCP_URLS)),
            credentials_namespace=namespace or DEFAULT_CREDENTIALS_NAMESPACE,
        )

    def image_allowed(self, image: str) -> bool:
        return image == self.tool_image or any(
            fnmatch.fnmatchcase(image, pattern) for pattern in self.allowed_images
        )

    def model_url_allowed(self, url: str) -> bool:
        return url_allowed(url, self.model_urls)

    def notify_url_allowed(self, url: str) -> bool:
        return url_allowed(url, self.notify_urls)

    def mcp_url_allowed(self, url: str) -> bool:
        return url_allowed(url, self.mcp_urls)


def url_allowed(url: str, allowed: tuple[str, ...]) -> bool:
    """True when url is under one of the allowed base URLs: same scheme, host and port, and a
    path at or below the allowed path (segment-wise). Credentials in the URL never match."""
    try:
        got = urlsplit(url)
        port = got.port
    except ValueError:
        return False
    if got.username or got.password or got.scheme not in ("http", "https") or not got.hostname:
        return False
    for base in allowed:
        # "http://127.0.0.1:*" allows any port of that host (local test servers).
        any_port = base.split("/")[2].endswith(":*") if base.count("/") >= 2 else False
        try:
            want = urlsplit(base.replace(":*", "", 1) if any_port else base)
            want_port = want.port
        except ValueError:
            continue
        if (got.scheme, got.hostname.lower()) != (want.scheme, (want.hostname or "").lower()):
            continue
        if not any_port and _port(got.scheme, port) != _port(want.scheme, want_port):
            continue
        prefix = want.path.rstrip("/")
        if got.path == prefix or got.path.startswith(prefix + "/") or not prefix:
            return True
    return False


def _port(scheme: str, port: int | None) -> int:
    return port if port is not None else (443 if scheme == "https" else 80)


def effective_effect(name: str, spec: AgentToolSpec) -> Effect:
    """A built-in write tool is a write whatever its spec says (a custom command around one
    too)."""
    return Effect.WRITE if (spec.builtin or name) in WRITE_BUILTINS else spec.effect


def tool_env(builtin: str, spec: AgentToolSpec, policy: Policy) -> list[dict[str, str]]:
    """The tool's env as it will run: the AgentTool's, and for the runbook tool the runbook
    URLs the operator allows (its own setting replaces any the spec names)."""
    env = [e.model_dump() for e in spec.env]
    if builtin != RUNBOOK_BUILTIN:
        return env
    env = [e for e in env if e["name"] != ENV_RUNBOOK_URLS]
    if policy.runbook_urls:
        env.append({"name": ENV_RUNBOOK_URLS, "value": ",".join(policy.runbook_urls)})
    return env


def snapshot(
    name: str,
    spec: AgentToolSpec,
    policy: Policy,
    *,
    writes: bool = False,
    env_from_secret: str | None = None,
) -> ToolSnapshot:
    """The tool as it will run, checked against the policy; PolicyError says what is refused.
    `writes`: its ServiceAccount was found able to change the namespace, so it is a write."""
    effect = Effect.WRITE if writes else effective_effect(name, spec)
    image = spec.image or policy.tool_image
    if not policy.image_allowed(image):
        raise PolicyError(
            f"spec.image {image!r} is not in the operator's allowed tool images "
            f"({', '.join([policy.tool_image, *policy.allowed_images])}); "
            "a platform admin sets them (chart value tools.allowedImages)"
        )
    default_sa = policy.write_service_accounts[0] if effect is Effect.WRITE else None
    sa = spec.serviceAccountName or default_sa or policy.read_service_accounts[0]
    allowed_sas = (
        policy.write_service_accounts + policy.read_service_accounts
        if effect is Effect.WRITE
        else policy.read_service_accounts
    )
    if sa not in allowed_sas:
        what = "a write tool" if effect is Effect.WRITE else "a read tool"
        raise PolicyError(
            f"spec.serviceAccountName {sa!r} is not allowed for {what}; allowed: "
            f"{', '.join(allowed_sas)} (read tools never run under a write ServiceAccount)"
        )
    builtin = spec.builtin or name
    fields = {
        "builtin": builtin,
        "effect": effect.value,
        "image": image,
        "command": list(spec.command or DEFAULT_TOOL_COMMAND),
        "serviceAccountName": sa,
        "env": tool_env(builtin, spec, policy),
        "resources": spec.resources.model_dump(mode="json"),
        "timeoutSeconds": spec.timeoutSeconds,
        "outputLimitBytes": spec.outputLimitBytes,
    }
    if env_from_secret is not None:  # only then: the digests of other tools stay as they were
        fields["envFromSecret"] = env_from_secret
    digest = hashlib.sha256(canonical_json(fields).encode()).hexdigest()
    return ToolSnapshot.model_validate({**fields, "specDigest": digest})
