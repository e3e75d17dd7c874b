import CNgtcp2
import NIOCore

/// What a QUIC listener does with one received UDP datagram, decided from its first packet header alone
/// (``QUICDatagramClassifier``).
public enum QUICDatagramTriage: Equatable, Sendable {
    /// Ignore the datagram; nothing is sent and no connection is touched.
    case drop(QUICDropReason)
    /// Send these bytes (a Version Negotiation packet) back to the datagram's source; no state is kept.
    case sendVersionNegotiation(ByteBuffer)
    /// Hand the whole datagram to the connection this ID is registered for.
    case route(QUICConnectionID)
    /// A client's first Initial: may open a connection (after address validation when the listener asks
    /// for it; ``QUICInitialPacket/token`` tells what the client presented).
    case newConnection(QUICInitialPacket)
}

/// Why a datagram was dropped: counted per listener, never answered.
public enum QUICDropReason: Equatable, Sendable {
    case empty
    /// See ``QUICPacketHeader/ParseError/undecodable``.
    case undecodableHeader
    /// A Version Negotiation packet: only clients act on those (RFC 9000 section 6.2).
    case versionNegotiationPacket
    /// A long header of a version other than v1 in a datagram under 1200 bytes: too small to answer
    /// (RFC 9000 section 5.2.2, "servers MUST drop smaller packets that specify unsupported versions").
    case unsupportedVersionTooSmall
    /// A short header, or a v1 long header other than an Initial, for no connection this listener has.
    /// (A later slice may answer short headers with a stateless reset, RFC 9000 section 10.3.)
    case unknownConnection
    /// An Initial in a datagram under 1200 bytes (RFC 9000 section 14.1).
    case initialTooSmall
    /// An Initial whose fixed bit is 0 (RFC 9000 section 17.2).
    case fixedBitClear
    /// An Initial without a token whose destination connection ID is under 8 bytes (section 7.2).
    case initialConnectionIDTooShort
    /// An Initial whose token or length field runs past the datagram (`ngtcp2_accept` refused it).
    case malformedInitial
}

/// A client's Initial packet that may open a connection, with the fields the listener needs to create
/// it: the header and the address-validation token.
public struct QUICInitialPacket: Equatable, Sendable {
    public enum Token: Equatable, Sendable {
        case none
        /// A token from our Retry packet (first byte `NGTCP2_CRYPTO_TOKEN_MAGIC_RETRY`).
        case retry([UInt8])
        /// A token from our NEW_TOKEN frame (first byte `NGTCP2_CRYPTO_TOKEN_MAGIC_REGULAR`).
        case regular([UInt8])
        /// Anything else: not ours, to be ignored (or answered with a Retry when validating addresses).
        case unrecognized([UInt8])

        init(_ bytes: [UInt8]) {
            guard let magic = bytes.first else {
                self = .none
                return
            }
            switch magic {
            case UInt8(NGTCP2_CRYPTO_TOKEN_MAGIC_RETRY): self = .retry(bytes)
            case UInt8(NGTCP2_CRYPTO_TOKEN_MAGIC_REGULAR): self = .regular(bytes)
            default: self = .unrecognized(bytes)
            }
        }
    }

    public var header: QUICPacketHeader
    public var token: Token
}

/// The pure triage at a QUIC listener's datagram entry point: one datagram in, one ``QUICDatagramTriage``
/// out. It performs no I/O, keeps no state and never traps, whatever the bytes; the listener performs the
/// decision. The connection table is consulted through `isKnownConnection`, so the triage is tested
/// without one.
///
/// Order of the checks (as ngtcp2's example server, except that only v1 is served): decode the header;
/// answer other versions with Version Negotiation (before any table lookup, RFC 9000 section 6.1); route a
/// known destination connection ID; otherwise only a v1 Initial that passes `ngtcp2_accept` opens a
/// connection. The datagram is never read past its first packet header here.
public struct QUICDatagramClassifier: Sendable {
    /// The smallest datagram that may carry a client's Initial, and that Version Negotiation answers.
    public static let minimumInitialDatagramSize = Int(NGTCP2_MAX_UDP_PAYLOAD_SIZE)
    /// The shortest destination connection ID a client's first Initial may carry (RFC 9000 section 7.2).
    public static let minimumInitialConnectionIDLength = Int(NGTCP2_MIN_INITIAL_DCIDLEN)

