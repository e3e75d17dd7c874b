import ALBHTTP
import NIOCore
import NIOHTTP1
import NIOHTTP2

/// After a takeover, gives each HTTP/1 keep-alive connection of the old process one more request, answered
/// with `Connection: close`, instead of closing the idle ones at once as a drain does.
///
/// Why: a client may send its next request on an idle keep-alive connection at the very moment the server
/// closes it, and then reads a reset or an end of stream instead of a response (wrk counts a read error;
/// a client that does not retry fails the request). Under load some connection is always in that window,
/// so a plain drain of a busy process costs a few requests. A connection that closes after a response
/// saying `Connection: close` cannot race: the client knows not to reuse it. HAProxy reloads did this
/// before 2.4 (its `idle-close-on-response` option brings it back).
///
/// It sits right after ``HTTP1ConnectionHandler`` and asks the whole pipeline to quiesce at the first
/// moment a response can still say `Connection: close`: when the next request head arrives (before
/// passing it on, so the connection handler sees an open request), or when the head of a response to a
/// request already in flight is written (before passing it on, so the connection handler adds the
/// header). Either way the connection closes right after a response that said so. A response whose head
/// went out before the gate was installed is left to finish as it is; its connection gets its last
/// request next. A connection that does neither within `window` is quiesced then, as any drain does it
/// (idle between requests: closed at once; busy: closed after its response; not yet sent its first request:
/// given the header timeout for it). It does not handle HTTP/2
/// (``install(on:window:)`` quiesces those at once: GOAWAY tells the client which streams were not
/// processed, so none is lost).
final class LastRequestGate: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private let window: TimeAmount
    private var timer: Scheduled<Void>?
    private var quiesced = false

    init(window: TimeAmount) {
        self.window = window
    }

    func handlerAdded(context: ChannelHandlerContext) {
        guard self.window > .zero else {
            self.quiesce(context: context)
            return
        }
        self.timer = context.eventLoop.assumeIsolated().scheduleTask(in: self.window) {
            self.quiesce(context: context)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.timer?.cancel()
        self.timer = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if !self.quiesced, case .head = self.unwrapInboundIn(data) {
            self.quiesce(context: context)
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if !self.quiesced, case .head(let head) = self.unwrapOutboundIn(data), head.status.code >= 200 {
            self.quiesce(context: context)
        }
        context.write(data, promise: promise)
    }

    private func quiesce(context: ChannelHandlerContext) {
        guard !self.quiesced else { return }
        self.quiesced = true
        self.timer?.cancel()
        self.timer = nil
        // From the head of the pipeline: the connection handler sits before this one.
        context.pipeline.syncOperations.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
    }

    /// Puts a gate on `channel`: on its HTTP/1 pipeline, or (HTTP/2) quiesces it at once. A connection
    /// whose HTTP side does not exist yet (a TLS handshake or ALPN in progress) is looked at again every
    /// 20 ms until it does or `window` has passed, and is quiesced then.
    static func install(on channel: Channel, window: TimeAmount) {
        channel.eventLoop.execute {
            // The loop's clock, so tests drive the window with a virtual one.
            Self.install(on: channel, until: channel.eventLoop.now + window)
        }
    }

    private static func install(on channel: Channel, until deadline: NIODeadline) {
        guard channel.isActive else { return }
        let pipeline = channel.pipeline.syncOperations
        if let connection = try? pipeline.handler(type: HTTP1ConnectionHandler.self) {
            let window = max(deadline - channel.eventLoop.now, .zero)
            do {
                try connection.addHandlerAfter(LastRequestGate(window: window))
            } catch {
                pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
            }
        } else if (try? pipeline.handler(type: NIOHTTP2Handler.self)) != nil || channel.eventLoop.now >= deadline {
            pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        } else {
            channel.eventLoop.scheduleTask(in: .milliseconds(20)) {
                Self.install(on: channel, until: deadline)
            }
        }
    }
}

@available(*, unavailable)
extension LastRequestGate: Sendable {}
