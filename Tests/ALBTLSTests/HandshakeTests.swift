@testable import ALBTLS
import NIOCore
import NIOEmbedded
import NIOSSL
import NIOTLS
import XCTest

/// Handshakes between two in-memory channels, as swift-nio-ssl's own tests make them: no sockets, the
/// bytes moved by hand until neither side has more to say.
final class HandshakeTests: XCTestCase {
    /// Records whether the handshake completed and the first error.
    private final class Outcome: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        var completed = false
        var error: Error?
        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            if case TLSUserEvent.handshakeCompleted = event { self.completed = true }
            context.fireUserInboundEventTriggered(event)
        }
        func errorCaught(context: ChannelHandlerContext, error: Error) {
            if self.error == nil { self.error = error }
        }
    }

    /// Keeps the first bytes the server writes: its ServerHello.
    private final class FirstWrite: ChannelOutboundHandler {
        typealias OutboundIn = ByteBuffer
        var bytes: ByteBuffer?
        func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
            if self.bytes == nil { self.bytes = self.unwrapOutboundIn(data) }
            context.write(data, promise: promise)
        }
    }

    private var certificates: TestCertificates!

    override func setUpWithError() throws {
        certificates = try TestCertificates()
    }

    // XCTest keeps every test case object until the process ends, so the folder goes here, not in a deinit.
    override func tearDown() {
        certificates = nil
    }

    private func load(_ name: String, _ names: [String], rsa: Bool = false) throws -> (ServerCertificate, [UInt8]) {
        let pem = try certificates.make(name, names: names, rsa: rsa)
        return (try ServerCertificate(name: name, chainPEM: pem.chain, keyPEM: pem.key), pem.chain)
    }

    /// Runs a handshake of a client (trusting `trust`, asking for `serverName`) against `server`.
    private func handshake(_ server: ServerTLS, serverName: String, trust: [UInt8],
                           firstServerWrite: FirstWrite? = nil,
                           configure: (inout TLSConfiguration) -> Void = { _ in }) throws -> (client: Outcome, server: Outcome) {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMBytes(trust))
        configure(&configuration)
        let clientContext = try NIOSSLContext(configuration: configuration)
        let client = EmbeddedChannel(), serverChannel = EmbeddedChannel()
        let clientOutcome = Outcome(), serverOutcome = Outcome()
        try client.pipeline.syncOperations.addHandler(try NIOSSLClientHandler(context: clientContext, serverHostname: serverName))
        try client.pipeline.syncOperations.addHandler(clientOutcome)
        if let firstServerWrite { try serverChannel.pipeline.syncOperations.addHandler(firstServerWrite) }
        try serverChannel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: server.context))
        try serverChannel.pipeline.syncOperations.addHandler(serverOutcome)
        let address = try SocketAddress(ipAddress: "127.0.0.1", port: 1)
        _ = try? serverChannel.connect(to: address).wait()
        _ = try? client.connect(to: address).wait()
        Self.exchangeBytes(client, serverChannel)
        // A TLS close sends close_notify and waits for the peer's: start both, move the bytes, never block.
        client.close(promise: nil)
        serverChannel.close(promise: nil)
        Self.exchangeBytes(client, serverChannel)
        return (clientOutcome, serverOutcome)
    }

    /// Moves what each side wrote to the other until neither writes anything more (bounded).
    private static func exchangeBytes(_ client: EmbeddedChannel, _ server: EmbeddedChannel) {
        for _ in 0..<50 {
            // The SNI callback answers through a task on the event loop, which an embedded loop runs only
            // when told to.
            client.embeddedEventLoop.run()
            server.embeddedEventLoop.run()
            var moved = false
            while case .byteBuffer(let bytes)? = try? client.readOutbound(as: IOData.self) {
                moved = true
                _ = try? server.writeInbound(bytes)
            }
            while case .byteBuffer(let bytes)? = try? server.readOutbound(as: IOData.self) {
                moved = true
                _ = try? client.writeInbound(bytes)
            }
            if !moved { return }
        }
    }

    private func serverTLS(_ main: ServerCertificate, additional: [ServerCertificate] = [],
                           versions: [TLSProtocolVersion] = [.tls12, .tls13],
                           ciphers: [String] = ["ECDHE-ECDSA-AES128-GCM-SHA256"], clientCA: CABundle? = nil) throws -> ServerTLS {
        try ServerTLS(defaultCertificate: main, additional: additional,
                      policy: TLSPolicy(versions: versions, ciphers: ciphers),
                      applicationProtocols: ["http/1.1"], clientCA: clientCA, identity: "test")
    }

    func testSNIPicksTheCertificateTheClientAskedFor() throws {
        let (main, mainPEM) = try load("main", ["main.example.com"])
        let (shop, shopPEM) = try load("shop", ["shop.example.com"])
        let server = try serverTLS(main, additional: [shop])
        // Each client trusts only the certificate it expects: the handshake completes only if the server chose it.
        XCTAssertTrue(try handshake(server, serverName: "shop.example.com", trust: shopPEM).client.completed)
        XCTAssertTrue(try handshake(server, serverName: "main.example.com", trust: mainPEM).client.completed)
        let wrong = try handshake(server, serverName: "shop.example.com", trust: mainPEM)
        XCTAssertFalse(wrong.client.completed)
        XCTAssertNotNil(wrong.client.error)
    }

    func testAVersionOutsideThePolicyFailsTheHandshake() throws {
        let (main, mainPEM) = try load("main", ["main.example.com"])
        let server = try serverTLS(main, versions: [.tls12])
        let tls13Only = try handshake(server, serverName: "main.example.com", trust: mainPEM) {
            $0.minimumTLSVersion = .tlsv13
        }
        XCTAssertFalse(tls13Only.client.completed)
        XCTAssertFalse(tls13Only.server.completed)
        XCTAssertTrue(try handshake(server, serverName: "main.example.com", trust: mainPEM) {
            $0.maximumTLSVersion = .tlsv12
        }.client.completed)
    }

    func testTheChosenCipherSuiteIsReadFromTheServerHello() throws {
        let (main, mainPEM) = try load("main", ["main.example.com"])
        let server = try serverTLS(main)
        let tls12 = FirstWrite()
        XCTAssertTrue(try handshake(server, serverName: "main.example.com", trust: mainPEM, firstServerWrite: tls12) {
            $0.maximumTLSVersion = .tlsv12
        }.client.completed)
        let suite12 = try XCTUnwrap(CipherSuiteName.chosenBy(serverHelloRecord: try XCTUnwrap(tls12.bytes)))
        XCTAssertEqual(CipherSuiteName.of(suite12), "ECDHE-ECDSA-AES128-GCM-SHA256", "the policy's only TLS 1.2 suite")
        let tls13 = FirstWrite()
        XCTAssertTrue(try handshake(server, serverName: "main.example.com", trust: mainPEM, firstServerWrite: tls13) {
            $0.minimumTLSVersion = .tlsv13
        }.client.completed)
        let suite13 = try XCTUnwrap(CipherSuiteName.chosenBy(serverHelloRecord: try XCTUnwrap(tls13.bytes)))
        XCTAssertTrue(CipherSuiteName.of(suite13).hasPrefix("TLS_AES_") || CipherSuiteName.of(suite13).hasPrefix("TLS_CHACHA20"))
        XCTAssertEqual(CipherSuiteName.of(0x00FF), "0x00FF")
        XCTAssertNil(CipherSuiteName.chosenBy(serverHelloRecord: ByteBuffer(bytes: [22, 3, 3, 0, 10, 2])))
    }

    func testMutualTLSRefusesAClientWithoutACertificate() throws {
        let (main, mainPEM) = try load("main", ["main.example.com"])
        let ca = try certificates.make("ca", names: [], ca: true)
        let server = try serverTLS(main, clientCA: try CABundle(name: "ca", pem: ca.chain))
        let anonymous = try handshake(server, serverName: "main.example.com", trust: mainPEM)
        XCTAssertFalse(anonymous.server.completed, "no client certificate, no connection")
        XCTAssertNotNil(anonymous.server.error)
    }

    // RSA keys sign and decrypt in OpenSSL (RSAKeyInOpenSSL). In each handshake below the client checks the
    // server's signature against the certificate, so a wrong signature fails it.

    func testAnRSAKeySignsEveryHandshakeKind() throws {
        let (main, mainPEM) = try load("main", ["main.example.com"], rsa: true)
        XCTAssertNotNil(main.openSSLKey, "an RSA key is held by OpenSSL")
        let server = try serverTLS(main, versions: [.tls10, .tls11, .tls12, .tls13],
                                   ciphers: ["ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-SHA", "AES128-GCM-SHA256"])
        let tls13 = try handshake(server, serverName: "main.example.com", trust: mainPEM)
        XCTAssertTrue(tls13.client.completed, "TLS 1.3, RSA-PSS: \(String(describing: tls13.client.error))")
        for scheme in [SignatureAlgorithm.rsaPkcs1Sha256, .rsaPssRsaeSha384, .rsaPkcs1Sha512, .rsaPkcs1Sha1] {
            let tls12 = try handshake(server, serverName: "main.example.com", trust: mainPEM) {
                $0.maximumTLSVersion = .tlsv12
                $0.verifySignatureAlgorithms = [scheme]
            }
            XCTAssertTrue(tls12.client.completed, "TLS 1.2 signed with \(scheme): \(String(describing: tls12.client.error))")
        }
        let keyExchange = FirstWrite()
        let rsaKeyExchange = try handshake(server, serverName: "main.example.com", trust: mainPEM,
                                           firstServerWrite: keyExchange) {
            $0.maximumTLSVersion = .tlsv12
            $0.cipherSuites = "AES128-GCM-SHA256"
        }
        XCTAssertTrue(rsaKeyExchange.client.completed, "TLS 1.2, RSA key exchange: the key decrypts")
        let chosen = try XCTUnwrap(CipherSuiteName.chosenBy(serverHelloRecord: try XCTUnwrap(keyExchange.bytes)))
        XCTAssertEqual(CipherSuiteName.of(chosen), "AES128-GCM-SHA256")
        let tls10 = try handshake(server, serverName: "main.example.com", trust: mainPEM) {
            $0.minimumTLSVersion = .tlsv1
            $0.maximumTLSVersion = .tlsv1
            $0.cipherSuites = "ECDHE-RSA-AES128-SHA"
        }
        XCTAssertTrue(tls10.client.completed, "TLS 1.0 signs MD5-SHA1: \(String(describing: tls10.client.error))")
    }

    func testRSAAndECDSACertificatesMixUnderSNI() throws {
        let (rsa, rsaPEM) = try load("rsa", ["rsa.example.com"], rsa: true)
        let (ecdsa, ecdsaPEM) = try load("ecdsa", ["ecdsa.example.com"])
        XCTAssertNil(ecdsa.openSSLKey, "BoringSSL keeps ECDSA keys")
        let ciphers = ["ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES128-GCM-SHA256"]
        for server in [try serverTLS(rsa, additional: [ecdsa], ciphers: ciphers),
                       try serverTLS(ecdsa, additional: [rsa], ciphers: ciphers)] {
            for maximum in [TLSVersion.tlsv12, .tlsv13] {
                XCTAssertTrue(try handshake(server, serverName: "rsa.example.com", trust: rsaPEM) {
                    $0.maximumTLSVersion = maximum
                }.client.completed)
                XCTAssertTrue(try handshake(server, serverName: "ecdsa.example.com", trust: ecdsaPEM) {
                    $0.maximumTLSVersion = maximum
                }.client.completed)
            }
        }
    }
}
