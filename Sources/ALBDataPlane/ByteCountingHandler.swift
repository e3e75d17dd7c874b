import NIOCore

/// Counts the bytes a client connection reads and writes into its loop's listener counters: the first
/// handler of the pipeline, so on an HTTPS listener it counts TLS records (what crossed the socket).
/// It forwards everything untouched and keeps no state of its own; being loop-bound, it adds to plain
/// Ints (no atomic) once per read and per write.
final class ByteCountingHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = IOData
    typealias OutboundOut = IOData

    private let state: ListenerLoopState

    init(state: ListenerLoopState) {
        self.state = state
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.state.counters.receivedBytes &+= self.unwrapInboundIn(data).readableBytes
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        self.state.counters.sentBytes &+= self.unwrapOutboundIn(data).readableBytes
        context.write(data, promise: promise)
    }
}

@available(*, unavailable)
extension ByteCountingHandler: Sendable {}
