#!/usr/bin/env python3
"""A small HTTP/1.1 backend for the demo and the end-to-end tests.

Usage: demo_backend.py PORT [NAME] [PORT NAME ...]   (binds 127.0.0.1 only)

GET /anything        200, body "NAME /anything\n" and headers X-Backend: NAME
GET /headers         200, the request headers as JSON
GET /slow?s=N        sleeps N seconds, then 200
GET /big?n=N         200 with N bytes
POST /echo           streams the request body back
POST /headers        the request headers as a JSON list of [name, value], repeats included
GET /reset           closes the connection without answering
"""
import http.client
import json
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


# Python refuses more than 100 request header fields; the proxy's own limit is what the tests measure,
# and it adds X-Forwarded-For on top of the client's fields.
http.client._MAXHEADERS = 1000


def make_handler(name):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go in separate writes
        server_version = "demo-backend"

        def log_message(self, *args):
            pass

        def send_text(self, status, body, content_type="text/plain"):
            data = body if isinstance(body, bytes) else body.encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("X-Backend", name)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def do_GET(self):
            url = urlparse(self.path)
            query = parse_qs(url.query)
            if url.path == "/headers":
                self.send_text(200, json.dumps({k: v for k, v in self.headers.items()}), "application/json")
            elif url.path == "/slow":
                time.sleep(float(query.get("s", ["1"])[0]))
                self.send_text(200, "%s slow\n" % name)
            elif url.path == "/big":
                self.send_text(200, b"x" * int(query.get("n", ["65536"])[0]))
            elif url.path == "/reset":
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                self.connection.close()
                self.close_connection = True
            else:
                self.send_text(200, "%s %s\n" % (name, url.path))

        do_HEAD = do_GET

        def do_POST(self):
            if self.path == "/headers":
                # Every header line as received, repeats included, after reading a Content-Length body.
                self.rfile.read(int(self.headers.get("Content-Length", "0").split(",")[0]))
                self.send_text(200, json.dumps([[k.lower(), v] for k, v in self.headers.items()]), "application/json")
                return
            length = int(self.headers.get("Content-Length", "0"))
            chunked = self.headers.get("Transfer-Encoding", "").lower() == "chunked"
            self.send_response(200)
            self.send_header("X-Backend", name)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            total = 0

            def out(chunk):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))

            if chunked:
                while True:
                    size = int(self.rfile.readline().split(b";")[0], 16)
                    if size == 0:
                        self.rfile.readline()
                        break
                    out(self.rfile.read(size))
                    self.rfile.readline()
            else:
                while total < length:
                    chunk = self.rfile.read(min(65536, length - total))
                    if not chunk:
                        break
                    total += len(chunk)
                    out(chunk)
            self.wfile.write(b"0\r\n\r\n")

    return Handler


class QuietServer(ThreadingHTTPServer):
    """A peer resetting a connection is normal for a backend behind a proxy (a client's reset relayed, an idle
    pooled connection closed): not worth a traceback on stderr. Anything else is still printed."""

    def handle_error(self, request, client_address):
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            return
        super().handle_error(request, client_address)

    # socketserver's default accept backlog is 5: a burst of HTTP/2 streams opening backend connections at
    # once (h2load -m 20) can overflow it, and a dropped SYN costs the proxy a second before it retries.
    request_queue_size = 128


def serve(port, name, certfile=None, keyfile=None):
    """Serves on 127.0.0.1:port; over TLS (TLS only) when a certificate and key are given."""
    server = QuietServer(("127.0.0.1", port), make_handler(name))
    server.daemon_threads = True
    if certfile:
        import ssl
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certfile, keyfile)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main(argv):
    if not argv:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    pairs = [(int(argv[i]), argv[i + 1] if i + 1 < len(argv) else "backend-%s" % argv[i]) for i in range(0, len(argv), 2)]
    for port, name in pairs:
        serve(port, name)
        print("demo backend %s listening on 127.0.0.1:%d" % (name, port), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
