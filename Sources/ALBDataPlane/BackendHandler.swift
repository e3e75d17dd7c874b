import ALBHTTP
import NIOCore
import NIOHTTP1

/// What a backend connection reports to the client-side exchange that currently uses it.
protocol BackendConnectionDelegate: AnyObject {
    /// A response part; with a head, what its decoder learnt of its fields when there is one (an HTTP/1
    /// connection's), nil otherwise.
    func backendRead(_ part: consuming HTTPClientResponsePart, summary: HTTP1HeadSummary?)
    /// A head whose request asked for its field lines (``BackendHandler/write(_:relayingResponseFieldLines:)``):
    /// `head` has no fields, `fieldLines` has them. By default they are put back in the head.
    func backendRead(head: consuming HTTPResponseHead, summary: HTTP1HeadSummary, fieldLines: HTTP1FieldLines)
    func backendReadComplete()
    func backendWritabilityChanged(isWritable: Bool)
    func backendClosed()
}

extension BackendConnectionDelegate {
    func backendRead(head: consuming HTTPResponseHead, summary: HTTP1HeadSummary, fieldLines: HTTP1FieldLines) {
        var head = head
        head.headers = fieldLines.headers
        self.backendRead(.head(head), summary: summary)
    }
}

/// The last handler of a backend connection's pipeline, and what the pool, the exchanges and their
/// backpressure hold on to: relays response parts to its delegate and holds `read()` while the client side
/// cannot take more.
///
/// Two kinds, one interface: ``BackendHTTP1Handler`` is a whole HTTP/1 connection (request bytes out,
/// ``StrictHTTPResponseDecoder`` on the bytes in, the parts to the delegate by direct call);
/// ``BackendHTTP2StreamHandler`` is one stream of an HTTP/2 (gRPC) connection behind nio-http2's HTTP/1 codec.
/// This class holds what both do; it is no channel handler of its own beyond that.
///
/// ``delegate`` and ``idleIn`` are strong references, cleared by whoever lets go: the exchange when it ends,
/// abandons or closes the connection (``close()``, ``BackendPool/release(_:)``), the pool when it hands the
/// connection out or retires, and the connection itself when it closes (`channelInactive`), which every open
/// connection eventually does. A weak reference would give every proxy handler and pool a side table, and
/// then each of their retains and releases (several per request) takes the runtime's slow path: 3% of the
/// CPU per proxied request in a profile.
class BackendHandler: RemovableChannelHandler {
    /// The exchange using this connection; nil while it is idle or closing.
    var delegate: BackendConnectionDelegate?
    /// Set while the connection sits idle in a pool, so a close can take it out.
    var idleIn: BackendPool?
    private(set) var context: ChannelHandlerContext?
    /// The context's channel, kept while the handler is in the pipeline: `context.channel` goes through the
    /// pipeline and retains and releases the channel, about 90 instructions each time the pool or the exchange
    /// asks whether the connection is active or writable (twice a request, callgrind).
    private var channel: Channel?
    /// Whether every response head this connection delivers has had its field names checked as tokens and
    /// its values for CR, LF and NUL already (``StrictHTTPResponseDecoder`` refuses them), so the exchange
    /// need not look again.
    var deliversCheckedFields: Bool { false }
    private var readsPaused = false
    private var readPending = false

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        self.channel = context.channel
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        self.channel = nil
    }

    /// Declared here, not left to the protocol's default, so that ``BackendHTTP1Handler`` can override it.
    func removeHandler(context: ChannelHandlerContext, removalToken: ChannelHandlerContext.RemovalToken) {
        context.leavePipeline(removalToken: removalToken)
    }

    // MARK: - Events both kinds handle alike (witnesses of the subclasses' handler protocols)

    func channelReadComplete(context: ChannelHandlerContext) {
        self.delegate?.backendReadComplete()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        self.delegate?.backendWritabilityChanged(isWritable: context.channel.isWritable)
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.connectionEnded()
    }

    /// Where a connection that closes before it is fully active ends: NIO then fires no `channelInactive`, only
    /// this. That happens when the exchange closes it from inside the connect's completion (a head refused as it
    /// is written: ``BackendHTTP1Handler``), which runs before NIO's `channelActive`; the exchange waited for an
    /// answer until its timeout before.
    func channelUnregistered(context: ChannelHandlerContext) {
        self.connectionEnded()
        context.fireChannelUnregistered()
    }

    /// The connection closed: out of its pool, and its exchange told, once.
    private func connectionEnded() {
        self.idleIn?.remove(self)
        self.idleIn = nil
        let delegate = self.delegate
        self.delegate = nil
        delegate?.backendClosed()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }

    func read(context: ChannelHandlerContext) {
        if self.readsPaused {
            self.readPending = true
        } else {
            context.read()
        }
    }

    /// A response part for the delegate. With none (an idle connection in a pool), the backend spoke out of
    /// turn: a protocol violation, and the connection cannot be reused.
    final func deliver(_ part: consuming HTTPClientResponsePart, summary: HTTP1HeadSummary? = nil,
                       context: ChannelHandlerContext) {
        guard let delegate = self.delegate else {
            context.close(promise: nil)
            return
        }
        delegate.backendRead(consume part, summary: summary)
    }

    final func deliver(head: consuming HTTPResponseHead, summary: HTTP1HeadSummary, fieldLines: HTTP1FieldLines,
                       context: ChannelHandlerContext) {
        guard let delegate = self.delegate else {
            context.close(promise: nil)
            return
        }
        delegate.backendRead(head: head, summary: summary, fieldLines: fieldLines)
    }

    // MARK: - Used by the proxy (same event loop)

    final var isActive: Bool { self.channel?.isActive ?? false }
    final var isWritable: Bool { self.channel?.isWritable ?? false }

    /// Passes the part to the handler in front (an HTTP/2 stream's codec); an HTTP/1 connection writes the
    /// bytes itself.
    func write(_ part: HTTPClientRequestPart) {
        self.context?.write(NIOAny(part), promise: nil)
    }

    /// A request head whose response's fields the delegate relays unchanged to an HTTP/1 client: an HTTP/1
    /// connection then delivers them as lines (``BackendConnectionDelegate/backendRead(head:summary:fieldLines:)``),
    /// others as fields.
    func write(_ head: HTTPRequestHead, relayingResponseFieldLines: Bool) {
        self.write(.head(head))
    }

    /// A request head whose client fields are `fieldLines` but those at the positions set in `leftOut`, before the
    /// head's own (``ProxyHeaders/backendRequestHead(from:passingOn:summary:forwarding:options:)``), its body
    /// `chunked` or not: an HTTP/1 connection writes the lines as they are, others make them fields.
    func write(_ head: HTTPRequestHead, fieldLines: HTTP1FieldLines, leavingOut leftOut: UInt64, chunked: Bool,
               relayingResponseFieldLines: Bool) {
        var head = head
        head.headers = fieldLines.headers(leavingOut: leftOut, followedBy: head.headers)
        self.write(head, relayingResponseFieldLines: relayingResponseFieldLines)
    }

    final func flush() {
        self.context?.flush()
    }

    final func pauseReads() {
        self.readsPaused = true
    }

    final func resumeReads() {
        guard self.readsPaused else { return }
        self.readsPaused = false
        if self.readPending {
            self.readPending = false
            self.context?.read()
        }
    }

    /// Reads are let through whatever the exchange asked: the handler is leaving and what replaces it holds
    /// its own.
    final func releaseReads() {
        self.readsPaused = false
        self.readPending = false
    }

    final func close() {
        self.delegate = nil
        self.context?.close(promise: nil)
    }

    /// After the backend accepted a WebSocket upgrade and its `101` ended: the connection stops speaking
    /// HTTP and becomes `end` of a tunnel. Only an HTTP/1 connection can.
    func leaveHTTP(joining end: TunnelEnd) throws {
        throw ChannelError.operationUnsupported
    }
}

@available(*, unavailable)
extension BackendHandler: Sendable {}

/// One stream of an HTTP/2 backend connection (gRPC server groups), behind nio-http2's
/// `HTTP2FramePayloadToHTTP1ClientCodec`: response parts in, request parts out.
final class BackendHTTP2StreamHandler: BackendHandler, ChannelDuplexHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = HTTPClientRequestPart
    typealias OutboundOut = HTTPClientRequestPart

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.deliver(self.unwrapInboundIn(data), context: context)
    }
}
