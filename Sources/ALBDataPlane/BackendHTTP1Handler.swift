import ALBHTTP
import NIOCore
import NIOHTTP1

/// A backend connection's HTTP/1: the request bytes written and the responses read. One handler where
/// NIO's client pipeline has three (`HTTPRequestEncoder`, `NIOHTTPRequestHeadersValidator` and the
/// response decoder in a `ByteToMessageHandler`), because each request part and flush went through all
/// three: a hop and a `NIOAny` cast each, on every request.
///
/// Writing:
/// - A head or trailers that may not go on the wire (``HTTPRequestHead/isValidToSend``: NIO's validator's
///   rules) fail their write with `HTTPParserError.invalidHeaderToken`, which is also passed on as an error
///   (the backend handler closes the connection): nothing of that request reaches the backend.
/// - The head is framed as NIO's encoder frames it (``HTTPRequestHead/framedForHTTP1()``) and written in one
///   buffer; body parts and the end follow, chunked when the head says so (``HTTP1BodyWriter``).
///
/// Reading, with NIO's `HTTPResponseDecoder` (llhttp), which is shown the request heads written (a
/// response to `HEAD` has no body):
/// - The end of the input (the connection closing) ends a response delimited by the close.
/// - After the decoder refuses the input, the error is passed on once and what follows is dropped (the
///   backend handler closes the connection).
/// - Removed after a `101` (a WebSocket tunnel), it passes on the bytes the backend sent after the head,
///   on the next event-loop turn, since the removal is asked for while a response is being decoded; what
///   the tunnel writes meanwhile passes through untouched.
/// - A request head written while a response is being decoded (the connection went back to its pool and
///   was taken at once) reaches the decoder after that decode, not in the middle of it.
final class BackendHTTP1Codec: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = HTTPClientResponsePart
    typealias OutboundIn = HTTPClientRequestPart
    typealias OutboundOut = IOData

    private let decoder = HTTPResponseDecoder(leftOverBytesStrategy: .forwardBytes)
    private var unread = PendingInput()
    private var decoding = false
    private var refused = false
    private var removing = false
    /// The input ended while a decode ran: it is fed to the decoder once that decode is over.
    private var inputEnded = false
    private var endFed = false
    /// Request heads written while a decode ran, for the decoder once it is over.
    private var writtenWhileDecoding: [HTTPClientRequestPart] = []
    /// The framing of the request body being written.
    private var body = HTTP1BodyWriter()

    func handlerAdded(context: ChannelHandlerContext) {
        self.decoder.decoderAdded(context: context)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.decoder.decoderRemoved(context: context)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if self.refused { return }
        self.unread.append(Self.unwrapInboundIn(data))
        self.decodeUnread(context: context)
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.inputEnded = true
        self.feedEndOfInput(context: context)
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .some(.inputClosed) = event as? ChannelEvent {
            self.inputEnded = true
            self.feedEndOfInput(context: context)
        }
        context.fireUserInboundEventTriggered(event)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if self.removing {
            // A tunnel's bytes, written before this handler is out of the pipeline.
            context.write(data, promise: promise)
            return
        }
        switch Self.unwrapOutboundIn(data) {
        case .head(let head):
            guard head.isValidToSend else {
                self.refuseToSend(promise: promise, context: context)
                return
            }
            let (framed, chunked) = head.framedForHTTP1()
            self.showDecoder(.head(framed))
            self.body.start(chunked: chunked)
            context.write(Self.wrapOutboundOut(.byteBuffer(context.channel.allocator.http1RequestHead(framed))),
                          promise: promise)
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

    private func refuseToSend(promise: EventLoopPromise<Void>?, context: ChannelHandlerContext) {
        promise?.fail(HTTPParserError.invalidHeaderToken)
        context.fireErrorCaught(HTTPParserError.invalidHeaderToken)
    }

    /// The decoder pairs each response with the request head it answers.
    private func showDecoder(_ head: HTTPClientRequestPart) {
        if self.decoding {
            self.writtenWhileDecoding.append(head)
        } else {
            self.decoder.write(data: head)
        }
    }

    func removeHandler(context: ChannelHandlerContext, removalToken: ChannelHandlerContext.RemovalToken) {
        self.removing = true
        context.eventLoop.assumeIsolated().execute {
            self.handOff(context: context)
            context.leavePipeline(removalToken: removalToken)
        }
    }

    private func decodeUnread(context: ChannelHandlerContext) {
        guard !self.decoding else { return }
        self.decoding = true
        while !self.removing && !self.refused, var buffer = self.unread.take() {
            do {
                _ = try self.decoder.decode(context: context, buffer: &buffer)
            } catch {
                self.refuse(error, context: context)
                break
            }
            self.showWrittenParts()
            let arrivedMeanwhile = self.unread.putBack(&buffer)
            if !arrivedMeanwhile { break }
        }
        self.decoding = false
        self.showWrittenParts()
        if self.inputEnded {
            self.feedEndOfInput(context: context)
        }
    }

    private func showWrittenParts() {
        guard !self.writtenWhileDecoding.isEmpty else { return }
        let parts = self.writtenWhileDecoding
        self.writtenWhileDecoding.removeAll()
        for part in parts {
            self.decoder.write(data: part)
        }
    }

    /// Lets the decoder end a response delimited by the connection's close.
    private func feedEndOfInput(context: ChannelHandlerContext) {
        guard !self.decoding && !self.removing && !self.refused && !self.endFed else { return }
        self.endFed = true
        var buffer = self.unread.take() ?? context.channel.allocator.buffer(capacity: 0)
        do {
            _ = try self.decoder.decodeLast(context: context, buffer: &buffer, seenEOF: true)
        } catch {
            self.refuse(error, context: context)
        }
    }

    /// The decoder's last word before leaving the pipeline: after a `101` it passes the bytes on.
    private func handOff(context: ChannelHandlerContext) {
        guard !self.refused && !self.endFed, var buffer = self.unread.take() else { return }
        do {
            _ = try self.decoder.decodeLast(context: context, buffer: &buffer, seenEOF: false)
        } catch {
            self.refuse(error, context: context)
        }
    }

    private func refuse(_ error: Error, context: ChannelHandlerContext) {
        self.refused = true
        self.unread.removeAll()
        context.fireErrorCaught(error)
    }
}

@available(*, unavailable)
extension BackendHTTP1Codec: Sendable {}
