"""Fixtures for tests against the local Kubernetes v1.20.2 control plane.

- ``cluster`` (session): a started :class:`tests.cluster.LocalCluster`, stopped at the end.
  With ``AGENTRUN_KUBECONFIG`` set (e.g. to ``.local/cluster/kubeconfig`` after
  ``make cluster-up``) the running cluster is reused instead and left running.
  A cluster that fails to come up fails the tests with the component's log tail.
- ``kubectl`` (session): ``kubectl(*args, input=None, check=True)`` with the admin
  kubeconfig, returning the ``CompletedProcess`` (text).
- ``namespace`` (function): a fresh namespace whose default ServiceAccount is ready,
  deleted (without waiting) afterwards.

Every test under tests/integration is marked ``integration``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster import Kubectl, LocalCluster


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    reuse = os.environ.get("AGENTRUN_KUBECONFIG")
    if reuse:
        yield LocalCluster.attach(Path(reuse))
        return
    c = LocalCluster(workdir=tmp_path_factory.mktemp("cluster"))
    c.start()  # raises ClusterError with the failing component's log tail
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="session")
def kubectl(cluster: LocalCluster) -> Kubectl:
    return cluster.kubectl


@pytest.fixture
def namespace(cluster: LocalCluster) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    cluster.wait_for_serviceaccount(name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
