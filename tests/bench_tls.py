#!/usr/bin/env python3
"""HTTPS rows of `make bench`: alb beside nginx and HAProxy terminating TLS with the same certificate.

Usage: bench_tls.py ALB_BINARY   (needs ../shared/bench/peers.sh started: the backend on 127.0.0.1:19000)

For an ECDSA P-256 and an RSA 2048 certificate, each proxy pinned to CPU 0 and the load on CPU 1:
  cpu_us_per_handshake   CPU of the proxy per full TLS handshake (h2load, one request per new connection)
  handshakes_per_s       new TLS connections per second over that run
  h1_cpu_us_per_req      CPU per request over reused TLS connections, HTTP/1.1 (wrk -c64, 5 s)
  h2_cpu_us_per_req      the same over HTTP/2 (h2load, 16 connections x 10 streams, 5 s)
Before any load, for the ECDSA certificate, each proxy freshly started:
  bytes_per_idle_tls_connection   RSS growth per idle keep-alive TLS connection (2,000 clients, each made one
                                  request over TLS 1.3 and stays connected), as tests/bench_idle_memory.py does
                                  for plain HTTP
Every load is bounded in time or count and targets 127.0.0.1 only. Prints one line per proxy and key type.
"""
import os
import re
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_idle_memory import rss_kib

BACKEND = 19000
PORTS = {"nginx": 19021, "haproxy": 19022, "alb": 19023}
HZ = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pid):
    total = 0
    for p in [pid] + [int(c) for c in subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()]:
        fields = Path("/proc/%d/stat" % p).read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total


def measure(pid, command, count_from):
    before = cpu_ticks(pid)
    started = time.monotonic()
    out = subprocess.run(["taskset", "-c", "1", *command], capture_output=True, text=True, timeout=120).stdout
    elapsed = time.monotonic() - started
    cpu_us = (cpu_ticks(pid) - before) / HZ * 1e6
    count = count_from(out)
    return cpu_us / max(count, 1), count / elapsed, out


def wrk_requests(out):
    match = re.search(r"(\d+) requests in", out)
    return int(match.group(1)) if match else 0


def h2load_succeeded(out):
    match = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded", out)
    return int(match.group(1)) if match else 0


def idle_tls_bytes(pid, port, count=2000):
    """RSS growth of `pid` per TLS connection that made one request and stays open (the worker's RSS for
    nginx: pass its pid)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, count + 100)), hard))
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["http/1.1"])
    before = rss_kib(pid)
    connections = []
    try:
        for _ in range(count):
            connection = context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                                             server_hostname="bench.example")
            connection.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
            data = b""
            while b"\r\n\r\n" not in data:
                data += connection.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
            while len(body) < length:
                body += connection.recv(65536)
            connections.append(connection)
        time.sleep(1)
        return (rss_kib(pid) - before) * 1024 / count
    finally:
        for connection in connections:
            connection.close()


def worker_of(pid):
    """nginx's worker (its master's only child); the process itself for the others."""
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return int(children[0]) if children else pid


def make_cert(folder, kind):
    cert, key = folder / (kind + ".crt"), folder / (kind + ".key")
    new_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"] if kind == "ecdsa" else ["-newkey", "rsa:2048"]
    subprocess.run(["openssl", "req", "-x509", *new_key, "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
                    "-subj", "/CN=bench.example", "-addext", "subjectAltName=DNS:bench.example",
                    "-addext", "basicConstraints=critical,CA:FALSE"], check=True, capture_output=True)
    (folder / (kind + ".pem")).write_text(cert.read_text() + key.read_text())
    return cert, key


def start_peers(work, cert, key, pem):
    (work / "nginx-tls.conf").write_text("""
