#!/usr/bin/env python3
"""Helpers of the analytics scenarios (bench/analytics.sh); standard library only.

  analytics.py token PORT PASSWORD        admin access token
  analytics.py lua TOKEN N                a wrk script POSTing batches of N events
  analytics.py baseline DB MIGRATION ROWS rows/s of the hand-written baseline
  analytics.py fill DB ROWS DAYS          ROWS events spread over the last DAYS days
"""

import json
import random
import sqlite3
import sys
import time
import urllib.request

NAMES = ["page_view", "signup", "activate", "purchase", "search", "share", "logout", "login"]


def token(port, password):
    body = json.dumps({"username": "admin", "password": password}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api/auth/login", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        print(json.load(r)["access_token"])


def event(i):
    return {"event_name": NAMES[i % len(NAMES)], "event_category": "bench", "user_id": f"user-{i % 997}",
            "source": "web", "properties": {"plan": "pro" if i % 5 == 0 else "free", "n": i}}


def lua(tok, n):
    body = json.dumps(event(0) if n == 1 else [event(i) for i in range(n)])
    print("wrk.method = 'POST'")
    print(f"wrk.body = {json.dumps(body)}")
    print("wrk.headers['Content-Type'] = 'application/json'")
    print(f"wrk.headers['Authorization'] = 'Bearer {tok}'")


def rows(count, start_us, span_us):
    """The rows nexus would store for `count` events, as tuples in column order."""
    rnd = random.Random(7)
    now = int(time.time() * 1_000_000)
    for i in range(count):
        e = event(i)
        ts = start_us + (span_us * i) // max(count, 1) + rnd.randrange(1000)
        # Time-ordered ids, as nexus's UUIDv7: inserts append to the primary key's index.
        yield (f"{now:016x}-{i:016x}", None, ts, now, e["event_name"], e["event_category"], e["user_id"], None,
               e["source"], json.dumps(e["properties"], separators=(",", ":")), "127.0.0.1", "wrk")


INSERT = ("INSERT INTO analytics_events (id, event_key, ts, received_at, event_name, event_category, user_id, "
          "linked_user_id, source, properties, ip_address, user_agent) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)")


def open_db(path):
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    return db


def insert(db, count, start_us, span_us, per_tx=10_000):
    batch = []
    for r in rows(count, start_us, span_us):
        batch.append(r)
        if len(batch) == per_tx:
            db.execute("BEGIN")
            db.executemany(INSERT, batch)  # one prepared statement, stepped once per row
            db.execute("COMMIT")
            batch = []
    if batch:
        db.execute("BEGIN")
        db.executemany(INSERT, batch)
        db.execute("COMMIT")


def baseline(path, migration, count):
    db = open_db(path)
    db.executescript(open(migration).read())
    now = int(time.time() * 1_000_000)
    data = list(rows(count, now, 1))  # built before the clock starts, as the server gets them parsed
    started = time.perf_counter()
    for i in range(0, len(data), 10_000):
        db.execute("BEGIN")
        db.executemany(INSERT, data[i:i + 10_000])
        db.execute("COMMIT")
    print(int(count / (time.perf_counter() - started)))


def fill(path, count, days):
    db = open_db(path)
    span = days * 86_400 * 1_000_000
    now = int(time.time() * 1_000_000)
    insert(db, count, now - span, span, per_tx=50_000)


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "token":
        token(args[0], args[1])
    elif cmd == "lua":
        lua(args[0], int(args[1]))
    elif cmd == "baseline":
        baseline(args[0], args[1], int(args[2]))
    elif cmd == "fill":
        fill(args[0], int(args[1]), int(args[2]))
    else:
        sys.exit(f"unknown command {cmd}")
