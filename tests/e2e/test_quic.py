"""QUIC listeners serving HTTP/3 (docs/quic.md, slice 3) with a real client: aioquic's HTTP/3 client through
alb to the demo backend over HTTP/1.1; Debian's gtlsclient too when it is installed."""
import asyncio
import json
import os
import re
import ssl
import subprocess
import time

import pytest

from conftest import free_port, wait_for
from test_https import make_cert

# aioquic (PyPI) is installed by `make deps`.
from aioquic.asyncio.client import connect  # noqa: E402
from aioquic.asyncio.protocol import QuicConnectionProtocol  # noqa: E402
from aioquic.h3.connection import H3_ALPN, H3Connection  # noqa: E402
from aioquic.h3.events import DataReceived, HeadersReceived  # noqa: E402
from aioquic.quic.configuration import QuicConfiguration  # noqa: E402
from aioquic.quic.events import StreamReset  # noqa: E402

GTLSCLIENT = "/usr/bin/gtlsclient"


def free_udp_port():
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def quic_set(port, backend, cert, key, request_timeout=60):
    return """\
apiVersion: alb/v1
kind: LoadBalancer
metadata: {name: lb}
spec: {address: 127.0.0.1}
---
apiVersion: alb/v1
kind: ServerGroup
metadata: {name: pool}
spec:
  servers: [{address: 127.0.0.1, port: %d}]
---
apiVersion: alb/v1
kind: Certificate
metadata: {name: main}
spec: {type: Server, certificate: %s, privateKey: %s}
---
apiVersion: alb/v1
kind: Listener
metadata: {name: h3}
spec:
  loadBalancer: lb
  protocol: QUIC
  port: %d
  certificates: {server: main}
  requestTimeout: %d
  headers: {xForwardedProto: true}
  defaultAction:
    forwardGroup:
      serverGroups: [{name: pool}]
""" % (backend, cert, key, port, request_timeout)


