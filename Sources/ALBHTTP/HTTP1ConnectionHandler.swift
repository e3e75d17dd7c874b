import NIOCore
import NIOHTTP1

/// An HTTP/1 client connection up to the exchange: the request bytes decoded, the connection's timeouts, one
/// exchange at a time, the edge's own error responses, and the response bytes. One handler with five stages,
/// which run in the order separate handlers would (inbound: decode, timeouts, pipelining, errors; outbound:
/// errors, pipelining, timeouts, wire), because one-job handlers cost an idle connection a pipeline context
/// and a handler object each (about 150 B) and every request and response part a hop and a `NIOAny` cast each.
///
/// **Decode**: a ``StrictHTTPRequestDecoder`` runs on the bytes as they arrive, its output called directly.
/// - Bytes that do not finish a line stay until the next read (one optional buffer, nil between requests).
/// - After the decoder refuses the input (an ``HTTPEdgeError``, answered by the errors stage), whatever the
///   client still sends is dropped: the connection is answering and closing lingering, which reads until
///   the client closes.
/// - A request cut short by the end of the input is abandoned: the connection is going away.
/// - Bytes arriving while a decode runs (re-entrantly) are decoded after the bytes it held, in order.
/// - Removed after a hand-off (an h2c preface, a WebSocket upgrade the backend accepted), it passes the bytes
///   it holds, unparsed, to the handler that replaced it, as `ByteToMessageHandler` does; the removal runs on
///   the next event-loop turn, because it is usually asked for from inside a decode, and meanwhile what the
///   replacement writes and every event pass through untouched.
///
/// **Timeouts** (one timer; the two never run at the same time):
/// - Header: the head of a request must be complete within `headerTimeout` of its first byte (the decoder
///   reports it); on expiry the errors stage answers 408 and closes.
///   A pipelined request waiting behind a slow response is not timed: the stage sees parts as they arrive.
/// - Idle: a connection with no request in flight (no head arriving, every request and its response
///   finished) for the idle timeout is closed. The idle timeout is asked for each time the connection goes
///   idle, so a configuration update applies to existing connections from their next idle period on.
/// - Parking: with an ``IdleConnectionParking``, a connection idle for its `parkingDelay` (and still idle: nothing
///   unread, held or buffered) gives its socket to it and its channel closes; the idle timeout goes with the
///   socket. A connection it does not take keeps its channel until the idle timeout.
/// Requests in flight are the exchange's to time. A phase that starts records its deadline and arms the
/// timer only if it would fire too late; a phase that ends clears its deadline and leaves the timer be;
/// when it fires it acts, re-arms for a later deadline, or stops. Keep-alive traffic then schedules a
/// callback about once per timeout.
///
/// **Pipelining**: one exchange at a time, responses in request order. Like NIO's `HTTPServerPipelineHandler`,
/// but a response may finish before its request (a backend answering 413 during an upload), and
/// `ChannelShouldQuiesceEvent` (graceful shutdown, drains) closes an idle keep-alive connection at once and a
/// busy one right after its current response, which says `Connection: close` if its head was not sent yet; a
/// connection whose first request (or next head) has not fully arrived is served that request first. While a
/// finished request waits for its response, further requests are buffered (at most what one read brings)
/// and reads are held once anything is buffered, so pipelining cannot grow memory. The read after a
/// finished request is let through even though its bytes would have to wait: a client that does not
/// pipeline sends nothing until the response, and holding that read would make the channel drop and re-add
/// its read interest (two `epoll_ctl` calls) on every request.
///
/// **Errors**: ``HTTPEdgeError``s (from the decoder and the header timeout) become a short error response
/// with `Connection: close`, then the connection closes.
/// - The error concerns the current request (its body was still arriving) and no response has started:
///   the error is passed on first, so the exchange is abandoned, then answered.
/// - The current request is complete and its response pending (the error is about a later, pipelined
///   request): the error response follows the current response, then the connection closes.
/// - A response for the broken request is already on the wire: it cannot be interrupted cleanly, so the
///   connection closes right after it.
/// - The broken request already has its whole response (an early response): the client must not get a
///   second final response, so the connection just closes.
/// Closing is lingering (nginx's `lingering_close`): the output is shut down after the response and what
/// the client still sends is read and dropped until it closes, for at most ``lingerTime``; closing at once
/// with request bytes unread would make the kernel send a reset that can destroy the response. Other
/// errors pass through untouched.
///
/// **Wire**: serialises each response part as it is written, as NIO's `HTTPResponseEncoder` without
/// automatic framing headers would: the exchange has framed the head (`ProxyHeaders.clientResponseHead`),
/// and a head saying `Transfer-Encoding: chunked` (HTTP/1.1) makes the body parts chunks and the end the
/// last chunk with the trailers.
///
/// **Direct calls**: an application handler right after this one may take its request parts and give its
/// response parts by direct call (``attachDirectly(_:)``, ``DirectExchangeTransport``: why, in
/// DirectExchange.swift) instead of through the pipeline. A handler put between the two ends the direct calls:
/// it is put there with ``addHandlerAfter(_:)``.
public final class HTTP1ConnectionHandler: ChannelDuplexHandler, RemovableChannelHandler, DirectExchangeTransport {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = HTTPServerRequestPart
    public typealias OutboundIn = HTTPServerResponsePart
    public typealias OutboundOut = IOData

