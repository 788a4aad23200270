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
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.cluster import Kubectl, LocalCluster
from tests.integration.spine import Spine
from tests.modelserver import ScriptedModelServer
from tests.support.stack import OperatorProcess


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


# ---- the agentrun stack: CRDs, the scripted model, and a shared operator ----

SHARED_PREFIX = "s-"  # namespaces the session's shared operator watches


@pytest.fixture(scope="session")
def stack_installed(cluster: LocalCluster) -> LocalCluster:
    from tests.support import stack

    stack.install_crds(cluster)
    return cluster


@pytest.fixture(scope="session")
def model_server() -> Iterator[ScriptedModelServer]:
    server = ScriptedModelServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def shared_operator(
    stack_installed: LocalCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """One operator for the tests that do not kill it; it watches only s-* namespaces."""
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    op = OperatorProcess(stack_installed.kubeconfig, log, namespaces=[f"{SHARED_PREFIX}*"])
    op.start()
    yield op
    op.stop()


@pytest.fixture
def spine(
    stack_installed: LocalCluster,
    model_server: ScriptedModelServer,
    shared_operator: OperatorProcess,
) -> Iterator[Spine]:
    """A fresh namespace served by the shared operator."""
    ns = f"{SHARED_PREFIX}{uuid.uuid4().hex[:8]}"
    yield Spine(stack_installed, model_server, ns)
    stack_installed.kubectl("delete", "namespace", ns, "--wait=false", check=False)


@pytest.fixture
def own_operator(
    stack_installed: LocalCluster, model_server: ScriptedModelServer, tmp_path: Path
) -> Iterator[tuple[Spine, Callable[..., OperatorProcess]]]:
    """A namespace outside the shared operator's reach, and a factory for its own operators."""
    ns = f"k-{uuid.uuid4().hex[:8]}"
    started: list[OperatorProcess] = []

    def start(*args: str, **env: str) -> OperatorProcess:
        log = tmp_path / f"operator-{len(started)}.log"
        op = OperatorProcess(
            stack_installed.kubeconfig, log, env=env, namespaces=[ns], args=list(args)
        )
        started.append(op)
        op.start()
        return op

    yield Spine(stack_installed, model_server, ns), start
    for op in started:
        op.kill()
    stack_installed.kubectl("delete", "namespace", ns, "--wait=false", check=False)
