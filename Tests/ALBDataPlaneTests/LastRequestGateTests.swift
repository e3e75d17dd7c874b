import ALBHTTP
import NIOCore
import NIOEmbedded
import NIOHTTP1
import XCTest

@testable import ALBDataPlane

/// The gate a takeover puts on the old process's HTTP/1 connections, on an embedded channel that holds the
/// connection handler and a responder the test drives (the proxy's place: called by the connection handler
/// directly until the gate goes between them).
final class LastRequestGateTests: XCTestCase {
    /// Records request heads and answers only when told to.
    private final class Responder: ChannelInboundHandler, DirectExchangeApplication {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        var uris: [String] = []
        private var context: ChannelHandlerContext?
        private var connection: (any DirectExchangeTransport)?

        func handlerAdded(context: ChannelHandlerContext) { self.context = context }

        func writesDirectly(to connection: (any DirectExchangeTransport)?) { self.connection = connection }

        func requestPartArrived(_ part: HTTPServerRequestPart) {
            if case .head(let head) = part { self.uris.append(head.uri) }
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            self.requestPartArrived(self.unwrapInboundIn(data))
        }

        func writeHead() {
            self.writeAndFlush(.head(HTTPResponseHead(version: .http1_1, status: .ok)))
        }

        func writeEnd() {
            self.writeAndFlush(.end(nil))
        }

        private func writeAndFlush(_ part: HTTPServerResponsePart) {
            if let connection {
                connection.write(part, promise: nil)
                connection.flush()
            } else {
                self.context?.writeAndFlush(Self.wrapOutboundOut(part), promise: nil)
            }
        }
    }

    private func connection() throws -> (EmbeddedChannel, Responder) {
        let responder = Responder()
        let channel = EmbeddedChannel()
        let connection = HTTP1ConnectionHandler(headerTimeout: .seconds(60), idleTimeout: { .seconds(60) })
        try channel.pipeline.syncOperations.addHandler(connection)
        try channel.pipeline.syncOperations.addHandler(responder)
        connection.attachDirectly(responder)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        return (channel, responder)
    }

    private func request(_ channel: EmbeddedChannel, _ uri: String) throws {
        try channel.writeInbound(ByteBuffer(string: "GET \(uri) HTTP/1.1\r\nHost: h\r\n\r\n"))
    }

    /// The `connection` header values of the next response head written (the bytes the connection handler
    /// wrote, up to the end of a head).
    private func responseConnectionHeader(_ channel: EmbeddedChannel) throws -> [String]? {
        while let data = try channel.readOutbound(as: IOData.self) {
            guard case .byteBuffer(let buffer) = data else { continue }
            let text = String(buffer: buffer)
            guard text.hasPrefix("HTTP/1.1 "), text.hasSuffix("\r\n\r\n") else { continue }
            return text.split(separator: "\r\n").dropFirst().compactMap { line -> String? in
                let field = line.split(separator: ":", maxSplits: 1)
                guard field.count == 2, field[0].lowercased() == "connection" else { return nil }
                return String(field[1].drop(while: { $0 == " " }))
            }
        }
        return nil
    }

    private func install(_ channel: EmbeddedChannel, window: TimeAmount = .seconds(2)) {
        LastRequestGate.install(on: channel, window: window)
        channel.embeddedEventLoop.run()
    }

    func testAnIdleConnectionGetsOneMoreRequestAnsweredWithClose() throws {
        let (channel, responder) = try connection()
        try request(channel, "/first")
        responder.writeHead()
        responder.writeEnd()
        XCTAssertEqual(try responseConnectionHeader(channel), [])
        install(channel)
        channel.embeddedEventLoop.advanceTime(by: .seconds(1))
        XCTAssertTrue(channel.isActive, "an idle connection is not closed at once")
        try request(channel, "/last")
        XCTAssertEqual(responder.uris, ["/first", "/last"])
        responder.writeHead()
        XCTAssertTrue(channel.isActive)
        responder.writeEnd()
        XCTAssertEqual(try responseConnectionHeader(channel), ["close"])
        XCTAssertFalse(channel.isActive, "closed right after the response that said so")
    }

    /// (A connection that has sent no request at all is then given the header timeout for its first one:
    /// `EdgePipelineTests`.)
    func testAnIdleConnectionThatSendsNothingIsClosedAfterTheWindow() throws {
        let (channel, responder) = try connection()
        try request(channel, "/first")
        responder.writeHead()
        responder.writeEnd()
        install(channel, window: .seconds(2))
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(1999))
        XCTAssertTrue(channel.isActive)
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(1))
        XCTAssertFalse(channel.isActive)
    }

    func testARequestInFlightIsAnsweredWithClose() throws {
        let (channel, responder) = try connection()
        try request(channel, "/slow")
        install(channel)
        responder.writeHead()
        responder.writeEnd()
        XCTAssertEqual(try responseConnectionHeader(channel), ["close"])
        XCTAssertFalse(channel.isActive)
    }

    func testAResponseAlreadyStartedFinishesAsItIsAndTheNextRequestIsTheLast() throws {
        let (channel, responder) = try connection()
        try request(channel, "/streaming")
        responder.writeHead()
        XCTAssertEqual(try responseConnectionHeader(channel), [])
        install(channel)
        responder.writeEnd()
        // It did not say close, so closing now would race the client's next request.
        XCTAssertTrue(channel.isActive)
        try request(channel, "/next")
        responder.writeHead()
        responder.writeEnd()
        XCTAssertEqual(try responseConnectionHeader(channel), ["close"])
        XCTAssertFalse(channel.isActive)
    }

    func testAConnectionWithoutAnHTTPPipelineYetIsQuiescedWhenTheWindowEnds() throws {
        // A TLS handshake in progress: no HTTP/1 connection handler yet. The gate looks again until the window ends.
        let channel = EmbeddedChannel()
        let seen = QuiesceRecorder()
        try channel.pipeline.syncOperations.addHandler(seen)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        install(channel, window: .milliseconds(100))
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(60))
        XCTAssertEqual(seen.count, 0)
        channel.embeddedEventLoop.advanceTime(by: .seconds(1))
        XCTAssertEqual(seen.count, 1)
    }

    private final class QuiesceRecorder: ChannelInboundHandler {
        typealias InboundIn = Never
        var count = 0
        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            if event is ChannelShouldQuiesceEvent { self.count += 1 }
        }
    }
}
