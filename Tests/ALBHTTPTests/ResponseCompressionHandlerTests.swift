import ALBHTTP
import NIOCore
import NIOEmbedded
import NIOHTTP1
import XCTest

/// The compressor between the HTTP codec and the proxy, driven with EmbeddedChannel: request heads in,
/// framed response parts out, as the proxy writes them.
final class ResponseCompressionHandlerTests: XCTestCase {
    private func makeChannel(enabled: @escaping () -> Bool = { true }) throws -> (EmbeddedChannel, ResponseCompressionHandler) {
        let handler = ResponseCompressionHandler(isEnabled: enabled)
        let channel = EmbeddedChannel(handler: handler)
        return (channel, handler)
    }

    private func sendRequest(_ channel: EmbeddedChannel, acceptEncoding: String?, method: HTTPMethod = .GET,
                             version: HTTPVersion = .http1_1) throws {
        var headers = HTTPHeaders([("host", "x")])
        if let acceptEncoding { headers.add(name: "accept-encoding", value: acceptEncoding) }
        try channel.writeInbound(HTTPServerRequestPart.head(HTTPRequestHead(version: version, method: method, uri: "/", headers: headers)))
        try channel.writeInbound(HTTPServerRequestPart.end(nil))
        while try channel.readInbound(as: HTTPServerRequestPart.self) != nil {}
    }

