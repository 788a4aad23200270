"""Fixtures for the real-node tier: pods from the project's image on a real kubelet.

- ``realnode`` (session): a control plane without the Python stand-in node, joined by a
  :class:`tests.cluster.realnode.RealNode` (kubelet, kube-proxy, containerd, runc; the image
  from ``make image`` imported). Built and started once; stopped at the end. Skipped, with
  the reason, only on a machine that cannot run one (not root, no namespaces, no memory
  cgroup); a node that fails to come up fails the tests with its component's log tail.
- ``real_cluster`` (session): its :class:`tests.cluster.LocalCluster`.
- ``real_namespace`` (function): a fresh namespace whose default ServiceAccount is ready.

Every test under tests/realnode is marked ``realnode`` (select or skip them with
``-m realnode`` / ``-m 'not realnode'``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster import LocalCluster
from tests.cluster.realnode import RealNode, unsupported


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.realnode)


def skip_unless_supported() -> None:
    why = unsupported()
    if why:
        pytest.skip(f"real-node tier: {why}")


@pytest.fixture(scope="session")
def realnode(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealNode]:
    skip_unless_supported()
    cluster = LocalCluster(tmp_path_factory.mktemp("realcluster"), local_node=False)
    cluster.start()
    node = RealNode(tmp_path_factory.mktemp("realnode"), cluster)
    try:
        node.start()  # raises ClusterError with the failing component's log tail
        yield node
    finally:
        node.stop()
        cluster.stop()


@pytest.fixture(scope="session")
def real_cluster(realnode: RealNode) -> LocalCluster:
    assert realnode.cluster is not None
    return realnode.cluster


@pytest.fixture
def real_namespace(real_cluster: LocalCluster) -> Iterator[str]:
    name = f"r-{uuid.uuid4().hex[:8]}"
    real_cluster.kubectl("create", "namespace", name)
    real_cluster.wait_for_serviceaccount(name)
    yield name
    real_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
