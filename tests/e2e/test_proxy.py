"""The HTTP data plane through the real binary, with curl and raw sockets as clients."""
import http.client
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import ALB, blackhole, free_port, get, manifest_set, receive_until_close, stop_process, wait_for


@pytest.fixture
def serving(alb, backends):
    """Starts alb with one listener over the given servers; returns its port."""
    def start(servers, **kwargs):
        port = free_port()
        alb.write("web.yaml", manifest_set(port, servers, **kwargs))
        alb.start("--access-log", str(alb.root / "access.log"))
        alb.wait_state("web", "Running")
        return port
    return start


def curl(*args):
    return subprocess.run(["curl", "-sS", *args], capture_output=True, text=True, timeout=30)


def test_weighted_round_robin_and_weight_zero(serving, backends):
    a, b, c = backends.start("a"), backends.start("b"), backends.start("c")
    port = serving([(a, 30), (b, 10), (c, 0)])
    names = [get(port)[1].split()[0] for _ in range(8)]
    assert names.count("a") == 6 and names.count("b") == 2 and "c" not in names


def test_keepalive_and_pipelining_with_curl(serving, backends):
    port = serving([(backends.start("a"), 100)])
    result = curl("-v", "http://127.0.0.1:%d/1" % port, "http://127.0.0.1:%d/2" % port)
    assert result.stdout == "a /1\na /2\n"
    assert "Re-using existing connection" in result.stderr or "Reusing existing" in result.stderr
    # Two pipelined requests in one write get two ordered answers.
    import socket
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /p1 HTTP/1.1\r\nHost: x\r\n\r\nGET /p2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = receive_until_close(s)
    assert data.count(b"HTTP/1.1 200") == 2
    assert data.index(b"a /p1") < data.index(b"a /p2")


def test_x_forwarded_for_from_a_peer_that_is_no_trusted_proxy_is_replaced(serving, backends):
    # Appending to a trusted proxy's list: test_edge_responses.py.
    port = serving([(backends.start("a"), 100)])
    status, body, _ = get(port, "/headers", {"X-Forwarded-For": "203.0.113.7"})
    assert status == 200
    headers = {k.lower(): v for k, v in json.loads(body).items()}
    assert headers["x-forwarded-for"] == "127.0.0.1"


def test_post_body_is_streamed_both_ways(serving, backends):
    port = serving([(backends.start("a"), 100)])
    payload = b"0123456789" * 300_000  # 3 MB
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    conn.request("POST", "/echo", body=payload)
    response = conn.getresponse()
    assert response.status == 200
    assert response.read() == payload


def test_errors_502_503_504(alb, backends):
    a = backends.start("a")
    refused_port = free_port()
    port = free_port()
    alb.write("web.yaml", manifest_set(port, [(refused_port, 100)], request_timeout=1))
    alb.start("--access-log", str(alb.root / "access.log"))
    alb.wait_state("web", "Running")
    status, body, _ = get(port, "/refused")
    assert status == 502 and "Bad Gateway" in body
    alb.write("web.yaml", manifest_set(port, [(a, 0)], request_timeout=1))
    wait_for(lambda: get(port, "/none")[0] == 503, what="503 with every weight 0")
    assert "Service Unavailable" in get(port, "/none")[1]
    alb.write("web.yaml", manifest_set(port, [(a, 100)], request_timeout=1))
    wait_for(lambda: get(port)[0] == 200, what="200 again")
    status, body, _ = get(port, "/slow?s=3")
    assert status == 504 and "Gateway Timeout" in body
    assert get(port, "/reset")[0] == 502
    # The access log says why (nginx's error log, HAProxy's termination flags); until the fourteenth session it
    # said only the status.
    path = alb.root / "access.log"
    wanted = {"/refused": "connect refused", "/none": "no server available",
              "/slow?s=3": "no response head within the request timeout",
              "/reset": "closed before a valid response head", "/": ""}

    def reasons():
        records = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        return {r["path"]: r["upstream_error"] for r in records if r["path"] in wanted}
    wait_for(lambda: len(reasons()) == len(wanted), what="a line for each")
    assert reasons() == wanted


def test_backend_reset_is_502(serving, backends):
    port = serving([(backends.start("a"), 100)])
    assert get(port, "/reset")[0] == 502


