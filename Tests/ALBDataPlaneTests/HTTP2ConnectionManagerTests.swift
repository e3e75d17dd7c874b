import NIOCore
import NIOEmbedded
import NIOHTTP2
import XCTest

@testable import ALBDataPlane

final class HTTP2ConnectionManagerTests: XCTestCase {
    private func makeChannel(idleTimeout: TimeAmount = .seconds(60)) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        let manager = HTTP2ConnectionManager { idleTimeout }
        // As a listener's connection has it: the router, which tells the manager of the streams, then the manager.
        try channel.pipeline.syncOperations.addHandler(HTTP2StreamRouter(compressesNow: { false }, connection: manager) { _ in })
        try channel.pipeline.syncOperations.addHandler(manager)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        return channel
    }

    /// As nio-http2's handler tells of streams: user events, in the pipeline after it (the router's place).
    private func open(_ id: Int, on channel: EmbeddedChannel) {
        channel.pipeline.fireUserInboundEventTriggered(
            NIOHTTP2StreamCreatedEvent(streamID: HTTP2StreamID(id), localInitialWindowSize: 65535,
                                       remoteInitialWindowSize: 65535))
    }

    private func close(_ id: Int, on channel: EmbeddedChannel) {
        channel.pipeline.fireUserInboundEventTriggered(StreamClosedEvent(streamID: HTTP2StreamID(id), reason: nil))
    }

    private func goAway(from channel: EmbeddedChannel) throws -> (HTTP2StreamID, HTTP2ErrorCode)? {
        guard let frame = try channel.readOutbound(as: HTTP2Frame.self) else { return nil }
        guard case .goAway(let last, let code, _) = frame.payload, frame.streamID == .rootStream else { return nil }
        return (last, code)
    }

    /// The first step of a drain: a GOAWAY with the largest stream ID, then a PING.
    private func announcement(from channel: EmbeddedChannel) throws -> Bool {
        guard let first = try goAway(from: channel), first == (.maxID, .noError),
              let ping = try channel.readOutbound(as: HTTP2Frame.self),
              case .ping(HTTP2ConnectionManager.drainPing, ack: false) = ping.payload else { return false }
        return true
    }

    private func acknowledgePing(on channel: EmbeddedChannel) throws {
        try channel.writeInbound(HTTP2Frame(streamID: .rootStream, payload: .ping(HTTP2ConnectionManager.drainPing, ack: true)))
    }

    func testADrainAnnouncesThenNamesTheLastStreamAndClosesWhenTheOpenStreamsFinish() throws {
        let channel = try makeChannel()
        self.open(1, on: channel)
        self.open(3, on: channel)
        self.close(1, on: channel)
        channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        XCTAssertTrue(try announcement(from: channel))
        XCTAssertNil(try channel.readOutbound(as: HTTP2Frame.self))
        try acknowledgePing(on: channel)
        let sent = try XCTUnwrap(try goAway(from: channel))
        XCTAssertEqual(sent.0, HTTP2StreamID(3))
        XCTAssertEqual(sent.1, .noError)
        XCTAssertTrue(channel.isActive, "stream 3 is still open")
        channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        XCTAssertNil(try channel.readOutbound(as: HTTP2Frame.self), "one drain per connection")
        self.close(3, on: channel)
        channel.embeddedEventLoop.run()
        XCTAssertEqual(try goAway(from: channel)?.0, HTTP2StreamID(3), "the final GOAWAY, behind the last frame")
        XCTAssertFalse(channel.isActive)
    }

    func testAStreamOnItsWayWhenTheDrainBeginsIsServed() throws {
        let channel = try makeChannel()
        self.open(1, on: channel)
        self.close(1, on: channel)
        channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        XCTAssertTrue(try announcement(from: channel))
        XCTAssertTrue(channel.isActive, "the client may have sent a request already")
        self.open(3, on: channel)  // sent before the client read the GOAWAY
        try acknowledgePing(on: channel)
        XCTAssertEqual(try goAway(from: channel)?.0, HTTP2StreamID(3), "stream 3 is named as processed")
        XCTAssertTrue(channel.isActive)
        self.close(3, on: channel)
        channel.embeddedEventLoop.run()
        XCTAssertEqual(try goAway(from: channel)?.0, HTTP2StreamID(3))
        XCTAssertFalse(channel.isActive)
    }

    func testADrainOfAnIdleConnectionClosesAfterTheAnnouncementWaitWithoutAnAcknowledgement() throws {
        let channel = try makeChannel()
        self.open(1, on: channel)
        self.close(1, on: channel)
        channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        XCTAssertTrue(try announcement(from: channel))
        channel.embeddedEventLoop.advanceTime(by: HTTP2ConnectionManager.announcementWait - .milliseconds(1))
        XCTAssertTrue(channel.isActive)
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(1))
        XCTAssertEqual(try goAway(from: channel)?.0, HTTP2StreamID(1))
        XCTAssertFalse(channel.isActive)
    }

    func testTheClientsOwnPingAcknowledgementsDoNotEndTheAnnouncement() throws {
        let channel = try makeChannel()
        channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        XCTAssertTrue(try announcement(from: channel))
        try channel.writeInbound(HTTP2Frame(streamID: .rootStream, payload: .ping(HTTP2PingData(withInteger: 7), ack: true)))
        XCTAssertNil(try channel.readOutbound(as: HTTP2Frame.self))
        XCTAssertTrue(channel.isActive)
    }

    func testOnlyAConnectionWithNoOpenStreamTimesOut() throws {
        let channel = try makeChannel(idleTimeout: .seconds(5))
        self.open(1, on: channel)
        channel.embeddedEventLoop.advanceTime(by: .seconds(30))
        XCTAssertTrue(channel.isActive, "a stream in progress keeps the connection")
        self.close(1, on: channel)
        channel.embeddedEventLoop.advanceTime(by: .seconds(4))
        XCTAssertTrue(channel.isActive)
        channel.embeddedEventLoop.advanceTime(by: .seconds(1))
        XCTAssertFalse(channel.isActive)
    }
}
