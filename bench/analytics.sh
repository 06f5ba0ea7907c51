# Analytics scenarios (issue 15), sourced by bench/run. Each prints one line:
#   scenario=analytics_ingest_batch events_per_s=<..> baseline_rows_per_s=<..> ratio=<..>
#     POST /v2/analytics/events, batches of 100 events, 64 connections (targets: >= 100,000
#     events/s, and >= 50% of the baseline); the baseline inserts the same rows into the same
#     table (bench/analytics.py baseline: one prepared statement stepped per row, 10,000 rows
#     per transaction, WAL + synchronous=NORMAL like nexus): the physical limit here.
#   scenario=analytics_ingest_single events_per_s=<..> p99_ms=<..>
#     one event per request (target: >= 20,000 events/s).
#   scenario=analytics_summary p50_ms=<..> p99_ms=<..>
#     GET /v2/analytics/summary?group_by=event_name,hour over 1M events spanning 30 days, one
#     client at a time (target: p50 <= 200 ms).
# Acknowledged means 202 after commit; wrk's non-2xx count marks a line as untrustworthy.

ANALYTICS_ENV=(NEXUS_ADMIN_PASSWORD="$BENCH_ADMIN_PASSWORD" NEXUS_RATE_LIMITS__ENABLED=false
    NEXUS_AUTH__LOGIN_ATTEMPTS_PER_MINUTE=100000000)
ANALYTICS_BASELINE_ROWS=${BENCH_ANALYTICS_BASELINE_ROWS:-300000}
ANALYTICS_SUMMARY_EVENTS=${BENCH_ANALYTICS_SUMMARY_EVENTS:-1000000}

# analytics_ingest NAME BATCH: run_wrk's line for batches of BATCH events, into $2's var.
analytics_ingest() {
    local name=$1 batch=$2 token lua line
    NEXUS_ENV=("${ANALYTICS_ENV[@]}")
    start_nexus
    token=$(python3 "$BENCH/analytics.py" token "$NEXUS_PORT" "$BENCH_ADMIN_PASSWORD")
    scratch_file lua analytics-lua
    python3 "$BENCH/analytics.py" lua "$token" "$batch" >"$lua"
    scratch_file line analytics-line
    run_wrk "$name" "http://127.0.0.1:$NEXUS_PORT/v2/analytics/events" -s "$lua" >"$line"
    stop_server "$NEXUS_PID"
    NEXUS_ENV=()
    ANALYTICS_LINE=$(<"$line")
}

field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"; }

scenario_analytics_ingest_batch() {
    analytics_ingest analytics_ingest_batch 100
    local rps events errors db baseline ratio
    rps=$(field rps "$ANALYTICS_LINE")
    errors=$(sed -n 's/.*\( errors=.*\)/\1/p' <<<"$ANALYTICS_LINE")
    events=$(awk -v r="$rps" 'BEGIN { printf "%d", r * 100 }')
    db=$(mktemp -d /tmp/nexus-bench-baseline.XXXXXX)
    TMP_DIRS+=("$db")
    baseline=$(child python3 "$BENCH/analytics.py" baseline "$db/baseline.db" \
        "$ROOT/crates/plugins/analytics/migrations/20261202120000_analytics.sql" "$ANALYTICS_BASELINE_ROWS")
    ratio=$(awk -v e="$events" -v b="$baseline" 'BEGIN { printf "%.0f%%", 100 * e / b }')
    emit analytics_ingest_batch \
        "scenario=analytics_ingest_batch events_per_s=$events baseline_rows_per_s=$baseline ratio=$ratio$errors"
}

scenario_analytics_ingest_single() {
    analytics_ingest analytics_ingest_single 1
    local errors
    errors=$(sed -n 's/.*\( errors=.*\)/\1/p' <<<"$ANALYTICS_LINE")
    emit analytics_ingest_single "scenario=analytics_ingest_single events_per_s=$(field rps "$ANALYTICS_LINE") \
p99_ms=$(field p99_ms "$ANALYTICS_LINE")$errors"
}

scenario_analytics_summary() {
    NEXUS_ENV=("${ANALYTICS_ENV[@]}")
    start_nexus
    log "analytics_summary: writing $ANALYTICS_SUMMARY_EVENTS events over 30 days"
    child python3 "$BENCH/analytics.py" fill "$NEXUS_DATA_DIR/nexus.db" "$ANALYTICS_SUMMARY_EVENTS" 30
    local token range line
    token=$(python3 "$BENCH/analytics.py" token "$NEXUS_PORT" "$BENCH_ADMIN_PASSWORD")
    range=$(python3 -c 'import datetime as d; n = d.datetime.now(d.timezone.utc).replace(microsecond=0)
f = n - d.timedelta(days=31); print(f"from={f:%Y-%m-%dT%H:%M:%SZ}&to={n + d.timedelta(hours=1):%Y-%m-%dT%H:%M:%SZ}")')
    scratch_file line analytics-line
    # One client at a time: the latency of a query, not of a queue of 64 of them.
    THREADS=1 CONNECTIONS=1 run_wrk analytics_summary \
        "http://127.0.0.1:$NEXUS_PORT/v2/analytics/summary?group_by=event_name,hour&$range" \
        -H "Authorization: Bearer $token" --timeout 30s >"$line"
    stop_server "$NEXUS_PID"
    NEXUS_ENV=()
    line=$(<"$line")
    if [[ $(field rps "$line") == 0.00 ]]; then line+=" errors=no_answer_within_${DURATION}s"; fi
    emit analytics_summary "scenario=analytics_summary p50_ms=$(field p50_ms "$line") p99_ms=$(field p99_ms "$line")\
$(sed -n 's/.*\( errors=.*\)/\1/p' <<<"$line")"
}
