"""Helpers of bench/documents.sh: load documents through the API, write wrk scripts, and time
the same queries as hand-written SQL on the same SQLite file (the physical limit).

    documents.py insert-lua TOKEN N          # wrk script: POST insert_many of N documents
    documents.py find-lua TOKEN              # wrk script: the indexed find
    documents.py find-sql DB N               # us per run of the find as hand-written SQL
    documents.py load PORT TOKEN COLLECTION N [INDEX_FIELD]   # N documents, 1,000 a request
    documents.py time PORT TOKEN RUNS BODY   # median ms of POST /api/database/query BODY
    documents.py sql DB RUNS SQL             # median ms of SQL on the SQLite file DB
    documents.py compare PORT TOKEN DB RUNS BODY SQL   # both medians, in alternating runs
"""

import json
import sqlite3
import statistics
import sys
import threading
import time
import urllib.request

CATEGORIES = 20


def doc(i):
    """A document of about 300 bytes."""
    return {
        "sku": f"SKU-{i:09d}",
        "name": f"Product number {i} with a reasonably descriptive name",
        "category": f"c{i % CATEGORIES}",
        "price": round(5 + (i * 7919 % 100_000) / 100, 2),
        "stock": i % 500,
        "tags": ["bench", "docs", f"t{i % 7}"],
        "description": "A plain product used to measure the document database under load.",
    }


def request(port, path, token, body):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=300) as r:
        return json.load(r)


def wrk_post(tok, body):
    print("wrk.method = 'POST'")
    print(f"wrk.body = {json.dumps(json.dumps(body))}")
    print("wrk.headers['Content-Type'] = 'application/json'")
    print(f"wrk.headers['Authorization'] = 'Bearer {tok}'")


FIND = {"collection": "products", "operation": "find",
        "filter": {"category": "c7", "price": {"$gte": 100, "$lte": 600}},
        "sort": {"price": -1}, "limit": 20}


def load(port, tok, collection, n, index_field=None):
    if index_field:
        request(port, f"/api/database/collections", tok,
                {"name": collection, "indexes": [{"keys": {index_field: 1, "price": 1}}]})
    per = 1000
    batches = list(range(0, n, per))
    lock = threading.Lock()

    def worker():
        while True:
            with lock:
                if not batches:
                    return
                start = batches.pop()
            docs = [doc(i) for i in range(start, min(start + per, n))]
            request(port, "/api/database/query", tok,
                    {"collection": collection, "operation": "insert_many", "documents": docs})

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def time_query(port, tok, runs, body):
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        request(port, "/api/database/query", tok, body)
        times.append((time.perf_counter() - t) * 1000)
    print(f"{statistics.median(times):.1f}")


# Unmeasured runs of each side before `compare` measures: nexus spreads reads over its SQLite
# readers (4), each opened, its statement prepared and its page cache filled at its first run.
WARMUP_RUNS = 8


def compare(port, tok, path, runs, body, sql):
    """Median ms of BODY through the API and of SQL on the file, in alternating runs: work the
    server does in the background after a load (a WAL checkpoint) then weighs on both."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    for _ in range(WARMUP_RUNS):
        request(port, "/api/database/query", tok, body)
        db.execute(sql).fetchall()
    api, direct = [], []
    for _ in range(runs):
        t = time.perf_counter()
        request(port, "/api/database/query", tok, body)
        api.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        db.execute(sql).fetchall()
        direct.append((time.perf_counter() - t) * 1000)
    print(f"{statistics.median(api):.1f} {statistics.median(direct):.1f}")


# FIND as a person would write it in SQL on the same table and index.
FIND_SQL = ("SELECT doc FROM documents WHERE collection = 'products' "
            "AND json_extract(doc, '$.category') = ? "
            "AND json_extract(doc, '$.price') >= ? AND json_extract(doc, '$.price') <= ? "
            "ORDER BY json_extract(doc, '$.price') DESC LIMIT 20")


def find_sql_us(path, n):
    """Microseconds per run of FIND_SQL on one thread (the statement cached, rows fetched)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    args = ("c7", 100, 600)
    if len(db.execute(FIND_SQL, args).fetchall()) != 20:
        sys.exit("find-sql: the collection does not hold the documents of `load`")
    t = time.perf_counter()
    for _ in range(n):
        db.execute(FIND_SQL, args).fetchall()
    print(f"{(time.perf_counter() - t) / n * 1e6:.1f}")


def time_sql(path, runs, sql):
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        db.execute(sql).fetchall()
        times.append((time.perf_counter() - t) * 1000)
    print(f"{statistics.median(times):.1f}")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "insert-lua":
        wrk_post(args[0], {"collection": "ingest", "operation": "insert_many",
                           "documents": [doc(i) for i in range(int(args[1]))]})
    elif cmd == "find-sql":
        find_sql_us(args[0], int(args[1]))
    elif cmd == "find-lua":
        wrk_post(args[0], FIND)
    elif cmd == "load":
        load(args[0], args[1], args[2], int(args[3]), args[4] if len(args) > 4 else None)
    elif cmd == "time":
        time_query(args[0], args[1], int(args[2]), json.loads(args[3]))
    elif cmd == "compare":
        compare(args[0], args[1], args[2], int(args[3]), json.loads(args[4]), args[5])
    elif cmd == "sql":
        time_sql(args[0], int(args[1]), args[2])
    else:
        sys.exit(f"unknown command {cmd}")