class H3Client(QuicConnectionProtocol):
    """An HTTP/3 client on one QUIC connection: `request` sends one request on a new stream and returns
    (status, headers dict, body bytes) once the response stream ends."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic)
        self.waiting = {}
        self.responses = {}

    def quic_event_received(self, event):
        if isinstance(event, StreamReset) and event.stream_id in self.waiting:
            self.waiting.pop(event.stream_id).set_exception(
                ConnectionResetError("stream %d reset with 0x%x" % (event.stream_id, event.error_code)))
            return
        for h3_event in self.h3.handle_event(event):
            if not isinstance(h3_event, (HeadersReceived, DataReceived)):
                continue
            response = self.responses.setdefault(h3_event.stream_id, {"headers": [], "body": bytearray()})
            if isinstance(h3_event, HeadersReceived):
                response["headers"] += h3_event.headers
            else:
                response["body"] += h3_event.data
            if h3_event.stream_ended and h3_event.stream_id in self.waiting:
                self.waiting.pop(h3_event.stream_id).set_result(response)

    async def request(self, authority, method, path, body=None, length=True, extra=()):
        stream_id = self._quic.get_next_available_stream_id()
        headers = [(b":method", method.encode()), (b":scheme", b"https"), (b":authority", authority.encode()),
                   (b":path", path.encode())] + list(extra)
        if body is not None and length:
            headers.append((b"content-length", str(len(body)).encode()))
        self.h3.send_headers(stream_id, headers, end_stream=body is None)
        if body is not None:
            self.h3.send_data(stream_id, body, end_stream=True)
        waiter = asyncio.get_running_loop().create_future()
        self.waiting[stream_id] = waiter
        self.transmit()
        response = await waiter
        fields = {}
        for name, value in response["headers"]:
            fields.setdefault(name.decode(), value.decode())
        return int(fields[":status"]), fields, bytes(response["body"])


def client_configuration():
    configuration = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, verify_mode=ssl.CERT_NONE)
    configuration.max_data = 16 << 20
    configuration.max_stream_data = 4 << 20
    return configuration


async def on_connection(port, work, timeout=60):
    """Runs `work` on a new connection; the timeout covers the handshake and the close as well, which wait
    for alb without a limit of their own."""
    async def session():
        async with connect("127.0.0.1", port, configuration=client_configuration(), create_protocol=H3Client,
                           wait_connected=True) as client:
            return await work(client, "127.0.0.1:%d" % port)
    return await asyncio.wait_for(session(), timeout)


def run(coroutine):
    return asyncio.run(coroutine)


@pytest.fixture
def quic_listener(alb, backends, tmp_path):
    """A running alb with one QUIC listener forwarding to one demo backend: (port, access log path)."""
    backend = backends.start("b1")
    cert, key = make_cert(tmp_path, "main", ["localhost"])
    port = free_udp_port()
    alb.write("set.yaml", quic_set(port, backend, cert, key))
    log_path = alb.root / "access.log"
    alb.start("--access-log", str(log_path))
    alb.wait_state("h3", "Running")
    return port, log_path


def test_a_get_over_http3_reaches_the_backend_and_the_status_says_running(alb, quic_listener):
    port, _ = quic_listener
    status, fields, body = run(on_connection(port, lambda c, a: c.request(a, "GET", "/hello")))
    assert status == 200
    assert body == b"b1 /hello\n"
    assert fields.get("x-backend") == "b1"
    listener = alb.status_of("Listener", "h3")
    assert listener["state"] == "Running"


def test_the_backend_sees_http11_with_forwarding_headers(quic_listener):
    port, _ = quic_listener
    status, _, body = run(on_connection(port, lambda c, a: c.request(a, "GET", "/headers")))
    assert status == 200
    headers = {k.lower(): v for k, v in json.loads(body).items()}
    assert headers["host"].startswith("127.0.0.1:")
    assert headers["x-forwarded-proto"] == "https"
    assert headers["x-forwarded-for"] == "127.0.0.1"


def test_twenty_connections_with_several_streams_each_all_succeed(alb, quic_listener):
    port, _ = quic_listener

    async def one_connection(index):
        async def streams(client, authority):
            return await asyncio.gather(*(client.request(authority, "GET", "/c%d/s%d" % (index, n)) for n in range(5)))
        return await on_connection(port, streams)

    async def all_connections():
        return await asyncio.gather(*(one_connection(i) for i in range(20)))

    results = run(all_connections())
    assert len(results) == 20
    for index, responses in enumerate(results):
        assert [(status, body) for status, _, body in responses] == [
            (200, b"b1 /c%d/s%d\n" % (index, n)) for n in range(5)]
    # The listener's counters in its status file (refreshed every 5 s) count them.
    stats = wait_for(lambda: (alb.status_of("Listener", "h3") or {}).get("stats", {}).get("totalRequests", 0) >= 100
                     and alb.status_of("Listener", "h3")["stats"], timeout=15, what="status file stats")
    assert stats["totalConnections"] >= 20
    assert stats["responses"]["2xx"] >= 100


def test_a_multi_mib_download_is_byte_exact(quic_listener):
    port, _ = quic_listener
    size = 8 << 20
    status, _, body = run(on_connection(port, lambda c, a: c.request(a, "GET", "/big?n=%d" % size)))
    assert status == 200
    assert len(body) == size
    assert body == b"x" * size


def test_an_expect_100_continue_upload_gets_the_final_response(quic_listener):
    port, _ = quic_listener
    payload = os.urandom(100_000)
    status, _, body = run(on_connection(port, lambda c, a: c.request(
        a, "POST", "/echo", body=payload, extra=[(b"expect", b"100-continue")])))
    assert status == 200
    assert body == payload


def test_a_backends_interim_response_is_not_relayed_the_final_one_is(alb, tmp_path):
    backend, stop = start_canned_backend(b"HTTP/1.1 100 Continue\r\n\r\n"
                                         b"HTTP/1.1 201 Created\r\nContent-Length: 8\r\n\r\ncreated\n")
    try:
        cert, key = make_cert(tmp_path, "main", ["localhost"])
        port = free_udp_port()
        alb.write("set.yaml", quic_set(port, backend, cert, key))
        alb.start()
        alb.wait_state("h3", "Running")
        status, _, body = run(on_connection(port, lambda c, a: c.request(a, "POST", "/create", body=b"{}")))
        assert (status, body) == (201, b"created\n")
    finally:
        stop()


def test_a_stalled_client_does_not_make_alb_buffer_the_download(alb, quic_listener):
    """The client stops reading (its event loop blocked) during a 64 MiB download from a local backend that
    could deliver it all in well under a second: alb stops reading the backend once the stream holds its
    window of unacknowledged bytes, so its memory does not grow by the body."""
    port, _ = quic_listener
    size = 64 << 20

    def rss_mib():
        with open("/proc/%d/status" % alb.process.pid) as status:
            line = next(l for l in status if l.startswith("VmRSS"))
        return int(line.split()[1]) // 1024

    async def work(client, authority):
        before = rss_mib()
        download = asyncio.ensure_future(client.request(authority, "GET", "/big?n=%d" % size))
        await asyncio.sleep(0.3)
        import time
        time.sleep(3)  # blocks the client's loop: nothing is read or acknowledged
        stalled = rss_mib()
        status, _, body = await download
        return before, stalled, status, body

    before, stalled, status, body = run(on_connection(port, work, timeout=120))
    assert status == 200 and len(body) == size and body == b"x" * size
    assert stalled - before < 16, "alb grew from %d to %d MiB while the client stalled" % (before, stalled)


def start_slow_reading_backend(delay):
    """A backend that reads nothing for `delay` seconds after a request arrives, then reads its
    Content-Length body and answers how many bytes it got."""
    import socket
    import threading
    import time
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                try:
                    time.sleep(delay)
                    data = b""
                    while b"\r\n\r\n" not in data:
                        data += conn.recv(65536)
                    head, body = data.split(b"\r\n\r\n", 1)
                    length = int(next(l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")))
                    got = len(body)
                    while got < length:
                        chunk = conn.recv(1 << 20)
                        if not chunk:
                            break
                        got += len(chunk)
                    answer = b"got %d\n" % got
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(answer), answer))
                except (OSError, StopIteration, ValueError):
                    pass

    threading.Thread(target=serve, daemon=True).start()
    return server.getsockname()[1], server.close


def test_a_stalled_backend_does_not_make_alb_buffer_the_upload(alb, tmp_path):
    """The backend reads nothing for 3 s while the client uploads 64 MiB: the client gets flow-control credit
    only for bytes alb could write to the backend, so alb's memory does not grow by the body."""
    backend, stop = start_slow_reading_backend(3)
    try:
        cert, key = make_cert(tmp_path, "main", ["localhost"])
        port = free_udp_port()
        alb.write("set.yaml", quic_set(port, backend, cert, key))
        alb.start()
        alb.wait_state("h3", "Running")
        size = 64 << 20
        payload = b"u" * size

        def rss_mib():
            with open("/proc/%d/status" % alb.process.pid) as status:
                line = next(l for l in status if l.startswith("VmRSS"))
            return int(line.split()[1]) // 1024

        async def work(client, authority):
            before = rss_mib()
            upload = asyncio.ensure_future(client.request(authority, "POST", "/upload", body=payload))
            await asyncio.sleep(2.5)  # the client sends what it may; the backend reads nothing yet
            stalled = rss_mib()
            status, _, body = await upload
            return before, stalled, status, body

        before, stalled, status, body = run(on_connection(port, work, timeout=120))
        assert (status, body) == (200, b"got %d\n" % size)
        assert stalled - before < 16, "alb grew from %d to %d MiB while the backend stalled" % (before, stalled)
    finally:
        stop()


