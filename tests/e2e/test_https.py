"""HTTPS listeners with real TLS clients: certificates made by openssl, SNI, policies, bad input, rotation."""
import http.client
import json
import os
import re
import socket
import ssl
import subprocess

import pytest

from conftest import accepted_then_drained, assert_ok_saying_close, free_port, line_of, receive_until_close, wait_for


def make_cert(folder, name, names, rsa=False):
    """A self-signed ECDSA P-256 (or RSA 2048) certificate for `names` (SANs): returns (cert path, key path)."""
    cert, key = folder / (name + ".crt"), folder / (name + ".key")
    new_key = ["-newkey", "rsa:2048"] if rsa else ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
    subprocess.run(["openssl", "req", "-x509", *new_key, "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "30", "-subj", "/CN=" + names[0],
                    "-addext", "subjectAltName=" + ",".join("DNS:" + n for n in names),
                    "-addext", "basicConstraints=critical,CA:FALSE"],
                   check=True, capture_output=True)
    return cert, key


def https_set(port, backend, certs, policy="tls_cipher_policy_1_2", additional=(), extra=""):
    docs = ["""\
apiVersion: alb/v1
kind: LoadBalancer
metadata: {name: lb}
spec: {address: 127.0.0.1}
""", """\
apiVersion: alb/v1
kind: ServerGroup
metadata: {name: pool}
spec:
  servers: [{address: 127.0.0.1, port: %d}]
""" % backend]
    for name, (cert, key) in certs.items():
        docs.append("""\
apiVersion: alb/v1
kind: Certificate
metadata: {name: %s}
spec: {type: Server, certificate: %s, privateKey: %s}
""" % (name, cert, key))
    docs.append("""\
apiVersion: alb/v1
kind: Listener
metadata: {name: web}
spec:
  loadBalancer: lb
  protocol: HTTPS
  port: %d
  securityPolicy: %s
  certificates: {server: main, additional: [%s]}
  headers: {xForwardedProto: true}
  defaultAction:
    forwardGroup:
      serverGroups: [{name: pool}]
%s""" % (port, policy, ", ".join(additional), extra))
    return "---\n".join(docs)


def tls_connection(port, server_name, cafile):
    """A TLS connection to the listener with SNI `server_name`, verified against `cafile` alone."""
    context = ssl.create_default_context(cafile=str(cafile))
    conn = http.client.HTTPSConnection(server_name, port, timeout=5, context=context)
    conn.sock = context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5),
                                    server_hostname=server_name)
    return conn


def tls_get(port, server_name, cafile, path="/", conn=None):
    """GET over TLS: (status, body, the server certificate in DER)."""
    own = conn is None
    conn = conn or tls_connection(port, server_name, cafile)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode(errors="replace"), conn.sock.getpeercert(binary_form=True)
    finally:
        if own:
            conn.close()


def s_client(port, *args, server_name="main.example.com"):
    """openssl s_client's handshake against the listener: True when it completed."""
    run = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % port, "-servername", server_name,
                          *args], input=b"", capture_output=True, timeout=10)
    return b"BEGIN CERTIFICATE" in run.stdout and run.returncode == 0


def serve_https(alb, backends, certs, names=("main",), *args, **kwargs):
    """A backend and a running HTTPS listener on a fresh port: (port, backend port)."""
    backend = backends.start("b1")
    port = free_port()
    alb.write("web.yaml", https_set(port, backend, {n: certs[n] for n in names}, *args, **kwargs))
    alb.start()
    alb.wait_state("web", "Running")
    return port, backend


@pytest.fixture
def certs(tmp_path):
    folder = tmp_path / "certs"
    folder.mkdir()
    return {
        "main": make_cert(folder, "main", ["main.example.com"]),
        "shop": make_cert(folder, "shop", ["shop.example.com"]),
        "wild": make_cert(folder, "wild", ["*.apps.example.com"]),
        "folder": folder,
    }