    /// Writes a response as the proxy would (head with `Content-Length`, body in `parts`, end) and returns
    /// the head and the body bytes that came out.
    private func respond(_ channel: EmbeddedChannel, body: [UInt8], contentType: String = "application/json",
                         declaredLength: Int? = nil, parts: Int = 5, extra: [(String, String)] = [])
        throws -> (HTTPResponseHead?, [UInt8], Int)
    {
        var headers = HTTPHeaders([("content-type", contentType), ("content-length", String(declaredLength ?? body.count))])
        for (name, value) in extra { headers.add(name: name, value: value) }
        try channel.writeOutbound(HTTPServerResponsePart.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers)))
        // Without promises, as the proxy writes bodies (`writeOutbound` would wait for each part's promise,
        // which completes only once the encoder emits the bytes it took).
        for piece in body.chunked(into: max(1, body.count / parts)) {
            channel.write(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(bytes: piece))), promise: nil)
        }
        let ended = channel.eventLoop.makePromise(of: Void.self)
        channel.writeAndFlush(HTTPServerResponsePart.end(nil), promise: ended)
        var succeeded = false
        ended.futureResult.assumeIsolated().whenSuccess { succeeded = true }
        var head: HTTPResponseHead?
        var out: [UInt8] = []
        var ends = 0
        while let part = try channel.readOutbound(as: HTTPServerResponsePart.self) {
            switch part {
            case .head(let h): head = h
            case .body(.byteBuffer(let buffer)): out += Array(buffer.readableBytesView)
            case .body(.fileRegion): XCTFail("no file regions")
            case .end: ends += 1
            }
        }
        XCTAssertTrue(succeeded, "the end's promise completes once written")
        return (head, out, ends)
    }

    func testBrotliOverHTTP11StreamsChunked() throws {
        let (channel, handler) = try self.makeChannel()
        defer { _ = try? channel.finish() }
        try self.sendRequest(channel, acceptEncoding: "gzip, deflate, br")
        let body = sampleBody(200_000)
        let (head, out, ends) = try self.respond(channel, body: body, extra: [("etag", "\"v1\"")])
        XCTAssertEqual(head?.headers["content-encoding"], ["br"])
        XCTAssertEqual(head?.headers["transfer-encoding"], ["chunked"])
        XCTAssertFalse(head?.headers.contains(name: "content-length") ?? true)
        XCTAssertEqual(head?.headers["vary"], ["Accept-Encoding"])
        XCTAssertEqual(head?.headers["etag"], ["W/\"v1\""])
        XCTAssertEqual(ends, 1)
        XCTAssertLessThan(out.count, body.count / 3)
        XCTAssertEqual(try Decompress.brotli(out), body)
        XCTAssertFalse(handler.isCompressing, "the encoder goes with the response's end")
        XCTAssertGreaterThan(handler.peakEncoderBytes, 0)
    }

    func testGzipOnlyForItsContentTypes() throws {
        let (channel, _) = try self.makeChannel()
        defer { _ = try? channel.finish() }
        let body = sampleBody(5_000)
        try self.sendRequest(channel, acceptEncoding: "gzip")
        let (json, jsonOut, _) = try self.respond(channel, body: body)
        XCTAssertEqual(json?.headers["content-encoding"], ["gzip"])
        XCTAssertEqual(try Decompress.gzip(jsonOut), body)
        try self.sendRequest(channel, acceptEncoding: "gzip")
        let (html, htmlOut, _) = try self.respond(channel, body: body, contentType: "text/html")
        XCTAssertNil(html?.headers.first(name: "content-encoding"))
        XCTAssertEqual(html?.headers["content-length"], ["5000"])
        XCTAssertEqual(html?.headers["vary"], ["Accept-Encoding"])
        XCTAssertEqual(htmlOut, body)
    }

    func testPipelinedRequestsAreAnsweredInOrder() throws {
        let (channel, _) = try self.makeChannel()
        defer { _ = try? channel.finish() }
        try self.sendRequest(channel, acceptEncoding: "br")
        try self.sendRequest(channel, acceptEncoding: nil)
        try self.sendRequest(channel, acceptEncoding: "gzip")
        let body = sampleBody(3_000)
        let (first, firstOut, _) = try self.respond(channel, body: body)
        let (second, secondOut, _) = try self.respond(channel, body: body)
        let (third, thirdOut, _) = try self.respond(channel, body: body)
        XCTAssertEqual(first?.headers["content-encoding"], ["br"])
        XCTAssertEqual(try Decompress.brotli(firstOut), body)
        XCTAssertNil(second?.headers.first(name: "content-encoding"))
        XCTAssertEqual(secondOut, body)
        XCTAssertEqual(third?.headers["content-encoding"], ["gzip"])
        XCTAssertEqual(try Decompress.gzip(thirdOut), body)
    }

    func testSmallHeadAndHTTP10ResponsesPassAsTheyAre() throws {
        let (channel, _) = try self.makeChannel()
        defer { _ = try? channel.finish() }
        try self.sendRequest(channel, acceptEncoding: "br")
        let (small, smallOut, _) = try self.respond(channel, body: sampleBody(1024))
        XCTAssertNil(small?.headers.first(name: "content-encoding"))
        XCTAssertNil(small?.headers.first(name: "vary"))
        XCTAssertEqual(smallOut, sampleBody(1024))
        try self.sendRequest(channel, acceptEncoding: "br", version: .http1_0)
        let (old, oldOut, _) = try self.respond(channel, body: sampleBody(4096))
        XCTAssertNil(old?.headers.first(name: "content-encoding"))
        XCTAssertEqual(oldOut, sampleBody(4096))
        try self.sendRequest(channel, acceptEncoding: "br")
        let (encoded, encodedOut, _) = try self.respond(channel, body: sampleBody(4096), extra: [("content-encoding", "gzip")])
        XCTAssertEqual(encoded?.headers["content-encoding"], ["gzip"])
        XCTAssertEqual(encodedOut, sampleBody(4096))
    }

    func testHTTP2StreamDropsContentLengthWithoutChunking() throws {
        let (channel, _) = try self.makeChannel()
        defer { _ = try? channel.finish() }
        try self.sendRequest(channel, acceptEncoding: "br", version: HTTPVersion(major: 2, minor: 0))
        let body = sampleBody(50_000)
        let (head, out, _) = try self.respond(channel, body: body)
        XCTAssertEqual(head?.headers["content-encoding"], ["br"])
        XCTAssertFalse(head?.headers.contains(name: "content-length") ?? true)
        XCTAssertFalse(head?.headers.contains(name: "transfer-encoding") ?? true)
        XCTAssertEqual(try Decompress.brotli(out), body)
    }

    func testContinueHeadDoesNotTakeTheRequestsTurn() throws {
        let (channel, _) = try self.makeChannel()
        defer { _ = try? channel.finish() }
        try self.sendRequest(channel, acceptEncoding: "br")
        try channel.writeOutbound(HTTPServerResponsePart.head(HTTPResponseHead(version: .http1_1, status: .continue)))
        guard case .head(let interim)? = try channel.readOutbound(as: HTTPServerResponsePart.self) else {
            return XCTFail("the 100 goes out")
        }
        XCTAssertEqual(interim.status, .continue)
        let (head, out, _) = try self.respond(channel, body: sampleBody(4096))
        XCTAssertEqual(head?.headers["content-encoding"], ["br"])
        XCTAssertEqual(try Decompress.brotli(out), sampleBody(4096))
    }

    func testSwitchedOffListenerStopsCompressingAtTheNextResponse() throws {
        var on = true
        let (channel, _) = try self.makeChannel(enabled: { on })
        defer { _ = try? channel.finish() }
        try self.sendRequest(channel, acceptEncoding: "br")
        XCTAssertEqual(try self.respond(channel, body: sampleBody(4096)).0?.headers["content-encoding"], ["br"])
        on = false
        try self.sendRequest(channel, acceptEncoding: "br")
        let (head, out, _) = try self.respond(channel, body: sampleBody(4096))
        XCTAssertNil(head?.headers.first(name: "content-encoding"))
        XCTAssertNil(head?.headers.first(name: "vary"))
        XCTAssertEqual(out, sampleBody(4096))
    }

    /// Body writes whose bytes the encoder keeps have their promises completed once output carrying them
    /// (here: the end) is written, never before and never lost.
    func testPromisesOfHeldBodyPartsCompleteWithTheEnd() throws {
        let (channel, _) = try self.makeChannel()
        defer { _ = try? channel.finish() }
        try self.sendRequest(channel, acceptEncoding: "br")
        let headers = HTTPHeaders([("content-type", "text/plain"), ("content-length", "3000")])
        try channel.writeOutbound(HTTPServerResponsePart.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers)))
        var completed = 0
        var promises: [EventLoopPromise<Void>] = []
        for piece in sampleBody(3000).chunked(into: 1000) {
            let promise = channel.eventLoop.makePromise(of: Void.self)
            promise.futureResult.assumeIsolated().whenSuccess { completed += 1 }
            promises.append(promise)
            channel.write(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(bytes: piece))), promise: promise)
        }
        channel.flush()
        XCTAssertEqual(completed, 0, "Brotli keeps 3,000 bytes of input until the end")
        let end = channel.eventLoop.makePromise(of: Void.self)
        end.futureResult.assumeIsolated().whenSuccess { completed += 1 }
        channel.writeAndFlush(HTTPServerResponsePart.end(nil), promise: end)
        XCTAssertEqual(completed, 4)
        var out: [UInt8] = []
        while let part = try channel.readOutbound(as: HTTPServerResponsePart.self) {
            if case .body(.byteBuffer(let buffer)) = part { out += Array(buffer.readableBytesView) }
        }
        XCTAssertEqual(try Decompress.brotli(out), sampleBody(3000))
    }

    /// A client that goes away mid-response: the encoder is freed at once, and a promise held for output
    /// not yet produced fails rather than dangling.
    func testClientAbortFreesTheEncoder() throws {
        let (channel, handler) = try self.makeChannel()
        try self.sendRequest(channel, acceptEncoding: "br")
        let headers = HTTPHeaders([("content-type", "text/plain"), ("content-length", "1000000")])
        try channel.writeOutbound(HTTPServerResponsePart.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers)))
        let held = channel.eventLoop.makePromise(of: Void.self)
        channel.write(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(bytes: sampleBody(100)))), promise: held)
        var failed = false
        held.futureResult.assumeIsolated().whenFailure { _ in failed = true }
        XCTAssertTrue(handler.isCompressing)
        channel.pipeline.fireChannelInactive()
        XCTAssertFalse(handler.isCompressing)
        XCTAssertTrue(failed)
        _ = try? channel.finish()
    }

    /// A backend that says 100,000 bytes and sends 3,000 (the proxy then ends or closes the response): what
    /// came is compressed and the stream ends cleanly; one that sends more than it said is compressed whole.
    func testLyingLengthsNeitherCrashNorHang() throws {
        let (channel, _) = try self.makeChannel()
        defer { _ = try? channel.finish() }
        try self.sendRequest(channel, acceptEncoding: "br")
        let (short, shortOut, _) = try self.respond(channel, body: sampleBody(3_000), declaredLength: 100_000)
        XCTAssertEqual(short?.headers["content-encoding"], ["br"])
        XCTAssertEqual(try Decompress.brotli(shortOut), sampleBody(3_000))
        try self.sendRequest(channel, acceptEncoding: "gzip")
        let (_, longOut, _) = try self.respond(channel, body: sampleBody(30_000), declaredLength: 2_000)
        XCTAssertEqual(try Decompress.gzip(longOut), sampleBody(30_000))
    }

    /// One listener on one loop compresses at most `limit` responses at once; the next goes out as it is,
    /// and a finished or aborted response gives its turn back.
    func testTheBudgetCapsConcurrentEncoders() throws {
        let budget = CompressionBudget(limit: 1)
        let first = EmbeddedChannel(handler: ResponseCompressionHandler(budget: budget))
        let second = EmbeddedChannel(handler: ResponseCompressionHandler(budget: budget))
        defer {
            _ = try? first.finish()
            _ = try? second.finish()
        }
        try self.sendRequest(first, acceptEncoding: "br")
        let headers = HTTPHeaders([("content-type", "text/plain"), ("content-length", "100000")])
        try first.writeOutbound(HTTPServerResponsePart.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers)))
        XCTAssertEqual(budget.inUse, 1)
        try self.sendRequest(second, acceptEncoding: "br")
        let (plain, plainOut, _) = try self.respond(second, body: sampleBody(4096))
        XCTAssertNil(plain?.headers.first(name: "content-encoding"), "the budget is spent")
        XCTAssertEqual(plain?.headers["vary"], ["Accept-Encoding"])
        XCTAssertEqual(plainOut, sampleBody(4096))
        first.pipeline.fireChannelInactive()  // the client of the first goes away
        XCTAssertEqual(budget.inUse, 0)
        try self.sendRequest(second, acceptEncoding: "br")
        let (compressed, out, _) = try self.respond(second, body: sampleBody(4096))
        XCTAssertEqual(compressed?.headers["content-encoding"], ["br"])
        XCTAssertEqual(try Decompress.brotli(out), sampleBody(4096))
        XCTAssertEqual(budget.inUse, 0)
    }

    func testEdgePipelineAddsTheHandlerOnlyWhenAsked() throws {
        for compression in [false, true] {
            let channel = EmbeddedChannel()
            defer { _ = try? channel.finish() }
            try channel.pipeline.syncOperations.configureEdgeHTTPPipeline(
                options: EdgePipelineOptions(limits: .init(), headerTimeout: .seconds(10), idleTimeout: { .seconds(15) },
                                             compression: compression ? ResponseCompressionOptions { true } : nil),
                application: TestResponder())
            let present = (try? channel.pipeline.syncOperations.handler(type: ResponseCompressionHandler.self)) != nil
            XCTAssertEqual(present, compression)
        }
    }
}
