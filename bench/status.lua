-- wrk script: counts the requests wrk sent and the answers it got, by status
-- class, and writes "sent=<n> ok=<n> other=<n>" (ok = status 200) to the file
-- named by BENCH_STATUS_FILE when the run is done. Used by bench/run
-- (secret_read) to compare the requests served with the audit log.
local threads = {}

function setup(thread)
    table.insert(threads, thread)
end

function init(args)
    sent, ok, other = 0, 0, 0
    req = wrk.format()
end

function request()
    sent = sent + 1
    return req
end

function response(status, headers, body)
    if status == 200 then ok = ok + 1 else other = other + 1 end
end

function done(summary, latency, requests)
    local s, o, x = 0, 0, 0
    for _, t in ipairs(threads) do
        s = s + t:get("sent"); o = o + t:get("ok"); x = x + t:get("other")
    end
    local path = os.getenv("BENCH_STATUS_FILE")
    if path then
        local f = assert(io.open(path, "w"))
        f:write(string.format("sent=%d ok=%d other=%d\n", s, o, x))
        f:close()
    end
end
