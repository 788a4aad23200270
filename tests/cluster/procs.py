"""Process helpers: free ports, process identity and killing whole process trees."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from pathlib import Path


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1 (bound then released)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # fields after "pid (comm)"; comm may contain spaces and parentheses
    return raw[raw.rindex(")") + 2 :].split()


def start_time(pid: int) -> int | None:
    """Kernel start time of ``pid`` (clock ticks since boot), to detect pid reuse."""
    st = _stat(pid)
    return int(st[19]) if st else None


def alive(pid: int, started: int | None = None) -> bool:
    st = _stat(pid)
    if st is None or st[0] == "Z":
        return False
    return started is None or int(st[19]) == started


def descendants(pid: int) -> list[int]:
    """All live descendants of ``pid`` (children first found by parent links in /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        st = _stat(int(entry.name))
        if st is not None:
            children.setdefault(int(st[1]), []).append(int(entry.name))
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def kill_tree(pids: list[tuple[int, int | None]], grace: float = 5.0) -> None:
    """SIGTERM each (pid, start_time) and all its descendants; SIGKILL what remains after
    ``grace`` seconds; return when every one of them is gone (or reaped by its parent)."""
    targets: dict[int, int | None] = {}
    for pid, started in pids:
        if alive(pid, started):
            targets[pid] = started
            for d in descendants(pid):
                targets.setdefault(d, start_time(d))

    def signal_all(sig: signal.Signals) -> None:
        for p, started in targets.items():
            if alive(p, started):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(p, sig)

    def wait(deadline: float) -> bool:
        while time.monotonic() < deadline:
            for p in list(targets):
                with contextlib.suppress(ChildProcessError, OSError):
                    os.waitpid(p, os.WNOHANG)  # reap our own children
            if not any(alive(p, s) for p, s in targets.items()):
                return True
            time.sleep(0.05)
        return False

    signal_all(signal.SIGTERM)
    if wait(time.monotonic() + grace):
        return
    # anything spawned meanwhile
    for pid in list(targets):
        for d in descendants(pid):
            targets.setdefault(d, start_time(d))
    signal_all(signal.SIGKILL)
    wait(time.monotonic() + 5)
