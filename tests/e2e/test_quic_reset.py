"""Stateless resets (RFC 9000 section 10.3, docs/quic.md slice 4) from a running QUIC listener over UDP: a
short header for a connection alb does not have, in a datagram of at least 41 bytes, gets a reset smaller
than it; a smaller datagram gets nothing."""
import os
import socket

from test_quic import quic_listener  # noqa: F401 (fixture)


def exchange(port, datagram, timeout=1.0):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(datagram, ("127.0.0.1", port))
        try:
            return s.recvfrom(2048)[0]
        except socket.timeout:
            return None


def short_header(size):
    # First byte: long bit clear, fixed bit set; then an 18-byte connection ID no connection has.
    return bytes([0x41]) + os.urandom(size - 1)


def test_an_unknown_short_header_gets_a_stateless_reset_smaller_than_it(quic_listener):
    port, _ = quic_listener
    for size in (41, 100, 1200):
        reset = exchange(port, short_header(size))
        assert reset is not None, "no reset for a %d-byte datagram" % size
        assert 21 <= len(reset) < size
        assert reset[0] & 0xC0 == 0x40


def test_a_datagram_under_41_bytes_gets_no_reset(quic_listener):
    port, _ = quic_listener
    assert exchange(port, short_header(40)) is None
