import CNgtcp2

/// Why GnuTLS refused a certificate and key. The message names the step and GnuTLS's reason, never the
/// key's bytes.
public struct QUICCredentialsError: Error, Equatable, Sendable, CustomStringConvertible {
    public let description: String
}

/// The owner of one GnuTLS `gnutls_certificate_credentials_t` holding a server certificate chain and its
/// private key, loaded from PEM bytes (the same bytes `ALBTLS` reads for TCP TLS). Every QUIC connection's
/// TLS session of a listener uses it, and each ``QUICConnection`` keeps a strong reference, because GnuTLS
/// requires the credentials to outlive every session that was given them. Freed in `deinit`.
///
/// It does not validate the certificate (names, dates, CA flag: `ALBTLS` decides that once for both
/// transports) and holds one certificate for now; SNI selection among several (`additional`) is a later
/// slice's `gnutls_certificate_set_x509_key_mem2` call per certificate.
///
/// `@unchecked Sendable`: it is immutable after `init`, and GnuTLS only reads credentials while sessions
/// use them, from any thread (GnuTLS documents credentials as shareable once set up).
public final class QUICServerCredentials: @unchecked Sendable {
    let credentials: gnutls_certificate_credentials_t

    /// Loads `chainPEM` (the server certificate first, then its intermediates) and `keyPEM` (unencrypted).
    /// Throws ``QUICCredentialsError`` when GnuTLS cannot parse either, or the key does not match.
    public init(chainPEM: [UInt8], keyPEM: [UInt8]) throws {
        guard !chainPEM.isEmpty else { throw QUICCredentialsError(description: "the certificate chain is empty") }
        guard !keyPEM.isEmpty else { throw QUICCredentialsError(description: "the private key is empty") }
        var allocated: gnutls_certificate_credentials_t?
        let code = gnutls_certificate_allocate_credentials(&allocated)
        guard code == GNUTLS_E_SUCCESS, let allocated else {
            throw QUICCredentialsError(description: "GnuTLS could not allocate credentials: \(Self.reason(code))")
        }
        // gnutls_datum_t takes mutable pointers but set_x509_key_mem2 only reads them (it copies what it keeps).
        var chain = chainPEM
        var key = keyPEM
        let loaded = chain.withUnsafeMutableBufferPointer { chainBuffer in
            key.withUnsafeMutableBufferPointer { keyBuffer in
                var chainDatum = gnutls_datum_t(data: chainBuffer.baseAddress, size: UInt32(chainBuffer.count))
                var keyDatum = gnutls_datum_t(data: keyBuffer.baseAddress, size: UInt32(keyBuffer.count))
                return gnutls_certificate_set_x509_key_mem2(allocated, &chainDatum, &keyDatum, GNUTLS_X509_FMT_PEM,
                                                            nil, 0)
            }
        }
        // The copy of the key is no longer needed; do not leave it in freed memory longer than necessary.
        key.withUnsafeMutableBufferPointer { $0.update(repeating: 0) }
        guard loaded >= 0 else {
            gnutls_certificate_free_credentials(allocated)
            throw QUICCredentialsError(
                description: "GnuTLS refused the certificate chain or private key: \(Self.reason(loaded))")
        }
        credentials = allocated
    }

    deinit {
        gnutls_certificate_free_credentials(credentials)
    }

    /// GnuTLS's text for a code: a fixed string per code, never anything from the input.
    static func reason(_ code: Int32) -> String {
        guard let text = gnutls_strerror(code) else { return "GnuTLS error \(code)" }
        return String(cString: text) + " (\(code))"
    }
}
