#!/usr/bin/env python3
"""bench/run's ws_fanout scenario: WebSocket fan-out latency and memory per connection.

  ws_fanout.py PORT PASSWORD NEXUS_PID [SUBSCRIBERS [RATE [SECONDS]]]

1. Logs in as admin (POST /api/auth/login) and notes nexus's VmRSS.
2. Opens SUBSCRIBERS (1000) connections to ws://127.0.0.1:PORT/ws; each sends
   {"type":"auth","token":..}, waits for auth_success, sends
   {"type":"subscribe","channel":"user_events"} and waits for `subscribed`.
3. After ~2 s idle, notes VmRSS again: mem_per_conn_kb = (after - before) / SUBSCRIBERS.
4. Renames one user with PUT /api/users/{id} as admin (each rename publishes
   `user.updated`), open loop at RATE (100) per second for SECONDS (10) over a
   pool of keep-alive connections, noting the time each request is sent; every
   subscriber notes when the `user.updated` event carrying that name arrives. Latency = receipt - send, over every
   (event, subscriber) pair.

Prints one line:
  scenario=ws_fanout subscribers=N events=N p50_ms=.. p99_ms=.. mem_per_conn_kb=..
with " errors=missed:<n>,failed_creates:<n>" appended when deliveries are
missing or creates failed. Details (client CPU, achieved rate) go to stderr.
Needs the `websockets` package; installs it with pip if missing. 127.0.0.1 only.
"""

import asyncio
import json
import os
import resource
import subprocess
import sys
import time

HOST = "127.0.0.1"
USER_PASSWORD = "Bench-User-Pass-1!"
POOL = 32          # concurrent create requests at most
CONNECT_BATCH = 100
DRAIN_SECS = 10    # at most this long after the last create for the events to arrive

try:
    import websockets
except ImportError:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "websockets"], check=True,
                   stdout=sys.stderr)
    import websockets
from websockets.asyncio.client import connect


def log(msg):
    print(f"ws_fanout: {msg}", file=sys.stderr, flush=True)


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise SystemExit("no VmRSS")


def pct(sorted_vals, p):
    if not sorted_vals:
        return float("nan")
    k = min(len(sorted_vals) - 1, max(0, int(round(p / 100 * len(sorted_vals) + 0.5)) - 1))
    return sorted_vals[k]


class Http:
    """Minimal keep-alive HTTP/1.1 client on asyncio streams (Content-Length bodies only)."""

    def __init__(self, port):
        self.port = port
        self.reader = self.writer = None

    async def request(self, method, path, body=None, token=None):
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
        payload = json.dumps(body).encode() if body is not None else b""
        head = f"{method} {path} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\nContent-Type: application/json\r\n"
        if token:
            head += f"Authorization: Bearer {token}\r\n"
        head += f"Content-Length: {len(payload)}\r\n\r\n"
        self.writer.write(head.encode() + payload)
        status_line = await self.reader.readline()
        status = int(status_line.split()[1])
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            k, _, v = line.decode().partition(":")
            if k.strip().lower() == "content-length":
                length = int(v.strip())
        data = await self.reader.readexactly(length) if length else b""
        return status, data


async def subscriber(port, token, idx, ready):
    ws = await connect(f"ws://{HOST}:{port}/ws", max_queue=None, ping_interval=None,
                       compression=None, open_timeout=30)
    await ws.send(json.dumps({"type": "auth", "token": token}))
    msg = json.loads(await ws.recv())
    if msg.get("type") != "auth_success":
        raise SystemExit(f"subscriber {idx}: auth failed: {msg}")
    await ws.send(json.dumps({"type": "subscribe", "channel": "user_events"}))
    msg = json.loads(await ws.recv())
    if msg.get("type") != "subscribed":
        raise SystemExit(f"subscriber {idx}: subscribe failed: {msg}")
    ready.append(ws)


async def receive(ws, got, marker=b'"username":"'):
    """Notes (username, time) for each user.updated event, as fast as possible."""
    try:
        async for msg in ws:
            t = time.monotonic()
            if isinstance(msg, str):
                msg = msg.encode()
            i = msg.find(marker)
            if i < 0 or b"user.updated" not in msg:
                if b'"error"' in msg:
                    log(f"server said: {msg[:200]!r}")
                continue
            i += len(marker)
            got.append((msg[i:msg.index(b'"', i)].decode(), t))
    except websockets.ConnectionClosed as e:
        log(f"a subscriber was closed: {e}")


