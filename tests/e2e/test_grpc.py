"""gRPC through an HTTPS listener to a gRPC server group (h2c to the backend), with the grpcio client and server."""
import threading
import time
from concurrent import futures

import grpc
import pytest

from conftest import free_port
from test_https import certs, https_set  # noqa: F401  (the certs fixture)


def identity(data):
    return data


class Echo(grpc.GenericRpcHandler):
    """/echo.Echo/Unary answers "echo:" + the request with a trailer; /echo.Echo/Stream echoes each message;
    /echo.Echo/Missing fails with NOT_FOUND."""

    def service(self, details):
        if details.method == "/echo.Echo/Unary":
            def unary(request, context):
                context.set_trailing_metadata((("x-trailer", "kept"),))
                return b"echo:" + request
            return grpc.unary_unary_rpc_method_handler(unary, identity, identity)
        if details.method == "/echo.Echo/Stream":
            def stream(requests, context):
                for request in requests:
                    yield b"echo:" + request
            return grpc.stream_stream_rpc_method_handler(stream, identity, identity)
        if details.method == "/echo.Echo/Missing":
            def missing(request, context):
                context.set_trailing_metadata((("x-why", "because"),))
                context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
            return grpc.unary_unary_rpc_method_handler(missing, identity, identity)
        return None


