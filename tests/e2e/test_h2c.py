"""HTTP/2 with prior knowledge (h2c) on HTTP listeners, with curl, h2load and raw sockets.

A connection that opens with the HTTP/2 preface is served as HTTP/2, proxied like HTTPS's HTTP/2; every
other connection stays HTTP/1.1. As the seed says, the listener's idle timeout does not apply to HTTP/2
requests: it closes an h2c connection only after that long with no stream open.
"""
import json
import os
import socket
import subprocess
import time

from conftest import free_port, manifest_set, raw, wait_for

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
EMPTY_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def serve(alb, backends, idle=15):
    backend = backends.start("b1")
    port = free_port()
    alb.write("web.yaml", manifest_set(port, [(backend, 100)], idle=idle))
    alb.start("--access-log", str(alb.root / "access.log"))
    alb.wait_state("web", "Running")
    return port


def curl(port, *args, path="/"):
    return subprocess.run(["curl", "-sS", "--max-time", "20", *args, "http://127.0.0.1:%d%s" % (port, path)],
                          capture_output=True, text=True, timeout=30)


def test_prior_knowledge_is_served_as_http2_and_http1_as_before(alb, backends):
    port = serve(alb, backends)
    run = curl(port, "--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_version} %{http_code}")
    assert run.stdout == "2 200", run.stderr
    run = curl(port, "--http2-prior-knowledge", "-d", "hello over h2c", "-H", "Content-Type: text/plain", path="/echo")
    assert run.stdout == "hello over h2c"
    run = curl(port, "--http2-prior-knowledge", path="/headers")
    headers = {k.lower(): v for k, v in json.loads(run.stdout).items()}
    assert headers["x-forwarded-for"] == "127.0.0.1" and "upgrade" not in headers
    # HTTP/1.1 on the same listener, and an `Upgrade: h2c` request is served as the HTTP/1.1 request it is.
    assert curl(port, "--http1.1", "-o", "/dev/null", "-w", "%{http_version} %{http_code}").stdout == "1.1 200"
    assert curl(port, "--http2", "-o", "/dev/null", "-w", "%{http_version} %{http_code}").stdout == "1.1 200"


def test_h2load_many_streams_on_few_connections(alb, backends):
    port = serve(alb, backends)
    load = subprocess.run(["h2load", "-n", "2000", "-c", "4", "-m", "16", "http://127.0.0.1:%d/" % port],
                          capture_output=True, text=True, timeout=120)
    assert "2000 succeeded, 0 failed, 0 errored" in load.stdout, load.stdout[-800:]
    assert "status codes: 2000 2xx" in load.stdout


def test_the_access_log_says_http2(alb, backends):
    port = serve(alb, backends)
    assert curl(port, "--http2-prior-knowledge", "-o", "/dev/null", path="/over-h2c").returncode == 0
    line = wait_for(lambda: [l for l in (alb.root / "access.log").read_text().splitlines() if '"/over-h2c"' in l]
                    if (alb.root / "access.log").exists() else [], timeout=5, what="access log line")[0]
    record = json.loads(line)
    assert record["protocol"] == "HTTP/2" and record["status"] == 200
    # The stream logs its connection's client address (read once per connection, not per stream).
    assert record["client_ip"] == "127.0.0.1" and record["client_port"] > 0


def test_idle_timeout_closes_only_connections_with_no_open_stream(alb, backends):
    port = serve(alb, backends, idle=1)
    # A request longer than the idle timeout completes on its h2c connection.
    run = curl(port, "--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_version} %{http_code}",
               path="/slow?s=3")
    assert run.stdout == "2 200", run.stderr
    # A connection with no stream is closed after about the idle timeout, with a GOAWAY first.
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(PREFACE + EMPTY_SETTINGS)
    opened = time.monotonic()
    s.settimeout(10)
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    elapsed = time.monotonic() - opened
    s.close()
    assert 0.8 < elapsed < 5, elapsed
    frame_types = []
    offset = 0
    while offset + 9 <= len(data):
        length = int.from_bytes(data[offset:offset + 3], "big")
        frame_types.append(data[offset + 3])
        offset += 9 + length
    assert frame_types[0] == 0x4 and 0x7 in frame_types, frame_types  # SETTINGS first, GOAWAY before the close


