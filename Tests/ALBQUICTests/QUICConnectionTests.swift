import Foundation
import NIOCore
import XCTest

@testable import ALBQUIC

/// GnuTLS credentials, the connection owner and the endpoint, with Swift types only and a clock the test
/// drives. (The handshake with a real client is `QUICListenerTests` in ALBDataPlaneTests, over UDP.)
final class QUICConnectionTests: XCTestCase {
    static let local = try? SocketAddress(ipAddress: "127.0.0.1", port: 4433)
    static let remote = try? SocketAddress(ipAddress: "127.0.0.1", port: 50000)

    private func path() throws -> QUICPath {
        QUICPath(local: try XCTUnwrap(Self.local), remote: try XCTUnwrap(Self.remote))
    }

    private func credentials() throws -> QUICServerCredentials {
        let pem = try QUICTestCertificate.make()
        return try QUICServerCredentials(chainPEM: pem.chain, keyPEM: pem.key)
    }

    private func buffer(_ bytes: [UInt8]) -> ByteBuffer { ByteBuffer(bytes: bytes) }

    // MARK: Credentials

    func testCredentialsLoadAPEMChainAndKey() throws {
        let pem = try QUICTestCertificate.make()
        for _ in 0..<200 {
            // Many, so that a missing gnutls_certificate_free_credentials shows in a leak checker's run.
            XCTAssertNoThrow(try QUICServerCredentials(chainPEM: pem.chain, keyPEM: pem.key))
        }
    }

    func testCredentialsRefuseBadPEMWithoutShowingTheKey() throws {
        let pem = try QUICTestCertificate.make()
        let other = try QUICTestCertificate.make(name: "other")
        XCTAssertThrowsError(try QUICServerCredentials(chainPEM: Array("not a certificate".utf8), keyPEM: pem.key))
        XCTAssertThrowsError(try QUICServerCredentials(chainPEM: [], keyPEM: pem.key)) { error in
            XCTAssertEqual("\(error)", "the certificate chain is empty")
        }
        XCTAssertThrowsError(try QUICServerCredentials(chainPEM: pem.chain, keyPEM: [])) { error in
            XCTAssertEqual("\(error)", "the private key is empty")
        }
        let secretLine = "c2VjcmV0c2VjcmV0c2VjcmV0"
        let brokenKey = Array("-----BEGIN PRIVATE KEY-----\n\(secretLine)\n-----END PRIVATE KEY-----\n".utf8)
        XCTAssertThrowsError(try QUICServerCredentials(chainPEM: pem.chain, keyPEM: brokenKey)) { error in
            let message = "\(error)"
            XCTAssertTrue(message.hasPrefix("GnuTLS refused the certificate chain or private key: "), message)
            XCTAssertFalse(message.contains(secretLine), message)
        }
        XCTAssertThrowsError(try QUICServerCredentials(chainPEM: pem.chain, keyPEM: other.key)) { error in
            let message = "\(error)"
            XCTAssertTrue(message.hasPrefix("GnuTLS refused the certificate chain or private key: "), message)
            let keyBody = String(decoding: other.key, as: UTF8.self).split(separator: "\n").dropFirst().first ?? ""
            XCTAssertFalse(message.contains(keyBody), message)
        }
    }

    // MARK: Configuration

    func testConfigurationValuesNgtcp2AssertsOnAreRefusedFirst() throws {
        let credentials = try credentials()
        func refused(_ change: (inout QUICConnectionConfiguration) -> Void) -> Bool {
            var configuration = QUICConnectionConfiguration()
            change(&configuration)
            do {
                _ = try QUICEndpoint(configuration: configuration, credentials: credentials)
                return false
            } catch QUICConnectionError.invalidConfiguration {
                return true
            } catch {
                return false
            }
        }
        XCTAssertFalse(refused { _ in })
        XCTAssertTrue(refused { $0.activeConnectionIDLimit = 9 })
        XCTAssertTrue(refused { $0.activeConnectionIDLimit = 1 })
        XCTAssertTrue(refused { $0.maxSentUDPPayloadSize = 0 })
        XCTAssertTrue(refused { $0.maxSentUDPPayloadSize = 65528 })
        XCTAssertTrue(refused { $0.maxReceivedUDPPayloadSize = 1199 })
        XCTAssertTrue(refused { $0.connectionIDLength = 21 })
        XCTAssertTrue(refused { $0.connectionIDLength = 4 })
        XCTAssertTrue(refused { $0.initialMaxData = 1 << 62 })
        XCTAssertTrue(refused { $0.initialMaxStreamDataUni = .max })
        XCTAssertTrue(refused { $0.handshakeTimeout = .zero })
        XCTAssertTrue(refused { $0.idleTimeout = .nanoseconds(-1) })
        XCTAssertTrue(refused { $0.maxFieldSectionSize = 0 })
        XCTAssertTrue(refused { $0.maxHeaderFields = 0 })
        XCTAssertTrue(refused { $0.responseBufferLowWater = $0.responseBufferHighWater })
        XCTAssertTrue(refused { $0.responseBufferLowWater = -1 })
    }

