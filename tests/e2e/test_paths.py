"""Every verb over every kind of path: one-character names, `.`, `..`, trailing slashes, absolute and
relative paths, a symlinked root, spaces and non-ASCII names."""
import os
import signal
import subprocess
import time

import pytest

from conftest import ALB, free_port, get, manifest_set, wait_for


def run_alb(cwd, *args, timeout=30):
    return subprocess.run([ALB, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


class Reconciler:
    """`alb reconcile` started from a chosen working directory."""

    def __init__(self, cwd, directory, status, watch=True):
        self.log_path = cwd / ("alb-%d.log" % free_port())
        self.log = open(self.log_path, "wb")
        args = [ALB, "reconcile", directory, "--status-dir", str(status)] + (["--watch"] if watch else [])
        self.process = subprocess.Popen(args, cwd=cwd, stdout=self.log, stderr=self.log)

    def logs(self):
        return self.log_path.read_text(errors="replace")

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()


@pytest.mark.parametrize("directory", ["m", "m/"])
def test_reconcile_watch_one_character_directory_does_not_crash(tmp_path, backends, directory):
    """`alb reconcile m --watch` died with SIGILL in the watcher (NSString.deletingLastPathComponent)."""
    b1 = backends.start("b1")
    port = free_port()
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "web.yaml").write_text(manifest_set(port, [(b1, 100)]))
    alb = Reconciler(tmp_path, directory, "s/")  # a one-character status directory too
    try:
        wait_for(lambda: get(port)[0] == 200, what="served from %r" % directory)
        # An edit is still noticed: the watcher thread is alive.
        second = free_port()
        (tmp_path / "m" / "web.yaml").write_text(manifest_set(second, [(b1, 100)]))
        wait_for(lambda: get(second)[0] == 200, what="edit applied")
        time.sleep(0.5)
        assert alb.process.poll() is None, alb.logs()
        for status_dir in ("s", "s/", str(tmp_path / "s")):
            table = run_alb(tmp_path, "status", "--status-dir", status_dir)
            rows = [line.split()[:3] for line in table.stdout.splitlines()]
            assert table.returncode == 0 and ["Listener", "web", "Running"] in rows, table.stdout + table.stderr
    finally:
        assert alb.stop() == 0, alb.logs()


def layout(tmp_path, kind):
    """(cwd, argument, real directory) for one kind of path; the directory is not created here."""
    here = tmp_path / "work" / "here"
    here.mkdir(parents=True)
    table = {
        "one character": (here, "m", here / "m"),
        "trailing slash": (here, "m/", here / "m"),
        "doubled slashes": (here, "m//", here / "m"),
        "dot slash": (here, "./m", here / "m"),
        "dot-dot": (here, "../here/m", here / "m"),
        "absolute": (here, str(here / "m"), here / "m"),
        "absolute trailing slash": (here, str(here / "m") + "/", here / "m"),
        "space": (here, "with space", here / "with space"),
        "non-ASCII": (here, "données-é", here / "données-é"),
        "nested": (here, "a/b", here / "a" / "b"),
    }
    return table[kind]


KINDS = ["one character", "trailing slash", "doubled slashes", "dot slash", "dot-dot", "absolute",
         "absolute trailing slash", "space", "non-ASCII", "nested"]


@pytest.mark.parametrize("kind", KINDS)
def test_every_verb_over_every_kind_of_path(tmp_path, kind):
    cwd, argument, directory = layout(tmp_path, kind)
    status = tmp_path / "status"
    # Missing: the verbs agree.
    for verb in (["validate", argument], ["plan", argument, "--status-dir", str(status)],
                 ["reconcile", argument, "--status-dir", str(status)]):
        result = run_alb(cwd, *verb)
        assert result.returncode == 1, (verb, result.stdout, result.stderr)
        assert "%s: error: no such directory" % argument in result.stderr, (verb, result.stderr)
    result = run_alb(cwd, "status", "--status-dir", argument)
    assert result.returncode == 1
    assert "%s: error: no such directory" % argument in result.stderr
    # Present: served as the same tree whatever the spelling.
    directory.mkdir(parents=True)
    (directory / "web.yaml").write_text(manifest_set(free_port(), [(9001, 100)]).replace("idleTimeout:", "idle:"))
    result = run_alb(cwd, "validate", argument)
    assert result.returncode == 1
    printed = os.path.join(argument, "web.yaml") if not argument.endswith("/") else argument.rstrip("/") + "/web.yaml"
    assert any(line.startswith(printed + ":") and "unknown field" in line for line in result.stdout.splitlines()), \
        result.stdout
    (directory / "web.yaml").write_text(manifest_set(free_port(), [(9001, 100)]))
    result = run_alb(cwd, "validate", argument)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 resources in 1 file: valid" in result.stdout
    result = run_alb(cwd, "plan", argument, "--status-dir", str(status))
    assert result.returncode == 2 and "+ create Listener/web" in result.stdout, result.stdout + result.stderr


def test_dot_is_the_current_directory(tmp_path):
    (tmp_path / "web.yaml").write_text(manifest_set(free_port(), [(9001, 100)]).replace("idleTimeout:", "idle:"))
    result = run_alb(tmp_path, "validate", ".")
    assert result.returncode == 1
    assert result.stdout.startswith("web.yaml:"), result.stdout


def test_root_that_is_a_symlink(tmp_path):
    """As Kubernetes ConfigMap and git-sync mounts are: the link is followed."""
    real = tmp_path / "rev-1"
    real.mkdir()
    (real / "web.yaml").write_text(manifest_set(free_port(), [(9001, 100)]))
    os.symlink("rev-1", tmp_path / "current")
    for argument in ("current", "current/", str(tmp_path / "current")):
        result = run_alb(tmp_path, "validate", argument)
        assert result.returncode == 0 and "3 resources in 1 file: valid" in result.stdout, result.stdout


def test_link_loops_are_errors_and_the_rest_loads(tmp_path):
    """`ln -s . d/a; ln -s . d/b; alb validate d` never returned."""
    d = tmp_path / "d"
    d.mkdir()
    (d / "web.yaml").write_text(manifest_set(free_port(), [(9001, 100)]))
    os.symlink(".", d / "a")
    os.symlink(".", d / "b")
    result = run_alb(tmp_path, "validate", "d", timeout=10)
    assert result.returncode == 1
    assert result.stdout.splitlines() == ["d/a: error: symbolic link loop: it leads back to d",
                                          "d/b: error: symbolic link loop: it leads back to d"]
    assert "DuplicateName" not in result.stdout and "2 errors in d" in result.stderr


def test_file_or_special_file_where_a_directory_or_manifest_is_expected(tmp_path):
    (tmp_path / "m1").mkdir()
    (tmp_path / "m1" / "all.yaml").write_text(manifest_set(free_port(), [(9001, 100)]))
    result = run_alb(tmp_path, "validate", "m1/all.yaml")
    assert result.returncode == 1
    assert "m1/all.yaml: error: not a directory (a regular file)" in result.stderr
    assert "valid" not in result.stdout
    os.symlink("gone.yaml", tmp_path / "m1" / "x.yaml")
    os.mkfifo(tmp_path / "m1" / "f.yaml")
    (tmp_path / "m1" / "dir.yaml").mkdir()
    result = run_alb(tmp_path, "validate", "m1", timeout=10)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "m1/dir.yaml: error: a directory where a manifest file is expected",
        "m1/f.yaml: error: not a regular file (a FIFO)",
        "m1/x.yaml: error: dangling symbolic link (its target gone.yaml does not exist)",
    ]


