import ALBHTTP
import NIOCore
import NIOEmbedded
import NIOHTTP1
import XCTest

@testable import ALBDataPlane

/// A backend connection's HTTP/1 handler on an embedded channel: the request bytes written (framing and
/// validation as NIO's encoder and validator), what a backend sends becoming response parts for the
/// delegate, paired with the requests written, and the connection's reads held for backpressure.
final class BackendHTTP1HandlerTests: XCTestCase {
    /// The exchange's side: records the response parts and the close; can write a request when a response
    /// ends, as a pooled connection taken at once does.
    private final class Recorder: BackendConnectionDelegate {
        weak var handler: BackendHandler?
        var statuses: [UInt] = []
        var bodies: [String] = []
        var trailers: [HTTPHeaders?] = []
        var ends = 0
        var closes = 0
        var requestOnEnd: HTTPRequestHead?

        func backendRead(_ part: HTTPClientResponsePart, summary: HTTP1HeadSummary?) {
            switch part {
            case .head(let head): self.statuses.append(head.status.code); self.bodies.append("")
            case .body(let body): self.bodies[self.bodies.count - 1] += String(buffer: body)
            case .end(let trailers):
                self.ends += 1
                self.trailers.append(trailers)
                if let head = self.requestOnEnd, let handler = self.handler {
                    self.requestOnEnd = nil
                    handler.write(.head(head))
                    handler.write(.end(nil))
                    handler.flush()
                }
            }
        }

        func backendReadComplete() {}
        func backendWritabilityChanged(isWritable: Bool) {}
        func backendClosed() { self.closes += 1 }
    }

    /// Counts the reads that reach the socket.
    private final class ReadCounter: ChannelOutboundHandler {
        typealias OutboundIn = IOData
        var reads = 0
        func read(context: ChannelHandlerContext) {
            self.reads += 1
            context.read()
        }
    }

    private func connection() throws -> (EmbeddedChannel, Recorder, BackendHTTP1Handler) {
        let recorder = Recorder()
        let handler = BackendHTTP1Handler()
        handler.delegate = recorder
        recorder.handler = handler
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(handler)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        return (channel, recorder, handler)
    }

    private func request(_ handler: BackendHandler, _ method: HTTPMethod) {
        handler.write(.head(HTTPRequestHead(version: .http1_1, method: method, uri: "/")))
        handler.write(.end(nil))
        handler.flush()
    }

