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
        XCTAssertEqual(recorder.events, ["flush stream 1stream 3stream 5"], "one write, one flush")

        channel.writeAndFlush(ByteBuffer(string: "stream 7"), promise: nil)
        channel.embeddedEventLoop.run()
        XCTAssertEqual(recorder.events.last, "flush stream 7", "a later tick gets its own flush")
        XCTAssertEqual(try channel.readOutbound(as: ByteBuffer.self).map { String(buffer: $0) },
                       "stream 1stream 3stream 5")
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

    func testALargeWriteGoesOnUncopiedAfterWhatWasGatheredBeforeIt() throws {
        let (channel, recorder) = try self.makeChannel()
        let large = String(repeating: "b", count: TickFlushCoalescer.gatherLimit)
        channel.write(ByteBuffer(string: "header"), promise: nil)
        channel.write(ByteBuffer(string: large), promise: nil)
        channel.writeAndFlush(ByteBuffer(string: "next"), promise: nil)
        channel.embeddedEventLoop.run()
        XCTAssertEqual(recorder.events, ["flush header," + large + ",next"])
        _ = try channel.finish()
    }

    func testGatheringStopsAtATLSRecordsWorth() throws {
        let (channel, recorder) = try self.makeChannel()
        let part = String(repeating: "c", count: TickFlushCoalescer.gatherLimit - 1)
        for _ in 0..<5 {
            channel.write(ByteBuffer(string: part), promise: nil)
        }
        channel.flush()
        channel.embeddedEventLoop.run()
        let written = try XCTUnwrap(recorder.events.first).dropFirst("flush ".count).split(separator: ",")
        XCTAssertEqual(written.map(\.count), [4 * part.count, part.count])
        _ = try channel.finish()
    }

    func testEveryGatheredWritersPromiseCompletes() throws {
        let (channel, _) = try self.makeChannel()
        let promises = (0..<3).map { _ in channel.eventLoop.makePromise(of: Void.self) }
        channel.write(ByteBuffer(string: "a"), promise: promises[0])
        channel.write(ByteBuffer(string: "b"), promise: nil)
        channel.write(ByteBuffer(string: "c"), promise: promises[1])
        channel.writeAndFlush(ByteBuffer(string: "d"), promise: promises[2])
        channel.embeddedEventLoop.run()
        for promise in promises {
            XCTAssertNoThrow(try promise.futureResult.wait())
        }
        _ = try channel.finish()
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
