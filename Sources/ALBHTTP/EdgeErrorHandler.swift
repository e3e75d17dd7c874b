import NIOCore
import NIOHTTP1

/// Turns ``HTTPEdgeError``s (from the decoder and the header timeout) into a short error response
/// with `Connection: close`, then closes.
///
/// - The error concerns the current request (its body was still arriving) and no response has
///   started: the error is passed on first, so the proxy abandons the exchange, then answered.
/// - The current request is complete and its response pending (the error is about a later,
///   pipelined request): the error response follows the current response, then the connection closes.
/// - A response for the broken request is already on the wire: it cannot be interrupted cleanly, so
///   the connection closes right after it.
/// - The broken request already has its whole response (a backend answered early, say 413, while the
///   body was still arriving): the client must not get a second final response, so the connection
///   just closes.
///
/// Closing is lingering (as nginx's `lingering_close`): the output is shut down after the response
/// (the client reads it, then EOF), and whatever the client still sends is read and dropped until it
/// closes, for at most ``lingerTime``. Closing at once with request bytes still unread would make the
/// kernel send a TCP reset, which can destroy the response before the client reads it (a refused head
/// is often longer than the first read).
///
/// Other errors pass through untouched.
public final class EdgeErrorHandler: ChannelDuplexHandler, RemovableChannelHandler {
    public typealias InboundIn = HTTPServerRequestPart
    public typealias InboundOut = HTTPServerRequestPart
    public typealias OutboundIn = HTTPServerResponsePart
    public typealias OutboundOut = HTTPServerResponsePart

    private var responseOpen = false
    private var requestOpen = false
    private var pendingError: HTTPEdgeError?
    private var responseStarted = false
    /// The request still arriving already has its complete response (an early response).
    private var answeredEarly = false
    private var requestVersion = HTTPVersion.http1_1
    private var closeAfterResponse = false
    private var closing = false

    /// How long a connection closing after an error response keeps draining the client's input.
    static let lingerTime = TimeAmount.seconds(2)

    public init() {}

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if self.closing { return }
        switch Self.unwrapInboundIn(data) {
        case .head(let head):
            self.responseOpen = true
            self.requestOpen = true
            self.responseStarted = false
            self.answeredEarly = false
            self.requestVersion = head.version
        case .body:
            break
        case .end:
            self.requestOpen = false
        }
        context.fireChannelRead(data)
    }

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch Self.unwrapOutboundIn(data) {
        case .head(let head) where !(100..<200).contains(head.status.code) || head.status.code == 101:
            self.responseStarted = true
            context.write(data, promise: promise)
        case .head, .body:
            context.write(data, promise: promise)
        case .end:
            self.responseOpen = false
            self.responseStarted = false
            self.answeredEarly = self.requestOpen
            if let pending = self.pendingError {
                self.pendingError = nil
                context.write(data, promise: promise)
                self.respond(to: pending, version: .http1_1, context: context)
            } else if self.closeAfterResponse {
                self.closing = true
                let written = context.eventLoop.makePromise(of: Void.self)
                context.writeAndFlush(data, promise: written)
                written.futureResult.assumeIsolated().whenComplete { result in
                    context.closeLingering(after: Self.lingerTime)
                    promise?.completeWith(result)
                }
            } else {
                context.write(data, promise: promise)
            }
        }
    }

    public func errorCaught(context: ChannelHandlerContext, error: Error) {
        guard let edgeError = error as? HTTPEdgeError else {
            context.fireErrorCaught(error)
            return
        }
        if self.closing { return }
        if self.responseOpen && !self.requestOpen {
            self.pendingError = edgeError
            return
        }
        if self.responseOpen && self.responseStarted {
            self.closeAfterResponse = true
            return
        }
        if self.requestOpen && self.answeredEarly {
            self.closing = true
            context.fireErrorCaught(error)
            context.closeLingering(after: Self.lingerTime)
            return
        }
        // Let the proxy abandon the exchange first; then answer and close.
        context.fireErrorCaught(error)
        self.respond(to: edgeError, version: self.responseOpen ? self.requestVersion : .http1_1, context: context)
    }

    private func respond(to edgeError: HTTPEdgeError, version: HTTPVersion, context: ChannelHandlerContext) {
        self.closing = true
        let status = edgeError.status
        context.write(Self.wrapOutboundOut(.head(EdgeResponse.head(for: status, version: version, close: true))), promise: nil)
        var body = context.channel.allocator.buffer(capacity: 32)
        body.writeString(EdgeResponse.body(for: status))
        context.write(Self.wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        context.writeAndFlush(Self.wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in
            context.closeLingering(after: Self.lingerTime)
        }
    }
}

@available(*, unavailable)
extension EdgeErrorHandler: Sendable {}
