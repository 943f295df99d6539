#!/usr/bin/env bash
# Measures the edge's HTTP/1.1 proxying side by side with nginx and HAProxy, in one run, on
# loopback, over plain HTTP and over HTTPS:
#   upstream  nginx (1 worker) answering `return 200 "hello, world\n"` (13 bytes), plain HTTP
#   direct    wrk -> upstream
#   gantry    wrk -> gantry up --http / --https (route bench/prod/hello, host bench.test,
#             --allow-http; certificate bench/prod/bench) -> upstream
#   nginx     wrk -> nginx reverse proxy (2 workers, keep-alive upstream pool) -> upstream
#   haproxy   wrk -> HAProxy (mode http, 2 threads, http-reuse always) -> upstream
# HTTPS: the three proxies terminate TLS with the same certificate and key (ECDSA P-256, for
# bench.test, made with openssl), TLS 1.2 and 1.3, key exchange X25519 then P-256, ALPN h2
# and http/1.1, session resumption through a server-side session cache (no session-ticket
# keys); wrk keeps its connections alive, so handshakes are amortized as for plain HTTP.
# Each target gets a 2 s warm-up, then wrk --latency at three loads, BENCH_DURATION seconds
# each (default 10): saturation (-t2 -c64), moderate (-t1 -c8; closed loop, so it still
# saturates the CPUs) and light (-t1 -c8 with a 1 ms pause before each request on each
# connection: at most ~8,000 requests/s, the CPUs are not saturated); over HTTPS, saturation
# and moderate only. Then saturation again (HTTP and HTTPS, wrk -t1 -c64) with wrk on
# CPU 0 and the upstream and every proxy on CPU 1, so that a proxy's throughput depends on
# its own CPU per request rather than on sharing cores with wrk. Then, for latency,
# moderate and light again (HTTPS: moderate) with wrk, the upstream and every proxy moved
# onto one core (taskset), where no wake-up crosses vCPUs. All requests carry `Host: bench.test`. Also reads gantry's RSS idle (routes set, before any load) and under
# load (halfway through the saturation run, and the peak), and the CPU time each proxy
# process tree spends per request (from /proc/PID/stat); on stderr, each run's CPU per
# request also for wrk, the upstream and the whole machine ("cpu per request: ...").
#
# Usage: bench/edge.sh     Prints Markdown tables on stdout, wrk's and the set-up's output
#                          on stderr. About 5 minutes per round once the binary is built.
# Environment:
#   CARGO_TARGET_DIR   default /var/tmp/gantry-target-bench
#   BENCH_BIN          a gantry binary to use instead of building this tree
#   BENCH_DURATION     seconds per measured run (default 10)
#   BENCH_ROUNDS       runs of each target at each load, taking turns; the report gives
#                      the median run and the range of requests/s (default 3)
#   BENCH_PIN=1        each proxy's two workers pinned one per CPU: gantry
#                      `--edge-cpu-affinity auto`, nginx `worker_cpu_affinity auto`,
#                      HAProxy `cpu-map auto:1/1-2 0-1` (the upstream and wrk stay unpinned;
#                      the own-core and one-core loads re-pin everything as before)
#   BENCH_LOADS        which loads to run (default all: "http-saturation http-moderate
#                      http-light https-saturation https-moderate own-core one-core")
#   BENCH_GANTRY_ARGS  extra `gantry up` arguments. By default, when the binary has
#                      `--access-log`, it runs with `--access-log off` (nginx and HAProxy
#                      log nothing either); BENCH_GANTRY_ARGS="--access-log on" measures it.
#   BENCH_KEEP=1       keep the work directory (configs, logs; path on stderr)
#   BENCH_SYSCALLS=1   count each target's system calls and context switches per request
#                      during its saturation runs (perf stat; printed on stderr)
#   BENCH_PERF=1       profile gantry with `perf record -g` during its saturation run (that
#                      run's numbers are then perturbed); the report goes to stderr and to
#                      perf.txt in the work directory (kept)
# Installs nginx, haproxy and wrk with apt-get when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${BENCH_DURATION:-10}
ROUNDS=${BENCH_ROUNDS:-3}
PIN=${BENCH_PIN:-0}
LOADS=${BENCH_LOADS:-"http-saturation http-moderate http-light https-saturation https-moderate own-core one-core"}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/gantry-target-bench}

