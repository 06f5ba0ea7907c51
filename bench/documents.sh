# Document database scenarios of bench/run (issue 13; sourced by it, uses its helpers). On
# SQLite; the baselines run the same query as hand-written SQL on the same data file.
#   scenario=docs_insert_many docs_per_s=<..> p99_ms=<..>
#     POST /api/database/query insert_many, 1,000 documents of ~300 bytes a request, 64
#     connections; acknowledged = committed (target: >= 50,000 documents/s).
#   scenario=docs_find_indexed rps=<..> p50_ms=<..> p99_ms=<..> users_get_bearer_rps=<..> ratio=<..> rounds=<..> cpu_us=<..>/<..> sql_us=<..>
#     find with an indexed equality + range filter, sort, limit 20 over 100k documents, 64
#     connections (target: >= 70% of users_get_bearer's requests/s, measured on the same
#     server in alternating rounds; ratio = the rounds' median; cpu_us: the server's CPU time per
#     request, find/users_get_bearer). sql_us: microseconds per run of
#     the same find as hand-written SQL on the same file, on one thread (python's sqlite3): the
#     floor of the server's own cost per request, beside users_get_bearer's whole request.
#   scenario=docs_count ms=<..> sql_ms=<..> ratio=<..>
#     count with an indexed filter over 1M documents, median of 5 after 8 unmeasured runs of
#     each side (target: ratio <= 1.5).
#   scenario=docs_group ms=<..> sql_ms=<..> ratio=<..>
#     $group by a field with $sum and $avg over 1M documents, median of 5 (target: <= 1.5).

DOCS_PY="$BENCH/documents.py"
DOCS_FIND_N=${BENCH_DOCS_FIND_N:-100000}
DOCS_BIG_N=${BENCH_DOCS_BIG_N:-1000000}
DOCS_RUNS=5

docs_server() {
    [[ -n ${DOCS_PID:-} ]] && return
    NEXUS_ENV=(NEXUS_ADMIN_PASSWORD="$BENCH_ADMIN_PASSWORD" NEXUS_RATE_LIMITS__ENABLED=false
        NEXUS_SERVER__BODY_LIMIT_BYTES=8388608)
    start_nexus
    NEXUS_ENV=()
    DOCS_PID=$NEXUS_PID
    DOCS_PORT=$NEXUS_PORT
    DOCS_DB="$NEXUS_DATA_DIR/nexus.db"
    local login
    login=$(python3 "$BENCH/conventions.py" login "$DOCS_PORT" "$BENCH_ADMIN_PASSWORD")
    DOCS_TOKEN=${login% *}
    DOCS_USER=${login#* }
}

scenario_docs_insert_many() {
    docs_server
    local lua
    scratch_file lua docs-insert-lua
    python3 "$DOCS_PY" insert-lua "$DOCS_TOKEN" 1000 >"$lua"
    local out line
    scratch_file out docs-insert-line
    # 64 requests of 1,000 documents each queue for SQLite's one writer: an answer takes about
    # 64 times one request's commit, past wrk's default 2 s timeout (counted as socket errors).
    run_wrk docs_insert_many_requests "http://127.0.0.1:$DOCS_PORT/api/database/query" -s "$lua" --timeout 30s >"$out"
    line=$(<"$out")
    local rps docs
    rps=$(field rps "$line")
    docs=$(awk -v r="$rps" 'BEGIN { printf "%d", r * 1000 }')
    emit docs_insert_many "scenario=docs_insert_many docs_per_s=$docs p99_ms=$(field p99_ms "$line")\
$(sed -n 's/.*\( errors=.*\)/\1/p' <<<"$line")"
}

scenario_docs_find_indexed() {
    docs_server
    log "docs_find_indexed: loading $DOCS_FIND_N documents"
    child python3 "$DOCS_PY" load "$DOCS_PORT" "$DOCS_TOKEN" products "$DOCS_FIND_N" category
    local lua out sql_us
    scratch_file lua docs-find-lua
    python3 "$DOCS_PY" find-lua "$DOCS_TOKEN" >"$lua"
    # The baseline, users_get_bearer (the admin reading itself), on the same server in
    # alternating rounds.
    PAIR_BASE=("http://127.0.0.1:$DOCS_PORT/api/users/$DOCS_USER" -H "Authorization: Bearer $DOCS_TOKEN")
    PAIR_TARGET=("http://127.0.0.1:$DOCS_PORT/api/database/query" -s "$lua")
    scratch_file out docs-find-line
    run_wrk docs_find_indexed "${PAIR_TARGET[@]}" >"$out"
    paired "$DOCS_PID"
    # The physical limit: the same find as hand-written SQL on the same file, on one thread.
    sql_us=$(child python3 "$DOCS_PY" find-sql "$DOCS_DB" 20000)
    emit docs_find_indexed "$(<"$out") $(pair_line users_get_bearer) sql_us=$sql_us"
}

# docs_big: the 1M-document collection with an index on (category, price), loaded once.
docs_big() {
    docs_server
    [[ -n ${DOCS_BIG:-} ]] && return
    log "docs: loading $DOCS_BIG_N documents"
    child python3 "$DOCS_PY" load "$DOCS_PORT" "$DOCS_TOKEN" big "$DOCS_BIG_N" category
    DOCS_BIG=1
}

# docs_compare NAME BODY SQL: the median time of BODY through the API and of SQL on the file,
# in alternating runs (after the load, a checkpoint runs in the background for seconds).
docs_compare() {
    local name=$1 body=$2 sql=$3 ms sql_ms ratio
    docs_big
    local both
    both=$(child python3 "$DOCS_PY" compare "$DOCS_PORT" "$DOCS_TOKEN" "$DOCS_DB" "$DOCS_RUNS" "$body" "$sql")
    ms=${both% *}
    sql_ms=${both#* }
    ratio=$(awk -v a="$ms" -v b="$sql_ms" 'BEGIN { printf "%.2f", a / b }')
    emit "$name" "scenario=$name ms=$ms sql_ms=$sql_ms ratio=$ratio"
}

scenario_docs_count() {
    docs_compare docs_count \
        '{"collection": "big", "operation": "count", "filter": {"category": "c7"}}' \
        "SELECT count(*) FROM documents WHERE collection = 'big' AND json_extract(doc, '\$.category') = 'c7'"
}

scenario_docs_group() {
    docs_compare docs_group \
        '{"collection": "big", "operation": "aggregate", "pipeline": [{"$group": {"_id": "$category", "total": {"$sum": "$price"}, "avg": {"$avg": "$price"}}}]}' \
        "SELECT json_extract(doc, '\$.category'), sum(json_extract(doc, '\$.price')), avg(json_extract(doc, '\$.price')) FROM documents WHERE collection = 'big' GROUP BY 1"
}