    // MARK: Connection

    func testAConnectionIsOnlyCreatedFromAV1InitialOnAnIPPath() throws {
        let credentials = try credentials()
        let key = QUICStatelessResetKey.random()
        let handshake = QUICInitialPacket(
            header: QUICPacketHeader(form: .long, firstByte: 0xe0, version: .v1,
                                     destinationConnectionID: .of(QUICTestPackets.clientDCID),
                                     sourceConnectionID: .of(QUICTestPackets.clientSCID)),
            token: .none)
        XCTAssertThrowsError(try QUICConnection(initial: handshake, path: path(), credentials: credentials,
                                                configuration: QUICConnectionConfiguration(), resetKey: key, now: 1)) {
            XCTAssertEqual($0 as? QUICConnectionError, .notAnInitial)
        }
        let initial = try XCTUnwrap(newConnection(QUICTestPackets.long()))
        let unix = try SocketAddress(unixDomainSocketPath: "/tmp/alb-quic-test.sock")
        XCTAssertThrowsError(try QUICConnection(initial: initial, path: QUICPath(local: unix, remote: unix),
                                                credentials: credentials, configuration: QUICConnectionConfiguration(),
                                                resetKey: key, now: 1)) {
            XCTAssertEqual($0 as? QUICConnectionError, .unsupportedAddress)
        }
        // Created and freed many times: ngtcp2_conn, GnuTLS session and the crypto reference in deinit.
        for _ in 0..<200 {
            let connection = try QUICConnection(initial: initial, path: path(), credentials: credentials,
                                                configuration: QUICConnectionConfiguration(), resetKey: key, now: 1)
            XCTAssertEqual(connection.originalDestinationConnectionID, .of(QUICTestPackets.clientDCID))
            XCTAssertEqual(connection.initialConnectionID.count, 18)
            XCTAssertEqual(connection.connectionIDs, [connection.initialConnectionID])
            XCTAssertFalse(connection.isClosed)
            XCTAssertNotNil(connection.expiry, "the handshake timeout at least")
        }
    }

    /// A recorded gtlsclient Initial: the server's first flight installs the 1-RTT transmit key, which starts
    /// HTTP/3 (our control and QPACK streams). Streams the client never opened cannot be answered, and no
    /// stream event exists before a request arrives.
    func testTheStreamAPIRefusesStreamsTheClientNeverOpened() throws {
        let initial = try XCTUnwrap(QUICRecordedInitial.datagram)
        var random = SeededGenerator(seed: 1)
        let classifier = try XCTUnwrap(QUICDatagramClassifier(connectionIDLength: 18))
        guard case .newConnection(let packet) = classifier.triage(initial, isKnownConnection: { _ in false },
                                                                 random: &random, allocator: ByteBufferAllocator())
        else { return XCTFail("the recorded Initial opens a connection") }
        let connection = try QUICConnection(initial: packet, path: path(), credentials: credentials(),
                                            configuration: QUICConnectionConfiguration(),
                                            resetKey: .random(), now: 1_000_000)
        connection.read(initial, path: try path(), now: 1_000_000)
        XCTAssertFalse(connection.write(now: 1_000_000).isEmpty, "the server's first flight")
        XCTAssertFalse(connection.isClosed)
        XCTAssertEqual(connection.takeStreamEvents(), [])
        XCTAssertFalse(connection.respond(streamID: 0, status: 200, fields: [], endStream: true))
        connection.sendBody(streamID: 0, ByteBuffer(string: "nobody asked"))
        connection.endResponse(streamID: 0)
        connection.consumeRequestBody(streamID: 0, bytes: 100)
        XCTAssertEqual(connection.bufferedResponseBytes(streamID: 0), 0)
        XCTAssertEqual(connection.takeStreamEvents(), [])
        XCTAssertFalse(connection.isClosed, "answers to unknown streams are refused, not fatal")
    }