def test_a_certificate_path_that_names_a_fifo_is_an_error_not_a_hang(tmp_path):
    # Until the fourteenth session reading it blocked: `alb validate` hung, and so did every reconcile pass.
    (tmp_path / "m1").mkdir()
    os.mkfifo(tmp_path / "m1" / "cert.pem")
    (tmp_path / "m1" / "cert.yaml").write_text(
        "apiVersion: alb/v1\nkind: Certificate\nmetadata: {name: c}\nspec: {type: CA, certificate: cert.pem}\n")
    result = run_alb(tmp_path, "validate", "m1", timeout=10)
    assert result.returncode == 1
    assert "cert.pem cannot be read: not a regular file (a FIFO)" in result.stdout, result.stdout


def test_byte_order_mark_is_accepted(tmp_path):
    (tmp_path / "web.yaml").write_bytes(b"\xef\xbb\xbf" + manifest_set(free_port(), [(9001, 100)]).encode())
    result = run_alb(tmp_path, "validate", ".")
    assert result.returncode == 0, result.stdout


def test_status_dir_through_a_symlink_into_the_manifests_is_refused(tmp_path):
    (tmp_path / "m2").mkdir()
    os.symlink("m2", tmp_path / "m2link")
    result = run_alb(tmp_path, "reconcile", "m2", "--watch", "--status-dir", "m2link/st", timeout=10)
    assert result.returncode == 1
    assert "must be outside the manifest directory" in result.stderr
    assert not (tmp_path / "m2" / "st").exists()