def test_a_broken_preface_or_a_late_one_disturbs_nobody(alb, backends):
    port = serve(alb, backends)
    # The preface line followed by garbage: nio-http2 refuses the connection.
    assert b"HTTP/1.1" not in raw(port, b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n" + b"garbage" * 10)
    # The preface is only a preface on a fresh connection: later it is a malformed HTTP/1.1 request.
    answer = raw(port, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n" + PREFACE)
    assert answer.startswith(b"HTTP/1.1 200 ") and b"HTTP/1.1 400 " in answer
    assert curl(port, "--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_code}").stdout == "200"


def test_request_timeout_answers_each_stream_of_a_connection_with_504(alb, backends):
    # The streams of one connection share one request timer: each slow stream gets its 504 at its deadline
    # and the quick one its 200, on one connection (h2load: one client, three streams at once).
    backend = backends.start("b1")
    port = free_port()
    alb.write("web.yaml", manifest_set(port, [(backend, 100)], request_timeout=1))
    alb.start()
    alb.wait_state("web", "Running")
    url = "http://127.0.0.1:%d" % port
    started = time.monotonic()
    load = subprocess.run(["h2load", "-n", "3", "-c", "1", "-m", "3", url + "/slow?s=4", url + "/", url + "/slow?s=5"],
                          capture_output=True, text=True, timeout=30)
    elapsed = time.monotonic() - started
    # h2load counts a 5xx answer as failed: the two 504s.
    assert "3 done, 1 succeeded, 2 failed, 0 errored" in load.stdout, load.stdout[-800:]
    assert "status codes: 1 2xx, 0 3xx, 0 4xx, 2 5xx" in load.stdout, load.stdout[-800:]
    assert elapsed < 3.5, elapsed


def test_bodies_larger_than_the_windows_flow_both_ways(alb, backends, tmp_path):
    """HTTP/2's windows are 64 KiB: a 3 MiB upload needs its window given back as alb reads it, a 3 MiB
    download is held back while the client's window is spent. One upload byte for byte (curl), two at once on
    one connection (nghttp: their echoes interleave on its output, so they are counted), one download."""
    port = serve(alb, backends)
    url = "http://127.0.0.1:%d" % port
    upload = tmp_path / "upload.bin"
    upload.write_bytes(os.urandom(3 * 1024 * 1024))
    run = subprocess.run(["curl", "-sS", "--max-time", "60", "--http2-prior-knowledge", "--data-binary", "@%s" % upload,
                          "-o", str(tmp_path / "echo"), url + "/echo"], capture_output=True, text=True, timeout=90)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "echo").read_bytes() == upload.read_bytes()

    same = tmp_path / "same.bin"
    same.write_bytes(b"y" * (3 * 1024 * 1024))
    run = subprocess.run(["nghttp", "-d", str(same), url + "/echo?1", url + "/echo?2"], capture_output=True, timeout=90)
    assert run.returncode == 0, run.stderr
    assert run.stdout == b"y" * (6 * 1024 * 1024)

    run = subprocess.run(["curl", "-sS", "--max-time", "60", "--http2-prior-knowledge", "-o", str(tmp_path / "big"),
                          url + "/big?n=3145728"], capture_output=True, text=True, timeout=90)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "big").read_bytes() == b"x" * 3145728


def _literal_block(fields):
    """An HPACK block of literal fields without indexing, names and values as they are (no Huffman)."""
    block = b""
    for name, value in fields:
        name, value = name.encode(), value.encode()
        assert len(name) < 127 and len(value) < 127
        block += b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value
    return block


def _frame(kind, flags, stream, payload):
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


def _read_frames(s, done):
    """Reads frames from `s` until `done(kind, flags, stream, payload)` is true for one (the rest of that read is
    still taken in); returns each RST_STREAM's error code by stream. A GOAWAY or a closed connection fails."""
    resets, data, finished = {}, b"", False
    while not finished:
        chunk = s.recv(65536)
        assert chunk, "the connection closed: %r" % resets
        frames, data = _frames(data + chunk)
        for kind, flags, sid, payload in frames:
            if kind == 0x3:  # RST_STREAM
                resets[sid] = int.from_bytes(payload[:4], "big")
            elif kind == 0x7:  # GOAWAY
                raise AssertionError("GOAWAY: %r" % payload)
            elif done(kind, flags, sid, payload):
                finished = True
    return resets


