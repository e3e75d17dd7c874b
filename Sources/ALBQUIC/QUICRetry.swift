import CNgtcp2
import NIOCore

/// Address validation with Retry (RFC 9000 section 8.1.2) through ngtcp2's crypto helper: Retry packets
/// carrying a token sealed with a per-endpoint secret, the check of a token a client sends back, and the
/// CONNECTION_CLOSE (INVALID_TOKEN) for one that fails. Stateless: nothing is kept between the Retry and
/// the client's second Initial.
///
/// Tokens are stamped with ngtcp2's clock (the endpoint's `now`, monotonic) rather than wall-clock time:
/// the secret lives and dies with the process, so no other process could check them anyway. They do not
/// survive a restart or a takeover (the client then gets INVALID_TOKEN and starts over).
public struct QUICRetryTokens: Sendable {
    /// How long a Retry token is accepted: a client answers a Retry within a round trip.
    public static let validity: UInt64 = 10_000_000_000
    private let secret: [UInt8]

    /// `nil` for a secret under 16 bytes.
    public init?(secret: [UInt8]) {
        guard secret.count >= 16 else { return nil }
        self.secret = secret
    }

    public static func random() -> QUICRetryTokens {
        var generator = SystemRandomNumberGenerator()
        // 32 bytes: never under 16.
        return QUICRetryTokens(unchecked: (0..<32).map { _ in UInt8.random(in: 0...255, using: &generator) })
    }

    private init(unchecked secret: [UInt8]) { self.secret = secret }

    /// A Retry packet for a client's first Initial (a v1 long header with both IDs of at most 20 bytes, as
    /// the triage guarantees for `.newConnection`) from `remote`, with a new source connection ID of
    /// `idLength` bytes: the client's next Initial goes to that ID and carries the token.
    public func retryPacket(for header: QUICPacketHeader, remote: SocketAddress, idLength: Int, now: UInt64,
                            allocator: ByteBufferAllocator) -> ByteBuffer? {
        guard header.version == .v1, let clientSourceID = header.sourceConnectionID,
              clientSourceID.count <= QUICConnectionID.maxV1Length,
              header.destinationConnectionID.count <= QUICConnectionID.maxV1Length,
              (1...QUICConnectionID.maxV1Length).contains(idLength),
              var address = QUICSocketAddressStorage(remote)
        else { return nil }
        let retrySourceID = QUICConnectionID.random(count: idLength)
        var retryCID = ngtcp2_cid(retrySourceID)
        var originalCID = ngtcp2_cid(header.destinationConnectionID)
        var clientCID = ngtcp2_cid(clientSourceID)
        var token = [UInt8](repeating: 0, count: Self.tokenCapacity)
        let addressLength = ngtcp2_socklen(address.length)
        let tokenLength = token.withUnsafeMutableBufferPointer { tokenBuffer in
            secret.withUnsafeBufferPointer { secretBuffer in
                withUnsafeBytes(of: &address.storage) { addressBytes in
                    ngtcp2_crypto_generate_retry_token(
                        tokenBuffer.baseAddress, secretBuffer.baseAddress, secretBuffer.count, NGTCP2_PROTO_VER_V1,
                        addressBytes.baseAddress?.assumingMemoryBound(to: ngtcp2_sockaddr.self), addressLength,
                        &retryCID, &originalCID, now)
                }
            }
        }
        guard tokenLength > 0, tokenLength <= token.count else { return nil }
        var packet = allocator.buffer(capacity: Self.packetCapacity)
        var written = 0
        packet.writeWithUnsafeMutableBytes(minimumWritableBytes: Self.packetCapacity) { destination in
            guard let base = destination.baseAddress?.assumingMemoryBound(to: UInt8.self) else { return 0 }
            written = token.withUnsafeBufferPointer { tokenBuffer in
                ngtcp2_crypto_write_retry(base, Self.packetCapacity, NGTCP2_PROTO_VER_V1, &clientCID, &retryCID,
                                          &originalCID, tokenBuffer.baseAddress, tokenLength)
            }
            return max(written, 0)
        }
        return written > 0 ? packet : nil
    }

    /// The client's original destination connection ID sealed in `token`, when the token is ours, for this
    /// address, sent to the Retry's ID (`header.destinationConnectionID`) and under ``validity`` old.
    public func verify(_ token: [UInt8], header: QUICPacketHeader, remote: SocketAddress,
                       now: UInt64) -> QUICConnectionID? {
        guard header.version == .v1, header.destinationConnectionID.count <= QUICConnectionID.maxV1Length,
              !token.isEmpty, var address = QUICSocketAddressStorage(remote)
        else { return nil }
        var original = ngtcp2_cid()
        var destination = ngtcp2_cid(header.destinationConnectionID)
        let addressLength = ngtcp2_socklen(address.length)
        let code = token.withUnsafeBufferPointer { tokenBuffer in
            secret.withUnsafeBufferPointer { secretBuffer in
                withUnsafeBytes(of: &address.storage) { addressBytes in
                    ngtcp2_crypto_verify_retry_token(
                        &original, tokenBuffer.baseAddress, tokenBuffer.count, secretBuffer.baseAddress,
                        secretBuffer.count, NGTCP2_PROTO_VER_V1,
                        addressBytes.baseAddress?.assumingMemoryBound(to: ngtcp2_sockaddr.self), addressLength,
                        &destination, Self.validity, now)
                }
            }
        }
        return code == 0 ? QUICConnectionID(original) : nil
    }

    /// An Initial with CONNECTION_CLOSE (INVALID_TOKEN, RFC 9000 section 8.1.3) for a client whose Retry
    /// token failed: it learns at once instead of retrying until its handshake timeout.
    public func invalidTokenClose(for header: QUICPacketHeader, allocator: ByteBufferAllocator) -> ByteBuffer? {
        guard header.version == .v1, let clientSourceID = header.sourceConnectionID,
              clientSourceID.count <= QUICConnectionID.maxV1Length,
              header.destinationConnectionID.count <= QUICConnectionID.maxV1Length
        else { return nil }
        var clientCID = ngtcp2_cid(clientSourceID)
        var ourCID = ngtcp2_cid(header.destinationConnectionID)
        var packet = allocator.buffer(capacity: Self.packetCapacity)
        var written = 0
        packet.writeWithUnsafeMutableBytes(minimumWritableBytes: Self.packetCapacity) { destination in
            guard let base = destination.baseAddress?.assumingMemoryBound(to: UInt8.self) else { return 0 }
            written = ngtcp2_crypto_write_connection_close(base, Self.packetCapacity, NGTCP2_PROTO_VER_V1, &clientCID,
                                                           &ourCID, UInt64(NGTCP2_INVALID_TOKEN), nil, 0)
            return max(written, 0)
        }
        return written > 0 ? packet : nil
    }

    /// NGTCP2_CRYPTO_MAX_RETRY_TOKENLEN (a macro Swift cannot import): magic, CID length, a 20-byte CID,
    /// the timestamp, the AEAD tag and 32 random bytes.
    static let tokenCapacity = 1 + 1 + 20 + 8 + 16 + 32
    /// A Retry (header, three IDs, the token, the integrity tag) or a CONNECTION_CLOSE fits well in this.
    static let packetCapacity = 256
}