# nginx, HAProxy and wrk from Debian when missing. The script runs its own instances with
# their own configurations and ports; a system nginx or HAProxy is left alone.
missing=()
for tool in nginx haproxy wrk openssl; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq "${missing[@]}" >&2
fi
if [ -n "${BENCH_BIN:-}" ]; then
  BIN=$BENCH_BIN
else
  cargo build --release --bin gantry -q
  BIN="$CARGO_TARGET_DIR/release/gantry"
fi

WORK=$(mktemp -d -p /var/tmp gantry-bench-edge.XXXXXX)
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ "${BENCH_KEEP:-}" = 1 ]; then
    echo "kept $WORK" >&2
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Random free high ports, distinct from each other.
PORTS=()
while [ ${#PORTS[@]} -lt 8 ]; do
  p=$((20000 + RANDOM % 12000)) # below the ephemeral range (32768-60999)
  [[ " ${PORTS[*]} " == *" $p "* ]] && continue
  ss -Htln "sport = :$p" 2>/dev/null | grep -q . && continue
  PORTS+=("$p")
done
read -r P_UP P_API P_GANTRY P_NGX P_HAP P_GANTRY_TLS P_NGX_TLS P_HAP_TLS <<<"${PORTS[*]}"

# Waits (at most 10 s) until `curl ARGS...` prints something containing "hello".
wait_hello() {
  local what=$1
  shift
  for _ in $(seq 1 1000); do
    if curl -fsS --max-time 1 "$@" 2>/dev/null | grep -q hello; then return 0; fi
    sleep 0.01
  done
  echo "$what did not answer hello; logs in $WORK" >&2
  BENCH_KEEP=1
  exit 1
}

# --- the certificate all three proxies serve: ECDSA P-256, for bench.test --------------------
TLS_DIR="$WORK/tls"
mkdir -p "$TLS_DIR"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
  -subj /CN=bench.test -addext subjectAltName=DNS:bench.test \
  -keyout "$TLS_DIR/key.pem" -out "$TLS_DIR/cert.pem" 2>/dev/null
cat "$TLS_DIR/cert.pem" "$TLS_DIR/key.pem" >"$TLS_DIR/haproxy.pem"
# curl ARGS for https://bench.test:PORT/ on 127.0.0.1, checking the certificate.
tls_curl() { echo --resolve "bench.test:$1:127.0.0.1" --cacert "$TLS_DIR/cert.pem" "https://bench.test:$1/"; }

# --- upstream: nginx, 1 worker, a 13-byte answer -------------------------------------
mkdir -p "$WORK/up" "$WORK/ngx"
nginx_common() { # PREFIX
  cat <<EOF
daemon off;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 4096; }
EOF
}
nginx_http_common() { # PREFIX
  cat <<EOF
  access_log off;
  default_type text/plain;
  client_body_temp_path $1/body;
  proxy_temp_path $1/proxy;
  fastcgi_temp_path $1/fastcgi;
  uwsgi_temp_path $1/uwsgi;
  scgi_temp_path $1/scgi;
  keepalive_requests 1000000;
  keepalive_timeout 60s;
EOF
}
{
  echo "worker_processes 1;"
  nginx_common "$WORK/up"
  echo "http {"
  nginx_http_common "$WORK/up"
  cat <<EOF
  server {
    listen 127.0.0.1:$P_UP;
    location / { return 200 "hello, world\n"; }
  }
}
EOF
} >"$WORK/up/nginx.conf"
nginx -e "$WORK/up/error.log" -p "$WORK/up" -c "$WORK/up/nginx.conf" >"$WORK/up/stdout.log" 2>&1 &
PIDS+=($!)
UP_PID=$!
wait_hello "the upstream" "http://127.0.0.1:$P_UP/"