def test_access_log_has_spec_fields(serving, backends, alb):
    port = serving([(backends.start("a"), 100)])
    assert get(port, "/logged")[0] == 200
    path = alb.root / "access.log"
    record = wait_for(lambda: [json.loads(line) for line in path.read_text().splitlines()
                               if '"/logged"' in line], what="access log record")[0]
    for key in ["time", "listener", "protocol", "client_ip", "client_port", "method", "host", "path", "status",
                "request_bytes", "response_bytes", "upstream", "upstream_status", "duration_ms", "tls_version",
                "tls_cipher", "sni"]:
        assert key in record
    assert record["listener"] == "web" and record["status"] == 200 and record["protocol"] == "HTTP/1.1"
    assert record["upstream"].startswith("127.0.0.1:")


def test_sigusr1_reopens_the_access_log_after_logrotate_moved_it(serving, backends, alb):
    # nginx's convention, which logrotate's postrotate scripts use. Until the fourteenth session SIGUSR1 (and USR2)
    # killed the process at once, in-flight requests and all, and nothing made a moved log file be written anew.
    import signal
    import threading
    port = serving([(backends.start("a"), 100)])
    path = alb.root / "access.log"
    assert get(port, "/before")[0] == 200
    wait_for(lambda: '"/before"' in path.read_text(), what="the first line")
    rotated = alb.root / "access.log.1"
    path.rename(rotated)
    slow = {}
    thread = threading.Thread(target=lambda: slow.update(answer=get(port, "/slow?s=1", timeout=10)))
    thread.start()
    time.sleep(0.3)
    alb.process.send_signal(signal.SIGUSR1)
    alb.process.send_signal(signal.SIGUSR2)
    thread.join(10)
    assert slow["answer"][0] == 200, "the request in flight was answered"
    wait_for(lambda: path.exists(), what="the log opened again at its path")
    assert get(port, "/after")[0] == 200
    wait_for(lambda: '"/after"' in path.read_text(), what="a line in the new file")
    assert alb.process.poll() is None
    assert '"/after"' not in rotated.read_text()


def test_backend_connect_timeout_is_502_after_five_seconds(alb):
    hole, backlog = blackhole()
    port = free_port()
    alb.write("web.yaml", manifest_set(port, [(hole.getsockname()[1], 100)], request_timeout=30))
    alb.start()
    alb.wait_state("web", "Running")
    started = time.monotonic()
    status, body, _ = get(port, timeout=20)
    elapsed = time.monotonic() - started
    assert status == 502 and "Bad Gateway" in body
    assert 4.5 <= elapsed <= 8, elapsed
    for s in backlog:
        s.close()
    hole.close()


def test_error_for_a_large_unread_body_reaches_the_client(alb, backends):
    # No server available: the 503 is sent before the 4 MB body is read; the listener must keep draining
    # (lingering close) rather than reset the connection under the client's feet.
    port = free_port()
    alb.write("web.yaml", manifest_set(port, [(backends.start("a"), 0)]))
    alb.start()
    alb.wait_state("web", "Running")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", "/upload", body=b"x" * (4 << 20))
    response = conn.getresponse()
    assert response.status == 503
    assert response.getheader("Connection") == "close"
    assert "Service Unavailable" in response.read().decode()


class ScriptedBackend:
    """A backend answering each request with the response its path names, bytes exactly as written here, on
    keep-alive connections."""
    RESPONSES = {
        "/plain": b"HTTP/1.1 200 OK\r\nServer:  scripted \r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n"
                  b"X-A: 1\r\nContent-Length: 2\r\nUpgrade: h2c\r\n\r\nok",
        "/named": b"HTTP/1.1 200 OK\r\nConnection: x-private\r\nX-Private: secret\r\nX-B: 2\r\nContent-Length: 2\r\n\r\nok",
        "/chunked": b"HTTP/1.1 200 OK\r\nX-C: 3\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        "/folded": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-D: 4\r\nContent-Length: 2\r\n\r\nok",
        "/bytes": b"HTTP/1.1 200 OK\r\nX-E: caf\xe9 \xff\r\nContent-Length: 2\r\n\r\nok",
    }

    def __init__(self):
        import socket
        import threading
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        import threading
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def serve(self, conn):
        data = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                head, data = data.split(b"\r\n\r\n", 1)
                data = self.answer(conn, head, data)
                if data is None:
                    return

    def answer(self, conn, head, data):
        """Answers the request `head` (bytes); returns what was read beyond it and its body, or None to close."""
        conn.sendall(self.RESPONSES[head.split(b" ")[1].decode()])
        return data

    def close(self):
        self.listener.close()


