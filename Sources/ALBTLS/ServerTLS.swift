import NIOCore
import NIOSSL

/// A TLS protocol version a policy may enable.
public enum TLSProtocolVersion: String, Sendable, CaseIterable, Comparable {
    case tls10 = "TLSv1.0"
    case tls11 = "TLSv1.1"
    case tls12 = "TLSv1.2"
    case tls13 = "TLSv1.3"

    public static func < (lhs: Self, rhs: Self) -> Bool {
        (allCases.firstIndex(of: lhs) ?? 0) < (allCases.firstIndex(of: rhs) ?? 0)
    }

    var nio: TLSVersion {
        switch self {
        case .tls10: .tlsv1
        case .tls11: .tlsv11
        case .tls12: .tlsv12
        case .tls13: .tlsv13
        }
    }
}

/// A TLS security policy as BoringSSL can enforce it: a contiguous range of versions and the TLS 1.2-and-
/// below cipher suites. What a policy asks for beyond that is listed in ``limitations`` (and reported as
/// an `alb validate` warning), never dropped silently.
public struct TLSPolicy: Sendable, Equatable {
    public var minimum: TLSProtocolVersion
    public var maximum: TLSProtocolVersion
    /// OpenSSL-style names, in order, for TLS 1.2 and below.
    public var ciphers: [String]
    public var limitations: [String]

    /// The TLS 1.3 suites: BoringSSL enables all three whenever TLS 1.3 is on and offers no way to choose.
    public static let tls13Suites = ["TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"]

    /// - Parameters:
    ///   - versions: the versions the policy enables (not empty).
    ///   - ciphers: OpenSSL-style suite names, TLS 1.3 names included.
    public init(versions: [TLSProtocolVersion], ciphers: [String]) {
        let sorted = versions.sorted()
        let lowest = sorted.first ?? .tls12
        let highest = sorted.last ?? .tls12
        minimum = lowest
        maximum = highest
        var limitations: [String] = []
        let skipped = TLSProtocolVersion.allCases.filter { $0 > lowest && $0 < highest && !versions.contains($0) }
        if !skipped.isEmpty {
            limitations.append("TLS versions form one range in BoringSSL: \(skipped.map(\.rawValue).joined(separator: ", ")) "
                               + "will be accepted too")
        }
        let tls13 = ciphers.filter { Self.tls13Suites.contains($0) }
        if highest == .tls13, !tls13.isEmpty, Set(tls13) != Set(Self.tls13Suites) {
            limitations.append("BoringSSL cannot choose among the TLS 1.3 suites: all of "
                               + "\(Self.tls13Suites.joined(separator: ", ")) are enabled")
        }
        var usable: [String] = []
        for name in ciphers where !Self.tls13Suites.contains(name) {
            if Self.isSupported(name) {
                usable.append(name)
            } else {
                limitations.append("\(name) is not supported by BoringSSL and is left out")
            }
        }
        self.ciphers = usable
        self.limitations = limitations
    }

    /// Whether BoringSSL knows the TLS 1.2-and-below suite. The set is BoringSSL's own cipher table
    /// (ssl/ssl_cipher.cc in the copy swift-nio-ssl vendors): it must be checked before a context is built,
    /// because swift-nio-ssl stops the process on a cipher list BoringSSL refuses.
    public static func isSupported(_ cipher: String) -> Bool { boringSSLCiphers.contains(cipher) }

    static let boringSSLCiphers: Set<String> = [
        "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
        "ECDHE-ECDSA-AES128-SHA256", "ECDHE-RSA-AES128-SHA256",
        "ECDHE-ECDSA-AES128-SHA", "ECDHE-RSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA", "ECDHE-RSA-AES256-SHA",
        "AES128-GCM-SHA256", "AES256-GCM-SHA384", "AES128-SHA", "AES256-SHA", "DES-CBC3-SHA",
    ]
}

/// What a TLS listener serves: one BoringSSL context holding the default certificate, with the
/// additional certificates chosen by SNI for each handshake, under one policy.
///
/// It is immutable; a certificate or policy change builds a new one, which the listener's snapshot swaps
/// in atomically, so the next handshake uses it and established connections are untouched.
public struct ServerTLS: Sendable {
    public let context: NIOSSLContext
    /// Identifies the material and settings, so two configurations compare equal only if they serve
    /// the same (the context itself is not comparable).
    public let identity: String
    public let defaultCertificate: ServerCertificate
    public let additionalCertificates: [ServerCertificate]
    /// What ALPN offers, most preferred first (`h2`, `http/1.1`).
    public let applicationProtocols: [String]
    /// Mutual authentication is on: every connection has a verified client certificate.
    public let verifiesClients: Bool