@pytest.mark.parametrize("announce_length", [True, False])
def test_a_multi_mib_upload_is_echoed_byte_exact(quic_listener, announce_length):
    port, _ = quic_listener
    payload = os.urandom(4 << 20)
    status, _, body = run(on_connection(
        port, lambda c, a: c.request(a, "POST", "/echo", body=payload, length=announce_length)))
    assert status == 200
    assert len(body) == len(payload)
    assert body == payload


def test_an_unreachable_backend_is_an_ordinary_502_logged_as_http3(alb, backends, tmp_path):
    cert, key = make_cert(tmp_path, "main", ["localhost"])
    port = free_udp_port()
    alb.write("set.yaml", quic_set(port, free_port(), cert, key))  # nothing listens on the backend port
    log_path = alb.root / "access.log"
    alb.start("--access-log", str(log_path))
    alb.wait_state("h3", "Running")
    status, _, body = run(on_connection(port, lambda c, a: c.request(a, "GET", "/nobody")))
    assert status == 502
    assert body == b"502 Bad Gateway\n"
    line = wait_for(lambda: [json.loads(l) for l in log_path.read_text().splitlines() if '"/nobody"' in l]
                    if log_path.exists() else [], timeout=5, what="access log line")[0]
    assert line["protocol"] == "HTTP/3"
    assert line["status"] == 502