def response_head(port, path, version="1.1", extra=""):
    """The head (status line and fields, as bytes) of the answer to one GET."""
    import socket
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(("GET %s HTTP/%s\r\nHost: x\r\n%s\r\n" % (path, version, extra)).encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            assert chunk, data
            data += chunk
    return data.split(b"\r\n\r\n")[0].split(b"\r\n")


class RecordingBackend(ScriptedBackend):
    """A backend that keeps each request head it reads (bytes as received) and answers 200 with a short body."""
    def __init__(self):
        self.heads = []
        super().__init__()

    def answer(self, conn, head, data):
        lines = head.split(b"\r\n")
        self.heads.append(lines)
        length = next((int(l.split(b":")[1]) for l in lines if l.lower().startswith(b"content-length:")), 0)
        if any(l.lower() == b"transfer-encoding: chunked" for l in lines):
            while not data.endswith(b"0\r\n\r\n"):
                data += conn.recv(65536)
            data = b""
        else:
            while len(data) < length:
                data += conn.recv(65536)
            data = data[length:]
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        return data


class ClosingBackend(RecordingBackend):
    """Answers the first request on each connection and keeps it open, then closes it on reading the next one,
    unanswered: what a backend whose keep-alive timeout ends just as the proxy reuses the connection does."""
    def __init__(self):
        self.answered = set()
        super().__init__()

    def answer(self, conn, head, data):
        if conn.fileno() in self.answered:
            self.heads.append(head.split(b"\r\n"))
            self.answered.discard(conn.fileno())
            return None
        self.answered.add(conn.fileno())
        return super().answer(conn, head, data)


def request_on_one_connection(port, *requests):
    """Sends each raw request on one keep-alive connection, reading each answer (200, two bytes) before the next."""
    import socket
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        for request in requests:
            s.sendall(request)
            data = b""
            while not (b"\r\n\r\n" in data and data.endswith(b"ok")):
                chunk = s.recv(65536)
                assert chunk, data
                data += chunk
            assert data.startswith((b"HTTP/1.1 200 OK", b"HTTP/1.0 200 OK")), data


def test_client_request_fields_reach_the_backend_as_sent_without_the_hop_by_hop_and_forwarding_ones(alb, serving):
    backend = RecordingBackend()
    try:
        port = serving([(backend.port, 100)])
        request_on_one_connection(
            port,
            # As sent, spaces and bytes beyond ASCII and all, in order, without `Connection`, `Keep-Alive`, `TE`
            # and the forwarding fields a client may not set; the proxy's `X-Forwarded-For` last.
            b"GET /a HTTP/1.1\r\nHost: example.com\r\nConnection: keep-alive\r\nX-Note:  spaced \r\n"
            b"X-Forwarded-For: 10.6.6.6\r\nKeep-Alive: timeout=5\r\nX-Raw: caf\xe9\r\nSLB-ID: spoofed\r\nTE: trailers\r\n\r\n",
            # A chunked body's framing is the proxy's own again; a length stays as sent.
            b"POST /b HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\nX-B: 2\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
            b"PUT /c HTTP/1.1\r\nHost: example.com\r\nContent-Length: 2\r\n\r\nhi",
            # A field `Connection` names goes too (the fields are read for it).
            b"GET /d HTTP/1.1\r\nHost: example.com\r\nConnection: x-private\r\nX-Private: secret\r\nX-D: 4\r\n\r\n",
            # HTTP/1.0 goes on as HTTP/1.1; a POST without a body says so.
            b"POST /e HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        )
        assert backend.heads == [
            [b"GET /a HTTP/1.1", b"Host: example.com", b"X-Note:  spaced ", b"X-Raw: caf\xe9",
             b"X-Forwarded-For: 127.0.0.1"],
            [b"POST /b HTTP/1.1", b"Host: example.com", b"X-B: 2", b"transfer-encoding: chunked",
             b"X-Forwarded-For: 127.0.0.1"],
            [b"PUT /c HTTP/1.1", b"Host: example.com", b"Content-Length: 2", b"X-Forwarded-For: 127.0.0.1"],
            [b"GET /d HTTP/1.1", b"Host: example.com", b"X-D: 4", b"X-Forwarded-For: 127.0.0.1"],
            [b"POST /e HTTP/1.1", b"content-length: 0", b"X-Forwarded-For: 127.0.0.1"],
        ]
        # The access log still names each request's host.
        log = alb.root / "access.log"
        records = wait_for(lambda: log.exists() and len(log.read_text().splitlines()) >= 5
                           and [json.loads(line) for line in log.read_text().splitlines()], what="five log records")
        assert [(r["path"], r["host"]) for r in records] == [
            ("/a", "example.com"), ("/b", "example.com"), ("/c", "example.com"), ("/d", "example.com"), ("/e", "")]
    finally:
        backend.close()


def test_a_request_on_a_pooled_connection_the_backend_closed_is_sent_again_on_a_fresh_one(serving):
    backend = ClosingBackend()
    try:
        port = serving([(backend.port, 100)], request_timeout=5)
        request = b"GET /again HTTP/1.1\r\nHost: example.com\r\nX-A: 1\r\n\r\n"
        # On one client connection (one event loop, so one pool): the backend connection the first went on is
        # pooled, and closed on reading the second, which the proxy sends again on a fresh one, head and all.
        request_on_one_connection(port, request, request)
        expected = [b"GET /again HTTP/1.1", b"Host: example.com", b"X-A: 1", b"X-Forwarded-For: 127.0.0.1"]
        assert backend.heads == [expected] * 3
    finally:
        backend.close()


def test_backend_response_fields_reach_the_client_without_the_hop_by_hop_ones(serving):
    backend = ScriptedBackend()
    try:
        port = serving([(backend.port, 100)])
        for _ in range(2):  # the second time on a pooled backend connection
            # As sent, spaces and all, in order, without `Connection`, `Keep-Alive` and `Upgrade`.
            assert response_head(port, "/plain") == [
                b"HTTP/1.1 200 OK", b"Server:  scripted ", b"X-A: 1", b"Content-Length: 2"]
            # A field `Connection` names goes too.
            assert response_head(port, "/named") == [b"HTTP/1.1 200 OK", b"X-B: 2", b"Content-Length: 2"]
            # The backend's chunked framing is the proxy's own again.
            assert response_head(port, "/chunked") == [b"HTTP/1.1 200 OK", b"X-C: 3", b"transfer-encoding: chunked"]
            # Equal lengths are sent as one.
            assert response_head(port, "/folded") == [b"HTTP/1.1 200 OK", b"X-D: 4", b"content-length: 2"]
            # Bytes beyond ASCII (obs-text) pass as they came.
            assert response_head(port, "/bytes") == [b"HTTP/1.1 200 OK", b"X-E: caf\xe9 \xff", b"Content-Length: 2"]
            # An HTTP/1.0 client asking to keep the connection is told it is kept, after the backend's fields.
            assert response_head(port, "/plain", "1.0", "Connection: keep-alive\r\n") == [
                b"HTTP/1.0 200 OK", b"Server:  scripted ", b"X-A: 1", b"Content-Length: 2", b"connection: keep-alive"]
    finally:
        backend.close()


def test_an_unprivileged_user_runs_alb(backends):
    # The container image runs alb as uid 10001, and nobody should run a proxy as root. Until the seventeenth
    # session every client and backend connection asked for SO_DEBUG (`.socketOption(.tcp_nodelay)` is
    # SOL_SOCKET's option 1, not TCP_NODELAY), which only root may set: as any other user each connection was
    # reset at once. The tests ran as root and never saw it.
    backend = backends.start("b1")
    root = Path(tempfile.mkdtemp(prefix="alb-unprivileged-", dir="/tmp"))
    process = None
    try:
        os.chmod(root, 0o777)  # the status directory is made by alb, as the unprivileged user
        manifests = root / "manifests"
        manifests.mkdir()
        port = free_port()
        (manifests / "web.yaml").write_text(manifest_set(port, [(backend, 100)]))
        for path in (manifests, manifests / "web.yaml"):
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        command = [ALB, "reconcile", str(manifests), "--status-dir", str(root / "status")]
        if os.geteuid() == 0:
            command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
        with open(root / "alb.log", "wb") as log:
            process = subprocess.Popen(command, stdout=log, stderr=log)

        def answered():
            try:
                return get(port)[:2]
            except OSError:
                return None
        assert wait_for(answered, what="an answer through alb run as uid 65534") == (200, "b1 /\n"), \
            (root / "alb.log").read_text()
        assert get(port, "/again")[:2] == (200, "b1 /again\n")
    finally:
        if process is not None:
            stop_process(process)
        shutil.rmtree(root, ignore_errors=True)