    /// How long a connection closing after an error response keeps draining the client's input.
    static let lingerTime = TimeAmount.seconds(2)

    // MARK: Decode stage state
    private var decoder: StrictHTTPRequestDecoder
    private var unread = PendingInput()
    // (Its flags are declared after `headDeadline`, below.)

    // MARK: Timeouts stage state
    private let headerTimeout: TimeAmount
    private let idleTimeout: () -> TimeAmount
    private var timer = LazyDeadlineTimer()
    /// Request parts as they arrive, response ends as they are written.
    private var arrivedHeads = 0
    private var arrivedEnds = 0
    private var writtenResponseEnds = 0
    // Fields are laid out in the order declared, each at its alignment, and every byte of this class is held by
    // each idle connection: the flags come after the fields that leave room behind them (an optional deadline or
    // head is 9 or 17 bytes, with 7 to the next word), in place of padding.
    /// When the head now arriving times out; nil while no head is arriving.
    private var headDeadline: NIODeadline?
    // Decode stage flags.
    /// A decode is running: a read arriving meanwhile (re-entrantly) only queues its bytes.
    private var decoding = false
    /// The decoder refused the input; nothing more is decoded.
    private var refused = false
    /// Leaving the pipeline after a hand-off: bytes are held for the replacement, the rest passes through.
    private var removing = false
    /// When the connection times out for idleness; nil while it is busy.
    private var idleDeadline: NIODeadline?

    // MARK: Pipelining stage state: the exchange being served
    private var servedRequestOpen = false
    private var servedResponseOpen = false
    private var readPending = false
    private var quiescing = false
    /// Quiescing, but the request the client connected for (or whose head is arriving) is still to be
    /// served: see ``quiesceBetweenExchanges(context:)``.
    private var awaitingLastRequest = false
    /// The response that said `Connection: close` has ended and the connection is closing: nothing more is
    /// written (an edge error for a request pipelined behind it, say), or the client would read a response
    /// after the one that told it the connection ends.
    private var closedAfterResponse = false
    /// Parts waiting for the current exchange; nil when none (never empty). Allocated when a part first has
    /// to wait and dropped once drained, so an idle keep-alive connection holds no queue storage.
    private var buffered: CircularBuffer<HTTPServerRequestPart>?

    // MARK: Errors stage state: the exchange as the application sees it
    private var pendingError: HTTPEdgeError?
    private var errorsResponseOpen = false
    private var errorsRequestOpen = false
    private var responseStarted = false
    /// The request still arriving already has its complete response (an early response).
    private var answeredEarly = false
    private var requestVersion = HTTPVersion.http1_1
    private var closeAfterResponse = false
    private var closing = false

