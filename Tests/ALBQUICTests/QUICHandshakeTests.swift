import NIOCore
import XCTest

@testable import ALBQUIC

/// A real client's Initial (``QUICRecordedInitial``) through the endpoint, with a clock the test drives: the
/// server's first flight, routing of retransmissions, and the timers up to the handshake timeout.
final class QUICHandshakeTests: XCTestCase {
    private let start: UInt64 = 5_000_000_000

    private func endpoint(handshakeTimeout: TimeAmount = .seconds(10)) throws -> QUICEndpoint {
        let pem = try QUICTestCertificate.make()
        var configuration = QUICConnectionConfiguration()
        configuration.handshakeTimeout = handshakeTimeout
        return try QUICEndpoint(configuration: configuration,
                                credentials: QUICServerCredentials(chainPEM: pem.chain, keyPEM: pem.key))
    }

    private func path() throws -> QUICPath {
        QUICPath(local: try SocketAddress(ipAddress: "127.0.0.1", port: 4433),
                 remote: try SocketAddress(ipAddress: "127.0.0.1", port: 50001))
    }

    func testAClientInitialGetsTheServersFirstFlightWithinTheAmplificationLimit() throws {
        let endpoint = try endpoint()
        let path = try path()
        let initial = try XCTUnwrap(QUICRecordedInitial.datagram)
        let client = try QUICPacketHeader.parse(initial, shortHeaderConnectionIDLength: 18).get()

        let flight = endpoint.receive(initial, path: path, now: start)
        XCTAssertFalse(flight.isEmpty, "ServerHello and the Handshake flight")
        XCTAssertTrue(flight.allSatisfy { $0.path == path })
        // RFC 9000 section 8.1: before the client's address is validated, at most 3x what it sent.
        XCTAssertLessThanOrEqual(flight.map(\.bytes.readableBytes).reduce(0, +), 3 * initial.readableBytes)

        let events = endpoint.takeEvents()
        guard case .connectionOpened(let id, let remote) = events.first, events.count == 1 else {
            return XCTFail("\(events)")
        }
        XCTAssertEqual(remote, path.remote)
        let reply = try QUICPacketHeader.parse(try XCTUnwrap(flight.first?.bytes), shortHeaderConnectionIDLength: 18).get()
        XCTAssertEqual(reply.version, .v1)
        XCTAssertEqual(reply.longPacketType, .initial)
        XCTAssertEqual(reply.destinationConnectionID, client.sourceConnectionID, "to the client's ID")
        XCTAssertEqual(reply.sourceConnectionID, id, "from our new ID")
        XCTAssertEqual(id.count, 18)
        XCTAssertNotNil(endpoint.nextDeadline)

        // A retransmitted Initial (same destination ID) reaches the same connection; ngtcp2 discards the
        // duplicate, so no second connection and no handshake restarted.
        _ = endpoint.receive(initial, path: path, now: start + 1_000_000)
        XCTAssertEqual(endpoint.connectionCount, 1)
        XCTAssertEqual(endpoint.takeEvents(), [])
    }

    /// The client never answers: ngtcp2 retransmits on its PTO timer (still within 3x what it received, the
    /// client's address being unvalidated) and gives up at the handshake timeout, sending nothing then.
    func testAClientThatNeverAnswersIsForgottenAtTheHandshakeTimeout() throws {
        let endpoint = try endpoint(handshakeTimeout: .seconds(3))
        let path = try path()
        let initial = try XCTUnwrap(QUICRecordedInitial.datagram)
        var sent = endpoint.receive(initial, path: path, now: start).map(\.bytes.readableBytes).reduce(0, +)
        var now = start
        var timerRuns = 0
        while endpoint.connectionCount > 0, timerRuns < 1000 {
            let deadline = try XCTUnwrap(endpoint.nextDeadline, "an open connection always has a timer")
            XCTAssertGreaterThanOrEqual(deadline, start)
            now = max(now, deadline)
            sent += endpoint.handleTimers(now: now).map(\.bytes.readableBytes).reduce(0, +)
            timerRuns += 1
        }
        XCTAssertEqual(endpoint.connectionCount, 0)
        XCTAssertLessThanOrEqual(sent, 3 * initial.readableBytes)
        XCTAssertGreaterThanOrEqual(now - start, 3_000_000_000, "not before the handshake timeout")
        XCTAssertLessThan(now - start, 4_000_000_000)
        let events = endpoint.takeEvents()
        XCTAssertTrue(events.contains {
            if case .connectionClosed(_, .handshakeTimeout) = $0 { return true }
            return false
        }, "\(events)")
        XCTAssertNil(endpoint.nextDeadline)
    }

    /// A draining endpoint creates no connection for a new client's Initial; one mid-handshake (no HTTP/3
    /// yet) is closed at once and leaves the table after its closing period.
    func testADrainingEndpointRefusesNewClientsAndClosesHandshakingOnes() throws {
        let endpoint = try endpoint()
        let path = try path()
        let initial = try XCTUnwrap(QUICRecordedInitial.datagram)
        _ = endpoint.receive(initial, path: path, now: start)
        XCTAssertEqual(endpoint.connectionCount, 1)
        _ = endpoint.takeEvents()

        _ = endpoint.drain(now: start + 1_000_000)
        XCTAssertTrue(endpoint.isDraining)
        var now = start + 1_000_000
        while endpoint.connectionCount > 0, let deadline = endpoint.nextDeadline, deadline < start + 20_000_000_000 {
            now = max(now, deadline)
            _ = endpoint.handleTimers(now: now)
        }
        XCTAssertEqual(endpoint.connectionCount, 0)
        let closed = endpoint.takeEvents().filter {
            if case .connectionClosed = $0 { return true }
            return false
        }
        XCTAssertEqual(closed.count, 1)

        let other = try QUICPath(local: path.local, remote: SocketAddress(ipAddress: "127.0.0.1", port: 50002))
        XCTAssertEqual(endpoint.receive(initial, path: other, now: now + 1).count, 0)
        XCTAssertEqual(endpoint.connectionCount, 0)
        XCTAssertEqual(endpoint.refusedWhileDraining, 1)
        XCTAssertEqual(endpoint.takeEvents(), [])
    }
}
