#!/usr/bin/env bash
# `make image`: the project's image from the one Dockerfile, built with buildah on a base
# made from Debian packages (no Docker, no registry), and a static `pause` image for the
# real node's pod sandboxes. Output: OCI archives, cached by content, in
#   $AGENTRUN_CACHE/images/  (default ~/.cache/agentrun/images)
#     base-KEY.tar      localhost/agentrun-base:KEY   KEY = sha256 of base.sh
#     pause-KEY.tar     localhost/pause:KEY           KEY = sha256 of pause.c
#     agentrun-KEY.tar  localhost/agentrun:KEY        KEY = sha256 of the Dockerfile, its
#                       .dockerignore, the base key and every file the build context sends
# Prints one line per image on stdout: `NAME REF ARCHIVE` (tests/cluster/realnode.py reads
# them); the log goes to stderr. Idempotent: 0.1 s when all three archives exist.
# `build.sh --check` builds nothing: it prints those lines and exits 0 when the archives for
# this tree exist, else exits 1 (what `make demo` asks before it picks the real node).
#
# Run as root. Everything (debootstrap's and buildah's mounts) happens in a private mount
# namespace, so nothing stays mounted on the host even if the build is interrupted. pip
# inside the build trusts the host's CA bundle, passed as the build secret `build-ca`
# (see the Dockerfile): a secret is mounted for one RUN and never stored in a layer.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CACHE="${AGENTRUN_CACHE:-$HOME/.cache/agentrun}"
OUT="$CACHE/images"
HOST_CA=/etc/ssl/certs/ca-certificates.crt
KEEP=3  # agentrun archives kept (the newest); older ones are removed

log() { echo "[image] $*" >&2; }
sha() { sha256sum | cut -c1-16; }

# What the Dockerfile's build context sends (keep in step with .dockerignore).
context_files() {
  (cd "$REPO" && find pyproject.toml README.md operator prompts tools/runbooks -type f \
      -not -path '*/__pycache__/*' -not -name '*.pyc' -not -path '*.egg-info/*' -print0 \
    | LC_ALL=C sort -z | xargs -0 sha256sum)
}

BASE_KEY=$(sha <"$HERE/base.sh")
PAUSE_KEY=$(sha <"$HERE/pause.c")
APP_KEY=$( { echo "base $BASE_KEY"; cat "$REPO/Dockerfile" "$REPO/.dockerignore"; context_files; } | sha)
BASE_REF=localhost/agentrun-base:$BASE_KEY
PAUSE_REF=localhost/pause:$PAUSE_KEY
APP_REF=localhost/agentrun:$APP_KEY
BASE_TAR=$OUT/base-$BASE_KEY.tar
PAUSE_TAR=$OUT/pause-$PAUSE_KEY.tar
APP_TAR=$OUT/agentrun-$APP_KEY.tar

report() {
  echo "agentrun $APP_REF $APP_TAR"
  echo "pause $PAUSE_REF $PAUSE_TAR"
}

if [[ -s $BASE_TAR && -s $PAUSE_TAR && -s $APP_TAR ]]; then
  log "cached: $APP_REF, $PAUSE_REF"
  report
  exit 0
fi
if [[ ${1:-} == --check ]]; then
  log "not built for this tree: $APP_REF"
  exit 1
fi

if [[ -z ${AGENTRUN_IMAGE_NS:-} ]]; then
  [[ $(id -u) -eq 0 ]] || { log "must run as root (debootstrap, buildah)"; exit 1; }
  bash "$REPO/tests/setup/realnode-deps.sh"
  mkdir -p "$OUT"
  exec 9>"$OUT/.lock"
  flock 9  # one build at a time; the lock is inherited by the private namespace below
  AGENTRUN_IMAGE_NS=1 exec unshare --mount --propagation private -- bash "$0" "$@"
fi

START=$(date +%s)
RUNROOT=$(mktemp -d "$OUT/run.XXXXXX")
WORK=$(mktemp -d "$OUT/work.XXXXXX")
trap 'rm -rf "$RUNROOT" "$WORK"' EXIT
export TMPDIR=$WORK
B=(buildah --root "$OUT/storage" --runroot "$RUNROOT" --storage-driver overlay)