    // MARK: Wire stage state
    /// A response head not written yet: held until the first part of its body, so that a small body goes out
    /// in the same buffer (one write and one iovec where there were two, one TLS record), or until anything
    /// else is written, flushed or closed. Only with the loop's head memory (`headBuffer`), where the body is
    /// copied in after the head allocating nothing. Kept apart from its lines and promise, not as one optional
    /// tuple or struct: each look at that went through the runtime's value witnesses, about 150 instructions a
    /// response (callgrind).
    private var heldHead: HTTPResponseHead?
    /// The framing of the response body being written (a flag: in the room the optional head leaves).
    private var body = HTTP1BodyWriter()
    private var heldFieldLines: HTTP1FieldLines?
    private var heldPromise: EventLoopPromise<Void>?
    /// The event loop's memory for response heads (``HTTP1LoopMemory``); nil: each head gets a buffer of its own.
    private let headBuffer: HeadEncodingBuffer?
    /// Where the socket waits once the connection has idled for a while; nil: it keeps its channel.
    private let parking: IdleConnectionParking?
    /// `parking`'s delay (zero without it), kept here: reading it through the existential at every idle start
    /// retained and released the parking object and called its witness (about 60 instructions a request).
    private let parkingDelay: TimeAmount

    // MARK: Direct calls
    /// The handler right after this one, when it takes request parts by direct call; nil: they go through
    /// the pipeline.
    private var application: DirectExchangeApplication?
    /// This handler's context while it is in a pipeline: where the application's direct writes go on from.
    private var context: ChannelHandlerContext?

    /// - Parameter idleTimeout: read whenever the connection becomes idle.
    public init(decoder: StrictHTTPRequestDecoder = StrictHTTPRequestDecoder(), headerTimeout: TimeAmount,
                idleTimeout: @escaping () -> TimeAmount, headBuffer: HeadEncodingBuffer? = nil,
                parking: IdleConnectionParking? = nil) {
        self.decoder = decoder
        self.headBuffer = headBuffer
        self.parking = parking
        self.parkingDelay = parking?.parkingDelay ?? .zero
        self.headerTimeout = headerTimeout
        self.idleTimeout = idleTimeout
    }

    // MARK: Channel events

