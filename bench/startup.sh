#!/usr/bin/env bash
# Measures `gantry up` (control plane and edge) start-up (process start to first successful /v1/health over HTTPS)
# on a fresh data directory and on a restart, and idle RSS, with the release build.
# Usage: bench/startup.sh [RUNS]   (default 5). Prints a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-5}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/gantry-target}
cargo build --release --bin gantry -q
BIN="$CARGO_TARGET_DIR/release/gantry"
WORK=$(mktemp -d)
PID=
trap '[ -n "$PID" ] && kill "$PID" 2>/dev/null; kill $(jobs -p) 2>/dev/null; rm -rf "$WORK"' EXIT
PORT=$((20000 + RANDOM % 20000))

now_ms() { date +%s%3N; }

# Starts gantry on $1; sets PID and ELAPSED (ms until /v1/health answered; bounded: 10 s).
start_and_time() {
  local data=$1 t0
  t0=$(now_ms)
  "$BIN" up --data "$data" --api "127.0.0.1:$PORT" --http 127.0.0.1:0 --internal 127.0.0.1:0 >/dev/null 2>&1 &
  PID=$!
  for _ in $(seq 1 2000); do
    if [ -f "$data/ca.pem" ] && curl -fsS --cacert "$data/ca.pem" "https://127.0.0.1:$PORT/v1/health" >/dev/null 2>&1; then
      ELAPSED=$(( $(now_ms) - t0 )); return 0
    fi
    sleep 0.005
  done
  echo "gantry did not become ready" >&2; return 1
}

rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

fresh=(); restart=(); rss=()
for i in $(seq 1 "$RUNS"); do
  d="$WORK/data-$i"
  start_and_time "$d"; fresh+=("$ELAPSED")
  kill "$PID"; wait "$PID" 2>/dev/null || true
  start_and_time "$d"; restart+=("$ELAPSED")
  sleep 2
  rss+=("$(rss_kb "$PID")")
  kill "$PID"; wait "$PID" 2>/dev/null || true
done

echo "| measure (median of $RUNS) | value |"
echo "|---|---|"
echo "| ready, first start (CA, schema, admin) | $(printf '%s\n' "${fresh[@]}" | median) ms |"
echo "| ready, restart | $(printf '%s\n' "${restart[@]}" | median) ms |"
echo "| idle RSS | $(( $(printf '%s\n' "${rss[@]}" | median) / 1024 )) MB |"
