"""python -m tests.modelserver --port 0 --scripts FILE.yaml: serve until interrupted."""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

import yaml

from .server import ScriptedModelServer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--scripts", type=Path, help="YAML or JSON: {model_name: [entries]}")
    args = parser.parse_args()
    scripts = yaml.safe_load(args.scripts.read_text()) if args.scripts else {}
    server = ScriptedModelServer(scripts=scripts or {}, host=args.host, port=args.port).start()
    print(server.base_url, flush=True)  # the demo reads this line
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop()


if __name__ == "__main__":
    main()