    public func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if context.channel.isActive { self.becameIdle(context: context) }
    }

    public func handlerRemoved(context: ChannelHandlerContext) {
        self.detachApplication()
        self.context = nil
        self.disarm()
    }

    public func channelActive(context: ChannelHandlerContext) {
        self.becameIdle(context: context)
        context.fireChannelActive()
    }

    public func channelInactive(context: ChannelHandlerContext) {
        self.disarm()
        context.fireChannelInactive()
    }

    public func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if !self.removing, event is ChannelShouldQuiesceEvent {
            self.quiescing = true
            self.buffered = nil
            if !self.servedRequestOpen && !self.servedResponseOpen {
                self.quiesceBetweenExchanges(context: context)
            }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if self.refused { return }
        self.unread.append(self.unwrapInboundIn(data))
        self.decodeUnread(context: context)
    }

    public func removeHandler(context: ChannelHandlerContext, removalToken: ChannelHandlerContext.RemovalToken) {
        self.writeHeldHead(context: context)
        self.detachApplication()
        self.removing = true
        self.disarm()
        context.eventLoop.assumeIsolated().execute {
            self.handOff(context: context)
            context.leavePipeline(removalToken: removalToken)
        }
    }

    public func read(context: ChannelHandlerContext) {
        if self.buffered != nil && !self.removing {
            self.readPending = true
        } else {
            context.read()
        }
    }

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if self.removing {
            // The replacement's bytes (an HTTP/2 preface's settings, a tunnel's data).
            context.write(data, promise: promise)
            return
        }
        self.errorsStageWrite(self.unwrapOutboundIn(data), promise: promise, context: context)
    }

    // MARK: Direct calls

    /// From now on request parts go to `application` by direct call, and it writes its response parts with
    /// ``write(_:promise:)`` and ``flush()``. Only for the handler right after this one, added to the same
    /// pipeline; until either leaves the pipeline or ``addHandlerAfter(_:)`` puts another between them.
    public func attachDirectly(_ application: DirectExchangeApplication) {
        self.detachApplication()
        self.application = application
        application.writesDirectly(to: self)
    }

    /// Parts go through the pipeline again, both ways.
    public func detachApplication() {
        guard let application = self.application else { return }
        self.application = nil
        application.writesDirectly(to: nil)
    }

    /// Adds `handler` to the pipeline right after this one: the application's parts pass through it, so
    /// direct calls end.
    public func addHandlerAfter(_ handler: ChannelHandler) throws {
        guard let context = self.context else { throw ChannelError.ioOnClosedChannel }
        self.detachApplication()
        try context.pipeline.syncOperations.addHandler(handler, position: .after(self))
    }

    /// A response part from the attached application: what ``write(context:data:promise:)`` does with it.
    public func write(_ part: HTTPServerResponsePart, promise: EventLoopPromise<Void>?) {
        guard let context = self.context else {
            promise?.fail(ChannelError.ioOnClosedChannel)
            return
        }
        self.errorsStageWrite(part, promise: promise, context: context)
    }

    /// A response head whose backend fields are `fieldLines`, relayed as bytes; `head` has the proxy's own.
    public func write(head: HTTPResponseHead, fieldLines: HTTP1FieldLines, promise: EventLoopPromise<Void>?) {
        guard let context = self.context else {
            promise?.fail(ChannelError.ioOnClosedChannel)
            return
        }
        // Beside the head through the stages: the parts they pass are NIO's, whose head has no room for them.
        self.errorsStageWrite(.head(head), fieldLines: fieldLines, promise: promise, context: context)
    }

    /// A flush from the attached application.
    public func flush() {
        guard let context = self.context else { return }
        self.flush(context: context)
    }

    public func flush(context: ChannelHandlerContext) {
        self.writeHeldHead(context: context)
        context.flush()
    }

    public func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        self.writeHeldHead(context: context)
        context.close(mode: mode, promise: promise)
    }

    public func errorCaught(context: ChannelHandlerContext, error: Error) {
        guard !self.removing, let edgeError = error as? HTTPEdgeError else {
            context.fireErrorCaught(error)
            return
        }
        self.handle(edgeError, context: context)
    }

    // MARK: Decode stage

    private func decodeUnread(context: ChannelHandlerContext) {
        guard !self.decoding else { return }
        self.decoding = true
        defer { self.decoding = false }
        while !self.removing && !self.refused && !self.closedAfterResponse, var buffer = self.unread.take() {
            let progress: StrictHTTPRequestDecoder.Progress
            do {
                progress = try self.decoder.decode(&buffer, into: DecodedRequests(handler: self, context: context))
            } catch {
                self.refused = true
                self.unread.removeAll()
                self.errorCaught(context: context, error: error)
                return
            }
            let arrivedMeanwhile = self.unread.putBack(&buffer)
            if progress == .needMoreData && !arrivedMeanwhile { return }
        }
    }

    /// The decoder's output: calls into the stages below, on the connection's context. (The handler's
    /// state, not its decoder, is what they touch: the decoder is busy decoding.)
    private struct DecodedRequests: HTTPRequestDecoderOutput {
        let handler: HTTP1ConnectionHandler
        let context: ChannelHandlerContext

        func requestHeadStarted() {
            self.handler.headStarted(context: self.context)
        }

        func receivedHTTP2Preface() {
            self.context.fireUserInboundEventTriggered(HTTP2PrefaceEvent())
        }

        func received(_ part: HTTPServerRequestPart) {
            self.handler.requestPartArrived(part, context: self.context)
        }

        var takesFieldLines: Bool { self.handler.application?.takesRequestFieldLines ?? false }

        func received(head: HTTPRequestHead, summary: HTTP1HeadSummary, fieldLines: HTTP1FieldLines) {
            self.handler.requestPartArrived(.head(head), fieldLines: fieldLines, summary: summary, context: self.context)
        }
    }

    /// On the way out of the pipeline, after a hand-off: what the client sent since goes to the replacement,
    /// with a read-complete after it, as the socket would deliver it (handlers flush in response). A drain
    /// that began before (the hand-off was the request it waited for: an h2c preface) is passed on too, so
    /// the replacement ends the connection in its own way (HTTP/2: a `GOAWAY` after the streams it has).
    private func handOff(context: ChannelHandlerContext) {
        if !self.refused, self.decoder.hasHandedOff, let rest = self.unread.take(), rest.readableBytes > 0 {
            context.fireChannelRead(NIOAny(rest))
            context.fireChannelReadComplete()
        }
        if self.quiescing {
            context.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        }
    }

    // MARK: Timeouts stage

    private func headStarted(context: ChannelHandlerContext) {
        let deadline = context.eventLoop.now + self.headerTimeout
        self.headDeadline = deadline
        self.idleDeadline = nil
        self.arm(deadline: deadline, context: context)
    }

    /// Every request part as it arrives: the timeouts, then the pipelining stage. `fieldLines`: a head's fields as
    /// lines, and what the decoder learnt of them, beside the head (which has none) through the stages: the parts
    /// they pass are NIO's, whose head has no room for them. (Two parameters, not one optional struct of both:
    /// copying that went through the runtime's value witnesses, about 350 instructions a request, callgrind.)
    private func requestPartArrived(_ part: HTTPServerRequestPart, fieldLines: HTTP1FieldLines? = nil,
                                    summary: HTTP1HeadSummary? = nil, context: ChannelHandlerContext) {
        // Timeouts: every part as it arrives.
        switch part {
        case .head:
            self.headDeadline = nil
            self.arrivedHeads += 1
            self.idleDeadline = nil
        case .body:
            break
        case .end:
            self.arrivedEnds += 1
            if self.isIdle { self.becameIdle(context: context) }
        }
        // Pipelining: let it through, hold it, or (quiescing, between exchanges) drop it.
        if self.quiescing && !self.servedRequestOpen {
            guard self.awaitingLastRequest, case .head = part else { return }
            self.awaitingLastRequest = false
        }
        if self.mustBuffer || self.buffered != nil {
            if self.buffered == nil {
                self.buffered = CircularBuffer(initialCapacity: 4)
            }
            // Held as a part, its lines made fields (rare): a slice of the input would hold the read's memory.
            if case .head(let head) = part, let fieldLines {
                self.buffered?.append(.head(head.withFields(of: fieldLines)))
            } else {
                self.buffered?.append(part)
            }
            return
        }
        self.serve(part, fieldLines: fieldLines, summary: summary, context: context)
    }

    private var isIdle: Bool {
        self.headDeadline == nil && self.arrivedEnds == self.arrivedHeads && self.writtenResponseEnds == self.arrivedHeads
    }

    private func becameIdle(context: ChannelHandlerContext) {
        let now = context.eventLoop.now
        let deadline = now + self.idleTimeout()
        self.idleDeadline = deadline
        self.arm(deadline: self.parkingDelay == .zero ? deadline : min(deadline, now + self.parkingDelay), context: context)
    }

    private func arm(deadline: NIODeadline, context: ChannelHandlerContext) {
        self.timer.arm(at: deadline, on: context.eventLoop, handler: Expiry(handler: self))
    }

    /// What the timer calls back: the handler alone, one reference (a keep-alive request reschedules the
    /// timer for its head, so copying this is on every request's path), which finds its context itself.
    // @unchecked: scheduled, called and cancelled on its owner's event loop only (LazyDeadlineTimer).
    private struct Expiry: NIOScheduledCallbackHandler, @unchecked Sendable {
        let handler: HTTP1ConnectionHandler

        func handleScheduledCallback(eventLoop: some EventLoop) {
            guard let context = self.handler.context else {
                self.handler.timer.fired()  // removed from its pipeline meanwhile: nothing to time out
                return
            }
            self.handler.timerFired(context: context)
        }
    }

    private func timerFired(context: ChannelHandlerContext) {
        self.timer.fired()
        let now = context.eventLoop.now
        if let deadline = self.headDeadline {
            if deadline > now {
                self.arm(deadline: deadline, context: context)
            } else {
                self.headDeadline = nil
                self.handle(.headerTimeout, context: context)
            }
        } else if let deadline = self.idleDeadline {
            self.idleTimerFired(deadline: deadline, now: now, context: context)
        }
        // Neither: the connection is busy with a request; the timer is armed again when it goes idle.
    }

    /// The idle phase: the connection closes at its deadline, and is parked (when it has ``parking``) once it
    /// has idled for the parking delay. The timer may fire before that delay, for an earlier phase's deadline.
    private func idleTimerFired(deadline: NIODeadline, now: NIODeadline, context: ChannelHandlerContext) {
        if deadline <= now {
            context.close(promise: nil)
            return
        }
        if let parking = self.parking {
            // When the idle period began, as the current idle timeout says (a changed timeout moves it a little).
            let due = deadline - self.idleTimeout() + self.parkingDelay
            if now < due {
                self.arm(deadline: min(due, deadline), context: context)
                return
            }
            // Parked, the channel is closing: its inactive event disarms the timer.
            if self.isParkable && parking.park(context.channel, until: deadline) { return }
        }
        self.arm(deadline: deadline, context: context)
    }

    /// Nothing of the connection lives in its channel but the socket: no exchange, no bytes held either
    /// way, no hand-off or close under way.
    private var isParkable: Bool {
        self.isIdle && !self.quiescing && !self.removing && !self.refused && !self.closing
            && !self.closedAfterResponse && self.buffered == nil && self.unread.isEmpty && self.heldHead == nil
            && self.pendingError == nil
    }

    private func disarm() {
        self.timer.cancel()
        self.headDeadline = nil
        self.idleDeadline = nil
    }

    /// Counts response ends for the idle timeout.
    private func timeoutsStageWrite(_ part: HTTPServerResponsePart, fieldLines: HTTP1FieldLines? = nil,
                                    promise: EventLoopPromise<Void>?,
                                    context: ChannelHandlerContext) {
        if case .end = part {
            self.writtenResponseEnds += 1
            if self.isIdle { self.becameIdle(context: context) }
        }
        self.wireStageWrite(part, fieldLines: fieldLines, promise: promise, context: context)
    }

    // MARK: Wire stage

    /// `fieldLines`: with a head, the backend's fields as lines (``write(head:fieldLines:promise:)``).
    private func wireStageWrite(_ part: HTTPServerResponsePart, fieldLines: HTTP1FieldLines?,
                                promise: EventLoopPromise<Void>?,
                                context: ChannelHandlerContext) {
        switch part {
        case .head(let head):
            self.writeHeldHead(context: context)
            self.body.start(chunked: head.version.major == 1 && head.version.minor >= 1
                && head.headers.first(lowercased: "transfer-encoding") == "chunked")
            guard self.headBuffer != nil else {
                let bytes = context.channel.allocator.http1ResponseHead(head, fieldLines: fieldLines)
                context.write(Self.wrapOutbound(.byteBuffer(bytes)), promise: promise)
                return
            }
            self.heldHead = head
            self.heldFieldLines = fieldLines
            self.heldPromise = promise
        case .body(let data):
            if self.heldHead != nil, let heads = self.headBuffer, !self.body.isChunked,
                case .byteBuffer(let bytes) = data, bytes.readableBytes <= Self.bodyBytesWrittenWithTheHead,
                self.heldPromise == nil || promise == nil, let head = self.heldHead.take()
            {
                let both = heads.http1ResponseHead(head, fieldLines: self.heldFieldLines.take(), body: bytes)
                context.write(Self.wrapOutbound(.byteBuffer(both)), promise: promise ?? self.heldPromise.take())
                return
            }
            self.writeHeldHead(context: context)
            self.body.write(data, promise: promise, context: context)
        case .end(let trailers):
            self.writeHeldHead(context: context)
            self.body.end(trailers, promise: promise, context: context)
        }
    }


    /// A body part up to this size is copied in after its head (callgrind: a write costs NIO about 1,000
    /// instructions, a copy of 2 KiB about a tenth of that); a larger one is written as it is.
    static let bodyBytesWrittenWithTheHead = 2048

    private func writeHeldHead(context: ChannelHandlerContext) {
        guard self.heldHead != nil, let heads = self.headBuffer, let head = self.heldHead.take() else { return }
        let bytes = heads.http1ResponseHead(head, fieldLines: self.heldFieldLines.take())
        context.write(Self.wrapOutbound(.byteBuffer(bytes)), promise: self.heldPromise.take())
    }

    // MARK: Pipelining stage

    /// The request is complete but its response is not: the next request must wait.
    private var mustBuffer: Bool { !self.servedRequestOpen && self.servedResponseOpen }

    /// Passes a part of the exchange being served on (through the errors stage).
    private func serve(_ part: HTTPServerRequestPart, fieldLines: HTTP1FieldLines? = nil, summary: HTTP1HeadSummary? = nil,
                       context: ChannelHandlerContext) {
        switch part {
        case .head:
            self.servedRequestOpen = true
            self.servedResponseOpen = true
        case .body:
            break
        case .end:
            self.servedRequestOpen = false
        }
        self.errorsStageRead(part, fieldLines: fieldLines, summary: summary, context: context)
        if case .end = part, !self.servedResponseOpen {
            // The response finished first (an early response): the exchange is over now.
            self.exchangeDone(context: context)
        }
    }

    private func pipeliningStageWrite(_ part: HTTPServerResponsePart, fieldLines: HTTP1FieldLines? = nil,
                                      promise: EventLoopPromise<Void>?,
                                      context: ChannelHandlerContext) {
        if self.closedAfterResponse {
            promise?.fail(ChannelError.outputClosed)
            return
        }
        if self.quiescing, case .head(var head) = part, head.status.code >= 200 {
            // The connection closes after this response: say so, so the client does not send another
            // request on it (a reload or drain, as nginx does for its old workers).
            head.headers.replaceOrAdd(name: "connection", value: "close")
            self.timeoutsStageWrite(.head(head), fieldLines: fieldLines, promise: promise, context: context)
            return
        }
        guard case .end = part else {
            self.timeoutsStageWrite(part, fieldLines: fieldLines, promise: promise, context: context)
            return
        }
        self.servedResponseOpen = false
        if self.servedRequestOpen || !self.quiescing {
            self.timeoutsStageWrite(part, promise: promise, context: context)
        } else {
            self.closedAfterResponse = true
            let written = context.eventLoop.makePromise(of: Void.self)
            self.timeoutsStageWrite(part, promise: written, context: context)
            written.futureResult.assumeIsolated().whenComplete { result in
                context.close(promise: nil)
                promise?.completeWith(result)
            }
            return
        }
        if !self.servedRequestOpen {
            self.exchangeDone(context: context)
        }
    }

    /// Quiescing with no exchange open. A keep-alive connection idle between requests closes at once, as
    /// nginx and HAProxy close theirs: a client that reuses a connection retries a request the server closed
    /// on (RFC 9112 section 9.3.1). A connection that has not sent a request yet, or whose next head is
    /// arriving, is different: the client is waiting for an answer to a request it has sent or is sending,
    /// and a client does not retry on a fresh connection (closing with its bytes unread would even reset
    /// it). So that request is served, with `Connection: close`, and the connection closes after it; it
    /// gets the header timeout to arrive, as it would without the drain, and no more.
    private func quiesceBetweenExchanges(context: ChannelHandlerContext) {
        guard self.headDeadline != nil || self.arrivedHeads == 0 else {
            context.close(promise: nil)
            return
        }
        self.awaitingLastRequest = true
        if let idleDeadline = self.idleDeadline {
            let deadline = min(idleDeadline, context.eventLoop.now + self.headerTimeout)
            self.idleDeadline = deadline
            self.arm(deadline: deadline, context: context)
        }
    }

    private func exchangeDone(context: ChannelHandlerContext) {
        if self.quiescing {
            // The exchange ended with its request (its response came first): the connection closes, and
            // what the client sent behind the request is neither decoded nor answered.
            self.closedAfterResponse = true
            context.close(promise: nil)
            return
        }
        var delivered = false
        while !self.mustBuffer, let next = self.buffered?.popFirst() {
            if self.buffered?.isEmpty == true {
                self.buffered = nil
            }
            self.serve(next, context: context)
            delivered = true
        }
        if delivered {
            // Close the batch, as the socket's read would have: the application defers flushes to
            // channelReadComplete.
            context.fireChannelReadComplete()
        }
        if self.readPending && self.buffered == nil {
            self.readPending = false
            context.read()
        }
    }

    // MARK: Errors stage

    private func errorsStageRead(_ part: HTTPServerRequestPart, fieldLines: HTTP1FieldLines?, summary: HTTP1HeadSummary?,
                                 context: ChannelHandlerContext) {
        if self.closing { return }
        switch part {
        case .head(let head):
            self.errorsResponseOpen = true
            self.errorsRequestOpen = true
            self.responseStarted = false
            self.answeredEarly = false
            self.requestVersion = head.version
        case .body:
            break
        case .end:
            self.errorsRequestOpen = false
        }
        if let fieldLines, let summary, case .head(let head) = part {
            if let application = self.application {
                application.requestHeadArrived(head, summary: summary, fieldLines: fieldLines)
            } else {
                context.fireChannelRead(Self.wrapInbound(.head(head.withFields(of: fieldLines))))
            }
        } else if let application = self.application {
            application.requestPartArrived(part)
        } else {
            context.fireChannelRead(Self.wrapInbound(part))
        }
    }

    /// The first outbound stage.
    private func errorsStageWrite(_ part: HTTPServerResponsePart, fieldLines: HTTP1FieldLines? = nil,
                                  promise: EventLoopPromise<Void>?,
                                  context: ChannelHandlerContext) {
        switch part {
        case .head(let head) where !(100..<200).contains(head.status.code) || head.status.code == 101:
            self.responseStarted = true
            self.pipeliningStageWrite(part, fieldLines: fieldLines, promise: promise, context: context)
        case .head, .body:
            self.pipeliningStageWrite(part, fieldLines: fieldLines, promise: promise, context: context)
        case .end:
            self.errorsResponseOpen = false
            self.responseStarted = false
            self.answeredEarly = self.errorsRequestOpen
            if let pending = self.pendingError {
                self.pendingError = nil
                self.pipeliningStageWrite(part, promise: promise, context: context)
                self.respond(to: pending, version: .http1_1, context: context)
            } else if self.closeAfterResponse {
                self.closing = true
                let written = context.eventLoop.makePromise(of: Void.self)
                self.pipeliningStageWrite(part, promise: written, context: context)
                context.flush()
                written.futureResult.assumeIsolated().whenComplete { result in
                    context.closeLingering(after: Self.lingerTime)
                    promise?.completeWith(result)
                }
            } else {
                self.pipeliningStageWrite(part, promise: promise, context: context)
            }
        }
    }

    private func handle(_ edgeError: HTTPEdgeError, context: ChannelHandlerContext) {
        if self.closing { return }
        if self.errorsResponseOpen && !self.errorsRequestOpen {
            self.pendingError = edgeError
            return
        }
        if self.errorsResponseOpen && self.responseStarted {
            self.closeAfterResponse = true
            return
        }
        if self.errorsRequestOpen && self.answeredEarly {
            self.closing = true
            context.fireErrorCaught(edgeError)
            context.closeLingering(after: Self.lingerTime)
            return
        }
        // Let the exchange be abandoned first; then answer and close.
        context.fireErrorCaught(edgeError)
        self.respond(to: edgeError, version: self.errorsResponseOpen ? self.requestVersion : .http1_1, context: context)
    }

    private func respond(to edgeError: HTTPEdgeError, version: HTTPVersion, context: ChannelHandlerContext) {
        self.closing = true
        let status = edgeError.status
        let head = HTTPServerResponsePart.head(EdgeResponse.head(for: status, version: version, close: true))
        self.pipeliningStageWrite(head, promise: nil, context: context)
        var text = context.channel.allocator.buffer(capacity: 32)
        text.writeString(EdgeResponse.body(for: status))
        let body = HTTPServerResponsePart.body(.byteBuffer(text))
        self.pipeliningStageWrite(body, promise: nil, context: context)
        let written = context.eventLoop.makePromise(of: Void.self)
        self.pipeliningStageWrite(.end(nil), promise: written, context: context)
        context.flush()
        written.futureResult.assumeIsolated().whenComplete { _ in
            context.closeLingering(after: Self.lingerTime)
        }
    }
}

@available(*, unavailable)
extension HTTP1ConnectionHandler: Sendable {}
