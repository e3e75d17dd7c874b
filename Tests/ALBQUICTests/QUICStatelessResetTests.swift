import NIOCore
import XCTest

@testable import ALBQUIC

/// Stateless resets (RFC 9000 section 10.3) for short headers of unknown connections, and the token bucket
/// that limits them, with Swift types and a clock the test drives.
final class QUICStatelessResetTests: XCTestCase {
    private let key = QUICStatelessResetKey(secret: Array(repeating: 7, count: 32))!

    private func endpoint() throws -> QUICEndpoint {
        let pem = try QUICTestCertificate.make()
        return try QUICEndpoint(configuration: QUICConnectionConfiguration(),
                                credentials: QUICServerCredentials(chainPEM: pem.chain, keyPEM: pem.key), resetKey: key)
    }

    private func path() throws -> QUICPath {
        QUICPath(local: try SocketAddress(ipAddress: "127.0.0.1", port: 4433),
                 remote: try SocketAddress(ipAddress: "127.0.0.1", port: 50001))
    }

    func testAnUnknownShortHeaderGetsAResetWithTheTokenOfItsConnectionIDSmallerThanTheDatagram() throws {
        let endpoint = try endpoint()
        let path = try path()
        for size in [41, 60, 1200] {
            let datagram = ByteBuffer(bytes: QUICTestPackets.short(datagramSize: size))
            let answer = endpoint.receive(datagram, path: path, now: 1)
            XCTAssertEqual(answer.count, 1, "size \(size)")
            let reset = try XCTUnwrap(answer.first)
            XCTAssertEqual(reset.path, path)
            let bytes = try XCTUnwrap(reset.bytes.getBytes(at: 0, length: reset.bytes.readableBytes))
            XCTAssertLessThan(bytes.count, size, "smaller than its trigger")
            XCTAssertLessThanOrEqual(bytes.count, QUICStatelessResetKey.maximumResetSize)
            XCTAssertGreaterThanOrEqual(bytes.count, 21, "RFC 9000 10.3: at least 21 bytes")
            XCTAssertEqual(bytes[0] & 0xc0, 0x40, "looks like a short header: long bit clear, fixed bit set")
            let id = try XCTUnwrap(QUICConnectionID(QUICTestPackets.serverCID))
            XCTAssertEqual(Array(bytes.suffix(16)), key.token(for: id), "the token our connection advertised")
        }
        XCTAssertEqual(endpoint.statelessResetsSent, 3)
        XCTAssertEqual(endpoint.connectionCount, 0)
    }

    func testNoResetForASmallDatagramOrALongHeader() throws {
        let endpoint = try endpoint()
        let path = try path()
        XCTAssertEqual(endpoint.receive(ByteBuffer(bytes: QUICTestPackets.short(datagramSize: 40)), path: path, now: 1), [])
        XCTAssertEqual(endpoint.receive(ByteBuffer(bytes: QUICTestPackets.long(type: QUICTestPackets.longTypeHandshake)),
                                        path: path, now: 1), [])
        XCTAssertEqual(endpoint.statelessResetsSent, 0)
        XCTAssertEqual(endpoint.droppedDatagrams[.unknownConnection], 2)
    }

    func testResetsAreRateLimited() throws {
        let endpoint = try endpoint()
        endpoint.statelessResetLimit = QUICTokenBucket(ratePerSecond: 1, burst: 2)
        let path = try path()
        let datagram = ByteBuffer(bytes: QUICTestPackets.short(datagramSize: 60))
        let start: UInt64 = 1_000_000_000
        XCTAssertEqual(endpoint.receive(datagram, path: path, now: start).count, 1)
        XCTAssertEqual(endpoint.receive(datagram, path: path, now: start).count, 1)
        XCTAssertEqual(endpoint.receive(datagram, path: path, now: start + 1).count, 0, "the burst is spent")
        XCTAssertEqual(endpoint.receive(datagram, path: path, now: start + 1_000_000_000).count, 1, "one per second")
        XCTAssertEqual(endpoint.statelessResetsSent, 3)
        XCTAssertEqual(endpoint.statelessResetsLimited, 1)
    }

    func testTheTokenBucketRefillsAtItsRateUpToItsBurst() {
        var bucket = QUICTokenBucket(ratePerSecond: 10, burst: 3)
        let start: UInt64 = 5_000_000_000
        XCTAssertEqual((0..<5).filter { _ in bucket.take(now: start) }.count, 3)
        XCTAssertFalse(bucket.take(now: start + 50_000_000), "half a token after 50 ms")
        XCTAssertTrue(bucket.take(now: start + 100_000_000), "one token after 100 ms")
        // A long quiet period refills only up to the burst.
        XCTAssertEqual((0..<10).filter { _ in bucket.take(now: start + 60_000_000_000) }.count, 3)
        // A clock that goes backwards adds nothing.
        XCTAssertFalse(bucket.take(now: start))
    }
}
