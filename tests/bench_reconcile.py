#!/usr/bin/env python3
"""Reconciler figures for `make bench`, shaped like ../shared/bench/reload.py.

With N HTTP listeners (127.0.0.1:19200..), each forwarding to backend "a":
  cold   seconds from starting `alb reconcile` to all N answering 200
  change ms from rewriting one listener's manifest (switching it to backend "b") to that listener answering
         from "b"; median and worst of REPEATS edits, once through the watcher and once with SIGHUP
Usage: bench_reconcile.py ALB_BINARY [N] [REPEATS]
       bench_reconcile.py nginx [N]   cold only, of nginx with the same N listeners proxying to backend "a"
                                       (reload.py's nginx answers `return 200` itself: no proxying)

ALB_BENCH_BASE_PORT=P puts the listeners on P.. and the backends on P-2 and P-1 (default 19200).
ALB_BENCH_LOG_LEVEL=debug shows each reconcile pass's phase timings on stderr.
ALB_BENCH_COLD_RUNS=K (K > 1): only cold, K starts, their median and fastest (a busy 2-core machine scatters
single starts by tens of milliseconds).

The backends "a" and "b" are tests/bench_backend.py, in a process of their own, answering as fast as Python
can: reload.py's nginx and HAProxy answer `return 200` themselves, so a slow backend would be measured as
alb's. ALB_BENCH_BACKEND=demo uses tests/demo_backend.py in this process instead (the figures before
2026-11-26, docs/benchmarks.md).
"""
import http.client
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import demo_backend  # noqa: E402

# ALB_BENCH_BASE_PORT moves the listeners (BASE..BASE+N-1) and the backends (BASE-2, BASE-1), to run beside
# another benchmark that holds the default ports.
BASE = int(os.environ.get("ALB_BENCH_BASE_PORT", "19200"))
BACKEND_A, BACKEND_B = BASE - 2, BASE - 1


def body(port):
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=0.5)
        c.request("GET", "/")
        r = c.getresponse()
        text = r.read().decode()
        c.close()
        return r.status, text
    except OSError:
        return None, ""


