@testable import ALBHTTP
import NIOCore
import NIOEmbedded
import NIOHTTP1
import XCTest

/// The connection handler and the application after it calling each other directly (``DirectExchangeApplication``),
/// and the pipeline taking over whenever a handler sits between them.
final class DirectApplicationTests: XCTestCase {
    func testNeighboursCallEachOtherDirectlyBothWays() throws {
        let responder = TestResponder()
        let channel = try makeEdgeChannel(responder: responder)
        XCTAssertNotNil(responder.connection)
        try channel.writeInbound(ByteBuffer(string: "GET / HTTP/1.1\r\nHost: h\r\n\r\n"))
        XCTAssertEqual(try outboundText(channel), "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        XCTAssertEqual(responder.directParts, 2, "the head and the end")
        XCTAssertEqual(responder.pipelineParts, 0)
        _ = try? channel.finish()
    }

    /// The same exchanges, direct and through the pipeline, give the client the same bytes: pipelined requests
    /// in order, an early response followed by a broken body, a drain.
    func testDirectCallsAndThePipelineGiveTheSameBytes() throws {
        func run(direct: Bool) throws -> (text: String, active: Bool, uris: [String]) {
            let responder = TestResponder()
            responder.autoRespond = false
            let channel = try makeEdgeChannel(responder: responder, direct: direct)
            try channel.writeInbound(ByteBuffer(string: "GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n"))
            responder.respond(body: "one")
            try channel.writeInbound(ByteBuffer(string: "POST /3 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"))
            responder.respond(body: "two")
            responder.respond(body: "early")
            channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
            try channel.writeInbound(ByteBuffer(string: "zz\r\n"))
            channel.embeddedEventLoop.run()
            XCTAssertEqual(direct ? responder.pipelineParts : responder.directParts, 0)
            XCTAssertGreaterThan(direct ? responder.directParts : responder.pipelineParts, 0)
            return (try outboundText(channel), channel.isActive, responder.heads.map(\.uri))
        }
        let direct = try run(direct: true)
        let pipeline = try run(direct: false)
        XCTAssertEqual(direct.text, pipeline.text)
        XCTAssertEqual(direct.uris, ["/1", "/2", "/3"])
        XCTAssertEqual(direct.uris, pipeline.uris)
        XCTAssertEqual(direct.text.components(separatedBy: "HTTP/1.1 200 OK").count, 4, direct.text)
        XCTAssertFalse(direct.active)
        XCTAssertFalse(pipeline.active)
    }

    /// An application that takes request fields as lines gets the same heads: as lines when they go to it at once,
    /// as fields when a head has to wait behind the response before it (pipelining), or goes through the pipeline.
    func testHeadsWithTheirFieldsAsLinesAreTheSameHeads() throws {
        func run(lines: Bool, direct: Bool = true) throws -> (heads: [HTTPRequestHead], withLines: Int, text: String) {
            let responder = TestResponder()
            responder.takesRequestFieldLines = lines
            responder.autoRespond = false
            let channel = try makeEdgeChannel(responder: responder, direct: direct)
            try channel.writeInbound(ByteBuffer(string: "GET /1 HTTP/1.1\r\nHost: h\r\nX-A:  a \r\n\r\n"
                                                + "GET /2 HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\n\r\n"))
            responder.respond(body: "one")
            responder.respond(body: "two")
            try channel.writeInbound(ByteBuffer(string: "POST /3 HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi"))
            responder.respond(body: "three")
            let text = try outboundText(channel)
            _ = try? channel.finish()
            return (responder.heads, responder.headsWithLines, text)
        }
        let withLines = try run(lines: true)
        let withFields = try run(lines: false)
        XCTAssertEqual(withLines.heads, withFields.heads)
        XCTAssertEqual(withLines.heads.map(\.uri), ["/1", "/2", "/3"])
        XCTAssertEqual(withLines.heads.first?.headers.first(name: "x-a"), "a")
        XCTAssertEqual(withLines.text, withFields.text)
        XCTAssertEqual(withLines.withLines, 2, "the pipelined head waited as fields")
        XCTAssertEqual(withFields.withLines, 0)
        XCTAssertEqual(try run(lines: true, direct: false).withLines, 0, "through the pipeline the fields are read")
    }

    func testAHandlerAddedAfterTheConnectionSeesEveryPart() throws {
        let responder = TestResponder()
        let channel = try makeEdgeChannel(responder: responder)
        let observer = PartObserver()
        try channel.pipeline.syncOperations.handler(type: HTTP1ConnectionHandler.self).addHandlerAfter(observer)
        XCTAssertNil(responder.connection, "the responder writes through the pipeline again")
        try channel.writeInbound(ByteBuffer(string: "GET / HTTP/1.1\r\nHost: h\r\n\r\n"))
        XCTAssertEqual(try outboundText(channel), "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        XCTAssertEqual(observer.requestParts, 2)
        XCTAssertEqual(observer.responseParts, 3)
        XCTAssertEqual(responder.directParts, 0)
        _ = try? channel.finish()
    }

    func testACompressorBetweenThemKeepsThePipeline() throws {
        let responder = TestResponder()
        let channel = EmbeddedChannel()
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        try channel.pipeline.syncOperations.configureEdgeHTTPPipeline(
            options: EdgePipelineOptions(limits: .init(), headerTimeout: .seconds(10), idleTimeout: { .seconds(10) },
                                         compression: ResponseCompressionOptions(isEnabled: { true })),
            application: responder)
        XCTAssertNil(responder.connection)
        try channel.writeInbound(ByteBuffer(string: "GET / HTTP/1.1\r\nHost: h\r\n\r\n"))
        XCTAssertTrue(try outboundText(channel).hasPrefix("HTTP/1.1 200 OK\r\n"))
        XCTAssertEqual(responder.pipelineParts, 2)
        _ = try? channel.finish()
    }

    /// The two hold each other while attached: the connection handler lets go when it leaves the pipeline,
    /// whatever the application does.
    func testNeitherHandlerOutlivesTheChannel() throws {
        final class Application: ChannelInboundHandler, DirectExchangeApplication {
            typealias InboundIn = HTTPServerRequestPart
            var connection: (any DirectExchangeTransport)?
            func requestPartArrived(_ part: HTTPServerRequestPart) {}
            func writesDirectly(to connection: (any DirectExchangeTransport)?) { self.connection = connection }
        }
        weak var application: Application?
        weak var connection: HTTP1ConnectionHandler?
        try {
            let channel = EmbeddedChannel()
            let strongApplication = Application()
            try channel.pipeline.syncOperations.configureEdgeHTTPPipeline(
                options: EdgePipelineOptions(limits: .init(), headerTimeout: .seconds(10), idleTimeout: { .seconds(10) }),
                application: strongApplication)
            XCTAssertNotNil(strongApplication.connection)
            application = strongApplication
            connection = strongApplication.connection as? HTTP1ConnectionHandler
            _ = try channel.finish()
        }()
        XCTAssertNil(application)
        XCTAssertNil(connection)
    }
}

/// Counts the request parts and response parts that pass it.
private final class PartObserver: ChannelDuplexHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    var requestParts = 0
    var responseParts = 0

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        _ = self.unwrapInboundIn(data)
        self.requestParts += 1
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        _ = self.unwrapOutboundIn(data)
        self.responseParts += 1
        context.write(data, promise: promise)
    }
}
