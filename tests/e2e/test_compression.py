"""Response compression (`compression: true`) with real clients: curl --compressed and explicit
Accept-Encoding over HTTP/1.1, HTTPS and HTTPS+HTTP/2, decoded with Python's brotli and gzip and compared
byte for byte with what the backend sent; the rules that leave a response alone; lying backends; aborts."""
import functools
import gzip
import http.client
import json
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import brotli
import pytest

from conftest import free_port, manifest_set, wait_for
from test_https import https_set, make_cert


@functools.lru_cache(maxsize=32)
def body_of(size, seed=7):
    """A deterministic JSON body of exactly `size` bytes (compressible, not trivially)."""
    items, n, total = [], seed, 0
    while total < size:
        n = (n * 1103515245 + 12345) % (1 << 31)
        items.append(json.dumps({"id": n, "name": "item-%d" % (n % 977), "tags": ["a", "b"][: n % 3]}))
        total += len(items[-1]) + 1
    return ("[" + ",".join(items))[: size].encode()


class Backend(BaseHTTPRequestHandler):
    """GET /PATH?size=N&type=T&encoding=E&cache=C&etag=X answers N bytes with those headers; a few paths lie."""
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        url = urlparse(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        size = int(query.get("size", "4096"))
        body = body_of(size)
        if url.path == "/lie-short":  # says 100,000 bytes, sends `size`, closes
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
            self.close_connection = True
            return
        if url.path == "/lie-long":  # says 2,000 bytes, sends `size`
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "2000")
            self.end_headers()
            self.wfile.write(body)
            self.close_connection = True
            return
        if url.path == "/chunked":
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
            return
        if url.path == "/slow":  # `size` bytes in 64 KiB pieces, 20 ms apart
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            try:
                for start in range(0, size, 65536):
                    self.wfile.write(body[start:start + 65536])
                    self.wfile.flush()
                    time.sleep(0.02)
            except OSError:
                pass
            return
        self.send_response(int(query.get("status", "200")))
        self.send_header("Content-Type", query.get("type", "application/json"))
        self.send_header("Content-Length", str(size))
        for name, key in (("Content-Encoding", "encoding"), ("Cache-Control", "cache"), ("ETag", "etag")):
            if key in query:
                self.send_header(name, query[key])
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_HEAD = do_GET


@pytest.fixture
def backend():
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Backend)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def serve_http(alb, backend, compression=True):
    port = free_port()
    alb.write("web.yaml", manifest_set(port, [(backend, 100)],
                                       extra_listener="  compression: %s\n" % ("true" if compression else "false")))
    alb.start()
    alb.wait_state("web", "Running")
    return port


