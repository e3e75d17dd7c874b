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
/// HTTP/3 request streams go to the `router` (the data plane's ``HTTP3ProxyRouter``); what their exchanges
/// then give a connection to send is written once per event loop tick (``QUICConnectionWriter``).
///
/// Runs of equal-sized datagrams to one client leave in one send, and the kernel may hand over a burst of one
/// client's datagrams as one read (``UDPOffload``: `UDP_SEGMENT`, `UDP_GRO`, where Linux has them).
///
/// It does not send from a specific local address on a wildcard-bound socket, nor mark ECN (later, with
/// `.explicitCongestionNotification`).
final class QUICListenerHandler: ChannelInboundHandler, QUICConnectionWriter {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    typealias OutboundOut = AddressedEnvelope<ByteBuffer>

    private let endpoint: QUICEndpoint
    private let onEvent: (QUICEndpointEvent) -> Void
    private let router: HTTP3RequestRouter?
    private var timer = LazyDeadlineTimer()
    private var localAddress: SocketAddress?
    private var writesPending = false
    private var context: ChannelHandlerContext?
    /// Connections an exchange gave something to send since the last write, in order, each once.
    private var connectionsToWrite: [QUICConnection] = []
    private var connectionWriteScheduled = false

    /// `onEvent` sees every endpoint event (connections opened and closed, handshakes), on the event loop;
    /// `router` gets the request streams (without one they get no answer).
    init(endpoint: QUICEndpoint, router: HTTP3RequestRouter? = nil,
         onEvent: @escaping (QUICEndpointEvent) -> Void = { _ in }) {
        self.endpoint = endpoint
        self.router = router
        self.onEvent = onEvent
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        localAddress = context.channel.localAddress
    }

    /// New connections use `credentials` from now on (a rotated certificate).
    func replaceCredentials(_ credentials: QUICServerCredentials) {
        endpoint.credentials = credentials
    }

    func channelActive(context: ChannelHandlerContext) {
        localAddress = context.channel.localAddress
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        guard let local = envelope.metadata?.packetInfo?.destinationAddress ?? localAddress else { return }
        let path = QUICPath(local: local, remote: envelope.remoteAddress)
        let ecn = Self.ecnCodepoint(envelope.metadata)
        let now = NIODeadline.now().uptimeNanoseconds
        if let segmentSize = envelope.metadata?.segmentSize, envelope.data.readableBytes > segmentSize {
            // Several datagrams of one sender, coalesced by the kernel (UDP_GRO).
            for datagram in UDPOffload.datagrams(in: envelope.data, segmentSize: segmentSize) {
                write(endpoint.receive(datagram, path: path, ecn: ecn, now: now), context: context)
            }
        } else {
            write(endpoint.receive(envelope.data, path: path, ecn: ecn, now: now), context: context)
        }
        routeStreamEvents()
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        finishBatch(context: context)
        context.fireChannelReadComplete()
    }

    /// A drain (reload, removal, SIGTERM): every connection gets GOAWAY and finishes its requests; no new
    /// connection is created. The data plane closes what is left at its drain timeout
    /// (``closeAllConnections()``) and then the channel.
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard event is ChannelShouldQuiesceEvent else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        write(endpoint.drain(now: NIODeadline.now().uptimeNanoseconds), context: context)
        routeStreamEvents()
        finishBatch(context: context)
    }

    /// Sends every connection's CONNECTION_CLOSE (H3_NO_ERROR) now, before the channel closes: the clients
    /// learn at once instead of at their idle timeout.
    func closeAllConnections() {
        guard let context else { return }
        write(endpoint.closeAll(now: NIODeadline.now().uptimeNanoseconds), context: context)
        routeStreamEvents()
        finishBatch(context: context)
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer.cancel()
        router?.closeAll()
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer.cancel()
        router?.closeAll()
        self.context = nil
    }

    // MARK: Streams and their writes

    /// Hands the endpoint's stream events to the router. Its exchanges may ask for writes (scheduled, never
    /// done inside this call), so this does not re-enter a connection.
    private func routeStreamEvents() {
        guard let router else {
            _ = endpoint.takeStreamEvents()
            return
        }
        for record in endpoint.takeStreamEvents() {
            router.route(record, writer: self)
        }
    }

    func connectionNeedsWrite(_ connection: QUICConnection) {
        if !connectionsToWrite.contains(where: { $0 === connection }) { connectionsToWrite.append(connection) }
        guard !connectionWriteScheduled, let context else { return }
        connectionWriteScheduled = true
        context.eventLoop.assumeIsolated().execute {
            self.writeRequestedConnections()
        }
    }

    private func writeRequestedConnections() {
        // Asks made while this runs join the loop below instead of scheduling another run.
        defer { connectionWriteScheduled = false }
        guard let context else { return }
        let now = NIODeadline.now().uptimeNanoseconds
        while !connectionsToWrite.isEmpty {
            let connections = connectionsToWrite
            connectionsToWrite = []
            for connection in connections {
                write(endpoint.write(connection, now: now), context: context)
            }
            // Writing may close streams (events), whose exchanges may ask for more writes: loop until quiet.
            routeStreamEvents()
        }
        finishBatch(context: context)
    }

    private func write(_ datagrams: [QUICOutgoingDatagram], context: ChannelHandlerContext) {
        guard !datagrams.isEmpty else { return }
        writesPending = true
        guard datagrams.count > 1, Self.segmentationOffload else {
            for datagram in datagrams {
                context.write(Self.wrapOutbound(AddressedEnvelope(remoteAddress: datagram.path.remote, data: datagram.bytes)),
                              promise: nil)
            }
            return
        }
        for send in UDPOffload.sends(datagrams, allocator: context.channel.allocator) {
            let metadata = send.segmentSize.map {
                AddressedEnvelope<ByteBuffer>.Metadata(ecnState: .transportNotCapable, packetInfo: nil, segmentSize: $0)
            }
            context.write(Self.wrapOutbound(AddressedEnvelope(remoteAddress: send.remote, data: send.bytes, metadata: metadata)),
                          promise: nil)
        }
    }

    /// Runs of equal-sized datagrams go out as one send (UDP_SEGMENT) where the kernel can cut them.
    private static let segmentationOffload = System.supportsUDPSegmentationOffload

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

    // @unchecked: scheduled, called and cancelled on its owner's event loop only (LazyDeadlineTimer).
    private struct Expiry: NIOScheduledCallbackHandler, @unchecked Sendable {
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
        routeStreamEvents()
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
