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
