#!/usr/bin/env python3
"""Compression row of `make bench`: alb beside nginx (its Brotli filter, libnginx-mod-http-brotli-filter, and
its gzip filter) compressing the same 1 MiB JSON response from the same nginx backend.

Usage: bench_compression.py ALB_BINARY [SECONDS]

Starts its own peers on loopback (not peers.sh, which serves no JSON and runs no compressing proxy):
  backend  127.0.0.1:19030  nginx, 1 worker on CPU 1, a static 1 MiB JSON document with Content-Length
  nginx    127.0.0.1:19031  reverse proxy, 1 worker on CPU 0: `brotli_comp_level` / `gzip_comp_level` below
  alb      127.0.0.1:19032  `compression: true`, on CPU 0
For each proxy and coding (Accept-Encoding: br, then gzip), wrk -t1 -c8 for SECONDS (default 5) on CPU 1
after a 2 s warm-up, and one curl for the response's bytes (decoded and compared with the document):
  cpu_us_per_req   CPU of the proxy (utime+stime from /proc/PID/stat, nginx's worker included) per request
  rps              requests per second
  out_bytes        the compressed body's length
Every load is bounded in time and targets 127.0.0.1 only. Prints one line per proxy and coding, then the
ratios alb / nginx.
"""
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BACKEND, NGINX, ALB = 19030, 19031, 19032
HZ = os.sysconf("SC_CLK_TCK")
# nginx's levels, beside alb's (CompressionSettings' defaults: Brotli quality 5, window 18; gzip 5, window 15).
NGINX_BROTLI_LEVEL = int(os.environ.get("NGINX_BROTLI_LEVEL", "5"))
NGINX_GZIP_LEVEL = int(os.environ.get("NGINX_GZIP_LEVEL", "5"))
BROTLI_MODULE = "/usr/lib/nginx/modules/ngx_http_brotli_filter_module.so"


def document(size=1 << 20):
    """1 MiB of JSON as an API would send it: an array of records with ids, names, numbers and flags."""
    items, n, total = [], 12345, 0
    while total < size:
        n = (n * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        item = json.dumps({"id": n >> 44, "sku": "SKU-%06d" % (n % 999983), "name": "Product %d" % (n % 5003),
                           "price": round((n % 100000) / 100, 2), "stock": n % 997, "active": n % 3 != 0,
                           "tags": ["tag%d" % (n % 37), "tag%d" % (n % 11)]}, separators=(",", ":"))
        items.append(item)
        total += len(item) + 1
    text = "[" + ",".join(items)
    return (text[: size - 1] + "]").encode()


def cpu_ticks(pid):
    total = 0
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    for p in [pid] + [int(c) for c in children]:
        fields = Path("/proc/%d/stat" % p).read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total


def wrk(port, pid, accept, seconds):
    before = cpu_ticks(pid)
    out = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", "-c8", "-d%ds" % seconds, "--timeout", "10s",
                          "-H", "Accept-Encoding: " + accept, "http://127.0.0.1:%d/data.json" % port],
                         capture_output=True, text=True, timeout=seconds + 60).stdout
    ticks = cpu_ticks(pid) - before
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errors = re.search(r"(Socket errors.*|Non-2xx.*)", out)
    return ticks / HZ * 1e6 / max(requests, 1), rps, errors.group(1) if errors else ""


def output_bytes(port, accept, original):
    run = subprocess.run(["curl", "-sS", "--max-time", "10", "-H", "Accept-Encoding: " + accept, "-D", "-",
                          "http://127.0.0.1:%d/data.json" % port], capture_output=True, timeout=20)
    head, _, body = run.stdout.partition(b"\r\n\r\n")
    coding = re.search(rb"(?im)^content-encoding:\s*(\S+)", head)
    coding = coding.group(1).decode() if coding else "identity"
    if coding == "br":
        import brotli
        decoded = brotli.decompress(body)
    elif coding == "gzip":
        decoded = gzip.decompress(body)
    else:
        decoded = body
    return len(body), coding, decoded == original


