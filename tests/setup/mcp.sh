#!/usr/bin/env bash
# The MCP servers the tests run, none written here (idempotent; cached by version):
# - kubernetes-mcp-server: its PyPI wheel is a launcher that downloads the Go binary from
#   GitHub releases on first use, which this machine cannot reach; the same release's binary
#   is published on npm as kubernetes-mcp-server-linux-amd64 (the npm launcher's own platform
#   package), so the binary comes from there. Pinned: 0.0.67, the newest release on npm.
# - @modelcontextprotocol/server-everything, the reference server (Streamable HTTP), from npm.
# Prints nothing on a warm cache; the binaries land in $AGENTRUN_CACHE/mcp.
set -euo pipefail
CACHE="${AGENTRUN_CACHE:-$HOME/.cache/agentrun}/mcp"
K8S_MCP_VERSION="${K8S_MCP_VERSION:-0.0.67}"
EVERYTHING_VERSION="${EVERYTHING_VERSION:-2026.8.31}"
mkdir -p "$CACHE"

k8s_dir="$CACHE/kubernetes-mcp-server-$K8S_MCP_VERSION"
if [ ! -x "$k8s_dir/kubernetes-mcp-server" ]; then
  tmp="$(mktemp -d)"
  npm install --silent --no-audit --no-fund --prefix "$tmp" \
    "kubernetes-mcp-server-linux-amd64@$K8S_MCP_VERSION" >/dev/null
  bin="$(find "$tmp/node_modules/kubernetes-mcp-server-linux-amd64" -type f -name 'kubernetes-mcp-server*' | head -1)"
  mkdir -p "$k8s_dir"
  install -m 0755 "$bin" "$k8s_dir/kubernetes-mcp-server"
  rm -rf "$tmp"
fi

ev_dir="$CACHE/server-everything-$EVERYTHING_VERSION"
if [ ! -f "$ev_dir/node_modules/@modelcontextprotocol/server-everything/package.json" ]; then
  mkdir -p "$ev_dir"
  npm install --silent --no-audit --no-fund --prefix "$ev_dir" \
    "@modelcontextprotocol/server-everything@$EVERYTHING_VERSION" >/dev/null
fi
