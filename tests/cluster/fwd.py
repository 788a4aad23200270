"""A TCP forwarder across network namespaces, for the real node (``realnode.py``).

``python -m tests.cluster.fwd NETNS LISTEN_ADDR:PORT TARGET_ADDR:PORT [...]``

Each listening socket is created inside the network namespace ``NETNS`` (a path such as
``/proc/PID/ns/net``); connections to the targets are made from the namespace this process
started in. The apiserver listens on the host's loopback only; this gives the kubelet,
kube-proxy and pods inside the node's namespace a way to it without a route or an
iptables rule in the host's namespace.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import sys
import threading

CLONE_NEWNET = 0x40000000


def _setns(fd: int) -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


def _relay(client: socket.socket, target: tuple[str, int]) -> None:
    try:
        upstream = socket.create_connection(target, timeout=10)
    except OSError as e:
        print(f"connect {target} failed: {e}", flush=True)
        client.close()
        return
    upstream.settimeout(None)
    back = threading.Thread(target=_pipe, args=(upstream, client), daemon=True)
    back.start()
    _pipe(client, upstream)
    back.join()
    client.close()
    upstream.close()


def _serve(listener: socket.socket, target: tuple[str, int]) -> None:
    while True:
        client, _ = listener.accept()
        threading.Thread(target=_relay, args=(client, target), daemon=True).start()


def _addr(text: str) -> tuple[str, int]:
    host, port = text.rsplit(":", 1)
    return host, int(port)


def main(argv: list[str]) -> None:
    netns, pairs = argv[0], argv[1:]
    if not pairs or len(pairs) % 2:
        sys.exit("usage: python -m tests.cluster.fwd NETNS LISTEN:PORT TARGET:PORT [...]")
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    other = os.open(netns, os.O_RDONLY)
    listeners: list[tuple[socket.socket, tuple[str, int]]] = []
    _setns(other)
    for listen, target in zip(pairs[::2], pairs[1::2], strict=True):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(_addr(listen))
        s.listen(128)
        listeners.append((s, _addr(target)))
    _setns(home)
    # Hold no reference to the node's namespace beyond the listening sockets: it goes away
    # (with its veth) once this process and the node's processes have exited.
    os.close(other)
    os.close(home)
    for sock, dest in listeners:
        print(f"listening {sock.getsockname()} in {netns} -> {dest}", flush=True)
        threading.Thread(target=_serve, args=(sock, dest), daemon=True).start()
    signal.sigwait({signal.SIGTERM, signal.SIGINT})


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    main(sys.argv[1:])