def test_the_access_log_says_http3(quic_listener):
    port, log_path = quic_listener
    status, _, _ = run(on_connection(port, lambda c, a: c.request(a, "GET", "/logged")))
    assert status == 200
    line = wait_for(lambda: [json.loads(l) for l in log_path.read_text().splitlines() if '"/logged"' in l]
                    if log_path.exists() else [], timeout=5, what="access log line")[0]
    assert line["protocol"] == "HTTP/3"
    assert line["status"] == 200
    assert line["tls_version"] == "TLSv1.3"
    assert line["upstream"].startswith("127.0.0.1:")


def test_removing_the_listener_closes_its_socket(alb, quic_listener):
    port, _ = quic_listener
    alb.remove("set.yaml")
    wait_for(lambda: alb.status_of("Listener", "h3") is None or alb.status_of("Listener", "h3").get("state") != "Running",
             timeout=10, what="listener h3 gone")
    import socket
    # The port is free again: a new UDP socket can bind it.
    def rebinds():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", port))
            return True
    wait_for(rebinds, timeout=10, what="UDP port %d free" % port)


def test_header_sections_over_the_edge_limits_are_431_and_the_connection_goes_on(quic_listener):
    port, _ = quic_listener

    async def work(client, authority):
        many = [(b"x-field-%d" % n, b"v") for n in range(150)]
        too_many = await client.request(authority, "GET", "/many", extra=many)
        too_big = await client.request(authority, "GET", "/big-head", extra=[(b"x-big-%d" % n, b"y" * 4000) for n in range(20)])
        fine = await client.request(authority, "GET", "/fine", extra=[(b"x-field-%d" % n, b"v") for n in range(50)])
        return too_many, too_big, fine

    too_many, too_big, fine = run(on_connection(port, work))
    assert (too_many[0], too_many[2]) == (431, b"431 Request Header Fields Too Large\n")
    assert (too_big[0], too_big[2]) == (431, b"431 Request Header Fields Too Large\n")
    assert (fine[0], fine[2]) == (200, b"b1 /fine\n")


def test_an_https_listener_and_a_quic_listener_share_a_port(alb, backends, tmp_path):
    from test_https import https_set
    backend = backends.start("b1")
    cert, key = make_cert(tmp_path, "main", ["localhost"])
    port = free_port()
    documents = https_set(port, backend, {"main": (cert, key)}) + "---\n" + quic_set(port, backend, cert, key).split("---\n", 3)[3]
    alb.write("set.yaml", documents)
    alb.start()
    alb.wait_state("web", "Running")
    alb.wait_state("h3", "Running")
    status, _, body = run(on_connection(port, lambda c, a: c.request(a, "GET", "/over-udp")))
    assert (status, body) == (200, b"b1 /over-udp\n")
    context = ssl.create_default_context(cafile=str(cert))
    import http.client
    conn = http.client.HTTPSConnection("localhost", port, timeout=5, context=context)
    try:
        conn.request("GET", "/over-tcp")
        response = conn.getresponse()
        assert (response.status, response.read()) == (200, b"b1 /over-tcp\n")
    finally:
        conn.close()


