"""Sticky sessions with an inserted cookie, through real clients and backends."""
import collections
import http.client

from conftest import free_port, manifest_set


def request(port, cookie=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/", headers={"Cookie": cookie} if cookie else {})
        response = conn.getresponse()
        response.read()
        return response.getheader("X-Backend"), response.getheader("Set-Cookie")
    finally:
        conn.close()


def test_the_cookie_keeps_a_client_on_its_server_and_a_stale_one_is_reissued(alb, backends):
    ports = [backends.start("b%d" % (i + 1)) for i in range(3)]
    port = free_port()
    text = manifest_set(port, [(p, 100) for p in ports]).replace(
        "spec:\n  servers:", "spec:\n  stickySession: {enabled: true, type: Insert, cookieTimeout: 600}\n  servers:", 1)
    alb.write("web.yaml", text)
    alb.start()
    alb.wait_state("web", "Running")

    first, set_cookie = request(port)
    assert set_cookie and set_cookie.startswith("ALB_STICKY=") and "Max-Age=600" in set_cookie, set_cookie
    cookie = set_cookie.split(";")[0]
    assert str(ports[0]) not in cookie and "127.0.0.1" not in cookie, "the value does not reveal the server"
    answers = [request(port, "theme=dark; " + cookie) for _ in range(10)]
    assert {backend for backend, _ in answers} == {first}
    assert all(again is None for _, again in answers), "a valid cookie is not set again"

    without = collections.Counter(request(port)[0] for _ in range(9))
    assert len(without) == 3, without  # no cookie: the scheduler (round robin) decides

    stale, reissued = request(port, "ALB_STICKY=0123456789abcdef")
    assert reissued and reissued.startswith("ALB_STICKY="), "a cookie naming no server is issued again"
    follow = {request(port, reissued.split(";")[0])[0] for _ in range(5)}
    assert follow == {stale}
