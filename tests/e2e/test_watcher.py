"""The watcher and the safety rules around deletion."""
import os
import shutil
import time

from conftest import free_port, get, manifest_set, refused, serve_web, wait_for


def test_emptied_directory_waits_one_more_window_before_pruning(alb, backends):
    port, _ = serve_web(alb, backends)
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
    port, b1 = serve_web(alb, backends)
    duplicate = manifest_set(free_port(), [(b1, 100)], group="pool2").replace("name: lb}", "name: lb2}")
    alb.write("copy.yaml", duplicate)
    wait_for(lambda: alb.condition("Listener", "web", "Valid")["reason"] == "DuplicateName", what="DuplicateName")
    assert get(port)[0] == 200
    assert alb.status_of("Listener", "web")["live"]["port"] == port


def configmap_version(mount, stamp, files):
    """A kubelet ConfigMap payload: a hidden timestamped directory holding the keys."""
    data = mount / stamp
    data.mkdir()
    for name, text in files.items():
        (data / name).write_text(text)
    return data


def swap_link(directory, link, target):
    """Points `link` at `target` atomically, as kubelet and git-sync do: a new link renamed over the old."""
    tmp = directory / (link + "_tmp")
    os.symlink(target, tmp)
    os.rename(tmp, directory / link)


def test_configmap_mount_follows_the_data_link_swap(alb, backends):
    """A ConfigMap volume: `NAME.yaml -> ..data/NAME.yaml`, `..data -> ..TIMESTAMP/`. An update writes a
    new timestamped directory and renames a new `..data` link over the old one; keys added by the update
    get their top-level link after the swap, and removed keys lose theirs."""
    b1, b2 = backends.start("b1"), backends.start("b2")
    old_port, new_port, api_port = free_port(), free_port(), free_port()
    mount = alb.manifests
    first = configmap_version(mount, "..2026_11_26_01_00_00.000000001",
                              {"web.yaml": manifest_set(old_port, [(b1, 100)])})
    swap_link(mount, "..data", first.name)
    os.symlink("..data/web.yaml", mount / "web.yaml")
    alb.start()
    alb.wait_state("web", "Running")
    assert get(old_port)[1].startswith("b1")

    # Update: the listener moves to another port and forwards to b2; a second key adds a listener.
    api = manifest_set(api_port, [(b1, 100)], listener="api", group="api-pool").split("---\n", 1)[1]
    second = configmap_version(mount, "..2026_11_26_01_05_00.000000002",
                               {"web.yaml": manifest_set(new_port, [(b2, 100)]), "api.yaml": api})
    swap_link(mount, "..data", second.name)
    os.symlink("..data/api.yaml", mount / "api.yaml")
    shutil.rmtree(first)
    wait_for(lambda: get(new_port)[1].startswith("b2"), what="the swapped ..data served on the new port")
    wait_for(lambda: refused(old_port), what="the old port closed")
    assert alb.status_of("Listener", "web")["live"]["port"] == new_port
    wait_for(lambda: get(api_port)[1].startswith("b1"), what="the key added by the update served")

    # Update: the api key is removed (its link dangles until kubelet removes it).
    third = configmap_version(mount, "..2026_11_26_01_10_00.000000003",
                              {"web.yaml": manifest_set(new_port, [(b2, 100)])})
    swap_link(mount, "..data", third.name)
    (mount / "api.yaml").unlink()
    shutil.rmtree(second)
    wait_for(lambda: alb.status_of("Listener", "api") is None, what="the removed key's listener deleted")
    wait_for(lambda: refused(api_port), what="the removed listener's port closed")
    assert get(new_port)[1].startswith("b2")
    assert alb.process.poll() is None


def test_git_sync_worktree_link_swap(tmp_path, backends):
    """git-sync: the manifest directory is itself a link (`/git/current -> .worktrees/SHA`), swapped to a new
    worktree on every new commit. No inotify event reaches the watched directories; the change is still
    picked up."""
    from conftest import Albatross
    b1, b2 = backends.start("b1"), backends.start("b2")
    port = free_port()
    instance = Albatross(tmp_path)
    git = tmp_path / "git"
    (git / ".worktrees" / "aaa").mkdir(parents=True)
    (git / ".worktrees" / "aaa" / "web.yaml").write_text(manifest_set(port, [(b1, 100)]))
    swap_link(git, "current", ".worktrees/aaa")
    instance.manifests = git / "current"
    try:
        instance.start()
        instance.wait_state("web", "Running")
        assert get(port)[1].startswith("b1")
        for sha, name in (("bbb", "b2"), ("ccc", "b1")):
            (git / ".worktrees" / sha).mkdir()
            backend = b2 if name == "b2" else b1
            (git / ".worktrees" / sha / "web.yaml").write_text(manifest_set(port, [(backend, 100)]))
            swap_link(git, "current", ".worktrees/" + sha)
            wait_for(lambda: get(port)[1].startswith(name), what="the worktree %s served" % sha)
    finally:
        instance.stop()
