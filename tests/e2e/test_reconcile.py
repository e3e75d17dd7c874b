"""The reconcile loop end to end: manifests in, a serving listener and status files out."""
import http.client
import signal
import subprocess
import time

from conftest import ALB, free_port, get, line_of, manifest_set, refused, serve_web, wait_for


def test_listener_serves_and_reports_running(alb, backends):
    b1, b2 = backends.start("b1"), backends.start("b2")
    port = free_port()
    text = manifest_set(port, [(b1, 100), (b2, 100)])
    alb.write("web.yaml", text)
    alb.start()
    status = alb.wait_state("web", "Running")
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Valid"]["status"] == "True"
    assert conditions["Synced"]["status"] == "True"
    assert conditions["Ready"]["status"] == "True"
    assert conditions["Ready"]["message"] == "listening on 127.0.0.1:%d" % port
    assert status["source"].endswith("web.yaml:%d" % line_of(text, "kind: Listener", -1))
    assert status["live"]["port"] == port
    seen = {get(port)[1].split()[0] for _ in range(4)}
    assert seen == {"b1", "b2"}
    transitions = [(t["from"], t["to"]) for t in status["transitions"]]
    assert transitions == [("Stopped", "Configuring"), ("Configuring", "Running")]
    table = alb.run_cli("status", "--status-dir", str(alb.status))
    assert table.returncode == 0
    assert any(line.split()[:4] == ["Listener", "web", "Running", "True"] for line in table.stdout.splitlines())


def test_in_place_update_keeps_keepalive_connection(alb, backends):
    b1, b2 = backends.start("b1"), backends.start("b2")
    port = free_port()
    alb.write("web.yaml", manifest_set(port, [(b1, 100)]))
    alb.start()
    alb.wait_state("web", "Running")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", "/one")
    first = conn.getresponse()
    assert first.read().decode() == "b1 /one\n"
    sock = conn.sock
    generation = alb.status_of("Listener", "web")["generation"]

    alb.write("web.yaml", manifest_set(port, [(b2, 100)], idle=30, request_timeout=20))
    wait_for(lambda: alb.status_of("Listener", "web")["live"]["idleTimeout"] == 30, what="idleTimeout 30 live")
    # The same TCP connection keeps working and the new membership applies to its next request.
    conn.request("GET", "/two")
    second = conn.getresponse()
    assert second.read().decode() == "b2 /two\n"
    assert conn.sock is sock
    status = alb.status_of("Listener", "web")
    assert status["generation"] == generation + 1
    assert status["state"] == "Running"
    assert [e["action"] for e in alb.events() if e["name"] == "web"].count("update") == 1
    conn.close()


def test_stop_and_start_pass_through_configuring(alb, backends):
    port, b1 = serve_web(alb, backends)
    held = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    held.request("GET", "/")
    held.getresponse().read()

    alb.write("web.yaml", manifest_set(port, [(b1, 100)], state="Stopped"))
    alb.wait_state("web", "Stopped")
    assert refused(port)
    # Stopping interrupts established connections too.
    try:
        held.request("GET", "/")
        held.getresponse()
        interrupted = False
    except (ConnectionError, http.client.HTTPException, OSError):
        interrupted = True
    assert interrupted

    alb.write("web.yaml", manifest_set(port, [(b1, 100)]))
    alb.wait_state("web", "Running")
    assert get(port)[0] == 200
    transitions = [(t["from"], t["to"]) for t in alb.status_of("Listener", "web")["transitions"]]
    assert transitions[-4:] == [("Running", "Configuring"), ("Configuring", "Stopped"),
                                ("Stopped", "Configuring"), ("Configuring", "Running")]


def test_port_change_replaces_without_gap(alb, backends):
    b1 = backends.start("b1")
    old, new = free_port(), free_port()
    alb.write("web.yaml", manifest_set(old, [(b1, 100)]))
    alb.start()
    alb.wait_state("web", "Running")
    alb.write("web.yaml", manifest_set(new, [(b1, 100)]))
    wait_for(lambda: alb.status_of("Listener", "web")["live"]["port"] == new, what="new port live")
    assert get(new)[0] == 200
    assert refused(old)
    replace = [e for e in alb.events() if e["action"] == "replace"]
    assert replace and "create before delete" in replace[-1]["message"]