def test_https_serves_with_sni_and_forwards_proto(alb, backends, certs):
    port, backend = serve_https(alb, backends, certs, ("main", "shop", "wild"), additional=["shop", "wild"])
    status, body, _ = tls_get(port, "main.example.com", certs["main"][0])
    assert (status, body) == (200, "b1 /\n")
    # Each name gets its own certificate: verification against that certificate alone succeeds.
    assert tls_get(port, "shop.example.com", certs["shop"][0])[0] == 200
    assert tls_get(port, "x.apps.example.com", certs["wild"][0])[0] == 200
    # An unknown name gets the default certificate.
    assert tls_get(port, "main.example.com", certs["main"][0])[0] == 200
    with pytest.raises(ssl.SSLCertVerificationError):
        tls_get(port, "unknown.example.com", certs["shop"][0])
    headers = json.loads(tls_get(port, "main.example.com", certs["main"][0], "/headers")[1])
    assert headers.get("X-Forwarded-Proto") == "https"


def test_an_rsa_certificate_serves_every_handshake_its_policy_allows(alb, backends, certs):
    # RSA keys sign (and, for TLS 1.2's RSA key exchange, decrypt) in OpenSSL, the rest of TLS runs in
    # BoringSSL: each client below checks the server's signature, so a wrong one fails its handshake.
    folder = certs["folder"]
    certs["main"] = make_cert(folder, "rsa", ["main.example.com"], rsa=True)
    port, backend = serve_https(alb, backends, certs, ("main", "shop"), policy="tls_cipher_policy_1_0",
                                additional=["shop"])
    assert tls_get(port, "main.example.com", certs["main"][0])[:2] == (200, "b1 /\n")
    assert s_client(port, "-tls1_2", "-sigalgs", "rsa_pss_rsae_sha256")
    assert s_client(port, "-tls1_2", "-sigalgs", "RSA+SHA384")
    assert s_client(port, "-tls1_2", "-cipher", "AES128-GCM-SHA256"), "RSA key exchange"
    assert s_client(port, "-tls1", "-cipher", "ECDHE-RSA-AES128-SHA:@SECLEVEL=0"), "TLS 1.0 signs MD5-SHA1"
    # An ECDSA certificate chosen by SNI beside the RSA default still signs with its own key.
    assert tls_get(port, "shop.example.com", certs["shop"][0])[0] == 200
    assert s_client(port, "-tls1_2", server_name="shop.example.com")

    alb.write("web.yaml", https_set(port, backend, {"main": certs["main"]}, policy="tls_cipher_policy_1_2_strict_with_1_3"))
    wait_for(lambda: s_client(port, "-tls1_3"), what="TLS 1.3 (RSA-PSS) after the policy change")
    assert tls_get(port, "main.example.com", certs["main"][0])[0] == 200


