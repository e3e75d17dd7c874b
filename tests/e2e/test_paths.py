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
    alb = Reconciler(tmp_path, directory, tmp_path / "status")
    try:
        wait_for(lambda: get(port)[0] == 200, what="served from %r" % directory)
        # An edit is still noticed: the watcher thread is alive.
        second = free_port()
        (tmp_path / "m" / "web.yaml").write_text(manifest_set(second, [(b1, 100)]))
        wait_for(lambda: get(second)[0] == 200, what="edit applied")
        time.sleep(0.5)
        assert alb.process.poll() is None, alb.logs()
    finally:
        assert alb.stop() == 0, alb.logs()
