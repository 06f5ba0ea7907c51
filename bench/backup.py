#!/usr/bin/env python3
"""Helpers of the backup scenarios (bench/run backup_under_load, restore); standard library only.

  backup.py fill DB MB                      grows the SQLite database DB to about MB megabytes
                                            (analytics events, through bench/analytics.py's rows)
  backup.py under-load PORT PASSWORD DB     a backup while small writes and bearer reads run:
                                            prints `backup_s= mb_s= write_p99_ms=`
  backup.py restore PORT PASSWORD DB        a backup (not measured), then its restore:
                                            prints `mb_s= first_request_ms=`
"""

import json
import os
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import analytics  # noqa: E402

WRITERS = 4
READERS = 4


def call(port, method, path, token=None, body=None, timeout=600):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, json.loads(r.read() or b"null")


def login(port, password):
    _, body = call(port, "POST", "/api/auth/login", body={"username": "admin", "password": password})
    return body["access_token"]


def fill(path, mb):
    db = analytics.open_db(path)
    now = int(time.time() * 1_000_000)
    while os.path.getsize(path) < mb * 1_048_576:
        analytics.insert(db, 200_000, now - 86_400_000_000, 86_400_000_000, per_tx=50_000)
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def wait_task(port, token, task_id):
    while True:
        _, body = call(port, "GET", f"/api/v1/tasks/{task_id}", token)
        status = body["data"]["status"]
        if status in ("completed", "failed", "cancelled"):
            if status != "completed":
                sys.exit(f"task {task_id} {status}: {body['data'].get('error')}")
            return body["data"]
        time.sleep(0.02)


def backup(port, token):
    started = time.perf_counter()
    _, body = call(port, "POST", "/api/v1/backup", token, {"include": ["database"], "compression": True})
    data = body["data"]
    if data.get("status") != "created":
        data = wait_task(port, token, data["task_id"])["result"]
    return data["backup_id"], time.perf_counter() - started


def under_load(port, password, db):
    token = login(port, password)
    _, users = call(port, "GET", "/api/users?filter[username]=admin", token)
    me = users["users"][0]
    stop = threading.Event()
    writes = []
    lock = threading.Lock()

    def writer():
        while not stop.is_set():
            t = time.perf_counter()
            call(port, "POST", "/v2/analytics/events", token, {"event_name": "write", "event_category": "bench"})
            with lock:
                writes.append(time.perf_counter() - t)

    def reader():
        while not stop.is_set():
            call(port, "GET", f"/api/users/{me['id']}", token)

    threads = [threading.Thread(target=writer) for _ in range(WRITERS)] + \
              [threading.Thread(target=reader) for _ in range(READERS)]
    for t in threads:
        t.start()
    time.sleep(1)
    with lock:
        writes.clear()
    size_mb = os.path.getsize(db) / 1_048_576
    _, seconds = backup(port, token)
    stop.set()
    for t in threads:
        t.join()
    writes.sort()
    p99 = writes[min(len(writes) - 1, len(writes) * 99 // 100)] * 1000 if writes else float("nan")
    print(f"backup_s={seconds:.2f} mb_s={size_mb / seconds:.1f} write_p99_ms={p99:.1f} "
          f"(db_mb={size_mb:.0f} writes={len(writes)})")


def restore(port, password, db):
    token = login(port, password)
    size_mb = os.path.getsize(db) / 1_048_576
    backup_id, _ = backup(port, token)
    started = time.perf_counter()
    _, body = call(port, "POST", f"/api/v1/backup/{backup_id}/restore", token,
                   {"components": ["database"], "confirm": True})
    wait_task(port, token, body["data"]["task_id"])
    seconds = time.perf_counter() - started
    t = time.perf_counter()
    call(port, "GET", "/api/users", token)
    first = (time.perf_counter() - t) * 1000
    print(f"mb_s={size_mb / seconds:.1f} first_request_ms={first:.1f} (db_mb={size_mb:.0f} restore_s={seconds:.2f})")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "fill":
        fill(args[0], int(args[1]))
    elif cmd == "under-load":
        under_load(args[0], args[1], args[2])
    elif cmd == "restore":
        restore(args[0], args[1], args[2])
    else:
        sys.exit(f"unknown command {cmd}")
