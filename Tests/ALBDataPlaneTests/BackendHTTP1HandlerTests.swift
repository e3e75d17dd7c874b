import NIOCore
import NIOEmbedded
import NIOHTTP1
import XCTest

@testable import ALBDataPlane

/// A backend connection's HTTP/1 codec on an embedded channel: the request bytes written (framing and
/// validation as NIO's encoder and validator), and what a backend sends becoming response parts, paired
/// with the requests written.
final class BackendHTTP1CodecTests: XCTestCase {
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

    private func connection() throws -> (EmbeddedChannel, Recorder, BackendHTTP1Codec) {
        let recorder = Recorder()
        let decoder = BackendHTTP1Codec()
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

    /// Everything written so far, as one string.
    private func written(_ channel: EmbeddedChannel) throws -> String {
        var text = ""
        while let data = try channel.readOutbound(as: IOData.self) {
            guard case .byteBuffer(let buffer) = data else { XCTFail("a file region"); continue }
            text += String(buffer: buffer)
        }
        return text
    }

    func testARequestWithALengthIsWrittenAsItIsFramed() throws {
        let (channel, _, _) = try self.connection()
        var headers = HTTPHeaders([("Host", "backend"), ("Content-Length", "5")])
        try channel.writeOutbound(HTTPClientRequestPart.head(HTTPRequestHead(version: .http1_1, method: .POST, uri: "/up?x=1", headers: headers)))
        try channel.writeOutbound(HTTPClientRequestPart.body(.byteBuffer(ByteBuffer(string: "hello"))))
        try channel.writeOutbound(HTTPClientRequestPart.end(nil))
        XCTAssertEqual(try self.written(channel), "POST /up?x=1 HTTP/1.1\r\nHost: backend\r\nContent-Length: 5\r\n\r\nhello")
        headers = HTTPHeaders([("Host", "backend")])
        try channel.writeOutbound(HTTPClientRequestPart.head(HTTPRequestHead(version: .http1_1, method: .GET, uri: "/", headers: headers)))
        try channel.writeOutbound(HTTPClientRequestPart.end(nil))
        XCTAssertEqual(try self.written(channel), "GET / HTTP/1.1\r\nHost: backend\r\n\r\n")
        XCTAssertNoThrow(try channel.finish())
    }

    func testABodyWithoutALengthIsChunkedWithItsTrailers() throws {
        let (channel, _, _) = try self.connection()
        let head = HTTPRequestHead(version: .http1_1, method: .PUT, uri: "/", headers: HTTPHeaders([("Host", "b")]))
        try channel.writeOutbound(HTTPClientRequestPart.head(head))
        try channel.writeOutbound(HTTPClientRequestPart.body(.byteBuffer(ByteBuffer(string: "0123456789abcdefX"))))
        try channel.writeOutbound(HTTPClientRequestPart.body(.byteBuffer(ByteBuffer())))
        try channel.writeOutbound(HTTPClientRequestPart.end(HTTPHeaders([("Checksum", "7")])))
        XCTAssertEqual(try self.written(channel),
                       "PUT / HTTP/1.1\r\nHost: b\r\ntransfer-encoding: chunked\r\n\r\n11\r\n0123456789abcdefX\r\n0\r\nChecksum: 7\r\n\r\n",
                       "an empty part is not a chunk: it would end the body")
        XCTAssertNoThrow(try channel.finish())
    }

    func testATraceRequestLosesItsBodyFraming() throws {
        let (channel, _, _) = try self.connection()
        let head = HTTPRequestHead(version: .http1_1, method: .TRACE, uri: "/",
                                   headers: HTTPHeaders([("Content-Length", "3"), ("Host", "b")]))
        try channel.writeOutbound(HTTPClientRequestPart.head(head))
        try channel.writeOutbound(HTTPClientRequestPart.end(nil))
        XCTAssertEqual(try self.written(channel), "TRACE / HTTP/1.1\r\nHost: b\r\n\r\n")
        XCTAssertNoThrow(try channel.finish())
    }

    func testAHeadThatWouldSplitTheRequestIsRefusedAndNothingIsWritten() throws {
        let bad: [HTTPRequestHead] = [
            HTTPRequestHead(version: .http1_1, method: .GET, uri: "/", headers: HTTPHeaders([("X", "a\r\nX-Injected: 1")])),
            HTTPRequestHead(version: .http1_1, method: .GET, uri: "/", headers: HTTPHeaders([("X", "a\u{0}b")])),
            HTTPRequestHead(version: .http1_1, method: .GET, uri: "/", headers: HTTPHeaders([("X", "bell\u{7}")])),
            HTTPRequestHead(version: .http1_1, method: .GET, uri: "/", headers: HTTPHeaders([("Bad Name", "v")])),
            HTTPRequestHead(version: .http1_1, method: .GET, uri: "/", headers: HTTPHeaders([("", "v")])),
            HTTPRequestHead(version: .http1_1, method: .GET, uri: "/a b", headers: HTTPHeaders()),
            HTTPRequestHead(version: .http1_1, method: .GET, uri: "/\r\nGET /x", headers: HTTPHeaders()),
            HTTPRequestHead(version: .http1_1, method: .RAW(value: "GE T"), uri: "/", headers: HTTPHeaders()),
        ]
        for head in bad {
            let (channel, recorder, _) = try self.connection()
            let written = channel.eventLoop.makePromise(of: Void.self)
            channel.write(HTTPClientRequestPart.head(head), promise: written)
            channel.flush()
            XCTAssertThrowsError(try written.futureResult.wait(), "\(head)")
            XCTAssertEqual(recorder.errors, 1, "\(head)")
            XCTAssertEqual(try self.written(channel), "", "\(head)")
            _ = try? channel.finish()
        }
        let fine = HTTPRequestHead(version: .http1_1, method: .RAW(value: "PURGE"), uri: "/a%20b?c=[d]&e=~f#g",
                                   headers: HTTPHeaders([("X-Tab", "a\tb"), ("X-Utf8", "caf\u{e9}")]))
        let (channel, recorder, _) = try self.connection()
        try channel.writeOutbound(HTTPClientRequestPart.head(fine))
        XCTAssertEqual(recorder.errors, 0)
        XCTAssertEqual(try self.written(channel), "PURGE /a%20b?c=[d]&e=~f#g HTTP/1.1\r\nX-Tab: a\tb\r\nX-Utf8: caf\u{e9}\r\n\r\n")
        _ = try? channel.finish()
    }

    func testTrailersThatWouldSplitTheRequestAreRefused() throws {
        let (channel, recorder, _) = try self.connection()
        try channel.writeOutbound(HTTPClientRequestPart.head(HTTPRequestHead(version: .http1_1, method: .POST, uri: "/")))
        _ = try self.written(channel)
        let ended = channel.eventLoop.makePromise(of: Void.self)
        channel.writeAndFlush(HTTPClientRequestPart.end(HTTPHeaders([("T", "x\ny")])), promise: ended)
        XCTAssertThrowsError(try ended.futureResult.wait())
        XCTAssertEqual(recorder.errors, 1)
        XCTAssertEqual(try self.written(channel), "")
        _ = try? channel.finish()
    }
}
