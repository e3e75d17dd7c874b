import NIOCore
import NIOEmbedded
import NIOHTTP1
import XCTest

@testable import ALBDataPlane

/// The backend side's wrapper around NIO's response decoder, on an embedded channel: what a backend sends
/// becomes response parts, paired with the requests written.
final class BackendResponseDecoderHandlerTests: XCTestCase {
    /// Records the response parts and errors; can write a request when a response ends, as a pooled
    /// connection taken at once does.
    private final class Recorder: ChannelDuplexHandler, RemovableChannelHandler {
        typealias InboundIn = HTTPClientResponsePart
        typealias OutboundIn = HTTPClientRequestPart
        typealias OutboundOut = HTTPClientRequestPart
        var statuses: [UInt] = []
        var bodies: [String] = []
        var ends = 0
        var errors = 0
        var requestOnEnd: HTTPRequestHead?

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch Self.unwrapInboundIn(data) {
            case .head(let head): self.statuses.append(head.status.code); self.bodies.append("")
            case .body(let body): self.bodies[self.bodies.count - 1] += String(buffer: body)
            case .end:
                self.ends += 1
                if let head = self.requestOnEnd {
                    self.requestOnEnd = nil
                    context.write(Self.wrapOutboundOut(.head(head)), promise: nil)
                    context.writeAndFlush(Self.wrapOutboundOut(.end(nil)), promise: nil)
                }
            }
        }

        func errorCaught(context: ChannelHandlerContext, error: Error) { self.errors += 1 }
    }

    private func connection() throws -> (EmbeddedChannel, Recorder, BackendResponseDecoderHandler) {
        let recorder = Recorder()
        let decoder = BackendResponseDecoderHandler()
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(decoder)
        try channel.pipeline.syncOperations.addHandler(recorder)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        return (channel, recorder, decoder)
    }

    private func request(_ channel: EmbeddedChannel, _ method: HTTPMethod) throws {
        try channel.writeOutbound(HTTPClientRequestPart.head(HTTPRequestHead(version: .http1_1, method: method, uri: "/")))
        try channel.writeOutbound(HTTPClientRequestPart.end(nil))
    }

    func testResponsesSplitAcrossReadsAndAHeadResponseWithoutBody() throws {
        let (channel, recorder, _) = try self.connection()
        try self.request(channel, .HEAD)
        try self.request(channel, .GET)
        try channel.writeInbound(ByteBuffer(string: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nHTTP/1.1 201 Cre"))
        XCTAssertEqual(recorder.statuses, [200], "a response to HEAD has no body, whatever its length says")
        XCTAssertEqual(recorder.ends, 1)
        try channel.writeInbound(ByteBuffer(string: "ated\r\nContent-Length: 5\r\n\r\nhel"))
        try channel.writeInbound(ByteBuffer(string: "lo"))
        XCTAssertEqual(recorder.statuses, [200, 201])
        XCTAssertEqual(recorder.bodies, ["", "hello"])
        XCTAssertEqual(recorder.ends, 2)
        XCTAssertNoThrow(try channel.finish())
    }

    func testTheConnectionClosingEndsAResponseDelimitedByTheClose() throws {
        let (channel, recorder, _) = try self.connection()
        try self.request(channel, .GET)
        try channel.writeInbound(ByteBuffer(string: "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of "))
        try channel.writeInbound(ByteBuffer(string: "it"))
        XCTAssertEqual(recorder.ends, 0)
        channel.pipeline.fireChannelInactive()
        XCTAssertEqual(recorder.bodies, ["all of it"])
        XCTAssertEqual(recorder.ends, 1)
        _ = try? channel.finish()
    }

    func testARequestWrittenWhileAResponseIsDecodedIsPairedWithTheNextResponse() throws {
        let (channel, recorder, _) = try self.connection()
        try self.request(channel, .GET)
        recorder.requestOnEnd = HTTPRequestHead(version: .http1_1, method: .HEAD, uri: "/next")
        try channel.writeInbound(ByteBuffer(string: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
        try channel.writeInbound(ByteBuffer(string: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"))
        XCTAssertEqual(recorder.ends, 2, "the second answers a HEAD: no body to wait for")
        XCTAssertNoThrow(try channel.finish())
    }

    func testAfterA101RemovalPassesOnWhatTheBackendSentBehindIt() throws {
        let (channel, recorder, decoder) = try self.connection()
        try self.request(channel, .GET)
        try channel.writeInbound(ByteBuffer(
            string: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n\u{81}\u{02}hi"))
        XCTAssertEqual(recorder.statuses, [101])
        // As the tunnel takes over: the HTTP side leaves, the decoder last.
        channel.pipeline.syncOperations.removeHandler(recorder, promise: nil)
        XCTAssertNil(try channel.readInbound(as: ByteBuffer.self))
        channel.pipeline.syncOperations.removeHandler(decoder, promise: nil)
        channel.embeddedEventLoop.run()
        XCTAssertEqual(try channel.readInbound(as: ByteBuffer.self), ByteBuffer(string: "\u{81}\u{02}hi"))
        _ = try? channel.finish()
    }

    func testGarbageIsReportedOnceAndWhatFollowsIsDropped() throws {
        let (channel, recorder, _) = try self.connection()
        try self.request(channel, .GET)
        XCTAssertNoThrow(try channel.writeInbound(ByteBuffer(string: "NOT HTTP\r\n\r\n")))
        XCTAssertNoThrow(try channel.writeInbound(ByteBuffer(string: "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")))
        channel.pipeline.fireChannelInactive()
        XCTAssertEqual(recorder.errors, 1)
        XCTAssertEqual(recorder.statuses, [])
        _ = try? channel.finish()
    }
}
