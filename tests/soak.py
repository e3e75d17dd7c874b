#!/usr/bin/env python3
"""Soak: many in-place changes under keep-alive load, with a leak check (`make soak`; not in `make test`).

Starts the real `alb reconcile --watch` (ALB_BIN, default .build/release/alb) over a temporary manifest
directory, four demo backends and a mixed HTTP/1.1 load on 127.0.0.1, then applies SOAK_CHANGES (default
10,000) changes by rename-over, in turn:
  - the steady listener's idleTimeout and requestTimeout,
  - the weights of the pool's servers,
  - the pool's membership (two servers always, the other two come and go),
  - a transient listener going while the next one comes (four names and ports in rotation).
Each change counts once it is live: the status file shows it (`live`), within SOAK_CHANGE_TIMEOUT seconds.

Load: SOAK_KEEPALIVE_THREADS (default 3) keep-alive connections to the steady listener (GET, and POST with
a body), one thread of fresh connections to it, and one keep-alive client of the current transient listener.
A failed request on the steady listener is a failure; one on a transient listener (it may be going away)
is counted apart. alb's RSS and open descriptors are sampled at the start, after the first 1,000 changes
(or half the run when shorter) and at the end; the end must be within 10% (plus a small constant) of the
middle. Exit 1 on any failure, growth, a change that did not apply, or alb exiting.
"""
import http.client
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
ALB = os.environ.get("ALB_BIN") or str(ROOT / ".build/release/alb")
CHANGES = int(os.environ.get("SOAK_CHANGES", "10000"))
CHANGE_TIMEOUT = float(os.environ.get("SOAK_CHANGE_TIMEOUT", "10"))
KEEPALIVE_THREADS = int(os.environ.get("SOAK_KEEPALIVE_THREADS", "3"))
CHECKPOINT = min(1000, CHANGES // 2)
# Growth allowed from the checkpoint to the end: 10% plus this much (allocator and pool jitter).
RSS_SLACK_KB = 8 * 1024
FD_SLACK = 16
TRANSIENT_SLOTS = 4

Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def free_ports(count):
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class Manifests:
    """The manifest directory: base.yaml (instance, pool, steady listener) and transient.yaml."""

    def __init__(self, directory, steady_port, backend_ports):
        self.directory = directory
        self.steady_port = steady_port
        self.backend_ports = backend_ports
        self.idle_timeout = 30
        self.request_timeout = 60
        # (port, weight) of the pool's servers; the first two are always members.
        self.servers = [(backend_ports[0], 100), (backend_ports[1], 100)]

    def write(self, name, text):
        path = self.directory / name
        temporary = self.directory / ("." + name + ".tmp")
        temporary.write_text(text)
        os.replace(temporary, path)  # rename-over, as editors and git do

    def write_base(self):
        servers = "\n".join("    - {address: 127.0.0.1, port: %d, weight: %d}" % server for server in self.servers)
        self.write("base.yaml", f"""\
apiVersion: alb/v1
kind: LoadBalancer
metadata: {{name: soak}}
spec: {{address: 127.0.0.1}}
---
apiVersion: alb/v1
kind: ServerGroup
metadata: {{name: pool}}
spec:
  servers:
{servers}
---
apiVersion: alb/v1
kind: Listener
metadata: {{name: steady}}
spec:
  loadBalancer: soak
  protocol: HTTP
  port: {self.steady_port}
  idleTimeout: {self.idle_timeout}
  requestTimeout: {self.request_timeout}
  defaultAction: {{forwardGroup: {{serverGroups: [{{name: pool}}]}}}}
""")

    def write_transient(self, name, port):
        self.write("transient.yaml", f"""\
apiVersion: alb/v1
kind: Listener
metadata: {{name: {name}}}
spec:
  loadBalancer: soak
  protocol: HTTP
  port: {port}
  defaultAction: {{forwardGroup: {{serverGroups: [{{name: pool}}]}}}}
""")


class Status:
    def __init__(self, directory):
        self.directory = directory

    def of(self, kind, name):
        try:
            text = (self.directory / (kind.lower() + "s") / (name + ".yaml")).read_text()
        except FileNotFoundError:
            return None
        try:
            return yaml.load(text, Loader=Loader)
        except yaml.YAMLError:
            return None  # replaced atomically, so this should not happen; poll again

    def exists(self, kind, name):
        return (self.directory / (kind.lower() + "s") / (name + ".yaml")).exists()


class Counters:
    def __init__(self):
        self.lock = threading.Lock()
        self.values = {}
        self.samples = []

    def add(self, key, amount=1):
        with self.lock:
            self.values[key] = self.values.get(key, 0) + amount

    def failure(self, key, error):
        with self.lock:
            self.values[key] = self.values.get(key, 0) + 1
            if len(self.samples) < 10:
                self.samples.append("%s: %r" % (key, error))

    def get(self, key):
        with self.lock:
            return self.values.get(key, 0)


def check_response(response, body):
    if response.status != 200:
        raise AssertionError("status %d: %r" % (response.status, body[:200]))


def keepalive_client(port, counters, stop, index):
    """One keep-alive connection at a time to the steady listener; a new one only after an error."""
    connection = None
    payload = b"x" * 1024
    sequence = 0
    while not stop.is_set():
        try:
            if connection is None:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            if sequence % 4 == 3:
                connection.request("POST", "/echo", body=payload, headers={"Content-Type": "application/octet-stream"})
                response = connection.getresponse()
                body = response.read()
                check_response(response, body)
                if body != payload:
                    raise AssertionError("echo returned %d bytes" % len(body))
            else:
                connection.request("GET", "/keepalive/%d/%d" % (index, sequence))
                response = connection.getresponse()
                check_response(response, response.read())
            counters.add("steady keep-alive requests")
        except Exception as error:  # noqa: BLE001 (every failure counts)
            counters.failure("steady keep-alive failures", error)
            if connection is not None:
                connection.close()
            connection = None
            time.sleep(0.05)
        sequence += 1
    if connection is not None:
        connection.close()


def fresh_client(port, counters, stop):
    """A new connection for every request to the steady listener."""
    while not stop.is_set():
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            connection.request("GET", "/fresh", headers={"Connection": "close"})
            response = connection.getresponse()
            check_response(response, response.read())
            counters.add("steady fresh-connection requests")
        except Exception as error:  # noqa: BLE001
            counters.failure("steady fresh-connection failures", error)
            time.sleep(0.05)
        finally:
            connection.close()


def transient_client(current_port, counters, stop):
    """Keep-alive requests to whichever transient listener is current; refusals are expected here."""
    connection = None
    connected_port = None
    while not stop.is_set():
        port = current_port[0]
        if port is None:
            time.sleep(0.01)
            continue
        try:
            if connection is None or connected_port != port:
                if connection is not None:
                    connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                connected_port = port
            connection.request("GET", "/transient")
            response = connection.getresponse()
            check_response(response, response.read())
            counters.add("transient requests")
        except Exception:  # noqa: BLE001 (refused or reset while its listener goes away)
            counters.add("transient failures (listener going away)")
            if connection is not None:
                connection.close()
            connection = None
            time.sleep(0.02)
    if connection is not None:
        connection.close()


def sample(pid):
    rss_kb = 0
    with open("/proc/%d/status" % pid) as status:
        for line in status:
            if line.startswith("VmRSS:"):
                rss_kb = int(line.split()[1])
    return rss_kb, len(os.listdir("/proc/%d/fd" % pid))


def descriptor_kinds(pid, backend_ports):
    """alb's open descriptors by kind, so growth can be told apart: listening sockets, connections to
    backends, connections from clients, and everything else (files, epoll, eventfd, pipes)."""
    states = {}  # socket inode -> (TCP state, remote port)
    for table in ("/proc/%d/net/tcp" % pid, "/proc/%d/net/tcp6" % pid):
        try:
            with open(table) as lines:
                next(lines)
                for line in lines:
                    fields = line.split()
                    states[fields[9]] = (fields[3], int(fields[2].rsplit(":", 1)[1], 16))
        except FileNotFoundError:
            pass
    kinds = {"listening": 0, "to backends": 0, "from clients": 0, "other": 0}
    for name in os.listdir("/proc/%d/fd" % pid):
        try:
            target = os.readlink("/proc/%d/fd/%s" % (pid, name))
        except OSError:
            continue  # closed meanwhile
        inode = target[len("socket:["):-1] if target.startswith("socket:[") else None
        state, remote_port = states.get(inode, (None, None))
        if state == "0A":
            kinds["listening"] += 1
        elif state is not None and remote_port in backend_ports:
            kinds["to backends"] += 1
        elif state is not None:
            kinds["from clients"] += 1
        else:
            kinds["other"] += 1
    return kinds


def accepts(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def wait_until(predicate, timeout, process):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("%s exited with status %s" % (process.args[0], process.returncode))
        if predicate():
            return True
        time.sleep(0.002)
    return False


def main():
    if not os.path.exists(ALB):
        print("soak: no alb binary at %s (set ALB_BIN)" % ALB, file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="alb-soak-"))
    manifest_dir = work / "manifests"
    manifest_dir.mkdir()
    status = Status(work / "status")
    ports = free_ports(4 + 1 + TRANSIENT_SLOTS)
    backend_ports, steady_port, transient_ports = ports[:4], ports[4], ports[5:]
    backend_args = []
    for index, port in enumerate(backend_ports):
        backend_args += [str(port), "backend-%d" % index]
    backends = subprocess.Popen([sys.executable, str(ROOT / "tests/demo_backend.py"), *backend_args],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for port in backend_ports:  # the load must not start before the backends listen
        if not wait_until(lambda: accepts(port), 10, backends):
            raise RuntimeError("demo backend on port %d did not start" % port)
    manifests = Manifests(manifest_dir, steady_port, backend_ports)
    manifests.write_base()
    log = open(work / "alb.log", "wb")
    access_log = work / "access.log"
    alb = subprocess.Popen([ALB, "reconcile", str(manifest_dir), "--watch", "--status-dir", str(work / "status"),
                            "--access-log", str(access_log)], stdout=log, stderr=log)
    counters = Counters()
    stop = threading.Event()
    threads = []
    current_transient_port = [None]
    samples = {}
    kinds = {}
    not_applied = 0
    started = time.monotonic()
    try:
        def steady_running():
            listener = status.of("Listener", "steady") or {}
            return listener.get("state") == "Running"
        if not wait_until(steady_running, 30, alb):
            raise RuntimeError("the steady listener did not start (see %s)" % (work / "alb.log"))
        for index in range(KEEPALIVE_THREADS):
            threads.append(threading.Thread(target=keepalive_client, args=(steady_port, counters, stop, index)))
        threads.append(threading.Thread(target=fresh_client, args=(steady_port, counters, stop)))
        threads.append(threading.Thread(target=transient_client, args=(current_transient_port, counters, stop)))
        for thread in threads:
            thread.start()
        time.sleep(1)
        samples["start"] = sample(alb.pid)

        transient_index = -1
        for change in range(CHANGES):
            kind = change % 4
            if kind == 0:
                manifests.idle_timeout = 20 + change % 21
                manifests.request_timeout = 30 + change % 91
                manifests.write_base()

                def live():
                    spec = (status.of("Listener", "steady") or {}).get("live") or {}
                    return (spec.get("idleTimeout") == manifests.idle_timeout
                            and spec.get("requestTimeout") == manifests.request_timeout)
            elif kind in (1, 2):
                if kind == 1:
                    manifests.servers = [(port, 1 + (change * 37 + position * 53) % 100)
                                         for position, (port, _) in enumerate(manifests.servers)]
                else:
                    extra = [(port, 50) for position, port in enumerate(backend_ports[2:])
                             if (change // 4 >> position) & 1]
                    manifests.servers = manifests.servers[:2] + extra
                manifests.write_base()
                wanted = [(port, weight) for port, weight in manifests.servers]

                def live():
                    spec = (status.of("ServerGroup", "pool") or {}).get("live") or {}
                    return [(s.get("port"), s.get("weight")) for s in spec.get("servers", [])] == wanted
            else:
                transient_index += 1
                slot = transient_index % TRANSIENT_SLOTS
                name, port = "transient-%d" % slot, transient_ports[slot]
                # The slot's previous listener went away TRANSIENT_SLOTS rotations ago; its deletion
                # waits out the reconciler's one-second grace, so wait for it before reusing the name.
                if not wait_until(lambda: not status.exists("Listener", name), CHANGE_TIMEOUT, alb):
                    not_applied += 1
                manifests.write_transient(name, port)

                def live():
                    listener = status.of("Listener", name) or {}
                    return listener.get("state") == "Running" and (listener.get("live") or {}).get("port") == port
            if wait_until(live, CHANGE_TIMEOUT, alb):
                if kind == 3:
                    current_transient_port[0] = port
            else:
                not_applied += 1
            if change + 1 == CHECKPOINT:
                samples["after %d changes" % CHECKPOINT] = sample(alb.pid)
                kinds["after %d changes" % CHECKPOINT] = descriptor_kinds(alb.pid, backend_ports)
            if (change + 1) % 1000 == 0:
                print("soak: %d changes, %.0f s" % (change + 1, time.monotonic() - started), flush=True)
        time.sleep(1)
        samples["end"] = sample(alb.pid)
        kinds["end"] = descriptor_kinds(alb.pid, backend_ports)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=15)
        alive = alb.poll() is None
        if alive:
            alb.send_signal(signal.SIGTERM)
            try:
                alb.wait(timeout=40)
            except subprocess.TimeoutExpired:
                alb.kill()
        backends.terminate()
        backends.wait(timeout=10)
        log.close()
    elapsed = time.monotonic() - started

    problems = []
    steady_failures = counters.get("steady keep-alive failures") + counters.get("steady fresh-connection failures")
    if steady_failures:
        problems.append("%d failed requests on the steady listener" % steady_failures)
    if not_applied:
        problems.append("%d changes not live within %.0f s" % (not_applied, CHANGE_TIMEOUT))
    if not alive:
        problems.append("alb exited during the soak (see %s)" % (work / "alb.log"))
    middle = samples.get("after %d changes" % CHECKPOINT)
    end = samples.get("end")
    if middle and end:
        if end[0] > middle[0] * 1.1 + RSS_SLACK_KB:
            problems.append("RSS grew from %d KiB to %d KiB" % (middle[0], end[0]))
        if end[1] > middle[1] * 1.1 + FD_SLACK:
            problems.append("open descriptors grew from %d to %d" % (middle[1], end[1]))

    print()
    print("| soak | value |")
    print("|---|---|")
    print("| changes applied | %d of %d (%d not live in time) |" % (CHANGES - not_applied, CHANGES, not_applied))
    print("| duration | %.0f s |" % elapsed)
    for key in ("steady keep-alive requests", "steady keep-alive failures", "steady fresh-connection requests",
                "steady fresh-connection failures", "transient requests", "transient failures (listener going away)"):
        print("| %s | %d |" % (key, counters.get(key)))
    for label, (rss_kb, fds) in samples.items():
        print("| RSS / open fds, %s | %.1f MiB / %d |" % (label, rss_kb / 1024, fds))
    for label, counts in kinds.items():
        print("| open fds %s, by kind | %s |" % (label, ", ".join("%s %d" % item for item in counts.items())))
    for line in counters.samples:
        print("failure sample: " + line)
    if problems:
        server_errors = [line for line in access_log.read_text(errors="replace").splitlines()
                         if '"status":5' in line.replace(" ", "")] if access_log.exists() else []
        for line in server_errors[:5]:
            print("access log: " + line)
        print("soak: FAILED: " + "; ".join(problems))
        print("soak: files kept in %s" % work)
        return 1
    print("soak: passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
