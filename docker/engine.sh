#!/usr/bin/env bash
# Run one command with a Docker engine:
#   docker/engine.sh CMD [ARGS...]
#
# - An engine that already answers (DOCKER_HOST, or the default socket) is used and left alone.
# - Where none answers and we are root on Debian: docker.io is installed with apt-get when
#   dockerd is missing, and a dockerd of our own is started for this command only, with host
#   networking only (--bridge=none, --iptables=false: it adds no interface and no firewall
#   rule to the machine), its own socket, and its own data root, which is the image cache
#   kept between runs. When the command ends (or fails, or is interrupted), its leftover
#   containers and networks are removed, dockerd is stopped by its PID, and the mounts it
#   leaves in its exec root (the host's network namespace) are unmounted.
#
# Environment:
#   NDIS_DOCKER_ROOT  data root of a started engine, the image cache (default /var/lib/ndis-docker)
#   NDIS_DOCKER_RUN   its socket, pidfile, exec root and log (default /run/ndis-docker)
#   NDIS_DOCKER_NICE  its niceness, which its builds and containers inherit (default 10: the
#                     machine may be shared)
set -euo pipefail

NDIS_DOCKER_ROOT="${NDIS_DOCKER_ROOT:-/var/lib/ndis-docker}"
NDIS_DOCKER_RUN="${NDIS_DOCKER_RUN:-/run/ndis-docker}"
NDIS_DOCKER_NICE="${NDIS_DOCKER_NICE:-10}"
START_TIMEOUT=60
STOP_TIMEOUT=30

log() { echo "docker-engine: $*" >&2; }
die() { log "error: $*"; exit 1; }

[ $# -gt 0 ] || die "usage: $0 CMD [ARGS...]"

answers() { command -v docker >/dev/null 2>&1 && docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

if answers; then
  log "using the engine at ${DOCKER_HOST:-the default socket} (Docker $(docker version --format '{{.Server.Version}}')); it stays as it is"
  exec "$@"
fi

if [ "$(id -u)" -ne 0 ] || [ ! -r /etc/debian_version ]; then
  die "no Docker engine answers at ${DOCKER_HOST:-the default socket}. Start one (or point DOCKER_HOST at it); as root on Debian this script installs and starts one for the run."
fi

install_docker() {
  # debootstrap too where it is missing: docker/images.sh needs it for a local base image,
  # and one apt-get run is quicker than two
  local pkgs="docker.io"
  command -v debootstrap >/dev/null 2>&1 || pkgs="$pkgs debootstrap"
  log "installing $pkgs with apt-get (dockerd is missing)"
  # policy-rc.d 101: the package's maintainer scripts must not start a system-wide engine
  local policy=/usr/sbin/policy-rc.d added=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 0755 "$policy" && added=1
  fi
  local rc=0 start=$SECONDS
  # shellcheck disable=SC2086
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $pkgs >/dev/null; } || rc=$?
  [ -z "$added" ] || rm -f "$policy"
  [ "$rc" -eq 0 ] || die "apt-get install $pkgs failed (exit $rc)"
  log "installed $pkgs in $((SECONDS - start))s"
}
command -v dockerd >/dev/null 2>&1 || install_docker
command -v docker >/dev/null 2>&1 || die "docker.io is installed but the docker client is not on PATH"

mkdir -p "$NDIS_DOCKER_ROOT" "$NDIS_DOCKER_RUN"
# One engine of ours at a time: a second run waits here until the first has stopped its engine.
exec 9>"$NDIS_DOCKER_RUN/lock"
if ! flock -n 9; then
  log "another run holds $NDIS_DOCKER_RUN/lock; waiting for it"
  flock 9
fi

export DOCKER_HOST="unix://$NDIS_DOCKER_RUN/docker.sock"
pidfile="$NDIS_DOCKER_RUN/dockerd.pid"
engine_log="$NDIS_DOCKER_RUN/dockerd.log"
if [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
  die "a dockerd (pid $(cat "$pidfile")) from an earlier run still holds $pidfile but does not answer; stop it: kill $(cat "$pidfile")"
fi
rm -f "$pidfile" "$NDIS_DOCKER_RUN/docker.sock"

log "starting dockerd (data root $NDIS_DOCKER_ROOT, socket $NDIS_DOCKER_RUN/docker.sock, host networking only, nice $NDIS_DOCKER_NICE)"
nice -n "$NDIS_DOCKER_NICE" dockerd --data-root "$NDIS_DOCKER_ROOT" --exec-root "$NDIS_DOCKER_RUN/exec" --pidfile "$pidfile" \
  --host "$DOCKER_HOST" --bridge=none --iptables=false --ip6tables=false --ip-masq=false \
  >"$engine_log" 2>&1 </dev/null &
dockerd_pid=$!

stop_engine() {
  local rc=$?
  trap - EXIT INT TERM
  if kill -0 "$dockerd_pid" 2>/dev/null; then
    local leftover
    leftover="$(docker ps -aq 2>/dev/null || true)"
    if [ -n "$leftover" ]; then
      log "removing leftover containers: $(echo "$leftover" | tr '\n' ' ')"
      # shellcheck disable=SC2086
      docker rm -f $leftover >/dev/null 2>&1 || true
    fi
    docker network prune -f >/dev/null 2>&1 || true
    log "stopping dockerd (pid $dockerd_pid)"
    kill -TERM "$dockerd_pid" 2>/dev/null || true
    local waited=0
    while kill -0 "$dockerd_pid" 2>/dev/null && [ "$waited" -lt "$STOP_TIMEOUT" ]; do sleep 1; waited=$((waited + 1)); done
    if kill -0 "$dockerd_pid" 2>/dev/null; then
      log "dockerd did not stop within ${STOP_TIMEOUT}s; killing it"
      kill -KILL "$dockerd_pid" 2>/dev/null || true
    fi
  fi
  wait "$dockerd_pid" 2>/dev/null || true
  # dockerd leaves the host's network namespace bind-mounted in its exec root
  # (exec/netns/default); unmount whatever is still mounted below our run directory
  local mounts
  mounts="$(awk -v run="$NDIS_DOCKER_RUN/" 'index($5, run) == 1 {print $5}' /proc/self/mountinfo | sort -r)"
  for m in $mounts; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "could not unmount $m"; done
  exit "$rc"
}
trap stop_engine EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

waited=0
until docker version >/dev/null 2>&1; do
  if ! kill -0 "$dockerd_pid" 2>/dev/null; then
    tail -n 20 "$engine_log" >&2
    die "dockerd exited before it answered; its log: $engine_log"
  fi
  [ "$waited" -lt "$START_TIMEOUT" ] || { tail -n 20 "$engine_log" >&2; die "dockerd did not answer within ${START_TIMEOUT}s; its log: $engine_log"; }
  sleep 1; waited=$((waited + 1))
done
log "dockerd $(docker version --format '{{.Server.Version}}') answers (pid $dockerd_pid, ${waited}s)"

"$@"
