#!/usr/bin/env bash
# Creates the project's virtualenv with the package and its dev dependencies (idempotent).
set -euo pipefail
VENV="${1:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -e ".[dev,mcp]"
