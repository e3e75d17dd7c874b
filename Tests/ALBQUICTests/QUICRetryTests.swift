import NIOCore
import XCTest

@testable import ALBQUIC

/// Retry (RFC 9000 section 8.1.2) at the endpoint, with Swift types and a clock the test drives: above the
/// handshake rate (or always, when switched on) a new client gets a Retry and no connection; a Retry token
/// that is not ours gets CONNECTION_CLOSE (INVALID_TOKEN); the tokens themselves round-trip.
final class QUICRetryTests: XCTestCase {
    private let start: UInt64 = 5_000_000_000

    private func endpoint() throws -> QUICEndpoint {
        let pem = try QUICTestCertificate.make()
        return try QUICEndpoint(configuration: QUICConnectionConfiguration(),
                                credentials: QUICServerCredentials(chainPEM: pem.chain, keyPEM: pem.key))
    }

    private func path(port: Int = 50001) throws -> QUICPath {
        QUICPath(local: try SocketAddress(ipAddress: "127.0.0.1", port: 4433),
                 remote: try SocketAddress(ipAddress: "127.0.0.1", port: port))
    }

    private func assertRetry(_ answer: [QUICOutgoingDatagram], to client: QUICPacketHeader,
                             file: StaticString = #filePath, line: UInt = #line) throws {
        XCTAssertEqual(answer.count, 1, file: file, line: line)
        let retry = try QUICPacketHeader.parse(try XCTUnwrap(answer.first?.bytes), shortHeaderConnectionIDLength: 18).get()
        XCTAssertEqual(retry.longPacketType, .retry, file: file, line: line)
        XCTAssertEqual(retry.destinationConnectionID, client.sourceConnectionID, file: file, line: line)
        XCTAssertEqual(retry.sourceConnectionID?.count, 18, file: file, line: line)
        XCTAssertNotEqual(retry.sourceConnectionID, client.destinationConnectionID, file: file, line: line)
    }

    func testWithRetryAlwaysANewClientGetsARetryAndNoConnection() throws {
        let endpoint = try endpoint()
        endpoint.retryAlways = true
        let initial = try XCTUnwrap(QUICRecordedInitial.datagram)
        let client = try QUICPacketHeader.parse(initial, shortHeaderConnectionIDLength: 18).get()
        try assertRetry(endpoint.receive(initial, path: try path(), now: start), to: client)
        XCTAssertEqual(endpoint.connectionCount, 0)
        XCTAssertEqual(endpoint.retriesSent, 1)
        XCTAssertNil(endpoint.nextDeadline, "no state kept")
    }

    func testAboveTheHandshakeRateANewClientGetsARetry() throws {
        let endpoint = try endpoint()
        endpoint.handshakeLimit = QUICTokenBucket(ratePerSecond: 1, burst: 1)
        let initial = try XCTUnwrap(QUICRecordedInitial.datagram)
        XCTAssertFalse(endpoint.receive(initial, path: try path(), now: start).isEmpty)
        XCTAssertEqual(endpoint.connectionCount, 1, "under the rate: a connection")
        // The bucket is spent: the next new client (another DCID, another address) gets a Retry.
        let other = ByteBuffer(bytes: QUICTestPackets.long())
        let otherClient = try QUICPacketHeader.parse(other, shortHeaderConnectionIDLength: 18).get()
        try assertRetry(endpoint.receive(other, path: try path(port: 50002), now: start + 1), to: otherClient)
        XCTAssertEqual(endpoint.connectionCount, 1)
        XCTAssertEqual(endpoint.retriesSent, 1)
    }

    func testARetryTokenThatIsNotOursGetsInvalidTokenAndNoConnection() throws {
        let endpoint = try endpoint()
        let forged = ByteBuffer(bytes: QUICTestPackets.long(dcid: Array(repeating: 9, count: 18),
                                                            token: [0xb6] + Array(repeating: 1, count: 77)))
        let answer = endpoint.receive(forged, path: try path(), now: start)
        XCTAssertEqual(answer.count, 1)
        let close = try QUICPacketHeader.parse(try XCTUnwrap(answer.first?.bytes), shortHeaderConnectionIDLength: 18).get()
        XCTAssertEqual(close.longPacketType, .initial)
        XCTAssertEqual(close.destinationConnectionID, QUICConnectionID(QUICTestPackets.clientSCID))
        XCTAssertLessThan(try XCTUnwrap(answer.first?.bytes.readableBytes), 1200)
        XCTAssertEqual(endpoint.connectionCount, 0)
        XCTAssertEqual(endpoint.invalidRetryTokens, 1)
    }

    func testARetryTokenVerifiesOnlyForItsAddressItsIDAndWithinItsValidity() throws {
        let tokens = QUICRetryTokens.random()
        let initial = try XCTUnwrap(QUICRecordedInitial.datagram)
        let client = try QUICPacketHeader.parse(initial, shortHeaderConnectionIDLength: 18).get()
        let remote = try SocketAddress(ipAddress: "127.0.0.1", port: 50001)
        let retryBytes = try XCTUnwrap(tokens.retryPacket(for: client, remote: remote, idLength: 18, now: start,
                                                          allocator: ByteBufferAllocator()))
        let retry = try QUICPacketHeader.parse(retryBytes, shortHeaderConnectionIDLength: 18).get()
        // The Retry: first byte, version, DCID, SCID, then the token up to the 16-byte integrity tag.
        let tokenStart = 1 + 4 + 1 + client.sourceConnectionID!.count + 1 + 18
        let token = try XCTUnwrap(retryBytes.getBytes(at: tokenStart, length: retryBytes.readableBytes - tokenStart - 16))
        XCTAssertEqual(token.first, 0xb6)
        // The client's second Initial goes to the Retry's source ID.
        var second = client
        second.destinationConnectionID = try XCTUnwrap(retry.sourceConnectionID)
        XCTAssertEqual(tokens.verify(token, header: second, remote: remote, now: start + 1_000_000),
                       client.destinationConnectionID, "the original DCID comes back")
        XCTAssertNil(tokens.verify(token, header: second, remote: try SocketAddress(ipAddress: "127.0.0.2", port: 50001),
                                   now: start + 1_000_000), "another address")
        XCTAssertNil(tokens.verify(token, header: client, remote: remote, now: start + 1_000_000), "another DCID")
        XCTAssertNil(tokens.verify(token, header: second, remote: remote, now: start + QUICRetryTokens.validity + 1),
                     "expired")
        XCTAssertNil(QUICRetryTokens.random().verify(token, header: second, remote: remote, now: start + 1), "another secret")
    }
}
