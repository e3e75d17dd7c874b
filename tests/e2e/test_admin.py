"""The admin endpoint (`alb reconcile --admin`): probes and status over HTTP, loopback only by default."""
import json
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

from conftest import ALB, free_port, get, manifest_set, raw, wait_for


def fetch(port, path):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_healthz_readyz_and_status(alb, backends):
    admin = free_port()
    backend = backends.start("b1")
    web = free_port()
    alb.write("web.yaml", manifest_set(web, [(backend, 100)]))
    alb.start("--admin", "127.0.0.1:%d" % admin)
    wait_for(lambda: fetch(admin, "/healthz")[0] == 200, what="admin endpoint up")
    assert fetch(admin, "/healthz") == (200, "ok\n")
    wait_for(lambda: fetch(admin, "/readyz") == (200, "ready\n"), what="ready")
    status, body = fetch(admin, "/status")
    assert status == 200
    served = {(d["kind"], d["name"]): d for d in json.loads(body)}
    assert served[("Listener", "web")]["state"] == "Running"
    # The same documents as `alb status -o json` (stats move with every request: compare the rest).
    cli = {(d["kind"], d["name"]): d for d in json.loads(alb.run_cli("status", "-o", "json", "--status-dir",
                                                                     str(alb.status)).stdout)}
    for key, document in served.items():
        assert {k: v for k, v in document.items() if k != "stats"} == {k: v for k, v in cli[key].items() if k != "stats"}
    assert fetch(admin, "/nothing")[0] == 404

    # A listener that cannot bind: not ready, and the reason says why.
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    taken = holder.getsockname()[1]
    alb.write("api.yaml", manifest_set(taken, [(backend, 100)], listener="api", group="api-pool").replace(
        "apiVersion: alb/v1\nkind: LoadBalancer\nmetadata: {name: lb}\nspec: {address: 127.0.0.1}\n---\n", ""))
    wait_for(lambda: fetch(admin, "/readyz")[0] == 503, what="not ready")
    code, text = fetch(admin, "/readyz")
    assert "listener api:" in text and "BindFailed" in text, text
    holder.close()

    # Draining: not ready any more, while the drain lets requests finish.
    alb.process.send_signal(signal.SIGTERM)
    assert alb.process.wait(timeout=20) == 0


def test_the_admin_endpoint_closes_a_connection_the_client_did_not_keep(alb, backends):
    # HTTP/1.0 without keep-alive, `Connection: close`, or a request NIO's decoder refuses: answered, then closed, so a
    # probe that reads to the close (`printf ... | nc`, HTTP/1.0 health checkers) gets its answer at once. Until the
    # fourteenth session the connection stayed open until the client gave up.
    admin = free_port()
    alb.write("web.yaml", manifest_set(free_port(), [(backends.start("b1"), 100)]))
    alb.start("--admin", "127.0.0.1:%d" % admin)
    wait_for(lambda: fetch(admin, "/healthz")[0] == 200, what="admin endpoint up")
    for request, status in ((b"GET /healthz HTTP/1.0\r\n\r\n", b"HTTP/1.0 200 OK"),
                            (b"HEAD /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", b"HTTP/1.1 200 OK"),
                            (b"GET /nothing HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", b"HTTP/1.1 404 Not Found"),
                            (b"POST /readyz HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
                             b"HTTP/1.1 405 Method Not Allowed"),
                            (b"garbage\r\n\r\n", b"HTTP/1.1 400 Bad Request")):
        started = time.monotonic()
        answer = raw(admin, request, timeout=10)
        assert answer.startswith(status), (request, answer)
        assert b"\r\nconnection: close\r\n" in answer.lower(), (request, answer)
        assert time.monotonic() - started < 5, ("closed only by the client's timeout", request)
    # Keep-alive (HTTP/1.1 by default, HTTP/1.0 when asked) keeps the connection for the next request.
    with socket.create_connection(("127.0.0.1", admin), timeout=5) as connection:
        connection.sendall(b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        time.sleep(0.3)
        connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
        answered = b""
        while answered.count(b"ok\n") < 2:
            answered += connection.recv(65536)
    assert answered.startswith(b"HTTP/1.0 200 OK") and b"connection: keep-alive" in answered, answered
    assert b"HTTP/1.1 200 OK" in answered, answered


def test_a_remote_admin_address_needs_allow_remote(tmp_path):
    (tmp_path / "m").mkdir()
    run = subprocess.run([ALB, "reconcile", str(tmp_path / "m"), "--status-dir", str(tmp_path / "s"),
                          "--admin", "0.0.0.0:%d" % free_port()], capture_output=True, text=True, timeout=20)
    assert run.returncode != 0
    assert "not a loopback address" in run.stderr and "--admin-allow-remote" in run.stderr, run.stderr


# --- /metrics: a real Prometheus scrape, parsed by Prometheus' own Python parser ---------------------

def scrape(port):
    """The /metrics text and its samples as {(name, frozenset(labels.items())): value}."""
    from prometheus_client.parser import text_string_to_metric_families
    code, text = fetch(port, "/metrics")
    assert code == 200, text
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return text, samples


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())), 0.0)


