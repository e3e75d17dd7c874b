import Foundation
import ALBHTTP
import ALBOpenSSL
import Crypto
import NIOSSL
import X509

/// Why a certificate cannot be served. The message names the problem and the file, never key material.
public struct CertificateProblem: Error, Sendable, Equatable, CustomStringConvertible {
    /// The file a problem is about, so that it can be reported at the manifest field naming it.
    public enum File: Sendable, Equatable {
        case certificate, privateKey
    }

    public var message: String
    public var file: File

    public init(_ message: String, file: File = .certificate) {
        self.message = message
        self.file = file
    }

    public var description: String { message }
}

/// A server certificate chain and its private key, checked before anything serves it: both parse, the key
/// belongs to the leaf, the leaf is valid now and is not a CA certificate.
///
/// The facts a listener needs (the DNS names for SNI, the validity window) come from swift-certificates;
/// the chain and key in BoringSSL's form come from swift-nio-ssl, ready for a TLS context.
public struct ServerCertificate: Sendable {
    /// The Certificate resource's name.
    public let name: String
    public let chain: [NIOSSLCertificate]
    public let key: NIOSSLPrivateKey
    /// For an RSA key, the same key held by OpenSSL for the handshake's signature (`RSAKeyInOpenSSL`); nil
    /// for other keys, which BoringSSL signs with as fast as OpenSSL would.
    let openSSLKey: NIOSSLPrivateKey?
    /// An RSA key that signs in BoringSSL because OpenSSL's libcrypto.so.3 could not be opened: it works, but each
    /// full RSA handshake costs about 1.5x the CPU (docs/tls.md).
    public let rsaKeyWithoutOpenSSL: Bool
    /// Lower-cased DNS names of the leaf's subject alternative names, wildcards (`*.example.com`) kept.
    public let dnsNames: [String]
    public let notValidBefore: Date
    public let notValidAfter: Date
    /// The PEM bytes as read, for the TLS stack that is not BoringSSL: QUIC listeners load the same files
    /// into GnuTLS (docs/quic.md).
    public let chainPEM: [UInt8]
    public let keyPEM: [UInt8]

    /// - Parameters:
    ///   - chainPEM: the leaf first, then its intermediates.
    ///   - keyPEM: the private key (PKCS#1, PKCS#8 or SEC1). Its bytes never appear in an error.
    public init(name: String, chainPEM: [UInt8], keyPEM: [UInt8], now: Date = Date()) throws {
        let chain: [NIOSSLCertificate]
        do {
            chain = try NIOSSLCertificate.fromPEMBytes(chainPEM)
        } catch {
            throw CertificateProblem("the certificate file holds no PEM certificate that can be parsed")
        }
        guard let leafDER = try? chain.first?.toDERBytes() else {
            throw CertificateProblem("the certificate file holds no PEM certificate")
        }
        let leaf: Certificate
        do {
            leaf = try Certificate(derEncoded: leafDER)
        } catch {
            throw CertificateProblem("the certificate cannot be parsed: \(error)")
        }
        let privateKey: Certificate.PrivateKey
        let key: NIOSSLPrivateKey
        do {
            privateKey = try Certificate.PrivateKey(pemEncoded: String(decoding: keyPEM, as: UTF8.self))
            key = try NIOSSLPrivateKey(bytes: keyPEM, format: .pem)
        } catch {
            // The error text of a key parser may quote the input: say only what kind of problem it is.
            throw CertificateProblem("the private key file holds no PEM private key that can be parsed", file: .privateKey)
        }
        guard privateKey.publicKey == leaf.publicKey else {
            throw CertificateProblem("the private key does not match the certificate", file: .privateKey)
        }
        if case .isCertificateAuthority? = try? leaf.extensions.basicConstraints {
            throw CertificateProblem("a CA certificate cannot be used as a server certificate (`openssl req -x509` "
                                     + "makes one unless given -addext basicConstraints=CA:FALSE)")
        }
        guard now >= leaf.notValidBefore else {
            throw CertificateProblem("the certificate is not valid yet (from \(Self.format(leaf.notValidBefore)))")
        }
        guard now <= leaf.notValidAfter else {
            throw CertificateProblem("the certificate expired on \(Self.format(leaf.notValidAfter))")
        }
        var names: [String] = []
        if let alternatives = try? leaf.extensions.subjectAlternativeNames {
            for case .dnsName(let dnsName) in alternatives {
                names.append(dnsName.lowercased())
            }
        }
        self.name = name
        self.chain = chain
        self.key = key
        // Only an RSA key is handed to OpenSSL: opening libcrypto and its first key and signature cost the process
        // about 0.8 MB, which a listener of ECDSA keys need not carry.
        let isRSA = privateKey.supportedSignatureAlgorithms.contains(.sha256WithRSAEncryption)
        self.openSSLKey = isRSA ? OpenSSLRSAPrivateKey(pem: keyPEM).map { NIOSSLPrivateKey(customPrivateKey: RSAKeyInOpenSSL(key: $0)) } : nil
        self.rsaKeyWithoutOpenSSL = isRSA && !OpenSSLRSAPrivateKey.isAvailable
        self.dnsNames = names
        self.notValidBefore = leaf.notValidBefore
        self.notValidAfter = leaf.notValidAfter
        self.chainPEM = chainPEM
        self.keyPEM = keyPEM
    }

    /// Whether this certificate covers `serverName`: an exact DNS name, or a wildcard for exactly one
    /// label (`*.example.com` covers `a.example.com`, not `example.com` or `a.b.example.com`).
    public func covers(_ serverName: String) -> Bool {
        let host = serverName.lowercased()
        for name in dnsNames {
            if name == host { return true }
            if name.hasPrefix("*."), let dot = host.firstIndex(of: "."), host[host.index(after: dot)...] == name.dropFirst(2),
               dot != host.startIndex {
                return true
            }
        }
        return false
    }

    static func format(_ date: Date) -> String { date.formatted(.iso8601) }
}

/// A CA certificate bundle (`type: CA`), checked to hold at least one certificate.
public struct CABundle: Sendable {
    public let name: String
    public let certificates: [NIOSSLCertificate]

    public init(name: String, pem: [UInt8]) throws {
        guard let certificates = try? NIOSSLCertificate.fromPEMBytes(pem), !certificates.isEmpty else {
            throw CertificateProblem("the CA file holds no PEM certificate that can be parsed")
        }
        self.name = name
        self.certificates = certificates
    }
}

extension ClientCertificateInfo {
    /// The facts of a client certificate that the handshake verified.
    public init?(verified peer: NIOSSLCertificate) {
        guard let der = try? peer.toDERBytes(), let certificate = try? Certificate(derEncoded: der) else { return nil }
        let digest = Insecure.SHA1.hash(data: der)
        self.init(subjectDN: certificate.subject.description, issuerDN: certificate.issuer.description,
                  fingerprint: digest.map { String(format: "%02x", $0) }.joined(), verify: "SUCCESS")
    }
}
