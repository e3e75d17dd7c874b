"""Edge limits of SPEC section 4, each driven with a raw socket."""
import socket
import time

import pytest

from conftest import free_port, manifest_set, raw


@pytest.fixture
def port(alb, backends):
    p = free_port()
    alb.write("web.yaml", manifest_set(p, [(backends.start("a"), 100)], idle=3))
    alb.start()
    alb.wait_state("web", "Running")
    return p


def status_line(answer):
    return answer.split(b"\r\n", 1)[0]


def test_ordinary_request_passes(port):
    assert status_line(raw(port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")) == b"HTTP/1.1 200 OK"


def test_too_many_header_fields_is_431(port):
    headers = b"".join(b"X-H%d: v\r\n" % i for i in range(101))
    answer = raw(port, b"GET / HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
    assert status_line(answer).startswith(b"HTTP/1.1 431")


def test_hundred_header_fields_pass(port):
    headers = b"".join(b"X-H%d: v\r\n" % i for i in range(98))
    answer = raw(port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + headers + b"\r\n")
    assert status_line(answer) == b"HTTP/1.1 200 OK"


def test_oversized_headers_are_431(port):
    answer = raw(port, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n")
    assert status_line(answer).startswith(b"HTTP/1.1 431")


@pytest.mark.parametrize("request_bytes", [
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n  b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\rX-Bare: cr\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX-Nul: a\x00b\r\n\r\n",
    b"NOT A REQUEST\r\n\r\n",
], ids=["cl-and-te", "differing-cl", "bad-chunk-size", "obs-fold", "bare-cr", "nul", "garbage"])
def test_smuggling_shapes_are_400_and_close(port, request_bytes):
    answer = raw(port, request_bytes)
    assert status_line(answer).startswith(b"HTTP/1.1 400"), answer[:200]
    assert b"connection: close" in answer.lower()


def test_slow_headers_get_408(alb, backends):
    # The default header timeout is 10 s; this test takes that long on purpose, once.
    p = free_port()
    alb.write("web.yaml", manifest_set(p, [(backends.start("a"), 100)], idle=60))
    alb.start()
    alb.wait_state("web", "Running")
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", p), timeout=20) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        answer = s.recv(4096)
    elapsed = time.monotonic() - started
    assert status_line(answer).startswith(b"HTTP/1.1 408")
    assert 9 <= elapsed <= 15


def test_idle_connection_is_closed_after_idle_timeout(port):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while not answer.endswith(b"a /\n"):
            answer += s.recv(4096)
        assert answer.startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        assert s.recv(4096) == b""  # closed by the listener
        assert 2 <= time.monotonic() - started <= 6


@pytest.mark.parametrize("lengths", [b"Content-Length: 6\r\nContent-Length: 6\r\n", b"Content-Length: 6, 6\r\n"])
def test_a_repeated_equal_length_reaches_the_backend_as_one_header(port, lengths):
    import json
    answer = raw(port, b"POST /headers HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + lengths + b"\r\nabcdef")
    assert status_line(answer) == b"HTTP/1.1 200 OK"
    received = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert [value for name, value in received if name == "content-length"] == ["6"]
