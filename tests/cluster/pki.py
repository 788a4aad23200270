"""Throwaway PKI for the local control plane, made with the ``openssl`` CLI.

Everything is ECDSA P-256 (fast to generate, supported by every component). Files:

- ``ca.crt``/``ca.key``: the cluster CA (signs every serving and client certificate)
- ``apiserver.crt``/``.key``: serving cert for 127.0.0.1, localhost and kubernetes.default...
- ``admin``, ``controller-manager``, ``scheduler``, ``node``, ``apiserver-kubelet-client``:
  client certs whose CN/O give the identities the bootstrap RBAC policy expects
- ``node-serving.crt``/``.key``: the local node's log server cert (self-signed is enough)
- ``sa.key``/``sa.pub``: ServiceAccount token signing key pair
"""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

CLIENTS: dict[str, str] = {
    # name -> subject
    "admin": "/O=system:masters/CN=agentrun-admin",
    "controller-manager": "/CN=system:kube-controller-manager",
    "scheduler": "/CN=system:kube-scheduler",
    "apiserver-kubelet-client": "/O=system:masters/CN=kube-apiserver-kubelet-client",
}


@dataclass(frozen=True)
class Pki:
    dir: Path

    def crt(self, name: str) -> Path:
        return self.dir / f"{name}.crt"

    def key(self, name: str) -> Path:
        return self.dir / f"{name}.key"

    @property
    def ca(self) -> Path:
        return self.crt("ca")

    @property
    def sa_key(self) -> Path:
        return self.dir / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.dir / "sa.pub"


_REQ_CNF = "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\n"
_EC = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {proc.stderr.strip()}")


def _cert(
    pki: Pki, name: str, subject: str, ext: list[str], *, ca: bool = False, days: int = 365
) -> None:
    """Key + certificate in one ``openssl req -x509`` call (signed by the CA unless ``ca``)."""
    signer = [] if ca else ["-CA", str(pki.ca), "-CAkey", str(pki.key("ca"))]
    addext = [a for e in ext for a in ("-addext", e)]
    _openssl(
        "req",
        "-config",
        str(pki.dir / "req.cnf"),
        "-x509",
        "-new",
        *_EC,
        "-keyout",
        str(pki.key(name)),
        "-out",
        str(pki.crt(name)),
        "-subj",
        subject,
        "-days",
        str(days),
        "-sha256",
        *signer,
        *addext,
        cwd=pki.dir,
    )
    pki.key(name).chmod(0o600)


def make_pki(directory: Path, node_name: str) -> Pki:
    """Create a fresh CA and every certificate the local cluster needs in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    pki = Pki(directory)
    (directory / "req.cnf").write_text(_REQ_CNF)
    _cert(
        pki,
        "ca",
        "/CN=agentrun-local-ca",
        [
            "basicConstraints=critical,CA:TRUE",
            "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        ],
        ca=True,
        days=3650,
    )
    leaf = [
        "basicConstraints=critical,CA:FALSE",
        "keyUsage=critical,digitalSignature,keyEncipherment",
    ]
    server = [*leaf, "extendedKeyUsage=serverAuth"]
    client = [*leaf, "extendedKeyUsage=clientAuth"]
    jobs: list[tuple[str, str, list[str]]] = [
        (
            "apiserver",
            "/CN=kube-apiserver",
            [
                *server,
                "subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,"
                "DNS:kubernetes.default,DNS:kubernetes.default.svc,"
                "DNS:kubernetes.default.svc.cluster.local",
            ],
        ),
        ("node", f"/O=system:nodes/CN=system:node:{node_name}", client),
        (
            "node-serving",
            f"/CN={node_name}",
            [*server, f"subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:{node_name}"],
        ),
        *((name, subject, client) for name, subject in CLIENTS.items()),
    ]
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(_cert, pki, *job) for job in jobs]
        _openssl(
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            str(pki.sa_key),
            cwd=directory,
        )
        _openssl("pkey", "-in", str(pki.sa_key), "-pubout", "-out", str(pki.sa_pub), cwd=directory)
        for f in futures:
            f.result()
    pki.sa_key.chmod(0o600)
    return pki


def client_cert(pki: Pki, name: str, subject: str) -> None:
    """A client certificate ``name`` signed by the CA of ``pki`` (e.g. a real kubelet's
    ``/O=system:nodes/CN=system:node:NAME``)."""
    _cert(
        pki,
        name,
        subject,
        [
            "basicConstraints=critical,CA:FALSE",
            "keyUsage=critical,digitalSignature,keyEncipherment",
            "extendedKeyUsage=clientAuth",
        ],
    )


def serving_cert(pki: Pki, name: str, common_name: str, sans: list[str]) -> None:
    """A serving certificate ``name`` for ``sans`` (``IP:...``/``DNS:...``) signed by the CA."""
    _cert(
        pki,
        name,
        f"/CN={common_name}",
        [
            "basicConstraints=critical,CA:FALSE",
            "keyUsage=critical,digitalSignature,keyEncipherment",
            "extendedKeyUsage=serverAuth",
            f"subjectAltName={','.join(sans)}",
        ],
    )
