import ALBHTTP
import ALBQUIC
import NIOCore

/// The datagram entry point of a QUIC listener, on its `DatagramBootstrap` channel: each received
/// `AddressedEnvelope` goes to the ``QUICEndpoint`` with its path (the channel's local address, or the
/// datagram's own destination when the channel reports packet info), and what the endpoint returns is
/// written to each datagram's remote address. Writes are flushed once per read batch
/// (`channelReadComplete`) and once per timer run.
///
/// One timer for the whole endpoint, re-armed after every batch to ``QUICEndpoint/nextDeadline``. ngtcp2's
/// clock is `NIODeadline.uptimeNanoseconds` (CLOCK_MONOTONIC), so deadlines pass through unconverted.
///
/// Not wired into the data plane yet: QUIC listeners keep reporting `ProtocolNotServed` until HTTP/3 is
/// served (docs/quic.md, slice 3). It does not send from a specific local address on a wildcard-bound
/// socket, nor mark ECN (later, with `.explicitCongestionNotification`).
final class QUICListenerHandler: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    typealias OutboundOut = AddressedEnvelope<ByteBuffer>

    private let endpoint: QUICEndpoint
    private let onEvent: (QUICEndpointEvent) -> Void
    private var timer = LazyDeadlineTimer()
    private var localAddress: SocketAddress?
    private var writesPending = false

    /// `onEvent` sees every endpoint event (connections opened and closed, handshakes), on the event loop.
    init(endpoint: QUICEndpoint, onEvent: @escaping (QUICEndpointEvent) -> Void = { _ in }) {
        self.endpoint = endpoint
        self.onEvent = onEvent
    }

    func handlerAdded(context: ChannelHandlerContext) {
        localAddress = context.channel.localAddress
    }

    func channelActive(context: ChannelHandlerContext) {
        localAddress = context.channel.localAddress
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        guard let local = envelope.metadata?.packetInfo?.destinationAddress ?? localAddress else { return }
        let path = QUICPath(local: local, remote: envelope.remoteAddress)
        let outgoing = endpoint.receive(envelope.data, path: path, ecn: Self.ecnCodepoint(envelope.metadata),
                                        now: NIODeadline.now().uptimeNanoseconds)
        write(outgoing, context: context)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        finishBatch(context: context)
        context.fireChannelReadComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer.cancel()
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer.cancel()
    }

    private func write(_ datagrams: [QUICOutgoingDatagram], context: ChannelHandlerContext) {
        for datagram in datagrams {
            let envelope = AddressedEnvelope(remoteAddress: datagram.path.remote, data: datagram.bytes)
            context.write(wrapOutboundOut(envelope), promise: nil)
            writesPending = true
        }
    }

    /// Flushes what the batch wrote, reports the endpoint's events and re-arms the timer.
    private func finishBatch(context: ChannelHandlerContext) {
        if writesPending {
            writesPending = false
            context.flush()
        }
        for event in endpoint.takeEvents() { onEvent(event) }
        guard context.channel.isActive, let deadline = endpoint.nextDeadline else { return }
        timer.arm(at: NIODeadline.uptimeNanoseconds(deadline), on: context.eventLoop,
                  handler: Expiry(handler: self, context: context))
    }

    private struct Expiry: NIOScheduledCallbackHandler {
        let handler: QUICListenerHandler
        let context: ChannelHandlerContext

        func handleScheduledCallback(eventLoop: some EventLoop) {
            handler.timerFired(context: context)
        }
    }

    private func timerFired(context: ChannelHandlerContext) {
        timer.fired()
        let outgoing = endpoint.handleTimers(now: NIODeadline.now().uptimeNanoseconds)
        write(outgoing, context: context)
        finishBatch(context: context)
    }

    /// The two ECN bits of the received datagram (RFC 3168), as ngtcp2's `ngtcp2_pkt_info.ecn` takes them;
    /// 0 when the channel does not report ECN.
    private static func ecnCodepoint(_ metadata: AddressedEnvelope<ByteBuffer>.Metadata?) -> UInt8 {
        switch metadata?.ecnState {
        case .transportCapableFlag0: return 0b10
        case .transportCapableFlag1: return 0b01
        case .congestionExperienced: return 0b11
        case .transportNotCapable, nil: return 0
        }
    }
}

@available(*, unavailable)
extension QUICListenerHandler: Sendable {}
