import NIOCore
import NIOHTTP1

/// Refuses slow-header clients: the head of a request must be complete within `timeout` of the
/// request's first byte (signalled by ``HTTPRequestHeadStartedEvent`` from the decoder). On expiry it
/// fires ``HTTPEdgeError/headerTimeout`` so ``EdgeErrorHandler`` answers 408 and closes.
///
/// Separate from ``IdleTimeoutHandler``: this one runs only while a head is arriving. It sits right
/// after the decoder, so a pipelined request that waits behind a slow response is not timed.
public final class HeaderTimeoutHandler: ChannelInboundHandler {
    public typealias InboundIn = HTTPServerRequestPart
    public typealias InboundOut = HTTPServerRequestPart

    private let timeout: TimeAmount
    private var timer: Scheduled<Void>?

    public init(timeout: TimeAmount) {
        self.timeout = timeout
    }

    public func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is HTTPRequestHeadStartedEvent {
            self.timer?.cancel()
            let loopBoundContext = NIOLoopBound(context, eventLoop: context.eventLoop)
            self.timer = context.eventLoop.assumeIsolated().scheduleTask(in: self.timeout) {
                self.timer = nil
                loopBoundContext.value.fireErrorCaught(HTTPEdgeError.headerTimeout)
            }
        }
        context.fireUserInboundEventTriggered(event)
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head = Self.unwrapInboundIn(data) {
            self.timer?.cancel()
            self.timer = nil
        }
        context.fireChannelRead(data)
    }

    public func channelInactive(context: ChannelHandlerContext) {
        self.timer?.cancel()
        self.timer = nil
        context.fireChannelInactive()
    }

    public func handlerRemoved(context: ChannelHandlerContext) {
        self.timer?.cancel()
        self.timer = nil
    }
}

@available(*, unavailable)
extension HeaderTimeoutHandler: Sendable {}
