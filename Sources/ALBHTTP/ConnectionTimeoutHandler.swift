import NIOCore
import NIOHTTP1

/// The two client-side timeouts of an HTTP/1 connection, which never run at the same time, on one timer:
/// - Header: the head of a request must be complete within `headerTimeout` of its first byte (signalled by
///   ``HTTPRequestHeadStartedEvent`` from the decoder). On expiry it fires ``HTTPEdgeError/headerTimeout``,
///   so ``EdgeErrorHandler`` answers 408 and closes. It sits right after the decoder, so a pipelined request
///   that waits behind a slow response is not timed.
/// - Idle: a connection with no request in flight (no head arriving, every request and its response
///   finished) for the idle timeout is closed. The idle timeout is asked for each time the connection goes
///   idle, so a configuration update applies to existing connections from their next idle period on.
/// Requests in flight are the proxy's to time.
///
/// One timer per connection, not one per request or idle period: a phase that starts records its
/// deadline and arms the timer only if it would fire too late; a phase that ends clears its deadline and
/// leaves the timer be. When the timer fires it acts, re-arms for a later deadline, or stops. Keep-alive
/// traffic then schedules a callback about once per timeout. (One handler instead of two: each handler
/// and its pipeline context cost an idle connection about 400 bytes.)
public final class ConnectionTimeoutHandler: ChannelDuplexHandler, RemovableChannelHandler {
    public typealias InboundIn = HTTPServerRequestPart
    public typealias InboundOut = HTTPServerRequestPart
    public typealias OutboundIn = HTTPServerResponsePart
    public typealias OutboundOut = HTTPServerResponsePart

    private let headerTimeout: TimeAmount
    private let idleTimeout: () -> TimeAmount
    private var timer = LazyDeadlineTimer()
    /// When the head now arriving times out; nil while no head is arriving.
    private var headDeadline: NIODeadline?
    /// When the connection times out for idleness; nil while it is busy.
    private var idleDeadline: NIODeadline?
    private var requestHeads = 0
    private var requestEnds = 0
    private var responseEnds = 0

    /// - Parameter idleTimeout: read whenever the connection becomes idle.
    public init(headerTimeout: TimeAmount, idleTimeout: @escaping () -> TimeAmount) {
        self.headerTimeout = headerTimeout
        self.idleTimeout = idleTimeout
    }

    private var isIdle: Bool {
        self.headDeadline == nil && self.requestEnds == self.requestHeads && self.responseEnds == self.requestHeads
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
            let deadline = context.eventLoop.now + self.headerTimeout
            self.headDeadline = deadline
            self.idleDeadline = nil
            self.arm(deadline: deadline, context: context)
        }
        context.fireUserInboundEventTriggered(event)
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch Self.unwrapInboundIn(data) {
        case .head:
            self.headDeadline = nil
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
        let deadline = context.eventLoop.now + self.idleTimeout()
        self.idleDeadline = deadline
        self.arm(deadline: deadline, context: context)
    }

    private func arm(deadline: NIODeadline, context: ChannelHandlerContext) {
        self.timer.arm(at: deadline, on: context.eventLoop, handler: Expiry(handler: self, context: context))
    }

    /// What the timer calls back: the handler and its context (both of this event loop).
    private struct Expiry: NIOScheduledCallbackHandler {
        let handler: ConnectionTimeoutHandler
        let context: ChannelHandlerContext

        func handleScheduledCallback(eventLoop: some EventLoop) {
            self.handler.timerFired(context: self.context)
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
                context.fireErrorCaught(HTTPEdgeError.headerTimeout)
            }
        } else if let deadline = self.idleDeadline {
            if deadline > now {
                self.arm(deadline: deadline, context: context)
            } else {
                context.close(promise: nil)
            }
        }
        // Neither: the connection is busy with a request; the timer is armed again when it goes idle.
    }

    private func disarm() {
        self.timer.cancel()
        self.headDeadline = nil
        self.idleDeadline = nil
    }
}

@available(*, unavailable)
extension ConnectionTimeoutHandler: Sendable {}
