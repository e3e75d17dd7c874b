#!/usr/bin/env python3
"""WebSocket row of `make bench`: messages per second and proxy CPU per message, through alb, through nginx
proxying the same backend, and direct (no proxy).

Usage: bench_websocket.py ALB_BINARY [CONNECTIONS] [MESSAGES_PER_CONNECTION]

A Python `websockets` echo backend on CPU 1; the proxy (alb, then nginx with one worker) on CPU 0; the
client on CPU 1, with CONNECTIONS connections each sending MESSAGES 64-byte binary messages in batches of 50
and reading the echoes. Compression is off on both ends (the proxies relay bytes; deflate would only measure
Python). Loopback only; every run is bounded by its message count and a timeout. Prints one line per row:
`ws NAME messages=N seconds=S msgs_per_s=R cpu_us_per_msg=C` (C is the proxy's CPU; none for direct).
nginx is skipped when it is not installed (`../shared/bench/peers.sh` installs it for `make bench`).
"""
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve

BATCH = 50
PAYLOAD = bytes(range(64))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    """User plus system CPU of `pid` and its descendants (nginx's worker is the master's child)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total, pending = 0.0, [pid]
    while pending:
        current = pending.pop()
        try:
            fields = open("/proc/%d/stat" % current).read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
            for task in os.listdir("/proc/%d/task" % current):
                children = open("/proc/%d/task/%s/children" % (current, task)).read().split()
                pending.extend(int(c) for c in children)
        except OSError:
            pass
    return total


def wait_port(port, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("nothing listens on %d" % port)


def start_backend(port):
    """The echo backend in its own process on CPU 1, so its Python time is not the client's."""
    code = (
        "import asyncio\n"
        "from websockets.asyncio.server import serve\n"
        "async def echo(ws):\n"
        "    async for m in ws:\n"
        "        await ws.send(m)\n"
        "async def main():\n"
        "    async with serve(echo, '127.0.0.1', %d, compression=None, max_size=None, ping_interval=None):\n"
        "        await asyncio.Future()\n"
        "asyncio.run(main())\n" % port
    )
    process = subprocess.Popen(["taskset", "-c", "1", sys.executable, "-c", code])
    wait_port(port)
    return process


async def one_connection(port, messages):
    async with connect("ws://127.0.0.1:%d/bench" % port, compression=None, max_size=None, ping_interval=None) as ws:
        sent = 0
        while sent < messages:
            batch = min(BATCH, messages - sent)
            for _ in range(batch):
                await ws.send(PAYLOAD)
            for _ in range(batch):
                await ws.recv()
            sent += batch


async def run_clients(port, connections, messages):
    await asyncio.wait_for(asyncio.gather(*(one_connection(port, messages) for _ in range(connections))), 300)


def measure(name, port, pid, connections, messages):
    asyncio.run(run_clients(port, 2, 200))  # warm-up
    before = cpu_seconds(pid) if pid else 0.0
    started = time.monotonic()
    asyncio.run(run_clients(port, connections, messages))
    seconds = time.monotonic() - started
    total = connections * messages
    line = "ws %s messages=%d seconds=%.2f msgs_per_s=%.0f" % (name, total, seconds, total / seconds)
    if pid:
        # Each message crosses the proxy twice (there and back): CPU per message counts both.
        line += " cpu_us_per_msg=%.2f" % ((cpu_seconds(pid) - before) * 1e6 / total)
    print(line, flush=True)


NGINX_CONF = """worker_processes 1; daemon on; pid {dir}/nginx.pid; error_log {dir}/nginx.err;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://127.0.0.1:{backend};
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_buffering off;
    }}
  }}
}}
"""


def main():
    binary = sys.argv[1]
    connections = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    messages = int(sys.argv[3]) if len(sys.argv) > 3 else 5000
    work = tempfile.mkdtemp(prefix="alb-bench-ws.")
    backend_port, alb_port, nginx_port = free_port(), free_port(), free_port()
    backend = start_backend(backend_port)
    os.makedirs(work + "/m")
    with open(work + "/m/ws.yaml", "w") as f:
        f.write("""apiVersion: alb/v1
kind: LoadBalancer
metadata: {name: bench}
spec: {address: 127.0.0.1}
---
apiVersion: alb/v1
kind: ServerGroup
metadata: {name: ws}
spec:
  servers: [{address: 127.0.0.1, port: %d}]
---
apiVersion: alb/v1
kind: Listener
metadata: {name: ws}
spec:
  loadBalancer: bench
  protocol: HTTP
  port: %d
  idleTimeout: 60
  defaultAction: {forwardGroup: {serverGroups: [{name: ws}]}}
""" % (backend_port, alb_port))
    alb = subprocess.Popen(["taskset", "-c", "0", binary, "reconcile", work + "/m", "--status-dir", work + "/s",
                            "--log-level", "warning"])
    nginx_pid = None
    try:
        wait_port(alb_port)
        measure("direct", backend_port, None, connections, messages)
        measure("alb", alb_port, alb.pid, connections, messages)
        if shutil.which("nginx"):
            with open(work + "/nginx.conf", "w") as f:
                f.write(NGINX_CONF.format(dir=work, port=nginx_port, backend=backend_port))
            subprocess.run(["taskset", "-c", "0", "nginx", "-c", work + "/nginx.conf"], check=True)
            wait_port(nginx_port)
            nginx_pid = int(open(work + "/nginx.pid").read())
            measure("nginx", nginx_port, nginx_pid, connections, messages)
        else:
            print("ws nginx skipped: nginx is not installed")
    finally:
        alb.terminate()
        backend.terminate()
        if nginx_pid:
            subprocess.run(["kill", str(nginx_pid)])
        alb.wait(timeout=40)
        backend.wait(timeout=10)


if __name__ == "__main__":
    main()