def test_deleting_manifest_closes_listener_and_removes_status(alb, backends):
    b1 = backends.start("b1")
    port, other = free_port(), free_port()
    alb.write("web.yaml", manifest_set(port, [(b1, 100)]))
    alb.write("other.yaml", manifest_set(other, [(b1, 100)], listener="other", group="pool2")
              .replace("name: lb}", "name: lb2}"))
    alb.start()
    alb.wait_state("web", "Running")
    alb.wait_state("other", "Running")
    alb.remove("web.yaml")
    wait_for(lambda: alb.status_of("Listener", "web") is None, what="status file removed")
    assert refused(port)
    assert get(other)[0] == 200


def test_invalid_edit_keeps_last_good_configuration(alb, backends):
    port, b1 = serve_web(alb, backends)
    text = manifest_set(70000, [(b1, 100)])
    alb.write("web.yaml", text)
    wait_for(lambda: alb.condition("Listener", "web", "Valid")["status"] == "False", what="Valid False")
    valid = alb.condition("Listener", "web", "Valid")
    synced = alb.condition("Listener", "web", "Synced")
    assert synced["status"] == "False"
    assert "web.yaml:%d:9:" % line_of(text, "port: 70000") in valid["message"]
    assert "70000" in valid["message"]
    status = alb.status_of("Listener", "web")
    assert status["lastAttempt"]["generation"] == status["generation"]
    assert status["live"]["port"] == port
    assert get(port)[0] == 200

    # A typo'd field is reported the same way.
    alb.write("web.yaml", manifest_set(port, [(b1, 100)]).replace("idleTimeout:", "idleTimout:"))
    wait_for(lambda: "unknown field" in alb.condition("Listener", "web", "Valid")["message"], what="unknown field")
    assert get(port)[0] == 200

    # Fixing it clears the error.
    alb.write("web.yaml", manifest_set(port, [(b1, 100)], idle=20))
    wait_for(lambda: alb.condition("Listener", "web", "Synced")["status"] == "True", what="Synced again")
    assert "lastAttempt" not in alb.status_of("Listener", "web")


def test_unparsable_file_deletes_nothing(alb, backends):
    port, b1 = serve_web(alb, backends)
    alb.write("web.yaml", "apiVersion: alb/v1\nkind: [unclosed\n")
    wait_for(lambda: alb.condition("Listener", "web", "Valid")["reason"] == "ParseError", what="ParseError")
    assert get(port)[0] == 200
    assert alb.status_of("Listener", "web")["state"] == "Running"


def test_a_typo_in_a_documents_kind_or_name_deletes_nothing(alb, backends):
    # Which resource such a document meant cannot be known, so its file keeps what it defined at its last good read,
    # as an unparsable file does. Until the fourteenth session the listener was deleted a second later.
    port, b1 = serve_web(alb, backends)
    good = manifest_set(port, [(b1, 100)])  # what serve_web wrote
    for typo in (good.replace("kind: Listener", "kind: Listner"), good.replace("name: web}", "name: Web}"),
                 good.replace("metadata: {name: web}", "metadata: {nam: web}")):
        assert typo != good
        alb.write("web.yaml", typo)
        wait_for(lambda: alb.condition("Listener", "web", "Valid")["status"] == "False", what="the typo reported")
        time.sleep(2.5)  # past the window in which a vanished resource is kept anyway
        assert get(port)[0] == 200, typo
        assert alb.status_of("Listener", "web")["state"] == "Running"
        alb.write("web.yaml", good)
        wait_for(lambda: alb.condition("Listener", "web", "Valid")["status"] == "True", what="fixed")
    # Deleting the document for real still deletes the listener.
    alb.write("web.yaml", good.rsplit("---\n", 1)[0])
    wait_for(lambda: refused(port), timeout=15, what="listener removed")


