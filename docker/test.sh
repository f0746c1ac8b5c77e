#!/usr/bin/env bash
# `make test-docker`, CI's second step (.ci/run): the Docker scenario (docker/molecule.sh),
# then site.yml inside the execution environment (docker/ee.sh), under one engine
# (docker/engine.sh). The execution environment's image builds while the scenario runs:
# they share nothing but the engine, and each is slow mostly for its own waits.
set -euo pipefail
cd "$(dirname "$0")/.."

work="$(mktemp -d /var/tmp/ndis-test-docker.XXXXXX)"
trap 'rm -rf "$work"' EXIT
start=$SECONDS
docker/ee.sh build >"$work/ee-image" 2>"$work/ee-build.log" &
build_pid=$!

rc=0
docker/molecule.sh || rc=$?
echo "test-docker: Docker scenario finished in $((SECONDS - start))s (exit $rc)" >&2

build_rc=0
wait "$build_pid" || build_rc=$?
sed 's/^/  /' "$work/ee-build.log" >&2
[ "$rc" -eq 0 ] || exit "$rc"
[ "$build_rc" -eq 0 ] || { echo "test-docker: building the execution environment failed (exit $build_rc)" >&2; exit "$build_rc"; }

NDIS_EE_IMAGE="$(cat "$work/ee-image")" docker/ee.sh run
