#!/usr/bin/env bash
# Runs every test of the workspace, on both store engines (SQLite and PostgreSQL 15).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/gantry-target}
. scripts/pg.sh
# The TLS tests probe the API with OpenSSL's client as an outside peer.
if ! command -v openssl >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >&2
fi
cargo test --workspace --all-targets "$@"