def promtool_accepts(text):
    """`promtool check metrics` on the text when Debian's prometheus package is installed (else skipped)."""
    if shutil.which("promtool") is None:
        return True
    run = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stdout + run.stderr
    return True


def metrics_set(web, backend, broken, dead):
    return manifest_set(web, [(backend, 100)]) + """\
---
apiVersion: alb/v1
kind: ServerGroup
metadata: {name: dead-pool}
spec:
  scheduler: Wlc
  servers:
    - {address: 127.0.0.1, port: %d}
---
apiVersion: alb/v1
kind: Listener
metadata: {name: broken}
spec:
  loadBalancer: lb
  protocol: HTTP
  port: %d
  defaultAction:
    forwardGroup:
      serverGroups: [{name: dead-pool}]
""" % (dead, broken)


def test_metrics_count_exactly_what_was_served(alb, backends):
    admin, web, broken, dead = free_port(), free_port(), free_port(), free_port()
    backend = backends.start("b1")
    alb.write("web.yaml", metrics_set(web, backend, broken, dead))
    alb.start("--admin", "127.0.0.1:%d" % admin)
    wait_for(lambda: fetch(admin, "/readyz") == (200, "ready\n"), what="ready")

    text, before = scrape(admin)
    assert promtool_accepts(text)
    for _ in range(7):
        assert get(web, "/")[0] == 200
    for _ in range(2):
        assert get(broken, "/")[0] == 502
    assert raw(web, b"GET / HTTP/1.1\r\nHost: h\r\nX: \x01\r\n\r\n").startswith(b"HTTP/1.1 400")
    text, after = scrape(admin)
    assert promtool_accepts(text)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    web_2xx = dict(listener="web", protocol="HTTP/1.1", code_class="2xx")
    assert delta("alb_listener_requests_total", **web_2xx) == 7
    assert delta("alb_listener_requests_total", listener="web", protocol="HTTP/1.1", code_class="4xx") == 1
    assert delta("alb_listener_requests_total", listener="broken", protocol="HTTP/1.1", code_class="5xx") == 2
    # Durations are of requests answered after their head: the 400 refused the head itself.
    assert delta("alb_listener_request_duration_seconds_count", listener="web") == 7
    assert delta("alb_listener_request_duration_seconds_bucket", listener="web", le="+Inf") == 7
    assert delta("alb_listener_connections_total", listener="web") == 8  # one per request: get() closes
    assert delta("alb_listener_rejected_connections_total", listener="web", reason="bad_request") == 1
    assert delta("alb_listener_rejected_connections_total", listener="web", reason="connection_limit") == 0
    assert delta("alb_listener_received_bytes_total", listener="web") >= 8 * len("GET / HTTP/1.1\r\n\r\n")
    assert delta("alb_listener_sent_bytes_total", listener="web") >= 7 * len("HTTP/1.1 200 OK\r\n\r\nb1")
    assert value(after, "alb_listener_active_connections", listener="web") == 0
    server = "127.0.0.1:%d" % backend
    assert delta("alb_server_request_duration_seconds_count", group="pool", server=server) == 7
    assert value(after, "alb_server_health", group="pool", server=server, state="Unchecked") == 1
    assert value(after, "alb_server_health", group="pool", server=server, state="Healthy") == 0
    assert delta("alb_server_connect_failures_total", group="dead-pool", server="127.0.0.1:%d" % dead) == 2
    assert value(after, "alb_server_active_requests", group="dead-pool", server="127.0.0.1:%d" % dead) == 0
    # Reconciler metrics (swift-metrics through swift-prometheus).
    assert value(after, "alb_reconciler_passes_total") >= 1
    assert value(after, "alb_reconciler_pass_duration_seconds_count") == value(after, "alb_reconciler_passes_total")
    assert value(after, "alb_reconciler_resources", kind="Listener", condition="Ready", status="True") == 2
    assert value(after, "alb_reconciler_manifest_errors") == 0
    assert abs(value(after, "alb_reconciler_last_success_timestamp_seconds") - time.time()) < 60
    # Bounded labels: no client address, path or port of a client in any label.
    for (name, labels) in after:
        for key, label in labels:
            assert key in {"listener", "protocol", "code_class", "reason", "le", "group", "server", "state",
                           "kind", "condition", "status", "version"}, (name, key)

    # A manifest error shows, and the last successful pass stops moving while passes go on.
    alb.write("bad.yaml", "apiVersion: alb/v1\nkind: Listener\nmetadata: {name: bad}\nspec: {port: 0}\n")
    wait_for(lambda: value(scrape(admin)[1], "alb_reconciler_manifest_errors") >= 1, what="manifest error counted")
    _, errored = scrape(admin)
    alb.process.send_signal(signal.SIGHUP)
    wait_for(lambda: value(scrape(admin)[1], "alb_reconciler_passes_total") > value(errored, "alb_reconciler_passes_total"),
             what="another pass")
    assert (value(scrape(admin)[1], "alb_reconciler_last_success_timestamp_seconds")
            == value(errored, "alb_reconciler_last_success_timestamp_seconds"))