# --- nginx as reverse proxy: 2 workers, keep-alive upstream pool -------------------------
{
  echo "worker_processes 2;"
  [ "$PIN" = 1 ] && echo "worker_cpu_affinity auto;"
  nginx_common "$WORK/ngx"
  echo "http {"
  nginx_http_common "$WORK/ngx"
  cat <<EOF
  upstream u {
    server 127.0.0.1:$P_UP;
    keepalive 64;
    keepalive_requests 1000000;
  }
  ssl_certificate $TLS_DIR/cert.pem;
  ssl_certificate_key $TLS_DIR/key.pem;
  ssl_protocols TLSv1.2 TLSv1.3;
  ssl_ecdh_curve X25519:prime256v1;
  ssl_session_cache shared:SSL:10m;
  ssl_session_tickets off;
  server {
    listen 127.0.0.1:$P_NGX;
    listen 127.0.0.1:$P_NGX_TLS ssl http2;
    location / {
      proxy_pass http://u;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme;
      proxy_set_header X-Forwarded-Host \$host;
    }
  }
}
EOF
} >"$WORK/ngx/nginx.conf"
nginx -e "$WORK/ngx/error.log" -p "$WORK/ngx" -c "$WORK/ngx/nginx.conf" >"$WORK/ngx/stdout.log" 2>&1 &
PIDS+=($!)
NGX_PID=$!
wait_hello "nginx (proxy)" -H 'host: bench.test' "http://127.0.0.1:$P_NGX/"
# shellcheck disable=SC2046
wait_hello "nginx (proxy, HTTPS)" $(tls_curl "$P_NGX_TLS")

# --- HAProxy: 2 threads, mode http, connection reuse ------------------------------------
cat >"$WORK/haproxy.cfg" <<EOF
global
  nbthread 2
$([ "$PIN" = 1 ] && echo "  cpu-map auto:1/1-2 0-1")
  maxconn 4000
  ssl-default-bind-options ssl-min-ver TLSv1.2 no-tls-tickets
  ssl-default-bind-curves X25519:P-256
defaults
  mode http
  option http-keep-alive
  option forwardfor
  http-reuse always
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  timeout http-keep-alive 60s
frontend fe
  bind 127.0.0.1:$P_HAP
  bind 127.0.0.1:$P_HAP_TLS ssl crt $TLS_DIR/haproxy.pem alpn h2,http/1.1
  default_backend be
backend be
  server up 127.0.0.1:$P_UP
EOF
haproxy -db -f "$WORK/haproxy.cfg" >"$WORK/haproxy.log" 2>&1 &
PIDS+=($!)
HAP_PID=$!
wait_hello "HAProxy" -H 'host: bench.test' "http://127.0.0.1:$P_HAP/"
# shellcheck disable=SC2046
wait_hello "HAProxy (HTTPS)" $(tls_curl "$P_HAP_TLS")

# --- gantry: control API, the public edge listener, one route -----------------------------
DATA="$WORK/data"
API="https://127.0.0.1:$P_API"
if [ -n "${BENCH_GANTRY_ARGS+set}" ]; then
  read -r -a GANTRY_ARGS <<<"$BENCH_GANTRY_ARGS"
elif "$BIN" up --help 2>/dev/null | grep -q -- --access-log; then
  GANTRY_ARGS=(--access-log off)
else
  GANTRY_ARGS=()
fi
[ "$PIN" = 1 ] && GANTRY_ARGS+=(--edge-cpu-affinity auto)
"$BIN" up --data "$DATA" --api "127.0.0.1:$P_API" --http "127.0.0.1:$P_GANTRY" \
  --https "127.0.0.1:$P_GANTRY_TLS" --internal off \
  --log-format json "${GANTRY_ARGS[@]}" >"$WORK/gantry.log" 2>&1 &
PIDS+=($!)
GANTRY_PID=$!
ready=
for _ in $(seq 1 1000); do # 10 s at most
  if [ -f "$DATA/ca.pem" ] &&
    curl -fsS --max-time 1 --cacert "$DATA/ca.pem" "$API/v1/health" >/dev/null 2>&1; then
    ready=1
    break
  fi
  kill -0 "$GANTRY_PID" 2>/dev/null || break
  sleep 0.01
done
if [ -z "$ready" ]; then
  echo "gantry did not become ready; its log:" >&2
  cat "$WORK/gantry.log" >&2
  exit 1
