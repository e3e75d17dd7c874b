#!/usr/bin/env python3
"""What parking idle connections costs a request that comes after an idle period (`--park-idle-after`,
docs/decisions.md, "Parked idle connections"): alb's CPU per request when every connection idles past the
parking delay between requests, with parking on (1 s, so the run stays short) and off.

Usage: bench_parking.py ALB_BINARY [CONNECTIONS] [ROUNDS]

alb on CPU 0, tests/bench_backend.py and this client on CPU 1. CONNECTIONS keep-alive connections (default
1,000) each make one request; then ROUNDS times (default 3): every connection makes one more request, one
after another, and all idle for 2.5 s, so with parking on each was parked and comes back. alb's CPU (all
threads, /proc schedstat) over the rounds, idle periods included (parking happens there), divided by the
requests. Prints `parking NAME connections=N requests=R cpu_us_per_request=C` for NAME `on` and `off`; the
difference is what one park and resume cost. Loopback only; bounded by its counts.
"""
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time

LISTENER_PORT, BACKEND_PORT = 19041, 19042
MANIFEST = """\
apiVersion: alb/v1
kind: LoadBalancer
metadata: {name: bench}
spec: {address: 127.0.0.1}
---
apiVersion: alb/v1
kind: ServerGroup
metadata: {name: backend}
spec:
  servers: [{address: 127.0.0.1, port: %d}]
---
apiVersion: alb/v1
kind: Listener
metadata: {name: parking}
spec:
  loadBalancer: bench
  protocol: HTTP
  port: %d
  idleTimeout: 60
  defaultAction: {forwardGroup: {serverGroups: [{name: backend}]}}
""" % (BACKEND_PORT, LISTENER_PORT)


def cpu_ns(pid):
    total = 0
    for task in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/schedstat" % (pid, task)) as f:
                total += int(f.read().split()[0])
        except OSError:
            pass  # a thread that ended meanwhile
    return total


def request(connection):
    connection.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data or not data.endswith(b"\n"):
        chunk = connection.recv(65536)
        if not chunk:
            raise SystemExit("alb closed a connection")
        data += chunk


def measure(binary, work, park_after, count, rounds):
    status = os.path.join(work, "status-%d" % park_after)
    alb = subprocess.Popen(["taskset", "-c", "0", binary, "reconcile", os.path.join(work, "m"), "--status-dir", status,
                            "--log-level", "warning", "--park-idle-after", str(park_after)])
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                probe = socket.create_connection(("127.0.0.1", LISTENER_PORT), timeout=1)
                request(probe)
                probe.close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("alb did not serve")
                time.sleep(0.1)
        connections = [socket.create_connection(("127.0.0.1", LISTENER_PORT), timeout=10) for _ in range(count)]
        for connection in connections:
            request(connection)
        time.sleep(2.5)
        before = cpu_ns(alb.pid)
        for _ in range(rounds):
            for connection in connections:
                request(connection)
            time.sleep(2.5)
        spent = cpu_ns(alb.pid) - before
        for connection in connections:
            connection.close()
        name = "on" if park_after else "off"
        print("parking %s connections=%d requests=%d cpu_us_per_request=%.1f"
              % (name, count, count * rounds, spent / 1000 / (count * rounds)), flush=True)
    finally:
        alb.terminate()
        alb.wait(timeout=60)


def main():
    binary = sys.argv[1]
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, count + 100)), hard))
    os.sched_setaffinity(0, {1})
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench_backend.py")
    backend = subprocess.Popen(["taskset", "-c", "1", sys.executable, script, str(BACKEND_PORT), "a"],
                               stdout=subprocess.PIPE, text=True)
    try:
        if backend.stdout.readline().strip() != "ready":
            raise SystemExit("bench_backend.py did not start")
        with tempfile.TemporaryDirectory() as work:
            os.mkdir(os.path.join(work, "m"))
            with open(os.path.join(work, "m", "bench.yaml"), "w") as f:
                f.write(MANIFEST)
            for park_after in (1, 0):
                measure(binary, work, park_after, count, rounds)
    finally:
        backend.kill()
        backend.wait()


if __name__ == "__main__":
    main()
