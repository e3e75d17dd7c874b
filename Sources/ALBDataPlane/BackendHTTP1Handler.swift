import ALBHTTP
import NIOCore
import NIOHTTP1

/// A backend HTTP/1 connection in one handler: the request bytes written, the responses read with
/// ``StrictHTTPResponseDecoder`` and handed to the delegate by direct call. Where NIO's client pipeline has
/// four handlers (`HTTPRequestEncoder`, `NIOHTTPRequestHeadersValidator`, the llhttp response decoder in a
/// `ByteToMessageHandler`, and ours after them), each request part, response part and flush going through
/// them: a hop and a `NIOAny` cast each, on every request.
///
/// Writing:
/// - A head or trailers that may not go on the wire (``HTTPRequestHead/isValidToSend``: a target of visible
///   ASCII, a token for a method, NIO's validator's rules for fields) fail their write with
///   `HTTPParserError.invalidHeaderToken` and close the connection: nothing of that request reaches the backend,
///   and the exchange hears the close (a 502), also when it comes before NIO's `channelActive` (``BackendHandler``).
/// - The head is framed as NIO's encoder frames it (``HTTPRequestHead/framedForHTTP1()``) and written in one
///   buffer; body parts and the end follow, chunked when the head says so (``HTTP1BodyWriter``).
///
/// Reading:
/// - The decoder is told of each request head written (a response to `HEAD` has no body). A head written
///   while a response is being decoded (the connection went back to its pool and was taken at once, from
///   inside the delegate's call) reaches the decoder before its next step, not in the middle of one.
/// - The end of the input (the connection closing) ends a response delimited by the close.
/// - When the decoder refuses the input (a malformed or unsolicited response), the connection is closed and
///   what follows is dropped: the exchange hears `backendClosed` (a 502 before a response head).
/// - After a `101` (``leaveHTTP(joining:)``: a WebSocket tunnel), the handler leaves the pipeline on the next
///   event-loop turn, since that is asked for while a response is being decoded, and passes on the bytes the
///   backend sent after the head; what the tunnel writes meanwhile passes through untouched.
final class BackendHTTP1Handler: BackendHandler, ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    /// Parts written through the pipeline are encoded as those the exchange hands to ``write(_:)``.
    typealias OutboundIn = HTTPClientRequestPart
    typealias OutboundOut = IOData

    private var decoder: StrictHTTPResponseDecoder
    private var unread = PendingInput()
    /// A decode is running: a read arriving meanwhile (re-entrantly) only queues its bytes.
    private var decoding = false
    /// The decoder refused the input; nothing more is decoded.
    private var refused = false
    /// Leaving the pipeline after a `101`: reads, writes and events pass through, held bytes go to the tunnel.
    private var removing = false
    /// The input ended while a decode ran: the decoder hears of it once that decode is over.
    private var inputEnded = false
    private var endFed = false
    /// Request heads written while a decode ran, for the decoder before its next step, each with whether its
    /// response's field lines are relayed.
    private var writtenWhileDecoding: [(head: HTTPRequestHead, relayingFieldLines: Bool)] = []
    /// The framing of the request body being written.
    private var body = HTTP1BodyWriter()
    /// The event loop's memory for request heads; nil: each head gets a buffer of its own.
    private let headBuffer: HeadEncodingBuffer?

    override var deliversCheckedFields: Bool { true }

    init(decoder: StrictHTTPResponseDecoder = StrictHTTPResponseDecoder(), headBuffer: HeadEncodingBuffer? = nil) {
        self.decoder = decoder
        self.headBuffer = headBuffer
    }

    // MARK: - Reading

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if self.refused { return }
        self.unread.append(self.unwrapInboundIn(data))
        self.decodeUnread(context: context)
    }

    override func channelInactive(context: ChannelHandlerContext) {
        if self.removing {
            // A backend that sends its `101`, a frame and its close at once: the frame reaches the tunnel's end
            // before the close does (it would relay nothing after it).
            self.passOnHeldBytes(context: context)
        } else {
            self.inputEnded = true
            self.feedEndOfInput(context: context)
        }
        super.channelInactive(context: context)
        // To the tunnel's end, when one has joined.
        context.fireChannelInactive()
    }

    override func channelReadComplete(context: ChannelHandlerContext) {
        guard !self.removing else {
            context.fireChannelReadComplete()
            return
        }
        super.channelReadComplete(context: context)
    }

    override func channelWritabilityChanged(context: ChannelHandlerContext) {
        guard !self.removing else {
            // The tunnel's end waits for it to resume reading the other side.
            context.fireChannelWritabilityChanged()
            return
        }
        super.channelWritabilityChanged(context: context)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .some(.inputClosed) = event as? ChannelEvent {
            if self.removing {
                self.passOnHeldBytes(context: context)
            } else {
                self.inputEnded = true
                self.feedEndOfInput(context: context)
            }
        }
        context.fireUserInboundEventTriggered(event)
    }

    private func decodeUnread(context: ChannelHandlerContext) {
        guard !self.decoding else { return }
        self.decoding = true
        let output = DecodedResponses(handler: self, context: context)
        while !self.removing && !self.refused, var buffer = self.unread.take() {
            self.showDecoderWrittenHeads()
            let progress: StrictHTTPResponseDecoder.Progress
            do {
                progress = try self.decoder.decode(&buffer, into: output)
            } catch {
                self.refuse(context: context)
                break
            }
            let arrivedMeanwhile = self.unread.putBack(&buffer)
            if progress == .needMoreData && !arrivedMeanwhile { break }
        }
        self.decoding = false
        self.showDecoderWrittenHeads()
        if self.inputEnded {
            self.feedEndOfInput(context: context)
        }
    }

    /// The decoder's output: the delegate, by direct call.
    private struct DecodedResponses: HTTPResponseDecoderOutput {
        let handler: BackendHTTP1Handler
        let context: ChannelHandlerContext

        func received(_ part: consuming HTTPClientResponsePart) {
            self.handler.deliver(consume part, context: self.context)
        }

        func received(head: consuming HTTPResponseHead, summary: HTTP1HeadSummary) {
            self.handler.deliver(.head(consume head), summary: summary, context: self.context)
        }

        func received(head: consuming HTTPResponseHead, summary: HTTP1HeadSummary, fieldLines: HTTP1FieldLines) {
            self.handler.deliver(head: head, summary: summary, fieldLines: fieldLines, context: self.context)
        }
    }

    private func showDecoderWrittenHeads() {
        guard !self.writtenWhileDecoding.isEmpty else { return }
        for (head, relaying) in self.writtenWhileDecoding {
            self.decoder.expectResponse(to: head, relayingFieldLines: relaying)
        }
        self.writtenWhileDecoding.removeAll(keepingCapacity: true)
    }

    /// Lets the decoder end a response delimited by the connection's close.
    private func feedEndOfInput(context: ChannelHandlerContext) {
        guard !self.decoding && !self.removing && !self.refused && !self.endFed else { return }
        self.endFed = true
        do {
            try self.decoder.decodeEndOfInput(into: DecodedResponses(handler: self, context: context))
        } catch {
            self.refuse(context: context)
        }
    }

    private func refuse(context: ChannelHandlerContext) {
        self.refused = true
        self.unread.removeAll()
        context.close(promise: nil)
    }

    // MARK: - Writing

    override func write(_ part: HTTPClientRequestPart) {
        guard let context = self.context else { return }
        self.send(part, promise: nil, context: context)
    }

    override func write(_ head: HTTPRequestHead, relayingResponseFieldLines: Bool) {
        guard let context = self.context else { return }
        self.send(.head(head), relayingResponseFieldLines: relayingResponseFieldLines, promise: nil, context: context)
    }

    override func write(_ head: HTTPRequestHead, fieldLines: HTTP1FieldLines, leavingOut leftOut: UInt64, chunked: Bool,
                        relayingResponseFieldLines: Bool) {
        guard let context = self.context else { return }
        // Framed by the proxy already (the lines' `Content-Length`, or its own `Transfer-Encoding`); only its own
        // fields are checked as they are encoded, the lines were as they were read.
        guard head.hasValidRequestLineToSend,
            let bytes = self.headBuffer.map({ $0.http1RequestHead(head, fieldLines: fieldLines, leavingOut: leftOut) })
                ?? context.channel.allocator.http1RequestHead(head, fieldLines: fieldLines, leavingOut: leftOut)
        else {
            self.refuseToSend(promise: nil, context: context)
            return
        }
        self.sendHead(bytes, of: head, chunked: chunked, relayingResponseFieldLines: relayingResponseFieldLines,
                      promise: nil, context: context)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if self.removing {
            // A tunnel's bytes, written before this handler is out of the pipeline.
            context.write(data, promise: promise)
            return
        }
        self.send(self.unwrapOutboundIn(data), promise: promise, context: context)
    }

    private func send(_ part: HTTPClientRequestPart, relayingResponseFieldLines: Bool = false,
                      promise: EventLoopPromise<Void>?, context: ChannelHandlerContext) {
        switch part {
        case .head(let head):
            // The fields are checked as they are encoded.
            let (framed, chunked) = head.framedForHTTP1()
            guard framed.hasValidRequestLineToSend,
                let bytes = self.headBuffer.map({ $0.http1RequestHead(framed) })
                    ?? context.channel.allocator.http1RequestHead(framed)
            else {
                self.refuseToSend(promise: promise, context: context)
                return
            }
            self.sendHead(bytes, of: framed, chunked: chunked, relayingResponseFieldLines: relayingResponseFieldLines,
                          promise: promise, context: context)
        case .body(let part):
            self.body.write(part, promise: promise, context: context)
        case .end(let trailers):
            if let trailers, !trailers.areValidToSend {
                self.refuseToSend(promise: promise, context: context)
                return
            }
            self.body.end(trailers, promise: promise, context: context)
        }
    }

    /// Writes a request head's `bytes`; its response is the next one expected.
    private func sendHead(_ bytes: ByteBuffer, of head: HTTPRequestHead, chunked: Bool, relayingResponseFieldLines: Bool,
                          promise: EventLoopPromise<Void>?, context: ChannelHandlerContext) {
        if self.decoding {
            self.writtenWhileDecoding.append((head, relayingResponseFieldLines))
        } else {
            self.decoder.expectResponse(to: head, relayingFieldLines: relayingResponseFieldLines)
        }
        self.body.start(chunked: chunked)
        context.write(Self.wrapOutbound(.byteBuffer(bytes)), promise: promise)
    }

    private func refuseToSend(promise: EventLoopPromise<Void>?, context: ChannelHandlerContext) {
        promise?.fail(HTTPParserError.invalidHeaderToken)
        context.close(promise: nil)
    }

    // MARK: - Where HTTP ends

    /// The connection becomes `end` of a tunnel: this handler leaves (on the next turn, see
    /// ``removeHandler(context:removalToken:)``) and the tunnel's end takes its place, then flushes what it
    /// was passed.
    override func leaveHTTP(joining end: TunnelEnd) throws {
        guard let pipeline = self.context?.pipeline.syncOperations else { throw ChannelError.ioOnClosedChannel }
        self.delegate = nil
        // Removal first: from now on reads pass through, so the read the tunnel's end asks for when added is
        // not held for an exchange that is over.
        let left = pipeline.eventLoop.makePromise(of: Void.self)
        pipeline.removeHandler(self, promise: left)
        try pipeline.addHandler(end)
        // The held bytes come with no read-complete after them: flush them once this handler is out.
        left.futureResult.assumeIsolated().whenComplete { _ in end.flushRelayed() }
    }

    override func removeHandler(context: ChannelHandlerContext, removalToken: ChannelHandlerContext.RemovalToken) {
        self.removing = true
        self.releaseReads()
        context.eventLoop.assumeIsolated().execute {
            self.passOnHeldBytes(context: context)
            context.leavePipeline(removalToken: removalToken)
        }
    }

    /// The bytes the backend sent after its `101`, to the tunnel's end that took this handler's place; once.
    private func passOnHeldBytes(context: ChannelHandlerContext) {
        if !self.refused, self.decoder.hasHandedOff, let rest = self.unread.take(), rest.readableBytes > 0 {
            context.fireChannelRead(NIOAny(rest))
        }
    }
}
