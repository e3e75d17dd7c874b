#!/usr/bin/env python3
"""Heap allocations per proxied request: alb runs under LD_PRELOAD=.build/alloc_counter.so
(tests/alloc_counter/alloc_counter.c) and its malloc counters are read from a shared page before and after
a fixed number of requests. `make bench-allocs` builds both and runs this; docs/benchmarks.md has the figures.

Usage: bench_allocs.py [ALB_BINARY] [--requests N] [--repeat R] [--preload SO] [--json-only] [--ceiling FILE]
  ALB_BINARY  default .build/release/alb

Rows (each measured R times in one alb process; the median is reported and the spread printed):
  http1_keepalive    GET / (1 KiB body) on 4 established keep-alive connections, requests one at a time
  http1_fresh        a new TCP connection per request: connect, GET /, read the response, close
  https1_keepalive   as http1_keepalive over TLS 1.3 (Python ssl, no ALPN so HTTP/1.1)
  https1_fresh       a new TLS connection (full handshake, ECDSA P-256) per request
  h2_keepalive       HTTP/2 over TLS (h2load, 4 connections, one stream at a time); per request is the
                     difference between a run of 2N and one of N requests, so connection setup cancels out
The TLS rows need openssl, the HTTP/2 row h2load; a missing tool skips its rows.

The backend is a separate process (a tiny keep-alive HTTP/1.1 server in this file, answering a fixed 1 KiB
body with nginx's response headers), so its work is not counted. Before each row alb gets a warm-up over the
same connections; the measured window is then read from the counter page. alb's own background work (timers)
is measured over an idle interval as long as the row's window, reported per second, and subtracted. A window
in which alb wrote a status file (its 5 s stats refresh, a few thousand allocations when the counters moved)
is thrown away and taken again; `windows_discarded` says how often. ALB_BENCH_VERBOSE=1 prints each window.

Every figure: (allocations in the window - idle allocations scaled to the window) / requests. Same for frees
and bytes (the sizes asked of malloc). Only 127.0.0.1 (ports ALB_BENCH_ALLOCS_PORT, default 19400, to +2);
every load is bounded by a request count. The last line is one JSON object with every row.
"""
import argparse
import json
import mmap
import os
import select
import shutil
import signal
import socket
import ssl
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BASE_PORT = int(os.environ.get("ALB_BENCH_ALLOCS_PORT", "19400"))
BACKEND_PORT, HTTP_PORT, HTTPS_PORT = BASE_PORT, BASE_PORT + 1, BASE_PORT + 2
CONNECTIONS = 4
MAGIC = 0x31434C4142
PAGE = struct.Struct("<6Q")  # magic, owner_pid, allocations, frees, bytes_allocated, reallocs_in_place
BODY = b"a" * 1024
# What nginx (../shared/bench's backend) answers for a 1 KiB static file, so alb parses the same header set.
BACKEND_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Wed, 25 Nov 2026 12:00:00 GMT\r\n"
    b"Content-Type: text/html\r\nContent-Length: 1024\r\nLast-Modified: Wed, 25 Nov 2026 11:00:00 GMT\r\n"
    b"Connection: keep-alive\r\nETag: \"6a5f3e10-400\"\r\nAccept-Ranges: bytes\r\n\r\n" + BODY
)


# ---- backend: one thread, non-blocking sockets, answers every request head with BACKEND_RESPONSE ----

def serve_backend(port):
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(1024)
    listener.setblocking(False)
    poller = select.epoll()
    poller.register(listener.fileno(), select.EPOLLIN)
    connections = {}
    while True:
        for fd, _ in poller.poll():
            if fd == listener.fileno():
                while True:
                    try:
                        conn, _ = listener.accept()
                    except BlockingIOError:
                        break
                    conn.setblocking(False)
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    connections[conn.fileno()] = [conn, b""]
                    poller.register(conn.fileno(), select.EPOLLIN)
                continue
            conn, pending = connections[fd]
            try:
                data = conn.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:
                poller.unregister(fd)
                conn.close()
                del connections[fd]
                continue
            pending += data
            answers = 0
            while True:
                end = pending.find(b"\r\n\r\n")
                if end < 0:
                    break
                pending = pending[end + 4:]  # GET only: no request bodies
                answers += 1
            connections[fd][1] = pending
            if answers:
                conn.setblocking(True)  # a few KiB: the socket buffer takes it at once
                conn.sendall(BACKEND_RESPONSE * answers)
                conn.setblocking(False)