@pytest.fixture
def grpc_backend():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((Echo(),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield port
    server.stop(0)


def serve_grpc(alb, certs, backend_port):
    """alb running an HTTPS listener in front of a gRPC server group of `backend_port`; a grpcio channel to it
    (the caller closes it)."""
    port = free_port()
    text = https_set(port, backend_port, {"main": certs["main"]}).replace(
        "kind: ServerGroup\nmetadata: {name: pool}\nspec:\n", "kind: ServerGroup\nmetadata: {name: pool}\nspec:\n  protocol: gRPC\n")
    assert "protocol: gRPC" in text
    alb.write("web.yaml", text)
    alb.start()
    alb.wait_state("web", "Running")
    credentials = grpc.ssl_channel_credentials(root_certificates=certs["main"][0].read_bytes())
    options = (("grpc.ssl_target_name_override", "main.example.com"),)
    return grpc.secure_channel("127.0.0.1:%d" % port, credentials, options=options)


def test_grpc_unary_streaming_trailers_and_errors_pass_through(alb, certs, grpc_backend):
    with serve_grpc(alb, certs, grpc_backend) as channel:
        unary = channel.unary_unary("/echo.Echo/Unary", request_serializer=identity, response_deserializer=identity)
        response, call = unary.with_call(b"hello", timeout=10)
        assert response == b"echo:hello"
        assert ("x-trailer", "kept") in tuple(call.trailing_metadata())

        stream = channel.stream_stream("/echo.Echo/Stream", request_serializer=identity, response_deserializer=identity)
        messages = [b"m%d" % i for i in range(50)] + [b"x" * 200_000]
        answers = list(stream(iter(messages), timeout=20))
        assert answers == [b"echo:" + m for m in messages]

        missing = channel.unary_unary("/echo.Echo/Missing", request_serializer=identity, response_deserializer=identity)
        with pytest.raises(grpc.RpcError) as failure:
            missing(b"?", timeout=10)
        assert failure.value.code() == grpc.StatusCode.NOT_FOUND
        assert failure.value.details() == "no such thing"
        # A "Trailers-Only" answer stays one HEADERS frame that ends the stream: its metadata stays trailing (until
        # the fourteenth session it became initial metadata, with a `content-length: 0` of the HTTP/1 translation).
        assert ("x-why", "because") in tuple(failure.value.trailing_metadata())
        assert all(name not in ("x-why", "content-length") for name, _ in failure.value.initial_metadata())


DYING_SERVER = """
import os, sys, time
from concurrent import futures
import grpc

class Dying(grpc.GenericRpcHandler):
    def service(self, details):
        def stream(request, context):
            for index in range(3):
                yield b"m%d" % index
            time.sleep(0.3)  # the messages out first: grpc pulls the next item as it sends one
            os._exit(3)
        return grpc.unary_stream_rpc_method_handler(stream, lambda b: b, lambda b: b)

server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
server.add_generic_rpc_handlers((Dying(),))
print(server.add_insecure_port("127.0.0.1:0"), flush=True)
server.start()
server.wait_for_termination(60)
"""


def test_a_grpc_backend_that_dies_mid_stream_is_an_internal_error_not_a_cancel(alb, certs):
    # The stream is reset with INTERNAL_ERROR, which gRPC clients report as INTERNAL; until the fourteenth session it
    # was CANCEL, which they report as CANCELLED, as if the caller had cancelled (retry policies and dashboards read
    # it so). nginx sends INTERNAL_ERROR too.
    import subprocess
    import sys
    backend = subprocess.Popen([sys.executable, "-c", DYING_SERVER], stdout=subprocess.PIPE, text=True)
    try:
        backend_port = int(backend.stdout.readline())
        received = []
        with serve_grpc(alb, certs, backend_port) as channel:
            stream = channel.unary_stream("/dying.Dying/Stream", request_serializer=identity,
                                          response_deserializer=identity)
            with pytest.raises(grpc.RpcError) as failure:
                for message in stream(b"go", timeout=20):
                    received.append(message)
        assert failure.value.code() == grpc.StatusCode.INTERNAL, (failure.value.code(), failure.value.details())
        assert received and received == [b"m0", b"m1", b"m2"][:len(received)], received
    finally:
        backend.kill()
        backend.wait()


class Endless(grpc.GenericRpcHandler):
    """/endless.Endless/Stream sends a message every 10 ms until its caller goes; /endless.Endless/Slow answers
    after 5 s unless its caller goes first. Each sets `gone` when gRPC tells it the call ended early."""

    def __init__(self):
        self.gone = threading.Event()

    def service(self, details):
        if details.method == "/endless.Endless/Stream":
            def stream(request, context):
                context.add_callback(self.gone.set)
                while context.is_active():
                    yield b"x" * 1000
                    time.sleep(0.01)
            return grpc.unary_stream_rpc_method_handler(stream, identity, identity)
        if details.method == "/endless.Endless/Slow":
            def slow(request, context):
                context.add_callback(self.gone.set)
                deadline = time.monotonic() + 5
                while context.is_active() and time.monotonic() < deadline:
                    time.sleep(0.01)
                return b"late"
            return grpc.unary_unary_rpc_method_handler(slow, identity, identity)
        return None


@pytest.mark.parametrize("ending", ["cancel", "deadline"])
def test_a_call_the_client_gives_up_on_ends_at_the_backend_too(alb, certs, ending):
    # A cancelled call, or one past its deadline, resets its stream to alb, and alb resets the backend's (a
    # deadline also reaches the backend as the `grpc-timeout` alb passes on): the backend's handler hears that
    # the call ended and stops, rather than streaming into a proxy nobody reads (or working for a caller who is
    # gone) until its own end.
    handler = Endless()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handler,))
    backend_port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with serve_grpc(alb, certs, backend_port) as channel:
            if ending == "cancel":
                call = channel.unary_stream("/endless.Endless/Stream", request_serializer=identity,
                                            response_deserializer=identity)(b"go", timeout=30)
                messages = iter(call)
                for _ in range(3):
                    assert next(messages) == b"x" * 1000
                call.cancel()
            else:
                slow = channel.unary_unary("/endless.Endless/Slow", request_serializer=identity,
                                           response_deserializer=identity)
                with pytest.raises(grpc.RpcError) as failure:
                    slow(b"go", timeout=0.5)
                assert failure.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert handler.gone.wait(3), "the backend's call went on after the client gave up"
    finally:
        server.stop(0)
