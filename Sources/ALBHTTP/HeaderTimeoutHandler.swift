import NIOCore
import NIOHTTP1

/// Refuses slow-header clients: the head of a request must be complete within `timeout` of the
/// request's first byte (signalled by ``HTTPRequestHeadStartedEvent`` from the decoder). On expiry it
/// fires ``HTTPEdgeError/headerTimeout`` so ``EdgeErrorHandler`` answers 408 and closes.
///
/// Separate from ``IdleTimeoutHandler``: this one runs only while a head is arriving. It sits right
/// after the decoder, so a pipelined request that waits behind a slow response is not timed.
///
/// One timer per connection, not one per request: a head that starts records its deadline and arms
/// the timer only if it would fire too late; a complete head clears the deadline and leaves the timer
/// be. When it fires it refuses, re-arms for a later head's deadline, or (no head arriving) stops.
public final class HeaderTimeoutHandler: ChannelInboundHandler {
    public typealias InboundIn = HTTPServerRequestPart
    public typealias InboundOut = HTTPServerRequestPart

    private let timeout: TimeAmount
    private var timer = LazyDeadlineTimer()
    /// When the head now arriving times out; nil while no head is arriving.
    private var headDeadline: NIODeadline?

    public init(timeout: TimeAmount) {
        self.timeout = timeout
    }

    public func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is HTTPRequestHeadStartedEvent {
            let deadline = context.eventLoop.now + self.timeout
            self.headDeadline = deadline
            self.arm(deadline: deadline, context: context)
        }
        context.fireUserInboundEventTriggered(event)
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head = Self.unwrapInboundIn(data) {
            self.headDeadline = nil
        }
        context.fireChannelRead(data)
    }

    public func channelInactive(context: ChannelHandlerContext) {
        self.disarm()
        context.fireChannelInactive()
    }

    public func handlerRemoved(context: ChannelHandlerContext) {
        self.disarm()
    }

    private func arm(deadline: NIODeadline, context: ChannelHandlerContext) {
        self.timer.arm(at: deadline, on: context.eventLoop, handler: Expiry(handler: self, context: context))
    }

    /// What the header timer calls back: the handler and its context (both of this event loop).
    private struct Expiry: NIOScheduledCallbackHandler {
        let handler: HeaderTimeoutHandler
        let context: ChannelHandlerContext

        func handleScheduledCallback(eventLoop: some EventLoop) {
            self.handler.timerFired(context: self.context)
        }
    }

    private func timerFired(context: ChannelHandlerContext) {
        self.timer.fired()
        guard let deadline = self.headDeadline else { return }
        if deadline > context.eventLoop.now {
            self.arm(deadline: deadline, context: context)
        } else {
            self.headDeadline = nil
            context.fireErrorCaught(HTTPEdgeError.headerTimeout)
        }
    }

    private func disarm() {
        self.timer.cancel()
        self.headDeadline = nil
    }
}

@available(*, unavailable)
extension HeaderTimeoutHandler: Sendable {}
