-- wrk script for bench/run.sh: POSTs a small non-streaming chat completion
-- request and, at the end, prints one machine-readable line that run.sh
-- parses (latencies in microseconds, straight from wrk's histogram).
--
-- There is deliberately no response() callback: defining one makes wrk hand
-- every response to Lua, which costs more CPU on the load generator than the
-- systems under test spend. Correctness of the answers is checked once, with
-- curl, before the load starts; here wrk counts non-2xx/3xx answers as
-- `status` errors and run.sh fails on any error.

wrk.method = "POST"
wrk.body = '{"model":"bench","messages":[{"role":"user","content":"hello"}]}'
wrk.headers["Content-Type"] = "application/json"

function done(summary, latency, requests)
  local e = summary.errors
  local seconds = summary.duration / 1e6
  io.write(string.format(
    "BENCH requests=%d duration_s=%.3f rps=%.1f mean_us=%.1f p50_us=%d p90_us=%d p99_us=%d max_us=%d " ..
    "err_connect=%d err_read=%d err_write=%d err_status=%d err_timeout=%d\n",
    summary.requests, seconds, summary.requests / seconds, latency.mean,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end
