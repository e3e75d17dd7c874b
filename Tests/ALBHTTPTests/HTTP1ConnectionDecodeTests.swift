import ALBHTTP
import NIOCore
import NIOEmbedded
import NIOHTTP1
import XCTest

/// The connection handler's decode stage, on the edge pipeline: holding bytes across reads, silence after a
/// refusal, and order when bytes arrive while it decodes.
final class HTTP1ConnectionDecodeTests: XCTestCase {
    /// Records the URIs of request heads and the errors that reach it, and answers each request at its end.
    private final class Recorder: ChannelInboundHandler {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        var uris: [String] = []
        var ends = 0
        var errors = 0
        /// Fired from the head of the pipeline when the first request head arrives, as a read would be.
        var bytesOnFirstHead: ByteBuffer?

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch self.unwrapInboundIn(data) {
            case .head(let head):
                self.uris.append(head.uri)
                if let bytes = self.bytesOnFirstHead {
                    self.bytesOnFirstHead = nil
                    context.pipeline.fireChannelRead(bytes)
                }
            case .body: break
            case .end:
                self.ends += 1
                let head = HTTPResponseHead(version: .http1_1, status: .noContent)
                context.write(Self.wrapOutboundOut(.head(head)), promise: nil)
                context.writeAndFlush(Self.wrapOutboundOut(.end(nil)), promise: nil)
            }
        }

        func errorCaught(context: ChannelHandlerContext, error: Error) {
            self.errors += 1
        }
    }

    private func channel(_ recorder: Recorder) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        try channel.pipeline.syncOperations.configureEdgeHTTPPipeline(
            options: EdgePipelineOptions(limits: .init(), headerTimeout: .seconds(10), idleTimeout: { .seconds(15) }),
            application: recorder)
        return channel
    }

    func testAHeadSplitAcrossReadsIsDecodedOnceCompleteAndPipelinedRequestsInOrder() throws {
        let recorder = Recorder()
        let channel = try self.channel(recorder)
        try channel.writeInbound(ByteBuffer(string: "GET /1 HTTP/1.1\r\nHo"))
        XCTAssertEqual(recorder.uris, [])
        try channel.writeInbound(ByteBuffer(string: "st: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\nGET /3 HTTP/1.1\r\n"))
        XCTAssertEqual(recorder.uris, ["/1", "/2"])
        try channel.writeInbound(ByteBuffer(string: "Host: h\r\n\r\n"))
        XCTAssertEqual(recorder.uris, ["/1", "/2", "/3"])
        XCTAssertEqual(recorder.ends, 3)
        XCTAssertEqual(try outboundText(channel).components(separatedBy: "HTTP/1.1 204 No Content\r\n").count - 1, 3)
        XCTAssertNoThrow(try channel.finish())
    }

    func testAfterARefusalWhatTheClientStillSendsIsDropped() throws {
        let recorder = Recorder()
        let channel = try self.channel(recorder)
        try channel.writeInbound(ByteBuffer(string: "GET / HTTP/1.1\r\nHost: h\r\nBad Name: x\r\n\r\n"))
        XCTAssertEqual(recorder.errors, 1)
        XCTAssertTrue(try outboundText(channel).hasPrefix("HTTP/1.1 400 Bad Request\r\n"))
        // The edge answers 400 and closes lingering, reading until the client closes: the bytes that keep
        // coming are neither decoded nor reported again.
        _ = try? channel.writeInbound(ByteBuffer(string: "GET /after HTTP/1.1\r\nHost: h\r\n\r\n"))
        _ = try? channel.writeInbound(ByteBuffer(string: "\u{0}garbage"))
        XCTAssertEqual(recorder.errors, 1)
        XCTAssertEqual(recorder.uris, [])
        XCTAssertEqual(try outboundText(channel), "")
        _ = try? channel.finish()
    }

    func testBytesArrivingWhileItDecodesFollowTheBytesItHeld() throws {
        let recorder = Recorder()
        recorder.bytesOnFirstHead = ByteBuffer(string: "GET /3 HTTP/1.1\r\nHost: h\r\n\r\n")
        let channel = try self.channel(recorder)
        try channel.writeInbound(ByteBuffer(string: "GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n"))
        XCTAssertEqual(recorder.uris, ["/1", "/2", "/3"])
        XCTAssertEqual(recorder.ends, 3)
        XCTAssertNoThrow(try channel.finish())
    }
}