def request(port, path, accept=None, method="GET", version11=True):
    """(status, headers with lower-case names, raw body bytes as sent, undecoded)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    if not version11:
        conn._http_vsn, conn._http_vsn_str = 10, "HTTP/1.0"
    try:
        headers = {"Accept-Encoding": accept} if accept is not None else {}
        conn.request(method, path, headers=headers, encode_chunked=False)
        if accept is None:
            pass
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def decoded(headers, raw):
    coding = headers.get("content-encoding")
    if coding == "br":
        return brotli.decompress(raw)
    if coding == "gzip":
        return gzip.decompress(raw)
    assert coding is None, coding
    return raw


def curl(url, *args):
    run = subprocess.run(["curl", "-sS", "--max-time", "10", "-D", "-", *args, url],
                         capture_output=True, timeout=20)
    return run


def split_head(output):
    head, _, body = output.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), value.strip())
    return lines[0], headers, body


def test_brotli_and_gzip_over_http11_decode_to_the_backends_bytes(alb, backend):
    port = serve_http(alb, backend)
    original = body_of(300_000)
    # http.client does not decode: the raw bytes are what went over the wire.
    status, headers, raw = request(port, "/data?size=300000&etag=%22v1%22", accept="gzip, deflate, br")
    assert status == 200
    assert headers["content-encoding"] == "br"
    assert headers["transfer-encoding"] == "chunked" and "content-length" not in headers
    assert headers["vary"] == "Accept-Encoding"
    assert headers["etag"] == 'W/"v1"'
    assert len(raw) < len(original) / 4
    assert brotli.decompress(raw) == original
    status, headers, raw = request(port, "/data?size=300000", accept="gzip")
    assert headers["content-encoding"] == "gzip" and gzip.decompress(raw) == original
    # curl --compressed (asks for deflate, gzip, br, zstd) gets Brotli and decodes it itself.
    run = curl("http://127.0.0.1:%d/data?size=300000" % port, "--compressed", "-o", "-")
    assert run.returncode == 0, run.stderr
    status_line, curl_headers, body = split_head(run.stdout)
    assert curl_headers["content-encoding"] == "br" and body == original
    # Explicit Accept-Encoding: curl passes the bytes through undecoded.
    run = curl("http://127.0.0.1:%d/data?size=300000" % port, "-H", "Accept-Encoding: gzip;q=1, br;q=0", "-o", "-")
    _, curl_headers, body = split_head(run.stdout)
    assert curl_headers["content-encoding"] == "gzip" and gzip.decompress(body) == original


def test_the_rules_that_leave_a_response_alone(alb, backend):
    port = serve_http(alb, backend)
    both = "gzip, br"
    cases = [
        # (path, accept, method, expected coding, expect Vary)
        ("/d?size=1024", both, "GET", None, False),
        ("/d?size=1025", both, "GET", "br", True),
        ("/d?size=5000&type=image/png", "gzip", "GET", None, True),  # gzip only for the nine types
        ("/d?size=5000&type=image/png", both, "GET", "br", True),  # Brotli for every type
        ("/d?size=5000&type=text/css;%20charset=utf-8", "gzip", "GET", "gzip", True),
        ("/d?size=5000&cache=no-transform", both, "GET", None, False),
        ("/d?size=5000&status=206", both, "GET", None, False),
        ("/d?size=5000", both, "HEAD", None, True),
        ("/d?size=5000", "br;q=0, gzip;q=0", "GET", None, True),
        ("/d?size=5000", "*", "GET", "br", True),
        ("/d?size=5000", "*;q=0.5, br;q=0", "GET", "gzip", True),
        ("/d?size=5000", "identity", "GET", None, True),
        ("/d?size=5000", None, "GET", None, True),
        ("/chunked?size=5000", both, "GET", None, False),  # no Content-Length: not compressed
    ]
    for path, accept, method, coding, vary in cases:
        status, headers, raw = request(port, path, accept=accept, method=method)
        what = "%s %s %r" % (method, path, accept)
        assert headers.get("content-encoding") == coding, what
        assert ("vary" in headers) == vary, what
        if method == "GET" and status == 200:
            assert decoded(headers, raw) == body_of(int(path.split("size=")[1].split("&")[0])), what
    # Already encoded by the backend: passed through as it is, not encoded twice.
    status, headers, raw = request(port, "/d?size=5000&encoding=gzip", accept=both)
    assert headers["content-encoding"] == "gzip" and raw == body_of(5000) and headers["content-length"] == "5000"
    # HTTP/1.0 clients get the body as it is (no chunked coding to frame it).
    status, headers, raw = request(port, "/d?size=5000", accept=both, version11=False)
    assert status == 200 and "content-encoding" not in headers and raw == body_of(5000)


def test_pipelined_requests_each_get_their_own_coding(alb, backend):
    port = serve_http(alb, backend)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /a?size=3000 HTTP/1.1\r\nHost: x\r\nAccept-Encoding: br\r\n\r\n"
                  b"GET /b?size=3000 HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET /c?size=3000 HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    codings = []
    rest = data
    for _ in range(3):
        head, _, rest = rest.partition(b"\r\n\r\n")
        headers = {l.split(b":", 1)[0].strip().lower(): l.split(b":", 1)[1].strip()
                   for l in head.split(b"\r\n")[1:]}
        if headers.get(b"transfer-encoding") == b"chunked":
            body = b""
            while True:
                size_line, _, rest = rest.partition(b"\r\n")
                size = int(size_line, 16)
                body, rest = body + rest[:size], rest[size + 2:]
                if size == 0:
                    break
        else:
            size = int(headers[b"content-length"])
            body, rest = rest[:size], rest[size:]
        coding = headers.get(b"content-encoding")
        codings.append(coding)
        decoded_body = brotli.decompress(body) if coding == b"br" else gzip.decompress(body) if coding == b"gzip" else body
        assert decoded_body == body_of(3000)
    assert codings == [b"br", None, b"gzip"]


@pytest.fixture
def certs(tmp_path):
    folder = tmp_path / "certs"
    folder.mkdir()
    return {"main": make_cert(folder, "main", ["main.example.com"])}


@pytest.mark.parametrize("http", ["--http1.1", "--http2"])
def test_https_and_http2_compress_and_decode_byte_for_byte(alb, backend, certs, http):
    port = free_port()
    alb.write("web.yaml", https_set(port, backend, certs, extra="  compression: true\n"))
    alb.start()
    alb.wait_state("web", "Running")
    original = body_of(1 << 20)
    base = ["curl", "-sS", "--max-time", "10", "--resolve", "main.example.com:%d:127.0.0.1" % port,
            "--cacert", str(certs["main"][0]), http, "-D", "-", "-o", "-"]
    url = "https://main.example.com:%d/big?size=%d" % (port, len(original))
    for accept, decode in (("br", brotli.decompress), ("gzip", gzip.decompress)):
        run = subprocess.run(base + ["-H", "Accept-Encoding: " + accept, url], capture_output=True, timeout=20)
        assert run.returncode == 0, run.stderr
        status_line, headers, body = split_head(run.stdout)
        assert status_line.startswith("HTTP/2 200" if http == "--http2" else "HTTP/1.1 200"), status_line
        assert headers["content-encoding"] == accept
        assert "content-length" not in headers
        assert ("transfer-encoding" in headers) == (http == "--http1.1")
        assert headers["vary"] == "Accept-Encoding"
        assert len(body) < len(original) / 4
        assert decode(body) == original
    run = subprocess.run(base[:-2] + ["--compressed", "-o", "/dev/null", "-w", "%{size_download} %{http_code}", url],
                         capture_output=True, text=True, timeout=20)
    assert run.returncode == 0, run.stderr
    downloaded, code = run.stdout.split()[-2:]
    assert code == "200" and int(downloaded) < len(original) / 4


def test_backends_that_lie_about_their_length_neither_crash_nor_hang(alb, backend):
    port = serve_http(alb, backend)
    started = time.monotonic()
    # Says 100,000, sends 5,000 and closes: the client's response is cut off (no final chunk), promptly.
    run = curl("http://127.0.0.1:%d/lie-short?size=5000" % port, "--compressed", "-o", "/dev/null")
    assert run.returncode != 0
    assert time.monotonic() - started < 8
    # Says 2,000, sends 20,000: the client gets the 2,000 it was told of, compressed and whole.
    status, headers, raw = request(port, "/lie-long?size=20000", accept="br")
    assert status == 200 and headers["content-encoding"] == "br"
    assert brotli.decompress(raw) == body_of(20000)[:2000]
    # And the listener goes on serving.
    status, headers, raw = request(port, "/d?size=5000", accept="gzip")
    assert status == 200 and gzip.decompress(raw) == body_of(5000)
    assert alb.process.poll() is None


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_clients_that_abort_mid_response_free_their_encoders(alb, backend):
    port = serve_http(alb, backend)
    # Warm up: one whole compressed response of each kind.
    for accept in ("br", "gzip"):
        status, headers, raw = request(port, "/slow?size=1048576", accept=accept)
        assert decoded(headers, raw) == body_of(1048576)
    baseline = rss_kib(alb.process.pid)
    for i in range(40):  # bounded: 40 aborted responses, each read a little and dropped
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET /slow?size=4194304 HTTP/1.1\r\nHost: x\r\nAccept-Encoding: %s\r\n\r\n"
                      % (b"br" if i % 2 == 0 else b"gzip"))
            assert s.recv(4096).startswith(b"HTTP/1.1 200")
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # reset
    time.sleep(0.5)
    growth = rss_kib(alb.process.pid) - baseline
    # A Brotli encoder holds about 1.3 MiB, a gzip one about 270 KiB: 40 leaked ones would be over 30 MiB.
    assert growth < 16 * 1024, "RSS grew by %d KiB" % growth
    status, headers, raw = request(port, "/d?size=5000", accept="br")
    assert status == 200 and brotli.decompress(raw) == body_of(5000)


def test_switching_compression_off_and_on_applies_live(alb, backend):
    port = serve_http(alb, backend)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def get_on(connection):
        connection.request("GET", "/d?size=5000", headers={"Accept-Encoding": "br"})
        response = connection.getresponse()
        raw = response.read()
        return response.getheader("content-encoding"), raw

    assert get_on(conn)[0] == "br"
    alb.write("web.yaml", manifest_set(port, [(backend, 100)], extra_listener="  compression: false\n"))
    wait_for(lambda: (alb.status_of("Listener", "web") or {}).get("live", {}).get("compression") is False,
             what="compression off live")
    # The same keep-alive connection stops compressing at its next response, and so does a new one.
    coding, raw = get_on(conn)
    assert coding is None and raw == body_of(5000)
    fresh = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    assert get_on(fresh)[0] is None
    alb.write("web.yaml", manifest_set(port, [(backend, 100)], extra_listener="  compression: true\n"))
    wait_for(lambda: (alb.status_of("Listener", "web") or {}).get("live", {}).get("compression") is True,
             what="compression on live")
    # Switched on: connections accepted from now on compress.
    again = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    coding, raw = get_on(again)
    assert coding == "br" and brotli.decompress(raw) == body_of(5000)
    for c in (conn, fresh, again):
        c.close()


def test_listeners_without_compression_pass_everything_through(alb, backend):
    port = serve_http(alb, backend, compression=False)
    status, headers, raw = request(port, "/d?size=300000", accept="gzip, br")
    assert "content-encoding" not in headers and "vary" not in headers
    assert headers["content-length"] == "300000" and raw == body_of(300000)


def test_a_lying_backend_behind_http2_resets_only_its_stream(alb, backend, certs):
    port = free_port()
    alb.write("web.yaml", https_set(port, backend, certs, extra="  compression: true\n"))
    alb.start()
    alb.wait_state("web", "Running")
    base = ["curl", "-sS", "--max-time", "10", "--resolve", "main.example.com:%d:127.0.0.1" % port,
            "--cacert", str(certs["main"][0]), "--http2", "--compressed", "-o", "/dev/null", "-w", "%{http_code}\n"]
    url = "https://main.example.com:%d" % port
    started = time.monotonic()
    # Both on one HTTP/2 connection: the lying response fails, the next stream is served whole.
    run = subprocess.run(base + [url + "/lie-short?size=5000", "-o", "/dev/null", url + "/d?size=5000"],
                         capture_output=True, text=True, timeout=20)
    assert time.monotonic() - started < 8
    # curl reports the cut-off stream (RST_STREAM, "not closed cleanly") and exits with the last transfer's code.
    assert "curl: (92)" in run.stderr, run.stderr
    assert run.stdout.split()[-1] == "200", run.stdout + run.stderr
    assert alb.process.poll() is None
