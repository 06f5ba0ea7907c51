# Media scenarios of bench/run (sourced by it; uses its helpers). See bench/README.md.
#   scenario=media_scan files=<n> scan_s=<..> rescan_s=<..>
#   scenario=media_items rps=<..> p50_ms=<..> p95_ms=<..> p99_ms=<..>
#   scenario=media_stream mb_s=<..> disk_mb_s=<..> ratio=<..>

MEDIA_FILES=${BENCH_MEDIA_FILES:-20000}
MEDIA_STREAM_MB=64
MEDIA_STREAM_CONNECTIONS=16
MEDIA_PY="$BENCH/media.py"

# 20,000 empty files named by the conventions, ffprobe off: the scan, then a rescan of the
# unchanged library. Leaves the server running for media_items when it runs next.
media_library() {
    [[ -n ${MEDIA_DIR:-} ]] && return
    MEDIA_DIR=$(mktemp -d /tmp/nexus-bench-media.XXXXXX)
    TMP_DIRS+=("$MEDIA_DIR")
    log "media: generating $MEDIA_FILES files"
    child python3 "$MEDIA_PY" generate "$MEDIA_DIR" "$MEDIA_FILES"
    NEXUS_ENV=(NEXUS_ADMIN_PASSWORD="$BENCH_ADMIN_PASSWORD" NEXUS_RATE_LIMITS__ENABLED=false
        NEXUS_MEDIA__FFPROBE= NEXUS_MEDIA__WATCH_INTERVAL_MS=0)
    start_nexus
    NEXUS_ENV=()
    local out
    scratch_file out media-scan
    child python3 "$MEDIA_PY" scan "$NEXUS_PORT" "$BENCH_ADMIN_PASSWORD" "$MEDIA_DIR" "$MEDIA_FILES" >"$out"
    read -r MEDIA_SCAN_S MEDIA_RESCAN_S MEDIA_TOKEN MEDIA_LIBRARY <"$out"
    MEDIA_PID=$NEXUS_PID
    MEDIA_PORT=$NEXUS_PORT
}

scenario_media_scan() {
    media_library
    emit media_scan "scenario=media_scan files=$MEDIA_FILES scan_s=$MEDIA_SCAN_S rescan_s=$MEDIA_RESCAN_S"
}

scenario_media_items() {
    media_library
    local url="http://127.0.0.1:$MEDIA_PORT/api/media/Items?ParentId=$MEDIA_LIBRARY&Recursive=true&IncludeItemTypes=Movie&StartIndex=5900&Limit=100"
    local auth="Authorization: MediaBrowser Client=\"bench\", Device=\"bench\", DeviceId=\"bench-1\", Version=\"1.0\", Token=\"$MEDIA_TOKEN\""
    if ((WARMUP > 0)); then
        child wrk -t"$THREADS" -c"$CONNECTIONS" -d"${WARMUP}s" -H "$auth" "$url" >/dev/null
    fi
    local out_file out
    scratch_file out_file wrk
    child wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$BENCH/media_items.lua" -H "$auth" "$url" >"$out_file"
    out=$(<"$out_file")
    local rps p50 p99 p95_us non2xx
    rps=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
    p50=$(awk '/^ +50% / { print $2 }' <<<"$out")
    p99=$(awk '/^ +99% / { print $2 }' <<<"$out")
    p95_us=$(awk -F= '/^p95_us=/ { print $2 }' <<<"$out")
    non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' <<<"$out")
    local line="scenario=media_items rps=$rps p50_ms=$(to_ms "$p50") p95_ms=$(awk -v u="$p95_us" 'BEGIN { printf "%.2f", u / 1000 }') p99_ms=$(to_ms "$p99")"
    [[ -n $non2xx ]] && line+=" errors=non2xx:$non2xx"
    emit media_items "$line"
    stop_server "$MEDIA_PID"
    MEDIA_DIR=
}

# A static stream of one 64 MB file, 16 connections, against reading that file from the
# page cache with 16 readers.
scenario_media_stream() {
    local dir
    dir=$(mktemp -d /tmp/nexus-bench-stream.XXXXXX)
    TMP_DIRS+=("$dir")
    mkdir -p "$dir/Big (2020)"
    local file="$dir/Big (2020)/Big (2020).mkv"
    head -c $((MEDIA_STREAM_MB * 1024 * 1024)) /dev/urandom >"$file"
    NEXUS_ENV=(NEXUS_ADMIN_PASSWORD="$BENCH_ADMIN_PASSWORD" NEXUS_RATE_LIMITS__ENABLED=false
        NEXUS_MEDIA__FFPROBE= NEXUS_MEDIA__WATCH_INTERVAL_MS=0)
    start_nexus
    NEXUS_ENV=()
    local out token item
    scratch_file out media-stream
    child python3 "$MEDIA_PY" stream-setup "$NEXUS_PORT" "$BENCH_ADMIN_PASSWORD" "$file" >"$out"
    read -r token item <"$out"
    local url="http://127.0.0.1:$NEXUS_PORT/api/media/Videos/$item/stream.mkv?static=true&ApiKey=$token"
    local wrk_out
    wrk_out=$(wrk -t"$THREADS" -c"$MEDIA_STREAM_CONNECTIONS" -d"${DURATION}s" "$url")
    stop_server "$NEXUS_PID"
    local mb_s disk
    # wrk's "Transfer/sec: 1.23GB" in MB/s.
    mb_s=$(awk '/^Transfer\/sec:/ { v = $2; u = substr(v, length(v) - 1); n = v + 0;
        if (u == "GB") n *= 1024; else if (u == "KB") n /= 1024; printf "%.1f", n * 1.048576 }' <<<"$wrk_out")
    disk=$(python3 "$MEDIA_PY" disk "$file" "$DURATION" "$MEDIA_STREAM_CONNECTIONS")
    emit media_stream "scenario=media_stream mb_s=$mb_s disk_mb_s=$disk ratio=$(awk -v a="$mb_s" -v b="$disk" 'BEGIN { printf "%.2f", a / b }')"
}
