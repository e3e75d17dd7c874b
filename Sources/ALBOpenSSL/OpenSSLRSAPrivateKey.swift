import CLibcrypto

/// An RSA private key held by OpenSSL's libcrypto, for the private-key operations of TLS handshakes.
///
/// Why not BoringSSL, which runs everything else of TLS: on CPUs with AVX-512 IFMA, OpenSSL 3's RSA-2048
/// private operation takes about half the time of BoringSSL's (`openssl speed rsa2048`: 196 µs a signature
/// here), and an RSA handshake is mostly that one operation: BoringSSL's Montgomery multiplication was 56% of
/// alb's CPU under a load of full RSA handshakes (`perf`). docs/decisions.md has the figures.
///
/// The class owns its `EVP_PKEY` and frees it; no C type leaves this module. Operations take no lock: OpenSSL
/// allows one key to be used from several threads at once, each operation with a context of its own.
/// libcrypto is opened with the first key (CLibcrypto's shim says why); without it no key is made.
public final class OpenSSLRSAPrivateKey: @unchecked Sendable {
    /// The digest a signature is made over, as the TLS signature scheme names it.
    public enum Digest: Sendable {
        case sha1, sha256, sha384, sha512
        /// TLS 1.0 and 1.1: MD5 and SHA-1 concatenated, signed without a DigestInfo.
        case md5sha1
    }

    /// How the digest is padded: PKCS #1 v1.5, or PSS with a salt as long as the digest (RFC 8446 section
    /// 4.2.3; MGF1 over the same digest).
    public enum Padding: Sendable {
        case pkcs1, pss
    }

    private let c: alb_libcrypto
    private let key: OpaquePointer
    /// The modulus in bytes: the length of every signature and decryption.
    public let size: Int

    /// Whether libcrypto.so.3 opened with every function used here: without it every key is nil and RSA keys
    /// sign in BoringSSL.
    public static var isAvailable: Bool { libcrypto != nil }

    /// The key in `pem` (PKCS #1 or PKCS #8), or nil when it is not an unencrypted RSA private key OpenSSL can
    /// read. Nothing about the key is logged or kept apart from OpenSSL's copy.
    public init?(pem: [UInt8]) {
        guard let c = libcrypto else { return nil }
        self.c = c
        let loaded: OpaquePointer? = pem.withUnsafeBytes { bytes in
            // The memory BIO reads `pem` in place, so it lives only inside this closure.
            guard let base = bytes.baseAddress, bytes.count <= Int(Int32.max),
                  let bio = c.BIO_new_mem_buf!(base, Int32(bytes.count)) else { return nil }
            defer { _ = c.BIO_free!(bio) }
            return c.PEM_read_bio_PrivateKey!(bio, nil, alb_no_passphrase, nil)
        }
        guard let loaded else {
            c.ERR_clear_error!()
            return nil
        }
        guard c.EVP_PKEY_get_base_id!(loaded) == EVP_PKEY_RSA, c.EVP_PKEY_get_size!(loaded) > 0 else {
            c.EVP_PKEY_free!(loaded)
            return nil
        }
        self.key = loaded
        self.size = Int(c.EVP_PKEY_get_size!(loaded))
    }

    deinit { c.EVP_PKEY_free!(key) }

    /// Hashes `message` with `digest` and signs it; nil if OpenSSL fails (its error queue is cleared).
    public func sign(_ message: UnsafeRawBufferPointer, digest: Digest, padding: Padding) -> [UInt8]? {
        guard let context = c.EVP_MD_CTX_new!() else { return nil }
        defer { c.EVP_MD_CTX_free!(context) }
        let algorithm = algorithm(digest)
        var keyContext: OpaquePointer?
        guard c.EVP_DigestSignInit!(context, &keyContext, algorithm, nil, key) == 1, let keyContext else {
            return failed()
        }
        switch padding {
        case .pkcs1:
            guard c.EVP_PKEY_CTX_set_rsa_padding!(keyContext, RSA_PKCS1_PADDING) == 1 else { return failed() }
        case .pss:
            guard c.EVP_PKEY_CTX_set_rsa_padding!(keyContext, RSA_PKCS1_PSS_PADDING) == 1,
                  c.EVP_PKEY_CTX_set_rsa_pss_saltlen!(keyContext, RSA_PSS_SALTLEN_DIGEST) == 1,
                  c.EVP_PKEY_CTX_set_rsa_mgf1_md!(keyContext, algorithm) == 1 else { return failed() }
        }
        var signature = [UInt8](repeating: 0, count: size)
        var length = size
        let signed = signature.withUnsafeMutableBytes { out in
            c.EVP_DigestSign!(context, out.baseAddress?.assumingMemoryBound(to: UInt8.self), &length,
                           message.baseAddress?.assumingMemoryBound(to: UInt8.self), message.count)
        }
        guard signed == 1, length <= size else { return failed() }
        signature.removeLast(size - length)
        return signature
    }

    /// The raw RSA private operation on `ciphertext` (no padding removed), as TLS 1.2's RSA key exchange asks
    /// of a key: the TLS library checks the padding itself, in constant time. Nil if OpenSSL refuses it (a
    /// ciphertext not exactly `size` bytes long, or not below the modulus).
    public func decryptWithoutPadding(_ ciphertext: UnsafeRawBufferPointer) -> [UInt8]? {
        guard ciphertext.count == size, let context = c.EVP_PKEY_CTX_new!(key, nil) else { return nil }
        defer { c.EVP_PKEY_CTX_free!(context) }
        guard c.EVP_PKEY_decrypt_init!(context) == 1, c.EVP_PKEY_CTX_set_rsa_padding!(context, RSA_NO_PADDING) == 1 else {
            return failed()
        }
        var plaintext = [UInt8](repeating: 0, count: size)
        var length = size
        let decrypted = plaintext.withUnsafeMutableBytes { out in
            c.EVP_PKEY_decrypt!(context, out.baseAddress?.assumingMemoryBound(to: UInt8.self), &length,
                             ciphertext.baseAddress?.assumingMemoryBound(to: UInt8.self), ciphertext.count)
        }
        guard decrypted == 1, length == size else { return failed() }
        return plaintext
    }

    private func algorithm(_ digest: Digest) -> OpaquePointer? {
        switch digest {
        case .sha1: c.EVP_sha1!()
        case .sha256: c.EVP_sha256!()
        case .sha384: c.EVP_sha384!()
        case .sha512: c.EVP_sha512!()
        case .md5sha1: c.EVP_md5_sha1!()
        }
    }

    /// OpenSSL's error queue is per thread and grows until read: an event loop thread must not keep it.
    private func failed() -> [UInt8]? {
        c.ERR_clear_error!()
        return nil
    }
}

/// libcrypto's functions, opened once, by the first key. Every field is set when this is not nil
/// (`alb_libcrypto_open` returns 1 only then), which is why the calls above unwrap them with `!`.
private let libcrypto: alb_libcrypto? = {
    var functions = alb_libcrypto()
    return alb_libcrypto_open(&functions) == 1 ? functions : nil
}()
