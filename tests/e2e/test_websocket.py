"""WebSocket through HTTP and HTTPS listeners, with the Python `websockets` client and server as the peers.

After the backend's 101 the connection is a byte tunnel: large and fragmented messages, ping/pong and close
codes pass; malformed handshakes get 400 before any backend sees them; a refused upgrade is relayed and
nothing pipelined behind it is read; the listener's idle timeout and the drain window apply.
"""
import json
import os
import re
import signal
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect
from websockets.sync.server import serve

from conftest import free_port, manifest_set, raw, serve_raw, stop_process, wait_for
from test_https import https_set, make_cert


class WebSocketBackend:
    """An echo server that greets each connection first (bytes right behind its 101) and records what it saw.

    Path `/close/CODE` closes at once with CODE; path `/refuse` answers the upgrade with 403.
    """

    def __init__(self):
        self.port = free_port()
        self.upgrades = []  # request headers of each upgrade the backend saw
        self.close_codes = []  # close codes the server received from clients
        self.server = serve(self.handle, "127.0.0.1", self.port, max_size=None, ping_interval=None,
                            process_request=self.process_request)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def process_request(self, connection, request):
        self.upgrades.append(dict(request.headers.raw_items()))
        if request.path == "/refuse":
            return connection.respond(403, "refused")
        return None

    def handle(self, websocket):
        path = websocket.request.path
        if path.startswith("/close/"):
            websocket.close(int(path.rsplit("/", 1)[1]), "server says bye")
            return
        websocket.send("hello " + path)
        try:
            for message in websocket:
                websocket.send(message)
        except ConnectionClosed:
            pass
        finally:
            if websocket.close_code is not None:
                self.close_codes.append(websocket.close_code)

    def close(self):
        self.server.shutdown()


@pytest.fixture
def ws_backend():
    backend = WebSocketBackend()
    yield backend
    backend.close()


def serve_ws(alb, ws_backend, idle=15, extra_args=(), extra_listener=""):
    port = free_port()
    alb.write("web.yaml", manifest_set(port, [(ws_backend.port, 100)], idle=idle, extra_listener=extra_listener))
    alb.start("--access-log", str(alb.root / "access.log"), *extra_args)
    alb.wait_state("web", "Running")
    return port


def upgrade_request(path="/chat", key="dGhlIHNhbXBsZSBub25jZQ==", version="13", extra=""):
    lines = ["GET %s HTTP/1.1" % path, "Host: example.test", "Upgrade: websocket", "Connection: Upgrade"]
    if key is not None:
        lines.append("Sec-WebSocket-Key: " + key)
    if version is not None:
        lines.append("Sec-WebSocket-Version: " + version)
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode()


def test_messages_of_every_size_ping_and_close_codes_pass_the_tunnel(alb, ws_backend):
    port = serve_ws(alb, ws_backend)
    with connect("ws://127.0.0.1:%d/chat" % port, max_size=None, ping_interval=None) as ws:
        assert ws.recv(timeout=5) == "hello /chat"  # sent by the backend right behind its 101
        big = os.urandom(10 * 1024 * 1024)
        ws.send(big)
        assert ws.recv(timeout=30) == big
        # A message in fragments arrives as one message.
        ws.send(["frag", "mented ", "message"])
        assert ws.recv(timeout=5) == "fragmented message"
        for i in range(1000):
            ws.send("m%d" % i)
        assert [ws.recv(timeout=5) for _ in range(1000)] == ["m%d" % i for i in range(1000)]
        started = time.monotonic()
        assert ws.ping().wait(5), "pong"
        assert time.monotonic() - started < 5
        ws.close(4000, "client says bye")
    wait_for(lambda: 4000 in ws_backend.close_codes, timeout=5, what="the backend got the client's close code")

    with connect("ws://127.0.0.1:%d/close/4001" % port, ping_interval=None) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
    assert closed.value.rcvd.code == 4001
    assert closed.value.rcvd.reason == "server says bye"

    # The backend saw the handshake it needs, and the forwarding headers.
    seen = {k.lower(): v for k, v in ws_backend.upgrades[0].items()}
    assert seen["upgrade"].lower() == "websocket" and seen["connection"].lower() == "upgrade"
    assert seen["x-forwarded-for"] == "127.0.0.1"


