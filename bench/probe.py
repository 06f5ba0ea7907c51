#!/usr/bin/env python3
"""Small helpers for bench/run (standard library only; talks to 127.0.0.1 only).

  probe.py free-port
      Print a TCP port that is free on 127.0.0.1.
  probe.py wait-ready PORT PATH TIMEOUT_S
      Poll http://127.0.0.1:PORT/PATH until it answers 200; exit 1 on timeout.
  probe.py cold-start RUNS TIMEOUT_S -- CMD... {port} ... {data_dir} ...
      RUNS times: make an empty data dir and pick a free port, spawn CMD (with
      {port} and {data_dir} substituted), poll GET /health every ~2 ms and take
      the time from just before the spawn to the first 200. Stops the server,
      removes the dir, and prints one line per run to stderr and the median in
      ms to stdout.
"""

import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HOST = "127.0.0.1"
POLL_INTERVAL_S = 0.002


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def status_of(port, path, timeout=0.5):
    """HTTP status of GET path on 127.0.0.1:port, or None when nothing answers."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as conn:
            conn.sendall(
                f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nConnection: close\r\n\r\n".encode()
            )
            data = b""
            while b"\r\n" not in data:
                chunk = conn.recv(1024)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return None
    parts = data.split(b"\r\n", 1)[0].split()
    if len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1].isdigit():
        return int(parts[1])
    return None


def wait_ready(port, path, timeout_s, proc=None):
    """Seconds (monotonic clock) at the first 200, or None on timeout / early exit."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if status_of(port, path) == 200:
            return time.monotonic()
        if proc is not None and proc.poll() is not None:
            return None
        time.sleep(POLL_INTERVAL_S)
    return None


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cold_start(runs, timeout_s, template):
    samples = []
    for i in range(runs):
        data_dir = tempfile.mkdtemp(prefix="nexus-bench-cold-")
        port = free_port()
        cmd = [a.replace("{port}", str(port)).replace("{data_dir}", data_dir) for a in template]
        log_path = os.path.join(tempfile.gettempdir(), f"nexus-bench-cold-{os.getpid()}-{i}.log")
        proc = None
        try:
            with open(log_path, "wb") as log:
                start = time.monotonic()
                proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
                ready = wait_ready(port, "/health", timeout_s, proc)
            if ready is None:
                sys.stderr.write(f"cold_start run {i + 1}: never healthy; log: {log_path}\n")
                with open(log_path, "rb") as log:
                    sys.stderr.write(log.read().decode(errors="replace")[-2000:])
                return 1
            ms = (ready - start) * 1000.0
            samples.append(ms)
            sys.stderr.write(f"  cold_start run {i + 1}/{runs}: {ms:.1f} ms\n")
        finally:
            if proc is not None:
                stop(proc)
            shutil.rmtree(data_dir, ignore_errors=True)
        os.unlink(log_path)
    print(f"{statistics.median(samples):.1f}")
    return 0


def main(argv):
    # A SIGTERM from bench/run's trap unwinds through the `finally` blocks, so
    # the server this script spawned is stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if len(argv) >= 1 and argv[0] == "free-port":
        print(free_port())
        return 0
    if len(argv) == 4 and argv[0] == "wait-ready":
        return 0 if wait_ready(int(argv[1]), argv[2], float(argv[3])) is not None else 1
    if len(argv) >= 5 and argv[0] == "cold-start" and argv[3] == "--":
        return cold_start(int(argv[1]), float(argv[2]), argv[4:])
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