def test_why_a_manifest_was_not_applied_is_logged_and_in_events_once(alb, backends):
    # Until the fourteenth session only the status file and `alb validate` said it; a broken new file, which
    # belongs to no resource, said it nowhere.
    b1 = backends.start("b1")
    port = free_port()
    alb.write("web.yaml", manifest_set(port, [(b1, 100)], idle=0))
    alb.write("broken.yaml", "kind: [\n")
    alb.start()
    wait_for(lambda: "manifest invalid" in alb.logs() and "manifest file not applied" in alb.logs(), what="the log lines")
    logs = alb.logs()
    assert "spec.idleTimeout: 0 is out of range" in logs and "broken.yaml:2:1: error: invalid YAML" in logs, logs
    wait_for(lambda: [e for e in alb.events() if e["action"] == "invalid" and e["name"] == "web"], what="the event")
    alb.write("web.yaml", manifest_set(port, [(b1, 100)]))
    alb.wait_state("web", "Running")
    wait_for(lambda: "manifest valid again" in alb.logs(), what="valid again")
    logs = alb.logs()
    assert logs.count("spec.idleTimeout: 0 is out of range") == 1 and logs.count("manifest file not applied") == 1, logs


def test_port_taken_by_another_process_fails_then_recovers(alb, backends):
    b1 = backends.start("b1")
    blocker = __import__("socket").socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    alb.write("web.yaml", manifest_set(port, [(b1, 100)]))
    alb.start()
    status = alb.wait_state("web", "Failed")
    ready = {c["type"]: c for c in status["conditions"]}["Ready"]
    assert ready["reason"] == "BindFailed"
    assert "Address already in use" in ready["message"]
    blocker.close()
    alb.wait_state("web", "Running", timeout=15)
    assert get(port)[0] == 200


def test_listeners_starting_together_one_on_a_taken_port_fails_alone(alb, backends):
    # The first pass binds its listeners together: the one whose port another process holds fails on its
    # own, the others run and share their server group.
    b1, b2 = backends.start("b1"), backends.start("b2")
    blocker = __import__("socket").socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    taken = blocker.getsockname()[1]
    ports = [free_port() for _ in range(6)]
    alb.write("base.yaml", manifest_set(ports[0], [(b1, 100), (b2, 100)], listener="l0"))
    for i, port in enumerate(ports[1:] + [taken], start=1):
        alb.write("l%d.yaml" % i, """\
apiVersion: alb/v1
kind: Listener
metadata: {name: l%d}
spec:
  loadBalancer: lb
  protocol: HTTP
  port: %d
  defaultAction: {forwardGroup: {serverGroups: [{name: pool}]}}
""" % (i, port))
    alb.start()
    failed = alb.wait_state("l6", "Failed")
    ready = {c["type"]: c for c in failed["conditions"]}["Ready"]
    assert ready["reason"] == "BindFailed"
    assert "Address already in use" in ready["message"]
    for i in range(6):
        alb.wait_state("l%d" % i, "Running")
    # One round robin for the group however many listeners forward to it.
    seen = [get(port)[1].split()[0] for port in ports]
    assert sorted(seen) == ["b1"] * 3 + ["b2"] * 3, seen
    blocker.close()
    alb.wait_state("l6", "Running", timeout=15)
    assert get(taken)[0] == 200


def test_plan_reports_changes_and_nothing_after_reconcile(alb, backends):
    b1 = backends.start("b1")
    port = free_port()
    alb.write("web.yaml", manifest_set(port, [(b1, 100)]))
    plan = alb.run_cli("plan", str(alb.manifests), "--status-dir", str(alb.status))
    assert plan.returncode == 2
    assert "+ create Listener/web" in plan.stdout
    alb.start()
    alb.wait_state("web", "Running")
    plan = alb.run_cli("plan", str(alb.manifests), "--status-dir", str(alb.status))
    assert plan.returncode == 0, plan.stdout + plan.stderr
    alb.stop()
    alb.write("web.yaml", manifest_set(port, [(b1, 100)], idle=42))
    plan = alb.run_cli("plan", str(alb.manifests), "--status-dir", str(alb.status))
    assert plan.returncode == 2
    assert "~ update Listener/web" in plan.stdout
    assert "idleTimeout: 15 -> 42" in plan.stdout
    # A clean exit left the listener Stopped, so a reconcile would start it again.
    assert "> start Listener/web" in plan.stdout
    alb.write("web.yaml", manifest_set(free_port(), [(b1, 100)], state="Stopped"))
    plan = alb.run_cli("plan", str(alb.manifests), "--status-dir", str(alb.status))
    assert "replace Listener/web (port is immutable; delete before create)" in plan.stdout
    assert ". stop Listener/web" not in plan.stdout  # it is stopped already


