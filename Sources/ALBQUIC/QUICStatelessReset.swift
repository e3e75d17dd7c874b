import CNgtcp2

/// The stateless reset tokens of RFC 9000 section 10.3, derived from a per-process secret and a connection
/// ID with `ngtcp2_crypto_generate_stateless_reset_token` (HKDF through GnuTLS), so that the listener can
/// hand a token out with each connection ID it issues (transport parameter, NEW_CONNECTION_ID) and compute
/// it again, without any table, for a short header it has no connection for.
///
/// It does not write reset packets (`ngtcp2_pkt_write_stateless_reset`, a later slice) and does not keep
/// the secret secret: whoever holds this value can reset every connection it names.
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