# ---- the counter page ----

class Counter:
    def __init__(self, path):
        self.path = path
        with open(path, "wb") as f:
            f.write(b"\0" * mmap.PAGESIZE)  # zeroed: the next process to map it claims it

    def attach(self, pid, timeout=10):
        deadline = time.monotonic() + timeout
        with open(self.path, "rb") as f:
            self.map = mmap.mmap(f.fileno(), mmap.PAGESIZE, prot=mmap.PROT_READ)
        while time.monotonic() < deadline:
            magic, owner = PAGE.unpack_from(self.map)[:2]
            if magic == MAGIC and owner == pid:
                return
            time.sleep(0.01)
        raise SystemExit("alloc counter page not claimed by pid %d (is LD_PRELOAD working?)" % pid)

    def read(self):
        _, _, allocations, frees, nbytes, in_place = PAGE.unpack_from(self.map)
        return {"allocs": allocations, "frees": frees, "bytes": nbytes, "reallocs_in_place": in_place,
                "time": time.monotonic()}


def delta(after, before):
    return {k: after[k] - before[k] for k in after}


# ---- clients: requests one at a time, so what alb does per request does not depend on batching ----

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: bench-allocs\r\nAccept: */*\r\n\r\n"


class Connection:
    def __init__(self, port, tls_context=None):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = tls_context.wrap_socket(sock, server_hostname="bench.example") if tls_context else sock
        self.buffer = b""

    def get(self):
        self.sock.sendall(REQUEST)
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end >= 0:
                break
            self._fill()
        head = self.buffer[:end].decode("latin-1")
        if not head.startswith("HTTP/1.1 200"):
            raise SystemExit("unexpected response: %r" % head[:200])
        length = None
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        if length is None:
            raise SystemExit("response without Content-Length: %r" % head[:200])
        while len(self.buffer) < end + 4 + length:
            self._fill()
        self.buffer = self.buffer[end + 4 + length:]

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise SystemExit("connection closed by alb")
        self.buffer += data

    def close(self):
        self.sock.close()


def keepalive_load(port, tls_context=None):
    connections = [Connection(port, tls_context) for _ in range(CONNECTIONS)]

    def run(count):
        for i in range(count):
            connections[i % CONNECTIONS].get()

    def close():
        for c in connections:
            c.close()
    return run, close


def fresh_load(port, tls_context=None):
    def run(count):
        for _ in range(count):
            c = Connection(port, tls_context)
            c.get()
            c.close()
    return run, lambda: None


def h2load_load(port):
    url = "https://127.0.0.1:%d/" % port

    def run(count):
        out = subprocess.run(["h2load", "-n", str(count), "-c", str(CONNECTIONS), "-m", "1", url],
                             capture_output=True, text=True, timeout=300).stdout
        if "%d succeeded" % count not in out:
            raise SystemExit("h2load did not complete %d requests:\n%s" % (count, out))
    return run, lambda: None


# ---- measuring ----

SETTLE = 0.3  # after a load, for alb to finish closing what the client closed
ATTEMPTS = 8  # windows tried per sample before giving up
VERBOSE = os.environ.get("ALB_BENCH_VERBOSE") == "1"
RESCAN = 5.0  # alb's stats refresh period (ReconcileService.Options.rescanInterval); only a hint here


def last_status_write(status_dir):
    """The newest mtime (ns) of any file under alb's status directory."""
    newest = 0
    for folder, _, files in os.walk(status_dir):
        for name in files:
            try:
                newest = max(newest, os.stat(os.path.join(folder, name)).st_mtime_ns)
            except FileNotFoundError:  # replaced while we looked
                pass
    return newest


def clean_window(counter, status_dir, load):
    """Counter readings around `load()` (which may return readings of its own in between), taken again if
    alb wrote a status file meanwhile: every 5 s it refreshes each listener's stats into its status file,
    which costs a few thousand allocations when the counters changed and nothing otherwise. That is work
    per interval, not per request, and it would land in a window or not depending on the clock."""
    for attempt in range(ATTEMPTS):
        started = time.time_ns()
        before = counter.read()
        inner = load()
        time.sleep(SETTLE)
        after = counter.read()
        ended = time.time_ns()
        time.sleep(0.1)  # a refresh that allocated before `after` writes its file just after
        written = last_status_write(status_dir)
        if VERBOSE:
            print("  window %.2f s, %d allocations%s" % ((ended - started) / 1e9, after["allocs"] - before["allocs"],
                                                      "" if written < started else ", status written: discarded"),
                  flush=True)
        if written < started:
            return [before, *(inner or []), after], attempt
        # The next refresh comes about RESCAN after this one; if the next window would not fit before it,
        # start right after it instead (our load changed the stats, so it writes).
        if time.time_ns() + (ended - started) + 0.5e9 > written + RESCAN * 1e9:
            deadline = time.monotonic() + RESCAN + 2
            while last_status_write(status_dir) == written and time.monotonic() < deadline:
                time.sleep(0.02)
    raise SystemExit("alb wrote a status file during each of %d windows" % ATTEMPTS)


def measure_row(counter, status_dir, run, requests, warmup, repeat, differential=False):
    """Median over `repeat` windows of (allocations - idle background) / requests. With `differential`, each
    window runs N then 2N requests and the figure is (2N part - N part) / N: what the requests cost without
    the connections' setup and teardown (h2load opens its own connections each time)."""
    run(warmup)
    time.sleep(SETTLE)
    samples, discarded, longest = [], 0, 0.0

    def load():
        run(requests)
        if differential:
            time.sleep(SETTLE)
            middle = counter.read()
            run(2 * requests)
            return [middle]

    for _ in range(repeat):
        readings, retries = clean_window(counter, status_dir, load)
        discarded += retries
        samples.append(readings)
        longest = max(longest, readings[-1]["time"] - readings[0]["time"])
    # alb's background work with nothing to do, over a window as long as the longest measured one.
    idle_readings, retries = clean_window(counter, status_dir, lambda: time.sleep(max(longest - SETTLE, 0)))
    discarded += retries
    idle = delta(idle_readings[-1], idle_readings[0])
    rate = {k: idle[k] / idle["time"] for k in ("allocs", "frees", "bytes")}

    def net(later, earlier):
        d = delta(later, earlier)
        return {k: d[k] - rate[k] * d["time"] for k in rate}

    per_request = []
    for readings in samples:
        if differential:
            first, second = net(readings[1], readings[0]), net(readings[2], readings[1])
            per_request.append({k: (second[k] - first[k]) / requests for k in rate})
        else:
            per_request.append({k: v / requests for k, v in net(readings[-1], readings[0]).items()})
    return {
        "requests": requests,
        "allocs_per_req": round(statistics.median(s["allocs"] for s in per_request), 2),
        "frees_per_req": round(statistics.median(s["frees"] for s in per_request), 2),
        "bytes_per_req": round(statistics.median(s["bytes"] for s in per_request)),
        "allocs_per_req_runs": [round(s["allocs"], 2) for s in per_request],
        "idle_allocs_per_s": round(rate["allocs"], 2),
        "windows_discarded": discarded,
    }


def manifest(cert=None, key=None):
    text = """\
apiVersion: alb/v1
kind: LoadBalancer
metadata: {name: bench}
spec: {address: 127.0.0.1}
---
apiVersion: alb/v1
kind: ServerGroup
metadata: {name: backend}
spec: {servers: [{address: 127.0.0.1, port: %d}]}
---
apiVersion: alb/v1
kind: Listener
metadata: {name: bench-http}
spec:
  loadBalancer: bench
  protocol: HTTP
  port: %d
  defaultAction: {forwardGroup: {serverGroups: [{name: backend}]}}
""" % (BACKEND_PORT, HTTP_PORT)
    if cert:
        text += """\
---
apiVersion: alb/v1
kind: Certificate
metadata: {name: bench}
spec: {type: Server, certificate: %s, privateKey: %s}
---
apiVersion: alb/v1
kind: Listener
metadata: {name: bench-https}
spec:
  loadBalancer: bench
  protocol: HTTPS
  port: %d
  securityPolicy: tls_cipher_policy_1_2_strict_with_1_3
  certificates: {server: bench}
  defaultAction: {forwardGroup: {serverGroups: [{name: backend}]}}
""" % (cert, key, HTTPS_PORT)
    return text


def make_cert(folder):
    cert, key = folder / "bench.crt", folder / "bench.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=bench.example",
                    "-addext", "subjectAltName=DNS:bench.example", "-addext", "basicConstraints=critical,CA:FALSE"],
                   check=True, capture_output=True)
    return cert, key


def wait_port(port, proc, tls=False):
    context = client_tls() if tls else None
    for _ in range(200):
        if proc.poll() is not None:
            raise SystemExit("alb exited with %d" % proc.returncode)
        try:
            c = Connection(port, context)
            c.get()
            c.close()
            return
        except (OSError, SystemExit):
            time.sleep(0.05)
    raise SystemExit("nothing answers on 127.0.0.1:%d" % port)


def client_tls():
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def pin(cpu):
    """Pins the calling process (and what it starts afterwards) to one CPU, when there are two or more."""
    try:
        if len(os.sched_getaffinity(0)) > 1:
            os.sched_setaffinity(0, {cpu})
    except OSError:
        pass


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("alb", nargs="?", default=".build/release/alb")
    parser.add_argument("--requests", type=int, default=10000, help="keep-alive requests per window (fresh rows: a fifth)")
    parser.add_argument("--repeat", type=int, default=3, help="windows per row; the median is reported")
    parser.add_argument("--preload", default=".build/alloc_counter.so")
    parser.add_argument("--json-only", action="store_true")
    parser.add_argument("--ceiling", default=str(Path(__file__).with_name("alloc_ceiling.json")),
                        help="rows whose median is above this file's count fail the run ('' to skip)")
    parser.add_argument("--serve-backend", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_backend:
        serve_backend(args.serve_backend)
        return
    preload = Path(args.preload).resolve()
    if not preload.exists():
        raise SystemExit("%s missing: build it with `make alloc-counter`" % preload)
    alb = Path(args.alb).resolve()
    if not alb.exists():
        raise SystemExit("%s missing: `make build CONFIG=release`" % alb)

    for port in (BACKEND_PORT, HTTP_PORT, HTTPS_PORT):
        probe = socket.socket()
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as alb and the backend: TIME_WAIT is fine
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            raise SystemExit("127.0.0.1:%d is taken: set ALB_BENCH_ALLOCS_PORT to a free range of three" % port)
        finally:
            probe.close()

    work = Path(tempfile.mkdtemp(prefix="alb-bench-allocs."))
    (work / "m").mkdir()
    tls = shutil.which("openssl") is not None
    cert, key = make_cert(work) if tls else (None, None)
    (work / "m" / "bench.yaml").write_text(manifest(cert, key))
    counter = Counter(work / "counters")

    # alb on CPU 0; this client and the backend on CPU 1 (as tests/bench.sh), when there are two.
    pin(1)
    backend = subprocess.Popen([sys.executable, __file__, "--serve-backend", str(BACKEND_PORT)])
    env = dict(os.environ, LD_PRELOAD=str(preload), ALB_ALLOC_COUNTER_FILE=str(work / "counters"))
    proc = subprocess.Popen([str(alb), "reconcile", str(work / "m"), "--status-dir", str(work / "s"),
                             "--log-level", "warning"], env=env, preexec_fn=lambda: pin(0))
    rows = {}
    skipped = {}
    try:
        counter.attach(proc.pid)
        wait_port(HTTP_PORT, proc)
        keep, fresh = args.requests, max(args.requests // 5, 100)
        if not args.json_only:
            print("bench-allocs: %s, %d connections, %d keep-alive / %d fresh requests per window, %d windows per row"
                  % (alb, CONNECTIONS, keep, fresh, args.repeat), flush=True)
        plans = [("http1_keepalive", lambda: keepalive_load(HTTP_PORT), keep, 2000, False),
                 ("http1_fresh", lambda: fresh_load(HTTP_PORT), fresh, 500, False)]
        if tls:
            plans += [("https1_keepalive", lambda: keepalive_load(HTTPS_PORT, client_tls()), keep, 2000, False),
                      ("https1_fresh", lambda: fresh_load(HTTPS_PORT, client_tls()), fresh // 4, 200, False)]
            if shutil.which("h2load"):
                # N then 2N requests per window: half the keep-alive count keeps the window well inside 5 s.
                plans.append(("h2_keepalive", lambda: h2load_load(HTTPS_PORT), keep // 2, 2000, True))
            else:
                skipped["h2_keepalive"] = "h2load not installed"
            wait_port(HTTPS_PORT, proc, tls=True)
        else:
            skipped.update({"https1_keepalive": "openssl not installed", "https1_fresh": "openssl not installed",
                            "h2_keepalive": "openssl not installed"})
        for name, make_load, requests, warmup, differential in plans:
            run, close = make_load()
            try:
                rows[name] = measure_row(counter, work / "s", run, requests, warmup, args.repeat, differential)
            finally:
                close()
            time.sleep(SETTLE)
            if not args.json_only:
                r = rows[name]
                print("%-17s allocs/req=%8.2f frees/req=%8.2f bytes/req=%7d  runs=%s idle_allocs/s=%.1f discarded=%d"
                      % (name, r["allocs_per_req"], r["frees_per_req"], r["bytes_per_req"],
                         ",".join("%.2f" % x for x in r["allocs_per_req_runs"]), r["idle_allocs_per_s"],
                         r["windows_discarded"]), flush=True)
        for name, reason in skipped.items():
            if not args.json_only:
                print("%-17s skipped: %s" % (name, reason))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
        backend.terminate()
        backend.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)
    above = above_ceiling(rows, args.ceiling)
    for name, (measured, ceiling) in sorted(above.items()):
        print("bench-allocs: %s makes %.2f allocations per request, above its ceiling of %d in %s: the count may only"
              " go down (find the new allocation, or raise the ceiling with the reason in docs/benchmarks.md)"
              % (name, measured, ceiling, args.ceiling), file=sys.stderr)
    print(json.dumps({"bench": "allocs", "alb": str(alb), "connections": CONNECTIONS, "rows": rows,
                      "skipped": skipped, "above_ceiling": sorted(above)}, sort_keys=True))
    if above:
        sys.exit(3)


# Half an allocation of slack: a median is an integer unless alb's idle background (subtracted) moved.
CEILING_SLACK = 0.5


def above_ceiling(rows, path):
    """Rows whose allocations per request exceed the committed ceiling: {name: (measured, ceiling)}."""
    if not path:
        return {}
    ceilings = json.loads(Path(path).read_text())
    return {name: (row["allocs_per_req"], ceilings[name]) for name, row in rows.items()
            if name in ceilings and row["allocs_per_req"] > ceilings[name] + CEILING_SLACK}


if __name__ == "__main__":
    main()
