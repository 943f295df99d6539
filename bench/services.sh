#!/usr/bin/env bash
# Measures services on one machine: the time from `gantry service deploy` to all replicas
# healthy for a 3-replica service (examples/customers-mngr), the same for a new revision
# rolled over them, and gantry's RSS with 20 running replicas.
#
# Usage: bench/services.sh   Markdown on stdout, progress on stderr. About 1 minute once
#                            built. CARGO_TARGET_DIR defaults to /var/tmp/gantry-target-bench.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/gantry-target-bench}
cargo build --release --bin gantry -q
cargo build --release -q --manifest-path examples/customers-mngr/Cargo.toml \
  --target-dir "$CARGO_TARGET_DIR/customers-mngr-example"
BIN="$CARGO_TARGET_DIR/release/gantry"
APP="$CARGO_TARGET_DIR/customers-mngr-example/release/customers-mngr"

WORK=$(mktemp -d -p /var/tmp gantry-bench-services.XXXXXX)
# Searchable by other users, so that `--isolation auto` can run replicas as tenant users
# (in a bubblewrap sandbox where it works), as a production install does.
chmod 711 "$WORK"
GPID=""
cleanup() {
  if [ -n "$GPID" ]; then
    "$BIN" service stop acme/bench/customers >/dev/null 2>&1 || true
    sleep 4
    kill "$GPID" 2>/dev/null || true
    wait "$GPID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$BIN" up --data "$WORK/data" --api "127.0.0.1:$PORT" --https 127.0.0.1:0 --http 127.0.0.1:0 \
  --internal 127.0.0.1:0 --access-log off >"$WORK/gantry.log" 2>&1 &
GPID=$!
for _ in $(seq 1 100); do
  grep -q "gantry is ready" "$WORK/gantry.log" && break
  sleep 0.1
done
export GANTRY_SERVER="https://127.0.0.1:$PORT" GANTRY_CA="$WORK/data/ca.pem" \
  GANTRY_TOKEN="@$WORK/data/admin.token" GANTRY_CONFIG="$WORK/profile.json"
g() { "$BIN" "$@"; }
g tenant create acme >/dev/null
g env create acme/bench --kind staging >/dev/null
printf 'bench-password' | g secret put acme/bench/db-password >/dev/null
mkdir -p "$WORK/dist" && cp "$APP" "$WORK/dist/customers-mngr"
g artifact push acme/customers-mngr@1.0.0 "$WORK/dist" >/dev/null

# Seconds until the service's stable revision is $1 with $2 healthy replicas of it.
until_stable() {
  local rev=$1 n=$2 start=$3
  for _ in $(seq 1 1200); do
    if g service status acme/bench/customers -o json | python3 -c "
import json,sys
s=json.load(sys.stdin); r=s['replicas']
ok = s['stable_revision']==$rev and len(r)==$n and all(x['healthy'] and x['revision']==$rev for x in r)
sys.exit(0 if ok else 1)"; then
      python3 -c "import time; print(f'{time.time()-$start:.2f}')"
      return 0
    fi
    sleep 0.05
  done
  echo "timeout" >&2
  return 1
}
deploy() {
  g service deploy acme/bench/customers --artifact customers-mngr@1.0.0 --cmd ./customers-mngr \
    --replicas "$1" --env "VERSION=$2" --secret DB_PASSWORD=db-password >/dev/null
}
now() { python3 -c 'import time; print(time.time())'; }

t0=$(now); deploy 3 v1; first=$(until_stable 1 3 "$t0")
echo "first deploy, 3 replicas: ${first}s" >&2
t0=$(now); deploy 3 v2; second=$(until_stable 2 3 "$t0")
echo "rollout of a new revision over 3 replicas: ${second}s" >&2
g service scale acme/bench/customers 20 >/dev/null
t0=$(now); twenty=$(until_stable 2 20 "$t0")
echo "scale 3 -> 20: ${twenty}s" >&2
sleep 2
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
gantry_rss=$(rss_kb "$GPID")
# Every process of each replica's process group (the program, and its sandbox's monitor
# when it runs in one).
replica_rss=$(g service status acme/bench/customers -o json | python3 -c "
import json,os,sys
groups={r['pid'] for r in json.load(sys.stdin)['replicas'] if r['pid']}
total=0
for p in filter(str.isdigit, os.listdir('/proc')):
    try:
        stat=open(f'/proc/{p}/stat').read().rsplit(')',1)[1].split()
        if int(stat[2]) in groups:
            for line in open(f'/proc/{p}/status'):
                if line.startswith('VmRSS:'): total+=int(line.split()[1])
    except (OSError, IndexError, ValueError):
        pass
print(total)")

isolation=$(python3 -c "
import re,sys
m=re.search(r'isolation\W{1,4}(none|users|bubblewrap)', open(sys.argv[1]).read())
print(m.group(1) if m else 'unknown')" "$WORK/gantry.log")
cat <<MD
| measure | value |
|---|---|
| replica isolation | ${isolation:-unknown} |
| \`service deploy\` to 3 healthy replicas (first revision) | ${first} s |
| new revision rolled over 3 replicas (start, health, register, drain 2 s, stop; one at a time) | ${second} s |
| \`service scale\` 3 → 20, all healthy and registered | ${twenty} s |
| gantry RSS with 20 running replicas | $((gantry_rss / 1024)) MB |
| the 20 replicas' RSS together | $((replica_rss / 1024)) MB |
MD