    func testResponsesSplitAcrossReadsAndAHeadResponseWithoutBody() throws {
        let (channel, recorder, handler) = try self.connection()
        self.request(handler, .HEAD)
        self.request(handler, .GET)
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

    func testAChunkedResponseWithTrailersByteByByte() throws {
        let (channel, recorder, handler) = try self.connection()
        self.request(handler, .GET)
        let response = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n"
        for byte in response.utf8 {
            try channel.writeInbound(ByteBuffer(bytes: [byte]))
        }
        XCTAssertEqual(recorder.bodies, ["abc"])
        XCTAssertEqual(recorder.trailers, [HTTPHeaders([("X-T", "1")])])
        XCTAssertTrue(channel.isActive)
        XCTAssertNoThrow(try channel.finish())
    }

    func testTheConnectionClosingEndsAResponseDelimitedByTheClose() throws {
        let (channel, recorder, handler) = try self.connection()
        self.request(handler, .GET)
        try channel.writeInbound(ByteBuffer(string: "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of "))
        try channel.writeInbound(ByteBuffer(string: "it"))
        XCTAssertEqual(recorder.ends, 0)
        channel.pipeline.fireChannelInactive()
        XCTAssertEqual(recorder.bodies, ["all of it"])
        XCTAssertEqual(recorder.ends, 1)
        XCTAssertEqual(recorder.closes, 1, "after the end")
        _ = try? channel.finish()
    }

    func testARequestWrittenWhileAResponseIsDecodedIsPairedWithTheNextResponse() throws {
        let (channel, recorder, handler) = try self.connection()
        self.request(handler, .GET)
        recorder.requestOnEnd = HTTPRequestHead(version: .http1_1, method: .HEAD, uri: "/next")
        // Both responses in one read: the second is decoded after the request written during the first.
        try channel.writeInbound(ByteBuffer(string: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                                                + "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"))
        XCTAssertEqual(recorder.ends, 2, "the second answers a HEAD: no body to wait for")
        XCTAssertTrue(channel.isActive)
        XCTAssertNoThrow(try channel.finish())
    }

    func testInformationalResponsesAreDropped() throws {
        let (channel, recorder, handler) = try self.connection()
        self.request(handler, .POST)
        try channel.writeInbound(ByteBuffer(string: "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"))
        XCTAssertEqual(recorder.statuses, [204])
        XCTAssertEqual(recorder.ends, 1)
        XCTAssertNoThrow(try channel.finish())
    }

    func testAfterA101RemovalPassesOnWhatTheBackendSentBehindIt() throws {
        let (channel, recorder, handler) = try self.connection()
        self.request(handler, .GET)
        try channel.writeInbound(ByteBuffer(
            string: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n\u{81}\u{02}hi"))
        XCTAssertEqual(recorder.statuses, [101])
        XCTAssertEqual(recorder.ends, 1)
        try channel.writeInbound(ByteBuffer(string: "\u{81}\u{01}!"))
        XCTAssertNil(try channel.readInbound(as: ByteBuffer.self), "held for the tunnel, not parsed")
        // As the tunnel takes over: the handler leaves and passes on what it holds, on the next turn.
        channel.pipeline.syncOperations.removeHandler(handler, promise: nil)
        XCTAssertNil(try channel.readInbound(as: ByteBuffer.self))
        channel.embeddedEventLoop.run()
        XCTAssertEqual(try channel.readInbound(as: ByteBuffer.self), ByteBuffer(string: "\u{81}\u{02}hi\u{81}\u{01}!"))
        try channel.writeInbound(ByteBuffer(string: "later"))
        XCTAssertEqual(try channel.readInbound(as: ByteBuffer.self), ByteBuffer(string: "later"))
        _ = try? channel.finish()
    }

    func testGarbageClosesTheConnectionAndWhatFollowsIsDropped() throws {
        let (channel, recorder, handler) = try self.connection()
        self.request(handler, .GET)
        XCTAssertNoThrow(try channel.writeInbound(ByteBuffer(string: "NOT HTTP\r\n\r\n")))
        XCTAssertFalse(channel.isActive)
        XCTAssertNoThrow(try channel.writeInbound(ByteBuffer(string: "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")))
        XCTAssertEqual(recorder.closes, 1)
        XCTAssertEqual(recorder.statuses, [])
        _ = try? channel.finish()
    }

    func testAResponseSplittingHeadClosesTheConnectionBeforeAnyPart() throws {
        let (channel, recorder, handler) = try self.connection()
        self.request(handler, .GET)
        try channel.writeInbound(ByteBuffer(string: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n"))
        XCTAssertFalse(channel.isActive)
        XCTAssertEqual(recorder.statuses, [], "the exchange answers 502: no response head reached it")
        XCTAssertEqual(recorder.closes, 1)
        _ = try? channel.finish()
    }

    func testBytesOnAnIdleConnectionCloseIt() throws {
        let (channel, recorder, handler) = try self.connection()
        self.request(handler, .GET)
        try channel.writeInbound(ByteBuffer(string: "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))
        handler.delegate = nil  // back in its pool
        XCTAssertTrue(channel.isActive)
        try channel.writeInbound(ByteBuffer(string: "HTTP/1.1 200 OK\r\n"))
        XCTAssertFalse(channel.isActive, "a response nobody asked for")
        XCTAssertEqual(recorder.ends, 1)
        _ = try? channel.finish()
    }

    func testPausedReadsAreHeldUntilResumed() throws {
        let (channel, _, handler) = try self.connection()
        let counter = ReadCounter()
        try channel.pipeline.syncOperations.addHandler(counter, position: .first)
        channel.read()
        XCTAssertEqual(counter.reads, 1)
        handler.pauseReads()
        channel.read()
        channel.read()
        XCTAssertEqual(counter.reads, 1)
        handler.resumeReads()
        XCTAssertEqual(counter.reads, 2, "one held read, let through")
        channel.read()
        XCTAssertEqual(counter.reads, 3)
        XCTAssertNoThrow(try channel.finish())
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
            HTTPRequestHead(version: .http1_1, method: .GET, uri: "/caf\u{e9}", headers: HTTPHeaders()),
            HTTPRequestHead(version: .http1_1, method: .GET, uri: "/a\u{7f}", headers: HTTPHeaders()),
            HTTPRequestHead(version: .http1_1, method: .GET, uri: "/a#b", headers: HTTPHeaders()),
            HTTPRequestHead(version: .http1_1, method: .RAW(value: "GE T"), uri: "/", headers: HTTPHeaders()),
        ]
        for head in bad {
            let (channel, recorder, _) = try self.connection()
            let written = channel.eventLoop.makePromise(of: Void.self)
            channel.write(HTTPClientRequestPart.head(head), promise: written)
            channel.flush()
            XCTAssertThrowsError(try written.futureResult.wait(), "\(head)")
            XCTAssertEqual(recorder.closes, 1, "\(head)")
            XCTAssertEqual(try self.written(channel), "", "\(head)")
            _ = try? channel.finish()
        }
        // Visible ASCII passes, what browsers send unencoded in a query (`{`, `|`, `^`, ...) included.
        let fine = HTTPRequestHead(version: .http1_1, method: .RAW(value: "PURGE"), uri: "/a%20b?c=[d]&e=~f&g{|}^`\"<>\\",
                                   headers: HTTPHeaders([("X-Tab", "a\tb"), ("X-Utf8", "caf\u{e9}")]))
        let (channel, recorder, _) = try self.connection()
        try channel.writeOutbound(HTTPClientRequestPart.head(fine))
        XCTAssertEqual(recorder.closes, 0)
        XCTAssertEqual(try self.written(channel),
                       "PURGE /a%20b?c=[d]&e=~f&g{|}^`\"<>\\ HTTP/1.1\r\nX-Tab: a\tb\r\nX-Utf8: caf\u{e9}\r\n\r\n")
        _ = try? channel.finish()
    }

    func testTrailersThatWouldSplitTheRequestAreRefused() throws {
        let (channel, recorder, _) = try self.connection()
        try channel.writeOutbound(HTTPClientRequestPart.head(HTTPRequestHead(version: .http1_1, method: .POST, uri: "/")))
        _ = try self.written(channel)
        let ended = channel.eventLoop.makePromise(of: Void.self)
        channel.writeAndFlush(HTTPClientRequestPart.end(HTTPHeaders([("T", "x\ny")])), promise: ended)
        XCTAssertThrowsError(try ended.futureResult.wait())
        XCTAssertEqual(recorder.closes, 1)
        XCTAssertEqual(try self.written(channel), "")
        _ = try? channel.finish()
    }
}
