"""Binary upgrade without dropping a connection: `alb reconcile --takeover PATH` (docs/takeover.md).

A new reconciler started with the same --takeover PATH receives the running one's listening sockets and
status-directory lock over PATH; the old one stops accepting, drains and exits 0. The load test runs wrk
(keep-alive connections) and a fresh-connection client loop through the upgrade and prints the counts of
failed and refused requests. The failure cases drive the old process with a successor written in Python
that speaks the protocol and then dies or never says `ready`, and the new one with a predecessor in Python.
"""
import array
import fcntl
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import ALB, Wrk, free_port, get, manifest_set, receive_until_close, refused, stop_process, wait_for

TESTS = Path(__file__).resolve().parents[1]


@pytest.fixture
def backend():
    """A demo backend in a process of its own (the load would otherwise share the test's interpreter), with
    a listen backlog large enough for a proxy that opens its pool connections all at once."""
    port = free_port()
    code = ("import sys, http.server; http.server.ThreadingHTTPServer.request_queue_size = 256; "
            "import demo_backend; sys.exit(demo_backend.main(sys.argv[1:]))")
    process = subprocess.Popen([sys.executable, "-c", code, str(port), "b1"], cwd=str(TESTS),
                               env=dict(os.environ, PYTHONPATH=str(TESTS)),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: not refused(port), what="backend up")
    yield port
    process.kill()
    process.wait()


class Successor:
    """Another `alb reconcile` over the same manifests and status directory, with its own log."""

    def __init__(self, alb, name, *args):
        self.log_path = alb.root / (name + ".log")
        self.log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [ALB, "reconcile", str(alb.manifests), "--watch", "--status-dir", str(alb.status), *args],
            stdout=self.log, stderr=self.log)

    def logs(self):
        return self.log_path.read_text(errors="replace")

    def stop(self, sig=signal.SIGTERM, timeout=40):
        return stop_process(self.process, sig, timeout)


@pytest.fixture
def successors():
    started = []

    def start(alb, name, *args):
        started.append(Successor(alb, name, *args))
        return started[-1]

    yield start
    for successor in started:
        successor.stop(signal.SIGKILL, timeout=5)


class FreshConnections(threading.Thread):
    """GETs on a fresh connection each, until stopped (at most `limit`): counts refused connections apart."""

    def __init__(self, port, limit=20000):
        super().__init__(daemon=True)
        self.port, self.limit = port, limit
        self.ok = self.refused = 0
        self.failures = []
        self.stopping = threading.Event()

    def run(self):
        for _ in range(self.limit):
            if self.stopping.is_set():
                break
            try:
                status, _, _ = get(self.port, timeout=10)
                if status == 200:
                    self.ok += 1
                else:
                    self.failures.append(status)
            except ConnectionRefusedError:
                self.refused += 1
            except Exception as error:  # counted and shown
                self.failures.append(repr(error))
            time.sleep(0.002)

    def finish(self):
        self.stopping.set()
        self.join(30)
        return self


