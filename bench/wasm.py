#!/usr/bin/env python3
"""WebAssembly plugin helpers for bench/run (standard library only; 127.0.0.1 only).

  wasm.py packages REGISTRY_DIR COMPONENTS_DIR N
      Writes shortener-0.1.0.nxp and N copies of the probe example (ids probe000...)
      into REGISTRY_DIR, from the components built in COMPONENTS_DIR
      (examples/plugins/target/wasm32-wasip2/release) and the examples' manifests.
  wasm.py install PORT TOKEN PACKAGE...
      Installs each PACKAGE from the registry (POST /api/plugins/install) and calls
      GET /api/plugins/<id>/ok (probes) once; fails on any answer but 201/200.
  wasm.py instantiate PORT
      p50 and p99 of nexus_wasm_instantiate_seconds (/metrics), in microseconds,
      interpolated within the histogram's buckets: "p50_us=<..> p99_us=<..> n=<count>".
"""

import http.client
import json
import os
import re
import sys
import zipfile

HOST = "127.0.0.1"
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def manifest(name):
    with open(os.path.join(ROOT, "examples", "plugins", name, "manifest.toml")) as f:
        return f.read()


def leb(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def custom_section(name, payload):
    """A custom section (id 0): makes each copy's bytes, and so its compiled code, its own."""
    body = leb(len(name)) + name + payload
    return b"\x00" + leb(len(body)) + body


def write_package(path, manifest_text, wasm):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("manifest.toml", manifest_text)
        z.writestr("plugin.wasm", wasm)


def packages(registry, components, n):
    os.makedirs(registry, exist_ok=True)
    with open(os.path.join(components, "shortener.wasm"), "rb") as f:
        write_package(os.path.join(registry, "shortener-0.1.0.nxp"), manifest("shortener"), f.read())
    with open(os.path.join(components, "probe.wasm"), "rb") as f:
        probe = f.read()
    text = manifest("probe")
    for i in range(int(n)):
        pid = f"probe{i:03d}"
        # Distinct bytes per copy, so that the server compiles each (it shares identical ones).
        wasm = probe + custom_section(b"nexus-bench", pid.encode())
        write_package(os.path.join(registry, f"{pid}-0.1.0.nxp"), text.replace('id = "probe"', f'id = "{pid}"', 1), wasm)


def request(conn, method, path, headers, body=None, ok=(200,)):
    conn.request(method, path, body, headers)
    resp = conn.getresponse()
    data = resp.read()
    if resp.status not in ok:
        sys.exit(f"{method} {path}: {resp.status} {data[:300]!r}")
    return data


def install(port, token, names):
    conn = http.client.HTTPConnection(HOST, int(port), timeout=120)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    for name in names:
        body = json.dumps({"source": "registry", "package": name})
        request(conn, "POST", "/api/plugins/install", headers, body, ok=(201,))
        if name.startswith("probe"):
            request(conn, "GET", f"/api/plugins/{name}/ok", headers)


def instantiate(port):
    conn = http.client.HTTPConnection(HOST, int(port), timeout=30)
    text = request(conn, "GET", "/metrics", {}).decode()
    buckets = []
    for line in text.splitlines():
        m = re.match(r'nexus_wasm_instantiate_seconds_bucket\{le="([^"]+)"\} (\S+)', line)
        if m:
            le = float("inf") if m.group(1) == "+Inf" else float(m.group(1))
            buckets.append((le, float(m.group(2))))
    buckets.sort()
    total = buckets[-1][1] if buckets else 0
    if total == 0:
        sys.exit("no instantiation measured")

    def quantile(q):
        rank = q * total
        lower, below = 0.0, 0.0
        for le, count in buckets:
            if count >= rank:
                if le == float("inf"):
                    return lower
                inside = count - below
                return lower + (le - lower) * ((rank - below) / inside if inside else 1.0)
            lower, below = le, count
        return lower

    print(f"p50_us={quantile(0.5) * 1e6:.1f} p99_us={quantile(0.99) * 1e6:.1f} n={int(total)}")


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "packages":
        packages(*args)
    elif cmd == "install":
        install(args[0], args[1], args[2:])
    elif cmd == "instantiate":
        instantiate(args[0])
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
