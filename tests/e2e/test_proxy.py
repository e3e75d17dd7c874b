"""The HTTP data plane through the real binary, with curl and raw sockets as clients."""
import http.client
import json
import subprocess

import pytest

from conftest import free_port, get, manifest_set, receive_until_close, wait_for


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
    alb.start()
    alb.wait_state("web", "Running")
    status, body, _ = get(port)
    assert status == 502 and "Bad Gateway" in body
    alb.write("web.yaml", manifest_set(port, [(a, 0)], request_timeout=1))
    wait_for(lambda: get(port)[0] == 503, what="503 with every weight 0")
    assert "Service Unavailable" in get(port)[1]
    alb.write("web.yaml", manifest_set(port, [(a, 100)], request_timeout=1))
    wait_for(lambda: get(port)[0] == 200, what="200 again")
    status, body, _ = get(port, "/slow?s=3")
    assert status == 504 and "Gateway Timeout" in body


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


def test_backend_connect_timeout_is_502_after_five_seconds(alb):
    # A listener whose accept queue is full drops new SYNs, so connecting to it hangs like a dead host.
    import socket
    import time
    blackhole = socket.socket()
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(0)
    backlog = []
    for _ in range(4):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(blackhole.getsockname())
        backlog.append(s)
    time.sleep(0.2)
    port = free_port()
    alb.write("web.yaml", manifest_set(port, [(blackhole.getsockname()[1], 100)], request_timeout=30))
    alb.start()
    alb.wait_state("web", "Running")
    started = time.monotonic()
    status, body, _ = get(port, timeout=20)
    elapsed = time.monotonic() - started
    assert status == 502 and "Bad Gateway" in body
    assert 4.5 <= elapsed <= 8, elapsed
    for s in backlog:
        s.close()
    blackhole.close()


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