async def main(port, password, pid, n_subs, rate, seconds):
    http = Http(port)
    status, data = await http.request("POST", "/api/auth/login", {"username": "admin", "password": password})
    if status != 200:
        raise SystemExit(f"login: {status} {data[:200]!r}")
    token = json.loads(data)["access_token"]
    # One user whose name each event changes: renaming is a cheap write, so the scenario
    # measures event delivery, not password hashing (which creating users would).
    target_name = f"bench-target-{os.getpid()}-{int(time.time())}"
    status, data = await http.request(
        "POST", "/api/users",
        {"username": target_name, "email": f"{target_name}@bench.test", "password": USER_PASSWORD}, token)
    if status != 201:
        raise SystemExit(f"create target user: {status} {data[:200]!r}")
    target = json.loads(data)["id"]
    await asyncio.sleep(0.5)
    before = rss_kb(pid)

    conns = []
    started = time.monotonic()
    for b in range(0, n_subs, CONNECT_BATCH):
        await asyncio.gather(*(subscriber(port, token, i, conns) for i in range(b, min(n_subs, b + CONNECT_BATCH))))
    log(f"{len(conns)} subscribers authenticated and subscribed in {time.monotonic() - started:.1f}s")
    await asyncio.sleep(2)
    after = rss_kb(pid)
    mem_per_conn = (after - before) / n_subs
    log(f"nexus VmRSS {before} kB before, {after} kB with {n_subs} idle connections")

    gots = [[] for _ in conns]
    receivers = [asyncio.create_task(receive(ws, got)) for ws, got in zip(conns, gots)]

    sent, answered = {}, {}
    failed = 0
    pool = asyncio.Queue()
    for _ in range(POOL):
        pool.put_nowait(Http(port))
    run = f"{os.getpid()}x{int(time.time())}"

    async def create(i):
        nonlocal failed
        client = await pool.get()
        name = f"b{run}n{i}"
        try:
            sent[name] = time.monotonic()
            status, data = await client.request("PUT", f"/api/users/{target}", {"username": name}, token)
            answered[name] = time.monotonic()
            if status != 200:
                failed += 1
                del sent[name]
                if failed <= 3:
                    log(f"create {name}: {status} {data[:200]!r}")
        finally:
            pool.put_nowait(client)

    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    total = rate * seconds
    t0 = time.monotonic()
    tasks = []
    for i in range(total):
        delay = t0 + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(create(i)))
    await asyncio.gather(*tasks)
    elapsed = time.monotonic() - t0
    log(f"{total - failed} renames published in {elapsed:.1f}s ({(total - failed) / elapsed:.1f}/s, target {rate}/s)")

    expected = len(sent) * len(conns)
    deadline = time.monotonic() + DRAIN_SECS
    while sum(len(g) for g in gots) < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    wall = time.monotonic() - t0
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    log(f"client CPU {cpu:.1f}s over {wall:.1f}s ({100 * cpu / wall:.0f}% of one core)")

    lat = sorted((t - sent[name]) * 1000 for got in gots for name, t in got if name in sent)
    missed = expected - len(lat)
    create = sorted((answered[n] - t) * 1000 for n, t in sent.items())
    post201 = sorted((t - answered[name]) * 1000 for got in gots for name, t in got if name in sent)
    log(f"PUT /api/users/{{id}} itself: p50 {pct(create, 50):.1f} ms, p99 {pct(create, 99):.1f} ms; "
        f"receipt minus the create's 201: p50 {pct(post201, 50):.1f} ms, p99 {pct(post201, 99):.1f} ms")
    for r in receivers:
        r.cancel()
    await asyncio.gather(*(ws.close() for ws in conns), return_exceptions=True)

    line = (f"scenario=ws_fanout subscribers={len(conns)} events={len(sent)} p50_ms={pct(lat, 50):.3f} "
            f"p99_ms={pct(lat, 99):.3f} mem_per_conn_kb={mem_per_conn:.1f}")
    if missed or failed:
        line += f" errors=missed:{missed},failed_creates:{failed}"
    print(line, flush=True)


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    port, password, pid = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rest = [int(a) for a in sys.argv[4:7]]
    n_subs, rate, seconds = (rest + [1000, 100, 10][len(rest):])[:3]
    asyncio.run(main(int(port), password, pid, n_subs, rate, seconds))
