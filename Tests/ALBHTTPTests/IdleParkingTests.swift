import NIOCore
import NIOEmbedded
import NIOHTTP1
import XCTest

@testable import ALBHTTP

/// Records what the connection handler offers; takes the socket (closing the channel) while `takes` is set.
private final class RecordingParking: IdleConnectionParking, @unchecked Sendable {
    let parkingDelay: TimeAmount
    var takes = true
    var offers: [(at: NIODeadline, idleDeadline: NIODeadline)] = []

    init(delay: TimeAmount) {
        self.parkingDelay = delay
    }

    func park(_ channel: Channel, until idleDeadline: NIODeadline) -> Bool {
        self.offers.append((channel.eventLoop.now, idleDeadline))
        guard self.takes else { return false }
        channel.close(promise: nil)
        return true
    }
}

final class IdleParkingTests: XCTestCase {
    private func makeChannel(responder: TestResponder, parking: RecordingParking,
                             idleTimeout: TimeAmount = .seconds(15)) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        try channel.pipeline.syncOperations.configureEdgeHTTPPipeline(
            options: EdgePipelineOptions(limits: .init(), headerTimeout: .seconds(10), idleTimeout: { idleTimeout },
                                         parking: parking),
            application: responder)
        return channel
    }

    func testAConnectionIdleForTheDelayIsParkedWithItsIdleDeadline() throws {
        let parking = RecordingParking(delay: .seconds(1))
        let channel = try self.makeChannel(responder: TestResponder(), parking: parking)
        let start = channel.embeddedEventLoop.now
        try channel.writeInbound(ByteBuffer(string: "GET / HTTP/1.1\r\nHost: h\r\n\r\n"))
        XCTAssertTrue(try outboundText(channel).hasPrefix("HTTP/1.1 200 OK\r\n"))
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(999))
        XCTAssertTrue(parking.offers.isEmpty, "idle for less than the delay")
        XCTAssertTrue(channel.isActive)
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(1))
        XCTAssertEqual(parking.offers.map(\.at), [start + .seconds(1)])
        XCTAssertEqual(parking.offers.map(\.idleDeadline), [start + .seconds(15)], "the idle timeout goes with the socket")
        XCTAssertFalse(channel.isActive)
    }

    func testTheDelayCountsFromTheEndOfTheLastExchange() throws {
        let responder = TestResponder()
        responder.autoRespond = false
        let parking = RecordingParking(delay: .seconds(1))
        let channel = try self.makeChannel(responder: responder, parking: parking)
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(500))
        try channel.writeInbound(ByteBuffer(string: "GET / HTTP/1.1\r\nHost: h\r\n\r\n"))
        channel.embeddedEventLoop.advanceTime(by: .seconds(5))
        XCTAssertTrue(parking.offers.isEmpty, "a request waiting for its response is not idle")
        responder.respond()
        let answered = channel.embeddedEventLoop.now
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(900))
        XCTAssertTrue(parking.offers.isEmpty)
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(100))
        XCTAssertEqual(parking.offers.map(\.at), [answered + .seconds(1)])
    }

    func testAHalfArrivedHeadIsNotParked() throws {
        let parking = RecordingParking(delay: .seconds(1))
        let channel = try self.makeChannel(responder: TestResponder(), parking: parking)
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(200))
        try channel.writeInbound(ByteBuffer(string: "GET / HTTP/1.1\r\nHo"))
        channel.embeddedEventLoop.advanceTime(by: .seconds(5))
        XCTAssertTrue(parking.offers.isEmpty, "the bytes held belong to the channel")
        XCTAssertTrue(channel.isActive)
    }

    func testAConnectionTheParkingRefusesKeepsItsChannelUntilTheIdleTimeout() throws {
        let parking = RecordingParking(delay: .seconds(1))
        parking.takes = false
        let channel = try self.makeChannel(responder: TestResponder(), parking: parking, idleTimeout: .seconds(5))
        channel.embeddedEventLoop.advanceTime(by: .seconds(2))
        XCTAssertEqual(parking.offers.count, 1)
        XCTAssertTrue(channel.isActive)
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(2_999))
        XCTAssertTrue(channel.isActive)
        XCTAssertEqual(parking.offers.count, 1, "offered once an idle period")
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(1))
        XCTAssertFalse(channel.isActive, "closed at the idle timeout, as without parking")
    }

    func testAnIdleTimeoutShorterThanTheDelayClosesWithoutParking() throws {
        let parking = RecordingParking(delay: .seconds(2))
        let channel = try self.makeChannel(responder: TestResponder(), parking: parking, idleTimeout: .seconds(1))
        channel.embeddedEventLoop.advanceTime(by: .seconds(1))
        XCTAssertFalse(channel.isActive)
        XCTAssertTrue(parking.offers.isEmpty)
    }
}
