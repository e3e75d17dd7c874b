import ALBOpenSSL
import ALBTLS
import Foundation
import XCTest

/// Certificates made by the `openssl` command line in a temporary folder, as an operator would make them.
final class TestCertificates {
    let folder: URL

    init() throws {
        folder = FileManager.default.temporaryDirectory.appendingPathComponent("alb-tls-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(at: folder) }

    /// A self-signed certificate for `names`, ECDSA P-256 or RSA 2048; returns (chain PEM, key PEM).
    func make(_ file: String, names: [String], ca: Bool = false, rsa: Bool = false) throws -> (chain: [UInt8], key: [UInt8]) {
        let cert = folder.appendingPathComponent("\(file).crt").path
        let key = folder.appendingPathComponent("\(file).key").path
        let newKey = rsa ? ["-newkey", "rsa:2048"] : ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
        var arguments = ["req", "-x509"] + newKey + ["-nodes",
                         "-keyout", key, "-out", cert, "-days", "30", "-subj", "/CN=\(names.first ?? "test")"]
        if !names.isEmpty {
            arguments += ["-addext", "subjectAltName=" + names.map { "DNS:\($0)" }.joined(separator: ",")]
        }
        arguments += ["-addext", ca ? "basicConstraints=critical,CA:TRUE" : "basicConstraints=critical,CA:FALSE"]
        try Self.openssl(arguments)
        return (try Array(Data(contentsOf: URL(fileURLWithPath: cert))), try Array(Data(contentsOf: URL(fileURLWithPath: key))))
    }

    static func openssl(_ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw CertificateProblem("openssl \(arguments.first ?? "") failed")
        }
    }
}

final class CertificateTests: XCTestCase {
    func testAValidCertificateIsReadWithItsNames() throws {
        let certificates = try TestCertificates()
        let pem = try certificates.make("web", names: ["web.example.com", "*.api.example.com"])
        let certificate = try ServerCertificate(name: "web", chainPEM: pem.chain, keyPEM: pem.key)
        XCTAssertEqual(certificate.dnsNames, ["web.example.com", "*.api.example.com"])
        XCTAssertTrue(certificate.covers("WEB.example.com"))
        XCTAssertTrue(certificate.covers("v1.api.example.com"))
        XCTAssertFalse(certificate.covers("api.example.com"), "a wildcard needs a label")
        XCTAssertFalse(certificate.covers("a.v1.api.example.com"), "a wildcard covers one label")
        XCTAssertFalse(certificate.covers("other.example.com"))
    }

    /// The reconciler warns when an RSA key has to sign in BoringSSL; an ECDSA key always does, without a warning.
    func testOnlyAnRSAKeyOnAHostWithoutLibcryptoIsFlagged() throws {
        let certificates = try TestCertificates()
        let rsa = try certificates.make("rsa", names: ["rsa.example.com"], rsa: true)
        let ecdsa = try certificates.make("ecdsa", names: ["ecdsa.example.com"])
        XCTAssertEqual(try ServerCertificate(name: "rsa", chainPEM: rsa.chain, keyPEM: rsa.key).rsaKeyWithoutOpenSSL,
                       !OpenSSLRSAPrivateKey.isAvailable)
        let ecdsaCertificate = try ServerCertificate(name: "ecdsa", chainPEM: ecdsa.chain, keyPEM: ecdsa.key)
        XCTAssertFalse(ecdsaCertificate.rsaKeyWithoutOpenSSL)
    }

    func testAKeyThatDoesNotMatchIsRefusedWithoutShowingTheKey() throws {
        let certificates = try TestCertificates()
        let one = try certificates.make("one", names: ["one.example.com"])
        let two = try certificates.make("two", names: ["two.example.com"])
        XCTAssertThrowsError(try ServerCertificate(name: "one", chainPEM: one.chain, keyPEM: two.key)) { error in
            let message = String(describing: error)
            XCTAssertEqual(message, "the private key does not match the certificate")
            XCTAssertFalse(message.contains("PRIVATE KEY"))
            XCTAssertEqual((error as? CertificateProblem)?.file, .privateKey, "reported at spec.privateKey")
        }
    }

