"""Idle keep-alive connections parked off their channels (`--park-idle-after`, docs/decisions.md): a client sees
nothing of it; `/metrics` counts them."""
import re
import socket
import time

from conftest import free_port, manifest_set, wait_for
from test_admin import fetch


def parked(admin, listener="web"):
    _, text = fetch(admin, "/metrics")
    found = re.search(r'^alb_listener_parked_connections\{listener="%s"\} (\d+)$' % listener, text, re.M)
    return int(found.group(1)) if found else None


def request(connection, path="/"):
    """One GET on an open keep-alive connection: (status line, body)."""
    connection.sendall(b"GET %s HTTP/1.1\r\nHost: parking\r\n\r\n" % path.encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        assert chunk, "closed before a response: %r" % data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?im)^content-length:\s*(\d+)", head).group(1))
    while len(body) < length:
        chunk = connection.recv(65536)
        assert chunk, "closed mid-body"
        body += chunk
    return head.split(b"\r\n")[0].decode(), body.decode()


def start(alb, backends, idle, park_after=1):
    """alb serving listener `web` (idle timeout `idle` s) with its admin endpoint, parking connections idle for
    `park_after` s (the default is 5): (listener port, admin port)."""
    port, admin = free_port(), free_port()
    alb.write("web.yaml", manifest_set(port, [(backends.start("a"), 100)], idle=idle))
    alb.start("--admin", "127.0.0.1:%d" % admin, "--park-idle-after", str(park_after))
    alb.wait_state("web", "Running")
    return port, admin


def test_a_parked_connection_serves_its_next_requests_and_closes_at_its_idle_timeout(alb, backends):
    port, admin = start(alb, backends, 4)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        assert request(connection, "/one") == ("HTTP/1.1 200 OK", "a /one\n")
        wait_for(lambda: parked(admin) == 1, timeout=5, what="the idle connection parked (after 1 s)")
        assert request(connection, "/two") == ("HTTP/1.1 200 OK", "a /two\n")
        assert parked(admin) == 0
        wait_for(lambda: parked(admin) == 1, timeout=5, what="parked again")
        assert request(connection, "/three") == ("HTTP/1.1 200 OK", "a /three\n")
        answered = time.monotonic()
        wait_for(lambda: parked(admin) == 1, timeout=5, what="parked once more")
        assert connection.recv(1) == b"", "alb closes the parked connection at its idle timeout"
        assert time.monotonic() - answered >= 3.9
    wait_for(lambda: parked(admin) == 0, timeout=5, what="the closed connection uncounted")
    _, text = fetch(admin, "/metrics")
    assert re.search(r'^alb_listener_connections_total\{listener="web"\} 1$', text, re.M), "one connection in all"
    assert re.search(r'^alb_listener_active_connections\{listener="web"\} 0$', text, re.M)


def test_park_idle_after_0_keeps_idle_connections_on_their_channels(alb, backends):
    port, admin = start(alb, backends, 15, park_after=0)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        assert request(connection)[0] == "HTTP/1.1 200 OK"
        time.sleep(2)
        assert parked(admin) == 0
        assert request(connection)[0] == "HTTP/1.1 200 OK"


def test_sigterm_closes_parked_connections_and_exits_promptly(alb, backends):
    port, admin = start(alb, backends, 60)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        request(connection)
        wait_for(lambda: parked(admin) == 1, timeout=5, what="parked")
        started = time.monotonic()
        assert alb.stop() == 0
        assert time.monotonic() - started < 5, "an idle (parked) connection does not hold up the drain"
        assert connection.recv(1) == b""
