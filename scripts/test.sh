#!/usr/bin/env bash
# Runs every test of the workspace, on both store engines (SQLite and PostgreSQL 15).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/gantry-target}
. scripts/pg.sh
# Real peers the tests use: OpenSSL's client (TLS probes) and SoftHSM2 (the PKCS#11 seal).
need=()
command -v openssl >/dev/null || need+=(openssl)
[ -f /usr/lib/softhsm/libsofthsm2.so ] || need+=(softhsm2)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq "${need[@]}" >&2
fi
cargo test --workspace --all-targets --no-fail-fast "$@"
