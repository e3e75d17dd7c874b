"""Every edit shape converges without refusing a connection, failing an in-flight request or widening a bind.

Each test keeps a slow request in flight and a client loop running through the edit, and counts refused
connections and failed requests on the ports that exist before and after it.
"""
import http.client
import os
import signal
import socket
import threading
import time

from conftest import (accepted_then_drained, assert_ok_saying_close, free_port, get, manifest_set,
                      receive_until_close, refused, wait_for)

LB = """\
apiVersion: alb/v1
kind: LoadBalancer
metadata: {name: lb}
spec: {address: 127.0.0.1}
"""


def group(name, backend_port):
    return """\
apiVersion: alb/v1
kind: ServerGroup
metadata: {name: %s}
spec:
  servers:
    - {address: 127.0.0.1, port: %d}
""" % (name, backend_port)


def listener(name, port, group_name):
    return """\
apiVersion: alb/v1
kind: Listener
metadata: {name: %s}
spec:
  loadBalancer: lb
  protocol: HTTP
  port: %d
  defaultAction:
    forwardGroup:
      serverGroups: [{name: %s}]
""" % (name, port, group_name)


def docs(*parts):
    return "---\n".join(parts)


class SlowRequest(threading.Thread):
    """One request that takes `seconds` at the backend, on its own connection."""

    def __init__(self, port, seconds=2.0):
        super().__init__(daemon=True)
        self.port, self.seconds = port, seconds
        self.status = self.body = self.error = None
        self.headers = {}
        self.started = threading.Event()

    def run(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.connect()
            self.started.set()
            conn.request("GET", "/slow?s=%s" % self.seconds)
            response = conn.getresponse()
            self.status, self.body = response.status, response.read().decode(errors="replace")
            self.headers = {k.lower(): v for k, v in response.getheaders()}
        except Exception as error:  # what the test asserts on
            self.error = repr(error)
            self.started.set()
        finally:
            conn.close()

    def outcome(self):
        self.join(30)
        return self.status, self.body, self.error


class ClientLoop(threading.Thread):
    """Fresh-connection GETs round the given ports until stopped (at most `limit` requests)."""

    def __init__(self, ports, limit=3000):
        super().__init__(daemon=True)
        self.ports, self.limit = ports, limit
        self.ok = self.refused = 0
        self.failures = []
        self.stopping = threading.Event()

    def run(self):
        for i in range(self.limit):
            if self.stopping.is_set():
                break
            port = self.ports[i % len(self.ports)]
            try:
                status, _, _ = get(port, timeout=5)
                if status == 200:
                    self.ok += 1
                else:
                    self.failures.append((port, status))
            except ConnectionRefusedError:
                self.refused += 1
            except Exception as error:
                self.failures.append((port, repr(error)))
            time.sleep(0.005)

    def finish(self):
        self.stopping.set()
        self.join(30)
        return self


def in_flight(port, seconds=2.0):
    """A slow request that has reached the proxy."""
    slow = SlowRequest(port, seconds)
    slow.start()
    slow.started.wait(5)
    time.sleep(0.2)
    return slow


def assert_finished(slow):
    status, body, error = slow.outcome()
    assert (status, error) == (200, None) and body.endswith(" slow\n"), (status, body, error)


def serve_web(alb, backends):
    """A LoadBalancer file, and a file with a server group and a running listener `web`: (backend, port)."""
    b1 = backends.start("b1")
    port = free_port()
    alb.write("lb.yaml", LB)
    alb.write("web.yaml", docs(group("pool", b1), listener("web", port, "pool")))
    alb.start()
    alb.wait_state("web", "Running")
    return b1, port


def serve_a_and_b(alb, backends):
    """Listener `a` on one port forwarding to backend b1, `b` on another forwarding to b2: (a's port, b's)."""
    b1, b2 = backends.start("b1"), backends.start("b2")
    p1, p2 = free_port(), free_port()
    alb.write("lb.yaml", LB)
    alb.write("groups.yaml", docs(group("one", b1), group("two", b2)))
    alb.write("listeners.yaml", docs(listener("a", p1, "one"), listener("b", p2, "two")))
    alb.start()
    alb.wait_state("a", "Running")
    alb.wait_state("b", "Running")
    return p1, p2


def listening_addresses(port):
    """Local addresses with a listening TCP socket on `port`, read from /proc (no tools needed)."""
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        if not os.path.exists(table):
            continue
        with open(table) as f:
            next(f)
            for line in f:
                fields = line.split()
                local, state = fields[1], fields[3]
                host, hex_port = local.split(":")
                if state != "0A" or int(hex_port, 16) != port:
                    continue
                if width == 8:
                    found.add(socket.inet_ntop(socket.AF_INET, bytes.fromhex(host)[::-1]))
                else:
                    raw = bytes.fromhex(host)
                    found.add(socket.inet_ntop(socket.AF_INET6, b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))))
    return found


