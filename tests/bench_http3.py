#!/usr/bin/env python3
"""The HTTP/3 row of `make bench`: alb's QUIC listener beside its HTTPS listener (HTTP/2), one process.

Usage: bench_http3.py ALB_BINARY [STREAMS]   (needs ../shared/bench/peers.sh started: the backend on
127.0.0.1:19000)

alb on CPU 0, the client on CPU 1, both listeners forwarding to the same backend (1 KiB):
  h3   one QUIC connection carrying STREAMS (default 20,000) GET requests, at most 100 at a time (the
       listener's stream limit), from Debian's ngtcp2 client (`gtlsclient -n`): Debian's h2load has no HTTP/3
  h2   the same over one TLS connection with HTTP/2 (bench_tls.py's HTTPS listener): h2load -n STREAMS -c 1 -m 100
Each prints requests per second and alb's CPU microseconds per request. The clients differ (the QUIC one is
the ngtcp2 example client, not a load tool), so the requests per second compare less well than alb's CPU.
Every load is bounded by its count and targets 127.0.0.1 only.
"""
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_tls import HZ, PORTS, alb_manifest, cpu_ticks, make_cert, wait_https

HTTPS_PORT, QUIC_PORT = PORTS["alb"], 19034


def manifest(cert, key):
    """bench_tls's HTTPS listener (HTTP/2 offered by ALPN) and a QUIC listener beside it, same group and certificate."""
    return alb_manifest(cert, key) + """---
apiVersion: alb/v1
kind: Listener
metadata: {name: bench-h3}
spec:
  loadBalancer: bench
  protocol: QUIC
  port: %d
  certificates: {server: bench}
  defaultAction: {forwardGroup: {serverGroups: [{name: nginx-backend}]}}
""" % QUIC_PORT


def run_measured(pid, command):
    """(alb's CPU microseconds, seconds, stdout) of one bounded client run on CPU 1."""
    before = cpu_ticks(pid)
    started = time.monotonic()
    out = subprocess.run(["taskset", "-c", "1", *command], capture_output=True, text=True, timeout=300).stdout
    return (cpu_ticks(pid) - before) / HZ * 1e6, time.monotonic() - started, out


def h3_command(streams):
    """gtlsclient's run, printing only how many responses had status 200 (its HTTP dump, counted by grep: the
    dump is a score of lines per stream)."""
    url = "https://127.0.0.1:%d/" % QUIC_PORT
    client = "gtlsclient --no-quic-dump --exit-on-all-streams-close --timeout=30s -n %d 127.0.0.1 %d %s" % (
        streams, QUIC_PORT, url)
    return ["bash", "-c", client + " 2>&1 | grep -c -E '^http: stream 0x[0-9a-f]+ \\[:status: 200\\]$'"]


def h3_answered(out):
    return int(out.strip() or 0)


def main(alb, streams):
    for tool in ("gtlsclient", "h2load", "openssl"):
        if not shutil.which(tool):
            raise SystemExit("bench_http3 needs %s" % tool)
    work = Path(tempfile.mkdtemp(prefix="alb-bench-h3."))
    (work / "m").mkdir()
    cert, key = make_cert(work, "ecdsa")
    (work / "m" / "bench.yaml").write_text(manifest(cert, key))
    proc = subprocess.Popen(["taskset", "-c", "0", alb, "reconcile", str(work / "m"), "--status-dir", str(work / "s"),
                             "--log-level", "warning"])
    try:
        wait_https(HTTPS_PORT)
        warm = subprocess.run(["taskset", "-c", "1", *h3_command(200)], capture_output=True, text=True, timeout=60)
        if h3_answered(warm.stdout) < 200:
            raise SystemExit("the QUIC listener did not answer 200 requests: " + warm.stdout[-400:] + warm.stderr[-400:])
        subprocess.run(["taskset", "-c", "1", "h2load", "-n", "500", "-c", "1", "-m", "100",
                        "https://127.0.0.1:%d/" % HTTPS_PORT], capture_output=True, timeout=60)
        cpu, seconds, out = run_measured(proc.pid, h3_command(streams))
        answered = h3_answered(out)
        print("alb h3 streams=%d answered=%d rps=%.0f cpu_us_per_req=%.1f"
              % (streams, answered, answered / seconds, cpu / max(answered, 1)), flush=True)
        cpu, seconds, out = run_measured(proc.pid, ["h2load", "-n", str(streams), "-c", "1", "-m", "100",
                                                     "https://127.0.0.1:%d/" % HTTPS_PORT])
        match = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded", out)
        answered = int(match.group(1)) if match else 0
        print("alb h2 streams=%d answered=%d rps=%.0f cpu_us_per_req=%.1f"
              % (streams, answered, answered / seconds, cpu / max(answered, 1)), flush=True)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=40)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        print(__doc__.strip(), file=sys.stderr)
        sys.exit(2)
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) == 3 else 20000)
