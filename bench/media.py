#!/usr/bin/env python3
"""Helpers of the media scenarios of bench/run (standard library only).

  media.py generate DIR N              N empty movie files named by Jellyfin's conventions
  media.py scan PORT PASSWORD DIR N    add DIR as a movies library, time the scan and a rescan;
                                       prints: scan_s rescan_s token library_id
  media.py stream-setup PORT PASSWORD FILE
                                       add FILE's folder as a library; prints: token item_id
  media.py disk FILE SECONDS THREADS   MB/s of reading FILE whole, THREADS at a time
"""
import json
import os
import sys
import threading
import time
import urllib.parse
import urllib.request

CLIENT = 'MediaBrowser Client="bench", Device="bench", DeviceId="bench-1", Version="1.0"'


def call(port, method, path, token=None, body=None):
    auth = CLIENT + (f', Token="{token}"' if token else "")
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                 headers={"Authorization": auth, "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        text = resp.read()
        return json.loads(text) if text else None


def login(port, password):
    r = call(port, "POST", "/api/media/Users/AuthenticateByName", body={"Username": "admin", "Pw": password})
    return r["AccessToken"]


def generate(root, n):
    for i in range(n):
        name = f"Movie {i:05d} ({1950 + i % 70})"
        folder = os.path.join(root, name)
        os.makedirs(folder, exist_ok=True)
        open(os.path.join(folder, name + ".mkv"), "wb").close()


def task(port, token):
    return call(port, "GET", "/api/media/ScheduledTasks", token)[0]


def wait_scan(port, token, after, deadline_s=600):
    """Waits until a scan that finished after `after` completions is done; returns its seconds."""
    end = time.time() + deadline_s
    while time.time() < end:
        t = task(port, token)
        if t["State"] == "Idle" and t["CompletedCount"] > after:
            return t["CompletedCount"]
        time.sleep(0.01)
    sys.exit("scan did not finish in time")


def count(port, token):
    return call(port, "GET", "/api/media/Items?Recursive=true&IncludeItemTypes=Movie&Limit=0", token)["TotalRecordCount"]


def scan(port, password, root, n):
    token = login(port, password)
    # The start-up scan (of no library) first, so that it is not counted.
    done = wait_scan(port, token, 0)
    q = urllib.parse.urlencode({"name": "Bench", "collectionType": "movies", "paths": root})
    t0 = time.perf_counter()
    call(port, "POST", f"/api/media/Library/VirtualFolders?{q}", token)
    while count(port, token) < n:
        time.sleep(0.01)
    scan_s = time.perf_counter() - t0
    done = wait_scan(port, token, done)
    t0 = time.perf_counter()
    call(port, "POST", "/api/media/Library/Refresh", token)
    wait_scan(port, token, done)
    rescan_s = time.perf_counter() - t0
    lib = call(port, "GET", "/api/media/Library/VirtualFolders", token)[0]["ItemId"]
    print(f"{scan_s:.3f} {rescan_s:.3f} {token} {lib}")


def stream_setup(port, password, path):
    token = login(port, password)
    done = wait_scan(port, token, 0)
    q = urllib.parse.urlencode({"name": "Stream", "collectionType": "movies", "paths": os.path.dirname(os.path.dirname(path))})
    call(port, "POST", f"/api/media/Library/VirtualFolders?{q}", token)
    while count(port, token) < 1:
        time.sleep(0.01)
    item = call(port, "GET", "/api/media/Items?Recursive=true&IncludeItemTypes=Movie", token)["Items"][0]["Id"]
    print(f"{token} {item}")


def disk(path, seconds, threads):
    total = [0]
    lock = threading.Lock()
    stop = time.time() + seconds

    def reader():
        n = 0
        while time.time() < stop:
            with open(path, "rb") as f:
                while chunk := f.read(256 * 1024):
                    n += len(chunk)
        with lock:
            total[0] += n

    t0 = time.perf_counter()
    ts = [threading.Thread(target=reader) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    print(f"{total[0] / (time.perf_counter() - t0) / 1e6:.1f}")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "generate":
        generate(args[0], int(args[1]))
    elif cmd == "scan":
        scan(args[0], args[1], args[2], int(args[3]))
    elif cmd == "stream-setup":
        stream_setup(args[0], args[1], args[2])
    elif cmd == "disk":
        disk(args[0], float(args[1]), int(args[2]))
    else:
        sys.exit(__doc__)
