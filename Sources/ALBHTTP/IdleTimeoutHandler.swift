import NIOCore
import NIOHTTP1

/// Closes a client connection that has no request in flight for the idle timeout.
///
/// "In flight" means: a head is arriving (``HTTPRequestHeadStartedEvent`` seen), or a request or its
/// response is not finished. The timeout is asked for each time the connection goes idle, so a
/// configuration update applies to existing connections from their next idle period on.
/// It does not time requests in flight: that is the header timeout's and the proxy's job.
public final class IdleTimeoutHandler: ChannelDuplexHandler {
    public typealias InboundIn = HTTPServerRequestPart
    public typealias InboundOut = HTTPServerRequestPart
    public typealias OutboundIn = HTTPServerResponsePart
    public typealias OutboundOut = HTTPServerResponsePart

    private let timeout: () -> TimeAmount
    private var timer: Scheduled<Void>?
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
        if context.channel.isActive { self.arm(context: context) }
    }

    public func channelActive(context: ChannelHandlerContext) {
        self.arm(context: context)
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
            self.disarm()
        }
        context.fireUserInboundEventTriggered(event)
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch Self.unwrapInboundIn(data) {
        case .head:
            self.headInProgress = false
            self.requestHeads += 1
            self.disarm()
        case .body:
            break
        case .end:
            self.requestEnds += 1
            if self.isIdle { self.arm(context: context) }
        }
        context.fireChannelRead(data)
    }

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = Self.unwrapOutboundIn(data) {
            self.responseEnds += 1
            if self.isIdle { self.arm(context: context) }
        }
        context.write(data, promise: promise)
    }

    private func arm(context: ChannelHandlerContext) {
        self.disarm()
        let loopBoundContext = NIOLoopBound(context, eventLoop: context.eventLoop)
        self.timer = context.eventLoop.assumeIsolated().scheduleTask(in: self.timeout()) {
            self.timer = nil
            loopBoundContext.value.close(promise: nil)
        }
    }

    private func disarm() {
        self.timer?.cancel()
        self.timer = nil
    }
}

@available(*, unavailable)
extension IdleTimeoutHandler: Sendable {}
