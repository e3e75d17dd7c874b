@testable import ALBHTTP
import NIOCore
import NIOEmbedded
import NIOHTTP1
import XCTest

final class EdgePipelineTests: XCTestCase {
    func testKeepAliveRequestsAreAnswered() throws {
        let responder = TestResponder()
        let channel = try makeEdgeChannel(responder: responder)
        try channel.writeInbound(ByteBuffer(string: "GET / HTTP/1.1\r\nHost: h\r\n\r\n"))
        let text = try outboundText(channel)
        XCTAssertTrue(text.hasPrefix("HTTP/1.1 200 OK\r\n"), text)
        XCTAssertTrue(channel.isActive)
        XCTAssertEqual(responder.heads.count, 1)
        _ = try? channel.finish()
    }

    func testMalformedRequestGets400AndClose() throws {
        let responder = TestResponder()
        let channel = try makeEdgeChannel(responder: responder)
        XCTAssertNoThrow(
            try channel.writeInbound(
                ByteBuffer(string: "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n")
            )
        )
        let text = try outboundText(channel)
        XCTAssertTrue(text.hasPrefix("HTTP/1.1 400 Bad Request\r\n"), text)
        XCTAssertTrue(text.lowercased().contains("connection: close"), text)
        XCTAssertTrue(text.hasSuffix("\r\n\r\n400 Bad Request\n"), text)
        XCTAssertFalse(channel.isActive)
        XCTAssertEqual(responder.heads.count, 0)
    }

    func testAMalformedChunkAfterAnEarlyResponseGetsNoSecondResponse() throws {
        let responder = TestResponder()
        responder.autoRespond = false
        let channel = try makeEdgeChannel(responder: responder)
        try channel.writeInbound(
            ByteBuffer(string: "POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"))
        responder.respond(body: "too large")  // the backend answers before the body is complete (a 413)
        let first = try outboundText(channel)
        XCTAssertTrue(first.hasPrefix("HTTP/1.1 200 OK\r\n"), first)
        XCTAssertNoThrow(try channel.writeInbound(ByteBuffer(string: "zz\r\n")))  // not a chunk size
        let after = try outboundText(channel)
        XCTAssertEqual(after, "", "the request already has its final response")
        XCTAssertEqual(responder.errors.count, 1, "the exchange still learns that its request broke")
        XCTAssertFalse(channel.isActive)
    }