fi
(
  export GANTRY_SERVER=$API GANTRY_TOKEN=@$DATA/admin.token GANTRY_CA=$DATA/ca.pem
  timeout 30 "$BIN" tenant create bench
  timeout 30 "$BIN" env create bench/prod --kind production
  timeout 30 "$BIN" route create bench/prod/hello --host bench.test --allow-http \
    --to "upstream:127.0.0.1:$P_UP"
  timeout 30 "$BIN" cert add bench/prod/bench --cert "$TLS_DIR/cert.pem" --key "$TLS_DIR/key.pem"
) >&2
wait_hello "gantry's edge" -H 'host: bench.test' "http://127.0.0.1:$P_GANTRY/"
# shellcheck disable=SC2046
wait_hello "gantry's edge (HTTPS)" $(tls_curl "$P_GANTRY_TLS")

# --- measuring ------------------------------------------------------------------------------
cat >"$WORK/report.lua" <<'EOF'
wrk.headers["Host"] = "bench.test"
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH_RESULT %d %d %d %d %d %d %d\n", summary.requests,
    summary.duration, latency:percentile(50), latency:percentile(99), latency.max,
    e.status, e.connect + e.read + e.write + e.timeout))
end
EOF
# Light load: each connection waits 1 ms before each request (at most ~8,000 requests/s
# with 8 connections), so the CPUs are not saturated and latency is the proxy's own.
{
  echo 'function delay() return 1 end'
  cat "$WORK/report.lua"
} >"$WORK/light.lua"

rss_kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
# CPU ticks (user + system) of a process and its children (nginx's workers).
cpu_ticks() {
  local total=0 p t
  for p in "$1" $(ps -o pid= --ppid "$1" 2>/dev/null); do
    t=$(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)
    total=$((total + t))
  done
  echo "$total"
}
HZ=$(getconf CLK_TCK)
# CPU ticks the whole machine spent busy (user, nice, system, irq, softirq; all cores).
busy_ticks() { awk '$1 == "cpu" {print $2 + $3 + $4 + $7 + $8}' /proc/stat; }
# CPU ticks of this shell's waited-for children (wrk): the second line of `times`, which
# must run in this shell (a subshell would count its own children): `times >"$WORK/times"`.
children_ticks() {
  awk -v hz="$HZ" 'NR == 2 {
    t = 0
    for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); t += a[1] * 60 + a[2] }
    printf "%d", t * hz }' "$WORK/times"
}

declare -A URL PROC
URL[direct]="http://127.0.0.1:$P_UP/"
URL[gantry]="http://127.0.0.1:$P_GANTRY/"
URL[nginx]="http://127.0.0.1:$P_NGX/"
URL[haproxy]="http://127.0.0.1:$P_HAP/"
URL[gantry-tls]="https://bench.test:$P_GANTRY_TLS/"
URL[nginx-tls]="https://bench.test:$P_NGX_TLS/"
URL[haproxy-tls]="https://bench.test:$P_HAP_TLS/"
PROC[direct]=$UP_PID
PROC[gantry]=$GANTRY_PID
PROC[nginx]=$NGX_PID
PROC[haproxy]=$HAP_PID
TARGETS="direct gantry nginx haproxy"
TLS_TARGETS="gantry-tls nginx-tls haproxy-tls"
for t in $TLS_TARGETS; do PROC[$t]=${PROC[${t%-tls}]}; done

# wrk sends the URL's host as SNI, so HTTPS URLs name bench.test; wrk runs in a mount
# namespace of its own where /etc/hosts says bench.test is 127.0.0.1 (the machine's
# /etc/hosts is left alone). Without that, SNI would be an IP address, which a server must
# ignore (RFC 6066): gantry would then serve its default certificate.
echo "127.0.0.1 bench.test" >"$WORK/hosts"
WRK=(unshare --mount sh -c 'mount --bind "$1" /etc/hosts && shift && exec wrk "$@"' sh "$WORK/hosts")
if ! unshare --mount sh -c 'mount --bind "$1" /etc/hosts' sh "$WORK/hosts" 2>/dev/null; then
  echo "cannot make a mount namespace (unshare --mount): HTTPS runs send SNI 127.0.0.1" >&2
  for t in $TLS_TARGETS; do URL[$t]=${URL[$t]/bench.test/127.0.0.1}; done
  WRK=(wrk)
fi

