import CNgtcp2

/// The stateless reset tokens of RFC 9000 section 10.3, derived from a per-process secret and a connection
/// ID with `ngtcp2_crypto_generate_stateless_reset_token` (HKDF through GnuTLS), so that the listener can
/// hand a token out with each connection ID it issues (transport parameter, NEW_CONNECTION_ID) and compute
/// it again, without any table, for a short header it has no connection for.
///
/// It writes the reset packets too (``statelessReset(for:triggeringSize:random:)``); it does not keep the
/// secret secret: whoever holds this value can reset every connection it names. One key per listener
/// endpoint and process: after a restart the tokens differ, and a client ignores a reset it cannot match.
public struct QUICStatelessResetKey: Sendable {
    public static let tokenLength = Int(NGTCP2_STATELESS_RESET_TOKENLEN)
    /// The shortest secret accepted: the token is only as strong as the key it is derived from.
    public static let minimumSecretLength = 16

    private let secret: [UInt8]

    /// `nil` for a secret under ``minimumSecretLength`` bytes.
    public init?(secret: [UInt8]) {
        guard secret.count >= Self.minimumSecretLength else { return nil }
        self.secret = secret
    }

    /// A key from the system's random number generator (getrandom on Linux).
    public static func random() -> QUICStatelessResetKey {
        var generator = SystemRandomNumberGenerator()
        return QUICStatelessResetKey(unchecked: (0..<32).map { _ in UInt8.random(in: 0...255, using: &generator) })
    }

    private init(unchecked secret: [UInt8]) { self.secret = secret }

    /// The smallest datagram answered with a reset (RFC 9000 section 10.3: a short header with our 18-byte
    /// connection ID, a packet number and an AEAD tag is at least this long; anything smaller cannot be
    /// one of ours, and a reset must be smaller than its trigger).
    public static let minimumTriggeringDatagramSize = 41
    /// Resets are at most this long: enough to look like a short packet (section 10.3), small for a reflector.
    public static let maximumResetSize = 43

    /// A stateless reset packet for a short header addressed to `id` in a datagram of `triggeringSize` bytes:
    /// random bits, then the token for `id`, one byte shorter than the trigger (so two endpoints cannot
    /// reset each other in a loop, section 10.3.3) and at most ``maximumResetSize``. `nil` for a trigger
    /// under ``minimumTriggeringDatagramSize`` or an ID no v1 connection could have.
    public func statelessReset(for id: QUICConnectionID, triggeringSize: Int,
                               random: inout some RandomNumberGenerator) -> [UInt8]? {
        guard triggeringSize >= Self.minimumTriggeringDatagramSize, let token = token(for: id) else { return nil }
        let size = min(triggeringSize - 1, Self.maximumResetSize)
        // One byte for the header; ngtcp2 refuses fewer than NGTCP2_MIN_STATELESS_RESET_RANDLEN (5) random bytes.
        let randomCount = size - 1 - Self.tokenLength
        guard randomCount >= Int(NGTCP2_MIN_STATELESS_RESET_RANDLEN) else { return nil }
        let randomBytes = (0..<randomCount).map { _ in UInt8.random(in: 0...255, using: &random) }
        var packet = [UInt8](repeating: 0, count: size)
        let written = packet.withUnsafeMutableBufferPointer { destination in
            token.withUnsafeBufferPointer { tokenBuffer in
                randomBytes.withUnsafeBufferPointer { randomBuffer in
                    ngtcp2_pkt_write_stateless_reset(destination.baseAddress, destination.count, tokenBuffer.baseAddress,
                                                     randomBuffer.baseAddress, randomBuffer.count)
                }
            }
        }
        guard written > 0 else { return nil }
        return Array(packet.prefix(Int(written)))
    }

    /// The 16-byte token for `id`; `nil` for an ID that QUIC v1 could not have issued (over 20 bytes) or
    /// when the library fails.
    public func token(for id: QUICConnectionID) -> [UInt8]? {
        guard id.count <= QUICConnectionID.maxV1Length else { return nil }
        var cid = ngtcp2_cid()
        id.withUnsafeBytes { bytes in
            ngtcp2_cid_init(&cid, bytes.baseAddress?.assumingMemoryBound(to: UInt8.self), bytes.count)
        }
        var token = [UInt8](repeating: 0, count: Self.tokenLength)
        let code = token.withUnsafeMutableBufferPointer { tokenBuffer in
            secret.withUnsafeBufferPointer { secretBuffer in
                ngtcp2_crypto_generate_stateless_reset_token(tokenBuffer.baseAddress, secretBuffer.baseAddress,
                                                             secretBuffer.count, &cid)
            }
        }
        return code == 0 ? token : nil
    }
}
