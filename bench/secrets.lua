-- wrk script for bench/secrets.sh. The workload comes from the environment:
--   BENCH_TARGET gantry | openbao | floor (which API the requests are written for)
--   BENCH_MODE   floor | read | encrypt | create | update
--   BENCH_TOKEN  API token (gantry: `Authorization: Bearer ...`; OpenBao: `X-Vault-Token`)
--   BENCH_RUN    a label unique to the run (keeps the secret names of runs apart)
-- done() prints one line the shell script parses:
--   BENCH_RESULT requests duration_us p50_us p99_us max_us status_errors socket_errors
-- and, when BENCH_PERCENTILES lists some (e.g. "90 99.9"), a second one:
--   BENCH_PERCENTILES p90=US p99.9=US
local target = os.getenv("BENCH_TARGET") or "gantry"
local mode = os.getenv("BENCH_MODE") or "read"
local token = os.getenv("BENCH_TOKEN") or ""
local run = os.getenv("BENCH_RUN") or "r"
local base = "/v1/tenants/acme/environments/staging"

local get_headers = { ["authorization"] = "Bearer " .. token }
local json_headers = {
  ["authorization"] = "Bearer " .. token,
  ["content-type"] = "application/json",
}
local encrypt_body = '{"plaintext_b64":"aGVsbG8gd29ybGQ="}'

-- The same workloads in OpenBao's API (KV v2 at secret/, transit at transit/).
local bao_headers = {
  ["x-vault-token"] = token,
  ["content-type"] = "application/json",
}
local bao_encrypt_body = '{"plaintext":"aGVsbG8gd29ybGQ="}'

local threads = {}
function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

-- The secret a write goes to: a new one every request for "create" (bench-RUN-tTHREAD-N,
-- one Lua state per wrk thread); for "update" one of 64 per thread (the first 64 writes
-- create them). A thread has at most its share of the connections in flight (16 at -c 32),
-- so two writes to one secret rarely race; when they do, gantry retries the loser.
local function write_name(counter)
  local n = mode == "create" and counter or counter % 64
  return "bench-" .. run .. "-t" .. tid .. "-" .. n
end

local counter = 0
function request()
  counter = counter + 1
  if target == "openbao" then
    if mode == "read" then
      return wrk.format("GET", "/v1/secret/data/db-password", bao_headers)
    elseif mode == "encrypt" then
      return wrk.format("POST", "/v1/transit/encrypt/payments", bao_headers, bao_encrypt_body)
    end
    return wrk.format("POST", "/v1/secret/data/" .. write_name(counter), bao_headers,
      '{"data":{"value":"value-' .. counter .. '"}}')
  end
  if mode == "floor" then
    return wrk.format("GET", "/")
  elseif mode == "read" then
    return wrk.format("GET", base .. "/secrets/db-password/value", get_headers)
  elseif mode == "encrypt" then
    return wrk.format("POST", base .. "/keys/payments/encrypt", json_headers, encrypt_body)
  end
  return wrk.format("PUT", base .. "/secrets/" .. write_name(counter), json_headers,
    '{"value":"value-' .. counter .. '"}')
end

function done(summary, latency, requests)
  local wanted = os.getenv("BENCH_PERCENTILES") or ""
  if wanted ~= "" then
    local line = "BENCH_PERCENTILES"
    for p in wanted:gmatch("%S+") do
      line = line .. string.format(" p%s=%d", p, latency:percentile(tonumber(p)))
    end
    io.write(line .. "\n")
  end
  local e = summary.errors
  io.write(string.format("BENCH_RESULT %d %d %d %d %d %d %d\n",
    summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), latency.max,
    e.status, e.connect + e.read + e.write + e.timeout))
end
