import ALBHTTP
import NIOCore
import NIOEmbedded
import NIOHTTP1
import XCTest

/// What the decoder's handler adds to the decoder: holding bytes across reads, silence after a refusal,
/// and order when bytes arrive while it decodes.
final class HTTPRequestDecoderHandlerTests: XCTestCase {
    /// Records the URIs of request heads and the errors that reach it.
    private final class Recorder: ChannelInboundHandler {
        typealias InboundIn = HTTPServerRequestPart
        var uris: [String] = []
        var ends = 0
        var errors = 0
        /// Fired from the head of the pipeline when the first request head arrives, as a read would be.
        var bytesOnFirstHead: ByteBuffer?

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch Self.unwrapInboundIn(data) {
            case .head(let head):
                self.uris.append(head.uri)
                if let bytes = self.bytesOnFirstHead {
                    self.bytesOnFirstHead = nil
                    context.pipeline.fireChannelRead(bytes)
                }
            case .body: break
            case .end: self.ends += 1
            }
        }

        func errorCaught(context: ChannelHandlerContext, error: Error) {
            self.errors += 1
        }
    }

    private func channel(_ recorder: Recorder) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(HTTPRequestDecoderHandler(StrictHTTPRequestDecoder()))
        try channel.pipeline.syncOperations.addHandler(recorder)
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
        XCTAssertNoThrow(try channel.finish())
    }

    func testAfterARefusalWhatTheClientStillSendsIsDropped() throws {
        let recorder = Recorder()
        let channel = try self.channel(recorder)
        try channel.writeInbound(ByteBuffer(string: "GET / HTTP/1.1\r\nHost: h\r\nBad Name: x\r\n\r\n"))
        XCTAssertEqual(recorder.errors, 1)
        // The edge answers 400 and closes lingering, reading until the client closes: the bytes that keep
        // coming are neither decoded nor reported again.
        try channel.writeInbound(ByteBuffer(string: "GET /after HTTP/1.1\r\nHost: h\r\n\r\n"))
        try channel.writeInbound(ByteBuffer(string: "\u{0}garbage"))
        XCTAssertEqual(recorder.errors, 1)
        XCTAssertEqual(recorder.uris, [])
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