def test_a_renamed_quic_listener_takes_the_socket_over_and_serves_on(alb, quic_listener):
    port, log_path = quic_listener
    text = (alb.manifests / "set.yaml").read_text().replace("metadata: {name: h3}", "metadata: {name: h3b}")
    alb.write("set.yaml", text)
    alb.wait_state("h3b", "Running")
    status, _, body = run(on_connection(port, lambda c, a: c.request(a, "GET", "/after-rename")))
    assert (status, body) == (200, b"b1 /after-rename\n")
    line = wait_for(lambda: [json.loads(l) for l in log_path.read_text().splitlines() if '"/after-rename"' in l]
                    if log_path.exists() else [], timeout=5, what="access log line")[0]
    assert line["listener"] == "h3b"


def test_cookie_fields_reach_the_backend_as_one_cookie_field(quic_listener):
    # An HTTP/3 client may send a field per cookie; an HTTP/1.1 request carries one (RFC 9114 section 4.2.1).
    port, _ = quic_listener
    extra = [(b"cookie", b"a=1"), (b"accept", b"*/*"), (b"cookie", b"b=2")]
    status, _, body = run(on_connection(port, lambda c, a: c.request(a, "POST", "/headers", body=b"", extra=extra)))
    assert status == 200
    fields = json.loads(body)
    assert [value for name, value in fields if name == "cookie"] == ["a=1; b=2"], fields
    assert [name for name, _ in fields].index("cookie") < [name for name, _ in fields].index("accept"), fields


def test_a_request_whose_host_names_another_authority_is_refused_with_400(quic_listener):
    # RFC 9114 section 4.3.1: :authority and Host, when both are sent, MUST hold the same value.
    port, _ = quic_listener

    async def work(client, authority):
        refused = await client.request(authority, "GET", "/", extra=[(b"host", b"other.example")])
        same = await client.request(authority, "GET", "/", extra=[(b"host", authority.upper().encode())])
        return refused, same

    refused, same = run(on_connection(port, work))
    assert refused[0] == 400, refused
    assert same[0] == 200 and same[2] == b"b1 /\n", same


def test_a_request_whose_authority_is_not_of_the_form_of_a_host_is_refused_with_400(quic_listener):
    # As an HTTP/1 request's Host: uri-host [":" port], and there (RFC 9114 section 4.3.1: an `https` request names
    # its authority, not empty). nghttp3 checks the characters only: it resets a stream whose :authority holds a `/`
    # and drops a `host` field that holds one, but passes userinfo, `..` and a bad port (an empty :authority it resets
    # too).
    port, _ = quic_listener

    async def work(client, authority):
        answers = [await client.request(bad, "GET", "/") for bad in ("user@" + authority, "a..b", "a:x", "[::1")]
        try:
            answers.append(await client.request("", "GET", "/"))
        except ConnectionResetError:
            answers.append("reset")
        answers.append(await client.request(authority, "GET", "/ok"))
        return answers

    answers = run(on_connection(port, work))
    assert [answer[0] for answer in answers[:4]] == [400] * 4, answers
    assert answers[4] == "reset" or answers[4][0] == 400, answers
    assert answers[5][0] == 200 and answers[5][2] == b"b1 /ok\n", answers


