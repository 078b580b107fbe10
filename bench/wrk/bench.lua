-- wrk script of the productos benchmarks.
--
--   wrk ... -s bench.lua URL -- get  <path template> [lo hi]   GET; each "{n}" in the template becomes a random
--                                                              integer in lo..hi, drawn anew for every request
--   wrk ... -s bench.lua URL -- post <path> <json body>        POST the body (Content-Type: application/json)
--
-- done() prints one line, "BENCH_JSON {...}", with the totals, errors and latency percentiles (microseconds).

local threads = {}

function setup(thread)
  thread:set("thread_id", #threads + 1)
  table.insert(threads, thread)
end

local mode, template, lo, hi, body

function init(args)
  math.randomseed(os.time() * 1000 + (thread_id or 0) * 7919)
  mode = args[1] or "get"
  template = args[2] or "/"
  if mode == "post" then
    body = args[3] or "{}"
    wrk.headers["Content-Type"] = "application/json"
  else
    lo = tonumber(args[3] or "1")
    hi = tonumber(args[4] or "1")
  end
end

function request()
  if mode == "post" then
    return wrk.format("POST", template, nil, body)
  end
  local path = template:gsub("{n}", function() return tostring(math.random(lo, hi)) end)
  return wrk.format("GET", path)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"duration_us":%d,"requests":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"mean":%.1f,"max":%d,"p50":%d,"p90":%d,"p99":%d,"p999":%d}}\n',
    summary.duration, summary.requests, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.max, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9)))
end