def test_sigterm_drains_and_exits_zero(alb, backends):
    port, b1 = serve_web(alb, backends)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/slow?s=1")
    time.sleep(0.2)
    alb.process.send_signal(signal.SIGTERM)
    response = conn.getresponse()
    assert response.status == 200 and response.read() == b"b1 slow\n"
    assert alb.process.wait(timeout=20) == 0


def test_a_second_sigterm_exits_at_once_without_waiting_for_the_drain(alb, backends):
    port, b1 = serve_web(alb, backends)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/slow?s=15")  # longer than the test waits, shorter than the 30 s drain
    time.sleep(0.3)
    alb.process.send_signal(signal.SIGTERM)
    wait_for(lambda: "draining before exit" in alb.logs(), what="the drain under way")
    time.sleep(0.5)
    assert alb.process.poll() is None, "the first SIGTERM drains: the request is in flight"
    started = time.monotonic()
    alb.process.send_signal(signal.SIGTERM)
    assert alb.process.wait(timeout=10) == 1
    assert time.monotonic() - started < 5
    assert "second termination signal: exiting now" in alb.logs()


def test_restart_after_kill_restores_listeners_and_generation(alb, backends):
    port, b1 = serve_web(alb, backends)
    alb.write("web.yaml", manifest_set(port, [(b1, 100)], idle=20))
    wait_for(lambda: alb.status_of("Listener", "web")["generation"] == 2, what="generation 2")
    alb.stop(signal.SIGKILL)
    assert refused(port)
    alb.start()
    wait_for(lambda: get(port)[0] == 200, what="serving after restart")
    status = alb.wait_state("web", "Running")
    assert status["generation"] == 2
    assert status["live"]["idleTimeout"] == 20


def test_after_a_restart_the_resources_of_a_file_that_no_longer_parses_are_reported_not_forgotten(alb, backends):
    # The status files say which file defined what. Until the sixteenth session a fresh process, knowing no
    # last good parse, dropped these resources' status files: `alb status` no longer listed the listener.
    port, b1 = serve_web(alb, backends)
    good = manifest_set(port, [(b1, 100)])  # what serve_web wrote
    alb.stop()
    alb.write("web.yaml", good + "    port: [\n")
    alb.start()
    status = alb.wait_state("web", "Failed")
    valid = alb.condition("Listener", "web", "Valid")
    assert valid["status"] == "False" and valid["reason"] == "ParseError", valid
    assert "web.yaml" in valid["message"] and "invalid YAML" in valid["message"], valid
    assert "live" not in status, status  # nothing serves it in this process
    assert alb.condition("ServerGroup", "pool", "Valid")["reason"] == "ParseError"
    listed = alb.run_cli("status", "--status-dir", str(alb.status))
    assert "web" in listed.stdout and "Failed" in listed.stdout, listed.stdout
    assert refused(port)
    alb.write("web.yaml", good)
    alb.wait_state("web", "Running")
    assert get(port)[0] == 200


