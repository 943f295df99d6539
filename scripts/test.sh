#!/usr/bin/env bash
# Runs every test of the workspace, on both store engines (SQLite and PostgreSQL 15).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/gantry-target}
. scripts/pg.sh
cargo test --workspace --all-targets "$@"
