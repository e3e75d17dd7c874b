#!/usr/bin/env python3
"""Memory per idle keep-alive connection: RSS of PID before and after COUNT clients each made one request
to 127.0.0.1:PORT and stayed connected, read SETTLE seconds after the last response (default 1; alb parks
connections idle for 5 seconds, `--park-idle-after`, so its parked row waits 8).
Usage: bench_idle_memory.py PID PORT [COUNT [SETTLE]]"""
import resource
import socket
import sys
import time


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise SystemExit("no VmRSS for %d" % pid)


def main():
    pid, port = int(sys.argv[1]), int(sys.argv[2])
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 2000
    settle = float(sys.argv[4]) if len(sys.argv) > 4 else 1.0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, count + 100)), hard))
    before = rss_kib(pid)
    sockets = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
        sockets.append(s)
    for s in sockets:
        data = b""
        while b"\r\n\r\n" not in data:
            data += s.recv(65536)
    time.sleep(settle)
    after = rss_kib(pid)
    print("idle_connections=%d rss_before_kib=%d rss_after_kib=%d bytes_per_idle_connection=%d"
          % (count, before, after, (after - before) * 1024 / count))
    for s in sockets:
        s.close()


if __name__ == "__main__":
    main()
