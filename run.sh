#!/usr/bin/env bash
# Builds gantry (release) and runs `gantry up` on embedded defaults: SQLite and files in
# ./gantry-data, the control API on https://127.0.0.1:7443. Extra arguments go to `gantry up`.
set -euo pipefail
cd "$(dirname "$0")"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/gantry-target}
cargo build --release --bin gantry
exec "$CARGO_TARGET_DIR/release/gantry" up "$@"
