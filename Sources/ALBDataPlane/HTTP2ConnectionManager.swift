import ALBHTTP
import NIOCore
import NIOHTTP2

/// The life of an HTTP/2 connection around its streams, on the connection channel after the
/// ``HTTP2StreamRouter``, which tells it of each stream's opening and closing (nio-http2's events of them end
/// there):
/// - Idle: a connection with no open stream for the listener's idle timeout is closed after a `GOAWAY` with
///   `NO_ERROR`, as the HTTP/1 pipeline closes a keep-alive connection idle between requests. A stream in
///   progress, however long, keeps it open (the seed: the idle timeout does not apply to HTTP/2 requests;
///   the request timeout does).
/// - Drain (`ChannelShouldQuiesceEvent`: a reload, a removed listener, SIGTERM), in the two steps RFC 9113
///   section 6.8 recommends, as Envoy drains:
///   1. a `GOAWAY` with `NO_ERROR` and the largest stream ID, with a `PING`: the client opens no new stream
///      here, and streams it opened before it read the `GOAWAY` (on their way already) are still served;
///   2. when the `PING`'s acknowledgement arrives (everything the client sent before it has arrived) or
///      after ``announcementWait``, a `GOAWAY` naming the last stream the connection opened; the open
///      streams finish and the connection closes with the last of them.
///   A single `GOAWAY` naming the last stream refused every stream in flight towards the server at that
///   moment: safe for the client to retry by the RFC, but a retry all the same.
///
/// An inbound handler only, though it writes frames of its own: the streams' writes, flushes and reads then
/// pass its place in the pipeline without a call into it.
final class HTTP2ConnectionManager: ChannelInboundHandler {
    typealias InboundIn = HTTP2Frame
    typealias InboundOut = HTTP2Frame
    typealias OutboundOut = HTTP2Frame

    private let idleTimeout: () -> TimeAmount
    private var openStreams = 0
    /// The highest stream the client opened: what a `GOAWAY` says was (or may be) processed.
    private var lastStreamID = HTTP2StreamID.rootStream
    /// One timer per connection: a stream that opens only clears `idleSince`, one that closes sets it, and
    /// the timer re-arms itself when it fires early, so a stream costs no timer (nor its allocations).
    private var idleTimer = LazyDeadlineTimer()
    /// When the connection last had no open stream; nil while a stream is open.
    private var idleSince: NIODeadline?
    private var drain = Drain.serving
    /// Ends the first step of a drain if the client does not acknowledge its `PING`.
    private var announcementTimer: Scheduled<Void>?
    private var context: ChannelHandlerContext?
    /// The request timer the connection's streams share: stopped when the connection goes.
    private let requestTimer: SharedDeadlineTimer?

    private enum Drain {
        case serving
        /// The first `GOAWAY` and its `PING` are sent; streams may still open.
        case announced
        /// The final `GOAWAY` is sent: no stream opens any more.
        case final
    }

    /// How long the first step of a drain waits for the `PING` acknowledgement at most.
    static let announcementWait = TimeAmount.seconds(1)
    /// The `PING` of a drain's first step ("alb-drn1"), told apart from the client's own pings' acks.
    static let drainPing = HTTP2PingData(withInteger: 0x616c_622d_6472_6e31)

    init(requestTimer: SharedDeadlineTimer? = nil, idleTimeout: @escaping () -> TimeAmount) {
        self.requestTimer = requestTimer
        self.idleTimeout = idleTimeout
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        self.becameIdle(context: context)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.idleTimer.cancel()
        self.announcementTimer?.cancel()
        self.announcementTimer = nil
        self.requestTimer?.cancelAll()
        self.context = nil
    }

    func streamOpened(_ id: HTTP2StreamID) {
        self.openStreams += 1
        if id > self.lastStreamID { self.lastStreamID = id }
        self.idleSince = nil
    }

