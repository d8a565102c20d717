-- wrk script for bench/http_single.py: POST one no-op task per request,
-- and print a one-line JSON summary (after "BENCH ") when done.
wrk.method = "POST"
wrk.body = '{"type":"noop","args":{}}'
wrk.headers["Content-Type"] = "application/json"

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests": %d, "duration_us": %d, "non2xx": %d, "connect": %d, "read": %d, "write": %d, "timeout": %d}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout))
end
