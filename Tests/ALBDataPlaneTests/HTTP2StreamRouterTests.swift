import NIOCore
import NIOEmbedded
import NIOHPACK
import NIOHTTP1
import NIOHTTP2
import XCTest

@testable import ALBDataPlane

final class HTTP2StreamRouterTests: XCTestCase {
    /// What a stream's pipeline saw, and a way to hold its reads as the proxy does while it connects.
    private final class Recorder: ChannelDuplexHandler {
        typealias InboundIn = HTTP2Frame.FramePayload
        typealias OutboundIn = HTTP2Frame.FramePayload
        typealias OutboundOut = HTTP2Frame.FramePayload

        var frames: [HTTP2Frame.FramePayload] = []
        var readCompletes = 0
        var inactive = false
        var errors: [Error] = []
        var holdingReads = false
        var heldRead = false
        var context: ChannelHandlerContext?

        func handlerAdded(context: ChannelHandlerContext) { self.context = context }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) { self.frames.append(self.unwrapInboundIn(data)) }
        func channelReadComplete(context: ChannelHandlerContext) { self.readCompletes += 1 }
        func channelInactive(context: ChannelHandlerContext) { self.inactive = true }
        func errorCaught(context: ChannelHandlerContext, error: Error) { self.errors.append(error) }

        func read(context: ChannelHandlerContext) {
            if self.holdingReads { self.heldRead = true } else { context.read() }
        }

