import NIOCore
import NIOHTTP2

/// The streams of one HTTP/2 connection, right after nio-http2's handler (which runs without its multiplexer):
/// each stream's frames go to an ``HTTP2StreamSlot`` bound to it, whose pipeline serves the exchange; a slot
/// whose stream closed cleanly serves the next stream. Slots are built by `makeStreamPipeline` (the listener's
/// stream handlers) when no idle one fits.
///
/// nio-http2's events of a stream (created, window updated, closed: three a request) end here, and the
/// ``HTTP2ConnectionManager`` after it is told of each opening and closing by a call: passing them on cost a
/// handler hop and a cast each, about 1% of an HTTP/2 request's instructions. The connection's own frames
/// (stream 0) and every other event pass on to it.
///
/// Flow control that nio-http2's multiplexer did: the connection's receive window is given back as DATA
/// arrives (each stream's own window bounds what a stream holds, and a slot gives that back as its pipeline
/// reads), in steps of half the default window.
///
/// Header blocks: nio-http2's handler runs without its own validation of them (see ``HTTP2InboundBlock``), so
/// the router checks each block that arrives before a slot sees it: a request's before its stream is opened,
/// trailers on an open stream. A block that fails resets its stream with `PROTOCOL_ERROR` (and a slot serving
/// the stream hears the error), as nio-http2 does. So does a request whose DATA goes past the length its
/// `content-length` declares, or ends short of it: the frame that shows it is not delivered.
///
/// On the connection's event loop only.
final class HTTP2StreamRouter: ChannelInboundHandler {
    typealias InboundIn = HTTP2Frame
    typealias OutboundOut = HTTP2Frame

    /// Adds a new slot's handlers to its empty pipeline (a compressor if the slot says it ``HTTP2StreamSlot/compresses``).
    typealias StreamPipelineBuilder = (HTTP2StreamSlot) throws -> Void

    private let makeStreamPipeline: StreamPipelineBuilder
    /// Counts the connection's open streams (its idle timeout, its drain).
    private let connection: HTTP2ConnectionManager?
    /// Whether the listener compresses now: a slot built otherwise is not reused for a new stream.
    private let compressesNow: () -> Bool
    private var context: ChannelHandlerContext?
    private var open = OpenStreams()
    private var idle: [HTTP2StreamSlot] = []
    /// Slots with frames in the connection's current read, told when it ends.
    private var reading: [HTTP2StreamSlot] = []
    private var connectionCredit = 0
    /// Inside the connection's read: what is written is flushed when the read ends.
    private var inRead = false
    private var needsFlush = false

    /// Idle slots kept per connection: a burst of concurrent streams leaves at most this many behind. Sixteen, so
    /// that a client running ten or so streams at a time (a browser loading a page, h2load -m10) finds a slot for
    /// each new stream: with eight, two of every ten were built and torn down again, about 4% of an HTTP/2
    /// request's instructions (callgrind, docs/benchmarks.md). An idle slot is its pipeline and handlers, about
    /// 1.3 KB; a connection holds at most this many beyond its open streams.
    static let maximumIdleSlots = 16

