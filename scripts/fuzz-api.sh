#!/usr/bin/env bash
# Fuzzes the control API from its own OpenAPI document with Schemathesis (PyPI): valid and
# invalid requests generated for every operation, sent as the admin to a real `gantry up`
# on loopback with a tenant, an environment, a KMS key and a secret to aim at. Fails on any
# 5xx answer, broken connection or panic. Bounded: FUZZ_EXAMPLES generated requests per
# operation and phase (default 25); about a minute.
#
# Usage: scripts/fuzz-api.sh   (run by scripts/test.sh after the cargo tests)
# Environment:
#   GANTRY_BIN      the binary to fuzz (default: the debug build, built if missing)
#   FUZZ_EXAMPLES   examples per operation (default 25)
#   FUZZ_SEED       Hypothesis seed, to replay a run (printed by every run)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/gantry-target}
BIN=${GANTRY_BIN:-$CARGO_TARGET_DIR/debug/gantry}
[ -x "$BIN" ] || cargo build -q --bin gantry
python3 -c "import schemathesis" 2>/dev/null || {
  echo "installing schemathesis" >&2
  python3 -m pip install -q "schemathesis==4.32.5" >&2
}

WORK=$(mktemp -d -p /var/tmp gantry-fuzz.XXXXXX)
PID=
cleanup() {
  [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

DATA=$WORK/data
PORT=$((20000 + RANDOM % 20000))
API=https://127.0.0.1:$PORT
# The edge's listeners on ephemeral loopback ports: only the API is fuzzed.
"$BIN" up --data "$DATA" --api "127.0.0.1:$PORT" --http 127.0.0.1:0 --https 127.0.0.1:0 \
  --internal 127.0.0.1:0 >"$WORK/gantry.log" 2>&1 &
PID=$!
for _ in $(seq 1 300); do
  [ -f "$DATA/ca.pem" ] && curl -fsS --cacert "$DATA/ca.pem" "$API/v1/health" >/dev/null 2>&1 && break
  kill -0 "$PID" 2>/dev/null || { cat "$WORK/gantry.log" >&2; exit 1; }
  sleep 0.1
done

export GANTRY_SERVER=$API GANTRY_TOKEN=@$DATA/admin.token GANTRY_CA=$DATA/ca.pem
"$BIN" tenant create acme >/dev/null
"$BIN" env create acme/staging --kind staging >/dev/null
"$BIN" key create acme/staging/payments >/dev/null
printf 's3cret' | "$BIN" secret put acme/staging/db-password >/dev/null

# Path parameters aimed at what exists, so requests reach the handlers behind them.
cat >"$WORK/schemathesis.toml" <<'EOF'
[parameters]
"path.tenant" = "acme"
"path.environment" = "staging"
"path.key" = "payments"
"path.secret" = "db-password"
EOF

# Schemathesis's CLI through the interpreter that has it (its `st` script may not be on PATH).
st() {
  # From the work directory: Schemathesis keeps a cache (.schemathesis/) where it runs.
  (cd "$WORK" && python3 -c 'import sys; from schemathesis.cli import schemathesis; sys.argv[0] = "st"; sys.exit(schemathesis())' "$@")
}

run() { # PHASE
  local seed=()
  [ -n "${FUZZ_SEED:-}" ] && seed=(--seed "$FUZZ_SEED")
  # Left out: sealing (every later answer would be 503 `sealed`, by design) and the
  # artifact upload (a gzip body Schemathesis cannot generate; tests/it covers it).
  st --config-file "$WORK/schemathesis.toml" run "$API/v1/openapi.json" \
    --header "Authorization: Bearer $(cat "$DATA/admin.token")" --tls-verify "$DATA/ca.pem" \
    --checks not_a_server_error --phases "$1" --mode all \
    --max-examples "${FUZZ_EXAMPLES:-25}" --workers 2 --request-timeout 20 \
    --suppress-health-check all --no-color "${seed[@]}" \
    --exclude-path-regex '^/v1/sys/(seal|unseal)$' \
    --exclude-name 'POST /v1/tenants/{tenant}/artifacts/{artifact}/versions/{version}'
}
status=0
run fuzzing || status=1
# Last: it sends requests without a token, which blocks this address for a minute (429).
run coverage || status=1
if grep -n "panicked" "$WORK/gantry.log" >&2; then
  status=1
fi
kill -0 "$PID" 2>/dev/null || { echo "gantry exited during the fuzzing" >&2; status=1; }
if [ "$status" != 0 ]; then
  echo "API fuzzing failed; the server's log:" >&2
  tail -n 50 "$WORK/gantry.log" >&2
fi
exit "$status"
