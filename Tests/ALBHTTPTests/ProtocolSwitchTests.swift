import ALBHTTP
import NIOCore
import NIOEmbedded
import NIOHTTP1
import XCTest

/// Where HTTP/1 ends on a connection: the WebSocket handshake rules, the decoder's hand-off (WebSocket
/// upgrade, h2c preface), and the byte tunnel that follows a `101`.
final class ProtocolSwitchTests: XCTestCase {
    private static let upgrade =
        "GET /chat HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n"
        + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"

    // MARK: - The handshake rules

    func testWhichRequestsAskForWebSocket() {
        func head(_ fields: [(String, String)], version: HTTPVersion = .http1_1) -> HTTPRequestHead {
            HTTPRequestHead(version: version, method: .GET, uri: "/", headers: HTTPHeaders(fields))
        }
        XCTAssertTrue(WebSocketHandshake.isRequested(head([("Upgrade", "WebSocket"), ("Connection", "upgrade")])))
        XCTAssertTrue(WebSocketHandshake.isRequested(head([("Upgrade", "foo, websocket"), ("Connection", "a, Upgrade")])))
        // `Connection` must name the upgrade; HTTP/1.0 has no upgrades; other protocols are not tunnelled.
        XCTAssertFalse(WebSocketHandshake.isRequested(head([("Upgrade", "websocket")])))
        XCTAssertFalse(WebSocketHandshake.isRequested(head([("Upgrade", "websocket"), ("Connection", "upgrade")], version: .http1_0)))
        XCTAssertFalse(WebSocketHandshake.isRequested(head([("Upgrade", "h2c"), ("Connection", "Upgrade, HTTP2-Settings")])))
        XCTAssertFalse(WebSocketHandshake.isRequested(head([("Host", "h")])))
    }