def test_the_policy_decides_versions_and_ciphers(alb, backends, certs):
    port, backend = serve_https(alb, backends, certs, policy="tls_cipher_policy_1_2_strict")
    assert s_client(port, "-tls1_2")
    assert not s_client(port, "-tls1_3"), "TLS 1.3 is outside tls_cipher_policy_1_2_strict"
    assert not s_client(port, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"), "TLS 1.1 is outside the policy"
    assert not s_client(port, "-tls1_2", "-cipher", "AES128-GCM-SHA256"), "strict allows ECDHE suites only"

    alb.write("web.yaml", https_set(port, backend, {"main": certs["main"]}, policy="tls_cipher_policy_1_2_strict_with_1_3"))
    wait_for(lambda: s_client(port, "-tls1_3"), what="TLS 1.3 after the policy change")


def test_a_bad_key_is_reported_and_the_last_good_certificate_keeps_serving(alb, backends, certs):
    port, backend = serve_https(alb, backends, certs)
    mismatched = (certs["main"][0], certs["shop"][1])
    alb.write("web.yaml", https_set(port, backend, {"main": mismatched}))
    synced = wait_for(lambda: alb.condition("Listener", "web", "Synced")["status"] == "False"
                      and alb.condition("Listener", "web", "Synced"), what="certificate refused")
    assert synced["reason"] == "CertificateInvalid"
    assert "does not match" in synced["message"]
    assert tls_get(port, "main.example.com", certs["main"][0])[0] == 200
    key_text = certs["shop"][1].read_text()
    key_body = "".join(line for line in key_text.splitlines() if "-----" not in line)
    for path in list(alb.status.rglob("*.yaml")) + [alb.status / "events.log"]:
        assert key_body[:40] not in path.read_text()
    assert key_body[:40] not in alb.logs()
    validate = alb.run_cli("validate", str(alb.manifests))
    assert validate.returncode == 1
    assert 'certificate "main": the private key does not match the certificate' in validate.stdout
    # At the field naming the key file, not the document's first line.
    text = (alb.manifests / "web.yaml").read_text()
    key_line = line_of(text, "privateKey: %s" % certs["shop"][1])
    key_column = text.splitlines()[key_line - 1].index("privateKey: ") + len("privateKey: ") + 1
    assert "web.yaml:%d:%d: error" % (key_line, key_column) in validate.stdout, validate.stdout


def test_rotating_a_certificate_file_applies_to_the_next_handshake(alb, backends, certs):
    port, backend = serve_https(alb, backends, certs)
    held = tls_connection(port, "main.example.com", certs["main"][0])
    _, _, before = tls_get(port, "main.example.com", certs["main"][0], conn=held)

    # A new key and certificate written over the same files (outside the manifest directory).
    new_folder = certs["folder"] / "new"
    new_folder.mkdir()
    new_cert, new_key = make_cert(new_folder, "main", ["main.example.com"])
    os.replace(new_key, certs["main"][1])
    os.replace(new_cert, certs["main"][0])
    wait_for(lambda: tls_get(port, "main.example.com", certs["main"][0])[2] != before, timeout=15,
             what="the new certificate on new handshakes")
    # The connection made before the rotation keeps working.
    status, body, still = tls_get(port, "main.example.com", certs["main"][0], conn=held)
    assert (status, still) == (200, before)
    held.close()


def test_garbage_instead_of_a_client_hello_disturbs_nobody(alb, backends, certs):
    port, backend = serve_https(alb, backends, certs)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        s.settimeout(5)
        try:
            answer = s.recv(100)
        except ConnectionResetError:
            answer = b""
        assert not answer.startswith(b"HTTP/1.1 200")
    assert tls_get(port, "main.example.com", certs["main"][0])[0] == 200


def curl(port, *args, server_name="main.example.com", cafile=None, path="/"):
    run = subprocess.run(["curl", "-sS", "--max-time", "10", "--resolve", "%s:%d:127.0.0.1" % (server_name, port),
                          "--cacert", str(cafile), *args, "https://%s:%d%s" % (server_name, port, path)],
                         capture_output=True, text=True, timeout=20)
    return run


def test_http2_is_offered_by_alpn_and_proxied_to_http1_backends(alb, backends, certs):
    port, backend = serve_https(alb, backends, certs)
    run = curl(port, "--http2", "-o", "/dev/null", "-w", "%{http_version} %{http_code}", cafile=certs["main"][0])
    assert run.stdout == "2 200", run.stdout + run.stderr
    # The backend's fields reach the HTTP/2 client in order, names in lowercase, values as a parsed head has them
    # (the block is made straight from the backend's lines); twice, the second time with the loop's field texts warm.
    for _ in range(2):
        run = curl(port, "--http2", "-s", "-D", "-", "-o", "/dev/null", cafile=certs["main"][0])
        lines = [line.strip() for line in run.stdout.splitlines() if line.strip()]
        assert lines[0] == "HTTP/2 200", run.stdout + run.stderr
        names = [line.split(":", 1)[0] for line in lines[1:]]
        assert names == ["server", "date", "content-type", "content-length", "x-backend"], run.stdout
        assert lines[1].startswith("server: demo-backend Python/"), run.stdout
        assert lines[3:] == ["content-type: text/plain", "content-length: 5", "x-backend: b1"], run.stdout
    run = curl(port, "--http2", "-d", "hello over h2", "-H", "Content-Type: text/plain", cafile=certs["main"][0])
    # POST /  on the demo backend echoes the body back (streamed chunked from an HTTP/2 DATA stream).
    assert run.stdout == "hello over h2", run.stdout + run.stderr
    # Many concurrent streams on few connections, all answered.
    load = subprocess.run(["h2load", "-n", "400", "-c", "4", "-m", "20", "https://127.0.0.1:%d/" % port],
                          capture_output=True, text=True, timeout=60)
    assert "400 succeeded, 0 failed, 0 errored" in load.stdout, load.stdout + load.stderr
    assert "status codes: 400 2xx" in load.stdout, load.stdout

    # http2: false offers HTTP/1.1 only.
    alb.write("web.yaml", https_set(port, backend, {"main": certs["main"]}).replace(
        "  protocol: HTTPS\n", "  protocol: HTTPS\n  http2: false\n"))
    wait_for(lambda: curl(port, "--http2", "-o", "/dev/null", "-w", "%{http_version}",
                          cafile=certs["main"][0]).stdout == "1.1", what="HTTP/1.1 only")


def test_an_http2_requests_cookie_fields_reach_the_backend_as_one_field(alb, backends, certs):
    # curl sends each -H Cookie as a field of its own over HTTP/2, as browsers may; an HTTP/1.1 request carries one
    # (RFC 9113 section 8.2.3), in the place of the first.
    port, _ = serve_https(alb, backends, certs)
    run = curl(port, "--http2", "-H", "Cookie: a=1", "-H", "Accept: */*", "-H", "Cookie: b=2", "-d", "",
               path="/headers", cafile=certs["main"][0])
    fields = json.loads(run.stdout)
    assert [value for name, value in fields if name == "cookie"] == ["a=1; b=2"], fields
    names = [name for name, _ in fields]
    assert names.index("cookie") < names.index("accept"), fields


def test_an_http2_request_whose_host_names_another_authority_is_refused(alb, backends, certs):
    # RFC 9113 section 8.3.1: the proxy routes and forwards by Host, which must not choose a target apart from
    # :authority. nghttp sends :authority from the URL and -H host as a field of its own.
    port, _ = serve_https(alb, backends, certs)
    url = "https://127.0.0.1:%d/" % port

    def nghttp(host):
        return subprocess.run(["nghttp", "-v", "-H", "host: " + host, url], capture_output=True, text=True, timeout=20)

    refused = nghttp("other.example")
    assert "recv RST_STREAM" in refused.stdout and "PROTOCOL_ERROR" in refused.stdout, refused.stdout
    assert ":status: 200" not in refused.stdout, refused.stdout
    same = nghttp("127.0.0.1:%d" % port)
    assert re.search(r"recv \(stream_id=\d+\) :status: 200", same.stdout), same.stdout


def test_an_http2_request_whose_authority_is_not_of_the_form_of_a_host_is_refused(alb, backends, certs):
    # As an HTTP/1 request's Host: uri-host [":" port], and no userinfo in :authority (RFC 9113 section 8.3.1).
    port, _ = serve_https(alb, backends, certs)
    url = "https://127.0.0.1:%d/" % port

    def nghttp(*headers):
        args = ["nghttp", "-v"] + ["-H" + header for header in headers] + [url]
        return subprocess.run(args, capture_output=True, text=True, timeout=20)

    for authority in ("a/b", "user@127.0.0.1", "a..b"):
        refused = nghttp(":authority: " + authority)
        assert "recv RST_STREAM" in refused.stdout and "PROTOCOL_ERROR" in refused.stdout, (authority, refused.stdout)
        assert ":status: 200" not in refused.stdout, refused.stdout
    good = nghttp(":authority: Main.Example.com:%d" % port)
    assert re.search(r"recv \(stream_id=\d+\) :status: 200", good.stdout), good.stdout


def test_an_http2_request_is_one_an_http1_backend_can_take(alb, backends, certs):
    # The path is visible ASCII (browsers' unencoded `{`, `|`, `^` included), the method a token and the field values
    # free of control bytes but HTAB, as an HTTP/1 request carries them: anything else resets the stream (nio-http2
    # takes them; such a request then waited for its timeout, or got a 502: the backend writer refused it). A value that
    # ends with SP or HTAB is malformed too (RFC 9113 section 8.2.1; an HTTP/1 backend would read it trimmed).
    port, _ = serve_https(alb, backends, certs)

    def nghttp(header):
        return subprocess.run(["nghttp", "-v", "-H", header, "https://127.0.0.1:%d/" % port],
                              capture_output=True, text=True, timeout=20)

    passed = nghttp(':path: /a{b}|c^d`e?q="x"<y>\\z')
    assert re.search(r"recv \(stream_id=\d+\) :status: 200", passed.stdout) and "b1 /a{b}|c^d`e" in passed.stdout, passed.stdout
    for header in (":path: /caf\u00e9", ":path: /index.html#.png", ":method: G(T", "x-a: a\x01b", "x-a: a\x7fb", "x-a: a ", "x-a: a\t"):
        refused = nghttp(header)
        assert "recv RST_STREAM" in refused.stdout and "PROTOCOL_ERROR" in refused.stdout, (header, refused.stdout)


def test_a_client_that_stalls_in_the_handshake_is_closed_by_the_header_timeout(alb, backends, certs):
    import time
    port, backend = serve_https(alb, backends, certs)
    with socket.create_connection(("127.0.0.1", port), timeout=20) as stalled:
        stalled.sendall(b"\x16\x03\x01\x00\xc8\x01")  # the start of a ClientHello, then nothing
        started = time.monotonic()
        try:
            data = stalled.recv(100)
        except ConnectionResetError:
            data = b""
        closed_after = time.monotonic() - started
        assert data == b"", "the listener closes without answering"
    assert 8 <= closed_after <= 15, closed_after  # the header timeout is 10 s
    assert tls_get(port, "main.example.com", certs["main"][0])[0] == 200


def test_the_access_log_names_the_protocol_and_tls_version(alb, backends, certs):
    backend = backends.start("b1")
    port = free_port()
    alb.write("web.yaml", https_set(port, backend, {"main": certs["main"]}, policy="tls_cipher_policy_1_2_strict_with_1_3"))
    log_path = alb.root / "access.log"
    alb.start("--access-log", str(log_path))
    alb.wait_state("web", "Running")
    assert curl(port, "--http2", "-o", "/dev/null", cafile=certs["main"][0]).returncode == 0
    assert curl(port, "--http1.1", "--tlsv1.2", "--tls-max", "1.2", "-o", "/dev/null", cafile=certs["main"][0]).returncode == 0
    records = wait_for(lambda: len(log_path.read_text().splitlines()) >= 2 and
                       [json.loads(line) for line in log_path.read_text().splitlines()], what="two log records")
    assert [(r["protocol"], r["tls_version"], r["sni"]) for r in records] == [
        ("HTTP/2", "TLSv1.3", "main.example.com"), ("HTTP/1.1", "TLSv1.2", "main.example.com")]
    # An ECDSA certificate under the strict policy: a TLS 1.3 suite, then an ECDHE-ECDSA one (OpenSSL names).
    assert records[0]["tls_cipher"] in ("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256")
    assert records[1]["tls_cipher"].startswith("ECDHE-ECDSA-"), records[1]


def make_client_ca(folder):
    """A CA, a client certificate it signed (CN=alice), and one it did not (CN=mallory)."""
    def run(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    run("req", "-x509", *ec, "-keyout", str(folder / "ca.key"), "-out", str(folder / "ca.crt"), "-days", "30",
        "-subj", "/CN=Test Client CA")
    (folder / "client.ext").write_text("basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n")
    run("req", *ec, "-keyout", str(folder / "alice.key"), "-out", str(folder / "alice.csr"), "-subj", "/O=Example/CN=alice")
    run("x509", "-req", "-in", str(folder / "alice.csr"), "-CA", str(folder / "ca.crt"), "-CAkey", str(folder / "ca.key"),
        "-CAcreateserial", "-out", str(folder / "alice.crt"), "-days", "30", "-extfile", str(folder / "client.ext"))
    run("req", "-x509", *ec, "-keyout", str(folder / "mallory.key"), "-out", str(folder / "mallory.crt"), "-days", "30",
        "-subj", "/CN=mallory")
    fingerprint = subprocess.run(["openssl", "x509", "-in", str(folder / "alice.crt"), "-noout", "-fingerprint", "-sha1"],
                                 check=True, capture_output=True, text=True).stdout
    return fingerprint.strip().split("=", 1)[1].replace(":", "").lower()


def test_mutual_tls_refuses_unknown_clients_and_forwards_the_certificate(alb, backends, certs):
    backend = backends.start("b1")
    port = free_port()
    folder = certs["folder"]
    fingerprint = make_client_ca(folder)
    text = https_set(port, backend, {"main": certs["main"]}, extra="""\
  mutualAuthentication: {enabled: true, ca: clients}
""").replace("headers: {xForwardedProto: true}", "headers: {xForwardedProto: true, clientCertSubjectDN: true, "
             "clientCertIssuerDN: true, clientCertFingerprint: true, clientCertClientVerify: true}")
    text += """---
apiVersion: alb/v1
kind: Certificate
metadata: {name: clients}
spec: {type: CA, certificate: %s}
""" % (folder / "ca.crt")
    alb.write("web.yaml", text)
    alb.start()
    alb.wait_state("web", "Running")
    cafile = certs["main"][0]

    assert curl(port, "-o", "/dev/null", cafile=cafile).returncode != 0, "no client certificate: refused"
    assert curl(port, "--cert", str(folder / "mallory.crt"), "--key", str(folder / "mallory.key"), "-o", "/dev/null",
                cafile=cafile).returncode != 0, "a certificate the CA did not sign: refused"
    for http in ("--http1.1", "--http2"):
        # Two requests on one connection: over HTTP/2 each is a stream of its own, and the second gets the
        # certificate the connection's first looked up.
        url = "https://main.example.com:%d/headers" % port
        run = subprocess.run(["curl", "-sS", http, "--max-time", "10", "--resolve", "main.example.com:%d:127.0.0.1" % port,
                              "--cacert", str(cafile), "--cert", str(folder / "alice.crt"), "--key", str(folder / "alice.key"),
                              "-H", "X-Forwarded-Clientcert-subjectdn: CN=forged", url, url + "?again"],
                             capture_output=True, text=True, timeout=20)
        decoder, text, answers = json.JSONDecoder(), run.stdout.strip(), []
        while text:
            headers, end = decoder.raw_decode(text)
            answers.append(headers)
            text = text[end:].strip()
        assert len(answers) == 2, run.stdout
        for headers in answers:
            assert headers["X-Forwarded-Clientcert-subjectdn"] == "CN=alice,O=Example", headers
            assert headers["X-Forwarded-Clientcert-issuerdn"] == "CN=Test Client CA"
            assert headers["X-Forwarded-Clientcert-fingerprint"] == fingerprint
            assert headers["X-Forwarded-Clientcert-clientverify"] == "SUCCESS"


def test_https_server_groups_are_reached_over_tls(alb, backends, certs):
    """An HTTP listener forwarding to a backend that speaks only TLS."""
    from conftest import get, manifest_set
    cert, key = certs["shop"]
    tls_backend = backends.start("secure", str(cert), str(key))
    port = free_port()
    text = manifest_set(port, [(tls_backend, 100)]).replace(
        "kind: ServerGroup\nmetadata: {name: pool}\nspec:\n", "kind: ServerGroup\nmetadata: {name: pool}\nspec:\n  protocol: HTTPS\n")
    assert "protocol: HTTPS" in text
    alb.write("web.yaml", text)
    alb.start()
    alb.wait_state("web", "Running")
    assert get(port, "/over-tls")[:2] == (200, "secure /over-tls\n")
    # Keep-alive pooling works over TLS too: a second request on a fresh client connection.
    assert get(port, "/again")[:2] == (200, "secure /again\n")


def test_rotating_a_certificate_under_http2_load_fails_no_request(alb, backends, certs):
    import signal
    import threading
    port, backend = serve_https(alb, backends, certs)
    before = tls_get(port, "main.example.com", certs["main"][0])[2]
    result = {}

    def load():  # bounded: 6 s, 4 connections, 10 streams each
        result["run"] = subprocess.run(["h2load", "-D", "6", "-c", "4", "-m", "10", "https://127.0.0.1:%d/" % port],
                                       capture_output=True, text=True, timeout=60)
    loader = threading.Thread(target=load)
    loader.start()
    import time
    time.sleep(1.5)
    new_folder = certs["folder"] / "rotated"
    new_folder.mkdir()
    new_cert, new_key = make_cert(new_folder, "main", ["main.example.com"])
    os.replace(new_key, certs["main"][1])
    os.replace(new_cert, certs["main"][0])
    alb.process.send_signal(signal.SIGHUP)  # a pass now rather than at the next rescan
    wait_for(lambda: tls_get(port, "main.example.com", certs["main"][0])[2] != before, what="rotated")
    loader.join(60)
    out = result["run"].stdout
    assert " 0 failed, 0 errored, 0 timeout" in out, out
    assert "succeeded" in out and "status codes:" in out and " 0 4xx, 0 5xx" in out, out


def test_an_idle_http2_connection_is_closed_after_the_idle_timeout(alb, backends, certs):
    import time
    port, _ = serve_https(alb, backends, certs, extra="  idleTimeout: 2\n")
    context = ssl.create_default_context(cafile=str(certs["main"][0]))
    context.set_alpn_protocols(["h2"])
    with context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=15),
                             server_hostname="main.example.com") as connection:
        assert connection.selected_alpn_protocol() == "h2"
        connection.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")  # empty SETTINGS
        started = time.monotonic()
        while True:
            try:
                if not connection.recv(4096):
                    break
            except (ConnectionResetError, ssl.SSLError):
                break
        closed_after = time.monotonic() - started
    assert 1.5 <= closed_after <= 6, closed_after


