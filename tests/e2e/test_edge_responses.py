"""What the proxy answers itself, over real sockets: CONNECT, an unsolicited 101, and the
X-Forwarded-* headers a client may not choose."""
import json
import socket
import threading
import time

import pytest

from conftest import free_port, get, manifest_set, raw, serve_raw, serve_web


def response_parts(data):
    """(status line, headers dict with lowercase names, body bytes) of the first response in `data`."""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return lines[0], headers, body


def start_canned_backend(answer):
    """A backend that answers every request with the same bytes (or, given a list, each connection with the
    next bytes of it) and keeps the connection open."""
    answers = answer if isinstance(answer, list) else [answer]
    connections = [0]
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    stop = threading.Event()

    def serve():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with conn:
                try:
                    conn.recv(65536)
                    conn.sendall(answers[min(connections[0], len(answers) - 1)])
                    connections[0] += 1
                    conn.settimeout(3)
                    conn.recv(65536)  # hold the connection as an upgraded peer would
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return server.getsockname()[1], lambda: (stop.set(), server.close())


def test_connect_is_refused_by_the_proxy_with_a_framed_answer(alb, backends):
    port, _ = serve_web(alb, backends)
    answer = raw(port, b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", timeout=5)
    status, headers, body = response_parts(answer)
    assert status == "HTTP/1.1 501 Not Implemented"
    assert int(headers["content-length"]) == len(body) == len(b"501 Not Implemented\n")
    assert headers["connection"] == "close"


def test_request_targets_are_held_to_their_forms_and_an_absolute_one_names_the_host(alb, backends):
    # RFC 9112 section 3.2: a target the listener would route by one path and a backend could read as another
    # (`x`, `../x`) is refused 400, as nginx refuses it; an absolute-form target is passed on in origin form, its
    # authority as the only Host (section 3.2.2: a server takes the target's authority, not Host).
    port, _ = serve_web(alb, backends)
    for target in (b"x", b"../x", b"*", b"example.com:80", b"http://user@h/x", b"/index.html#.png"):
        status, _, _ = response_parts(raw(port, b"GET " + target + b" HTTP/1.1\r\nHost: h\r\n\r\n", timeout=5))
        assert status == "HTTP/1.1 400 Bad Request", (target, status)
    answer = raw(port, b"POST http://Other.Example:8080/headers HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n"
                       b"Connection: close\r\n\r\n", timeout=5)
    status, _, body = response_parts(answer)
    assert status == "HTTP/1.1 200 OK", answer
    fields = json.loads(body)
    assert [value for name, value in fields if name == "host"] == ["Other.Example:8080"], fields


def test_targets_with_what_browsers_leave_unencoded_reach_the_backend(alb, backends):
    # `{`, `}`, `|`, `^`, `` ` ``, `"`, `<`, `>`, `\` are visible ASCII outside RFC 3986's URI characters. Browsers send
    # some of them unencoded in a query (WHATWG URL), nginx and HAProxy pass them all, and none can split a request.
    # Until the thirteenth session the backend writer refused them after the edge had taken them: no answer at all.
    port, _ = serve_web(alb, backends)
    answer = raw(port, b'GET /a{b}|c^d`e?q="x"<y>\\z HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n', timeout=10)
    status, _, body = response_parts(answer)
    assert (status, body) == ("HTTP/1.1 200 OK", b"b1 /a{b}|c^d`e\n"), answer
    status, _, _ = response_parts(raw(port, "GET /caf\u00e9 HTTP/1.1\r\nHost: h\r\n\r\n".encode(), timeout=10))
    assert status == "HTTP/1.1 400 Bad Request", "bytes above ASCII are refused at the edge, as before"


def test_a_host_outside_the_form_of_an_authority_is_refused_with_400(alb, backends):
    # RFC 9110 section 7.2: Host is uri-host [":" port]. The listener routes by it and the backend may make a path,
    # a virtual host or a cache key of it: `a/b`, `user@a`, `a..b` are refused 400 (nginx refuses `a/b` and `a..b`).
    port, _ = serve_web(alb, backends)
    for host in (b"a/b", b"user@example.com", b"example.com:x", b"a..b", b"[::1"):
        status, _, _ = response_parts(raw(port, b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n", timeout=5))
        assert status == "HTTP/1.1 400 Bad Request", (host, status)
    for host in (b"Example.COM:8080", b"[::1]:443", b"127.0.0.1"):
        answer = raw(port, b"GET /x HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n", timeout=5)
        status, _, body = response_parts(answer)
        assert (status, body) == ("HTTP/1.1 200 OK", b"b1 /x\n"), (host, answer)


def test_an_http10_request_with_transfer_encoding_is_refused_and_the_connection_closed(alb, backends):
    # RFC 9112 section 6.1: HTTP/1.0 has no chunked coding; such a message's framing is faulty (a desync vector
    # between servers that read it by different rules). nginx answers 400 as well.
    port, _ = serve_web(alb, backends)
    answer = raw(port, b"POST / HTTP/1.0\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nGET /\r\n0\r\n\r\n",
                 timeout=5)
    status, headers, _ = response_parts(answer)
    assert status == "HTTP/1.1 400 Bad Request", answer
    assert headers["connection"] == "close"
    assert answer.count(b"HTTP/1.") == 1, answer


def test_request_trailers_reach_the_backend_without_what_may_not_be_a_trailer(alb):
    # RFC 9110 section 6.5.1: a Host, a Content-Length or an X-Forwarded-For sent after the body would pass the checks
    # the head went through, at a backend that merges trailers into the head. The others pass.
    received = []
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def serve():
        conn, _ = server.accept()
        with conn:
            conn.settimeout(5)
            data = b""
            while not data.endswith(b"\r\n\r\n") or b"\r\n0\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
            received.append(data)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        port = free_port()
        alb.write("web.yaml", manifest_set(port, [(server.getsockname()[1], 100)]))
        alb.start()
        alb.wait_state("web", "Running")
        answer = raw(port, b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                           b"3\r\nabc\r\n0\r\nContent-Length: 99\r\nHost: evil\r\nX-Forwarded-For: 6.6.6.6\r\n"
                           b"X-Checksum: abc\r\n\r\n", timeout=10)
        thread.join(10)
    finally:
        server.close()
    assert answer.startswith(b"HTTP/1.1 200 OK"), answer
    trailers = received[0].split(b"\r\n0\r\n", 1)[1]
    assert trailers == b"X-Checksum: abc\r\n\r\n", received[0]


def through_canned_backend(alb, backend_answer, request):
    """What a client sending `request` to a listener gets (until the close) when the listener's one backend
    answers `backend_answer`, and how many seconds that took."""
    backend_port, stop = start_canned_backend(backend_answer)
    try:
        port = free_port()
        alb.write("web.yaml", manifest_set(port, [(backend_port, 100)]))
        alb.start()
        alb.wait_state("web", "Running")
        started = time.monotonic()
        answer = raw(port, request, timeout=5)
        return answer, time.monotonic() - started
    finally:
        stop()


def test_unsolicited_switching_protocols_becomes_502(alb):
    answer, _ = through_canned_backend(
        alb, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
    status, headers, body = response_parts(answer)
    assert status == "HTTP/1.1 502 Bad Gateway"
    assert int(headers["content-length"]) == len(body)


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n",
    # RFC 9112 section 6.1: HTTP/1.0 has no chunked coding, so the framing is faulty.
    b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
], ids=["both-lengths", "differing-lengths", "gzip-chunked", "obs-fold", "bare-lf", "space-before-colon",
        "http10-chunked"])
def test_a_backend_response_that_could_be_split_or_smuggled_becomes_502(alb, answer):
    """The backend side's strict decoder refuses the response before any of it reaches the client."""
    relayed, _ = through_canned_backend(alb, answer, b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
    status, headers, body = response_parts(relayed)
    assert status == "HTTP/1.1 502 Bad Gateway"
    assert body == b"502 Bad Gateway\n"


def test_a_backend_body_that_breaks_its_chunk_framing_closes_the_client_connection_mid_response(alb):
    """The head was relayed already: the client's connection closes before the response completes."""
    answer, seconds = through_canned_backend(
        alb, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokX\r\n0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert seconds < 4, "closed, not left open"
    assert not answer.endswith(b"0\r\n\r\n")


def test_client_x_forwarded_proto_is_stripped_unless_from_a_trusted_proxy(alb, backends):
    b1 = backends.start("b1")
    untrusted, trusted = free_port(), free_port()
    alb.write("web.yaml", manifest_set(untrusted, [(b1, 100)]))
    alb.write("front.yaml", manifest_set(trusted, [(b1, 100)], listener="front").split("---\n", 2)[2]
              + "  clientIp: {enabled: true, trustedProxies: [127.0.0.1/32]}\n")
    alb.start()
    alb.wait_state("web", "Running")
    alb.wait_state("front", "Running")
    spoofed = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9", "X-Forwarded-Host": "evil"}
    seen = json.loads(get(untrusted, "/headers", headers=spoofed)[1])
    assert "X-Forwarded-Proto" not in seen and "X-Forwarded-Host" not in seen
    assert seen["X-Forwarded-For"] == "127.0.0.1"
    seen = json.loads(get(trusted, "/headers", headers=spoofed)[1])
    assert seen["X-Forwarded-Proto"] == "https" and seen["X-Forwarded-Host"] == "evil"
    assert seen["X-Forwarded-For"] == "203.0.113.9, 203.0.113.9"


def start_stalling_backend(steps):
    """A backend that answers each request with `steps`, a list of (bytes, seconds to wait after them), then holds
    the connection open until alb closes it; `closed` records, per connection, how many seconds after its answer
    began alb closed it (None while open)."""
    closed = []

    def handle(conn):
        conn.recv(65536)
        began = time.monotonic()
        index = len(closed)
        closed.append(None)
        for data, pause in steps:
            conn.sendall(data)
            time.sleep(pause)
        conn.settimeout(30)
        while conn.recv(65536):
            pass
        closed[index] = time.monotonic() - began

    return serve_raw(handle, backlog=16), closed


def test_a_backend_silent_mid_response_for_the_request_timeout_ends_the_response_and_a_slow_one_does_not(alb):
    # The request timeout bounds the backend's silence between reads of the response, as nginx's
    # proxy_read_timeout does: until the fourteenth session a backend that stopped mid-body held the client (and
    # both connections) forever. HTTP/1: the client connection closes with the body short of its length; h2c: the
    # stream is reset with INTERNAL_ERROR. A backend that keeps sending, slower than the timeout in total, is not cut.
    import subprocess
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 20000\r\n\r\n"
    stalling, stalled_closes = start_stalling_backend([(head + b"a" * 10000, 0)])
    slow, _ = start_stalling_backend([(head, 0.8)] + [(b"b" * 4000, 0.8)] * 5)
    try:
        stalled_port, slow_port = free_port(), free_port()
        alb.write("web.yaml", manifest_set(stalled_port, [(stalling.getsockname()[1], 100)], request_timeout=2))
        alb.write("slow.yaml", manifest_set(slow_port, [(slow.getsockname()[1], 100)], listener="slow",
                                            group="slowpool", request_timeout=2).split("---\n", 1)[1])
        alb.start()
        alb.wait_state("web", "Running")
        alb.wait_state("slow", "Running")

        started = time.monotonic()
        answer = raw(stalled_port, b"GET /stall HTTP/1.1\r\nHost: h\r\n\r\n", timeout=20)
        took = time.monotonic() - started
        status, headers, body = response_parts(answer)
        assert status == "HTTP/1.1 200 OK" and len(body) == 10000, (status, len(body))
        assert 1.5 < took < 6, took
        assert wait_for_value(lambda: stalled_closes[0]) is not None, "the backend connection was closed too"

        run = subprocess.run(["nghttp", "-v", "http://127.0.0.1:%d/stall" % stalled_port],
                             capture_output=True, text=True, timeout=30)
        assert "recv RST_STREAM" in run.stdout and "INTERNAL_ERROR" in run.stdout, run.stdout[-2000:]

        answer = raw(slow_port, b"GET /slow HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", timeout=20)
        status, _, body = response_parts(answer)
        assert status == "HTTP/1.1 200 OK" and body == b"b" * 20000, (status, len(body))
    finally:
        stalling.close()
        slow.close()


def wait_for_value(read, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = read()
        if value is not None:
            return value
        time.sleep(0.05)
    return None