def test_status_dir_that_is_a_file_fails_at_start(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "st").write_text("")
    result = run_alb(tmp_path, "reconcile", "m", "--watch", "--status-dir", "st", timeout=10)
    assert result.returncode == 1
    assert result.stderr.strip() == "st: error: not a directory (a regular file)"


def test_status_refuses_what_is_not_a_status_directory(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "web.yaml").write_text(manifest_set(free_port(), [(9001, 100)]))
    (tmp_path / "file").write_text("")
    for argument, message in (("nope", "nope: error: no such directory"),
                              ("file", "file: error: not a directory (a regular file)"),
                              ("m", "m: error: not a status directory")):
        result = run_alb(tmp_path, "status", "--status-dir", argument)
        assert result.returncode == 1, argument
        assert result.stderr.startswith(message), result.stderr
        assert result.stdout == ""


def test_reconcile_watch_waits_for_a_missing_directory(tmp_path, backends):
    b1 = backends.start("b1")
    port = free_port()
    alb = Reconciler(tmp_path, "m", tmp_path / "status")
    try:
        wait_for(lambda: "waiting for the manifest directory to appear" in alb.logs(), what="waiting log")
        time.sleep(1.5)
        assert alb.logs().count("waiting for the manifest directory to appear") == 1
        assert alb.process.poll() is None
        (tmp_path / "m").mkdir()
        (tmp_path / "m" / "web.yaml").write_text(manifest_set(port, [(b1, 100)]))
        wait_for(lambda: get(port)[0] == 200, what="served once the directory appeared")
    finally:
        assert alb.stop() == 0, alb.logs()


def test_broken_symlink_under_watch_keeps_the_last_good_configuration(tmp_path, backends):
    b1 = backends.start("b1")
    port = free_port()
    (tmp_path / "m").mkdir()
    (tmp_path / "web-v1.yaml").write_text(manifest_set(port, [(b1, 100)]))
    os.symlink("../web-v1.yaml", tmp_path / "m" / "web.yaml")
    status = tmp_path / "status"
    alb = Reconciler(tmp_path, "m", status)
    try:
        wait_for(lambda: get(port)[0] == 200, what="served through the link")
        (tmp_path / "web-v1.yaml").unlink()
        listener = status / "listeners" / "web.yaml"
        wait_for(lambda: "dangling symbolic link" in listener.read_text(), what="the error in the status file")
        time.sleep(1.5)  # past the empty-tree grace: nothing is pruned
        assert get(port)[0] == 200
        assert listener.exists()
    finally:
        assert alb.stop() == 0, alb.logs()


def test_link_loop_under_watch_does_not_stop_edits(tmp_path, backends):
    b1 = backends.start("b1")
    port = free_port()
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "web.yaml").write_text(manifest_set(port, [(b1, 100)]))
    os.symlink(".", tmp_path / "m" / "a")
    os.symlink(".", tmp_path / "m" / "b")
    alb = Reconciler(tmp_path, "m", tmp_path / "status")
    try:
        wait_for(lambda: get(port)[0] == 200, what="served despite the loops")
        second = free_port()
        (tmp_path / "m" / "web.yaml").write_text(manifest_set(second, [(b1, 100)]))
        wait_for(lambda: get(second)[0] == 200, what="edit applied")
        assert "DuplicateName" not in (tmp_path / "status" / "listeners" / "web.yaml").read_text()
    finally:
        assert alb.stop() == 0, alb.logs()
