import NIOCore

/// A client connection after a protocol switch the proxy does not speak (WebSocket after its `101`): bytes
/// relayed both ways between the client's channel and the backend's, which share an event loop, so a relay
/// is a direct call with no hop.
///
/// - Backpressure each way: a side stops reading while the other side's channel is not writable, so a
///   fast sender cannot grow memory behind a slow receiver (at most one read is in flight per direction).
/// - Idle: with no byte in either direction for the idle timeout (asked each time the timer is armed, so a
///   listener update applies), both connections close.
/// - Ending: when either side closes, what was relayed to the other is flushed and the other closes too;
///   `onClose` reports the totals once. Frames are not parsed: a WebSocket close handshake passes through
///   like any other bytes, and each endpoint's close follows it.
///
/// It does not drain on `ChannelShouldQuiesceEvent`: a WebSocket connection has no point between
/// messages the proxy could see, so a draining listener lets it run until the drain window closes the
/// client connection (as nginx's `worker_shutdown_timeout` and HAProxy's `hard-stop-after` do).
public final class ByteTunnel {
    public enum Side: Sendable {
        case client
        case backend
    }

    /// What the tunnel carried, for the access log.
    public struct Totals: Sendable, Equatable {
        public var bytesFromClient = 0
        public var bytesFromBackend = 0
        public var duration = TimeAmount.zero
    }

    private enum State {
        case open
        /// One side closed; the other is closing once its last relayed bytes are flushed.
        case closing
        case closed
    }

    public let client: TunnelEnd
    public let backend: TunnelEnd
    private let idleTimeout: () -> TimeAmount
    private var onClose: ((Totals) -> Void)?
    private var state = State.open
    private var totals = Totals()
    private var started: NIODeadline?
    private var lastActivity = NIODeadline.uptimeNanoseconds(0)
    private var timer = LazyDeadlineTimer()
    private var eventLoop: EventLoop?

    public init(idleTimeout: @escaping () -> TimeAmount, onClose: @escaping (Totals) -> Void) {
        self.idleTimeout = idleTimeout
        self.onClose = onClose
        self.client = TunnelEnd(side: .client)
        self.backend = TunnelEnd(side: .backend)
        self.client.tunnel = self
        self.backend.tunnel = self
    }

    private func end(_ side: Side) -> TunnelEnd {
        side == .client ? self.client : self.backend
    }

    private func peer(of side: Side) -> TunnelEnd {
        side == .client ? self.backend : self.client
    }

    // MARK: - Called by the ends (on the shared event loop)

    fileprivate func attached(_ side: Side, on eventLoop: EventLoop) {
        guard self.started == nil else { return }
        let now = eventLoop.now
        self.eventLoop = eventLoop
        self.started = now
        self.lastActivity = now
        self.armTimer()
    }

    fileprivate func relay(_ buffer: ByteBuffer, from side: Side, now: NIODeadline) {
        switch side {
        case .client: self.totals.bytesFromClient += buffer.readableBytes
        case .backend: self.totals.bytesFromBackend += buffer.readableBytes
        }
        self.lastActivity = now
        let peer = self.peer(of: side)
        peer.write(buffer)
        if !peer.isWritable {
            self.end(side).pauseReads()
        }
    }

    fileprivate func readComplete(from side: Side) {
        self.peer(of: side).flush()
    }

    fileprivate func becameWritable(_ side: Side) {
        self.peer(of: side).resumeReads()
    }

    fileprivate func closed(_ side: Side) {
        switch self.state {
        case .open:
            self.state = .closing
            self.report()
            self.peer(of: side).closeAfterFlushing()
        case .closing:
            self.state = .closed
            self.timer.cancel()
        case .closed:
            break
        }
    }

    // MARK: - Idle timeout

    // @unchecked: scheduled, called and cancelled on its owner's event loop only (LazyDeadlineTimer).
    private struct Expiry: NIOScheduledCallbackHandler, @unchecked Sendable {
        let tunnel: ByteTunnel

        func handleScheduledCallback(eventLoop: some EventLoop) {
            self.tunnel.timerFired()
        }
    }

    private func armTimer() {
        guard let eventLoop = self.eventLoop else { return }
        self.timer.arm(at: self.lastActivity + self.idleTimeout(), on: eventLoop, handler: Expiry(tunnel: self))
    }