have() { "${B[@]}" inspect --type image "$1" >/dev/null 2>&1; }

# A cached archive whose image is missing from the storage (deleted, or another machine's
# cache): load it back rather than build it again.
load() {
  local ref=$1 tar=$2
  if [[ -s $tar ]] && ! have "$ref"; then
    log "loading $ref from $tar"
    local id
    id=$("${B[@]}" pull --quiet "oci-archive:$tar" | tail -n1)
    "${B[@]}" tag "$id" "$ref"
  fi
}

push() {  # ref tar: write the archive atomically
  "${B[@]}" push --quiet "$1" "oci-archive:$2.tmp:$1" >&2
  mv -f "$2.tmp" "$2"
}

# --- base ----------------------------------------------------------------------------------
if [[ ! -s $BASE_TAR ]]; then
  t=$(date +%s)
  log "base: debootstrap bookworm minbase + Debian's python3 ($BASE_REF)"
  ROOTFS=$WORK/rootfs
  mkdir "$ROOTFS"
  bash "$HERE/base.sh" "$ROOTFS"
  c=$("${B[@]}" from scratch)
  m=$("${B[@]}" mount "$c")
  tar -C "$ROOTFS" --numeric-owner --xattrs -cf - . | tar -C "$m" --numeric-owner --xattrs -xf -
  "${B[@]}" umount "$c" >/dev/null
  "${B[@]}" config --os linux --arch amd64 \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 --cmd python3 \
    --label org.opencontainers.image.description="Debian bookworm minbase with python3 (agentrun base)" \
    "$c"
  "${B[@]}" commit --quiet --format oci --rm "$c" "$BASE_REF" >/dev/null
  rm -rf "$ROOTFS"
  push "$BASE_REF" "$BASE_TAR"
  log "base built in $(($(date +%s) - t)) s"
else
  load "$BASE_REF" "$BASE_TAR"
fi

# --- pause ---------------------------------------------------------------------------------
if [[ ! -s $PAUSE_TAR ]]; then
  log "pause: static binary ($PAUSE_REF)"
  gcc -Os -static -s -o "$WORK/pause" "$HERE/pause.c"
  c=$("${B[@]}" from scratch)
  "${B[@]}" copy "$c" "$WORK/pause" /pause >/dev/null
  "${B[@]}" config --os linux --arch amd64 --entrypoint '["/pause"]' "$c"
  "${B[@]}" commit --quiet --format oci --rm "$c" "$PAUSE_REF" >/dev/null
  push "$PAUSE_REF" "$PAUSE_TAR"
fi

# --- agentrun ------------------------------------------------------------------------------
if [[ ! -s $APP_TAR ]]; then
  t=$(date +%s)
  log "agentrun: buildah bud of Dockerfile on $BASE_REF ($APP_REF)"
  ca=()
  [[ -s $HOST_CA ]] && ca=(--secret "id=build-ca,src=$HOST_CA")
  "${B[@]}" bud --isolation chroot --pull-never --layers=false --format oci \
    --build-arg "PYTHON_IMAGE=$BASE_REF" "${ca[@]}" \
    -f "$REPO/Dockerfile" -t "$APP_REF" "$REPO" >&2
  push "$APP_REF" "$APP_TAR"
  log "agentrun built in $(($(date +%s) - t)) s"
  # Older agentrun images: keep the newest $KEEP archives, and only the current one in storage.
  ls -1t "$OUT"/agentrun-*.tar 2>/dev/null | tail -n +$((KEEP + 1)) | xargs -r rm -f
  "${B[@]}" images --format '{{.Name}}:{{.Tag}}' \
    | grep '^localhost/agentrun:' | grep -vx "$APP_REF" | xargs -r "${B[@]}" rmi -f >/dev/null 2>&1 || true
fi

log "done in $(($(date +%s) - START)) s"
report
