import NIOCore
import NIOHTTP1

/// Serializes pipelined requests: one exchange at a time, responses in request order.
///
/// Like NIO's `HTTPServerPipelineHandler`, but it allows a response to finish before its request
/// (a backend may answer early, e.g. 413 during an upload) without tripping debug assertions, and it
/// handles `ChannelShouldQuiesceEvent` for graceful shutdown and drains: an idle connection closes at
/// once, a busy one right after its current response, which says `Connection: close` if its head was
/// not sent yet. While a finished request waits for its response, further
/// requests are buffered (at most what one read brings) and reads are held once anything is buffered,
/// so pipelining cannot grow memory.
///
/// The read after a finished request is let through even though its bytes would have to wait: a client
/// that does not pipeline sends nothing until the response, and holding that read would make the
/// channel drop and re-add its read interest (two `epoll_ctl` calls) on every request.
public final class HTTPPipeliningHandler: ChannelDuplexHandler, RemovableChannelHandler {
    public typealias InboundIn = HTTPServerRequestPart
    public typealias InboundOut = HTTPServerRequestPart
    public typealias OutboundIn = HTTPServerResponsePart
    public typealias OutboundOut = HTTPServerResponsePart

    private var requestOpen = false
    private var responseOpen = false
    /// Parts waiting for the current exchange; nil when none (never empty). Allocated when a part first
    /// has to wait and dropped once drained, so an idle keep-alive connection holds no queue storage
    /// (a `CircularBuffer()` per connection reserved 16 parts, about 400 bytes).
    private var buffered: CircularBuffer<HTTPServerRequestPart>?
    private var readPending = false
    private var quiescing = false
    /// The response that said `Connection: close` has ended and the connection is closing: nothing more
    /// is written (an edge error for a request pipelined behind it, say), or the client would read a
    /// response after the one that told it the connection ends.
    private var closedAfterResponse = false

    public init() {}

    /// The request is complete but its response is not: the next request must wait.
    private var mustBuffer: Bool { !self.requestOpen && self.responseOpen }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = Self.unwrapInboundIn(data)
        if self.quiescing && !self.requestOpen {
            return  // no new exchanges once quiescing
        }
        if self.mustBuffer || self.buffered != nil {
            if self.buffered == nil {
                self.buffered = CircularBuffer(initialCapacity: 4)
            }
            self.buffered?.append(part)
            return
        }
        self.deliver(part, context: context)
    }

    public func read(context: ChannelHandlerContext) {
        if self.buffered != nil {
            self.readPending = true
        } else {
            context.read()
        }
    }

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if self.closedAfterResponse {
            promise?.fail(ChannelError.outputClosed)
            return
        }
        let part = Self.unwrapOutboundIn(data)
        if self.quiescing, case .head(var head) = part, head.status.code >= 200 {
            // The connection closes after this response: say so, so the client does not send another
            // request on it (a reload or drain, as nginx does for its old workers).
            head.headers.replaceOrAdd(name: "connection", value: "close")
            context.write(Self.wrapOutboundOut(.head(head)), promise: promise)
            return
        }
        guard case .end = part else {
            context.write(data, promise: promise)
            return
        }
        self.responseOpen = false
        if self.requestOpen || !self.quiescing {
            context.write(data, promise: promise)
        } else {
            self.closedAfterResponse = true
            let written = context.eventLoop.makePromise(of: Void.self)
            context.write(data, promise: written)
            written.futureResult.assumeIsolated().whenComplete { result in
                context.close(promise: nil)
                promise?.completeWith(result)
            }
            return
        }
        if !self.requestOpen {
            self.exchangeDone(context: context)
        }
    }

    public func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard event is ChannelShouldQuiesceEvent else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        self.quiescing = true
        self.buffered = nil
        if !self.requestOpen && !self.responseOpen {
            context.close(promise: nil)
        }
    }

    private func deliver(_ part: HTTPServerRequestPart, context: ChannelHandlerContext) {
        switch part {
        case .head:
            self.requestOpen = true
            self.responseOpen = true
        case .body:
            break
        case .end:
            self.requestOpen = false
        }
        context.fireChannelRead(Self.wrapInboundOut(part))
        if case .end = part, !self.responseOpen {
            // The response finished first (an early response): the exchange is over now.
            self.exchangeDone(context: context)
        }
    }

    private func exchangeDone(context: ChannelHandlerContext) {
        if self.quiescing {
            context.close(promise: nil)
            return
        }
        var delivered = false
        while !self.mustBuffer, let next = self.buffered?.popFirst() {
            if self.buffered?.isEmpty == true {
                self.buffered = nil
            }
            self.deliver(next, context: context)
            delivered = true
        }
        if delivered {
            // Close the batch, as the socket's read would have: handlers after this one defer
            // flushes to channelReadComplete.
            context.fireChannelReadComplete()
        }
        if self.readPending && self.buffered == nil {
            self.readPending = false
            context.read()
        }
    }
}

@available(*, unavailable)
extension HTTPPipeliningHandler: Sendable {}