        func releaseReads() {
            self.holdingReads = false
            if self.heldRead {
                self.heldRead = false
                self.context?.read()
            }
        }
    }

    private var recorders: [Recorder] = []
    private var channel: EmbeddedChannel!
    private var compressing = false

    override func setUpWithError() throws {
        self.recorders = []
        self.channel = EmbeddedChannel()
        self.compressing = false
        let router = HTTP2StreamRouter(compressesNow: { self.compressing }) { slot in
            let recorder = Recorder()
            self.recorders.append(recorder)
            try slot.pipeline.syncOperations.addHandler(recorder)
        }
        try self.channel.pipeline.syncOperations.addHandler(router)
    }

    private func request(_ id: Int, endStream: Bool = true) throws {
        let headers = HPACKHeaders([(":method", "GET"), (":scheme", "https"), (":authority", "a"), (":path", "/")])
        try self.channel.writeInbound(HTTP2Frame(streamID: HTTP2StreamID(id),
                                                 payload: .headers(.init(headers: headers, endStream: endStream))))
    }

    private func data(_ id: Int, bytes: Int, endStream: Bool = false) throws {
        let body = ByteBuffer(repeating: UInt8(ascii: "x"), count: bytes)
        try self.channel.writeInbound(HTTP2Frame(streamID: HTTP2StreamID(id),
                                                 payload: .data(.init(data: .byteBuffer(body), endStream: endStream))))
    }

    private func closed(_ id: Int, reason: HTTP2ErrorCode? = nil) {
        self.channel.pipeline.fireUserInboundEventTriggered(StreamClosedEvent(streamID: HTTP2StreamID(id), reason: reason))
    }

    private func written() throws -> [HTTP2Frame] {
        var frames: [HTTP2Frame] = []
        while let frame = try self.channel.readOutbound(as: HTTP2Frame.self) { frames.append(frame) }
        return frames
    }

    func testStreamsThatCloseCleanlyShareOnePipelineOneAfterAnother() throws {
        try request(1)
        XCTAssertEqual(recorders.count, 1)
        let stream = try XCTUnwrap(recorders[0].context?.channel)
        stream.writeAndFlush(HTTP2Frame.FramePayload.headers(.init(headers: [":status": "200"], endStream: true)),
                             promise: nil)
        XCTAssertEqual(try written().map(\.streamID), [HTTP2StreamID(1)])
        closed(1)
        try request(3)
        XCTAssertEqual(recorders.count, 1, "the second stream reuses the first one's pipeline")
        XCTAssertEqual(recorders[0].frames.count, 2)
        XCTAssertFalse(recorders[0].inactive)
        stream.writeAndFlush(HTTP2Frame.FramePayload.headers(.init(headers: [":status": "200"], endStream: true)),
                             promise: nil)
        XCTAssertEqual(try written().map(\.streamID), [HTTP2StreamID(3)], "written as the stream it serves now")
    }

    func testAPipelineBuiltBeforeCompressionWasSwitchedOnServesNoNewStream() throws {
        try request(1)
        closed(1)
        compressing = true
        try request(3)
        XCTAssertEqual(recorders.count, 2, "a new stream gets the pipeline the listener wants now")
        XCTAssertTrue(recorders[0].inactive)
    }

    func testConcurrentStreamsGetPipelinesOfTheirOwn() throws {
        try request(1)
        try request(3)
        XCTAssertEqual(recorders.count, 2)
        XCTAssertEqual(recorders.map(\.frames.count), [1, 1])
    }

    /// A burst of concurrent streams leaves its pipelines behind for the next burst, up to
    /// ``HTTP2StreamRouter/maximumIdleSlots``; those beyond are closed.
    func testABurstsPipelinesServeTheNextBurstUpToTheIdleLimit() throws {
        let limit = HTTP2StreamRouter.maximumIdleSlots
        func burst(of count: Int, from first: Int) throws {
            let ids = (0..<count).map { first + 2 * $0 }
            for id in ids { try request(id) }
            for id in ids { closed(id) }
        }
        try burst(of: 10, from: 1)
        XCTAssertEqual(recorders.count, 10)
        try burst(of: 10, from: 21)
        XCTAssertEqual(recorders.count, 10, "ten streams at a time (h2load -m10, a browser's page) build no pipeline again")
        XCTAssertFalse(recorders.contains { $0.inactive })

        try burst(of: limit + 4, from: 41)
        XCTAssertEqual(recorders.count, limit + 4)
        XCTAssertEqual(recorders.filter(\.inactive).count, 4, "no more than \(limit) are kept")
        try burst(of: limit, from: 101)
        XCTAssertEqual(recorders.count, limit + 4)
    }

    /// As many streams as the listener allows at once, closing in no particular order: each frame reaches its own
    /// stream's pipeline, and a closed stream's id finds none.
    func testEachOfManyOpenStreamsGetsItsOwnFramesWhateverOrderTheyCloseIn() throws {
        let ids = (0..<128).map { 1 + 2 * $0 }
        for id in ids { try request(id, endStream: false) }
        XCTAssertEqual(recorders.count, 128)
        var order = ids
        order.shuffle()
        for (step, id) in order.enumerated() {
            try data(id, bytes: 3, endStream: true)
            let recorder = recorders[(id - 1) / 2]
            XCTAssertEqual(recorder.frames.count, 2, "stream \(id): its head, then its body with the end")
            closed(id)
            if step.isMultiple(of: 7) {
                // A late frame for a stream that closed reaches nobody.
                try data(id, bytes: 1, endStream: true)
                XCTAssertEqual(recorder.frames.count, 2, "stream \(id) after its close")
            }
        }
    }

    func testAResetStreamEndsItsPipelineAndTheNextStreamGetsANewOne() throws {
        try request(1, endStream: false)
        closed(1, reason: .cancel)
        XCTAssertTrue(recorders[0].inactive, "the proxy learns the client went away")
        try request(3)
        XCTAssertEqual(recorders.count, 2)
        XCTAssertFalse(recorders[1].inactive)
    }

    func testAStreamThatClosedBeforeItsPipelineReadItAllIsNotReused() throws {
        try request(1, endStream: false)
        recorders[0].holdingReads = true
        try data(1, bytes: 10)
        try data(1, bytes: 10, endStream: true)
        XCTAssertEqual(recorders[0].frames.count, 2, "the end is held")
        closed(1)
        XCTAssertTrue(recorders[0].inactive, "its handlers never saw the request end")
        try request(3)
        XCTAssertEqual(recorders.count, 2)
    }

    func testAMalformedRequestBlockResetsItsStreamAndOpensNoPipeline() throws {
        let headers = HPACKHeaders([(":method", "GET"), (":scheme", "https"), (":path", "/"), ("Host", "a")])
        try self.channel.writeInbound(HTTP2Frame(streamID: 1, payload: .headers(.init(headers: headers, endStream: true))))
        let frames = try written()
        XCTAssertEqual(frames.map(\.streamID), [HTTP2StreamID(1)])
        guard case .rstStream(let code) = frames.first?.payload else { return XCTFail("a reset expected") }
        XCTAssertEqual(code, .protocolError)
        XCTAssertTrue(recorders.isEmpty, "no pipeline saw the request")
        try request(3)
        XCTAssertEqual(recorders.count, 1, "the next stream is served")
    }

    func testMalformedTrailersResetTheStreamAndItsPipelineHearsWhy() throws {
        try request(1, endStream: false)
        let trailers = HPACKHeaders([("grpc-status", "0"), (":path", "/again")])
        try self.channel.writeInbound(HTTP2Frame(streamID: 1, payload: .headers(.init(headers: trailers, endStream: true))))
        guard case .rstStream(let code) = try written().first?.payload else { return XCTFail("a reset expected") }
        XCTAssertEqual(code, .protocolError)
        XCTAssertEqual(recorders[0].frames.count, 1, "the trailers were not delivered")
        XCTAssertEqual(recorders[0].errors.count, 1)
        closed(1, reason: .protocolError)
        XCTAssertTrue(recorders[0].inactive)
    }

    func testClosingAStreamsPipelineResetsTheStream() throws {
        try request(1, endStream: false)
        recorders[0].context?.close(promise: nil)
        XCTAssertEqual(try written().map(\.payload.isReset), [true])
        XCTAssertTrue(recorders[0].inactive)
    }

    func testFramesWaitForThePipelineToReadAndItsWindowComesBackAsItReads() throws {
        try request(1, endStream: false)
        recorders[0].holdingReads = true
        try channel.writeInbound(HTTP2Frame(streamID: 1, payload: .data(.init(data: .byteBuffer(ByteBuffer())))))
        // The pipeline asked for its next read at the end of the last one; held from here on.
        try data(1, bytes: 20000)
        try data(1, bytes: 20000)
        XCTAssertEqual(recorders[0].frames.count, 2, "the held reads keep the later frames back")
        let connectionWindow = try written()
        XCTAssertEqual(connectionWindow.map(\.streamID), [HTTP2StreamID.rootStream],
                       "the connection's window comes back as DATA arrives, the stream's only as it is read")
        recorders[0].releaseReads()
        XCTAssertEqual(recorders[0].frames.count, 4)
        XCTAssertEqual(try written().map(\.windowIncrement), [40000])
        XCTAssertGreaterThan(recorders[0].readCompletes, 1, "delivered outside a connection read, the read ends at once")
    }

    /// RFC 9113 section 8.1.1: DATA that goes past the request's `content-length`, or a stream that ends short
    /// of it, makes the request malformed: the frame that shows it is not delivered, the stream is reset with
    /// `PROTOCOL_ERROR` and its pipeline hears why. A request that keeps to its length is delivered whole.
    func testARequestBodyIsHeldToItsContentLength() throws {
        func post(_ id: Int, length: String, endStream: Bool = false) throws {
            let headers = HPACKHeaders([(":method", "POST"), (":scheme", "https"), (":authority", "a"), (":path", "/"),
                                        ("content-length", length)])
            try self.channel.writeInbound(HTTP2Frame(streamID: HTTP2StreamID(id),
                                                     payload: .headers(.init(headers: headers, endStream: endStream))))
        }
        func resetCode() throws -> HTTP2ErrorCode? {
            for frame in try written() { if case .rstStream(let code) = frame.payload { return code } }
            return nil
        }
        try post(1, length: "10")
        try data(1, bytes: 6)
        try data(1, bytes: 4, endStream: true)
        XCTAssertNil(try resetCode())
        XCTAssertEqual(recorders[0].frames.count, 3, "the head and both DATA frames")
        closed(1)

        try post(3, length: "10")
        try data(3, bytes: 6)
        try data(3, bytes: 6)
        XCTAssertEqual(try resetCode(), .protocolError, "past the length")
        XCTAssertEqual(recorders[0].frames.count, 5, "the DATA going past it was not delivered")
        XCTAssertEqual(recorders[0].errors.count, 1)
        closed(3, reason: .protocolError)

        try post(5, length: "10")
        try data(5, bytes: 6, endStream: true)
        XCTAssertEqual(try resetCode(), .protocolError, "short of the length")
        XCTAssertEqual(recorders.count, 2)
        XCTAssertEqual(recorders[1].frames.count, 1, "only the head")
        closed(5, reason: .protocolError)

        try post(7, length: "3", endStream: true)
        XCTAssertEqual(try resetCode(), .protocolError, "a length but no DATA")
        try post(9, length: "3x")
        XCTAssertEqual(try resetCode(), .protocolError, "a malformed length")
        XCTAssertEqual(recorders.count, 2, "neither reached a pipeline")

        try post(11, length: "2")
        try data(11, bytes: 2)
        let trailers = HPACKHeaders([("grpc-status", "0")])
        try self.channel.writeInbound(HTTP2Frame(streamID: 11, payload: .headers(.init(headers: trailers, endStream: true))))
        XCTAssertNil(try resetCode(), "trailers after the whole body")
    }

    /// A slot's pipeline as a listener builds it: the stream codec first, attached to the slot, and an
    /// application after it. Frames reach the codec, and its frames reach the connection, without passing the
    /// pipeline's head: a handler put in front of the codec (which a listener never does) sees none of them.
    func testAnAttachedCodecTakesAndSendsItsStreamsFramesDirectly() throws {
        final class Application: ChannelInboundHandler {
            typealias InboundIn = HTTPServerRequestPart
            typealias OutboundOut = HTTPServerResponsePart
            var uris: [String] = []
            var ends = 0
            func channelRead(context: ChannelHandlerContext, data: NIOAny) {
                switch self.unwrapInboundIn(data) {
                case .head(let head): self.uris.append(head.uri)
                case .body: break
                case .end:
                    self.ends += 1
                    context.write(self.wrapOutboundOut(.head(HTTPResponseHead(version: .http2, status: .ok))), promise: nil)
                    context.write(self.wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: "ok")))), promise: nil)
                    context.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: nil)
                }
            }
        }
        final class Watcher: ChannelDuplexHandler {
            typealias InboundIn = NIOAny
            typealias OutboundIn = NIOAny
            var seen = 0
            func channelRead(context: ChannelHandlerContext, data: NIOAny) {
                self.seen += 1
                context.fireChannelRead(data)
            }
            func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
                self.seen += 1
                context.write(data, promise: promise)
            }
        }
        let channel = EmbeddedChannel()
        var applications: [Application] = []
        let watcher = Watcher()
        let router = HTTP2StreamRouter(compressesNow: { false }) { slot in
            let codec = HTTP2ServerStreamCodec()
            try slot.pipeline.syncOperations.addHandler(codec)
            slot.attachCodec(codec)
            try slot.pipeline.syncOperations.addHandler(watcher, position: .first)
            let application = Application()
            applications.append(application)
            try slot.pipeline.syncOperations.addHandler(application)
        }
        try channel.pipeline.syncOperations.addHandler(router)
        func request(_ id: Int, path: String) throws {
            let headers = HPACKHeaders([(":method", "POST"), (":scheme", "https"), (":authority", "a"), (":path", path)])
            try channel.writeInbound(HTTP2Frame(streamID: HTTP2StreamID(id), payload: .headers(.init(headers: headers))))
            try channel.writeInbound(HTTP2Frame(streamID: HTTP2StreamID(id), payload: .data(
                .init(data: .byteBuffer(ByteBuffer(string: "up")), endStream: true))))
        }
        func sent() throws -> [String] {
            var frames: [String] = []
            while let frame = try channel.readOutbound(as: HTTP2Frame.self) {
                switch frame.payload {
                case .headers(let headers):
                    frames.append("\(frame.streamID) headers \(headers.headers.first(name: ":status") ?? "")")
                case .data(let data):
                    guard case .byteBuffer(let bytes) = data.data else { continue }
                    frames.append("\(frame.streamID) data \(String(buffer: bytes)) end \(data.endStream)")
                default:
                    continue
                }
            }
            return frames
        }
        try request(1, path: "/first")
        XCTAssertEqual(try sent(), ["HTTP2StreamID(1) headers 200", "HTTP2StreamID(1) data ok end true"])
        channel.pipeline.fireUserInboundEventTriggered(StreamClosedEvent(streamID: 1, reason: nil))
        try request(3, path: "/second")
        XCTAssertEqual(try sent(), ["HTTP2StreamID(3) headers 200", "HTTP2StreamID(3) data ok end true"],
                       "the reused pipeline writes as the stream it serves now")
        XCTAssertEqual(applications.count, 1)
        XCTAssertEqual(applications.first?.uris, ["/first", "/second"])
        XCTAssertEqual(applications.first?.ends, 2)
        XCTAssertEqual(watcher.seen, 0, "nothing went through the pipeline's head")
        _ = try? channel.finish()
    }

    func testAStreamsEventsEndAtTheRouterAndTheConnectionsFramesAndOtherEventsPassOn() throws {
        /// After the router, as the connection manager is.
        final class After: ChannelInboundHandler {
            typealias InboundIn = HTTP2Frame
            var events: [String] = []
            var frames: [HTTP2Frame.FramePayload] = []
            func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) { self.events.append("\(type(of: event))") }
            func channelRead(context: ChannelHandlerContext, data: NIOAny) { self.frames.append(self.unwrapInboundIn(data).payload) }
        }
        let after = After()
        try self.channel.pipeline.syncOperations.addHandler(after)
        try request(1)
        self.channel.pipeline.fireUserInboundEventTriggered(
            NIOHTTP2StreamCreatedEvent(streamID: 1, localInitialWindowSize: 65535, remoteInitialWindowSize: 65535))
        self.channel.pipeline.fireUserInboundEventTriggered(
            NIOHTTP2WindowUpdatedEvent(streamID: 1, inboundWindowSize: 65535, outboundWindowSize: 64000))
        closed(1)
        self.channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        try self.channel.writeInbound(HTTP2Frame(streamID: .rootStream, payload: .ping(HTTP2PingData(withInteger: 7), ack: true)))
        XCTAssertEqual(after.events, ["ChannelShouldQuiesceEvent"])
        XCTAssertEqual(after.frames.count, 1)
        guard case .ping(let data, ack: true)? = after.frames.first else { return XCTFail("\(after.frames)") }
        XCTAssertEqual(data, HTTP2PingData(withInteger: 7))
        XCTAssertEqual(self.recorders.first?.frames.count, 1, "the stream's own frame went to its pipeline only")
    }

    func testTheConnectionClosingEndsEveryPipeline() throws {
        try request(1, endStream: false)
        try request(3)
        closed(3)
        channel.pipeline.fireChannelInactive()
        XCTAssertEqual(recorders.map(\.inactive), [true, true], "the open stream's and the idle one's")
    }
}

extension HTTP2Frame.FramePayload {
    fileprivate var isReset: Bool {
        if case .rstStream = self { return true }
        return false
    }
}

extension HTTP2Frame {
    fileprivate var windowIncrement: Int? {
        if case .windowUpdate(let increment) = self.payload { return increment }
        return nil
    }
}
