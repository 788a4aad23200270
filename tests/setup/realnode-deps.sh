#!/usr/bin/env bash
# Installs the Debian packages the real node and `make image` need (idempotent; silent when
# every one is installed): buildah and debootstrap build the images, gcc + libc6-dev the
# static pause binary, containerd + runc run the containers, containernetworking-plugins
# give the pods a bridge, iptables is what kube-proxy programs (inside the node's own
# network namespace only), iproute2 makes the veth. No service is started: the real node
# starts containerd itself (tests/cluster/realnode.py). `realnode-deps.sh --check` installs
# nothing: exit 1 (naming what is missing) unless every package is installed.
set -euo pipefail
PKGS=(buildah debootstrap gcc libc6-dev containerd runc containernetworking-plugins iptables iproute2)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
((${#missing[@]})) || exit 0
if [[ ${1:-} == --check ]]; then
  echo "realnode-deps.sh: not installed: ${missing[*]}" >&2
  exit 1
fi
SUDO=""
[[ $(id -u) -eq 0 ]] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
if ! apt-cache show "${missing[@]}" >/dev/null 2>&1; then
  echo "realnode-deps.sh: apt-get update (package lists missing)" >&2
  $SUDO apt-get update -qq
fi
echo "realnode-deps.sh: installing ${missing[*]}" >&2
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
