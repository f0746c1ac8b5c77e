#!/usr/bin/env bash
# `make ee`: build the execution environment of execution-environment.yml with
# `ansible-builder build` against the engine, then run site.yml inside it the way AWX runs a
# job (ansible-runner with the image, tests/test_awx.py::test_site_runs_in_the_execution_environment)
# against a local stack; the job's verify must pass. Run it under docker/engine.sh.
#   docker/ee.sh [run]   build (unless NDIS_EE_IMAGE is set or the tag exists), then run
#   docker/ee.sh build   build only; prints the image's name:tag
#
# NDIS_EE_BASE_IMAGE  the base to build on. Default: the definition's own base
#                     (quay.io/centos/centos:stream9) when it is here or can be pulled, else
#                     docker/images.sh ee-base (Debian bookworm, Python in a venv, builder's
#                     dnf calls translated to apt: the build arguments its label names)
# NDIS_EE_IMAGE       an EE image to run as it is (no build)
# The image is tagged ndis-dbops-ee:<hash of the definition, requirements.yml, the base and
# the build arguments> and ndis-dbops-ee:latest; an existing tag is not built again.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${BIN:-.venv/bin}"
EE_FILE=execution-environment.yml
PULL_TIMEOUT="${NDIS_DOCKER_PULL_TIMEOUT:-60}"

log() { echo "ee: $*" >&2; }
die() { log "error: $*"; exit 1; }
exists() { docker image inspect "$1" >/dev/null 2>&1; }

action="${1:-run}"
case "$action" in
  build | run) ;;
  *) die "usage: $0 [build|run]" ;;
esac

if [ -z "${NDIS_EE_IMAGE:-}" ]; then
  default_base="$("$BIN/python" -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["images"]["base_image"]["name"])' "$EE_FILE")"
  base="${NDIS_EE_BASE_IMAGE:-}"
  if [ -z "$base" ]; then
    if exists "$default_base" || { log "pulling $default_base"; timeout "$PULL_TIMEOUT" docker pull --quiet "$default_base" >/dev/null 2>&1; }; then
      base="$default_base"
    else
      log "$default_base cannot be pulled here: building the base locally (docker/images.sh ee-base)"
      base="$(docker/images.sh ee-base)"
    fi
  fi
  exists "$base" || die "no image $base"
  build_args=()
  [ "$base" = "$default_base" ] || build_args+=(--build-arg "EE_BASE_IMAGE=$base")
  # a base of docker/images.sh says how to build on it (its Python, package manager, Galaxy options)
  for arg in $(docker image inspect -f '{{index .Config.Labels "org.ndis.ee-build-args"}}' "$base"); do
    build_args+=(--build-arg "$arg")
  done
  tag="ndis-dbops-ee:$({ cat "$EE_FILE" requirements.yml; docker image inspect -f '{{.Id}}' "$base";
    printf '%s\n' "${build_args[@]}"; "$BIN/ansible-builder" --version; } | sha256sum | cut -c1-12)"
  if exists "$tag"; then
    log "reusing $tag (built on $base)"
  else
    context="$(mktemp -d /var/tmp/ndis-ee.XXXXXX)"
    log "ansible-builder build -t $tag on $base"
    start=$SECONDS
    if ! nice -n 10 "$BIN/ansible-builder" build -f "$EE_FILE" -c "$context" -t "$tag" --container-runtime docker \
        "${build_args[@]}" --extra-build-cli-args "--network host" -v 2 >"$context.log" 2>&1; then
      tail -n 40 "$context.log" >&2
      rm -rf "$context"
      die "ansible-builder build failed; its log: $context.log"
    fi
    rm -rf "$context" "$context.log"
    log "built $tag in $((SECONDS - start))s"
  fi
  docker tag "$tag" ndis-dbops-ee:latest
  NDIS_EE_IMAGE="$tag"
fi
if [ "$action" = build ]; then
  echo "$NDIS_EE_IMAGE"
  exit 0
fi
export NDIS_EE_IMAGE NDIS_EE_REQUIRED=1
log "running site.yml in $NDIS_EE_IMAGE"
exec "$BIN/python" -m pytest -q -s -p no:cacheprovider "tests/test_awx.py::test_site_runs_in_the_execution_environment"