    func testMalformedHandshakesAreRefusedWithAReason() {
        let good: [(String, String)] = [("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), ("Sec-WebSocket-Version", "13")]
        func refusal(_ fields: [(String, String)], method: HTTPMethod = .GET) -> String? {
            WebSocketHandshake.refusal(HTTPRequestHead(version: .http1_1, method: method, uri: "/", headers: HTTPHeaders(fields)))
        }
        XCTAssertNil(refusal(good))
        XCTAssertNil(refusal(good + [("Content-Length", "0")]))
        XCTAssertNotNil(refusal(good, method: .POST))
        XCTAssertNotNil(refusal(good + [("Content-Length", "4")]))
        XCTAssertNotNil(refusal(good + [("Transfer-Encoding", "chunked")]))
        XCTAssertNotNil(refusal([("Sec-WebSocket-Version", "13")]))
        XCTAssertNotNil(refusal([("Sec-WebSocket-Key", "c2hvcnQ="), ("Sec-WebSocket-Version", "13")]))
        XCTAssertNotNil(refusal([("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                                 ("Sec-WebSocket-Version", "13")]))
        XCTAssertNotNil(refusal([("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), ("Sec-WebSocket-Version", "8")]))
        XCTAssertNotNil(refusal([("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")]))
    }

    func testOnlyA101NamingWebSocketSwitchesAndTheClientGetsTheHopByHopFieldsItNeeds() {
        let accept = HTTPResponseHead(version: .http1_1, status: .switchingProtocols, headers: HTTPHeaders([
            ("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            ("Keep-Alive", "timeout=5"),
        ]))
        XCTAssertTrue(WebSocketHandshake.isAccepted(accept))
        XCTAssertFalse(WebSocketHandshake.isAccepted(HTTPResponseHead(version: .http1_1, status: .switchingProtocols)))
        XCTAssertFalse(WebSocketHandshake.isAccepted(HTTPResponseHead(version: .http1_1, status: .ok,
                                                                      headers: HTTPHeaders([("Upgrade", "websocket")]))))
        let relayed = WebSocketHandshake.switchingProtocolsHead(from: accept)
        XCTAssertEqual(relayed.status, .switchingProtocols)
        XCTAssertEqual(relayed.headers["sec-websocket-accept"], ["s3pPLMBiTxaQ9kYGzzhZRbK+xOo="])
        XCTAssertEqual(relayed.headers["connection"], ["upgrade"])
        XCTAssertEqual(relayed.headers["upgrade"], ["websocket"])
        XCTAssertEqual(relayed.headers["keep-alive"], [])
        XCTAssertEqual(relayed.headers["content-length"], [])
    }

    // MARK: - The decoder's hand-off

    func testAfterAWebSocketUpgradeNothingIsParsedAndTheBytesGoToTheReplacement() throws {
        let responder = TestResponder()
        responder.autoRespond = false
        let channel = try makeEdgeChannel(responder: responder)
        // The upgrade, then what would parse as a request, then frame bytes: none of it is HTTP any more.
        try channel.writeInbound(ByteBuffer(string: Self.upgrade + "GET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n\u{81}\u{01}x"))
        XCTAssertEqual(responder.heads.map(\.uri), ["/chat"])
        XCTAssertEqual(responder.ends, 1)
        try channel.writeInbound(ByteBuffer(string: "more"))
        XCTAssertEqual(responder.heads.count, 1)
        XCTAssertNil(try channel.readInbound(as: ByteBuffer.self))

        // As the proxy after the backend's 101: the HTTP/1 handlers leave (the connection handler on the next
        // loop turn); what the replacement writes meanwhile passes through untouched.
        try channel.pipeline.syncOperations.leaveEdgeHTTPPipeline(application: responder) {}
        try channel.writeOutbound(ByteBuffer(string: "\u{81}\u{02}hi"))
        XCTAssertEqual(try channel.readOutbound(as: ByteBuffer.self), ByteBuffer(string: "\u{81}\u{02}hi"))
        channel.embeddedEventLoop.run()
        XCTAssertEqual(try channel.readInbound(as: ByteBuffer.self),
                       ByteBuffer(string: "GET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n\u{81}\u{01}xmore"))
        XCTAssertThrowsError(try channel.pipeline.syncOperations.handler(type: HTTP1ConnectionHandler.self))
        XCTAssertNoThrow(try channel.finish())
    }

    func testAMalformedUpgradeIsABadRequest() {
        let noKey = Self.upgrade.replacingOccurrences(of: "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", with: "")
        XCTAssertEqual(decodeError(noKey)?.status, .badRequest)
        XCTAssertEqual(decodeError(Self.upgrade.replacingOccurrences(of: "Version: 13", with: "Version: 12"))?.status,
                       .badRequest)
    }

    func testTheHTTP2PrefaceIsHandedOffOnlyWhenAcceptedAndOnlyFirst() throws {
        let preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\u{0}\u{0}\u{0}\u{4}\u{0}\u{0}\u{0}\u{0}\u{0}"
        let events = EventRecorder()
        let channel = EmbeddedChannel()
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        try channel.pipeline.syncOperations.configureEdgeHTTPPipeline(
            options: EdgePipelineOptions(limits: .init(), headerTimeout: .seconds(10), idleTimeout: { .seconds(15) },
                                         acceptsHTTP2Preface: true),
            application: events)
        // Byte by byte: the decision waits for the whole line.
        for byte in preface.utf8 {
            try channel.writeInbound(ByteBuffer(bytes: [byte]))
        }
        XCTAssertEqual(events.prefaces, 1)
        XCTAssertNil(try channel.readInbound(as: HTTPServerRequestPart.self))
        let http2 = EventRecorder()
        try channel.pipeline.syncOperations.leaveEdgeHTTPPipeline(application: events) {
            try channel.pipeline.syncOperations.addHandler(http2)
        }
        channel.embeddedEventLoop.run()
        XCTAssertEqual(try channel.readInbound(as: ByteBuffer.self), ByteBuffer(string: preface))
        XCTAssertEqual(http2.readCompletes, 1, "the hand-off ends with a read-complete")
        XCTAssertEqual(try outboundText(channel), "", "no response to the preface")
        XCTAssertNoThrow(try channel.finish())

        // Not accepted (TLS listeners negotiate HTTP/2 by ALPN), or not first: a malformed request line.
        XCTAssertEqual(decodeError(preface)?.status, .badRequest)
        var late = StrictHTTPRequestDecoder(acceptsHTTP2Preface: true)
        XCTAssertThrowsError(try decodeAll("GET / HTTP/1.1\r\nHost: h\r\n\r\n" + preface, decoder: &late))
    }

    // MARK: - The tunnel

    /// A client and a backend channel on one loop, joined by a tunnel, as after a `101`.
    private struct Joined {
        let loop = EmbeddedEventLoop()
        let client: EmbeddedChannel
        let backend: EmbeddedChannel
        let tunnel: ByteTunnel
        let reports: Reports

        final class Reports {
            var totals: [ByteTunnel.Totals] = []
        }

        init(idle: TimeAmount = .seconds(15)) throws {
            let reports = Reports()
            self.reports = reports
            self.tunnel = ByteTunnel(idleTimeout: { idle }, onClose: { reports.totals.append($0) })
            self.client = EmbeddedChannel(loop: self.loop)
            self.backend = EmbeddedChannel(loop: self.loop)
            try self.client.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
            try self.backend.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 2)).wait()
            try self.client.pipeline.syncOperations.addHandler(self.tunnel.client)
            try self.backend.pipeline.syncOperations.addHandler(self.tunnel.backend)
        }
    }

    func testBytesPassBothWaysAndAreFlushedAtTheEndOfARead() throws {
        let joined = try Joined()
        joined.client.pipeline.fireChannelRead(ByteBuffer(string: "to backend"))
        XCTAssertNil(try joined.backend.readOutbound(as: ByteBuffer.self), "held until the read completes")
        joined.client.pipeline.fireChannelReadComplete()
        XCTAssertEqual(try joined.backend.readOutbound(as: ByteBuffer.self), ByteBuffer(string: "to backend"))
        try joined.backend.writeInbound(ByteBuffer(string: "to client"))
        joined.backend.pipeline.fireChannelReadComplete()
        XCTAssertEqual(try joined.client.readOutbound(as: ByteBuffer.self), ByteBuffer(string: "to client"))
        XCTAssertEqual(joined.reports.totals, [])
    }

    func testASideStopsReadingWhileItsPeerCannotWrite() throws {
        let joined = try Joined()
        let reads = ReadCounter()
        try joined.client.pipeline.syncOperations.addHandler(reads, position: .first)
        joined.backend.isWritable = false
        try joined.client.writeInbound(ByteBuffer(string: "a"))
        let before = reads.count
        joined.client.read()
        XCTAssertEqual(reads.count, before, "the read is held")
        joined.backend.isWritable = true
        joined.backend.pipeline.fireChannelWritabilityChanged()
        XCTAssertEqual(reads.count, before + 1, "and let through once the backend can write")
    }

    func testWhenOneSideClosesTheOtherClosesAndTheTotalsAreReportedOnce() throws {
        let joined = try Joined()
        try joined.client.writeInbound(ByteBuffer(string: "12345"))
        try joined.backend.writeInbound(ByteBuffer(string: "123"))
        joined.loop.advanceTime(by: .seconds(2))
        try joined.backend.close().wait()
        joined.loop.run()
        XCTAssertFalse(joined.client.isActive)
        XCTAssertEqual(joined.reports.totals.count, 1)
        XCTAssertEqual(joined.reports.totals.first?.bytesFromClient, 5)
        XCTAssertEqual(joined.reports.totals.first?.bytesFromBackend, 3)
        XCTAssertEqual(joined.reports.totals.first?.duration, .seconds(2))
    }

    func testTheIdleTimeoutClosesASilentTunnelAndTrafficEitherWayKeepsItOpen() throws {
        let joined = try Joined(idle: .seconds(10))
        for _ in 0..<3 {
            joined.loop.advanceTime(by: .seconds(6))
            try joined.backend.writeInbound(ByteBuffer(string: "tick"))
        }
        XCTAssertTrue(joined.client.isActive && joined.backend.isActive, "18 s with traffic every 6 s")
        joined.loop.advanceTime(by: .seconds(10))
        XCTAssertFalse(joined.client.isActive)
        XCTAssertFalse(joined.backend.isActive)
        XCTAssertEqual(joined.reports.totals.count, 1)
    }
}

private final class EventRecorder: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny
    var prefaces = 0
    var readCompletes = 0

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is HTTP2PrefaceEvent { self.prefaces += 1 }
        context.fireUserInboundEventTriggered(event)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        self.readCompletes += 1
        context.fireChannelReadComplete()
    }
}

private final class ReadCounter: ChannelOutboundHandler {
    typealias OutboundIn = NIOAny
    var count = 0

    func read(context: ChannelHandlerContext) {
        self.count += 1
        context.read()
    }
}

extension TestResponder: RemovableChannelHandler {}