def test_each_tunnel_is_logged_once_when_it_closes(alb, ws_backend):
    port = serve_ws(alb, ws_backend)
    with connect("ws://127.0.0.1:%d/logged" % port, ping_interval=None) as ws:
        ws.recv(timeout=5)
        ws.send(os.urandom(5000))  # incompressible: permessage-deflate is negotiated end to end
        assert len(ws.recv(timeout=5)) == 5000
        time.sleep(1.5)  # the access log is flushed at least every second
        log = alb.root / "access.log"
        assert not log.exists() or '"/logged"' not in log.read_text(), "logged once, at the end"
    lines = wait_for(lambda: [l for l in (alb.root / "access.log").read_text().splitlines() if '"/logged"' in l],
                     timeout=5, what="the tunnel's access log line")
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["status"] == 101 and record["upstream_status"] == 101
    assert record["request_bytes"] > 5000 and record["response_bytes"] > 5000


def test_malformed_handshakes_get_400_and_never_reach_a_backend(alb, ws_backend):
    port = serve_ws(alb, ws_backend)
    cases = {
        "no key": upgrade_request(key=None),
        "key not 16 bytes": upgrade_request(key="c2hvcnQ="),
        "version 12": upgrade_request(version="12"),
        "no version": upgrade_request(version=None),
        "a body": upgrade_request(extra="Content-Length: 5\r\n") + b"hello",
        "POST": upgrade_request().replace(b"GET ", b"POST ", 1),
    }
    for name, request in cases.items():
        answer = raw(port, request)
        assert answer.startswith(b"HTTP/1.1 400 "), (name, answer[:80])
    assert ws_backend.upgrades == []


