#!/usr/bin/env python3
"""The backend of the reconciler benchmark: answers every GET as fast as this machine lets Python.

Usage: bench_backend.py PORT NAME [PORT NAME ...]   (binds 127.0.0.1 only; prints "ready" once listening)

Every request gets 200 with the body "NAME PATH\\n" (as tests/demo_backend.py's GET does), so a benchmark
still sees which backend answered. Keep-alive HTTP/1.1, requests without bodies only.

Why not demo_backend.py: it is http.server (a thread per connection, the request parsed by the email
module), about 0.3 ms a request, and it ran in the benchmark's own process, sharing the GIL with the client
that polls. nginx and HAProxy in ../shared/bench/reload.py answer `return 200` themselves, so a cold start of
100 listeners through alb measured the demo backend as much as alb. This one runs in its own process, on one
asyncio loop, with the request head merely split at its blank line.
"""
import asyncio
import sys


class Responder(asyncio.Protocol):
    def __init__(self, name):
        self.name = name
        self.buffer = b""
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.buffer += data
        out = []
        close = False
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            head, self.buffer = self.buffer[:end], self.buffer[end + 4:]
            request_line, _, fields = head.partition(b"\r\n")
            parts = request_line.split(b" ")
            path = parts[1] if len(parts) == 3 else b"/"
            body = self.name + b" " + path + b"\n"
            out.append(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nX-Backend: %s\r\n\r\n%s"
                       % (len(body), self.name, body))
            if b"connection: close" in fields.lower():
                close = True
                break
        if out:
            self.transport.write(b"".join(out))
        if close:
            self.transport.close()


async def serve(pairs):
    loop = asyncio.get_running_loop()
    for port, name in pairs:
        await loop.create_server(lambda name=name: Responder(name.encode()), "127.0.0.1", port, backlog=1024)
    print("ready", flush=True)
    await asyncio.Event().wait()


def main(argv):
    if len(argv) < 2 or len(argv) % 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    pairs = [(int(argv[i]), argv[i + 1]) for i in range(0, len(argv), 2)]
    try:
        asyncio.run(serve(pairs))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