def main():
    alb_binary = sys.argv[1]
    seconds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    if not shutil.which("nginx") or not shutil.which("wrk"):
        print("compression bench needs nginx and wrk (make bench-deps)", file=sys.stderr)
        return 1
    brotli_module = os.path.exists(BROTLI_MODULE)
    work = Path(tempfile.mkdtemp(prefix="alb-bench-compression."))
    work.chmod(0o755)  # nginx's workers (www-data when run as root) read the document below
    original = document()
    (work / "www").mkdir()
    (work / "www" / "data.json").write_bytes(original)
    (work / "backend.conf").write_text(f"""worker_processes 1; daemon on; pid {work}/backend.pid; error_log {work}/backend.err;
events {{ worker_connections 1024; }}
http {{ access_log off; keepalive_requests 1000000; types {{ application/json json; }}
  server {{ listen 127.0.0.1:{BACKEND}; root {work}/www; }} }}
""")
    brotli_conf = (f"brotli on; brotli_comp_level {NGINX_BROTLI_LEVEL}; brotli_window 256k; brotli_min_length 1025; "
                   "brotli_types *;") if brotli_module else ""
    (work / "nginx.conf").write_text(f"""{"load_module " + BROTLI_MODULE + ";" if brotli_module else ""}
worker_processes 1; daemon on; pid {work}/nginx.pid; error_log {work}/nginx.err;
events {{ worker_connections 1024; }}
http {{ access_log off; keepalive_requests 1000000;
  upstream be {{ server 127.0.0.1:{BACKEND}; keepalive 32; }}
  gzip on; gzip_comp_level {NGINX_GZIP_LEVEL}; gzip_min_length 1025; gzip_vary on; gzip_proxied any;
  gzip_types text/xml text/plain text/css application/javascript application/x-javascript application/rss+xml
             application/atom+xml application/xml application/json;
  {brotli_conf}
  server {{ listen 127.0.0.1:{NGINX};
    location / {{ proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection "";
                  proxy_max_temp_file_size 0; }} }} }}
""")
    (work / "m").mkdir()
    (work / "m" / "bench.yaml").write_text(f"""apiVersion: alb/v1
kind: LoadBalancer
metadata: {{name: bench}}
spec: {{address: 127.0.0.1}}
---
apiVersion: alb/v1
kind: ServerGroup
metadata: {{name: backend}}
spec:
  servers: [{{address: 127.0.0.1, port: {BACKEND}}}]
---
apiVersion: alb/v1
kind: Listener
metadata: {{name: bench}}
spec:
  loadBalancer: bench
  protocol: HTTP
  port: {ALB}
  compression: true
  defaultAction: {{forwardGroup: {{serverGroups: [{{name: backend}}]}}}}
""")
    alb = None
    try:
        subprocess.run(["taskset", "-c", "1", "nginx", "-c", str(work / "backend.conf")], check=True)
        subprocess.run(["taskset", "-c", "0", "nginx", "-c", str(work / "nginx.conf")], check=True)
        alb = subprocess.Popen(["taskset", "-c", "0", alb_binary, "reconcile", str(work / "m"), "--status-dir",
                                str(work / "s"), "--log-level", "warning"])
        for _ in range(100):
            if subprocess.run(["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:%d/data.json" % ALB],
                              capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        nginx_master = int((work / "nginx.pid").read_text())
        results = {}
        codings = (["br"] if brotli_module else []) + ["gzip"]
        for accept in codings:
            for name, port, pid in (("nginx", NGINX, nginx_master), ("alb", ALB, alb.pid)):
                size, coding, same = output_bytes(port, accept, original)
                wrk(port, pid, accept, 2)  # warm-up
                cpu, rps, errors = wrk(port, pid, accept, seconds)
                level = {"br": NGINX_BROTLI_LEVEL, "gzip": NGINX_GZIP_LEVEL}[accept] if name == "nginx" else "default"
                results[(name, accept)] = (cpu, size)
                print("%s compression=%s level=%s cpu_us_per_req=%.0f rps=%.1f out_bytes=%d in_bytes=%d decoded_ok=%s %s"
                      % (name, coding, level, cpu, rps, size, len(original), same, errors))
        for accept in codings:
            (ncpu, nsize), (acpu, asize) = results[("nginx", accept)], results[("alb", accept)]
            print("alb/nginx compression=%s cpu_ratio=%.2f size_ratio=%.3f" % (accept, acpu / ncpu, asize / nsize))
        if not brotli_module:
            print("(nginx's Brotli filter is not installed: libnginx-mod-http-brotli-filter; only gzip compared)")
    finally:
        if alb:
            alb.terminate()
            try:
                alb.wait(timeout=30)
            except subprocess.TimeoutExpired:
                alb.kill()
        for pidfile in ("nginx.pid", "backend.pid"):
            path = work / pidfile
            if path.exists():
                subprocess.run(["kill", path.read_text().strip()], capture_output=True)
        time.sleep(0.3)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