    /// The length of the connection IDs this listener issues: the length of every short header's
    /// destination connection ID that can be ours.
    public let connectionIDLength: Int

    /// `nil` unless `connectionIDLength` is 1 to 20 (a zero-length ID could not tell connections apart).
    public init?(connectionIDLength: Int) {
        guard (1...QUICConnectionID.maxV1Length).contains(connectionIDLength) else { return nil }
        self.connectionIDLength = connectionIDLength
    }

    public func triage(_ datagram: ByteBuffer, isKnownConnection: (QUICConnectionID) -> Bool,
                       random: inout some RandomNumberGenerator,
                       allocator: ByteBufferAllocator) -> QUICDatagramTriage {
        let header: QUICPacketHeader
        switch QUICPacketHeader.parse(datagram, shortHeaderConnectionIDLength: connectionIDLength) {
        case .success(let parsed): header = parsed
        case .failure(.empty): return .drop(.empty)
        case .failure(.undecodable): return .drop(.undecodableHeader)
        }
        guard let version = header.version else {
            return isKnownConnection(header.destinationConnectionID)
                ? .route(header.destinationConnectionID) : .drop(.unknownConnection)
        }
        if version == .negotiation { return .drop(.versionNegotiationPacket) }
        if version != .v1 {
            // ngtcp2 already refused the versions it does not know in small datagrams; the drafts and v2
            // draft it knows (and this listener does not serve) reach here whatever their size.
            guard datagram.readableBytes >= Self.minimumInitialDatagramSize,
                  let packet = QUICVersionNegotiation.packet(answering: header, random: &random, allocator: allocator)
            else { return .drop(.unsupportedVersionTooSmall) }
            return .sendVersionNegotiation(packet)
        }
        if isKnownConnection(header.destinationConnectionID) { return .route(header.destinationConnectionID) }
        guard header.longPacketType == .initial else { return .drop(.unknownConnection) }
        guard datagram.readableBytes >= Self.minimumInitialDatagramSize else { return .drop(.initialTooSmall) }
        guard header.fixedBit else { return .drop(.fixedBitClear) }
        return datagram.withUnsafeReadableBytes { Self.accept($0, header: header) }
    }

    /// `ngtcp2_accept` decodes the whole Initial header (token and length fields included) and checks the
    /// datagram size and the destination connection ID's length.
    private static func accept(_ bytes: UnsafeRawBufferPointer, header: QUICPacketHeader) -> QUICDatagramTriage {
        guard let base = bytes.baseAddress, !bytes.isEmpty else { return .drop(.empty) }
        var decoded = ngtcp2_pkt_hd()
        let code = ngtcp2_accept(&decoded, base.assumingMemoryBound(to: UInt8.self), bytes.count)
        switch NGTCP2Status(code) {
        case .ok:
            break
        case .invalidArgument where decoded.type == UInt8(NGTCP2_PKT_INITIAL.rawValue):
            // The header decoded (ngtcp2 fills it last) and the datagram is large enough: what failed is
            // the destination connection ID's length.
            return .drop(.initialConnectionIDTooShort)
        default:
            return .drop(.malformedInitial)
        }
        var token: [UInt8] = []
        if decoded.token.len > 0, let tokenBase = decoded.token.base {
            token = Array(UnsafeBufferPointer(start: tokenBase, count: decoded.token.len))
        }
        return .newConnection(QUICInitialPacket(header: header, token: QUICInitialPacket.Token(token)))
    }
}