worker_processes 1; daemon on; pid %(w)s/nginx-tls.pid; error_log %(w)s/nginx-tls.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  upstream be { server 127.0.0.1:%(b)d; keepalive 128; }
  server { listen 127.0.0.1:%(p)d ssl http2; ssl_certificate %(c)s; ssl_certificate_key %(k)s;
    ssl_protocols TLSv1.2 TLSv1.3; ssl_session_cache off; ssl_session_tickets off;
    location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
""" % {"w": work, "b": BACKEND, "p": PORTS["nginx"], "c": cert, "k": key})
    (work / "haproxy-tls.cfg").write_text("""
global
  nbthread 1
  maxconn 8000
  pidfile %(w)s/haproxy-tls.pid
  daemon
  tune.ssl.cachesize 0
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  http-reuse always
frontend fe
  bind 127.0.0.1:%(p)d ssl crt %(pem)s alpn h2,http/1.1 no-tls-tickets
  default_backend be
backend be
  server s1 127.0.0.1:%(b)d
""" % {"w": work, "b": BACKEND, "p": PORTS["haproxy"], "pem": pem})
    subprocess.run(["taskset", "-c", "0", "nginx", "-c", str(work / "nginx-tls.conf")], check=True)
    subprocess.run(["taskset", "-c", "0", "haproxy", "-f", str(work / "haproxy-tls.cfg")], check=True)
    time.sleep(0.5)
    return {"nginx": int((work / "nginx-tls.pid").read_text()), "haproxy": int((work / "haproxy-tls.pid").read_text())}


def stop_peers(work):
    for name in ("nginx-tls.pid", "haproxy-tls.pid"):
        path = work / name
        if path.exists():
            try:
                os.kill(int(path.read_text()), signal.SIGTERM)
            except (ProcessLookupError, ValueError):
                pass
    time.sleep(0.5)


def alb_manifest(cert, key):
    return """\
apiVersion: alb/v1
kind: LoadBalancer
metadata: {name: bench}
spec: {address: 127.0.0.1}
---
apiVersion: alb/v1
kind: ServerGroup
metadata: {name: nginx-backend}
spec: {servers: [{address: 127.0.0.1, port: %d}]}
---
apiVersion: alb/v1
kind: Certificate
metadata: {name: bench}
spec: {type: Server, certificate: %s, privateKey: %s}
---
apiVersion: alb/v1
kind: Listener
metadata: {name: bench-tls}
spec:
  loadBalancer: bench
  protocol: HTTPS
  port: %d
  securityPolicy: tls_cipher_policy_1_2_strict_with_1_3
  certificates: {server: bench}
  defaultAction: {forwardGroup: {serverGroups: [{name: nginx-backend}]}}
""" % (BACKEND, cert, key, PORTS["alb"])


def wait_https(port):
    for _ in range(100):
        if subprocess.run(["curl", "-ksf", "-o", "/dev/null", "https://127.0.0.1:%d/" % port]).returncode == 0:
            return
        time.sleep(0.1)
    raise SystemExit("nothing answers HTTPS on %d" % port)


def main(alb):
    for tool in ("nginx", "haproxy", "wrk", "h2load", "openssl"):
        if not shutil.which(tool):
            raise SystemExit("bench_tls needs %s" % tool)
    work = Path(tempfile.mkdtemp(prefix="alb-bench-tls."))
    (work / "m").mkdir()
    for kind in ("ecdsa", "rsa"):
        cert, key = make_cert(work, kind)
        pids = start_peers(work, cert, key, work / (kind + ".pem"))
        (work / "m" / "bench.yaml").write_text(alb_manifest(cert, key))
        shutil.rmtree(work / "s", ignore_errors=True)
        proc = subprocess.Popen(["taskset", "-c", "0", alb, "reconcile", str(work / "m"), "--status-dir", str(work / "s"),
                                 "--log-level", "warning"])
        pids["alb"] = proc.pid
        try:
            for name, port in PORTS.items():
                wait_https(port)
            if kind == "ecdsa":
                for name, port in PORTS.items():
                    print("%s tls=%s idle_tls_connections=2000 bytes_per_idle_tls_connection=%.0f"
                          % (name, kind, idle_tls_bytes(worker_of(pids[name]), port)), flush=True)
                    time.sleep(1)  # the peer closes the 2,000 connections before the next one is measured
            for name, port in PORTS.items():
                url = "https://127.0.0.1:%d/" % port
                pid = pids[name]
                subprocess.run(["taskset", "-c", "1", "h2load", "--h1", "-n", "300", "-c", "30", url], capture_output=True)  # warm-up
                # 1,000 clients, one request each: every request pays a full handshake.
                handshake, rate, _ = measure(pid, ["h2load", "--h1", "-n", "1000", "-c", "1000", url], h2load_succeeded)
                h1, _, _ = measure(pid, ["wrk", "-t1", "-c64", "-d5s", url], wrk_requests)
                h2, _, _ = measure(pid, ["h2load", "-c", "16", "-m", "10", "-D", "5", url], h2load_succeeded)
                print("%s tls=%s cpu_us_per_handshake=%.0f handshakes_per_s=%.0f h1_cpu_us_per_req=%.1f h2_cpu_us_per_req=%.1f"
                      % (name, kind, handshake, rate, h1, h2), flush=True)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=40)
            stop_peers(work)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__.strip(), file=sys.stderr)
        sys.exit(2)
    main(sys.argv[1])
