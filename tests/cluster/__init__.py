"""Local Kubernetes v1.20.2 control plane and node for integration tests and the demo.

from tests.cluster import LocalCluster
with LocalCluster(workdir=Path("/tmp/c")) as cluster:
    cluster.kubeconfig, cluster.api_url, cluster.kubectl("get", "nodes")
"""

from .cluster import ClusterError, Kubectl, KubectlError, LocalCluster

__all__ = ["ClusterError", "Kubectl", "KubectlError", "LocalCluster"]
