"""The admin endpoint (`alb reconcile --admin`): probes and status over HTTP, loopback only by default."""
import json
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

from conftest import ALB, free_port, manifest_set, wait_for


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


def test_a_remote_admin_address_needs_allow_remote(tmp_path):
    (tmp_path / "m").mkdir()
    run = subprocess.run([ALB, "reconcile", str(tmp_path / "m"), "--status-dir", str(tmp_path / "s"),
                          "--admin", "0.0.0.0:%d" % free_port()], capture_output=True, text=True, timeout=20)
    assert run.returncode != 0
    assert "not a loopback address" in run.stderr and "--admin-allow-remote" in run.stderr, run.stderr
