"""A QUIC listener's graceful drain (docs/quic.md, slice 4) with aioquic: on SIGTERM or the listener's removal
each connection gets HTTP/3 GOAWAY, its requests in flight finish, then CONNECTION_CLOSE with H3_NO_ERROR; no
new connection is created meanwhile, and the process exits 0 once the connections are gone."""
import asyncio
import signal
import socket
import time

from conftest import wait_for
from test_quic import H3Client, client_configuration, quic_listener  # noqa: F401 (fixture)

from aioquic.asyncio.client import connect
from aioquic.quic.events import ConnectionTerminated, StreamDataReceived

H3_NO_ERROR = 0x100
GOAWAY = 0x07


def read_varint(data, offset):
    """RFC 9000 section 16: (value, next offset), or None when `data` ends first."""
    if offset >= len(data):
        return None
    length = 1 << (data[offset] >> 6)
    if offset + length > len(data):
        return None
    value = data[offset] & 0x3F
    for byte in data[offset + 1:offset + length]:
        value = (value << 8) | byte
    return value, offset + length


class DrainWatchingClient(H3Client):
    """Records the server's control stream (server-initiated unidirectional, stream type 0x00) and how the
    connection ended. aioquic's H3Connection reads GOAWAY but does not report it, so the frames are parsed
    here from the raw stream bytes."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.server_uni_streams = {}
        self.terminated = asyncio.get_running_loop().create_future()

    def quic_event_received(self, event):
        if isinstance(event, StreamDataReceived) and event.stream_id % 4 == 3:
            self.server_uni_streams.setdefault(event.stream_id, bytearray()).extend(event.data)
        if isinstance(event, ConnectionTerminated) and not self.terminated.done():
            self.terminated.set_result(event)
        super().quic_event_received(event)

    def goaway_ids(self):
        """The stream IDs of the GOAWAY frames on the server's control stream, in order."""
        for data in self.server_uni_streams.values():
            if not data or data[0] != 0x00:
                continue
            ids, offset = [], 1
            while True:
                frame_type = read_varint(data, offset)
                if frame_type is None:
                    break
                length = read_varint(data, frame_type[1])
                if length is None or length[1] + length[0] > len(data):
                    break
                payload_start = length[1]
                if frame_type[0] == GOAWAY:
                    ids.append(read_varint(data, payload_start)[0])
                offset = payload_start + length[0]
            return ids
        return []


async def connection_attempt_times_out(port, seconds):
    """True when no handshake completes within `seconds` (the listener creates no connection)."""
    try:
        async def attempt():
            async with connect("127.0.0.1", port, configuration=client_configuration(), create_protocol=H3Client,
                               wait_connected=True):
                return False
        return await asyncio.wait_for(attempt(), seconds)
    except (asyncio.TimeoutError, ConnectionError):
        return True


async def slow_request_through_a_drain(port, start_drain, drain_started=lambda: None, request_seconds=2):
    """A `/slow` request in flight when `start_drain()` runs: (status, body, GOAWAY ids, how the connection
    ended, whether a new connection attempt during the drain timed out)."""
    async with connect("127.0.0.1", port, configuration=client_configuration(), create_protocol=DrainWatchingClient,
                       wait_connected=True) as client:
        authority = "127.0.0.1:%d" % port
        request = asyncio.ensure_future(client.request(authority, "GET", "/slow?s=%s" % request_seconds))
        await asyncio.sleep(0.5)  # the request has reached the backend
        start_drain()
        await asyncio.to_thread(drain_started)
        # The first GOAWAY says the drain has begun: a connection attempted before it would rightly be served.
        for _ in range(100):
            if client.goaway_ids():
                break
            await asyncio.sleep(0.05)
        refused = await connection_attempt_times_out(port, 1.0)
        status, _, body = await asyncio.wait_for(request, 20)
        terminated = await asyncio.wait_for(client.terminated, 10)
        return status, body, client.goaway_ids(), terminated, refused


def test_sigterm_lets_a_request_in_flight_finish_sends_goaway_and_exits_0(alb, quic_listener):
    port, _ = quic_listener
    started = time.monotonic()
    status, body, goaways, terminated, refused = asyncio.run(
        slow_request_through_a_drain(port, lambda: alb.process.send_signal(signal.SIGTERM)))
    assert status == 200 and body
    # The notice (the largest ID) and then the final GOAWAY, which lets stream 0 (the request) finish.
    assert goaways, "no GOAWAY on the server's control stream"
    assert goaways[-1] > 0
    assert terminated.error_code == H3_NO_ERROR, terminated
    assert refused, "a connection attempt during the drain was served"
    assert alb.process.wait(timeout=20) == 0
    # The drain waited for the request, not for --drain-timeout (30 s).
    assert time.monotonic() - started < 15


def test_the_drain_timeout_closes_what_is_still_running_with_h3_no_error(alb, backends, tmp_path):
    from test_quic import quic_set, free_udp_port
    from test_https import make_cert
    backend = backends.start("b1")
    cert, key = make_cert(tmp_path, "main", ["localhost"])
    port = free_udp_port()
    alb.write("set.yaml", quic_set(port, backend, cert, key))
    alb.start("--drain-timeout", "1")
    alb.wait_state("h3", "Running")

    async def scenario():
        async with connect("127.0.0.1", port, configuration=client_configuration(),
                           create_protocol=DrainWatchingClient, wait_connected=True) as client:
            request = asyncio.ensure_future(client.request("127.0.0.1:%d" % port, "GET", "/slow?s=6"))
            await asyncio.sleep(0.5)
            alb.process.send_signal(signal.SIGTERM)
            terminated = await asyncio.wait_for(client.terminated, 10)
            request.cancel()
            return terminated, client.goaway_ids()

    started = time.monotonic()
    terminated, goaways = asyncio.run(scenario())
    assert terminated.error_code == H3_NO_ERROR, terminated
    assert goaways
    assert alb.process.wait(timeout=10) == 0
    assert time.monotonic() - started < 5, "closed at the 1 s drain timeout, not after the 6 s request"


def test_removing_the_listener_drains_its_connections_then_frees_the_port(alb, quic_listener):
    port, _ = quic_listener
    status, body, goaways, terminated, refused = asyncio.run(
        slow_request_through_a_drain(port, lambda: alb.remove("set.yaml"), drain_started=lambda: wait_for(
            lambda: (alb.status_of("Listener", "h3") or {}).get("state") != "Running", timeout=5,
            what="listener h3 no longer running")))
    assert status == 200 and body
    assert goaways and terminated.error_code == H3_NO_ERROR
    assert refused

    def rebinds():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", port))
            return True
    wait_for(rebinds, timeout=10, what="UDP port %d free" % port)
    assert alb.process.poll() is None, "alb keeps running"


def test_an_open_quic_connection_counts_in_active_connections_until_it_closes(alb, quic_listener):
    port, _ = quic_listener

    def active():
        return (alb.status_of("Listener", "h3") or {}).get("stats", {}).get("activeConnections")

    async def scenario():
        async with connect("127.0.0.1", port, configuration=client_configuration(), create_protocol=H3Client,
                           wait_connected=True) as client:
            status, _, _ = await client.request("127.0.0.1:%d" % port, "GET", "/")
            assert status == 200
            # The status file is refreshed every 5 s.
            await asyncio.to_thread(wait_for, lambda: active() == 1, 15, 0.2, "activeConnections 1")

    asyncio.run(scenario())
    wait_for(lambda: active() == 0, timeout=15, interval=0.2, what="activeConnections 0 after the close")