def _frames(data):
    """The complete frames in `data`, as (type, flags, stream, payload), and the rest."""
    frames = []
    while len(data) >= 9:
        length = int.from_bytes(data[:3], "big")
        if len(data) < 9 + length:
            break
        frames.append((data[3], data[4], int.from_bytes(data[5:9], "big") & 0x7FFFFFFF, data[9:9 + length]))
        data = data[9 + length:]
    return frames, data


def test_a_malformed_request_block_resets_its_stream_and_the_connection_serves_on(alb, backends):
    """RFC 9113 section 8.2: a block with a connection-specific field, a capital in a name, a CR in a value or a
    pseudo-header after the fields is malformed: its stream is reset with PROTOCOL_ERROR, the request never reaches
    a backend, and the connection's next stream is answered."""
    port = serve(alb, backends)
    request = [(":method", "GET"), (":scheme", "http"), (":authority", "a"), (":path", "/")]
    malformed = [
        request + [("connection", "close")],
        request + [("transfer-encoding", "chunked")],
        request + [("X-Capital", "1")],
        request + [("x-split", "a\r\nx-injected: 1")],
        [(":method", "GET"), ("accept", "*/*"), (":scheme", "http"), (":authority", "a"), (":path", "/")],
        request + [("te", "gzip")],
    ]
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(10)
    s.sendall(PREFACE + EMPTY_SETTINGS)
    stream = 1
    for fields in malformed:
        s.sendall(_frame(0x1, 0x5, stream, _literal_block(fields)))  # HEADERS, END_STREAM | END_HEADERS
        stream += 2
    s.sendall(_frame(0x1, 0x5, stream, _literal_block(request)))
    answered = []

    def answer(kind, flags, sid, payload):
        if kind == 0x1 and sid == stream:
            answered.append(payload)
            return True
        return False

    resets = _read_frames(s, answer)
    answered = answered[0]
    s.close()
    assert resets == {sid: 0x1 for sid in range(1, stream, 2)}, resets  # PROTOCOL_ERROR each
    assert answered[:1] == b"\x88", answered  # `:status: 200`, indexed
    # Only the well-formed request reached the proxy (and a backend).
    log = alb.root / "access.log"
    wait_for(lambda: log.exists() and log.read_text().strip(), timeout=5, what="access log line")
    time.sleep(0.5)
    assert len(log.read_text().splitlines()) == 1, log.read_text()


def test_a_request_body_that_breaks_its_content_length_resets_its_stream(alb, backends):
    """RFC 9113 section 8.1.1: DATA past the request's content-length, a stream that ends short of it, or a length
    without a body makes the request malformed: its stream is reset with PROTOCOL_ERROR (no more of it reaches the
    backend), and the connection's next stream, which keeps to its length, is echoed whole."""
    port = serve(alb, backends)

    def post(length):
        return _literal_block([(":method", "POST"), (":scheme", "http"), (":authority", "a"), (":path", "/echo"),
                               ("content-length", length)])

    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(10)
    s.sendall(PREFACE + EMPTY_SETTINGS)
    s.sendall(_frame(0x1, 0x4, 1, post("3")) + _frame(0x0, 0x1, 1, b"abcdef"))  # past it
    s.sendall(_frame(0x1, 0x4, 3, post("10")) + _frame(0x0, 0x1, 3, b"abc"))  # short of it
    s.sendall(_frame(0x1, 0x5, 5, post("3")))  # a length, then END_STREAM on the head
    s.sendall(_frame(0x1, 0x4, 7, post("3")) + _frame(0x0, 0x1, 7, b"abc"))
    echoed = []

    def echo(kind, flags, sid, payload):
        if kind == 0x0 and sid == 7:
            echoed.append(payload)
            return bool(flags & 0x1)  # END_STREAM
        return False

    resets = _read_frames(s, echo)
    echoed = b"".join(echoed)
    s.close()
    assert resets == {1: 0x1, 3: 0x1, 5: 0x1}, resets  # PROTOCOL_ERROR each
    assert echoed == b"abc"