def test_a_request_is_one_an_http1_backend_can_take(quic_listener):
    # Visible ASCII passes (browsers' unencoded `{`, `|`, `^` included); a byte above ASCII is answered 400 (nghttp3
    # takes it, and such a request then waited for its timeout: the backend writer refused it). nghttp3 drops a field
    # whose value holds a control byte, or starts or ends with whitespace, itself: the rest of the request goes on.
    port, _ = quic_listener

    async def work(client, authority):
        answers = [await client.request(authority, "GET", path)
                   for path in ('/a{b}|c^d`e?q="x"<y>\\z', "/caf\u00e9", "/index.html#.png")]
        answers.append(await client.request(authority, "GET", "/headers", extra=[(b"x-a", b"a\x01b"), (b"x-b", b"1"),
                                                                                (b"x-c", b"c ")]))
        return answers

    passed, refused, fragment, control = run(on_connection(port, work))
    assert passed[0] == 200 and passed[2] == b"b1 /a{b}|c^d`e\n", passed
    assert refused[0] == 400 and fragment[0] == 400, (refused, fragment)
    fields = json.loads(control[2])
    assert control[0] == 200 and "x-a" not in fields and "x-c" not in fields and fields["x-b"] == "1", control


def test_a_request_the_client_resets_is_abandoned_and_the_connection_goes_on(quic_listener):
    port, log_path = quic_listener

    async def work(client, authority):
        stream_id = client._quic.get_next_available_stream_id()
        client.h3.send_headers(stream_id, [(b":method", b"POST"), (b":scheme", b"https"),
                                           (b":authority", authority.encode()), (b":path", b"/headers"),
                                           (b"content-length", b"1000000")])
        client.h3.send_data(stream_id, b"z" * 10000, end_stream=False)
        client.transmit()
        await asyncio.sleep(0.3)
        client._quic.reset_stream(stream_id, 0x010c)  # H3_REQUEST_CANCELLED
        client.transmit()
        await asyncio.sleep(0.3)
        return await client.request(authority, "GET", "/after-reset")

    status, _, body = run(on_connection(port, work))
    assert (status, body) == (200, b"b1 /after-reset\n")
    line = wait_for(lambda: [json.loads(l) for l in log_path.read_text().splitlines() if '"/headers"' in l]
                    if log_path.exists() else [], timeout=5, what="access log line")[0]
    assert line["status"] == 499
    assert line["protocol"] == "HTTP/3"


def test_a_body_that_disagrees_with_its_content_length_resets_its_stream_and_the_connection_goes_on(quic_listener):
    # RFC 9114 section 4.1.2: a malformed request is a stream error (H3_MESSAGE_ERROR). nghttp3 reports it as an error
    # of the whole read; until the fourteenth session that closed the connection, and every other request on it.
    port, log_path = quic_listener

    async def work(client, authority):
        outcomes = []
        for path, body, length in (("/longer", b"hello", b"3"), ("/shorter", b"abc", b"10")):
            try:
                await asyncio.wait_for(client.request(authority, "POST", path, body=body, length=False,
                                                      extra=[(b"content-length", length)]), 10)
                outcomes.append("answered")
            except ConnectionResetError as error:
                outcomes.append(str(error))
        outcomes.append(await client.request(authority, "GET", "/after-malformed"))
        return outcomes

    longer, shorter, after = run(on_connection(port, work))
    assert longer.endswith("reset with 0x10e") and shorter.endswith("reset with 0x10e"), (longer, shorter)
    assert (after[0], after[2]) == (200, b"b1 /after-malformed\n")
    lines = wait_for(lambda: [json.loads(l) for l in log_path.read_text().splitlines() if '"/longer"' in l or '"/shorter"' in l]
                     if log_path.exists() else [], timeout=5, what="access log lines")
    assert sorted((line["path"], line["status"]) for line in lines) == [("/longer", 400), ("/shorter", 400)], lines


def test_a_rotated_certificate_serves_new_connections_in_place(alb, quic_listener, tmp_path):
    port, _ = quic_listener

    async def peer_names(client, authority):
        status, _, _ = await client.request(authority, "GET", "/cert")
        certificate = client._quic.tls._peer_certificate
        return status, certificate.subject.rfc4514_string()

    assert run(on_connection(port, peer_names)) == (200, "CN=localhost")
    cert, key = make_cert(tmp_path, "rotated", ["rotated.example"])
    text = (alb.manifests / "set.yaml").read_text()
    text = re.sub(r"spec: \{type: Server, certificate: [^,]+, privateKey: [^}]+\}",
                  "spec: {type: Server, certificate: %s, privateKey: %s}" % (cert, key), text)
    alb.write("set.yaml", text)
    wait_for(lambda: run(on_connection(port, peer_names)) == (200, "CN=rotated.example"), timeout=10,
             what="the rotated certificate")
    assert alb.status_of("Listener", "h3")["state"] == "Running"


