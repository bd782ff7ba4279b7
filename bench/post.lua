-- wrk script: POST the body file named by BODY_FILE with the key in SECRET_KEY.
local f = assert(io.open(os.getenv("BODY_FILE"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("SECRET_KEY")

local statuses = {}
response = function(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

done = function(summary, latency, requests)
  -- wrk runs each thread in its own Lua state; the counts above are per thread.
  io.write(string.format("LATENCY_US p50=%d p99=%d max=%d\n",
    latency:percentile(50), latency:percentile(99), latency.max))
end
