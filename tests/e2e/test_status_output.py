"""`alb status` shows the same full document as YAML and JSON, with typed values, and sane times."""
import json

import yaml

from conftest import free_port, manifest_set


def test_yaml_and_json_carry_the_same_full_documents(alb, backends):
    b1 = backends.start("b1")
    port = free_port()
    alb.write("web.yaml", manifest_set(port, [(b1, 100)], idle=20))
    alb.start()
    alb.wait_state("web", "Running")

    as_yaml = alb.run_cli("status", "--status-dir", str(alb.status), "-o", "yaml")
    as_json = alb.run_cli("status", "--status-dir", str(alb.status), "-o", "json")
    assert as_yaml.returncode == 0 and as_json.returncode == 0
    documents = list(yaml.safe_load_all(as_yaml.stdout))
    assert len(documents) == 1 and isinstance(documents[0], list)
    from_yaml, from_json = documents[0], json.loads(as_json.stdout)
    # Timestamps are text in JSON and dates in YAML; everything else is identical.
    normalize = lambda value: json.loads(json.dumps(value, default=lambda d: d.strftime("%Y-%m-%dT%H:%M:%SZ")))
    assert normalize(from_yaml) == from_json
    web = next(d for d in from_json if d["kind"] == "Listener")
    assert web["live"]["boundAddress"] == "127.0.0.1:%d" % port
    assert web["live"]["port"] == port and web["live"]["idleTimeout"] == 20
    assert web["live"]["clientIp"]["enabled"] is False
    assert web["live"]["bindAddress"] == "127.0.0.1"
    assert isinstance(web["generation"], int) and "createdAt" in web
    # The status file on disk is that same document.
    assert normalize(alb.status_of("Listener", "web")) == web

    table = alb.run_cli("status", "--status-dir", str(alb.status)).stdout.splitlines()
    assert table[0].split()[:7] == ["KIND", "NAME", "STATE", "READY", "ADDRESS", "AGE", "LAST"]
    row = next(line for line in table if line.startswith("Listener"))
    assert "127.0.0.1:%d" % port in row and " ago" in row


def test_event_times_never_go_backwards(alb, backends):
    b1 = backends.start("b1")
    ports = [free_port() for _ in range(3)]
    alb.write("web.yaml", manifest_set(ports[0], [(b1, 100)]))
    alb.start()
    alb.wait_state("web", "Running")
    for port in ports[1:]:
        alb.write("web.yaml", manifest_set(port, [(b1, 100)]))
        alb.wait_state("web", "Running")
    times = [event["time"] for event in alb.events()]
    assert len(times) >= 4 and times == sorted(times)