    func testTooManyHeaderBytesGet431() throws {
        let channel = try makeEdgeChannel(
            responder: TestResponder(),
            limits: .init(maxHeaderBytes: 64, maxHeaderCount: 100)
        )
        try channel.writeInbound(ByteBuffer(string: "GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + String(repeating: "b", count: 100)))
        let text = try outboundText(channel)
        XCTAssertTrue(text.hasPrefix("HTTP/1.1 431 Request Header Fields Too Large\r\n"), text)
        XCTAssertFalse(channel.isActive)
    }

    func testSlowHeadersGet408AfterHeaderTimeout() throws {
        let channel = try makeEdgeChannel(
            responder: TestResponder(),
            headerTimeout: .seconds(10),
            idleTimeout: .seconds(60)
        )
        try channel.writeInbound(ByteBuffer(string: "GET / HTTP/1.1\r\n"))
        channel.embeddedEventLoop.advanceTime(by: .seconds(9))
        XCTAssertTrue(channel.isActive)
        try channel.writeInbound(ByteBuffer(string: "Host: h\r\n"))
        channel.embeddedEventLoop.advanceTime(by: .seconds(1))
        let text = try outboundText(channel)
        XCTAssertTrue(text.hasPrefix("HTTP/1.1 408 Request Timeout\r\n"), text)
        XCTAssertFalse(channel.isActive)
    }

    func testHeaderTimeoutDoesNotApplyOnceTheHeadIsComplete() throws {
        let responder = TestResponder()
        responder.autoRespond = false
        let channel = try makeEdgeChannel(responder: responder, headerTimeout: .seconds(10), idleTimeout: .seconds(60))
        try channel.writeInbound(ByteBuffer(string: "GET / HTTP/1.1\r\nHost: h\r\n\r\n"))
        channel.embeddedEventLoop.advanceTime(by: .seconds(30))
        XCTAssertTrue(channel.isActive)
        XCTAssertEqual(try outboundText(channel), "")
        responder.respond()
        XCTAssertTrue(try outboundText(channel).hasPrefix("HTTP/1.1 200 OK"))
        _ = try? channel.finish()
    }

    func testIdleTimeoutClosesOnlyIdleConnections() throws {
        let responder = TestResponder()
        responder.autoRespond = false
        let channel = try makeEdgeChannel(responder: responder, headerTimeout: .seconds(100), idleTimeout: .seconds(5))
        channel.embeddedEventLoop.advanceTime(by: .seconds(4))
        try channel.writeInbound(ByteBuffer(string: "GET / HTTP/1.1\r\nHost: h\r\n\r\n"))
        channel.embeddedEventLoop.advanceTime(by: .seconds(20))
        XCTAssertTrue(channel.isActive, "a request in flight is not idle")
        responder.respond()
        channel.embeddedEventLoop.advanceTime(by: .seconds(4))
        XCTAssertTrue(channel.isActive)
        channel.embeddedEventLoop.advanceTime(by: .seconds(1))
        XCTAssertFalse(channel.isActive)
    }

    func testAHeadArrivingPastTheIdleDeadlineIsTimedByTheHeaderTimeoutAlone() throws {
        // One timer serves both timeouts: the idle one pending when a head starts must not close it.
        let channel = try makeEdgeChannel(responder: TestResponder(), headerTimeout: .seconds(10), idleTimeout: .seconds(5))
        channel.embeddedEventLoop.advanceTime(by: .seconds(3))
        try channel.writeInbound(ByteBuffer(string: "GET / HTTP/1.1\r\n"))
        channel.embeddedEventLoop.advanceTime(by: .seconds(9))
        XCTAssertTrue(channel.isActive, "past the idle deadline, inside the header timeout")
        XCTAssertEqual(try outboundText(channel), "")
        channel.embeddedEventLoop.advanceTime(by: .seconds(1))
        XCTAssertTrue(try outboundText(channel).hasPrefix("HTTP/1.1 408 Request Timeout\r\n"))
        XCTAssertFalse(channel.isActive)
    }

    func testAfterACompleteHeadAndItsResponseTheIdleTimeoutAppliesAgain() throws {
        let channel = try makeEdgeChannel(responder: TestResponder(), headerTimeout: .seconds(2), idleTimeout: .seconds(30))
        try channel.writeInbound(ByteBuffer(string: "GET / HTTP/1.1\r\nHost: h\r\n\r\n"))
        XCTAssertTrue(try outboundText(channel).hasPrefix("HTTP/1.1 200 OK"))
        channel.embeddedEventLoop.advanceTime(by: .seconds(29))
        XCTAssertTrue(channel.isActive, "the header timeout ended with the head")
        channel.embeddedEventLoop.advanceTime(by: .seconds(1))
        XCTAssertFalse(channel.isActive)
    }

    func testIdleTimeoutIsReadWhenTheConnectionGoesIdle() throws {
        var timeout = TimeAmount.seconds(5)
        let responder = TestResponder()
        let channel = EmbeddedChannel()
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        try channel.pipeline.syncOperations.configureEdgeHTTPPipeline(
            options: EdgePipelineOptions(limits: .init(), headerTimeout: .seconds(10), idleTimeout: { timeout }),
            application: responder
        )
        timeout = .seconds(50)
        try channel.writeInbound(ByteBuffer(string: "GET / HTTP/1.1\r\nHost: h\r\n\r\n"))
        channel.embeddedEventLoop.advanceTime(by: .seconds(49))
        XCTAssertTrue(channel.isActive)
        channel.embeddedEventLoop.advanceTime(by: .seconds(1))
        XCTAssertFalse(channel.isActive)
    }

    func testPipelinedRequestsAreServedInOrderOneAtATime() throws {
        let responder = TestResponder()
        responder.autoRespond = false
        let channel = try makeEdgeChannel(responder: responder)
        try channel.writeInbound(
            ByteBuffer(string: "GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\nGET /3 HTTP/1.1\r\nHost: h\r\n\r\n")
        )
        XCTAssertEqual(responder.heads.map(\.uri), ["/1"])
        responder.respond(body: "one")
        XCTAssertEqual(responder.heads.map(\.uri), ["/1", "/2"])
        responder.respond(body: "two")
        responder.respond(body: "three")
        XCTAssertEqual(responder.heads.map(\.uri), ["/1", "/2", "/3"])
        let text = try outboundText(channel)
        let one = text.range(of: "one")?.lowerBound
        let two = text.range(of: "two")?.lowerBound
        let three = text.range(of: "three")?.lowerBound
        XCTAssertNotNil(one)
        if let one, let two, let three {
            XCTAssertTrue(one < two && two < three)
        } else {
            XCTFail(text)
        }
        _ = try? channel.finish()
    }

    func testPipelinedBatchesAreServedInOrderAfterTheQueueWasDrained() throws {
        // The pipelining queue is dropped once drained; a later batch (longer than its initial
        // capacity) must queue and drain the same way.
        let responder = TestResponder()
        responder.autoRespond = false
        let channel = try makeEdgeChannel(responder: responder)
        for batch in 0..<2 {
            let uris = (1...6).map { "/\(batch)-\($0)" }
            try channel.writeInbound(ByteBuffer(string: uris.map { "GET \($0) HTTP/1.1\r\nHost: h\r\n\r\n" }.joined()))
            for (served, _) in uris.enumerated() {
                XCTAssertEqual(responder.heads.suffix(served + 1).map(\.uri), Array(uris.prefix(served + 1)))
                responder.respond(body: "b\(batch)")
            }
            XCTAssertEqual(responder.heads.count, (batch + 1) * uris.count)
        }
        XCTAssertTrue(channel.isActive)
        _ = try? channel.finish()
    }

    func testQuiesceClosesIdleConnectionAtOnceAndBusyOneAfterItsResponse() throws {
        let idle = try makeEdgeChannel(responder: TestResponder())
        try idle.writeInbound(ByteBuffer(string: "GET / HTTP/1.1\r\nHost: h\r\n\r\n"))
        XCTAssertTrue(try outboundText(idle).hasPrefix("HTTP/1.1 200 OK"))
        idle.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        XCTAssertFalse(idle.isActive, "a keep-alive connection between requests closes at once")

        let responder = TestResponder()
        responder.autoRespond = false
        let busy = try makeEdgeChannel(responder: responder)
        try busy.writeInbound(ByteBuffer(string: "GET / HTTP/1.1\r\nHost: h\r\n\r\n"))
        busy.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        XCTAssertTrue(busy.isActive)
        responder.respond()
        XCTAssertTrue(try outboundText(busy).hasPrefix("HTTP/1.1 200 OK"))
        XCTAssertFalse(busy.isActive)
    }

    /// Found as a reset in the e2e port-swap test: a client connected just before a drain, and the drain
    /// closed its connection before its request was read.
    func testQuiesceServesTheFirstRequestOfAFreshConnectionWithConnectionClose() throws {
        let responder = TestResponder()
        let fresh = try makeEdgeChannel(responder: responder)
        fresh.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        XCTAssertTrue(fresh.isActive, "the client is about to send the request it connected for")
        try fresh.writeInbound(ByteBuffer(string: "GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n"))
        fresh.embeddedEventLoop.run()
        let text = try outboundText(fresh)
        XCTAssertTrue(text.hasPrefix("HTTP/1.1 200 OK"), text)
        XCTAssertTrue(text.lowercased().contains("connection: close"), text)
        XCTAssertEqual(responder.heads.map(\.uri), ["/1"], "one request, not the one pipelined behind it")
        XCTAssertFalse(fresh.isActive)
    }

    /// Found by the HTTP/1 fuzz target (fuzz/corpus/http1/regression-quiesce-early-response-then-bad.http): a
    /// drained fresh connection's request was answered early, and the bad bytes pipelined behind it were
    /// still decoded and answered with a 400 after the response that said `Connection: close`.
    func testQuiesceWithAnEarlyResponseDecodesNothingBehindTheLastRequest() throws {
        let responder = TestResponder()
        responder.respondAtHead = true
        let channel = try makeEdgeChannel(responder: responder)
        channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        try channel.writeInbound(ByteBuffer(string: "GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\rQ\n"))
        try assertOnlyAClosingResponse(channel)
    }

    func testQuiesceServesAHeadThatIsArrivingWithConnectionClose() throws {
        let responder = TestResponder()
        let channel = try makeEdgeChannel(responder: responder)
        try channel.writeInbound(ByteBuffer(string: "GET /1 HTTP/1.1\r\nHost: h\r\n\r\n"))
        XCTAssertTrue(try outboundText(channel).hasPrefix("HTTP/1.1 200 OK"))
        try channel.writeInbound(ByteBuffer(string: "GET /2 HTTP/1.1\r\nHo"))
        channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        XCTAssertTrue(channel.isActive)
        try channel.writeInbound(ByteBuffer(string: "st: h\r\n\r\n"))
        channel.embeddedEventLoop.run()
        let text = try outboundText(channel)
        XCTAssertTrue(text.lowercased().contains("connection: close"), text)
        XCTAssertEqual(responder.heads.map(\.uri), ["/1", "/2"])
        XCTAssertFalse(channel.isActive)
    }

    func testQuiesceWaitsNoLongerThanTheHeaderTimeoutForAFreshConnectionsRequest() throws {
        let fresh = try makeEdgeChannel(responder: TestResponder(), headerTimeout: .seconds(3), idleTimeout: .seconds(60))
        fresh.embeddedEventLoop.advanceTime(by: .seconds(1))
        fresh.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        fresh.embeddedEventLoop.advanceTime(by: .milliseconds(2_900))
        XCTAssertTrue(fresh.isActive)
        fresh.embeddedEventLoop.advanceTime(by: .milliseconds(200))
        XCTAssertFalse(fresh.isActive, "closed the header timeout after the drain began, not the idle timeout")
        XCTAssertEqual(try outboundText(fresh), "", "a connection that sent nothing gets no response")
    }

    /// What was written is one `200` saying `Connection: close`, and nothing after it; the connection closed.
    private func assertOnlyAClosingResponse(_ channel: EmbeddedChannel, file: StaticString = #filePath,
                                            line: UInt = #line) throws {
        channel.embeddedEventLoop.run()
        let text = try outboundText(channel)
        XCTAssertTrue(text.hasPrefix("HTTP/1.1 200 OK"), text, file: file, line: line)
        XCTAssertTrue(text.lowercased().contains("connection: close"), text, file: file, line: line)
        XCTAssertTrue(text.hasSuffix("ok"), "nothing may follow the response that said Connection: close: \(text)",
                      file: file, line: line)
        XCTAssertFalse(channel.isActive, file: file, line: line)
    }

    func testBadPipelinedRequestAfterAGoodOneClosesAfterTheFirstResponse() throws {
        let responder = TestResponder()
        responder.autoRespond = false
        let channel = try makeEdgeChannel(responder: responder)
        try channel.writeInbound(ByteBuffer(string: "GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\nX: \u{1}\r\n\r\n"))
        XCTAssertEqual(responder.heads.map(\.uri), ["/1"])
        XCTAssertTrue(channel.isActive)
        responder.respond()
        let text = try outboundText(channel)
        XCTAssertTrue(text.hasPrefix("HTTP/1.1 200 OK"), text)
        XCTAssertTrue(text.contains("okHTTP/1.1 400 Bad Request"), text)
        XCTAssertFalse(channel.isActive)
        XCTAssertEqual(responder.heads.count, 1)
    }

    /// Found by the HTTP/1 fuzz target (fuzz/corpus/http1/regression-quiesce-then-bad-pipelined.http):
    /// a drain began while a response was pending and a malformed request was pipelined behind it. The
    /// pending response said `Connection: close`, and a 400 for the malformed request still followed it.
    func testQuiesceWithABadPipelinedRequestWritesNothingAfterTheClosingResponse() throws {
        let responder = TestResponder()
        responder.autoRespond = false
        let channel = try makeEdgeChannel(responder: responder)
        try channel.writeInbound(ByteBuffer(string: "POST /form HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi"))
        channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        try channel.writeInbound(ByteBuffer(string: "t HTTP/1.1\r\n"))
        responder.respond()
        try assertOnlyAClosingResponse(channel)
    }
}

/// The bytes the connection handler writes for the parts the proxy writes.
final class HTTP1WireTests: XCTestCase {
    private final class Writer: ChannelInboundHandler {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        var context: ChannelHandlerContext?
        func handlerAdded(context: ChannelHandlerContext) { self.context = context }
        func write(_ part: HTTPServerResponsePart) {
            self.context?.writeAndFlush(Self.wrapOutboundOut(part), promise: nil)
        }
    }

    private func exchange(_ request: String, _ parts: [HTTPServerResponsePart]) throws -> String {
        let writer = Writer()
        let channel = EmbeddedChannel()
        defer { _ = try? channel.finish() }
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        try channel.pipeline.syncOperations.configureEdgeHTTPPipeline(
            options: EdgePipelineOptions(limits: .init(), headerTimeout: .seconds(10), idleTimeout: { .seconds(15) }),
            application: writer)
        try channel.writeInbound(ByteBuffer(string: request))
        for part in parts { writer.write(part) }
        return try outboundText(channel)
    }

    func testAChunkedBodyIsFramedAroundTheProxysPartsWithTrailersAtTheEnd() throws {
        let head = HTTPResponseHead(version: .http1_1, status: .ok,
                                    headers: ["transfer-encoding": "chunked", "content-type": "text/plain"])
        let text = try self.exchange("GET / HTTP/1.1\r\nHost: h\r\n\r\n", [
            .head(head), .body(.byteBuffer(ByteBuffer(string: "hello"))), .body(.byteBuffer(ByteBuffer())),
            .body(.byteBuffer(ByteBuffer(string: String(repeating: "x", count: 26)))), .end(["grpc-status": "0"]),
        ])
        XCTAssertEqual(text, "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-type: text/plain\r\n\r\n"
                       + "5\r\nhello\r\n1a\r\n" + String(repeating: "x", count: 26) + "\r\n0\r\ngrpc-status: 0\r\n\r\n")
    }

    func testALengthFramedBodyAndAnHTTP10ResponseArePassedAsTheyAre() throws {
        let text = try self.exchange("GET / HTTP/1.0\r\n\r\n", [
            .head(HTTPResponseHead(version: .http1_0, status: .custom(code: 299, reasonPhrase: "Fine"),
                                   headers: ["content-length": "2", "transfer-encoding": "chunked"])),
            .body(.byteBuffer(ByteBuffer(string: "ok"))), .end(nil),
        ])
        // HTTP/1.0 has no chunked coding: the head is the proxy's to frame; the bytes go as they are.
        XCTAssertEqual(text, "HTTP/1.0 299 Fine\r\ncontent-length: 2\r\ntransfer-encoding: chunked\r\n\r\nok")
    }

    func testAnEmptyChunkedBodyEndsWithTheLastChunkOnly() throws {
        let text = try self.exchange("GET / HTTP/1.1\r\nHost: h\r\n\r\n", [
            .head(HTTPResponseHead(version: .http1_1, status: .notFound, headers: ["transfer-encoding": "chunked"])),
            .end(nil),
        ])
        XCTAssertEqual(text, "HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n")
    }
}

extension HTTP1WireTests {
    /// The field section is copied into memory reserved at its computed length: that length must be exact,
    /// whatever the fields (empty values, non-ASCII, many of them).
    func testTheFieldSectionIsExactlyItsComputedLength() {
        let sections = [
            HTTPHeaders(),
            HTTPHeaders((0..<40).map { ("x-field-\($0)", String(repeating: "v", count: $0)) }),
            ["server": "nginx/1.26", "x-caf\u{e9}": "cr\u{e8}me br\u{fb}l\u{e9}e", "empty": ""],
        ]
        for fields in sections {
            var buffer = ByteBuffer()
            buffer.writeHTTP1Fields(fields)
            XCTAssertEqual(buffer.readableBytes, fields.http1EncodedLength)
            let expected = fields.map { "\($0.name): \($0.value)\r\n" }.joined() + "\r\n"
            XCTAssertEqual(String(buffer: buffer), expected)
        }
        let request = HTTPRequestHead(version: .http1_0, method: .RAW(value: "PROPFIND"), uri: "/a?b",
                                      headers: ["Host": "h", "Depth": "1"])
        XCTAssertEqual(ByteBufferAllocator().http1RequestHead(request).map { String(buffer: $0) },
                       "PROPFIND /a?b HTTP/1.0\r\nHost: h\r\nDepth: 1\r\n\r\n")
        let response = HTTPResponseHead(version: HTTPVersion(major: 3, minor: 14), status: .custom(code: 1234, reasonPhrase: ""))
        XCTAssertEqual(String(buffer: ByteBufferAllocator().http1ResponseHead(response)), "HTTP/3.14 1234 \r\n\r\n")
    }
}
