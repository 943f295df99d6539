#!/usr/bin/env bash
# Starts a throwaway PostgreSQL 15 cluster on 127.0.0.1:55432 for the tests of the
# PostgreSQL store engine (installing Debian's postgresql-15 if needed), and exports
# GANTRY_TEST_PG. Source it: `. scripts/pg.sh`. Idempotent: an already running cluster is
# reused.
set -euo pipefail
PG_PORT=${GANTRY_PG_PORT:-55432}
PG_DIR=${GANTRY_PG_DIR:-/var/tmp/gantry-pg}
PG_BIN=/usr/lib/postgresql/15/bin

if [ ! -x "$PG_BIN/initdb" ]; then
  echo "installing postgresql-15" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq postgresql-15 >&2
fi

as_pg() {
  if [ "$(id -u)" = 0 ]; then su postgres -s /bin/sh -c "$*"; else sh -c "$*"; fi
}

if [ ! -f "$PG_DIR/PG_VERSION" ]; then
  mkdir -p "$PG_DIR"
  [ "$(id -u)" = 0 ] && chown postgres:postgres "$PG_DIR"
  as_pg "$PG_BIN/initdb -D $PG_DIR -A trust -U postgres --no-sync" >/dev/null
fi
if ! as_pg "$PG_BIN/pg_ctl -D $PG_DIR status" >/dev/null 2>&1; then
  as_pg "$PG_BIN/pg_ctl -D $PG_DIR -l $PG_DIR/server.log -w -t 60 \
    -o \"-p $PG_PORT -h 127.0.0.1 -k /tmp -c max_connections=300 -c fsync=off\" start" >/dev/null
fi
export GANTRY_TEST_PG="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
echo "PostgreSQL ready: $GANTRY_TEST_PG" >&2
