"""Fixtures for end-to-end tests: the real `alb` binary, real backends and real clients on 127.0.0.1."""
import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import demo_backend  # noqa: E402

ALB = os.environ.get("ALB_BIN") or str(Path(__file__).resolve().parents[2] / ".build/debug/alb")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_raw(handle, backlog=32):
    """A loopback TCP server calling `handle(conn)` on a thread of its own for each connection (closed after);
    the listening socket, which the caller closes."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(backlog)
    # Accept with a timeout, so the thread sees the caller's close within a fifth of a second. Blocked in accept()
    # without one, it keeps the closed socket listening (Linux holds it for the call) and answers one more
    # connection to that port, long after its test.
    server.settimeout(0.2)

    def run(conn):
        with conn:
            try:
                handle(conn)
            except OSError:
                pass

    def accept():
        while True:
            try:
                conn, _ = server.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=run, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return server


def blackhole():
    """A listening socket whose accept queue is full, so new SYNs are dropped and connecting to it hangs like
    a dead host: (the socket, the connections filling its queue), for the caller to close."""
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(0)
    filling = []
    for _ in range(4):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(hole.getsockname())
        filling.append(s)
    time.sleep(0.2)
    return hole, filling


def wait_for(predicate, timeout=10.0, interval=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except Exception as error:  # the thing may not exist yet
            last = error
        time.sleep(interval)
    raise AssertionError("timed out after %.1fs waiting for %s (last: %r)" % (timeout, what, last))


def get(port, path="/", headers=None, timeout=5):
    """One request on a fresh connection: (status, body text, headers dict)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read().decode(errors="replace"), dict(response.getheaders())
    finally:
        conn.close()


def line_of(text, needle, offset=0):
    """1-based line number of the first line containing `needle`, plus `offset`."""
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            return number + offset
    raise AssertionError("%r not in text" % needle)


def refused(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except OSError:
        return True


def receive_until_close(s, first_only=False):
    """Everything `s` receives until the peer closes (or the socket's timeout), or its first read."""
    chunks = []
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
            if first_only:
                break
    except socket.timeout:
        pass
    return b"".join(chunks)


def accepted_then_drained(alb, port):
    """A connection alb has accepted, then SIGTERM to alb (a drain) before the client sends anything on it."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    time.sleep(0.3)  # accepted by alb, nothing sent yet
    alb.process.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    return s


def assert_ok_saying_close(response):
    """`response` (raw bytes) is a 200 whose head says `Connection: close`."""
    head = response.split(b"\r\n\r\n")[0].decode().lower()
    assert head.startswith("http/1.1 200"), response
    assert "connection: close" in head, response


def raw(port, data, timeout=5, read_until_close=True):
    """Sends raw bytes and returns everything the listener answers until it closes (or times out)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        return receive_until_close(s, first_only=not read_until_close)


def stop_process(process, sig=signal.SIGTERM, timeout=40):
    """Sends `sig`, waits up to `timeout` seconds, kills it if still running; returns its exit status."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


class Backends:
    def __init__(self):
        self.servers = []

    def start(self, name, certfile=None, keyfile=None):
        port = free_port()
        self.servers.append(demo_backend.serve(port, name, certfile, keyfile))
        return port

    def close(self):
        for server in self.servers:
            server.shutdown()
            server.server_close()


@pytest.fixture
def backends():
    b = Backends()
    yield b
    b.close()


class Albatross:
    """A running `alb reconcile --watch` over a temporary manifest directory."""

    def __init__(self, root):
        self.root = root
        self.manifests = root / "manifests"
        self.status = root / "status"
        self.manifests.mkdir()
        self.process = None
        self.log_path = root / "alb.log"

    def write(self, name, text):
        path = self.manifests / name
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name("." + path.name + ".tmp")
        tmp.write_text(textwrap.dedent(text))
        os.replace(tmp, path)  # rename-over, as editors do
        return path

    def remove(self, name):
        (self.manifests / name).unlink()

    def start(self, *extra):
        self.log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [ALB, "reconcile", str(self.manifests), "--watch", "--status-dir", str(self.status), *extra],
            stdout=self.log, stderr=self.log)
        return self

    def stop(self, sig=signal.SIGTERM, timeout=40):
        return stop_process(self.process, sig, timeout) if self.process else None

    def status_of(self, kind, name):
        path = self.status / (kind.lower() + "s") / (name + ".yaml")
        if not path.exists():
            return None
        return yaml.safe_load(path.read_text())

    def condition(self, kind, name, type_):
        status = self.status_of(kind, name) or {}
        for c in status.get("conditions", []):
            if c["type"] == type_:
                return c
        return None

    def wait_state(self, name, state, timeout=10):
        return wait_for(lambda: (self.status_of("Listener", name) or {}).get("state") == state
                        and self.status_of("Listener", name), timeout, what="listener %s %s" % (name, state))

    def events(self):
        path = self.status / "events.log"
        import json
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def run_cli(self, *args):
        return subprocess.run([ALB, *args], capture_output=True, text=True, timeout=60)

    def logs(self):
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture
def alb(tmp_path):
    instance = Albatross(tmp_path)
    yield instance
    instance.stop(signal.SIGKILL, timeout=5)


def manifest_set(port, servers, lb_address="127.0.0.1", listener="web", group="pool", extra_listener="",
                 state="Running", idle=15, request_timeout=60, group_weight=100):
    """A LoadBalancer, a ServerGroup of `servers` [(port, weight)] and one HTTP listener."""
    server_lines = "\n".join("    - {address: 127.0.0.1, port: %d, weight: %d}" % (p, w) for p, w in servers)
    return f"""\
apiVersion: alb/v1
kind: LoadBalancer
metadata: {{name: lb}}
spec: {{address: {lb_address}}}
---
apiVersion: alb/v1
kind: ServerGroup
metadata: {{name: {group}}}
spec:
  servers:
{server_lines}
---
apiVersion: alb/v1
kind: Listener
metadata: {{name: {listener}}}
spec:
  loadBalancer: lb
  protocol: HTTP
  port: {port}
  state: {state}
  idleTimeout: {idle}
  requestTimeout: {request_timeout}
  defaultAction:
    forwardGroup:
      serverGroups: [{{name: {group}, weight: {group_weight}}}]
{extra_listener}"""



def serve_web(alb, backends):
    """alb running listener "web" on a free port, forwarding to backend "b1": (port, b1's port)."""
    b1 = backends.start("b1")
    port = free_port()
    alb.write("web.yaml", manifest_set(port, [(b1, 100)]))
    alb.start()
    alb.wait_state("web", "Running")
    return port, b1


class Wrk(threading.Thread):
    """wrk over keep-alive connections for `seconds`; `counts()` parses its summary."""

    def __init__(self, port, seconds, connections=16):
        super().__init__(daemon=True)
        self.connections, self.seconds = connections, seconds
        self.command = ["wrk", "-t2", "-c%d" % connections, "-d%ds" % seconds, "--timeout", "10s",
                        "http://127.0.0.1:%d/" % port]
        self.output = ""

    def run(self):
        done = subprocess.run(self.command, capture_output=True, text=True, timeout=120)
        self.output = done.stdout + done.stderr

    def counts(self):
        requests = re.search(r"(\d+) requests in", self.output)
        errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", self.output)
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", self.output)
        connect, read, write, timeout = (int(n) for n in errors.groups()) if errors else (0, 0, 0, 0)
        return {"requests": int(requests.group(1)) if requests else 0, "connect": connect, "read": read,
                "write": write, "timeout": timeout, "non2xx": int(non2xx.group(1)) if non2xx else 0}