    private func timerFired() {
        self.timer.fired()
        guard let eventLoop = self.eventLoop else { return }
        switch self.state {
        case .open:
            if eventLoop.now < self.lastActivity + self.idleTimeout() {
                self.armTimer()
                return
            }
            self.state = .closing
            self.report()
            self.client.close()
            self.backend.close()
        case .closing:
            // The remaining side did not flush within an idle period (its peer stopped reading): close it.
            self.client.close()
            self.backend.close()
        case .closed:
            break
        }
    }

    private func report() {
        guard let onClose = self.onClose, let eventLoop = self.eventLoop, let started = self.started else { return }
        self.onClose = nil
        self.totals.duration = eventLoop.now - started
        onClose(self.totals)
        // A closing side that never flushes is closed by the timer after one more idle period.
        self.lastActivity = eventLoop.now
        self.armTimer()
    }
}

@available(*, unavailable)
extension ByteTunnel: Sendable {}

/// One side of a ``ByteTunnel``: the last handler of the client's or the backend's channel once the switch
/// is made. Holds `read()` while its peer cannot take more.
public final class TunnelEnd: ChannelDuplexHandler, RemovableChannelHandler {
    public typealias InboundIn = ByteBuffer
    public typealias OutboundIn = ByteBuffer
    public typealias OutboundOut = ByteBuffer

    let side: ByteTunnel.Side
    /// Strong while the channel lives: the tunnel holds both ends and each end its tunnel; the cycle ends
    /// when the end leaves its pipeline.
    fileprivate var tunnel: ByteTunnel?
    private var context: ChannelHandlerContext?
    private var readsPaused = false
    private var readPending = false

    fileprivate init(side: ByteTunnel.Side) {
        self.side = side
    }

    public func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        self.tunnel?.attached(self.side, on: context.eventLoop)
        guard context.channel.isActive else {
            // It closed while the switch was being made: no `channelInactive` will come.
            self.tunnel?.closed(self.side)
            return
        }
        // The handler this one replaces may have been holding a read.
        context.read()
    }

    public func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        self.tunnel = nil
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.tunnel?.relay(self.unwrapInboundIn(data), from: self.side, now: context.eventLoop.now)
    }

    public func channelReadComplete(context: ChannelHandlerContext) {
        self.tunnel?.readComplete(from: self.side)
        context.fireChannelReadComplete()
    }

    public func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            self.tunnel?.becameWritable(self.side)
        }
        context.fireChannelWritabilityChanged()
    }

    public func channelInactive(context: ChannelHandlerContext) {
        self.tunnel?.closed(self.side)
        context.fireChannelInactive()
    }

    public func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }

    public func read(context: ChannelHandlerContext) {
        if self.readsPaused {
            self.readPending = true
        } else {
            context.read()
        }
    }

    /// Flushes what this side relayed to its peer: for bytes delivered without a read-complete after them
    /// (a decoder's leftovers when it leaves the pipeline).
    public func flushRelayed() {
        self.tunnel?.readComplete(from: self.side)
    }

    // MARK: - Used by the tunnel

    fileprivate var isWritable: Bool { self.context?.channel.isWritable ?? true }

    fileprivate func write(_ buffer: ByteBuffer) {
        self.context?.write(Self.wrapOutbound(buffer), promise: nil)
    }

    fileprivate func flush() {
        self.context?.flush()
    }

    fileprivate func pauseReads() {
        self.readsPaused = true
    }

    fileprivate func resumeReads() {
        guard self.readsPaused else { return }
        self.readsPaused = false
        if self.readPending {
            self.readPending = false
            self.context?.read()
        }
    }

    /// Closes once everything written so far has reached the socket (an empty write completes after them).
    fileprivate func closeAfterFlushing() {
        guard let context = self.context else { return }
        context.writeAndFlush(Self.wrapOutbound(context.channel.allocator.buffer(capacity: 0)))
            .assumeIsolated().whenComplete { _ in context.close(promise: nil) }
    }

    fileprivate func close() {
        self.context?.close(promise: nil)
    }
}

@available(*, unavailable)
extension TunnelEnd: Sendable {}
