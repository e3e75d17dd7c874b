import NIOCore

/// Gathers the flushes one event-loop tick asks of a connection into one, made after the tick's I/O.
///
/// An HTTP/2 connection's streams are answered from different backend connections, each of which is read
/// in its own I/O event, and each answer flushes the client connection: ten streams answered in one tick
/// were ten TLS records and ten `write` calls, each one a trip through the kernel's loopback path (about a
/// third of the CPU of an HTTP/2 request in a profile). NIO runs tasks queued with `execute` after the
/// tick's I/O events, so the first flush of a tick queues one and the rest ride along: the answers of one
/// tick leave in one write. Nothing waits for a timer; a lone answer leaves in the same tick as before.
///
/// A close arriving while a flush is deferred flushes first, so that what was written before it (a
/// GOAWAY, the last DATA frame) is not failed as a pending write of a closed channel.
public final class TickFlushCoalescer: ChannelOutboundHandler, RemovableChannelHandler {
    public typealias OutboundIn = NIOAny
    public typealias OutboundOut = NIOAny

    private var flushQueued = false

    public init() {}

    public func flush(context: ChannelHandlerContext) {
        if self.flushQueued {
            return
        }
        self.flushQueued = true
        let loopBoundContext = NIOLoopBound(context, eventLoop: context.eventLoop)
        context.eventLoop.assumeIsolated().execute {
            self.flushNow(context: loopBoundContext.value)
        }
    }

    public func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        self.flushNow(context: context)
        context.close(mode: mode, promise: promise)
    }

    public func handlerRemoved(context: ChannelHandlerContext) {
        self.flushNow(context: context)
    }

    private func flushNow(context: ChannelHandlerContext) {
        guard self.flushQueued else {
            return
        }
        self.flushQueued = false
        context.flush()
    }
}

@available(*, unavailable)
extension TickFlushCoalescer: Sendable {}