def test_a_drain_sends_http2_goaway_and_lets_the_open_stream_finish(alb, backends, certs):
    """SIGTERM with an HTTP/2 request in flight: the client gets GOAWAY (NO_ERROR, naming its stream) at
    once, then its response, then the connection closes and the process exits 0."""
    import signal
    import time
    port, _ = serve_https(alb, backends, certs)
    client = subprocess.Popen(["nghttp", "-v", "https://127.0.0.1:%d/slow?s=2" % port],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(0.8)  # the request is at the backend, which answers after 2 s
    alb.process.send_signal(signal.SIGTERM)
    out, _ = client.communicate(timeout=20)
    stream = re.search(r"send HEADERS frame <[^>]*stream_id=(\d+)>", out).group(1)
    goaway = out.index("recv GOAWAY frame")
    # First the announcement (the largest stream ID, and a PING), then the GOAWAY naming the stream.
    assert "(last_stream_id=2147483647, error_code=NO_ERROR" in out[goaway:goaway + 200], out
    assert "recv PING frame" in out[goaway:], out
    assert "(last_stream_id=%s, error_code=NO_ERROR" % stream in out[goaway:], out
    assert "recv DATA frame" in out[goaway:] and "processed=0" not in out, "no response after the GOAWAY: " + out
    assert client.returncode == 0, out
    assert alb.process.wait(timeout=20) == 0


QUIC_LISTENER = """---
apiVersion: alb/v1
kind: Listener
metadata: {name: h3}
spec:
  loadBalancer: lb
  protocol: QUIC
  port: %d
  certificates: {server: main}
  defaultAction:
    forwardGroup:
      serverGroups: [{name: pool}]
"""


def alt_svc(port, cafile, http2=False):
    """The Alt-Svc header of a GET over TLS (HTTP/1.1, or HTTP/2 through curl), or None."""
    if http2:
        run = subprocess.run(["curl", "-sS", "--http2", "--cacert", str(cafile), "-o", "/dev/null", "-D", "-",
                              "--resolve", "main.example.com:%d:127.0.0.1" % port,
                              "https://main.example.com:%d/" % port], capture_output=True, text=True, timeout=10)
        assert run.stdout.startswith("HTTP/2 200"), run.stdout + run.stderr
        found = [line.split(":", 1)[1].strip() for line in run.stdout.splitlines() if line.lower().startswith("alt-svc:")]
        return found[0] if found else None
    conn = tls_connection(port, "main.example.com", cafile)
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        response.read()
        assert response.status == 200
        return response.getheader("alt-svc")
    finally:
        conn.close()


def test_quic_upgrade_advertises_the_quic_listener_and_stops_when_switched_off(alb, backends, certs):
    backend = backends.start("b1")
    port, quic_port = free_port(), free_port()

    def manifests(enabled):
        upgrade = "  quicUpgrade: {enabled: %s, listener: h3}\n" % ("true" if enabled else "false")
        return https_set(port, backend, {"main": certs["main"]}, extra=upgrade) + QUIC_LISTENER % quic_port

    alb.write("web.yaml", manifests(True))
    alb.start()
    alb.wait_state("web", "Running")
    expected = 'h3=":%d"; ma=86400' % quic_port
    assert alt_svc(port, certs["main"][0]) == expected
    assert alt_svc(port, certs["main"][0], http2=True) == expected
    # Switched off in place: the listener keeps running, and the next response has no Alt-Svc.
    alb.write("web.yaml", manifests(False))
    wait_for(lambda: alt_svc(port, certs["main"][0]) is None, what="Alt-Svc gone")
    assert alt_svc(port, certs["main"][0], http2=True) is None
    assert alb.status_of("Listener", "web")["state"] == "Running"


def test_a_drain_during_the_tls_handshake_reaches_the_connection_after_it(alb, backends, certs):
    """SIGTERM while a client's TLS handshake has not begun (the listener offers h2 and http/1.1, so the
    HTTP side is chosen at the handshake's end): the client's HTTP/1.1 request is served saying
    `Connection: close` and the connection closes, instead of staying open until the drain's deadline."""
    import time
    port, _ = serve_https(alb, backends, certs)
    raw_socket = accepted_then_drained(alb, port)  # no ClientHello yet
    context = ssl.create_default_context(cafile=str(certs["main"][0]))
    context.set_alpn_protocols(["http/1.1"])
    tls = context.wrap_socket(raw_socket, server_hostname="main.example.com")
    tls.sendall(b"GET / HTTP/1.1\r\nHost: main.example.com\r\n\r\n")
    response = receive_until_close(tls)
    tls.close()
    assert_ok_saying_close(response)
    started = time.monotonic()
    assert alb.process.wait(timeout=10) == 0
    assert time.monotonic() - started < 5, "the drain waited for a connection it should have closed"
