-- wrk: the p95 latency, which wrk's --latency table leaves out, for the media_items line.
done = function(summary, latency, requests)
    io.write(string.format("p95_us=%d\n", latency:percentile(95)))
end
