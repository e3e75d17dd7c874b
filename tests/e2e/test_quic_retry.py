"""Retry (RFC 9000 section 8.1.2, docs/quic.md slice 4) with aioquic: with ALB_QUIC_RETRY_ALWAYS=1 every new
client gets a Retry, answers with the token, and its connection (whose transport parameters must name the
Retry's source ID, which aioquic checks) serves requests."""
import asyncio
import os
import socket

from conftest import wait_for  # noqa: F401
from test_https import make_cert
from test_quic import H3Client, client_configuration, free_udp_port, quic_set

from aioquic.asyncio.client import connect


async def requests_through_retry(port, count):
    async with connect("127.0.0.1", port, configuration=client_configuration(), create_protocol=H3Client,
                       wait_connected=True) as client:
        authority = "127.0.0.1:%d" % port
        results = await asyncio.gather(*(client.request(authority, "GET", "/") for _ in range(count)))
        return [status for status, _, _ in results], client._quic._retry_count


def start_alb(alb, backends, tmp_path, monkeypatch):
    monkeypatch.setenv("ALB_QUIC_RETRY_ALWAYS", "1")
    backend = backends.start("b1")
    cert, key = make_cert(tmp_path, "main", ["localhost"])
    port = free_udp_port()
    alb.write("set.yaml", quic_set(port, backend, cert, key))
    alb.start()
    alb.wait_state("h3", "Running")
    return port


def test_clients_complete_requests_through_a_retry(alb, backends, tmp_path, monkeypatch):
    port = start_alb(alb, backends, tmp_path, monkeypatch)
    for _ in range(3):
        statuses, retries = asyncio.run(requests_through_retry(port, 5))
        assert statuses == [200] * 5
        assert retries == 1, "the server sent a Retry"


def test_an_initial_with_a_forged_retry_token_gets_no_connection(alb, backends, tmp_path, monkeypatch):
    port = start_alb(alb, backends, tmp_path, monkeypatch)
    # A v1 Initial (long header, type 0) with a token starting with the Retry magic 0xb6 that we never issued:
    # answered with an Initial carrying CONNECTION_CLOSE (INVALID_TOKEN), never a server handshake.
    dcid, scid = os.urandom(18), os.urandom(8)
    token = bytes([0xB6]) + os.urandom(77)
    header = bytes([0xC0]) + (1).to_bytes(4, "big") + bytes([len(dcid)]) + dcid + bytes([len(scid)]) + scid
    header += bytes([0x40 | (len(token) >> 8), len(token) & 0xFF]) + token
    remaining = 1200 - len(header) - 2
    datagram = header + bytes([0x40 | (remaining >> 8), remaining & 0xFF]) + bytes(remaining)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(1.0)
        s.sendto(datagram, ("127.0.0.1", port))
        reply = s.recvfrom(2048)[0]
    assert reply[0] & 0xF0 == 0xC0, "an Initial"
    assert len(reply) < 1200, "a CONNECTION_CLOSE, not a server handshake flight"
    assert reply[6:6 + reply[5]] == scid, "to the client's source ID"
    # And a real client still gets through.
    statuses, retries = asyncio.run(requests_through_retry(port, 1))
    assert statuses == [200] and retries == 1