    func testExpiredNotYetValidAndCACertificatesAreRefused() throws {
        let certificates = try TestCertificates()
        let pem = try certificates.make("web", names: ["web.example.com"])
        XCTAssertThrowsError(try ServerCertificate(name: "web", chainPEM: pem.chain, keyPEM: pem.key,
                                                   now: Date().addingTimeInterval(60 * 86400))) { error in
            XCTAssertTrue(String(describing: error).hasPrefix("the certificate expired on "), "\(error)")
        }
        XCTAssertThrowsError(try ServerCertificate(name: "web", chainPEM: pem.chain, keyPEM: pem.key,
                                                   now: Date().addingTimeInterval(-86400))) { error in
            XCTAssertTrue(String(describing: error).hasPrefix("the certificate is not valid yet"), "\(error)")
        }
        let ca = try certificates.make("ca", names: [], ca: true)
        XCTAssertThrowsError(try ServerCertificate(name: "ca", chainPEM: ca.chain, keyPEM: ca.key)) { error in
            XCTAssertTrue(String(describing: error).hasPrefix("a CA certificate cannot be used as a server certificate"))
        }
        XCTAssertNoThrow(try CABundle(name: "ca", pem: ca.chain))
    }

    func testGarbageIsRefusedWithAPlainMessage() throws {
        let certificates = try TestCertificates()
        let pem = try certificates.make("web", names: ["web.example.com"])
        XCTAssertThrowsError(try ServerCertificate(name: "web", chainPEM: Array("not a certificate".utf8), keyPEM: pem.key))
        let secret = Array("-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n".utf8)
        XCTAssertThrowsError(try ServerCertificate(name: "web", chainPEM: pem.chain, keyPEM: secret)) { error in
            XCTAssertFalse(String(describing: error).contains("c2VjcmV0"), "key bytes never reach a message")
        }
        XCTAssertThrowsError(try CABundle(name: "ca", pem: Array("nothing".utf8)))
    }

    func testSNIPrefersAnExactNameThenAWildcardThenTheDefault() throws {
        let certificates = try TestCertificates()
        func load(_ name: String, _ names: [String]) throws -> ServerCertificate {
            let pem = try certificates.make(name, names: names)
            return try ServerCertificate(name: name, chainPEM: pem.chain, keyPEM: pem.key)
        }
        let main = try load("main", ["www.example.com"])
        let wildcard = try load("wildcard", ["*.example.com"])
        let exact = try load("exact", ["shop.example.com"])
        let selection = SNISelection(default: main, additional: [wildcard, exact])
        XCTAssertEqual(selection.certificate(for: "shop.example.com")?.name, "exact")
        XCTAssertEqual(selection.certificate(for: "blog.example.com")?.name, "wildcard")
        XCTAssertEqual(selection.certificate(for: "www.example.com")?.name, "main")
        XCTAssertEqual(selection.certificate(for: "elsewhere.org")?.name, "main")
        XCTAssertEqual(selection.certificate(for: nil)?.name, "main")
    }

    func testPolicyLimitationsAreNamedNotHidden() {
        let range = TLSPolicy(versions: [.tls10, .tls12], ciphers: ["ECDHE-RSA-AES128-GCM-SHA256"])
        XCTAssertEqual(range.minimum, .tls10)
        XCTAssertEqual(range.maximum, .tls12)
        XCTAssertEqual(range.limitations.count, 1)
        XCTAssertTrue(range.limitations[0].contains("TLSv1.1 will be accepted too"), range.limitations[0])

        let tls13Subset = TLSPolicy(versions: [.tls12, .tls13], ciphers: ["ECDHE-RSA-AES128-GCM-SHA256", "TLS_AES_128_GCM_SHA256"])
        XCTAssertEqual(tls13Subset.ciphers, ["ECDHE-RSA-AES128-GCM-SHA256"], "TLS 1.3 suites are not configured")
        XCTAssertTrue(tls13Subset.limitations.contains { $0.contains("cannot choose among the TLS 1.3 suites") })

        let unknown = TLSPolicy(versions: [.tls12], ciphers: ["ECDHE-RSA-AES128-GCM-SHA256", "NOT-A-CIPHER"])
        XCTAssertEqual(unknown.ciphers, ["ECDHE-RSA-AES128-GCM-SHA256"])
        XCTAssertEqual(unknown.limitations, ["NOT-A-CIPHER is not supported by BoringSSL and is left out"])
    }
}
