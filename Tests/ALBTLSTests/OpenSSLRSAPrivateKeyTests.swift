import ALBOpenSSL
import Foundation
import XCTest

final class OpenSSLRSAPrivateKeyTests: XCTestCase {
    private var certificates: TestCertificates!

    override func setUpWithError() throws {
        certificates = try TestCertificates()
    }

    override func tearDown() {
        certificates = nil
    }

    func testOnlyAnUnencryptedRSAKeyIsTaken() throws {
        let rsa = try certificates.make("rsa", names: ["a.example"], rsa: true)
        let key = try XCTUnwrap(OpenSSLRSAPrivateKey(pem: rsa.key))
        XCTAssertEqual(key.size, 256, "RSA 2048")
        let ecdsa = try certificates.make("ecdsa", names: ["a.example"])
        XCTAssertNil(OpenSSLRSAPrivateKey(pem: ecdsa.key), "BoringSSL keeps other keys")
        XCTAssertNil(OpenSSLRSAPrivateKey(pem: Array("not a key".utf8)))
        XCTAssertNil(OpenSSLRSAPrivateKey(pem: []))
        // An encrypted key is refused at once: nothing asks for a pass phrase on the terminal.
        let encrypted = certificates.folder.appendingPathComponent("encrypted.key").path
        try TestCertificates.openssl(["pkey", "-in", certificates.folder.appendingPathComponent("rsa.key").path,
                                      "-aes128", "-passout", "pass:secret", "-out", encrypted])
        XCTAssertNil(OpenSSLRSAPrivateKey(pem: try Array(Data(contentsOf: URL(fileURLWithPath: encrypted)))))
    }

    func testSignaturesVerifyWithTheCertificate() throws {
        let rsa = try certificates.make("rsa", names: ["a.example"], rsa: true)
        let key = try XCTUnwrap(OpenSSLRSAPrivateKey(pem: rsa.key))
        let message = Array("the handshake transcript".utf8)
        let folder = certificates.folder
        try Data(message).write(to: folder.appendingPathComponent("message"))
        for (digest, name, padding) in [(OpenSSLRSAPrivateKey.Digest.sha256, "sha256", OpenSSLRSAPrivateKey.Padding.pss),
                                        (.sha384, "sha384", .pss), (.sha256, "sha256", .pkcs1), (.sha1, "sha1", .pkcs1)] {
            let signature = try XCTUnwrap(message.withUnsafeBytes { key.sign($0, digest: digest, padding: padding) })
            XCTAssertEqual(signature.count, 256)
            try Data(signature).write(to: folder.appendingPathComponent("signature"))
            // `openssl dgst -verify` with the certificate's public key: a check outside this code.
            try TestCertificates.openssl(["x509", "-in", folder.appendingPathComponent("rsa.crt").path, "-pubkey",
                                          "-noout", "-out", folder.appendingPathComponent("public.pem").path])
            var arguments = ["dgst", "-\(name)", "-verify", folder.appendingPathComponent("public.pem").path,
                             "-signature", folder.appendingPathComponent("signature").path]
            if padding == .pss { arguments += ["-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:digest"] }
            XCTAssertNoThrow(try TestCertificates.openssl(arguments + [folder.appendingPathComponent("message").path]),
                             "\(name) \(padding)")
        }
    }

    func testRawDecryptionUndoesRawEncryption() throws {
        let rsa = try certificates.make("rsa", names: ["a.example"], rsa: true)
        let key = try XCTUnwrap(OpenSSLRSAPrivateKey(pem: rsa.key))
        let folder = certificates.folder
        // A TLS 1.2 premaster secret, padded as a client pads it, encrypted by `openssl pkeyutl` without padding.
        var padded = [UInt8](repeating: 0xA5, count: 256)
        padded[0] = 0
        padded[1] = 2
        padded[207] = 0
        try Data(padded).write(to: folder.appendingPathComponent("plain"))
        try TestCertificates.openssl(["x509", "-in", folder.appendingPathComponent("rsa.crt").path, "-pubkey", "-noout",
                                      "-out", folder.appendingPathComponent("public.pem").path])
        try TestCertificates.openssl(["pkeyutl", "-encrypt", "-pubin", "-inkey", folder.appendingPathComponent("public.pem").path,
                                      "-pkeyopt", "rsa_padding_mode:none", "-in", folder.appendingPathComponent("plain").path,
                                      "-out", folder.appendingPathComponent("cipher").path])
        let ciphertext = try Array(Data(contentsOf: folder.appendingPathComponent("cipher")))
        XCTAssertEqual(ciphertext.withUnsafeBytes { key.decryptWithoutPadding($0) }, padded)
        XCTAssertNil(ciphertext.dropLast().withUnsafeBytes { key.decryptWithoutPadding($0) }, "not the modulus' length")
    }
}
