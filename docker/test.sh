#!/usr/bin/env bash
# `make test-docker`, CI's second step (.ci/run): the Docker scenario (docker/molecule.sh)
# and site.yml inside the execution environment (docker/ee.sh: build, then run), under one
# engine (docker/engine.sh). The two run side by side, on their own ports and stacks: they
# share nothing but the engine and the image cache, and each spends much of its time
# waiting (on PyPI, on its server). The execution environment's output follows the
# scenario's. NDIS_DOCKER_SERIAL=1 runs the execution environment after the scenario instead
# (its output as it comes; each step's time then stands alone).
set -euo pipefail
cd "$(dirname "$0")/.."

work="$(mktemp -d /var/tmp/ndis-test-docker.XXXXXX)"
trap 'rm -rf "$work"' EXIT
start=$SECONDS
if [ "${NDIS_DOCKER_SERIAL:-0}" = 1 ]; then
  rc=0
  docker/molecule.sh || rc=$?
  echo "test-docker: the Docker scenario finished in $((SECONDS - start))s (exit $rc)" >&2
  ee_rc=0
  docker/ee.sh run || ee_rc=$?
  echo "test-docker: execution environment (docker/ee.sh run) finished after $((SECONDS - start))s (exit $ee_rc)" >&2
  [ "$rc" -eq 0 ] || exit "$rc"
  exit "$ee_rc"
fi
( set +e; docker/ee.sh run >"$work/ee.log" 2>&1; echo $? >"$work/ee.rc"; echo "$SECONDS" >"$work/ee.end" ) &
ee_pid=$!

rc=0
docker/molecule.sh || rc=$?
echo "test-docker: the Docker scenario finished in $((SECONDS - start))s (exit $rc)" >&2

wait "$ee_pid" || true
ee_rc="$(cat "$work/ee.rc" 2>/dev/null || echo 1)"
echo "test-docker: execution environment (docker/ee.sh run), finished after $(( $(cat "$work/ee.end" 2>/dev/null || echo "$SECONDS") - start ))s (exit $ee_rc):" >&2
cat "$work/ee.log"
[ "$rc" -eq 0 ] || exit "$rc"
exit "$ee_rc"
