import NIOCore
import NIOHTTP1

/// Closes a client connection that has no request in flight for the idle timeout.
///
/// "In flight" means: a head is arriving (``HTTPRequestHeadStartedEvent`` seen), or a request or its
/// response is not finished. The timeout is asked for each time the connection goes idle, so a
/// configuration update applies to existing connections from their next idle period on.
/// It does not time requests in flight: that is the header timeout's and the proxy's job.
///
/// One timer per connection, not one per idle period: going idle records a deadline and arms the
/// timer only if it would fire too late; going busy clears the deadline and leaves the timer be.
/// When it fires it closes, re-arms for a later deadline, or (busy) stops. Keep-alive traffic then
/// schedules a task about once per timeout instead of scheduling and cancelling one per request.
public final class IdleTimeoutHandler: ChannelDuplexHandler {
    public typealias InboundIn = HTTPServerRequestPart
    public typealias InboundOut = HTTPServerRequestPart
    public typealias OutboundIn = HTTPServerResponsePart
    public typealias OutboundOut = HTTPServerResponsePart

    private let timeout: () -> TimeAmount
    private var timer = LazyDeadlineTimer()
    /// When the connection times out; nil while it is busy.
    private var idleDeadline: NIODeadline?
    private var headInProgress = false
    private var requestHeads = 0
    private var requestEnds = 0
    private var responseEnds = 0

    /// - Parameter timeout: read whenever the connection becomes idle.
    public init(timeout: @escaping () -> TimeAmount) {
        self.timeout = timeout
    }

    private var isIdle: Bool {
        !self.headInProgress && self.requestEnds == self.requestHeads && self.responseEnds == self.requestHeads
    }

    public func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { self.becameIdle(context: context) }
    }

    public func channelActive(context: ChannelHandlerContext) {
        self.becameIdle(context: context)
        context.fireChannelActive()
    }

    public func channelInactive(context: ChannelHandlerContext) {
        self.disarm()
        context.fireChannelInactive()
    }

    public func handlerRemoved(context: ChannelHandlerContext) {
        self.disarm()
    }

    public func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is HTTPRequestHeadStartedEvent {
            self.headInProgress = true
            self.idleDeadline = nil
        }
        context.fireUserInboundEventTriggered(event)
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch Self.unwrapInboundIn(data) {
        case .head:
            self.headInProgress = false
            self.requestHeads += 1
            self.idleDeadline = nil
        case .body:
            break
        case .end:
            self.requestEnds += 1
            if self.isIdle { self.becameIdle(context: context) }
        }
        context.fireChannelRead(data)
    }

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = Self.unwrapOutboundIn(data) {
            self.responseEnds += 1
            if self.isIdle { self.becameIdle(context: context) }
        }
        context.write(data, promise: promise)
    }

    private func becameIdle(context: ChannelHandlerContext) {
        let deadline = context.eventLoop.now + self.timeout()
        self.idleDeadline = deadline
        self.arm(deadline: deadline, context: context)
    }

    private func arm(deadline: NIODeadline, context: ChannelHandlerContext) {
        self.timer.arm(at: deadline, on: context.eventLoop, handler: Expiry(handler: self, context: context))
    }

    /// What the idle timer calls back: the handler and its context (both of this event loop).
    private struct Expiry: NIOScheduledCallbackHandler {
        let handler: IdleTimeoutHandler
        let context: ChannelHandlerContext

        func handleScheduledCallback(eventLoop: some EventLoop) {
            self.handler.timerFired(context: self.context)
        }
    }

    private func timerFired(context: ChannelHandlerContext) {
        self.timer.fired()
        guard let deadline = self.idleDeadline else { return }  // busy: re-armed when idle again
        if deadline > context.eventLoop.now {
            self.arm(deadline: deadline, context: context)
        } else {
            context.close(promise: nil)
        }
    }

    private func disarm() {
        self.timer.cancel()
        self.idleDeadline = nil
    }
}

@available(*, unavailable)
extension IdleTimeoutHandler: Sendable {}
