import NIOCore
import NIOEmbedded
import NIOTLS
import XCTest

@testable import ALBDataPlane

final class TLSHandshakeTimeoutHandlerTests: XCTestCase {
    /// The inbound events that pass the handler, in order.
    private final class EventRecorder: ChannelInboundHandler {
        typealias InboundIn = NIOAny
        var events: [String] = []

        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            switch event {
            case is ChannelShouldQuiesceEvent: self.events.append("quiesce")
            case TLSUserEvent.handshakeCompleted: self.events.append("handshakeCompleted")
            default: self.events.append("other")
            }
        }
    }

    private func connection(timeout: TimeAmount = .seconds(10)) throws -> (EmbeddedChannel, EventRecorder) {
        let recorder = EventRecorder()
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(TLSHandshakeTimeoutHandler(timeout: timeout))
        try channel.pipeline.syncOperations.addHandler(recorder)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        return (channel, recorder)
    }

    func testADrainDuringTheHandshakeReachesTheHTTPSideAfterIt() throws {
        let (channel, recorder) = try connection()
        channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        XCTAssertEqual(recorder.events, [], "nothing behind the TLS handler speaks HTTP yet")
        XCTAssertTrue(channel.isActive, "the handshake goes on")
        channel.pipeline.fireUserInboundEventTriggered(TLSUserEvent.handshakeCompleted(negotiatedProtocol: "h2"))
        channel.embeddedEventLoop.run()
        XCTAssertEqual(recorder.events, ["handshakeCompleted", "quiesce"])
        XCTAssertThrowsError(try channel.pipeline.syncOperations.handler(type: TLSHandshakeTimeoutHandler.self),
                             "it leaves the pipeline with the handshake")
        _ = try? channel.finish()
    }

    func testWithoutADrainOnlyTheCompletionPasses() throws {
        let (channel, recorder) = try connection()
        channel.pipeline.fireUserInboundEventTriggered(TLSUserEvent.handshakeCompleted(negotiatedProtocol: nil))
        channel.embeddedEventLoop.run()
        XCTAssertEqual(recorder.events, ["handshakeCompleted"])
        channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        XCTAssertEqual(recorder.events, ["handshakeCompleted", "quiesce"], "after the handshake a drain passes at once")
        _ = try? channel.finish()
    }

    func testAHandshakeNotDoneWithinTheTimeoutIsClosed() throws {
        let (channel, _) = try connection(timeout: .seconds(3))
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(2_999))
        XCTAssertTrue(channel.isActive)
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(1))
        XCTAssertFalse(channel.isActive)
    }
}
