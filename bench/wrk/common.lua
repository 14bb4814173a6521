-- Shared by the scenario scripts: fixture loading and a machine-readable summary.
-- A scenario script is run as: wrk ... -s bench/wrk/<scenario>.lua URL -- FIXTURES.lua
local M = {}

-- Each wrk thread prepares its requests once; request() then only rotates through
-- them, so the load generator spends next to nothing per request.
function M.prepare(fixtures_path, scenario, method, extra_headers)
  local fixtures = dofile(fixtures_path)[scenario]
  assert(fixtures and #fixtures > 0, "no fixtures for " .. scenario)
  local requests = {}
  for i, f in ipairs(fixtures) do
    local headers = { ["Authorization"] = "Bearer " .. f.token }
    for k, v in pairs(extra_headers or {}) do headers[k] = v end
    requests[i] = wrk.format(method, f.path, headers, f.body)
  end
  return requests
end

-- Installs wrk's hooks for a scenario: init prepares its requests, request rotates
-- through them, done prints the summary.
function M.scenario(name, method, extra_headers)
  local requests, n = nil, 0
  init = function(args)
    requests = M.prepare(args[1], name, method, extra_headers)
  end
  request = function()
    n = n % #requests + 1
    return requests[n]
  end
  done = M.done
end

-- One line of JSON that bench/run.py parses. Latencies in microseconds; "status" is
-- wrk's count of responses with a status >= 400.
function M.done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d, ' ..
    '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end

return M