    /// - Parameter identity: a digest of everything that went in (file contents, policy, protocols).
    /// - Parameter clientCA: mutual authentication: clients must present a certificate this bundle
    ///   signed, or their handshake fails.
    public init(defaultCertificate: ServerCertificate, additional: [ServerCertificate], policy: TLSPolicy,
                applicationProtocols: [String], clientCA: CABundle? = nil, identity: String) throws {
        // RSA keys sign in OpenSSL (`RSAKeyInOpenSSL`). swift-nio-ssl makes the default key's signature schemes
        // the context's, for every certificate SNI may choose: the default key is OpenSSL's only when every
        // key is RSA, or an ECDSA certificate chosen by SNI would find no scheme it can sign with.
        let everyKeyIsRSA = additional.allSatisfy { $0.openSSLKey != nil }
        let defaultKey = everyKeyIsRSA ? defaultCertificate.openSSLKey ?? defaultCertificate.key : defaultCertificate.key
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: defaultCertificate.chain.map { .certificate($0) },
            privateKey: .privateKey(defaultKey))
        configuration.minimumTLSVersion = policy.minimum.nio
        configuration.maximumTLSVersion = policy.maximum.nio
        if !policy.ciphers.isEmpty {
            configuration.cipherSuites = policy.ciphers.joined(separator: ":")
        } else if policy.maximum == .tls13 {
            // No TLS 1.2 suite is left: only TLS 1.3 can be spoken (its suites need no list).
            configuration.minimumTLSVersion = .tlsv13
        } else {
            throw CertificateProblem("the security policy leaves no cipher suite that BoringSSL supports")
        }
        configuration.applicationProtocols = applicationProtocols
        if let clientCA {
            // A client certificate is required and must chain to the bundle; names are not checked.
            configuration.certificateVerification = .noHostnameVerification
            configuration.trustRoots = .certificates(clientCA.certificates)
            configuration.sendCANameList = true
        }
        self.verifiesClients = clientCA != nil
        if !additional.isEmpty {
            let selection = SNISelection(default: defaultCertificate, additional: additional)
            configuration.sslContextCallback = { values, promise in
                guard let chosen = selection.certificate(for: values.serverHostname), chosen.name != defaultCertificate.name else {
                    promise.succeed(.noChanges)
                    return
                }
                var override = NIOSSLContextConfigurationOverride()
                override.certificateChain = chosen.chain.map { .certificate($0) }
                override.privateKey = .privateKey(chosen.openSSLKey ?? chosen.key)
                promise.succeed(override)
            }
        }
        do {
            self.context = try NIOSSLContext(configuration: configuration)
        } catch {
            throw CertificateProblem("the TLS context cannot be built: \(error)")
        }
        self.identity = identity
        self.applicationProtocols = applicationProtocols
        self.defaultCertificate = defaultCertificate
        self.additionalCertificates = additional
    }
}

/// Which certificate answers a ClientHello: an exact DNS name first, then a wildcard, among the
/// additional certificates and the default one; the default when nothing matches or no name was sent.
public struct SNISelection: Sendable {
    let defaultCertificate: ServerCertificate
    let additional: [ServerCertificate]

    public init(default defaultCertificate: ServerCertificate, additional: [ServerCertificate]) {
        self.defaultCertificate = defaultCertificate
        self.additional = additional
    }

    public func certificate(for serverName: String?) -> ServerCertificate? {
        guard let serverName, !serverName.isEmpty else { return defaultCertificate }
        let host = serverName.lowercased()
        let all = [defaultCertificate] + additional
        if let exact = all.first(where: { $0.dnsNames.contains(host) }) { return exact }
        return all.first { $0.covers(host) } ?? defaultCertificate
    }
}

extension ServerTLS: Equatable {
    /// Equal when built from the same material and settings.
    public static func == (lhs: ServerTLS, rhs: ServerTLS) -> Bool { lhs.identity == rhs.identity }
}
