"""A QUIC client that changes its address keeps its connection (RFC 9000 section 9: connection migration, the
seed's point of QUIC): aioquic's client moves to a new UDP port between two requests on one connection."""
import asyncio
import json
import socket

from conftest import wait_for
from test_quic import client_configuration, H3Client, quic_listener, run  # noqa: F401 (quic_listener: fixture)

from aioquic.asyncio.client import connect  # noqa: E402


def access_log_records(log_path, path):
    if not log_path.exists():
        return []
    return [json.loads(line) for line in log_path.read_text().splitlines() if '"%s"' % path in line]


def test_a_client_that_moves_to_a_new_port_keeps_its_connection(quic_listener):
    port, log_path = quic_listener

    async def migrate():
        loop = asyncio.get_running_loop()
        async with connect("127.0.0.1", port, configuration=client_configuration(), create_protocol=H3Client,
                           wait_connected=True) as client:
            authority = "127.0.0.1:%d" % port
            before = await asyncio.wait_for(client.request(authority, "GET", "/before-move"), 20)
            old_transport = client._transport
            # A new socket for the same protocol object, as a NAT rebinding or a network change would give:
            # the same QUIC connection now sends from another port, with a fresh connection ID.
            # aioquic's `connect` sends from a dual-stack IPv6 socket (IPv4 peers as ::ffff:a.b.c.d): the same kind.
            moved = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            moved.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            moved.bind(("::", 0))
            await loop.create_datagram_endpoint(lambda: client, sock=moved)
            assert client._transport is not old_transport
            client.change_connection_id()
            old_transport.close()
            after = await asyncio.wait_for(client.request(authority, "GET", "/after-move"), 20)
            return before, after, client._quic.host_cid

    before, after, _ = run(migrate())
    assert (before[0], before[2]) == (200, b"b1 /before-move\n")
    assert (after[0], after[2]) == (200, b"b1 /after-move\n"), "the request after the move was not served"
    first = wait_for(lambda: access_log_records(log_path, "/before-move"), timeout=5, what="first access log line")[0]
    second = wait_for(lambda: access_log_records(log_path, "/after-move"), timeout=5, what="second access log line")[0]
    # The server saw both, from two client ports: the second over the migrated path of the same connection
    # (the client made no new handshake; a new connection would have needed one).
    assert first["protocol"] == second["protocol"] == "HTTP/3"
    assert first["client_port"] != second["client_port"], (first, second)
