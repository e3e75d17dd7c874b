@testable import ALBHTTP
import NIOCore
import NIOEmbedded
import XCTest

/// Sits below the coalescer and records what reaches the socket side: each flush and the bytes written
/// before it, and the close.
private final class OutboundRecorder: ChannelOutboundHandler {
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    var events: [String] = []
    private var unflushed: [String] = []

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        self.unflushed.append(String(buffer: self.unwrapOutboundIn(data)))
        context.write(data, promise: promise)
    }

    func flush(context: ChannelHandlerContext) {
        self.events.append("flush " + self.unflushed.joined(separator: ","))
        self.unflushed = []
        context.flush()
    }

    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        self.events.append("close")
        context.close(mode: mode, promise: promise)
    }
}

final class TickFlushCoalescerTests: XCTestCase {
    private func makeChannel() throws -> (EmbeddedChannel, OutboundRecorder) {
        let recorder = OutboundRecorder()
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(recorder)
        try channel.pipeline.syncOperations.addHandler(TickFlushCoalescer())
        return (channel, recorder)
    }

    func testTheFlushesOfOneTickLeaveTogetherAfterIt() throws {
        let (channel, recorder) = try self.makeChannel()
        for answer in ["stream 1", "stream 3", "stream 5"] {
            channel.writeAndFlush(ByteBuffer(string: answer), promise: nil)
        }
        XCTAssertEqual(recorder.events, [], "nothing leaves before the tick's queued tasks run")
        channel.embeddedEventLoop.run()
        XCTAssertEqual(recorder.events, ["flush stream 1,stream 3,stream 5"])

        channel.writeAndFlush(ByteBuffer(string: "stream 7"), promise: nil)
        channel.embeddedEventLoop.run()
        XCTAssertEqual(recorder.events.last, "flush stream 7", "a later tick gets its own flush")
        XCTAssertEqual(try channel.readOutbound(as: ByteBuffer.self).map { String(buffer: $0) }, "stream 1")
        _ = try channel.finish()
    }

    func testACloseSendsWhatWasWrittenBeforeIt() throws {
        let (channel, recorder) = try self.makeChannel()
        channel.writeAndFlush(ByteBuffer(string: "GOAWAY"), promise: nil)
        channel.close(promise: nil)
        XCTAssertEqual(recorder.events, ["flush GOAWAY", "close"])
        channel.embeddedEventLoop.run()
        XCTAssertEqual(recorder.events, ["flush GOAWAY", "close"], "the queued flush finds nothing left to do")
    }

    func testAWriteWithoutAFlushWaitsForOne() throws {
        let (channel, recorder) = try self.makeChannel()
        channel.write(ByteBuffer(string: "partial"), promise: nil)
        channel.embeddedEventLoop.run()
        XCTAssertEqual(recorder.events, [])
        channel.flush()
        channel.embeddedEventLoop.run()
        XCTAssertEqual(recorder.events, ["flush partial"])
        _ = try channel.finish()
    }
}
