-- wrk script for bench/secrets.sh. The workload comes from the environment:
--   BENCH_MODE   floor | read | encrypt | create | update
--   BENCH_TOKEN  API token (sent as `Authorization: Bearer ...`)
--   BENCH_RUN    a label unique to the run (keeps the secret names of runs apart)
-- done() prints one line the shell script parses:
--   BENCH_RESULT requests duration_us p50_us p99_us max_us status_errors socket_errors
-- and, when BENCH_PERCENTILES lists some (e.g. "90 99.9"), a second one:
--   BENCH_PERCENTILES p90=US p99.9=US
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

local threads = {}
function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

local counter = 0
function request()
  counter = counter + 1
  if mode == "floor" then
    return wrk.format("GET", "/")
  elseif mode == "read" then
    return wrk.format("GET", base .. "/secrets/db-password/value", get_headers)
  elseif mode == "encrypt" then
    return wrk.format("POST", base .. "/keys/payments/encrypt", json_headers, encrypt_body)
  elseif mode == "create" then
    -- A new secret every request: bench-RUN-tTHREAD-N (one Lua state per wrk thread).
    local name = "bench-" .. run .. "-t" .. tid .. "-" .. counter
    return wrk.format("PUT", base .. "/secrets/" .. name, json_headers,
      '{"value":"value-' .. counter .. '"}')
  else
    -- update: a new version of one of 64 secrets per thread (the first 64 puts create
    -- them). A thread has at most its share of the connections in flight (16 at -c 32),
    -- so two puts to one secret rarely race; when they do, the server retries the loser.
    local name = "bench-" .. run .. "-t" .. tid .. "-" .. (counter % 64)
    return wrk.format("PUT", base .. "/secrets/" .. name, json_headers,
      '{"value":"value-' .. counter .. '"}')
  end
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
