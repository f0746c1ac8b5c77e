#!/bin/sh
# The part of the official postgres image's entrypoint that the Docker scenario uses: on the
# first start, initdb with POSTGRES_USER (default postgres) and POSTGRES_PASSWORD (required),
# scram-sha-256 for every connection, listen_addresses='*', and POSTGRES_DB created when it
# is not `postgres`; then `postgres ARGS` runs as PID 1 (`-p PORT`, `-c name=value` as there).
set -eu
if [ "${1:-}" != postgres ]; then
  exec "$@"
fi
shift
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  : "${POSTGRES_PASSWORD:?is required: the password of POSTGRES_USER (this image has no trust mode)}"
  user="${POSTGRES_USER:-postgres}"
  pwfile="$(mktemp)"
  printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
  initdb -D "$PGDATA" --username="$user" --pwfile="$pwfile" --auth=scram-sha-256 \
    --encoding=UTF8 --locale=C >/dev/null
  rm -f "$pwfile"
  printf "listen_addresses = '*'\nunix_socket_directories = '/var/run/postgresql'\n" >> "$PGDATA/postgresql.conf"
  printf 'host all all all scram-sha-256\n' >> "$PGDATA/pg_hba.conf"
  db="${POSTGRES_DB:-$user}"
  if [ "$db" != postgres ]; then
    # a server on the socket only, for the one statement; then the real one starts below
    pg_ctl -D "$PGDATA" -w -o "-c listen_addresses=''" start >/dev/null
    PGPASSWORD="$POSTGRES_PASSWORD" psql -h /var/run/postgresql -U "$user" -d postgres -v ON_ERROR_STOP=1 -q \
      -v db="$db" -c 'CREATE DATABASE :"db"'
    pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
  fi
  echo "docker-entrypoint: initialised $PGDATA (PostgreSQL $(postgres --version | awk '{print $NF}'))"
fi
exec postgres "$@"