def assert_clean(loop):
    assert loop.ok > 0, "the client loop made no request"
    assert loop.refused == 0, "refused connections: %d" % loop.refused
    assert loop.failures == [], loop.failures[:5]


def test_deleting_the_load_balancer_never_widens_the_bind(alb, backends):
    b1, port = serve_web(alb, backends)
    assert listening_addresses(port) == {"127.0.0.1"}
    slow = in_flight(port)
    loop = ClientLoop([port])
    loop.start()

    alb.remove("lb.yaml")
    wait_for(lambda: alb.status_of("LoadBalancer", "lb") is None, what="load balancer status removed")
    wait_for(lambda: alb.condition("Listener", "web", "Valid")["reason"] == "MissingReference", what="MissingReference")
    time.sleep(1.5)  # more passes: the retry and the deletion window are over
    assert_clean(loop.finish())
    assert_finished(slow)
    assert listening_addresses(port) == {"127.0.0.1"}
    assert get(port)[0] == 200
    ready = alb.condition("Listener", "web", "Ready")
    assert ready["status"] == "True" and ready["message"] == "listening on 127.0.0.1:%d" % port
    assert not any("0.0.0.0" in e.get("message", "") for e in alb.events())

    # A restart with the LoadBalancer still missing binds nothing rather than everything.
    alb.stop()
    alb.start()
    wait_for(lambda: alb.condition("Listener", "web", "Synced")["reason"] == "MissingReference", what="not synced")
    time.sleep(1)
    assert listening_addresses(port) == set()


def test_a_file_saved_in_place_in_two_steps_drops_nothing(alb, backends):
    b1 = backends.start("b1")
    port = free_port()
    alb.write("lb.yaml", LB)  # another file, so the tree never looks empty as a whole
    path = alb.write("web.yaml", docs(group("pool", b1), listener("web", port, "pool")))
    alb.start()
    alb.wait_state("web", "Running")
    slow = SlowRequest(port)
    slow.start()
    slow.started.wait(5)
    loop = ClientLoop([port])
    loop.start()
    time.sleep(0.2)
    text = path.read_text()
    for _ in range(3):  # truncate, then write 50 ms later, as `>` and in-place editors do
        with open(path, "w") as f:
            f.flush()
            os.fsync(f.fileno())
            time.sleep(0.05)
            f.write(text)
        time.sleep(0.3)
    assert_clean(loop.finish())
    assert slow.outcome()[:2] == (200, "b1 slow\n")
    assert not [e for e in alb.events() if e["action"] in ("delete", "replace", "start") and e["name"] == "web"][1:]


