#!/usr/bin/env bash
# `make molecule-docker`: the Docker scenario (molecule/docker) with the images this machine
# can have. Run it under docker/engine.sh (the Makefile does), which provides the engine.
#
# NDIS_DOCKER_IMAGES  registry: pgvector/pgvector:pg16 and python:3.11-slim, pulled as needed
#                     local:    the images docker/images.sh builds (no registry needed)
#                     auto (default): registry when both images are here or can be pulled, else local
# NDIS_DOCKER_PG_IMAGE / NDIS_DOCKER_MOTO_IMAGE, when set, name the images outright.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${BIN:-.venv/bin}"
PULL_TIMEOUT="${NDIS_DOCKER_PULL_TIMEOUT:-60}"
REGISTRY_PG=pgvector/pgvector:pg16
REGISTRY_MOTO=python:3.11-slim

log() { echo "molecule-docker: $*" >&2; }

have_or_pull() {
  docker image inspect "$1" >/dev/null 2>&1 && return 0
  log "pulling $1"
  timeout "$PULL_TIMEOUT" docker pull --quiet "$1" >/dev/null 2>&1
}

mode="${NDIS_DOCKER_IMAGES:-auto}"
case "$mode" in
  registry | local | auto) ;;
  *) log "error: NDIS_DOCKER_IMAGES=$mode: use registry, local or auto"; exit 2 ;;
esac
if [ -z "${NDIS_DOCKER_PG_IMAGE:-}" ] || [ -z "${NDIS_DOCKER_MOTO_IMAGE:-}" ]; then
  if [ "$mode" = auto ]; then
    if have_or_pull "$REGISTRY_PG" && have_or_pull "$REGISTRY_MOTO"; then
      mode=registry
    else
      log "the registry images cannot be pulled here: building them locally (docker/images.sh)"
      mode=local
    fi
  fi
  if [ "$mode" = local ]; then
    : "${NDIS_DOCKER_PG_IMAGE:=$(docker/images.sh pgvector)}"
    : "${NDIS_DOCKER_MOTO_IMAGE:=$(docker/images.sh moto)}"
  fi
  : "${NDIS_DOCKER_PG_IMAGE:=$REGISTRY_PG}" "${NDIS_DOCKER_MOTO_IMAGE:=$REGISTRY_MOTO}"
fi
export NDIS_DOCKER_PG_IMAGE NDIS_DOCKER_MOTO_IMAGE
log "images: $NDIS_DOCKER_PG_IMAGE, $NDIS_DOCKER_MOTO_IMAGE"
exec "$BIN/molecule" test -s docker
