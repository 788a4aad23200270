"""What a real node must leave as it found it in the host's namespaces: a snapshot to
compare before ``RealNode.start()`` and after ``stop()``."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

# Change all the time, whatever a node does.
VOLATILE_SYSCTLS = re.compile(
    r"^(fs\.|kernel\.random\.|kernel\.ns_last_pid$|kernel\.pty\.nr$"
    r"|kernel\.perf_event_max_sample_rate$|net\.netfilter\.nf_conntrack_count$)"
)
# Fixed paths the kubelet, containerd, runc, the CNI plugins and iptables use.
FIXED_PATHS = (
    "/var/log/pods",
    "/var/log/containers",
    "/var/lib/kubelet",
    "/var/lib/cni",
    "/var/lib/containerd",
    "/run/containerd",
    "/run/netns",
    "/run/xtables.lock",
    "/opt/containerd",
    "/etc/cni",
)


def _out(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def _iptables(save: str) -> str:
    # comments carry a timestamp, counters change with traffic
    text = _out(save)
    lines = [ln for ln in text.splitlines() if not ln.startswith("#")]
    return "\n".join(re.sub(r"\[\d+:\d+\]", "[*]", ln) for ln in lines)


def sysctls() -> dict[str, str]:
    out: dict[str, str] = {}
    root = Path("/proc/sys")
    for dirpath, _, files in os.walk(root):
        for f in files:
            path = Path(dirpath) / f
            key = ".".join(path.relative_to(root).parts)
            if VOLATILE_SYSCTLS.match(key):
                continue
            try:
                out[key] = path.read_text()
            except OSError:
                continue  # write-only or not readable here
    return out


def snapshot() -> dict[str, object]:
    cgroups = Path("/sys/fs/cgroup")
    return {
        "links": _out("ip", "-o", "link", "show"),
        "addresses": _out("ip", "-o", "addr", "show"),
        "routes": _out("ip", "route", "show", "table", "all"),
        "routes6": _out("ip", "-6", "route", "show", "table", "all"),
        "rules": _out("ip", "rule", "show"),
        "iptables": _iptables("iptables-save"),
        "ip6tables": _iptables("ip6tables-save"),
        "sysctls": sysctls(),
        "paths": {p: os.path.lexists(p) for p in FIXED_PATHS},
        "cgroups": sorted(
            str(d) for h in cgroups.iterdir() if h.is_dir() for d in h.iterdir() if d.is_dir()
        ),
        "mounts": sorted(
            ln.split()[4] for ln in Path("/proc/self/mountinfo").read_text().splitlines()
        ),
    }


def differences(before: dict[str, object], after: dict[str, object]) -> dict[str, object]:
    """Only what changed: for dicts the changed keys, else both values."""
    diff: dict[str, object] = {}
    for key, old in before.items():
        new = after[key]
        if old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            diff[key] = {
                k: (old.get(k), new.get(k))
                for k in old.keys() | new.keys()
                if old.get(k) != new.get(k)
            }
        else:
            diff[key] = (old, new)
    return diff