def test_port_move_lets_in_flight_requests_finish_on_the_old_port(alb, backends):
    b1 = backends.start("b1")
    old, new = free_port(), free_port()
    alb.write("web.yaml", manifest_set(old, [(b1, 100)]))
    alb.start()
    alb.wait_state("web", "Running")
    slow = SlowRequest(old)
    slow.start()
    slow.started.wait(5)
    time.sleep(0.2)
    alb.write("web.yaml", manifest_set(new, [(b1, 100)]))
    wait_for(lambda: alb.status_of("Listener", "web")["live"]["port"] == new, what="new port live")
    assert get(new)[0] == 200
    assert refused(old)  # it stopped accepting at once
    status, body, error = slow.outcome()
    assert (status, body, error) == (200, "b1 slow\n", None)
    assert slow.headers.get("connection") == "close"


def test_deleting_a_listener_drains_its_in_flight_requests(alb, backends):
    b1 = backends.start("b1")
    port, other = free_port(), free_port()
    alb.write("lb.yaml", LB)
    alb.write("web.yaml", docs(group("pool", b1), listener("web", port, "pool")))
    alb.write("other.yaml", listener("other", other, "pool"))
    alb.start()
    alb.wait_state("web", "Running")
    alb.wait_state("other", "Running")
    slow = SlowRequest(port)
    slow.start()
    slow.started.wait(5)
    time.sleep(0.2)
    alb.write("web.yaml", group("pool", b1))
    wait_for(lambda: alb.status_of("Listener", "web") is None, what="listener deleted")
    assert refused(port)
    assert slow.outcome()[:3] == (200, "b1 slow\n", None)
    assert get(other)[0] == 200
    deleted = [e for e in alb.events() if e["action"] == "delete" and e["name"] == "web"]
    assert deleted and "draining" in deleted[-1]["message"]


def test_a_failed_move_keeps_serving_on_the_old_port_and_recovers(alb, backends):
    b1 = backends.start("b1")
    old, new = free_port(), free_port()
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", new))
    blocker.listen()
    try:
        alb.write("web.yaml", manifest_set(old, [(b1, 100)]))
        alb.start()
        alb.wait_state("web", "Running")
        slow = in_flight(old)
        loop = ClientLoop([old])
        loop.start()
        alb.write("web.yaml", manifest_set(new, [(b1, 100)]))
        synced = wait_for(lambda: alb.condition("Listener", "web", "Synced")["status"] == "False"
                          and alb.condition("Listener", "web", "Synced"), what="move failed")
        assert synced["reason"] == "BindFailed" and "Address already in use" in synced["message"]
        time.sleep(1.5)  # a retry or two, all while serving
        assert alb.status_of("Listener", "web")["state"] == "Running"
        assert alb.condition("Listener", "web", "Ready")["message"] == "listening on 127.0.0.1:%d" % old
        assert_clean(loop.finish())
        assert_finished(slow)
    finally:
        blocker.close()
    wait_for(lambda: alb.condition("Listener", "web", "Synced")["status"] == "True", timeout=15, what="moved")
    assert get(new)[0] == 200
    assert refused(old)


def test_swapping_two_ports_in_one_edit_refuses_nothing(alb, backends):
    p1, p2 = serve_a_and_b(alb, backends)
    slow = SlowRequest(p1)
    slow.start()
    slow.started.wait(5)
    loop = ClientLoop([p1, p2])
    loop.start()
    time.sleep(0.2)
    alb.write("listeners.yaml", docs(listener("a", p2, "one"), listener("b", p1, "two")))
    wait_for(lambda: get(p1)[1].startswith("b2") and get(p2)[1].startswith("b1"), what="ports swapped")
    time.sleep(0.3)
    assert_clean(loop.finish())
    assert slow.outcome()[:3] == (200, "b1 slow\n", None)
    assert not [e for e in alb.events() if e.get("to") == "Failed"]
    handed = [e for e in alb.events() if e["action"] == "replace"]
    assert len(handed) == 2 and all("handed over" in e["message"] for e in handed)