    private func newConnection(_ bytes: [UInt8]) -> QUICInitialPacket? {
        var random = SeededGenerator(seed: 1)
        let classifier = QUICDatagramClassifier(connectionIDLength: 18)
        guard case .newConnection(let initial) = classifier?.triage(buffer(bytes), isKnownConnection: { _ in false },
                                                                   random: &random, allocator: ByteBufferAllocator())
        else { return nil }
        return initial
    }

    // MARK: Endpoint

    func testTheEndpointAnswersOtherVersionsAndDropsGarbageWithoutAConnection() throws {
        let endpoint = try QUICEndpoint(configuration: QUICConnectionConfiguration(), credentials: credentials())
        let path = try path()
        XCTAssertEqual(endpoint.receive(buffer([]), path: path, now: 1), [])
        XCTAssertEqual(endpoint.receive(buffer([0xff, 0x00, 0x01]), path: path, now: 1), [])
        XCTAssertEqual(endpoint.receive(buffer(QUICTestPackets.short(datagramSize: 40)), path: path, now: 1), [])
        let answer = endpoint.receive(buffer(QUICTestPackets.long(version: 0x1a2a_3a4a)), path: path, now: 1)
        XCTAssertEqual(answer.count, 1)
        XCTAssertEqual(answer.first?.path, path)
        XCTAssertEqual(answer.first?.bytes.getInteger(at: 1, as: UInt32.self), 0, "a Version Negotiation packet")
        XCTAssertEqual(endpoint.connectionCount, 0)
        XCTAssertEqual(endpoint.droppedDatagrams[.empty], 1)
        XCTAssertEqual(endpoint.droppedDatagrams[.unknownConnection], 1)
        XCTAssertEqual(endpoint.takeEvents(), [])
        XCTAssertNil(endpoint.nextDeadline)
    }

    /// An Initial that passes the triage but whose payload is not a protected QUIC packet (zeros): the
    /// connection is created, ngtcp2 0.12.1 cannot decrypt the client's first packet and answers
    /// `NGTCP2_ERR_DROP_CONN`, so nothing is sent and the connection leaves the table with its IDs at once.
    func testAnUndecryptableInitialIsDroppedWithItsConnection() throws {
        let endpoint = try QUICEndpoint(configuration: QUICConnectionConfiguration(), credentials: credentials())
        let path = try path()
        for attempt in 0..<2 {
            XCTAssertEqual(endpoint.receive(buffer(QUICTestPackets.long()), path: path, now: 1_000_000_000), [])
            let events = endpoint.takeEvents()
            guard case .connectionOpened(let id, let remote) = events.first else {
                return XCTFail("\(events)")
            }
            XCTAssertEqual(remote, path.remote)
            XCTAssertEqual(events, [.connectionOpened(id, remote: remote), .connectionClosed(id, .dropped("ERR_DROP_CONN"))],
                           "attempt \(attempt): the same Initial opens a new connection, its IDs having left")
            XCTAssertEqual(endpoint.connectionCount, 0)
            XCTAssertNil(endpoint.nextDeadline)
        }
    }
}

/// A self-signed ECDSA P-256 certificate made by the `openssl` command line, as an operator would.
enum QUICTestCertificate {
    struct Failure: Error {}

    static func make(name: String = "localhost") throws -> (chain: [UInt8], key: [UInt8]) {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("alb-quic-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let cert = folder.appendingPathComponent("cert.pem").path
        let key = folder.appendingPathComponent("key.pem").path
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        process.arguments = ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                             "-keyout", key, "-out", cert, "-days", "30", "-subj", "/CN=\(name)"]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw Failure() }
        return (try Array(Data(contentsOf: URL(fileURLWithPath: cert))),
                try Array(Data(contentsOf: URL(fileURLWithPath: key))))
    }
}
