import ALBHTTP
import NIOCore
import NIOEmbedded
import NIOHPACK
import NIOHTTP1
import NIOHTTP2
import XCTest

@testable import ALBDataPlane

final class HTTP2ServerStreamCodecTests: XCTestCase {
    private func makeChannel() throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(HTTP2ServerStreamCodec())
        return channel
    }

    private func buffer(_ text: String) -> ByteBuffer {
        ByteBuffer(string: text)
    }

    private enum Sent: Equatable {
        case headers([String: String], endStream: Bool)
        case data(String, endStream: Bool)
    }

    private func sent(on channel: EmbeddedChannel) throws -> [Sent] {
        var frames: [Sent] = []
        while let payload = try channel.readOutbound(as: HTTP2Frame.FramePayload.self) {
            switch payload {
            case .headers(let headers):
                var fields: [String: String] = [:]
                for (name, value, _) in headers.headers { fields[name] = value }
                frames.append(.headers(fields, endStream: headers.endStream))
            case .data(let data):
                guard case .byteBuffer(let bytes) = data.data else { return frames }
                frames.append(.data(String(buffer: bytes), endStream: data.endStream))
            default:
                XCTFail("unexpected frame \(payload)")
            }
        }
        return frames
    }

    func testAResponseOfOneBodyPartEndsOnItsDataFrame() throws {
        let channel = try makeChannel()
        try channel.writeOutbound(HTTPServerResponsePart.head(HTTPResponseHead(version: .http2, status: .ok)))
        // As the proxy writes a response: the body unflushed, the end with a flush.
        channel.write(HTTPServerResponsePart.body(.byteBuffer(buffer("hello"))), promise: nil)
        try channel.writeOutbound(HTTPServerResponsePart.end(nil))
        XCTAssertEqual(try sent(on: channel), [
            .headers([":status": "200"], endStream: false),
            .data("hello", endStream: true),
        ])
    }

    func testOnlyTheLastOfSeveralBodyPartsCarriesTheEnd() throws {
        let channel = try makeChannel()
        try channel.writeOutbound(HTTPServerResponsePart.head(HTTPResponseHead(version: .http2, status: .ok)))
        channel.write(HTTPServerResponsePart.body(.byteBuffer(buffer("a"))), promise: nil)
        channel.write(HTTPServerResponsePart.body(.byteBuffer(buffer("b"))), promise: nil)
        channel.write(HTTPServerResponsePart.end(nil), promise: nil)
        channel.flush()
        XCTAssertEqual(try sent(on: channel), [
            .headers([":status": "200"], endStream: false),
            .data("a", endStream: false),
            .data("b", endStream: true),
        ])
    }

    func testAFlushSendsAHeldBodyPartAtOnce() throws {
        let channel = try makeChannel()
        try channel.writeOutbound(HTTPServerResponsePart.head(HTTPResponseHead(version: .http2, status: .ok)))
        channel.write(HTTPServerResponsePart.body(.byteBuffer(buffer("streamed"))), promise: nil)
        XCTAssertEqual(try sent(on: channel), [.headers([":status": "200"], endStream: false)],
                       "held until the next write or flush")
        channel.flush()
        XCTAssertEqual(try sent(on: channel), [.data("streamed", endStream: false)])
        try channel.writeOutbound(HTTPServerResponsePart.end(nil))
        XCTAssertEqual(try sent(on: channel), [.data("", endStream: true)])
    }

    func testTrailersFollowTheBodyInTheirOwnHeadersFrame() throws {
        let channel = try makeChannel()
        try channel.writeOutbound(HTTPServerResponsePart.head(HTTPResponseHead(version: .http2, status: .ok)))
        channel.write(HTTPServerResponsePart.body(.byteBuffer(buffer("message"))), promise: nil)
        try channel.writeOutbound(HTTPServerResponsePart.end(HTTPHeaders([("grpc-status", "0")])))
        XCTAssertEqual(try sent(on: channel), [
            .headers([":status": "200"], endStream: false),
            .data("message", endStream: false),
            .headers(["grpc-status": "0"], endStream: true),
        ])
    }

    func testAResponseWithoutABodyEndsWithAnEmptyDataFrame() throws {
        let channel = try makeChannel()
        var head = HTTPResponseHead(version: .http2, status: .noContent)
        head.headers.add(name: "Connection", value: "keep-alive")
        try channel.writeOutbound(HTTPServerResponsePart.head(head))
        try channel.writeOutbound(HTTPServerResponsePart.end(nil))
        XCTAssertEqual(try sent(on: channel), [
            .headers([":status": "204"], endStream: false),
            .data("", endStream: true),
        ], "connection-specific fields are dropped, as by nio-http2's codec")
    }

    func testTheWritesOfAHeldPartAndTheEndBothSucceed() throws {
        let channel = try makeChannel()
        try channel.writeOutbound(HTTPServerResponsePart.head(HTTPResponseHead(version: .http2, status: .ok)))
        let body = channel.eventLoop.makePromise(of: Void.self)
        let end = channel.eventLoop.makePromise(of: Void.self)
        channel.write(HTTPServerResponsePart.body(.byteBuffer(buffer("x"))), promise: body)
        channel.writeAndFlush(HTTPServerResponsePart.end(nil), promise: end)
        XCTAssertNoThrow(try body.futureResult.wait())
        XCTAssertNoThrow(try end.futureResult.wait())
        XCTAssertEqual(try sent(on: channel).last, .data("x", endStream: true))
    }

    func testClosingFailsAHeldPartAsAnUnflushedWrite() throws {
        let channel = try makeChannel()
        let body = channel.eventLoop.makePromise(of: Void.self)
        channel.write(HTTPServerResponsePart.body(.byteBuffer(buffer("x"))), promise: body)
        channel.close(promise: nil)
        XCTAssertThrowsError(try body.futureResult.wait())
    }

    func testARequestIsReadAsNioHTTP2sCodecReadsIt() throws {
        let channel = try makeChannel()
        let headers = HPACKHeaders([(":method", "GET"), (":scheme", "https"), (":authority", "example.com"),
                                    (":path", "/a?b"), ("user-agent", "test")])
        try channel.writeInbound(HTTP2Frame.FramePayload.headers(.init(headers: headers, endStream: true)))
        guard case .head(let head) = try channel.readInbound(as: HTTPServerRequestPart.self) else {
            return XCTFail("no head")
        }
        XCTAssertEqual(head.method, .GET)
        XCTAssertEqual(head.uri, "/a?b")
        XCTAssertEqual(head.version, .http2)
        XCTAssertEqual(head.headers["host"], ["example.com"])
        XCTAssertEqual(head.headers["user-agent"], ["test"])
        guard case .end(nil) = try channel.readInbound(as: HTTPServerRequestPart.self) else {
            return XCTFail("no end")
        }
    }

    func testARequestWithAnInvalidPathIsAnError() throws {
        let channel = try makeChannel()
        let headers = HPACKHeaders([(":method", "GET"), (":scheme", "https"), (":authority", "example.com"),
                                    (":path", "/a HTTP/1.1\r\nx: y")])
        XCTAssertThrowsError(
            try channel.writeInbound(HTTP2Frame.FramePayload.headers(.init(headers: headers, endStream: true))))
        XCTAssertNil(try channel.readInbound(as: HTTPServerRequestPart.self))
    }

    private func requestHead(_ fields: [(String, String)], endStream: Bool) throws -> HTTPRequestHead {
        try HTTP2Heads.requestHead(from: HPACKHeaders(fields), endStream: endStream)
    }

    private let pseudo = [(":method", "POST"), (":scheme", "https"), (":authority", "example.com"), (":path", "/up")]

    func testABodyOfUnannouncedLengthIsChunkedOnTheHTTP1Side() throws {
        let streaming = try requestHead(pseudo, endStream: false)
        XCTAssertEqual(streaming.headers["transfer-encoding"], ["chunked"])
        XCTAssertEqual(streaming.headers["host"], ["example.com"])
        let empty = try requestHead(pseudo, endStream: true)
        XCTAssertEqual(empty.headers["content-length"], ["0"])
        XCTAssertFalse(empty.headers.contains(name: "transfer-encoding"))
        let announced = try requestHead(pseudo + [("content-length", "5")], endStream: false)
        XCTAssertEqual(announced.headers["content-length"], ["5"])
        XCTAssertFalse(announced.headers.contains(name: "transfer-encoding"))
        let get = try requestHead([(":method", "GET")] + pseudo.dropFirst(), endStream: false)
        XCTAssertFalse(get.headers.contains(name: "transfer-encoding"), "GET announces no body")
    }

    func testCookieFieldsBecomeOneFieldWhereTheFirstStood() throws {
        let head = try requestHead(pseudo + [("accept", "*/*"), ("cookie", "a=1"), ("x-one", "1"), ("cookie", "b=2"),
                                             ("cookie", "c=3"), ("x-two", "2")], endStream: true)
        XCTAssertEqual(head.headers.map { "\($0.name): \($0.value)" },
                       ["host: example.com", "content-length: 0", "accept: */*", "cookie: a=1; b=2; c=3", "x-one: 1",
                        "x-two: 2"])
        let one = try requestHead(pseudo + [("cookie", "a=1"), ("x-one", "1")], endStream: true)
        XCTAssertEqual(one.headers["cookie"], ["a=1"])
        let none = try requestHead(pseudo, endStream: true)
        XCTAssertFalse(none.headers.contains(name: "cookie"))
    }

    func testAHostFieldIsKeptAndNotDoubled() throws {
        let head = try requestHead(pseudo + [("host", "other.example")], endStream: true)
        XCTAssertEqual(head.headers["host"], ["other.example"])
    }

    func testMissingRepeatedOrUnsafePseudoHeaderFieldsAreRefused() {
        for name in [":method", ":scheme", ":authority", ":path"] {
            XCTAssertThrowsError(try requestHead(pseudo.filter { $0.0 != name }, endStream: true), "without \(name)")
            XCTAssertThrowsError(try requestHead(pseudo + [(name, "x")], endStream: true), "two \(name)")
        }
        XCTAssertThrowsError(try requestHead([(":method", "GET\u{7F}")] + pseudo.dropFirst(), endStream: true))
        XCTAssertThrowsError(try requestHead(pseudo.dropLast() + [(":path", "/a b")], endStream: true))
    }

    func testRequestTrailersArriveAsTheEnd() throws {
        let channel = try makeChannel()
        try channel.writeInbound(HTTP2Frame.FramePayload.headers(.init(headers: HPACKHeaders(pseudo))))
        try channel.writeInbound(HTTP2Frame.FramePayload.data(.init(data: .byteBuffer(buffer("abc")))))
        try channel.writeInbound(HTTP2Frame.FramePayload.headers(
            .init(headers: HPACKHeaders([("grpc-timeout", "1S")]), endStream: true)))
        guard case .head = try channel.readInbound(as: HTTPServerRequestPart.self),
              case .body(let body) = try channel.readInbound(as: HTTPServerRequestPart.self),
              case .end(let trailers) = try channel.readInbound(as: HTTPServerRequestPart.self) else {
            return XCTFail("head, body and end expected")
        }
        XCTAssertEqual(String(buffer: body), "abc")
        XCTAssertEqual(trailers?["grpc-timeout"], ["1S"])
    }

    /// Takes request parts by direct call and answers through the codec directly, as the proxy does.
    private final class DirectApplication: ChannelInboundHandler, DirectExchangeApplication {
        typealias InboundIn = HTTPServerRequestPart
        var parts: [HTTPServerRequestPart] = []
        var pipelineParts = 0
        var transport: (any DirectExchangeTransport)?

        func channelRead(context: ChannelHandlerContext, data: NIOAny) { self.pipelineParts += 1 }
        func requestPartArrived(_ part: HTTPServerRequestPart) { self.parts.append(part) }
        func writesDirectly(to transport: (any DirectExchangeTransport)?) { self.transport = transport }
    }

    func testAnAttachedApplicationGetsTheRequestAndAnswersDirectly() throws {
        let channel = EmbeddedChannel()
        let codec = HTTP2ServerStreamCodec()
        let application = DirectApplication()
        try channel.pipeline.syncOperations.addHandler(codec)
        try channel.pipeline.syncOperations.addHandler(application)
        codec.attachDirectly(application)
        let request = HPACKHeaders([(":method", "POST"), (":scheme", "https"), (":authority", "a"), (":path", "/up")])
        try channel.writeInbound(HTTP2Frame.FramePayload.headers(.init(headers: request)))
        try channel.writeInbound(HTTP2Frame.FramePayload.data(.init(data: .byteBuffer(buffer("abc")), endStream: true)))
        XCTAssertEqual(application.parts.count, 3, "head, body, end")
        XCTAssertEqual(application.pipelineParts, 0)
        guard case .head(let head) = application.parts.first else { return XCTFail("a head first") }
        XCTAssertEqual(head.uri, "/up")
        let transport = try XCTUnwrap(application.transport)
        transport.write(.head(HTTPResponseHead(version: .http2, status: .ok)), promise: nil)
        transport.write(.body(.byteBuffer(buffer("done"))), promise: nil)
        transport.write(.end(nil), promise: nil)
        transport.flush()
        XCTAssertEqual(try sent(on: channel), [
            .headers([":status": "200"], endStream: false),
            .data("done", endStream: true),
        ])
        _ = channel.pipeline.syncOperations.removeHandler(codec)
        XCTAssertNil(application.transport, "the codec lets go when it leaves")
    }

    /// A backend's response head as its decoder hands it over for a relay: no fields, the lines without the
    /// hop-by-hop ones.
    private final class LinesOutput: HTTPResponseDecoderOutput {
        var head: (HTTPResponseHead, HTTP1FieldLines?)?
        func received(_ part: HTTPClientResponsePart) {
            if case .head(let head) = part { self.head = (head, nil) }
        }
        func received(head: HTTPResponseHead, summary: HTTP1HeadSummary, fieldLines: HTTP1FieldLines) {
            self.head = (head, fieldLines)
        }
    }

    private func relayedLines(_ response: String) throws -> (HTTPResponseHead, HTTP1FieldLines) {
        var decoder = StrictHTTPResponseDecoder(leavesOutHopByHop: true)
        decoder.expectResponse(to: HTTPRequestHead(version: .http1_1, method: .GET, uri: "/"), relayingFieldLines: true)
        var bytes = ByteBuffer(string: response)
        let output = LinesOutput()
        while try decoder.decode(&bytes, into: output) == .continue {}
        let (head, lines) = try XCTUnwrap(output.head)
        return (head, try XCTUnwrap(lines))
    }

    private func fieldsOfHeaders(on channel: EmbeddedChannel) throws -> [[String]] {
        var blocks: [[String]] = []
        while let payload = try channel.readOutbound(as: HTTP2Frame.FramePayload.self) {
            if case .headers(let headers) = payload {
                blocks.append(headers.headers.map { "\($0.name)=\($0.value)" + ($0.indexable == .indexable ? "" : " (not indexed)") })
            }
        }
        return blocks
    }

    /// A head relayed as its backend's lines becomes the same header block as the head with those fields: names in
    /// lowercase, values without the spaces around them, the proxy's own fields after the lines.
    func testAHeadRelayedAsLinesMakesTheBlockItsFieldsMake() throws {
        let response = "HTTP/1.1 404 Not Found\r\nServer: nginx\r\nConnection: keep-alive\r\nContent-Type:  text/html \r\n"
            + "X-A-Rather-Long-Field-Name: 1\r\nLast-Modified: Tue, 24 Nov 2026 10:00:00 GMT\r\nContent-Length: 0\r\n\r\n"
        let (backendHead, lines) = try self.relayedLines(response)
        var own = HTTPResponseHead(version: .http2, status: backendHead.status)
        own.headers.add(name: "set-cookie", value: "SERVERID=a")

        let asLines = EmbeddedChannel()
        let codec = HTTP2ServerStreamCodec(blockScratch: HTTP2BlockScratch(fieldTexts: FieldTextCache()))
        try asLines.pipeline.syncOperations.addHandler(codec)
        codec.write(head: own, fieldLines: lines, promise: nil)
        codec.flush()
        let asFields = try self.makeChannel()
        var head = own
        head.headers = lines.headers(followedBy: own.headers)
        try asFields.writeOutbound(HTTPServerResponsePart.head(head))

        let expected = [":status=404", "server=nginx", "content-type=text/html", "x-a-rather-long-field-name=1",
                        "last-modified=Tue, 24 Nov 2026 10:00:00 GMT", "content-length=0", "set-cookie=SERVERID=a"]
        XCTAssertEqual(try self.fieldsOfHeaders(on: asLines), [expected])
        XCTAssertEqual(try self.fieldsOfHeaders(on: asFields), [expected])
    }

    /// A gRPC "Trailers-Only" answer (a head with the status, then the end) goes out as the backend sent it: one
    /// HEADERS frame that ends the stream, without the `content-length: 0` of the HTTP/1 translation, so the client
    /// reads its other fields as trailing metadata; whether the head came as fields or as lines. An answer with
    /// trailers of its own keeps them, the head's status moved to them.
    func testAGRPCTrailersOnlyAnswerStaysOneBlockThatEndsTheStream() throws {
        let (backendHead, lines) = try self.relayedLines(
            "HTTP/1.1 200 OK\r\nContent-Type: application/grpc\r\nGrpc-Status: 5\r\ngrpc-message: not found\r\n"
            + "X-Why: because\r\nContent-Length: 0\r\n\r\n")
        for asLines in [true, false] {
            let channel = try self.makeChannel()
            let codec = try channel.pipeline.syncOperations.handler(type: HTTP2ServerStreamCodec.self)
            let own = HTTPResponseHead(version: .http2, status: backendHead.status)
            if asLines {
                codec.write(head: own, fieldLines: lines, promise: nil)
            } else {
                var head = own
                head.headers = lines.headers
                // Unflushed, as the proxy writes a head and flushes at the end of the backend's read.
                channel.write(HTTPServerResponsePart.head(head), promise: nil)
            }
            XCTAssertNil(try channel.readOutbound(as: HTTP2Frame.FramePayload.self), "held until the next part")
            try channel.writeOutbound(HTTPServerResponsePart.end(nil))
            guard case .headers(let only) = try channel.readOutbound(as: HTTP2Frame.FramePayload.self) else {
                return XCTFail("no HEADERS")
            }
            XCTAssertTrue(only.endStream)
            XCTAssertEqual(only.headers.map { "\($0.name)=\($0.value)" },
                           [":status=200", "content-type=application/grpc", "grpc-status=5", "grpc-message=not found",
                            "x-why=because"], asLines ? "lines" : "fields")
            XCTAssertNil(try channel.readOutbound(as: HTTP2Frame.FramePayload.self), "nothing after it")
        }
        // A body after such a head (no gRPC backend sends one) sends the head on, its status in the trailers.
        let bodied = try self.makeChannel()
        var statusHead = HTTPResponseHead(version: .http2, status: .ok)
        statusHead.headers.add(name: "grpc-status", value: "0")
        try bodied.writeOutbound(HTTPServerResponsePart.head(statusHead))
        try bodied.writeOutbound(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(string: "m"))))
        try bodied.writeOutbound(HTTPServerResponsePart.end(nil))
        XCTAssertEqual(try self.fieldsOfHeaders(on: bodied), [[":status=200"], ["grpc-status=0"]])
        // Held for one response only: the next one on the same codec ends as its own end says.
        let channel = try self.makeChannel()
        var head = HTTPResponseHead(version: .http2, status: .ok)
        head.headers.add(name: "grpc-status", value: "0")
        try channel.writeOutbound(HTTPServerResponsePart.head(head))
        try channel.writeOutbound(HTTPServerResponsePart.end(HTTPHeaders([("grpc-status", "1")])))
        try channel.writeOutbound(HTTPServerResponsePart.head(HTTPResponseHead(version: .http2, status: .ok)))
        try channel.writeOutbound(HTTPServerResponsePart.end(nil))
        XCTAssertEqual(try self.fieldsOfHeaders(on: channel), [[":status=200"], ["grpc-status=1"], [":status=200"]])
    }

    func testResponseFieldNamesAreLowercasedAndConnectionSpecificOnesDropped() {
        let block = HTTP2Heads.headerBlock(status: .notFound, fields: HTTPHeaders([
            ("Content-Type", "text/plain"), ("X-Long-Custom-Field-Name", "1"), ("Connection", "x-hop, Keep-Alive"),
            ("X-Hop", "dropped"), ("Upgrade", "h2c"), ("etag", "\"a\""),
        ]))
        XCTAssertEqual(block.map { $0.name }, [":status", "content-type", "x-long-custom-field-name", "etag"])
        XCTAssertEqual(block.first(name: ":status"), "404")
    }

    /// Blocks assembled one after another in one loop's scratch array each hold their own fields only, the one
    /// rebuilt without its connection-specific fields too.
    func testBlocksMadeInOneScratchArrayAreIndependent() {
        let scratch = HTTP2BlockScratch()
        let first = HTTP2Heads.headerBlock(status: .ok, fields: HTTPHeaders([("A", "1"), ("B", "2"), ("C", "3")]),
                                           scratch: scratch)
        let second = HTTP2Heads.headerBlock(status: .created, fields: HTTPHeaders([("Upgrade", "x"), ("D", "4")]),
                                            scratch: scratch)
        let trailers = HTTP2Heads.trailerBlock(fields: HTTPHeaders([("Grpc-Status", "0")]), scratch: scratch)
        XCTAssertEqual(first.map { "\($0.name)=\($0.value)" }, [":status=200", "a=1", "b=2", "c=3"])
        XCTAssertEqual(second.map { "\($0.name)=\($0.value)" }, [":status=201", "d=4"])
        XCTAssertEqual(trailers.map { "\($0.name)=\($0.value)" }, ["grpc-status=0"])
    }
}