    init(compressesNow: @escaping () -> Bool, connection: HTTP2ConnectionManager? = nil,
         makeStreamPipeline: @escaping StreamPipelineBuilder) {
        self.compressesNow = compressesNow
        self.connection = connection
        self.makeStreamPipeline = makeStreamPipeline
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.closeAll()
        self.context = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = self.unwrapInboundIn(data)
        let streamID = frame.streamID
        guard streamID != .rootStream else {
            context.fireChannelRead(data)
            return
        }
        self.inRead = true
        if case .data(let data) = frame.payload {
            self.connectionCredit += data.data.readableBytes + (data.paddingBytes.map { $0 + 1 } ?? 0)
            if self.connectionCredit >= HTTP2StreamSlot.windowUpdateStep {
                self.returnCredit(self.connectionCredit, on: .rootStream)
                self.connectionCredit = 0
            }
        }
        let slot: HTTP2StreamSlot
        if let known = self.open[streamID] {
            slot = known
            do {
                switch frame.payload {
                case .headers(let trailers):
                    try HTTP2InboundBlock.validateTrailers(trailers.headers)
                    guard known.requestBodyArrived(0, endStream: trailers.endStream) else {
                        throw NIOHTTP2Errors.contentLengthViolated()
                    }
                case .data(let data):
                    guard known.requestBodyArrived(data.data.readableBytes, endStream: data.endStream) else {
                        throw NIOHTTP2Errors.contentLengthViolated()
                    }
                default:
                    break
                }
            } catch {
                known.streamError(error)
                self.refuse(streamID)
                return
            }
        } else {
            // Only a HEADERS frame opens a stream; anything else names one that is over (a late WINDOW_UPDATE,
            // PRIORITY or RST_STREAM), which nio-http2 has dealt with.
            guard case .headers(let request) = frame.payload else { return }
            let contentLength: Int?
            do {
                contentLength = try HTTP2InboundBlock.validateRequest(request.headers)
                if request.endStream, let contentLength, contentLength > 0 {
                    throw NIOHTTP2Errors.contentLengthViolated()
                }
            } catch {
                self.refuse(streamID)
                return
            }
            guard let fresh = self.slotForNewStream(context: context) else { return }
            fresh.open(streamID, contentLength: contentLength)
            self.open.add(fresh, for: streamID)
            slot = fresh
        }
        switch frame.payload {
        case .headers, .data:
            if !slot.awaitsConnectionReadComplete {
                slot.awaitsConnectionReadComplete = true
                self.reading.append(slot)
            }
            slot.receive(frame.payload)
        default:
            break  // RST_STREAM arrives as StreamClosedEvent too; WINDOW_UPDATE and PRIORITY are nio-http2's
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        self.inRead = false
        // Emptied after the loop, once nothing else holds its storage (emptying it while a copy did would allocate
        // new storage on every read). A slot cannot join the list meanwhile: reads outside the connection's end
        // at once.
        for slot in self.reading {
            slot.awaitsConnectionReadComplete = false
            slot.connectionReadComplete()
        }
        self.reading.removeAll(keepingCapacity: true)
        if self.needsFlush {
            self.needsFlush = false
            context.flush()
        }
        context.fireChannelReadComplete()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let closed = exactly(event, StreamClosedEvent.self) {
            if let slot = self.open.remove(closed.streamID) {
                slot.streamClosed(reason: closed.reason)
                if slot.isReusable {
                    if self.idle.count < Self.maximumIdleSlots {
                        self.idle.append(slot)
                    } else {
                        slot.connectionClosed()
                    }
                }
            }
            self.connection?.streamClosed(closed.streamID)
        } else if let created = exactly(event, NIOHTTP2StreamCreatedEvent.self) {
            self.connection?.streamOpened(created.streamID)
        } else if exactly(event, NIOHTTP2WindowUpdatedEvent.self) == nil {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        for slot in self.open.values {
            slot.connectionWritabilityChanged()
        }
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.closeAll()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        if let streamError = error as? NIOHTTP2Errors.StreamError, let slot = self.open[streamError.streamID] {
            slot.streamError(streamError.baseError)
            return
        }
        context.fireErrorCaught(error)
    }

    // MARK: - For the slots

    func write(_ frame: HTTP2Frame, promise: EventLoopPromise<Void>?) {
        guard let context = self.context else {
            promise?.fail(ChannelError.ioOnClosedChannel)
            return
        }
        context.write(Self.wrapOutbound(frame), promise: promise)
    }

    func flush() {
        self.context?.flush()
    }

    /// Gives `bytes` of receive window back to the client: flushed at the end of the read, or now outside one (a
    /// stream whose proxy resumed reading, while the client waits for the window).
    func returnCredit(_ bytes: Int, on streamID: HTTP2StreamID) {
        self.write(HTTP2Frame(streamID: streamID, payload: .windowUpdate(windowSizeIncrement: bytes)), promise: nil)
        if self.inRead {
            self.needsFlush = true
        } else {
            self.flush()
        }
    }

    /// The pipeline gave up on its stream: it is reset with `code` (nio-http2 reports the closing, the slot is gone
    /// by then).
    func reset(_ streamID: HTTP2StreamID, code: HTTP2ErrorCode) {
        self.open.remove(streamID)
        self.write(HTTP2Frame(streamID: streamID, payload: .rstStream(code)), promise: nil)
        self.flush()
    }

    /// A malformed header block arrived on the stream (``HTTP2InboundBlock``): it is reset with `PROTOCOL_ERROR`
    /// (RFC 9113 section 8.1.1), flushed with the read's other writes. A slot serving it closes when nio-http2
    /// reports the closing.
    private func refuse(_ streamID: HTTP2StreamID) {
        self.write(HTTP2Frame(streamID: streamID, payload: .rstStream(.protocolError)), promise: nil)
        self.needsFlush = true
    }

    func slotClosed(_ slot: HTTP2StreamSlot) {
        self.idle.removeAll { $0 === slot }
    }

    // MARK: -

    private func slotForNewStream(context: ChannelHandlerContext) -> HTTP2StreamSlot? {
        let compresses = self.compressesNow()
        while let reused = self.idle.popLast() {
            // Built before the listener's compression was switched: as a new stream would not be.
            if reused.compresses == compresses { return reused }
            reused.connectionClosed()
        }
        let slot = HTTP2StreamSlot(parent: context.channel, router: self, compresses: compresses)
        do {
            try self.makeStreamPipeline(slot)
        } catch {
            slot.connectionClosed()
            context.fireErrorCaught(error)
            return nil
        }
        slot.activate()
        return slot
    }

    private func closeAll() {
        let slots = self.open.values + self.idle
        self.open.removeAll()
        self.idle.removeAll()
        self.reading.removeAll()
        for slot in slots {
            slot.connectionClosed()
        }
    }
}

@available(*, unavailable)
extension HTTP2StreamRouter: Sendable {}

/// A connection's open streams and the slots serving them. A few at a time (as many as the client runs at once,
/// at most the 128 the listener allows), so they are found by a scan from the newest: a dictionary hashed the
/// stream's id on every frame, at its opening and at its closing (about 800 instructions a request, callgrind).
struct OpenStreams {
    private var ids: [HTTP2StreamID] = []
    private(set) var values: [HTTP2StreamSlot] = []

    subscript(id: HTTP2StreamID) -> HTTP2StreamSlot? {
        self.index(of: id).map { self.values[$0] }
    }

    /// `id` is not open (a stream opens once).
    mutating func add(_ slot: HTTP2StreamSlot, for id: HTTP2StreamID) {
        self.ids.append(id)
        self.values.append(slot)
    }

    @discardableResult
    mutating func remove(_ id: HTTP2StreamID) -> HTTP2StreamSlot? {
        guard let index = self.index(of: id) else { return nil }
        self.ids.remove(at: index)
        return self.values.remove(at: index)
    }

    mutating func removeAll() {
        self.ids.removeAll()
        self.values.removeAll()
    }

    private func index(of id: HTTP2StreamID) -> Int? {
        var index = self.ids.count
        while index > 0 {
            index -= 1
            if self.ids[index] == id { return index }
        }
        return nil
    }
}