def test_a_status_directory_removed_under_the_reconciler_is_written_again_and_still_owned(alb, backends):
    # Until the sixteenth session only the files of later changes came back: no .lock (so `alb status` refused the
    # directory and a second `alb reconcile` could start on it), no events.log, no status of unchanged resources.
    import shutil
    port, b1 = serve_web(alb, backends)
    shutil.rmtree(alb.status)
    alb.write("web.yaml", manifest_set(port, [(b1, 100)], idle=20))  # any pass notices
    wait_for(lambda: (alb.status_of("ServerGroup", "pool") or {}).get("conditions"), what="the group's status back")
    assert alb.wait_state("web", "Running")["live"]["idleTimeout"] == 20
    listed = alb.run_cli("status", "--status-dir", str(alb.status))
    assert listed.returncode == 0 and "web" in listed.stdout and "lb" in listed.stdout, listed
    second = alb.run_cli("reconcile", str(alb.manifests), "--status-dir", str(alb.status))
    assert second.returncode == 1 and "in use by another" in second.stderr, second
    assert any(event["action"] == "update" for event in alb.events()), alb.events()
    assert "the status directory was removed; writing it again" in alb.logs()
    assert get(port)[0] == 200


def test_sighup_forces_reconcile_without_watch(tmp_path, backends):
    b1 = backends.start("b1")
    port = free_port()
    manifests, status = tmp_path / "m", tmp_path / "s"
    manifests.mkdir()
    (manifests / "web.yaml").write_text(manifest_set(port, [(b1, 100)]))
    process = subprocess.Popen([ALB, "reconcile", str(manifests), "--status-dir", str(status)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: get(port)[0] == 200, what="serving")
        new = free_port()
        (manifests / "web.yaml").write_text(manifest_set(new, [(b1, 100)]))
        time.sleep(0.5)
        assert get(port)[0] == 200  # not watching: nothing changes yet
        process.send_signal(signal.SIGHUP)
        wait_for(lambda: get(new)[0] == 200, what="new port after SIGHUP")
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0


def test_status_dir_inside_manifests_is_refused(tmp_path):
    (tmp_path / "m").mkdir()
    result = subprocess.run([ALB, "reconcile", str(tmp_path / "m"), "--status-dir", str(tmp_path / "m/status")],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "must be outside the manifest directory" in result.stderr


def test_second_listener_on_a_taken_port_is_refused_and_the_first_keeps_serving(alb, backends):
    port, b1 = serve_web(alb, backends)
    alb.write("clash.yaml", """\
apiVersion: alb/v1
kind: Listener
metadata: {name: clash}
spec:
  loadBalancer: lb
  protocol: HTTP
  port: %d
  defaultAction: {forwardGroup: {serverGroups: [{name: pool}]}}
""" % port)
    wait_for(lambda: (alb.condition("Listener", "clash", "Valid") or {}).get("reason") == "PortConflict",
             what="PortConflict on the new listener")
    message = alb.condition("Listener", "clash", "Valid")["message"]
    assert "clash.yaml:7:9: error: spec.port: port %d conflicts with Listener \"web\"" % port in message
    assert alb.status_of("Listener", "clash")["state"] == "Failed"
    assert get(port)[1].startswith("b1")
    assert alb.status_of("Listener", "web")["state"] == "Running"


def test_hostile_manifest_while_running_is_reported_and_nothing_else_changes(alb, backends):
    port, b1 = serve_web(alb, backends)
    bomb = 'a: &a ["x","x","x","x","x","x","x","x","x"]\n'
    previous = "a"
    for name in "bcdefghi":
        bomb += "%s: &%s [%s]\n" % (name, name, ",".join(["*" + previous] * 9))
        previous = name
    alb.write("bomb.yaml", bomb)
    alb.write("huge.yaml", "# " + "x" * (2 << 20) + "\n")
    time.sleep(1)
    assert alb.process.poll() is None
    assert get(port)[0] == 200
    assert alb.status_of("Listener", "web")["state"] == "Running"
    validate = alb.run_cli("validate", str(alb.manifests))
    assert "bomb.yaml:2:8: error: YAML aliases are not supported" in validate.stdout
    assert "huge.yaml:1:1: error: file is too large (more than 1048576 bytes)" in validate.stdout


def test_second_reconciler_on_the_same_status_directory_is_refused(alb):
    alb.start()
    wait_for(lambda: (alb.status / ".lock").exists(), what="lock file")
    second = alb.run_cli("reconcile", str(alb.manifests), "--status-dir", str(alb.status))
    assert second.returncode == 1
    assert "is in use by another `alb reconcile`" in second.stderr
    assert alb.process.poll() is None