# What each HTTPS target negotiates with an OpenSSL client (wrk uses OpenSSL too).
declare -A TLS_INFO
for t in $TLS_TARGETS; do
  port=${URL[$t]##*:}
  port=${port%/}
  TLS_INFO[$t]=$(timeout 10 openssl s_client -connect "127.0.0.1:$port" -servername bench.test \
    </dev/null 2>/dev/null | awk '
      /^New, / { proto = $2; sub(/,$/, "", proto); cipher = $NF }
      /^Server Temp Key:/ { kx = $4; sub(/,$/, "", kx) }
      /^Peer signature type:/ { sig = $4 }
      END { printf "%s %s, key exchange %s, signature %s", proto, cipher, kx, sig }')
  echo "$t: ${TLS_INFO[$t]}" >&2
done

sleep 1
IDLE_RSS=$(rss_kb "$GANTRY_PID" VmRSS)
read -r LOAD1 _ </proc/loadavg
if awk -v l="$LOAD1" 'BEGIN { exit !(l > 1) }'; then
  echo "warning: load average $LOAD1 before the runs: other work is running; results will be noisy" >&2
fi

for t in $TARGETS $TLS_TARGETS; do
  echo "== warm-up $t" >&2
  timeout 20 "${WRK[@]}" -t2 -c64 -d2s -s "$WORK/report.lua" "${URL[$t]}" >/dev/null
done

declare -A RPS P50 P99 ERR CPU OTHER
LOAD_RSS=
run() { # LOAD TARGET THREADS CONNECTIONS SCRIPT
  local load=$1 t=$2 th=$3 c=$4 script=$5 out c0 c1 u0 u1 w0 w1 b0 b1 other n dur p50 p99 max se ke
  local sampler= perf_pid=
  echo "== $load: $t, wrk -t$th -c$c -d${DURATION}s -s $(basename "$script")" >&2
  if [ "$t" = gantry ] && [ "$load" = saturation ]; then
    (sleep $((DURATION / 2)) && rss_kb "$GANTRY_PID" VmRSS >"$WORK/load-rss") &
    sampler=$!
    if [ "${BENCH_PERF:-}" = 1 ]; then
      BENCH_KEEP=1
      (sleep 1 && timeout $((DURATION + 10)) perf record -q -F 499 -g -p "$GANTRY_PID" \
        -o "$WORK/perf.data" -- sleep $((DURATION - 2)) >/dev/null 2>&1 || true) &
      perf_pid=$!
    fi
  fi
  local stat_pid=
  if [ "${BENCH_SYSCALLS:-}" = 1 ] && [ "$load" = saturation ]; then
    local pids
    pids=$(echo "${PROC[$t]}" $(ps -o pid= --ppid "${PROC[$t]}" 2>/dev/null) | tr -s ' ' ',')
    (sleep 1 && timeout $((DURATION + 10)) perf stat -x, -e raw_syscalls:sys_enter,context-switches \
      -p "$pids" -o "$WORK/stat-$t" -- sleep $((DURATION - 2)) >/dev/null 2>&1 || true) &
    stat_pid=$!
  fi
  c0=$(cpu_ticks "${PROC[$t]}")
  u0=$(cpu_ticks "$UP_PID")
  times >"$WORK/times"
  w0=$(children_ticks)
  b0=$(busy_ticks)
  out=$(timeout $((DURATION + 30)) "${WRK[@]}" -t"$th" -c"$c" -d"${DURATION}s" --timeout 5s --latency \
    -s "$script" "${URL[$t]}")
  c1=$(cpu_ticks "${PROC[$t]}")
  u1=$(cpu_ticks "$UP_PID")
  times >"$WORK/times"
  w1=$(children_ticks)
  b1=$(busy_ticks)
  echo "$out" >&2
  if [ -n "$sampler" ]; then
    wait "$sampler"
    LOAD_RSS=$(cat "$WORK/load-rss")
  fi
  if [ -n "$perf_pid" ]; then
    wait "$perf_pid"
    perf report -i "$WORK/perf.data" --stdio --no-children --percent-limit 0.5 -g none \
      >"$WORK/perf.txt" 2>/dev/null || true
    head -80 "$WORK/perf.txt" >&2
  fi
  read -r _ n dur p50 p99 max se ke <<<"$(grep '^BENCH_RESULT' <<<"$out")"
  RPS[$load,$t]=$(awk -v n="$n" -v d="$dur" 'BEGIN { printf "%.0f", n / (d / 1e6) }')
  if [ -n "$stat_pid" ]; then
    wait "$stat_pid"
    # Per request, over the DURATION - 2 s the counters ran at the run's rate.
    awk -F, -v rps="${RPS[$load,$t]}" -v s=$((DURATION - 2)) -v t="$t" '
      $3 ~ /sys_enter/ { sc = $1 } $3 ~ /context-switches/ { cs = $1 }
      END { printf "syscalls: %s %.2f syscalls and %.2f context switches per request\n", t, sc / (rps * s), cs / (rps * s) }' \
      "$WORK/stat-$t" >&2
  fi
  P50[$load,$t]=$p50
  P99[$load,$t]=$p99
  ERR[$load,$t]=$((se + ke))
  # microseconds of CPU per request, the whole process tree of the target
  CPU[$load,$t]=$(awk -v d=$((c1 - c0)) -v hz="$HZ" -v n="$n" 'BEGIN { printf "%.1f", d / hz * 1e6 / n }')
  # Where the machine's CPU per request went (stderr): a proxy that saves CPU can still lose
  # at saturation on shared cores if wrk or the upstream spend more per request with it.
  awk -v c=$((c1 - c0)) -v w=$((w1 - w0)) -v u=$((u1 - u0)) -v b=$((b1 - b0)) -v hz="$HZ" -v n="$n" -v t="$t" -v l="$load" \
    'BEGIN { f = 1e6 / hz / n; printf "cpu per request: %s %s: target %.1f us, wrk %.1f us, upstream %.1f us, whole machine %.1f us\n", l, t, c * f, w * f, u * f, b * f }' >&2
  # Noise: what the machine spent busy beyond wrk, the upstream and the target, in cores.
  other=$((b1 - b0 - (w1 - w0) - (u1 - u0)))
  [ "$t" != direct ] && other=$((other - (c1 - c0)))
  OTHER[$load,$t]=$(awk -v o="$other" -v hz="$HZ" -v d="$dur" 'BEGIN { o = o < 0 ? 0 : o; printf "%.2f", o / hz / (d / 1e6) }')
  if awk -v o="${OTHER[$load,$t]}" 'BEGIN { exit !(o > 0.2) }'; then
    echo "warning: other processes used ${OTHER[$load,$t]} cores during this run; its numbers are noisy" >&2
  fi
}
# One measurement of a load is ROUNDS runs of every target, the targets taking turns (round r
# starts at the r-th target, so none always follows the same one) and the report giving each
# target's median run: one 10 s run on a shared 2-vCPU machine moves by 5% or more, the order
# of the runs within a round by a few %, and a proxy's lead of a few % is only shown by
# repeated, interleaved runs.
median() { tr ' ' '\n' | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
declare -A RUNS
measure() { # LOAD THREADS CONNECTIONS SCRIPT TARGETS...
  local load=$1 th=$2 c=$3 script=$4 r i t n
  shift 4
  local targets=("$@") key
  n=${#targets[@]}
  for ((r = 0; r < ROUNDS; r++)); do
    for ((i = 0; i < n; i++)); do
      t=${targets[$(((i + r) % n))]}
      run "$load" "$t" "$th" "$c" "$script"
      for key in RPS P50 P99 CPU; do
        local -n arr=$key
        RUNS[$key,$load,$t]+="${arr[$load,$t]} "
      done
      RUNS[ERR,$load,$t]=$((${RUNS[ERR,$load,$t]:-0} + ${ERR[$load,$t]}))
      RUNS[OTHER,$load,$t]=$(awk -v a="${RUNS[OTHER,$load,$t]:-0}" -v b="${OTHER[$load,$t]}" 'BEGIN { print (b > a) ? b : a }')
    done
  done
  for t in "${targets[@]}"; do
    for key in RPS P50 P99 CPU; do
      local -n arr=$key
      arr[$load,$t]=$(median <<<"${RUNS[$key,$load,$t]% }")
    done
    RPS[$load,$t]=$(printf '%.0f' "${RPS[$load,$t]}")
    P50[$load,$t]=$(printf '%.0f' "${P50[$load,$t]}")
    P99[$load,$t]=$(printf '%.0f' "${P99[$load,$t]}")
    CPU[$load,$t]=$(printf '%.1f' "${CPU[$load,$t]}")
    ERR[$load,$t]=${RUNS[ERR,$load,$t]}
    OTHER[$load,$t]=${RUNS[OTHER,$load,$t]}
  done
}
wants() { [[ " $LOADS " == *" $1 "* ]]; }
wants http-saturation && measure saturation 2 64 "$WORK/report.lua" $TARGETS
wants http-moderate && measure moderate 1 8 "$WORK/report.lua" $TARGETS
wants http-light && measure light 1 8 "$WORK/light.lua" $TARGETS
wants https-saturation && measure saturation 2 64 "$WORK/report.lua" $TLS_TARGETS
wants https-moderate && measure moderate 1 8 "$WORK/report.lua" $TLS_TARGETS
PEAK_RSS=$(rss_kb "$GANTRY_PID" VmHWM)
sleep 2
AFTER_RSS=$(rss_kb "$GANTRY_PID" VmRSS)

# --- latency on one core ------------------------------------------------------------------
# Last, because it moves every process: wrk, the upstream and all three proxies (every
# thread of each, and nginx's workers) onto CPU 0. Across vCPUs, a wake-up of a halted one
# can take milliseconds on a virtual machine, which then makes every proxy's p99 (two more
# wake-ups per request than the direct path); on one core no wake-up crosses vCPUs, and
# what is added to the p99 is the proxy's.
PINNED=
if [ "$(nproc)" -gt 1 ] && command -v taskset >/dev/null && { wants own-core || wants one-core; }; then
  pin_tree() { # PID MASK: the process, its threads and its children's, onto the CPUs of MASK
    local p
    for p in "$1" $(ps -o pid= --ppid "$1" 2>/dev/null); do
      taskset -a -p "$2" "$p" >/dev/null 2>&1 || true
    done
  }
  # First, throughput with wrk on a core of its own: the upstream and every proxy on CPU 1,
  # wrk on CPU 0, so what a proxy can serve depends on its own CPU per request and the
  # upstream's, not on sharing cores with its load generator.
  WRK_ALL=("${WRK[@]}")
  for p in "$UP_PID" "$NGX_PID" "$HAP_PID" "$GANTRY_PID"; do pin_tree "$p" 2; done
  WRK=(taskset -c 0 "${WRK_ALL[@]}")
  if wants own-core; then
    measure split-saturation 1 64 "$WORK/report.lua" $TARGETS
    measure split-saturation 1 64 "$WORK/report.lua" $TLS_TARGETS
  fi
  for p in "$UP_PID" "$NGX_PID" "$HAP_PID" "$GANTRY_PID"; do pin_tree "$p" 1; done
  if wants one-core; then
    PINNED=1
    measure one-core-moderate 1 8 "$WORK/report.lua" $TARGETS
    measure one-core-light 1 8 "$WORK/light.lua" $TARGETS
    measure one-core-moderate 1 8 "$WORK/report.lua" $TLS_TARGETS
  fi
fi

# --- report -----------------------------------------------------------------------------------
ms() { awk -v us="$1" 'BEGIN { printf "%.2f ms", us / 1000 }'; }
delta_ms() { awk -v us="$1" 'BEGIN { printf "%+.2f ms", us / 1000 }'; }
rps_cell() { # LOAD TARGET: the median requests/s, and the range over the rounds
  local runs=${RUNS[RPS,$1,$2]% }
  if [ "$ROUNDS" -gt 1 ]; then
    tr ' ' '\n' <<<"$runs" | sort -g | awk -v m="${RPS[$1,$2]}" '{ v[NR] = $1 } END { printf "%s (%.0f-%.0f)", m, v[1], v[NR] }'
  else
    echo "${RPS[$1,$2]}"
  fi
}
table() { # LOAD DESCRIPTION [TARGETS]: nothing when that load was not run (BENCH_LOADS)
  local load=$1 t ratio added cpu
  [ -n "${RPS[$load,$(awk '{ print $NF }' <<<"${3:-$TARGETS}")]:-}" ] || return 0
  echo "$2"
  echo
  echo "| target | requests/s (median; range) | p50 | p99 | req/s vs direct | added p99 vs direct | CPU per request | errors | other load |"
  echo "|---|---|---|---|---|---|---|---|---|"
  for t in ${3:-$TARGETS}; do
    [ -n "${RPS[$load,$t]:-}" ] || continue
    if [ "$t" = direct ]; then
      ratio="1.00"
      added="—"
      cpu="${CPU[$load,$t]} µs (upstream)"
    elif [ -z "${RPS[$load,direct]:-}" ]; then
      ratio="—"
      added="—"
      cpu="${CPU[$load,$t]} µs"
    else
      # Over HTTPS too, "direct" is the upstream's plain HTTP at the same load.
      ratio=$(awk -v a="${RPS[$load,$t]}" -v b="${RPS[$load,direct]}" 'BEGIN { printf "%.2f", a / b }')
      added=$(delta_ms $((${P99[$load,$t]} - ${P99[$load,direct]})))
      cpu="${CPU[$load,$t]} µs"
    fi
    echo "| $t | $(rps_cell "$load" "$t") | $(ms "${P50[$load,$t]}") | $(ms "${P99[$load,$t]}") | $ratio | $added | $cpu | ${ERR[$load,$t]} | ${OTHER[$load,$t]} cores |"
  done
  echo
}
echo "$(nproc) cores; $(nginx -v 2>&1 | sed 's/.*: //'), $(haproxy -v | head -1 | awk '{print "HAProxy " $3}'), gantry $("$BIN" --version 2>/dev/null | awk '{print $2}')${GANTRY_ARGS[*]:+ (${GANTRY_ARGS[*]})}; ${DURATION} s per run, $ROUNDS rounds (each cell: the median run; p50, p99 and CPU the medians too)$([ "$PIN" = 1 ] && echo "; every proxy's workers pinned one per CPU")"
echo
table saturation "Saturation: wrk -t2 -c64 -d${DURATION}s --latency"
table moderate "Moderate load: wrk -t1 -c8 -d${DURATION}s --latency (closed loop: still saturates the CPUs)"
table light "Light load: wrk -t1 -c8 -d${DURATION}s --latency, 1 ms pause before each request on each connection"
if [ -n "${RPS[saturation,gantry-tls]:-}${RPS[moderate,gantry-tls]:-}" ]; then
  echo "HTTPS (ratios and added p99 against the upstream reached directly over plain HTTP at the same load):"
  echo
  for t in $TLS_TARGETS; do echo "- ${t%-tls}: ${TLS_INFO[$t]}"; done
  echo
fi
table saturation "HTTPS saturation: wrk -t2 -c64 -d${DURATION}s --latency" "direct $TLS_TARGETS"
table moderate "HTTPS moderate load: wrk -t1 -c8 -d${DURATION}s --latency" "direct $TLS_TARGETS"
if [ -n "${RPS[split-saturation,gantry]:-}" ]; then
  echo "wrk on a core of its own: wrk on CPU 0; the upstream and the proxy on CPU 1"
  echo
  table split-saturation "Own core, saturation: wrk -t1 -c64 -d${DURATION}s --latency"
  table split-saturation "Own core, HTTPS saturation: wrk -t1 -c64 -d${DURATION}s --latency" "direct $TLS_TARGETS"
fi
if [ -n "$PINNED" ]; then
  echo "Latency on one core: wrk, the upstream and the proxy all on CPU 0 (no wake-up crosses vCPUs)"
  echo
  table one-core-moderate "One core, moderate load: wrk -t1 -c8 -d${DURATION}s --latency"
  table one-core-light "One core, light load: wrk -t1 -c8 -d${DURATION}s --latency, 1 ms pause before each request on each connection"
  table one-core-moderate "One core, HTTPS moderate load: wrk -t1 -c8 -d${DURATION}s --latency" "direct $TLS_TARGETS"
fi
echo "| gantry memory | value |"
echo "|---|---|"
echo "| idle RSS (route set, before any load) | $((IDLE_RSS / 1024)) MB |"
echo "| RSS under load (halfway through the saturation run) | $((${LOAD_RSS:-0} / 1024)) MB |"
echo "| peak RSS (VmHWM) | $((PEAK_RSS / 1024)) MB |"
echo "| RSS 2 s after the last run | $((AFTER_RSS / 1024)) MB |"