def start_canned_backend(answer):
    """A backend that reads one request's first bytes, answers `answer` and closes the connection."""
    import socket
    import threading
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                try:
                    conn.recv(65536)
                    conn.sendall(answer)
                except OSError:
                    pass

    threading.Thread(target=serve, daemon=True).start()
    return server.getsockname()[1], server.close


def test_a_backend_failing_after_the_response_head_resets_the_stream(alb, tmp_path):
    # A response head promising 1000 bytes, 10 of them, and the connection closes.
    backend, stop = start_canned_backend(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
    try:
        cert, key = make_cert(tmp_path, "main", ["localhost"])
        port = free_udp_port()
        alb.write("set.yaml", quic_set(port, backend, cert, key))
        alb.start()
        alb.wait_state("h3", "Running")

        async def work(client, authority):
            with pytest.raises(ConnectionResetError):
                await client.request(authority, "GET", "/truncated")
            # The connection itself goes on: the next stream is answered (here: reset again, not hung).
            with pytest.raises(ConnectionResetError):
                await client.request(authority, "GET", "/truncated-again")
            return True

        assert run(on_connection(port, work, timeout=20))
    finally:
        stop()


def test_a_backend_silent_mid_response_for_the_request_timeout_resets_the_stream(alb, tmp_path):
    # The request timeout bounds the backend's silence between reads of the response (nginx's proxy_read_timeout):
    # the stream is reset with H3_INTERNAL_ERROR. Until the fourteenth session the client waited forever.
    from test_edge_responses import start_stalling_backend
    backend, _ = start_stalling_backend([(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10, 0)])
    try:
        cert, key = make_cert(tmp_path, "main", ["localhost"])
        port = free_udp_port()
        alb.write("set.yaml", quic_set(port, backend.getsockname()[1], cert, key, request_timeout=2))
        alb.start()
        alb.wait_state("h3", "Running")

        async def work(client, authority):
            started = time.monotonic()
            try:
                await asyncio.wait_for(client.request(authority, "GET", "/stalled"), 15)
                return "answered", 0
            except ConnectionResetError as error:
                return str(error), time.monotonic() - started

        outcome, took = run(on_connection(port, work, timeout=30))
        assert outcome.endswith("reset with 0x102") and 1.5 < took < 6, (outcome, took)
    finally:
        backend.close()


def test_a_backend_slower_than_the_request_timeout_is_504(alb, backends, tmp_path):
    backend = backends.start("b1")
    cert, key = make_cert(tmp_path, "main", ["localhost"])
    port = free_udp_port()
    alb.write("set.yaml", quic_set(port, backend, cert, key, request_timeout=1))
    alb.start()
    alb.wait_state("h3", "Running")
    status, _, body = run(on_connection(port, lambda c, a: c.request(a, "GET", "/slow?s=3")))
    assert status == 504
    assert body == b"504 Gateway Timeout\n"


@pytest.mark.skipif(not os.access(GTLSCLIENT, os.X_OK), reason="gtlsclient not installed (ngtcp2-client)")
def test_gtlsclient_gets_the_backend_body(quic_listener, tmp_path):
    port, _ = quic_listener
    download = tmp_path / "download"
    download.mkdir()
    result = subprocess.run([GTLSCLIENT, "-q", "--timeout=5s", "--exit-on-all-streams-close",
                             "--download=%s" % download, "127.0.0.1", str(port), "https://127.0.0.1:%d/from-gtls" % port],
                            capture_output=True, timeout=30)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (download / "from-gtls").read_bytes() == b"b1 /from-gtls\n"
