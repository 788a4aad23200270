"""A real node leaves the host as it found it: addresses, links, routes, rules, iptables,
sysctls, mounts, cgroups and the kubelet's and containerd's fixed paths are the same after
``stop()`` as before ``start()``, with pods running when it stops. Tier: real node (its own
control plane and node, beside the session's: two nodes at once must not collide)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.cluster import LocalCluster
from tests.cluster.realnode import RealNode
from tests.realnode import host
from tests.realnode.conftest import skip_unless_supported


def test_stop_leaves_the_host_as_found(tmp_path_factory: pytest.TempPathFactory) -> None:
    skip_unless_supported()
    before = host.snapshot()
    cluster = LocalCluster(tmp_path_factory.mktemp("hostcluster"), local_node=False)
    cluster.start()
    node = RealNode(tmp_path_factory.mktemp("hostnode"), cluster)
    try:
        t0 = time.monotonic()
        node.start()
        up = time.monotonic() - t0
        during = host.snapshot()
        assert during["links"] != before["links"]  # the veth is there while the node runs
        pods = [
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {"name": "c", "image": node.image, "command": ["sh", "-c", cmd]}
                    ],
                },
            }
            for name, cmd in (("done", "echo done"), ("running", "sleep 600"))
        ]
        cluster.kubectl(
            "apply",
            "-f",
            "-",
            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": pods}),
        )
        cluster.kubectl("wait", "--for=condition=Ready", "pod/running", "--timeout=60s", timeout=90)
    finally:
        t0 = time.monotonic()
        node.stop()
        down = time.monotonic() - t0
        cluster.stop()
    after = host.snapshot()

    assert host.differences(before, after) == {}
    assert not list(Path(node.workdir / "logs").glob("*.sock"))
    print(f"real node up {up:.1f}s ({node.timings}), down {down:.1f}s")
