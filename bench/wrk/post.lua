-- wrk script of bench/run: POSTs the benchmark's JSON body with its headers
-- (extra headers, e.g. Authorization, come from wrk's -H), and prints the
-- figures as one JSON line that bench/run parses:
--   wrk -t2 -c64 -d10s -s bench/wrk/post.lua http://127.0.0.1:PORT/bench/json
-- Arguments after "--": "get" sends a bodyless GET instead (proxy scenario).
-- Everything is set in init(): wrk then formats the request once and sends
-- the same bytes every time (no Lua call per request on the client side).
function init(args)
  local method = "POST"
  for _, a in ipairs(args) do
    if a == "get" then method = "GET" end
  end
  wrk.method = method
  if method == "POST" then
    wrk.body = '{"customer_id": 123, "name": "x"}'
    wrk.headers["Content-Type"] = "application/json"
  end
  wrk.headers["x-portico-tenant"] = "acme"
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"mean":%.1f,"stdev":%.1f,"min":%d,"max":%d,' ..
    '"p50":%d,"p90":%d,"p99":%d,"p999":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.stdev, latency.min, latency.max,
    latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9)))
end
