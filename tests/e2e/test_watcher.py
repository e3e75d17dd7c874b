"""The watcher and the safety rules around deletion."""
import os
import shutil
import time

from conftest import free_port, get, manifest_set, refused, wait_for


def test_emptied_directory_waits_one_more_window_before_pruning(alb, backends):
    b1 = backends.start("b1")
    port = free_port()
    alb.write("web.yaml", manifest_set(port, [(b1, 100)]))
    alb.start()
    alb.wait_state("web", "Running")
    alb.remove("web.yaml")
    time.sleep(0.6)
    # Still serving inside the grace window (a `git checkout` half-way looks like this).
    assert get(port)[0] == 200
    assert alb.status_of("Listener", "web") is not None
    wait_for(lambda: alb.status_of("Listener", "web") is None, timeout=5, what="pruned after the second window")
    assert refused(port)
    assert "waiting one more window before pruning" in alb.logs()


def test_files_back_within_the_window_delete_nothing(alb, backends):
    b1 = backends.start("b1")
    port = free_port()
    text = manifest_set(port, [(b1, 100)])
    alb.write("web.yaml", text)
    alb.start()
    alb.wait_state("web", "Running")
    alb.remove("web.yaml")
    time.sleep(0.4)
    alb.write("web.yaml", text)
    time.sleep(1.5)
    assert get(port)[0] == 200
    assert not any(e["action"] == "delete" for e in alb.events())


def test_missing_directory_at_start_then_created(alb, backends):
    b1 = backends.start("b1")
    port = free_port()
    os.rmdir(alb.manifests)
    alb.start()
    time.sleep(0.5)
    assert alb.process.poll() is None
    staging = alb.root / "staging"
    staging.mkdir()
    (staging / "web.yaml").write_text(manifest_set(port, [(b1, 100)]))
    os.rename(staging, alb.manifests)
    alb.wait_state("web", "Running")
    assert get(port)[0] == 200


def test_directory_replaced_wholesale(alb, backends):
    b1, b2 = backends.start("b1"), backends.start("b2")
    port = free_port()
    alb.write("web.yaml", manifest_set(port, [(b1, 100)]))
    alb.start()
    alb.wait_state("web", "Running")
    fresh = alb.root / "fresh"
    fresh.mkdir()
    (fresh / "web.yaml").write_text(manifest_set(port, [(b2, 100)]))
    shutil.move(str(alb.manifests), str(alb.root / "old"))
    os.rename(fresh, alb.manifests)
    wait_for(lambda: get(port)[1].startswith("b2"), what="served from the replaced directory")


def test_duplicate_name_keeps_last_good(alb, backends):
    b1 = backends.start("b1")
    port = free_port()
    alb.write("web.yaml", manifest_set(port, [(b1, 100)]))
    alb.start()
    alb.wait_state("web", "Running")
    duplicate = manifest_set(free_port(), [(b1, 100)], group="pool2").replace("name: lb}", "name: lb2}")
    alb.write("copy.yaml", duplicate)
    wait_for(lambda: alb.condition("Listener", "web", "Valid")["reason"] == "DuplicateName", what="DuplicateName")
    assert get(port)[0] == 200
    assert alb.status_of("Listener", "web")["live"]["port"] == port