    func streamClosed(_ id: HTTP2StreamID) {
        self.openStreams -= 1
        guard self.openStreams <= 0, let context = self.context else { return }
        switch self.drain {
        case .serving:
            self.becameIdle(context: context)
        case .announced:
            break  // the client may still have a stream on its way: the acknowledgement tells
        case .final:
            // nio-http2 reports the close while the stream's last frame is still on its way out; closing now
            // would drop it. Close after a final GOAWAY (the same last stream) has been written behind it.
            context.eventLoop.assumeIsolated().execute {
                self.sayGoAwayAndClose(context: context)
            }
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // Only an announced drain waits for a frame (its PING's ack): otherwise frames pass unopened, as taking
        // one out of its `NIOAny` is a run-time cast.
        if case .announced = self.drain, case .ping(Self.drainPing, ack: true) = self.unwrapInboundIn(data).payload {
            self.finishDrain(context: context)
        }
        context.fireChannelRead(data)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if exactly(event, ChannelShouldQuiesceEvent.self) != nil {
            self.quiesce(context: context)
        }
        context.fireUserInboundEventTriggered(event)
    }

    private func quiesce(context: ChannelHandlerContext) {
        guard case .serving = self.drain else { return }
        self.drain = .announced
        self.idleTimer.cancel()
        context.write(Self.wrapOutbound(self.goAway(lastStreamID: .maxID)), promise: nil)
        context.writeAndFlush(Self.wrapOutbound(HTTP2Frame(streamID: .rootStream, payload: .ping(Self.drainPing, ack: false))),
                              promise: nil)
        self.announcementTimer = context.eventLoop.assumeIsolated().scheduleTask(in: Self.announcementWait) {
            self.finishDrain(context: context)
        }
    }

    private func finishDrain(context: ChannelHandlerContext) {
        guard case .announced = self.drain else { return }
        self.drain = .final
        self.announcementTimer?.cancel()
        self.announcementTimer = nil
        if self.openStreams > 0 {
            context.writeAndFlush(Self.wrapOutbound(self.goAway(lastStreamID: self.lastStreamID)), promise: nil)
        } else {
            self.sayGoAwayAndClose(context: context)
        }
    }

    private func goAway(lastStreamID: HTTP2StreamID) -> HTTP2Frame {
        HTTP2Frame(streamID: .rootStream,
                   payload: .goAway(lastStreamID: lastStreamID, errorCode: .noError, opaqueData: nil))
    }

    private func sayGoAwayAndClose(context: ChannelHandlerContext) {
        context.writeAndFlush(Self.wrapOutbound(self.goAway(lastStreamID: self.lastStreamID))).assumeIsolated().whenComplete { _ in
            context.close(promise: nil)
        }
    }

    private func becameIdle(context: ChannelHandlerContext) {
        let now = context.eventLoop.now
        self.idleSince = now
        self.idleTimer.arm(at: now + self.idleTimeout(), on: context.eventLoop, handler: IdleExpiry(manager: self))
    }

    /// What the idle timer calls back (on the connection's event loop).
    // @unchecked: scheduled, called and cancelled on its owner's event loop only (LazyDeadlineTimer).
    private struct IdleExpiry: NIOScheduledCallbackHandler, @unchecked Sendable {
        let manager: HTTP2ConnectionManager

        func handleScheduledCallback(eventLoop: some EventLoop) {
            self.manager.idleTimerFired()
        }
    }

    private func idleTimerFired() {
        self.idleTimer.fired()
        guard let idleSince = self.idleSince, let context = self.context else { return }
        let deadline = idleSince + self.idleTimeout()
        if deadline > context.eventLoop.now {
            self.idleTimer.arm(at: deadline, on: context.eventLoop, handler: IdleExpiry(manager: self))
        } else {
            // As nginx does: the client learns the connection ends on purpose, and that nothing it sent was
            // processed after the last stream named.
            self.sayGoAwayAndClose(context: context)
        }
    }
}

@available(*, unavailable)
extension HTTP2ConnectionManager: Sendable {}
