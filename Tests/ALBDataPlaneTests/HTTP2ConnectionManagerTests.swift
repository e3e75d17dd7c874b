import NIOCore
import NIOEmbedded
import NIOHTTP2
import XCTest

@testable import ALBDataPlane

final class HTTP2ConnectionManagerTests: XCTestCase {
    private var streams: HTTP2ConnectionManager.StreamEvents?

    private func makeChannel(idleTimeout: TimeAmount = .seconds(60)) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        let manager = HTTP2ConnectionManager { idleTimeout }
        self.streams = manager.streamDelegate(on: channel.eventLoop)
        try channel.pipeline.syncOperations.addHandler(manager)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        return channel
    }

    private func open(_ id: Int, on channel: EmbeddedChannel) {
        self.streams?.streamCreated(HTTP2StreamID(id), channel: channel)
    }

    private func close(_ id: Int, on channel: EmbeddedChannel) {
        self.streams?.streamClosed(HTTP2StreamID(id), channel: channel)
    }

    private func goAway(from channel: EmbeddedChannel) throws -> (HTTP2StreamID, HTTP2ErrorCode)? {
        guard let frame = try channel.readOutbound(as: HTTP2Frame.self) else { return nil }
        guard case .goAway(let last, let code, _) = frame.payload, frame.streamID == .rootStream else { return nil }
        return (last, code)
    }

    func testADrainSaysGoAwayWithTheLastStreamAndClosesWhenTheOpenStreamsFinish() throws {
        let channel = try makeChannel()
        self.open(1, on: channel)
        self.open(3, on: channel)
        self.close(1, on: channel)
        channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        let sent = try XCTUnwrap(try goAway(from: channel))
        XCTAssertEqual(sent.0, HTTP2StreamID(3))
        XCTAssertEqual(sent.1, .noError)
        XCTAssertTrue(channel.isActive, "stream 3 is still open")
        channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        XCTAssertNil(try channel.readOutbound(as: HTTP2Frame.self), "one GOAWAY per drain")
        self.close(3, on: channel)
        channel.embeddedEventLoop.run()
        XCTAssertEqual(try goAway(from: channel)?.0, HTTP2StreamID(3), "the final GOAWAY, behind the last frame")
        XCTAssertFalse(channel.isActive)
    }

    func testADrainOfAnIdleConnectionSaysGoAwayAndCloses() throws {
        let channel = try makeChannel()
        self.open(1, on: channel)
        self.close(1, on: channel)
        channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        XCTAssertEqual(try goAway(from: channel)?.0, HTTP2StreamID(1))
        XCTAssertFalse(channel.isActive)
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