def test_the_release_is_printed_logged_and_exported(alb, backends):
    """`alb --version` prints the release; the reconciler's start line and `alb_build_info` say the same."""
    run = subprocess.run([ALB, "--version"], capture_output=True, text=True, timeout=30)
    assert run.returncode == 0 and re.fullmatch(r"\d+\.\d+\.\d+\n", run.stdout), (run.returncode, run.stdout, run.stderr)
    version = run.stdout.strip()
    admin, web = free_port(), free_port()
    alb.write("web.yaml", manifest_set(web, [(backends.start("b1"), 100)]))
    alb.start("--admin", "127.0.0.1:%d" % admin)
    wait_for(lambda: fetch(admin, "/readyz") == (200, "ready\n"), what="ready")
    assert 'msg="reconciler starting" version=%s ' % version in alb.logs(), alb.logs()
    text, samples = scrape(admin)
    assert value(samples, "alb_build_info", version=version) == 1
    assert promtool_accepts(text)


def test_readyz_goes_from_503_to_200_when_the_start_completes(alb, backends):
    admin, web = free_port(), free_port()
    backend = backends.start("b1")
    holder = socket.socket()
    holder.bind(("127.0.0.1", web))
    holder.listen()
    alb.write("web.yaml", manifest_set(web, [(backend, 100)]))
    alb.start("--admin", "127.0.0.1:%d" % admin)
    wait_for(lambda: fetch(admin, "/healthz")[0] == 200, what="admin endpoint up")
    # Not ready from the first answer on: before the first pass, then because the listener cannot bind.
    code, text = fetch(admin, "/readyz")
    assert code == 503, text
    wait_for(lambda: "listener web: Failed (BindFailed)" in fetch(admin, "/readyz")[1], what="the reason")
    assert fetch(admin, "/readyz")[0] == 503
    holder.close()
    wait_for(lambda: fetch(admin, "/readyz") == (200, "ready\n"), timeout=20, what="ready once the port is free")


def test_the_admin_port_is_no_listeners(alb, backends, tmp_path):
    admin = free_port()
    backend = backends.start("b1")
    # Claimed by the manifests at start-up: a clear error, not a race for the bind.
    alb.write("web.yaml", manifest_set(admin, [(backend, 100)]))
    run = subprocess.run([ALB, "reconcile", str(alb.manifests), "--status-dir", str(tmp_path / "s1"),
                          "--admin", "127.0.0.1:%d" % admin], capture_output=True, text=True, timeout=20)
    assert run.returncode == 1
    assert "--admin 127.0.0.1:%d is also a listener's address" % admin in run.stderr, run.stderr
    assert "listener web" in run.stderr, run.stderr

    # Claimed later: that listener fails with the reason, the admin endpoint keeps answering.
    web = free_port()
    alb.write("web.yaml", manifest_set(web, [(backend, 100)]))
    alb.start("--admin", "127.0.0.1:%d" % admin)
    wait_for(lambda: fetch(admin, "/readyz") == (200, "ready\n"), what="ready")
    alb.write("api.yaml", manifest_set(admin, [(backend, 100)], listener="api", group="api-pool").replace(
        "apiVersion: alb/v1\nkind: LoadBalancer\nmetadata: {name: lb}\nspec: {address: 127.0.0.1}\n---\n", ""))
    ready = wait_for(lambda: (alb.condition("Listener", "api", "Ready") or {}).get("status") == "False"
                     and alb.condition("Listener", "api", "Ready"), what="listener refused")
    assert ready["reason"] == "BindFailed"
    assert "the admin endpoint (--admin 127.0.0.1:%d)" % admin in ready["message"], ready
    assert fetch(admin, "/healthz") == (200, "ok\n")
    code, text = fetch(admin, "/readyz")
    assert code == 503 and "admin endpoint" in text, text


def test_no_key_or_certificate_content_in_status_or_metrics(alb, backends, tmp_path):
    from test_https import https_set, make_cert
    admin, web = free_port(), free_port()
    backend = backends.start("b1")
    cert, key = make_cert(tmp_path, "main", ["main.example.com"])
    alb.write("web.yaml", https_set(web, backend, {"main": (cert, key)}))
    alb.start("--admin", "127.0.0.1:%d" % admin)
    wait_for(lambda: fetch(admin, "/readyz") == (200, "ready\n"), what="ready")
    exposed = fetch(admin, "/status")[1] + scrape(admin)[0]
    assert '"Certificate"' in exposed  # the certificate is listed...
    for pem in (cert.read_text(), key.read_text()):
        body = [line for line in pem.splitlines() if "-----" not in line]
        for line in body:
            assert line[:32] not in exposed  # ...but none of its PEM content
    assert "PRIVATE KEY" not in exposed and "BEGIN CERTIFICATE" not in exposed