class SlowRequest(threading.Thread):
    """One request that takes `seconds` at the backend, on its own connection."""

    def __init__(self, port, seconds):
        super().__init__(daemon=True)
        self.port, self.seconds = port, seconds
        self.status = self.error = None
        self.headers = {}

    def run(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("GET", "/slow?s=%s" % self.seconds)
            response = conn.getresponse()
            response.read()
            self.status = response.status
            self.headers = {k.lower(): v for k, v in response.getheaders()}
        except Exception as error:  # what the test asserts on
            self.error = repr(error)
        finally:
            conn.close()


def lock_pid(alb):
    return int((alb.status / ".lock").read_text().strip() or 0)


def serve_with_takeover(alb, backend_port, *extra):
    port = free_port()
    alb.write("web.yaml", manifest_set(port, [(backend_port, 100)]))
    alb.start("--takeover", str(alb.root / "alb.sock"), *extra)
    alb.wait_state("web", "Running")
    wait_for(lambda: (alb.root / "alb.sock").exists(), what="takeover socket")
    return port


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (make deps installs it)")
def test_takeover_under_wrk_load_fails_and_refuses_nothing(alb, backend, successors, capsys):
    sock = str(alb.root / "alb.sock")
    port = serve_with_takeover(alb, backend)
    old_pid = alb.process.pid

    load = Wrk(port, seconds=8)
    fresh = FreshConnections(port)
    load.start()
    fresh.start()
    time.sleep(2)
    slow = SlowRequest(port, 2)  # in flight on the old process across the takeover
    slow.start()
    time.sleep(0.3)

    new = successors(alb, "new", "--takeover", sock)
    # The old process stops accepting, lets its requests finish, and exits 0.
    assert alb.process.wait(timeout=40) == 0, alb.logs()
    slow.join(30)
    load.join(60)
    fresh.finish()

    counts = load.counts()
    failed = counts["non2xx"] + counts["read"] + counts["write"] + counts["timeout"] + len(fresh.failures)
    refused_count = counts["connect"] + fresh.refused
    with capsys.disabled():
        print("\ntakeover under wrk (-c%d, %d s): %d requests, %d failed (non-2xx %d, read %d, write %d, timeout %d), "
              "%d refused (connect errors %d); fresh-connection loop: %d ok, %d failed, %d refused"
              % (load.connections, load.seconds, counts["requests"], failed, counts["non2xx"], counts["read"], counts["write"], counts["timeout"],
                 refused_count, counts["connect"], fresh.ok, len(fresh.failures), fresh.refused))
    assert counts["requests"] > 0 and fresh.ok > 0, load.output
    assert (failed, refused_count) == (0, 0), (load.output, fresh.failures[:5])
    assert (slow.status, slow.error) == (200, None)
    assert slow.headers.get("connection") == "close"

    # The new process serves, owns the status directory, and listens for the next takeover.
    assert new.process.poll() is None, new.logs()
    assert get(port)[0] == 200
    assert lock_pid(alb) == new.process.pid != old_pid
    assert "took over" in new.logs()
    assert "handed over" in alb.logs()
    status = alb.status_of("Listener", "web")
    assert status["state"] == "Running"
    table = alb.run_cli("status", "--status-dir", str(alb.status))
    assert table.returncode == 0 and "no reconciler is running" not in table.stderr
    assert os.path.exists(sock)
    # A clean exit of the new process removes the socket file, as it would have for the old one.
    assert new.stop() == 0
    assert not os.path.exists(sock)


def test_takeover_hands_over_twice_and_keeps_ephemeral_and_renamed_ports(alb, backend, successors):
    """A -> B -> C; B's manifests rename the listener (the port goes with the address) and C's add one."""
    sock = str(alb.root / "alb.sock")
    port = serve_with_takeover(alb, backend)

    second = successors(alb, "second", "--takeover", sock)
    assert alb.process.wait(timeout=40) == 0, alb.logs()
    wait_for(lambda: "listening for a takeover" in second.logs(), what="second listens")
    assert get(port)[0] == 200

    # Renamed while the second one runs: handed over in-process, as always.
    alb.write("web.yaml", manifest_set(port, [(backend, 100)], listener="site"))
    alb.wait_state("site", "Running")
    extra_port = free_port()
    # The same LoadBalancer `lb` from web.yaml: drop manifest_set's own copy of it.
    alb.write("extra.yaml", manifest_set(extra_port, [(backend, 100)], listener="extra", group="pool2")
              .split("---\n", 1)[1])
    alb.wait_state("extra", "Running")

    third = successors(alb, "third", "--takeover", sock)
    assert second.process.wait(timeout=40) == 0, second.logs()
    wait_for(lambda: "listening for a takeover" in third.logs(), what="third listens")
    assert get(port)[0] == 200 and get(extra_port)[0] == 200
    assert lock_pid(alb) == third.process.pid
    assert "closed an inherited socket" not in third.logs()


def test_https_connections_finish_on_the_old_process_and_new_ones_reach_the_new_one(alb, backend, successors):
    from test_https import https_set, make_cert, tls_connection, tls_get
    cert, key = make_cert(alb.root, "main", ["main.example.com"])
    port = free_port()
    sock = str(alb.root / "alb.sock")
    alb.write("web.yaml", https_set(port, backend, {"main": (cert, key)}))
    alb.start("--takeover", sock)
    alb.wait_state("web", "Running")
    kept = tls_connection(port, "main.example.com", cert)
    assert tls_get(port, "main.example.com", cert, conn=kept)[0] == 200

    new = successors(alb, "new", "--takeover", sock)
    wait_for(lambda: "handed over" in alb.logs(), what="the hand-over")
    # The established TLS connection goes on on the old process until a response tells it to close (the
    # first one once the drain has reached the connection).
    answers = []
    for _ in range(20):
        kept.request("GET", "/last")
        response = kept.getresponse()
        answers.append((response.status, response.read(), response.getheader("connection")))
        if answers[-1][2] == "close":
            break
        time.sleep(0.05)
    assert answers[-1] == (200, b"b1 /last\n", "close"), answers
    assert all(status == 200 for status, _, _ in answers), answers
    kept.close()
    assert alb.process.wait(timeout=40) == 0, alb.logs()
    # New connections, HTTP/1.1 and HTTP/2, reach the new process on the same socket.
    assert tls_get(port, "main.example.com", cert)[0] == 200
    h2 = subprocess.run(["curl", "-s", "--http2", "--cacert", str(cert), "--resolve",
                         "main.example.com:%d:127.0.0.1" % port, "-o", "/dev/null", "-w", "%{http_version} %{http_code}",
                         "https://main.example.com:%d/" % port], capture_output=True, text=True, timeout=30)
    assert h2.stdout == "2 200", h2
    assert lock_pid(alb) == new.process.pid


def test_takeover_without_a_running_process_starts_as_usual(alb, backend):
    """Nothing at PATH, or a socket file left by a killed process: an ordinary start, then it listens there."""
    sock = alb.root / "alb.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    stale.bind(str(sock))
    stale.close()  # the file stays; nothing listens
    port = serve_with_takeover(alb, backend)
    assert get(port)[0] == 200
    assert "taking over" not in alb.logs()
    assert lock_pid(alb) == alb.process.pid
    assert alb.stop() == 0
    assert not sock.exists()


def test_a_takeover_with_another_status_directory_is_refused_and_the_old_process_keeps_serving(alb, backend, successors):
    sock = str(alb.root / "alb.sock")
    port = serve_with_takeover(alb, backend)
    other = alb.root / "other-status"
    stray = subprocess.run([ALB, "reconcile", str(alb.manifests), "--status-dir", str(other), "--takeover", sock],
                           capture_output=True, text=True, timeout=60)
    assert stray.returncode == 1
    assert "keeps its status files in" in stray.stderr
    wait_for(lambda: "takeover failed; still serving" in alb.logs(), what="the old one says so")
    assert alb.process.poll() is None
    assert get(port)[0] == 200
    assert lock_pid(alb) == alb.process.pid


# --- The protocol, driven from Python: a successor that dies or never answers, a predecessor that dies.

def send_message(conn, message, fds=()):
    data = json.dumps(message).encode()
    if fds:
        conn.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
    else:
        conn.sendall(data)


def receive_message(conn, timeout=10):
    conn.settimeout(timeout)
    data, ancillary, _, _ = conn.recvmsg(65536, socket.CMSG_SPACE(64 * 4))
    fds = []
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.extend(array.array("i", payload[:len(payload) - len(payload) % 4]))
    return (json.loads(data) if data else None), fds


def fake_successor_takes_the_offer(sock):
    """Connects, says hello, and returns the connection, the offer, the socket entries and every descriptor."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    conn.connect(sock)
    send_message(conn, {"type": "hello", "version": 1, "pid": os.getpid()})
    offer, lock_fds = receive_message(conn)
    assert offer["type"] == "offer", offer
    entries, fds = [], []
    while len(entries) < offer["count"]:
        message, more = receive_message(conn)
        assert message["type"] == "sockets", message
        entries += message["sockets"]
        fds += more
    return conn, offer, entries, lock_fds + fds


@pytest.mark.parametrize("how", ["dies", "never answers"])
def test_the_old_process_keeps_serving_when_the_successor_dies_or_never_answers(alb, backend, successors, how):
    sock = str(alb.root / "alb.sock")
    port = serve_with_takeover(alb, backend, "--takeover-timeout", "2")
    loop = FreshConnections(port)
    loop.start()
    time.sleep(0.3)

    conn, offer, entries, fds = fake_successor_takes_the_offer(sock)
    # What came over is the real thing: the lock file and the listener's listening socket.
    assert offer["pid"] == alb.process.pid and offer["statusDirectory"] == os.path.realpath(alb.status)
    assert [(e["listener"], e["address"]) for e in entries] == [("web", "127.0.0.1:%d" % port)]
    assert os.fstat(fds[0]).st_ino == os.stat(alb.status / ".lock").st_ino
    listening = socket.socket(fileno=os.dup(fds[1]))
    assert listening.getsockname() == ("127.0.0.1", port)
    assert listening.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
    listening.close()
    if how == "dies":
        conn.close()
        for fd in fds:
            os.close(fd)
        wait_for(lambda: "takeover failed; still serving" in alb.logs(), what="the old one notices")
    else:
        wait_for(lambda: "did not answer in time" in alb.logs(), timeout=10, what="the old one gives up")
        reply, _ = receive_message(conn)
        assert reply["type"] == "abort"
        conn.close()
        for fd in fds:
            os.close(fd)
    time.sleep(0.5)
    loop.finish()
    assert alb.process.poll() is None
    assert (loop.refused, loop.failures) == (0, []) and loop.ok > 0
    assert lock_pid(alb) == alb.process.pid
    assert alb.status_of("Listener", "web")["state"] == "Running"

    # It can still be taken over for real.
    new = successors(alb, "new", "--takeover", sock)
    assert alb.process.wait(timeout=40) == 0, alb.logs()
    assert get(port)[0] == 200
    assert lock_pid(alb) == new.process.pid


def fake_predecessor(alb, sock, listening, pid, finish):
    """Serves one takeover from Python: the status lock and `listening` go over, then `finish(conn)`."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    server.bind(sock)
    server.listen(1)
    alb.status.mkdir(exist_ok=True)
    lock = open(alb.status / ".lock", "a+")
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    lock.truncate(0)
    lock.write("%d\n" % os.getpid())
    lock.flush()
    result = {}

    def run():
        server.settimeout(30)
        conn, _ = server.accept()
        # The path is not needed once the successor is connected; removed now, not after `finish`, because
        # a successor that carries on puts its own socket there and a late unlink would remove that one.
        os.unlink(sock)
        hello, _ = receive_message(conn)
        result["hello"] = hello
        host, port = listening.getsockname()
        send_message(conn, {"type": "offer", "version": 1, "pid": pid,
                            "statusDirectory": os.path.realpath(alb.status), "count": 1}, [lock.fileno()])
        send_message(conn, {"type": "sockets", "sockets": [
            {"listener": "web", "address": "%s:%d" % (host, port), "boundAddress": "%s:%d" % (host, port)}]},
            [listening.fileno()])
        result["reply"], _ = receive_message(conn, timeout=30)
        finish(conn)
        conn.close()
        server.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, lock, result


def python_listener(port):
    listening = socket.socket()
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listening.bind(("127.0.0.1", port))
    listening.listen(64)
    return listening


def test_the_new_process_serves_the_inherited_socket_when_the_predecessor_exits_half_way(alb, backend):
    sock = str(alb.root / "alb.sock")
    port = free_port()
    alb.write("web.yaml", manifest_set(port, [(backend, 100)]))
    listening = python_listener(port)
    # A connection already waiting in the accept queue is served by whoever takes the socket over.
    queued = socket.create_connection(("127.0.0.1", port), timeout=10)
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid that has exited: the "predecessor" dies after `ready` without saying `done`
    thread, lock, result = fake_predecessor(alb, sock, listening, gone.pid, finish=lambda conn: None)
    alb.start("--takeover", sock)
    thread.join(30)
    assert result["hello"]["type"] == "hello" and result["hello"]["pid"] == alb.process.pid
    assert result["reply"] == {"type": "ready"}
    listening.close()  # the predecessor's copy goes; the new process holds its own
    lock.close()
    wait_for(lambda: "exited during the takeover" in alb.logs(), what="the new one carries on")
    queued.sendall(b"GET /queued HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    answer = receive_until_close(queued)
    queued.close()
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"b1 /queued\n"), answer
    assert get(port)[0] == 200
    wait_for(lambda: lock_pid(alb) == alb.process.pid, what="the lock file names the new owner")
    wait_for(lambda: os.path.exists(sock), what="it listens for the next takeover")
    assert alb.stop() == 0


def test_the_new_process_steps_back_when_the_predecessor_refuses(alb, backend):
    sock = str(alb.root / "alb.sock")
    port = free_port()
    alb.write("web.yaml", manifest_set(port, [(backend, 100)]))
    listening = python_listener(port)
    thread, lock, result = fake_predecessor(
        alb, sock, listening, os.getpid(),
        finish=lambda conn: send_message(conn, {"type": "abort", "reason": "changed my mind"}))
    alb.start("--takeover", sock)
    thread.join(30)
    assert result["reply"] == {"type": "ready"}
    assert alb.process.wait(timeout=40) == 1
    assert "stepping back" in alb.logs() and "changed my mind" in alb.logs()
    # It drained and closed its copy; the predecessor's socket and lock are untouched.
    assert listening.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
    assert int(open(alb.status / ".lock").read().strip()) == os.getpid()
    with open(alb.status / ".lock") as other:
        with pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    listening.close()
    lock.close()


def test_an_http3_download_in_flight_finishes_on_the_old_process(alb, backends, tmp_path, successors):
    # The QUIC listener's UDP socket is passed like the TCP ones, and the new process reads it only once the old
    # one has exited: until then every datagram, the download's acknowledgements included, reaches the old
    # process, which drains its connections there. Before the socket was passed, the new process bound the port
    # again, received those datagrams itself, and the download stalled for good.
    import asyncio
    from test_https import make_cert
    from test_quic import client_configuration, free_udp_port, on_connection, quic_set, run

    backend = backends.start("b1")
    cert, key = make_cert(tmp_path, "main", ["localhost"])
    port = free_udp_port()
    alb.write("set.yaml", quic_set(port, backend, cert, key))
    path = str(tmp_path / "takeover.sock")
    alb.start("--takeover", path)
    alb.wait_state("h3", "Running")
    size = 150 << 20  # about 5 s through a debug build on one connection, without a takeover
    upgraded = {}

    async def download(client, authority):
        transfer = asyncio.ensure_future(client.request(authority, "GET", "/big?n=%d" % size))
        await asyncio.sleep(0.3)
        upgraded["new"] = successors(alb, "new", "--takeover", path)
        return await asyncio.wait_for(transfer, 60)

    status, _, body = run(on_connection(port, download, timeout=90))
    assert status == 200 and len(body) == size, (status, len(body))
    new = upgraded["new"]
    wait_for(lambda: alb.process.poll() is not None, timeout=40, what="the old process's exit")
    assert alb.process.returncode == 0
    wait_for(lambda: "reading its QUIC sockets" in new.logs(), timeout=5, what="the new process reading")
    status, _, body = run(on_connection(port, lambda c, a: c.request(a, "GET", "/hello"), timeout=10))
    assert (status, body) == (200, b"b1 /hello\n")
    assert "sockets=1" in new.logs(), new.logs()  # the QUIC listener's, passed on
