#!/usr/bin/env python3
"""API-convention helpers for bench/run (standard library only; 127.0.0.1 only).

  conventions.py login PORT PASSWORD
      Log in as admin; print "<access token> <admin user id>".
  conventions.py batch PORT TOKEN USER_ID ROUNDS
      Over one keep-alive connection, ROUNDS times each: 20 separate
      GET /api/users/USER_ID, and one POST /api/batch carrying the same 20 GETs.
      Prints "single_ms=<median> batch_ms=<median> speedup=<single/batch>"
      (medians of the per-round wall time, in ms). Fails if any answer is not 200.
"""

import http.client
import json
import statistics
import sys
import time

HOST = "127.0.0.1"
N = 20


def login(port, password):
    conn = http.client.HTTPConnection(HOST, int(port), timeout=30)
    body = json.dumps({"username": "admin", "password": password})
    conn.request("POST", "/api/auth/login", body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    data = json.loads(resp.read())
    if resp.status != 200:
        sys.exit(f"login failed: {resp.status} {data}")
    print(data["access_token"], data["user"]["id"])


def call(conn, method, path, headers, body=None):
    conn.request(method, path, body, headers)
    resp = conn.getresponse()
    data = resp.read()
    if resp.status != 200:
        sys.exit(f"{method} {path}: {resp.status} {data[:300]!r}")
    return data


def batch(port, token, user_id, rounds):
    conn = http.client.HTTPConnection(HOST, int(port), timeout=30)
    auth = {"Authorization": f"Bearer {token}"}
    path = f"/api/users/{user_id}"
    payload = json.dumps({"requests": [{"id": str(i), "method": "GET", "url": path} for i in range(N)]})
    post_headers = dict(auth, **{"Content-Type": "application/json"})
    single, batched = [], []
    for _ in range(int(rounds)):
        started = time.perf_counter()
        for _ in range(N):
            call(conn, "GET", path, auth)
        single.append(time.perf_counter() - started)
        started = time.perf_counter()
        answer = json.loads(call(conn, "POST", "/api/batch", post_headers, payload))
        batched.append(time.perf_counter() - started)
        bad = [r for r in answer["responses"] if r["status"] != 200]
        if bad:
            sys.exit(f"batch sub-requests failed: {bad[:2]}")
    s, b = statistics.median(single) * 1000, statistics.median(batched) * 1000
    print(f"single_ms={s:.3f} batch_ms={b:.3f} speedup={s / b:.2f}")


def main():
    if len(sys.argv) >= 4 and sys.argv[1] == "login":
        login(sys.argv[2], sys.argv[3])
    elif len(sys.argv) >= 6 and sys.argv[1] == "batch":
        batch(*sys.argv[2:6])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
