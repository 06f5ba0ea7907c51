#!/usr/bin/env python3
"""Helpers for bench/run's secret_read scenario (standard library only; 127.0.0.1 only).

  secret_read.py setup PORT PASSWORD PATH
      Log in as admin (POST /api/auth/login), create the secret PATH
      (POST /api/v1/secrets), read it back once; print the access token.
  secret_read.py audited PORT TOKEN PATH
      Print the `total` of GET /api/v1/audit?action=secret.read&secret_path=PATH.
  secret_read.py served PORT
      Print how many GET /api/v1/secrets/{*path} nexus answered with 200, from
      its own /metrics (http_requests_total).
"""

import http.client
import json
import re
import sys
import urllib.parse

HOST = "127.0.0.1"


def call(port, method, path, body=None, token=None, expect=200):
    conn = http.client.HTTPConnection(HOST, int(port), timeout=30)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    conn.request(method, path, json.dumps(body) if body is not None else None, headers)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    if resp.status != expect:
        sys.exit(f"{method} {path}: {resp.status} {data[:300]!r}")
    return data


def setup(port, password, path):
    login = json.loads(call(port, "POST", "/api/auth/login", {"username": "admin", "password": password}))
    token = login["access_token"]
    call(port, "POST", "/api/v1/secrets", {"path": path, "value": "bench-value-0123456789"}, token, expect=201)
    got = json.loads(call(port, "GET", f"/api/v1/secrets/{path}", token=token))
    if "bench-value-0123456789" not in json.dumps(got):
        sys.exit(f"reading {path} back did not return its value: {got}")
    print(token)


def audited(port, token, path):
    q = urllib.parse.urlencode({"action": "secret.read", "secret_path": path, "limit": 1})
    print(json.loads(call(port, "GET", f"/api/v1/audit?{q}", token=token))["total"])


def served(port):
    text = call(port, "GET", "/metrics").decode()
    n = 0
    for line in text.splitlines():
        if (line.startswith("http_requests_total{") and 'method="GET"' in line
                and 'route="/api/v1/secrets/{*path}"' in line and 'status="200"' in line):
            n += int(float(line.rsplit(" ", 1)[1]))
    print(n)


def main():
    cmd, args = (sys.argv[1], sys.argv[2:]) if len(sys.argv) > 1 else ("", [])
    if cmd == "setup" and len(args) == 3:
        setup(*args)
    elif cmd == "audited" and len(args) == 3:
        audited(*args)
    elif cmd == "served" and len(args) == 1:
        served(*args)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
