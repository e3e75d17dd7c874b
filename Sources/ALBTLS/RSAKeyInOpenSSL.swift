import ALBOpenSSL
import NIOCore
import NIOSSL

/// A server's RSA key as swift-nio-ssl's custom private key: BoringSSL runs the handshake and asks this key
/// for its one signature (or, for TLS 1.2's RSA key exchange, its one decryption), which OpenSSL makes
/// (`OpenSSLRSAPrivateKey` says why). The answer is computed at once, on the connection's event loop, as
/// BoringSSL's own would be; swift-nio-ssl resumes the handshake on the next tick of that loop.
struct RSAKeyInOpenSSL: NIOSSLCustomPrivateKey, Hashable {
    let key: OpenSSLRSAPrivateKey

    /// The TLS signature schemes of an RSA key, in BoringSSL's own order of preference (`kSignSignatureAlgorithms`, ssl/extensions.cc),
    /// so that a context with this key as its default prefers what it would have preferred with its own.
    /// MD5-SHA1 is TLS 1.0 and 1.1's, which BoringSSL uses without negotiating it.
    static let schemes: [(SignatureAlgorithm, OpenSSLRSAPrivateKey.Digest, OpenSSLRSAPrivateKey.Padding)] = [
        (.rsaPssRsaeSha256, .sha256, .pss), (.rsaPkcs1Sha256, .sha256, .pkcs1),
        (.rsaPssRsaeSha384, .sha384, .pss), (.rsaPkcs1Sha384, .sha384, .pkcs1),
        (.rsaPssRsaeSha512, .sha512, .pss), (.rsaPkcs1Sha512, .sha512, .pkcs1),
        (.rsaPkcs1Sha1, .sha1, .pkcs1), (SignatureAlgorithm(rawValue: 0xFF01), .md5sha1, .pkcs1),
    ]

    static let algorithms = schemes.map(\.0)

    /// Why a private-key operation failed; it names no key material.
    struct OperationFailed: Error, CustomStringConvertible {
        let description: String
    }

    var signatureAlgorithms: [SignatureAlgorithm] { Self.algorithms }

    func sign(channel: Channel, algorithm: SignatureAlgorithm, data: ByteBuffer) -> EventLoopFuture<ByteBuffer> {
        guard let scheme = Self.schemes.first(where: { $0.0 == algorithm }) else {
            return channel.eventLoop.makeFailedFuture(OperationFailed(description: "unsupported RSA signature scheme \(algorithm)"))
        }
        let signature = data.withUnsafeReadableBytes { key.sign($0, digest: scheme.1, padding: scheme.2) }
        guard let signature else {
            return channel.eventLoop.makeFailedFuture(OperationFailed(description: "the RSA signature failed"))
        }
        return channel.eventLoop.makeSucceededFuture(channel.allocator.buffer(bytes: signature))
    }

    func decrypt(channel: Channel, data: ByteBuffer) -> EventLoopFuture<ByteBuffer> {
        guard let plaintext = data.withUnsafeReadableBytes({ key.decryptWithoutPadding($0) }) else {
            return channel.eventLoop.makeFailedFuture(OperationFailed(description: "the RSA decryption failed"))
        }
        return channel.eventLoop.makeSucceededFuture(channel.allocator.buffer(bytes: plaintext))
    }

    static func == (lhs: Self, rhs: Self) -> Bool { lhs.key === rhs.key }

    func hash(into hasher: inout Hasher) { hasher.combine(ObjectIdentifier(key)) }
}
