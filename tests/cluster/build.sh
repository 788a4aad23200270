#!/usr/bin/env bash
# Build kube-apiserver, kube-controller-manager and kube-scheduler v1.20.2 from Debian
# bookworm's `kubernetes` source package with Debian's Go, into a cache.
# `build.sh node` builds kubelet and kube-proxy (the real node, tests/cluster/realnode.py)
# from the same tree into the same directory, with a stamp of their own.
#
#   AGENTRUN_K8S_BIN    where the binaries go (default $AGENTRUN_CACHE/k8s-v1.20.2)
#   AGENTRUN_CACHE      cache root (default ~/.cache/agentrun); the build tree lives in
#                       $AGENTRUN_CACHE/k8s-build and can be deleted after a build.
#
# Idempotent: does nothing when the three binaries exist, report v1.20.2 and carry the
# current build stamp ($BIN/.agentrun-build == $BUILD_REV). `build.sh node --check` only
# says whether they are (exit 0) or not (exit 1), and builds nothing. Bump BUILD_REV whenever a patch
# below changes what the binaries do, so caches built before it are rebuilt once.
# The machine's apt configuration is not modified: the source package is fetched with a
# private sources list and private list/cache directories under the cache.
set -euo pipefail

VERSION=v1.20.2
CACHE="${AGENTRUN_CACHE:-$HOME/.cache/agentrun}"
BIN="${AGENTRUN_K8S_BIN:-$CACHE/k8s-$VERSION}"
WORK="$CACHE/k8s-build"
CHECK=0
if [[ ${2:-} == --check ]]; then CHECK=1; fi
case "${1:-control-plane}" in
  control-plane)
    COMPONENTS=(kube-apiserver kube-controller-manager kube-scheduler)
    STAMP="$BIN/.agentrun-build"
    # 1: vendored reflect2 replaced by Debian's 1.0.2
    # 2: kube-openapi zero-value check removed (custom resources accept "" in string fields)
    BUILD_REV=2
    ;;
  node)
    COMPONENTS=(kubelet kube-proxy)
    STAMP="$BIN/.agentrun-node-build"
    # 1: as the control plane's build 2
    BUILD_REV=1
    ;;
  *) echo "usage: build.sh [control-plane|node]" >&2; exit 2 ;;
esac

log() { echo "[build.sh] $*" >&2; }

have_all() {
  for c in "${COMPONENTS[@]}"; do
    [[ -x "$BIN/$c" ]] || return 1
  done
  "$BIN/${COMPONENTS[0]}" --version 2>/dev/null | grep -q "Kubernetes $VERSION\$" || return 1
  [[ "$(cat "$STAMP" 2>/dev/null)" == "$BUILD_REV" ]]
}

if have_all; then
  log "cached: $BIN ${COMPONENTS[*]} ($("$BIN/${COMPONENTS[0]}" --version), build $BUILD_REV)"
  exit 0
fi
if ((CHECK)); then
  log "not built: ${COMPONENTS[*]} $VERSION build $BUILD_REV in $BIN"
  exit 1
fi
# One build at a time in the shared tree (make test and a real node may both ask).
mkdir -p "$CACHE"
exec 9>"$CACHE/k8s-build.lock"
flock 9
if have_all; then
  log "built meanwhile: $BIN ${COMPONENTS[*]}"
  exit 0
fi

start=$(date +%s)

# --- 1. build dependencies (system apt, installed only if missing) -------------------
APT_DEPS=(golang-go golang-github-modern-go-reflect2-dev dpkg-dev ca-certificates)
missing=()
for p in "${APT_DEPS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""
  [[ $(id -u) -eq 0 ]] || SUDO="sudo"
  if ! apt-cache show "${missing[@]}" >/dev/null 2>&1; then
    log "apt-get update (package lists missing)"
    $SUDO apt-get update -qq
  fi
  log "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

GO=/usr/lib/go/bin/go
[[ -x $GO ]] || GO=$(command -v go)
log "go: $($GO version)"

# --- 2. fetch and unpack the source package with a private apt config -----------------
APTDIR="$WORK/apt"
SRCDIR="$WORK/src"
mkdir -p "$APTDIR/lists/partial" "$APTDIR/cache/archives/partial" "$SRCDIR"
cat >"$APTDIR/sources.list" <<SRC
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
SRC
APT_OPTS=(
  -o "Dir::Etc::SourceList=$APTDIR/sources.list"
  -o "Dir::Etc::SourceParts=/dev/null"
  -o "Dir::State::Lists=$APTDIR/lists"
  -o "Dir::Cache=$APTDIR/cache"
  -o "Debug::NoLocking=1"
)
TREE=$(find "$SRCDIR" -maxdepth 1 -mindepth 1 -type d -name 'kubernetes-*' | head -n1 || true)
if [[ -z "$TREE" || ! -f "$TREE/.agentrun-unpacked" ]]; then
  rm -rf "$SRCDIR" && mkdir -p "$SRCDIR"
  log "fetching Debian source package 'kubernetes' (bookworm)"
  apt-get "${APT_OPTS[@]}" update -qq
  (cd "$SRCDIR" && apt-get "${APT_OPTS[@]}" source --download-only -qq kubernetes >&2)
  dsc=$(ls "$SRCDIR"/kubernetes_*.dsc | head -n1)
  log "unpacking $(basename "$dsc")"
  (cd "$SRCDIR" && dpkg-source --no-check -x "$dsc" >&2)
  TREE=$(find "$SRCDIR" -maxdepth 1 -mindepth 1 -type d -name 'kubernetes-*' | head -n1)
  touch "$TREE/.agentrun-unpacked"
fi
log "source tree: $TREE"