def test_renaming_a_listener_keeps_its_port_open(alb, backends):
    b1, port = serve_web(alb, backends)
    slow = in_flight(port)
    loop = ClientLoop([port])
    loop.start()
    time.sleep(0.2)
    alb.write("web.yaml", docs(group("pool", b1), listener("web-renamed", port, "pool")))
    alb.wait_state("web-renamed", "Running")
    wait_for(lambda: alb.status_of("Listener", "web") is None, what="old name gone")
    time.sleep(0.3)
    assert_clean(loop.finish())
    assert_finished(slow)
    assert not [e for e in alb.events() if e.get("to") == "Failed"]


def test_a_checkout_that_shifts_ports_across_files_refuses_nothing(alb, backends):
    b1 = backends.start("b1")
    ports = [free_port() for _ in range(4)]
    alb.write("lb.yaml", docs(LB, group("pool", b1)))
    names = ["l0", "l1", "l2"]
    for i, name in enumerate(names):
        alb.write("%s.yaml" % name, listener(name, ports[i], "pool"))
    alb.start()
    for name in names:
        alb.wait_state(name, "Running")
    slows = [in_flight(port, 2.5) for port in ports[:3]]
    loop = ClientLoop(ports[1:3])  # the ports that exist before and after
    loop.start()
    time.sleep(0.2)
    for i, name in enumerate(names):  # one file after another, as a checkout writes them
        alb.write("%s.yaml" % name, listener(name, ports[i + 1], "pool"))
    wait_for(lambda: all(alb.condition("Listener", n, "Ready")["message"] == "listening on 127.0.0.1:%d" % ports[i + 1]
                         for i, n in enumerate(names)), what="every listener moved")
    time.sleep(0.3)
    assert_clean(loop.finish())
    for slow in slows:
        assert_finished(slow)
    assert refused(ports[0])
    assert not [e for e in alb.events() if e.get("to") == "Failed"]


def test_status_after_a_clean_exit_says_stopped(alb, backends):
    serve_web(alb, backends)
    assert alb.stop(signal.SIGTERM) == 0
    status = alb.status_of("Listener", "web")
    assert status["state"] == "Stopped"
    ready = alb.condition("Listener", "web", "Ready")
    assert ready["status"] == "False" and ready["reason"] == "ReconcilerStopped"
    table = alb.run_cli("status", "--status-dir", str(alb.status))
    assert table.returncode == 0
    assert any(line.split()[:4] == ["Listener", "web", "Stopped", "False"] for line in table.stdout.splitlines())
    assert "no reconciler is running" in table.stderr


def test_drains_under_a_stream_of_fresh_connections_fail_none(alb, backends):
    """A drain meets connections at every stage: accepted with the request unread, its head half read,
    waiting for a response. Twenty port swaps under four clients that each open a connection per request
    and send at once: every request is answered (a connection the old instance accepted gets its request
    served, with `Connection: close`), none is reset or refused."""
    p1, p2 = serve_a_and_b(alb, backends)
    loops = [ClientLoop([p1, p2], limit=20000) for _ in range(4)]
    for loop in loops:
        loop.start()
    for swap in range(20):
        a, b = (p2, p1) if swap % 2 == 0 else (p1, p2)
        alb.write("listeners.yaml", docs(listener("a", a, "one"), listener("b", b, "two")))
        wait_for(lambda: get(a)[1].startswith("b1") and get(b)[1].startswith("b2"), what="swap %d" % swap)
        time.sleep(0.05)
    for loop in loops:
        assert_clean(loop.finish())


def test_a_connection_that_has_not_sent_its_request_when_a_drain_begins_is_answered(alb, backends):
    """SIGTERM between a client's connect and its request: the request is served, saying
    `Connection: close`, the connection then closes, and the process exits at once after it."""
    b1, port = serve_web(alb, backends)
    s = accepted_then_drained(alb, port)
    s.sendall(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n")
    response = receive_until_close(s)
    s.close()
    assert_ok_saying_close(response)
    assert alb.process.wait(timeout=10) == 0
