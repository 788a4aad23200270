"""`agentrun-operator`: runs the operator (kopf) against the current kubeconfig or in-cluster."""

from __future__ import annotations

import argparse
import os
import random
import sys

from agentrun.operator.admission import DEFAULT_APPROVER_ROLE, WebhookMode, WebhookOptions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="agentrun-operator", description=__doc__)
    parser.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[ns for ns in os.environ.get("AGENTRUN_NAMESPACES", "").split(",") if ns],
        help="namespace to watch (repeatable); all namespaces when none is given",
    )
    parser.add_argument(
        "--liveness",
        default=os.environ.get("AGENTRUN_LIVENESS", "http://0.0.0.0:8080/healthz"),
        help="kopf health endpoint URL ('' to disable)",
    )
    parser.add_argument(
        "--metrics",
        default=os.environ.get("AGENTRUN_METRICS", "0.0.0.0:9090"),
        help="host:port of the Prometheus /metrics endpoint ('' to disable)",
    )
    parser.add_argument(
        "--peering",
        default=os.environ.get("AGENTRUN_PEERING", ""),
        help="kopf peering name: run as one of several replicas, the highest priority active",
    )
    parser.add_argument(
        "--priority",
        type=int,
        default=int(os.environ.get("AGENTRUN_PRIORITY", "0")) or random.randint(1, 2**30),
        help="peering priority (default: random, so exactly one replica is active)",
    )
    env = os.environ.get
    hook = parser.add_argument_group("admission webhook (approver authorization)")
    hook.add_argument(
        "--webhook",
        choices=[m.value for m in WebhookMode],
        default=env("AGENTRUN_WEBHOOK", WebhookMode.NONE.value),
        help="none; local: self-signed cert, the operator registers the webhook configurations "
        "with a URL (dev, local clusters); incluster: cert/key from files, the chart registers "
        "them with a Service reference",
    )
    hook.add_argument("--webhook-port", type=int, default=int(env("AGENTRUN_WEBHOOK_PORT", "9443")))
    hook.add_argument(
        "--webhook-addr",
        default=env("AGENTRUN_WEBHOOK_ADDR", ""),
        help="listen address (default: 127.0.0.1 for local, 0.0.0.0 for incluster)",
    )
    hook.add_argument(
        "--webhook-host",
        default=env("AGENTRUN_WEBHOOK_HOST", ""),
        help="local: the host in the URL the apiserver calls (default: the listen address)",
    )
    hook.add_argument(
        "--webhook-cert",
        default=env("AGENTRUN_WEBHOOK_CERT", ""),
        help="serving certificate (PEM); required for incluster, generated for local",
    )
    hook.add_argument("--webhook-key", default=env("AGENTRUN_WEBHOOK_KEY", ""))
    hook.add_argument(
        "--webhook-config-name",
        default=env("AGENTRUN_WEBHOOK_CONFIG_NAME", "agentrun.dev"),
        help="local: name of the Validating/MutatingWebhookConfiguration the operator manages",
    )
    hook.add_argument(
        "--approver-role",
        default=env("AGENTRUN_APPROVER_ROLE", DEFAULT_APPROVER_ROLE),
        help="the ClusterRole granting `approve`, named in refusals",
    )
    hook.add_argument(
        "--approval-proxy",
        dest="approval_proxies",
        action="append",
        default=[p for p in env("AGENTRUN_APPROVAL_PROXIES", "").split(",") if p.strip()],
        metavar="USER",
        help="a user (the receiver's ServiceAccount, system:serviceaccount:NS:NAME) whose "
        "agentrun.dev/decided-for names the decider (Slack approvals); repeatable",
    )
    parser.add_argument(
        "--log-format",
        choices=["text", "json"],
        default=env("AGENTRUN_LOG_FORMAT", "text"),
        help="json: one JSON object per line (time, level, logger, message, run where known)",
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    webhook = WebhookOptions(
        mode=WebhookMode(args.webhook),
        addr=args.webhook_addr,
        port=args.webhook_port,
        host=args.webhook_host,
        cert=args.webhook_cert,
        key=args.webhook_key,
        config_name=args.webhook_config_name,
        approver_role=args.approver_role,
        approval_proxies=tuple(p.strip() for p in args.approval_proxies),
    )
    if webhook.mode is WebhookMode.INCLUSTER and not (webhook.cert and webhook.key):
        parser.error("--webhook incluster needs --webhook-cert and --webhook-key")
    if webhook.config_name.count(".") < 1:
        # kopf names each webhook "<handler id>.<config name>": three dot-separated segments.
        parser.error("--webhook-config-name must be a domain name, e.g. agentrun.dev")
    os.environ["AGENTRUN_METRICS"] = args.metrics  # read by the startup handler
    from agentrun.operator import handlers

    handlers.run(
        args.namespace,
        args.liveness or None,
        args.verbose,
        args.peering,
        args.priority,
        webhook=webhook,
        log_format=args.log_format,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