# --- 3. GOPATH layout -------------------------------------------------------------------
export GOPATH="$WORK/gopath"
export GO111MODULE=off CGO_ENABLED=0 GOFLAGS=
export GOCACHE="$WORK/gocache"
export GOTOOLCHAIN=local
mkdir -p "$GOPATH/src/k8s.io"
ln -sfn "$TREE" "$GOPATH/src/k8s.io/kubernetes"
K="$GOPATH/src/k8s.io/kubernetes"
cd "$K"

# --- 4. patches -------------------------------------------------------------------------
# reflect2 v1.0.1 crashes under Go >= 1.18; use Debian's 1.0.2.
R2=/usr/share/gocode/src/github.com/modern-go/reflect2
if [[ ! -f vendor/github.com/modern-go/reflect2/.agentrun-debian ]]; then
  log "replacing vendored reflect2 with Debian's"
  rm -rf vendor/github.com/modern-go/reflect2
  cp -rL "$R2" vendor/github.com/modern-go/reflect2
  touch vendor/github.com/modern-go/reflect2/.agentrun-debian
fi

# Custom resources: kube-openapi's type validator treats zero values as null with
# `reflect.DeepEqual(reflect.Zero(reflect.TypeOf(data)), reflect.ValueOf(data))`, which
# compares the reflect.Value headers. Before Go 1.16 reflect.Zero allocated, so this never
# matched; since Go 1.16 reflect.Zero and the runtime's interface conversion of "" share
# one zero buffer, so a decoded "" "is" null and `type: string` fields reject it (422
# `Invalid value: "null": ... must be of type string: "null"`). Upstream removed the check
# (kubernetes/kube-openapi#230, Kubernetes 1.21, kubernetes/kubernetes#99804); do the same.
OAV=vendor/k8s.io/kube-openapi/pkg/validation/validate/type.go
if grep -q 'reflect.DeepEqual(reflect.Zero(reflect.TypeOf(data)), reflect.ValueOf(data))' "$OAV"; then
  log "patching $OAV (zero values are not null)"
  sed -i 's/if data == nil || reflect.DeepEqual(reflect.Zero(reflect.TypeOf(data)), reflect.ValueOf(data)) {/if data == nil {/' "$OAV"
fi
if ! grep -q '^\s*if data == nil {$' "$OAV" || grep -q 'reflect.Zero(reflect.TypeOf(data))' "$OAV"; then
  log "could not patch the zero-value check in $OAV"
  exit 1
fi

# -ldflags -X does not reach these in GOPATH mode with vendored staging: write the version.
for f in staging/src/k8s.io/component-base/version/base.go \
         staging/src/k8s.io/client-go/pkg/version/base.go; do
  sed -i -E \
    -e 's/^(\s*)gitMajor\b.*$/\1gitMajor = "1"/' \
    -e 's/^(\s*)gitMinor\b.*$/\1gitMinor = "20"/' \
    -e "s/^(\\s*)gitVersion\\b.*\$/\\1gitVersion = \"$VERSION\"/" \
    -e 's/^(\s*)gitCommit\b.*$/\1gitCommit = "faecb196815e248d3ecfb03c680a4507229c2a56"/' \
    -e 's/^(\s*)gitTreeState\b.*$/\1gitTreeState = "clean"/' \
    -e 's/^(\s*)buildDate\b.*$/\1buildDate = "2021-01-13T13:20:00Z"/' \
    "$f"
done

# --- 5. generated OpenAPI definitions ------------------------------------------------------
OPENAPI=pkg/generated/openapi/zz_generated.openapi.go
if [[ ! -s $OPENAPI ]]; then
  log "building openapi-gen"
  $GO build -o "$WORK/openapi-gen" ./vendor/k8s.io/kube-openapi/cmd/openapi-gen
  # Every package with a `// +k8s:openapi-gen=` tag, addressed as the apiserver imports it
  # (staging repos through their vendor/ symlinks).
  dirs=$(grep -rlE --include='*.go' '^\s*// *\+k8s:openapi-gen=' pkg cmd plugin staging/src vendor \
    | grep -v -e '_test\.go$' -e '^vendor/k8s.io/code-generator/' -e '^vendor/k8s.io/sample-apiserver/' \
             -e '^staging/src/k8s.io/code-generator/' -e '^staging/src/k8s.io/sample-apiserver/' \
    | sed -E 's|^staging/src/|vendor/|' \
    | xargs -n1 dirname | LC_ALL=C sort -u | sed 's|^|k8s.io/kubernetes/|' | paste -sd, -)
  log "generating $OPENAPI over $(tr ',' '\n' <<<"$dirs" | wc -l) packages"
  mkdir -p pkg/generated/openapi
  "$WORK/openapi-gen" \
    --input-dirs "$dirs" \
    --output-base "$GOPATH/src" \
    --output-package k8s.io/kubernetes/pkg/generated/openapi \
    -O zz_generated.openapi \
    --go-header-file hack/boilerplate/boilerplate.generatego.txt \
    --report-filename /dev/null >&2
fi

# --- 6. build ---------------------------------------------------------------------------
mkdir -p "$BIN"
rm -f "$STAMP"
for c in "${COMPONENTS[@]}"; do
  log "go build $c"
  $GO build -trimpath -ldflags "-s -w" -o "$BIN/$c.tmp" "./cmd/$c"
  mv "$BIN/$c.tmp" "$BIN/$c"
done

echo "$BUILD_REV" >"$STAMP"

if ! have_all; then
  log "built binaries do not report $VERSION: $("$BIN/${COMPONENTS[0]}" --version)"
  exit 1
fi
log "done in $(($(date +%s) - start)) s: $BIN ${COMPONENTS[*]} ($("$BIN/${COMPONENTS[0]}" --version))"
