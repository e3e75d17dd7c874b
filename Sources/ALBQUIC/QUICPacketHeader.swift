import CNgtcp2
import NIOCore

/// A QUIC version number (RFC 9000 section 15).
public struct QUICVersion: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// QUIC v1, RFC 9000: the only version this listener serves.
    public static let v1 = QUICVersion(rawValue: NGTCP2_PROTO_VER_V1)
    /// The version field of a Version Negotiation packet.
    public static let negotiation = QUICVersion(rawValue: 0)

    /// Versions of the form 0x?a?a?a?a, reserved so that peers exercise version negotiation (section 15).
    public var isReserved: Bool { rawValue & 0x0f0f_0f0f == 0x0a0a_0a0a }

    public var description: String { "0x" + String(rawValue, radix: 16) }
}

/// The invariant fields of a datagram's first QUIC packet header (RFC 8999): enough to route the datagram,
/// answer it with Version Negotiation, or decide that it may open a connection. Decoded by ngtcp2; holds no
/// C type and no pointer into the datagram.
///
/// It does not decode packet numbers, lengths or tokens (those need a known version; see
/// ``QUICInitialPacket``), and it says nothing about the packets coalesced after the first one: they share
/// its destination connection ID (RFC 9000 section 12.2), which is all the routing needs.
public struct QUICPacketHeader: Equatable, Sendable {
    public enum Form: Equatable, Sendable {
        /// Long header: Initial, 0-RTT, Handshake, Retry, or Version Negotiation (version 0).
        case long
        /// Short (1-RTT) header: the destination connection ID's length is the receiver's to know.
        case short
    }

    /// The long packet types of QUIC v1 (RFC 9000 section 17.2).
    public enum LongPacketType: Equatable, Sendable {
        case initial, zeroRTT, handshake, retry
    }

    public var form: Form
    /// The header's first byte; its type bits mean something only for a known version.
    public var firstByte: UInt8
    /// The version field of a long header; `nil` for a short header.
    public var version: QUICVersion?
    public var destinationConnectionID: QUICConnectionID
    /// The source connection ID of a long header; `nil` for a short header.
    public var sourceConnectionID: QUICConnectionID?

    public init(form: Form, firstByte: UInt8, version: QUICVersion?, destinationConnectionID: QUICConnectionID,
                sourceConnectionID: QUICConnectionID?) {
        self.form = form
        self.firstByte = firstByte
        self.version = version
        self.destinationConnectionID = destinationConnectionID
        self.sourceConnectionID = sourceConnectionID
    }

    /// The packet type of a QUIC v1 long header; `nil` for any other header.
    public var longPacketType: LongPacketType? {
        guard form == .long, version == .v1 else { return nil }
        switch (firstByte & 0x30) >> 4 {
        case 0: return .initial
        case 1: return .zeroRTT
        case 2: return .handshake
        default: return .retry
        }
    }

    /// QUIC v1 packets carry a fixed bit of 1 (section 17.2); one with 0 is not a v1 packet unless the peer
    /// negotiated greasing it (RFC 9287), which no peer has done before its first Initial.
    public var fixedBit: Bool { firstByte & 0x40 != 0 }

    public enum ParseError: Error, Equatable, Sendable {
        /// A datagram of zero bytes (ngtcp2 asserts on those; they never reach it).
        case empty
        /// ngtcp2 could not decode the header: truncated, a connection ID over 20 bytes for a version it
        /// supports, or a version it does not support in a datagram under 1200 bytes (too small to answer).
        case undecodable
    }

    /// Decodes the first packet header of `datagram` with `ngtcp2_pkt_decode_version_cid`.
    ///
    /// `shortHeaderConnectionIDLength` is the length of the connection IDs this endpoint issues (0 to 20):
    /// a short header does not carry it. Never traps, whatever the bytes or the length.
    public static func parse(_ datagram: ByteBuffer,
                             shortHeaderConnectionIDLength: Int) -> Result<QUICPacketHeader, ParseError> {
        datagram.withUnsafeReadableBytes {
            parse($0, shortHeaderConnectionIDLength: shortHeaderConnectionIDLength)
        }
    }

    static func parse(_ bytes: UnsafeRawBufferPointer,
                      shortHeaderConnectionIDLength: Int) -> Result<QUICPacketHeader, ParseError> {
        guard let base = bytes.baseAddress, !bytes.isEmpty else { return .failure(.empty) }
        // ngtcp2 asserts on a short-header length over NGTCP2_MAX_CIDLEN.
        guard (0...QUICConnectionID.maxV1Length).contains(shortHeaderConnectionIDLength) else {
            return .failure(.undecodable)
        }
        var decoded = ngtcp2_version_cid()
        let code = ngtcp2_pkt_decode_version_cid(&decoded, base.assumingMemoryBound(to: UInt8.self), bytes.count,
                                                 shortHeaderConnectionIDLength)
        switch NGTCP2Status(code) {
        case .ok, .versionNegotiation:
            // Both fill every field (for VERSION_NEGOTIATION too, per ngtcp2.h).
            break
        default:
            return .failure(.undecodable)
        }
        let firstByte = bytes[0]
        guard let destination = QUICConnectionID(borrowing: decoded.dcid, count: decoded.dcidlen) else {
            return .failure(.undecodable)
        }
        if firstByte & 0x80 == 0 {
            return .success(QUICPacketHeader(form: .short, firstByte: firstByte, version: nil,
                                             destinationConnectionID: destination, sourceConnectionID: nil))
        }
        guard let source = QUICConnectionID(borrowing: decoded.scid, count: decoded.scidlen) else {
            return .failure(.undecodable)
        }
        return .success(QUICPacketHeader(form: .long, firstByte: firstByte,
                                         version: QUICVersion(rawValue: decoded.version),
                                         destinationConnectionID: destination, sourceConnectionID: source))
    }
}

extension QUICConnectionID {
    /// Copies `count` bytes from a pointer ngtcp2 returned into the datagram; `nil` for a null pointer with
    /// a non-zero count or an impossible length.
    init?(borrowing pointer: UnsafePointer<UInt8>?, count: Int) {
        if count == 0 {
            self.init()
            return
        }
        guard let pointer else { return nil }
        self.init(UnsafeRawBufferPointer(start: pointer, count: count))
    }
}
