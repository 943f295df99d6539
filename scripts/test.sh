#!/usr/bin/env bash
# Runs every test of the workspace, on both store engines (SQLite and PostgreSQL 15).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/gantry-target}
. scripts/pg.sh
# Each PostgreSQL test makes a database of its own; drop what earlier runs left behind so a
# reused cluster does not grow without end.
"$PG_BIN/psql" "$GANTRY_TEST_PG" -qAt -c "SELECT datname FROM pg_database WHERE datname LIKE 'gantry\_%'" |
  while read -r db; do "$PG_BIN/psql" "$GANTRY_TEST_PG" -q -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)"; done
# Real peers the tests use: OpenSSL's client (TLS probes), SoftHSM2 (the PKCS#11 seal),
# pebble with pebble-challtestsrv (an ACME CA and its DNS/HTTP challenge test server) and
# bubblewrap (the replicas' sandbox).
need=()
command -v openssl >/dev/null || need+=(openssl)
command -v bwrap >/dev/null || need+=(bubblewrap)
[ -f /usr/lib/softhsm/libsofthsm2.so ] || need+=(softhsm2)
command -v pebble >/dev/null || need+=(pebble)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq "${need[@]}" >&2
fi
# An S3-compatible server for the object-store tests (moto's, from PyPI).
command -v moto_server >/dev/null || { echo "installing moto[server]" >&2; python3 -m pip install -q "moto[server]" >&2; }
# sslyze, a TLS scanner, probes the edge's HTTPS listener.
python3 -m sslyze --help >/dev/null 2>&1 || { echo "installing sslyze" >&2; python3 -m pip install -q sslyze >&2; }
cargo test --workspace --all-targets --no-fail-fast "$@"
# The control API fuzzed from its OpenAPI document (Schemathesis, installed from PyPI).
bash scripts/fuzz-api.sh
