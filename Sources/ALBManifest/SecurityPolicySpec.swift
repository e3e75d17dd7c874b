/// TLS protocol versions a policy may enable, ordered oldest first.
public enum TLSVersion: String, Sendable, Codable, CaseIterable, Comparable {
    case tls10 = "TLSv1.0"
    case tls11 = "TLSv1.1"
    case tls12 = "TLSv1.2"
    case tls13 = "TLSv1.3"

    public static func < (lhs: TLSVersion, rhs: TLSVersion) -> Bool {
        (allCases.firstIndex(of: lhs) ?? 0) < (allCases.firstIndex(of: rhs) ?? 0)
    }
}

/// A custom TLS policy (TLS versions and OpenSSL cipher names), and the table of predefined ones.
///
/// It does not configure TLS; ALBTLS maps it onto a TLS configuration.
public struct SecurityPolicySpec: Equatable, Sendable {
    public var tlsVersions: [TLSVersion]
    public var ciphers: [String]
    public init(tlsVersions: [TLSVersion], ciphers: [String]) {
        self.tlsVersions = tlsVersions
        self.ciphers = ciphers
    }

    /// ECDHE suites usable with TLS 1.2 and below.
    static let ecdheCiphers = [
        "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
        "ECDHE-RSA-AES128-SHA256", "ECDHE-RSA-AES256-SHA384",
        "ECDHE-RSA-AES128-SHA", "ECDHE-RSA-AES256-SHA",
    ]
    static let rsaCiphers = [
        "AES128-GCM-SHA256", "AES256-GCM-SHA384", "AES128-SHA256", "AES256-SHA256",
        "AES128-SHA", "AES256-SHA", "DES-CBC3-SHA",
    ]
    static let tls13Ciphers = ["TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"]

    /// Every cipher name a custom policy may use.
    public static let knownCiphers: [String] = ecdheCiphers + rsaCiphers + tls13Ciphers

    /// The predefined policies by id; a listener may name these without a SecurityPolicy resource.
    public static let predefined: [String: SecurityPolicySpec] = [
        "tls_cipher_policy_1_0": SecurityPolicySpec(tlsVersions: [.tls10, .tls11, .tls12],
                                                    ciphers: ecdheCiphers + rsaCiphers),
        "tls_cipher_policy_1_1": SecurityPolicySpec(tlsVersions: [.tls11, .tls12], ciphers: ecdheCiphers + rsaCiphers),
        "tls_cipher_policy_1_2": SecurityPolicySpec(tlsVersions: [.tls12], ciphers: ecdheCiphers + rsaCiphers),
        "tls_cipher_policy_1_2_strict": SecurityPolicySpec(tlsVersions: [.tls12], ciphers: ecdheCiphers),
        "tls_cipher_policy_1_2_strict_with_1_3": SecurityPolicySpec(tlsVersions: [.tls12, .tls13],
                                                                    ciphers: ecdheCiphers + tls13Ciphers),
    ]
}
