"""Active health checks with real backends: a dead server leaves rotation and comes back; none left is 503."""
import collections
import time

import demo_backend
from conftest import free_port, get, manifest_set, wait_for

CHECK = "  healthCheck: {enabled: true, path: /, method: GET, interval: 1, timeout: 1, healthyThreshold: 2, unhealthyThreshold: 2}\n"


def serve(alb, backends, count=2):
    ports = [backends.start("b%d" % (i + 1)) for i in range(count)]
    port = free_port()
    text = manifest_set(port, [(p, 100) for p in ports]).replace("spec:\n  servers:", "spec:\n" + CHECK + "  servers:", 1)
    alb.write("web.yaml", text)
    alb.start()
    alb.wait_state("web", "Running")
    return port, ports


def server_health(alb):
    status = alb.status_of("ServerGroup", "pool") or {}
    return {s["port"]: (s["health"], s["reason"]) for s in status.get("servers", [])}


def test_a_dead_server_leaves_rotation_and_returns_when_it_answers_again(alb, backends):
    port, (b1, b2) = serve(alb, backends)
    wait_for(lambda: server_health(alb).get(b2, ("",))[0] == "Healthy", timeout=10, what="b2 checked healthy")
    assert {get(port)[2]["X-Backend"] for _ in range(6)} == {"b1", "b2"}

    backends.servers[1].shutdown()
    backends.servers[1].server_close()
    killed = time.monotonic()
    # interval 1 s x unhealthyThreshold 2, plus a check in flight: out of rotation within about 3 s.
    wait_for(lambda: server_health(alb).get(b2, ("",))[0] == "Unhealthy", timeout=10, what="b2 unhealthy in status")
    assert time.monotonic() - killed < 8
    assert server_health(alb)[b2][1] == "connection refused"
    answers = [get(port) for _ in range(20)]
    assert [a[0] for a in answers] == [200] * 20
    assert {a[2]["X-Backend"] for a in answers} == {"b1"}
    assert any(e["action"] == "health" and e["to"] == "Unhealthy" and str(b2) in e["message"] for e in alb.events())

    backends.servers.append(demo_backend.serve(b2, "b2"))
    wait_for(lambda: server_health(alb).get(b2, ("",))[0] == "Healthy", timeout=12, what="b2 healthy again")
    seen = collections.Counter(get(port)[2]["X-Backend"] for _ in range(10))
    assert seen["b2"] > 0, seen


def test_with_every_server_unhealthy_requests_get_503_at_once(alb, backends):
    port, ports = serve(alb, backends)
    for server in backends.servers:
        server.shutdown()
        server.server_close()
    wait_for(lambda: [h for h, _ in server_health(alb).values()] == ["Unhealthy", "Unhealthy"], timeout=12,
             what="both unhealthy")
    started = time.monotonic()
    status, _, _ = get(port)
    assert status == 503
    assert time.monotonic() - started < 1, "no connect attempt to a server known to be down"


def test_a_group_without_checks_lists_its_servers_unchecked(alb, backends):
    ports = [backends.start("b1")]
    port = free_port()
    alb.write("web.yaml", manifest_set(port, [(ports[0], 100)]))
    alb.start()
    alb.wait_state("web", "Running")
    # A pass renames its status files into place one after another: the group's may land after the listener's.
    wait_for(lambda: server_health(alb), timeout=5, what="the group's status lists its servers")
    assert server_health(alb) == {ports[0]: ("Unchecked", "")}