class RecordingBackend(ThreadingHTTPServer):
    """A plain HTTP backend that answers every request 200 and records the paths it got."""

    def __init__(self):
        self.paths = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                outer.paths.append(self.path)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        super().__init__(("127.0.0.1", free_port()), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


def test_a_refused_upgrade_is_relayed_and_nothing_behind_it_is_forwarded(alb, ws_backend):
    port = serve_ws(alb, ws_backend)
    answer = raw(port, upgrade_request("/refuse"))
    assert answer.startswith(b"HTTP/1.1 403 ")
    assert b"connection: close" in answer.lower() and answer.endswith(b"refused")

    plain = RecordingBackend()
    try:
        other = free_port()
        alb.write("other.yaml", manifest_set(other, [(plain.server_address[1], 100)], listener="plain",
                                             group="plainpool").split("---\n", 1)[1])
        alb.wait_state("plain", "Running")
        smuggled = b"GET /smuggled HTTP/1.1\r\nHost: example.test\r\n\r\n"
        answer = raw(other, upgrade_request("/first") + smuggled)
        # The backend does not switch: its 200 is relayed, the connection closes, the pipelined request is
        # never read as HTTP.
        assert answer.startswith(b"HTTP/1.1 200 ") and answer.count(b"HTTP/1.1 ") == 1
        assert b"connection: close" in answer.lower()
        time.sleep(0.3)
        assert plain.paths == ["/first"]
    finally:
        plain.shutdown()
        plain.server_close()


def test_what_a_backend_sends_behind_its_101_reaches_the_client_when_it_closes_at_once(alb):
    # A server that refuses after the handshake (auth, policy) sends its 101, a close frame saying why, and closes,
    # often in one write. Until the fourteenth session the close reached the tunnel before those bytes did: the client
    # got the 101 and then the close, without the frame (a 1006 instead of the server's code and reason).
    import base64
    import hashlib
    close_frame = bytes([0x88, 13]) + (1008).to_bytes(2, "big") + b"auth failed"

    def refuse_after_handshake(conn):
        head = b""
        while b"\r\n\r\n" not in head:
            data = conn.recv(65536)
            if not data:
                return
            head += data
        key = re.search(rb"(?i)sec-websocket-key: *(\S+)", head)
        if not key:
            return
        accept = base64.b64encode(hashlib.sha1(key.group(1) + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n" + close_frame)

    server = serve_raw(refuse_after_handshake)
    try:
        port = free_port()
        alb.write("web.yaml", manifest_set(port, [(server.getsockname()[1], 100)]))
        alb.start()
        alb.wait_state("web", "Running")
        for attempt in range(20):
            answer = raw(port, upgrade_request("/policy"), timeout=10)
            assert answer.startswith(b"HTTP/1.1 101 "), answer
            assert answer.split(b"\r\n\r\n", 1)[1] == close_frame, (attempt, answer)
    finally:
        server.close()


def test_the_listener_idle_timeout_closes_a_silent_tunnel_but_not_a_busy_one(alb, ws_backend):
    port = serve_ws(alb, ws_backend, idle=2)
    with connect("ws://127.0.0.1:%d/busy" % port, ping_interval=None) as busy, \
            connect("ws://127.0.0.1:%d/silent" % port, ping_interval=None) as silent:
        busy.recv(timeout=5)
        silent.recv(timeout=5)
        opened = time.monotonic()
        for i in range(5):  # traffic every second for 5 s: more than two idle periods
            busy.send("tick%d" % i)
            assert busy.recv(timeout=5) == "tick%d" % i
            time.sleep(1)
        with pytest.raises(ConnectionClosed):
            silent.recv(timeout=1)
        # Closed by the proxy after about 2 s of silence, long before now.
        assert time.monotonic() - opened < 7
        busy.send("still here")
        assert busy.recv(timeout=5) == "still here"


def test_wss_on_an_https_listener(alb, ws_backend, tmp_path):
    cert, key = make_cert(tmp_path, "main", ["ws.example.test"])
    port = free_port()
    alb.write("web.yaml", https_set(port, ws_backend.port, {"main": (cert, key)}))
    alb.start()
    alb.wait_state("web", "Running")
    context = ssl.create_default_context(cafile=str(cert))
    with connect("wss://127.0.0.1:%d/secure" % port, ssl=context, server_hostname="ws.example.test",
                 max_size=None, ping_interval=None) as ws:
        assert ws.recv(timeout=5) == "hello /secure"
        payload = os.urandom(1024 * 1024)
        ws.send(payload)
        assert ws.recv(timeout=10) == payload
    seen = {k.lower(): v for k, v in ws_backend.upgrades[0].items()}
    assert seen["x-forwarded-proto"] == "https"


def test_sigterm_lets_a_tunnel_run_until_the_drain_window_closes_it(alb, ws_backend):
    port = serve_ws(alb, ws_backend, extra_args=("--drain-timeout", "2"))
    with connect("ws://127.0.0.1:%d/drain" % port, ping_interval=None) as ws:
        ws.recv(timeout=5)
        alb.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        ws.send("during the drain")
        assert ws.recv(timeout=5) == "during the drain"
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
    assert alb.process.wait(timeout=10) == 0


def test_a_compressing_listener_leaves_the_tunnel_alone(alb, ws_backend):
    # The compressor is part of the HTTP/1 pipeline: it leaves with it at the switch, so frames pass as sent.
    port = serve_ws(alb, ws_backend, extra_listener="  compression: true\n")
    with connect("ws://127.0.0.1:%d/compressed" % port, max_size=None, ping_interval=None) as ws:
        assert ws.recv(timeout=5) == "hello /compressed"
        payload = "x" * 100_000
        ws.send(payload)
        assert ws.recv(timeout=10) == payload