def wait_until(predicate, limit=60.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        if predicate():
            return time.monotonic() - t0
        time.sleep(0.001)
    raise SystemExit("timed out after %.0f s" % limit)


def listener(i, group):
    return ("apiVersion: alb/v1\nkind: Listener\nmetadata: {name: l%d}\nspec:\n  loadBalancer: bench\n"
            "  protocol: HTTP\n  port: %d\n  defaultAction: {forwardGroup: {serverGroups: [{name: %s}]}}\n"
            % (i, BASE + i, group))


def write(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def run(binary, n, repeats, watch):
    work = tempfile.mkdtemp(prefix="alb-bench-reconcile.")
    manifests = os.path.join(work, "m")
    os.mkdir(manifests)
    write(os.path.join(manifests, "base.yaml"),
          "apiVersion: alb/v1\nkind: LoadBalancer\nmetadata: {name: bench}\n"
          "spec: {address: 127.0.0.1, quotas: {listeners: 100}}\n---\n"
          "apiVersion: alb/v1\nkind: ServerGroup\nmetadata: {name: a}\nspec: {servers: [{address: 127.0.0.1, port: %d}]}\n---\n"
          "apiVersion: alb/v1\nkind: ServerGroup\nmetadata: {name: b}\nspec: {servers: [{address: 127.0.0.1, port: %d}]}\n" % (BACKEND_A, BACKEND_B))
    for i in range(n):
        write(os.path.join(manifests, "l%03d.yaml" % i), listener(i, "a"))
    args = [binary, "reconcile", manifests, "--status-dir", os.path.join(work, "s"), "--log-level",
            os.environ.get("ALB_BENCH_LOG_LEVEL", "warning")]
    if watch:
        args.append("--watch")
    t0 = time.monotonic()
    process = subprocess.Popen(args)
    try:
        for i in range(n):
            wait_until(lambda: body(BASE + i)[0] == 200)
        cold = time.monotonic() - t0
        changes = []
        for r in range(repeats):
            i = (r * 7) % n
            # Flip a listener back and forth: a -> b, then the next one b -> a, and so on.
            current = body(BASE + i)[1].split()[0]
            target = "b" if current == "a" else "a"
            start = time.monotonic()
            write(os.path.join(manifests, "l%03d.yaml" % i), listener(i, target))
            if not watch:
                process.send_signal(signal.SIGHUP)
            wait_until(lambda: body(BASE + i)[1].startswith(target + " "))
            changes.append((time.monotonic() - start) * 1000)
        return cold, changes
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        shutil.rmtree(work, ignore_errors=True)


def nginx_cold(n):
    """Seconds from starting nginx with N listeners proxying to "a" (kept-alive upstream connections, as alb
    pools them) to all N answering 200: the same measurement as alb's cold, through a proxy."""
    work = tempfile.mkdtemp(prefix="alb-bench-nginx.")
    servers = "\n".join("  server { listen 127.0.0.1:%d; location / { proxy_pass http://a; } }" % (BASE + i)
                        for i in range(n))
    conf = os.path.join(work, "nginx.conf")
    with open(conf, "w") as f:
        f.write("worker_processes 1; daemon on; pid %s/nginx.pid; error_log %s/nginx.err;\n"
                "events { worker_connections 1024; }\n"
                "http { access_log off; proxy_http_version 1.1; proxy_set_header Connection \"\";\n"
                "upstream a { server 127.0.0.1:%d; keepalive 16; }\n%s\n}\n" % (work, work, BACKEND_A, servers))
    t0 = time.monotonic()
    subprocess.run(["nginx", "-c", conf], check=True)
    try:
        for i in range(n):
            wait_until(lambda: body(BASE + i)[0] == 200)
        return time.monotonic() - t0
    finally:
        subprocess.run(["nginx", "-c", conf, "-s", "quit"])
        wait_until(lambda: not os.path.exists(os.path.join(work, "nginx.pid")), limit=10)
        shutil.rmtree(work, ignore_errors=True)


def start_backends():
    """Backends "a" on BACKEND_A and "b" on BACKEND_B; returns the process to stop, or None."""
    if os.environ.get("ALB_BENCH_BACKEND", "fast") == "demo":
        demo_backend.serve(BACKEND_A, "a")
        demo_backend.serve(BACKEND_B, "b")
        return None
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench_backend.py")
    process = subprocess.Popen([sys.executable, script, str(BACKEND_A), "a", str(BACKEND_B), "b"], stdout=subprocess.PIPE, text=True)
    if process.stdout.readline().strip() != "ready":
        process.kill()
        raise SystemExit("bench_backend.py did not start")
    return process


def main():
    binary = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    repeats = int(sys.argv[3]) if len(sys.argv) > 3 else 20
    backends = start_backends()
    try:
        measure(binary, n, repeats)
    finally:
        if backends:
            backends.terminate()
            backends.wait(timeout=10)


def measure(binary, n, repeats):
    cold_runs = int(os.environ.get("ALB_BENCH_COLD_RUNS", "1"))
    if binary == "nginx":
        colds = [nginx_cold(n) for _ in range(cold_runs)]
        print("nginx-proxy listeners=%d runs=%d cold_median_s=%.3f cold_min_s=%.3f"
              % (n, cold_runs, statistics.median(colds), min(colds)))
        return
    if cold_runs > 1:
        colds = [run(binary, n, 0, False)[0] for _ in range(cold_runs)]
        print("alb-cold listeners=%d runs=%d cold_median_s=%.3f cold_min_s=%.3f"
              % (n, cold_runs, statistics.median(colds), min(colds)))
        return
    for watch in (True, False):
        cold, changes = run(binary, n, repeats, watch)
        if os.environ.get("ALB_BENCH_VERBOSE"):
            print("  changes_ms=" + " ".join("%.0f" % c for c in changes))
        print("alb-%s listeners=%d cold_s=%.3f change_median_ms=%.1f change_max_ms=%.1f"
              % ("watch" if watch else "sighup", n, cold, statistics.median(changes), max(changes)))


if __name__ == "__main__":
    main()
