import ALBHTTP
import NIOCore
import NIOHTTP1

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The reverse proxy at the end of the client pipeline: one exchange at a time (the pipelining
/// handler before it serializes), each sent to a backend picked per request from the current snapshot.
///
/// Streaming with backpressure both ways: client reads are held while the backend connection is not
/// writable (and while connecting), backend reads are held while the client connection is not
/// writable. Nothing is buffered beyond one read.
///
/// Errors: no server 503; connect failure/timeout, or the backend closing/resetting or sending an
/// invalid head before a complete response head 502; no response head within the request timeout
/// (measured from the request head, extended while request body bytes keep flowing) 504. If the
/// backend fails after the response head was sent, the client connection is closed.
///
/// It never forwards what the client did not ask for: `CONNECT` is answered 501 here (a reverse proxy
/// opens no tunnels, and the bytes after such a head are not HTTP, so the connection closes), and a
/// backend's `101 Switching Protocols` to a request that asked for no upgrade (the proxy removes
/// `Upgrade`, so today every 101) is a 502: relayed, it would leave the client waiting for a protocol
/// that never starts.
final class ProxyHandler: ChannelDuplexHandler, BackendConnectionDelegate {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private enum State {
        /// No exchange, or the previous one is finished.
        case idle
        /// Waiting for a pooled or new backend connection; request parts are queued (at most one read).
        case acquiring
        case forwarding(BackendHandler)
        /// No server is available for a bodyless request: answer once its end has arrived, so the
        /// connection can stay open.
        case rejecting(HTTPResponseStatus)
        /// The connection is closing; everything is ignored.
        case closed
    }

    /// What one request/response pair needs to remember. A class rather than a struct: it is updated
    /// at every step of the exchange, and a struct behind an optional would be copied out and back
    /// (retaining every field, and copying `queued` on append) each time.
    private final class Exchange {
        let id: Int
        let head: HTTPRequestHead
        let clientIP: String
        let clientKeepAlive: Bool
        /// Wall clock time and request size are only for the access log: 0 when there is none.
        let wallTime: Double
        let started: NIODeadline
        var lastProgress: NIODeadline
        let requestTimeout: TimeAmount
        var requestBytes: Int
        var responseBytes = 0
        /// The picked server and its pool on this loop (nil before a pick, or when none was available).
        var server: BalancedServer?
        var pool: BackendPool?
        var upstreamStatus: Int?
        var status = 0
        var requestEnded = false
        var responseHeadSent = false
        var backendKeepAlive = false
        var closeClientAfter = false
        var backendHead: HTTPRequestHead?
        var queued: [HTTPClientRequestPart] = []
        var bodyBytes = 0
        var connectTimeout = TimeAmount.seconds(5)
        var reusedConnection = false
        var retried = false

        init(
            id: Int, head: HTTPRequestHead, clientIP: String, wallTime: Double, started: NIODeadline,
            requestTimeout: TimeAmount, requestBytes: Int
        ) {
            self.id = id
            self.head = head
            self.clientIP = clientIP
            self.clientKeepAlive = head.isKeepAlive
            self.wallTime = wallTime
            self.started = started
            self.lastProgress = started
            self.requestTimeout = requestTimeout
            self.requestBytes = requestBytes
        }

        /// When the request times out unless body bytes keep flowing.
        var deadline: NIODeadline { self.lastProgress + self.requestTimeout }
        var upstream: String { self.server?.address ?? "" }
    }

    private let runtime: ListenerRuntime
    private let loopState: ListenerLoopState
    private var context: ChannelHandlerContext?
    private var state = State.idle
    private var exchange: Exchange?
    private var nextExchangeID = 0
    private var peerIP = ""
    private var peerPort = 0
    private var listenerPort = 0
    private var clientReadsPaused = false
    private var clientReadPending = false
    private var backendNeedsFlush = false
    /// One request timer per connection rather than one per request: it is armed for the earliest
    /// deadline it has been asked for and, when it fires, re-arms for the current exchange's deadline
    /// if that is later. A finished exchange leaves it running; scheduling and cancelling a task per
    /// request cost more than the occasional spurious wake-up.
    private var requestTimer = LazyDeadlineTimer()

    init(runtime: ListenerRuntime, loopState: ListenerLoopState) {
        self.runtime = runtime
        self.loopState = loopState
    }

    // MARK: - Client side

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        self.peerIP = context.channel.remoteAddress?.ipAddress ?? ""
        self.peerPort = context.channel.remoteAddress?.port ?? 0
        self.listenerPort = context.channel.localAddress?.port ?? 0
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.abandonExchange(closeBackend: true)
        self.context = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch Self.unwrapInboundIn(data) {
        case .head(let head):
            self.requestHead(head, context: context)
        case .body(let buffer):
            self.requestBody(buffer, context: context)
        case .end(let trailers):
            self.requestEnd(trailers, context: context)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if self.backendNeedsFlush, case .forwarding(let backend) = self.state {
            self.backendNeedsFlush = false
            backend.flush()
        }
        context.fireChannelReadComplete()
    }

    func read(context: ChannelHandlerContext) {
        if self.clientReadsPaused {
            self.clientReadPending = true
        } else {
            context.read()
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable, case .forwarding(let backend) = self.state {
            backend.resumeReads()
        }
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        if let exchange = self.exchange, exchange.status == 0 {
            exchange.status = 499  // client closed before a response (nginx's convention)
        }
        self.logExchange()
        self.abandonExchange(closeBackend: true)
        self.state = .closed
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        if let edgeError = error as? HTTPEdgeError {
            // The edge error handler answers; the exchange is over.
            let status = edgeError.status.code.asInt
            if let exchange = self.exchange {
                if !exchange.responseHeadSent {
                    exchange.status = status
                    self.runtime.counters.countResponse(status: status)
                }
            } else {
                self.runtime.counters.countResponse(status: status)
                self.logRefusedRequest(status: status)
            }
            self.logExchange()
            self.abandonExchange(closeBackend: true)
            self.state = .closed
            return
        }
        self.abandonExchange(closeBackend: true)
        self.state = .closed
        context.close(promise: nil)
    }

    private func requestHead(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
        guard case .idle = self.state else { return }
        let snapshot = self.runtime.snapshot.load(ordering: .acquiring)
        let config = snapshot.config
        self.runtime.counters.totalRequests.wrappingIncrement(ordering: .relaxed)
        let clientIP =
            snapshot.clientIPResolver?.resolve(peer: self.peerIP, forwardedFor: head.headers["x-forwarded-for"])
            ?? self.peerIP
        let logging = self.loopState.accessLog != nil
        self.nextExchangeID &+= 1
        let exchange = Exchange(
            id: self.nextExchangeID,
            head: head,
            clientIP: clientIP,
            wallTime: logging ? Self.wallClock() : 0,
            started: context.eventLoop.now,
            requestTimeout: config.requestTimeout,
            requestBytes: logging ? Self.estimatedSize(of: head) : 0
        )
        self.exchange = exchange
        if head.method == .CONNECT {
            self.respondWithError(.notImplemented, close: true)
            return
        }
        guard let server = self.loopState.pick(snapshot) else {
            if Self.hasBody(head) {
                self.respondWithError(.serviceUnavailable)  // closes: the body is not read
            } else {
                self.state = .rejecting(.serviceUnavailable)  // its end follows at once
            }
            return
        }
        exchange.server = server
        exchange.pool = self.loopState.pool(for: server)
        exchange.backendHead = ProxyHeaders.backendRequestHead(
            from: head,
            forwarding: ForwardingContext(
                clientIP: clientIP,
                clientPort: self.peerPort,
                listenerPort: self.listenerPort,
                loadBalancerName: config.loadBalancerName,
                peerIsTrustedProxy: snapshot.clientIPResolver?.trusts(peer: self.peerIP) ?? false
            ),
            options: snapshot.forwardedHeaders
        )
        if head.version.minor >= 1, ProxyHeaders.expectsContinue(head.headers) {
            // Answer the expectation here (the backend's 100 would not be relayed) and do not pass it on.
            exchange.backendHead?.headers.remove(name: "expect")
            context.writeAndFlush(Self.wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .continue))), promise: nil)
        }
        self.armRequestTimer(deadline: exchange.deadline, context: context)
        self.state = .acquiring
        self.clientReadsPaused = true
        exchange.connectTimeout = config.limits.connectTimeout
        self.acquireBackend(exchange, allowIdle: true)
    }

    private func requestBody(_ buffer: ByteBuffer, context: ChannelHandlerContext) {
        guard let exchange = self.exchange else { return }
        exchange.requestBytes += buffer.readableBytes
        exchange.bodyBytes += buffer.readableBytes
        exchange.lastProgress = context.eventLoop.now
        switch self.state {
        case .acquiring:
            exchange.queued.append(.body(.byteBuffer(buffer)))
        case .forwarding(let backend):
            backend.write(.body(.byteBuffer(buffer)))
            self.backendNeedsFlush = true
            if !backend.isWritable {
                self.clientReadsPaused = true
            }
        case .idle, .rejecting, .closed:
            break
        }
    }

    private func requestEnd(_ trailers: HTTPHeaders?, context: ChannelHandlerContext) {
        guard let exchange = self.exchange else { return }
        exchange.requestEnded = true
        switch self.state {
        case .acquiring:
            exchange.queued.append(.end(trailers))
        case .forwarding(let backend):
            backend.write(.end(trailers))
            backend.flush()
            self.backendNeedsFlush = false
        case .rejecting(let status):
            self.respondWithError(status)
        case .idle, .closed:
            break
        }
    }

    private func resumeClientReads() {
        guard self.clientReadsPaused else { return }
        self.clientReadsPaused = false
        if self.clientReadPending {
            self.clientReadPending = false
            self.context?.read()
        }
    }

    // MARK: - Backend side

    private func acquireBackend(_ exchange: Exchange, allowIdle: Bool) {
        guard let pool = exchange.pool else { return }
        if allowIdle, let backend = pool.takeIdle() {
            // Still inside the client's read: the head goes out with the request's end, or at
            // channelReadComplete, in one flush.
            self.backendAcquired(.success(backend), reused: true, id: exchange.id, flush: false)
            return
        }
        let id = exchange.id
        pool.connect(connectTimeout: exchange.connectTimeout) { result in
            self.backendAcquired(result, reused: false, id: id, flush: true)
        }
    }

    private func backendAcquired(_ result: Result<BackendHandler, Error>, reused: Bool, id: Int, flush: Bool) {
        guard case .acquiring = self.state, let exchange = self.exchange, exchange.id == id else {
            // The exchange went away while connecting: a fresh, unused connection can serve others.
            if case .success(let backend) = result {
                backend.close()
            }
            return
        }
        switch result {
        case .failure:
            self.respondWithError(.badGateway)
        case .success(let backend):
            backend.delegate = self
            exchange.reusedConnection = reused
            self.state = .forwarding(backend)
            if let head = exchange.backendHead {
                backend.write(.head(head))
            }
            let queued = exchange.queued
            exchange.queued = []
            for part in queued {
                backend.write(part)
            }
            if flush || exchange.requestEnded {
                backend.flush()
            } else {
                self.backendNeedsFlush = true
            }
            if backend.isWritable {
                self.resumeClientReads()
            }
        }
    }

    func backendRead(_ part: HTTPClientResponsePart) {
        guard case .forwarding(let backend) = self.state, let exchange = self.exchange, let context = self.context
        else { return }
        switch part {
        case .head(let head):
            guard ProxyHeaders.areValid(head.headers) else {
                backend.close()
                self.respondWithError(.badGateway)
                return
            }
            exchange.upstreamStatus = head.status.code.asInt
            if head.status == .switchingProtocols && exchange.backendHead?.headers.contains(name: "upgrade") != true {
                backend.close()
                self.respondWithError(.badGateway)
                return
            }
            exchange.backendKeepAlive = head.isKeepAlive
            let keepAlive = exchange.clientKeepAlive && exchange.requestEnded
            let (clientHead, closeAfter) = ProxyHeaders.clientResponseHead(
                from: head,
                requestMethod: exchange.head.method,
                requestVersion: exchange.head.version,
                keepAlive: keepAlive
            )
            exchange.closeClientAfter = closeAfter
            exchange.status = head.status.code.asInt
            exchange.responseHeadSent = true
            self.runtime.counters.countResponse(status: exchange.status)
            context.write(Self.wrapOutboundOut(.head(clientHead)), promise: nil)
        case .body(let buffer):
            exchange.responseBytes += buffer.readableBytes
            context.write(Self.wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
            if !context.channel.isWritable {
                backend.pauseReads()
            }
        case .end(let trailers):
            // Give the backend connection back first: only after a complete response with keep-alive
            // and a completely sent request.
            backend.delegate = nil
            if exchange.requestEnded && exchange.backendKeepAlive, let pool = exchange.pool {
                pool.release(backend)
            } else {
                backend.close()
            }
            let close = exchange.closeClientAfter || !exchange.requestEnded
            self.finishExchange()
            if close {
                self.state = .closed
                context.writeAndFlush(Self.wrapOutboundOut(.end(trailers))).assumeIsolated().whenComplete { _ in
                    context.close(promise: nil)
                }
            } else {
                self.state = .idle
                self.resumeClientReads()
                // May deliver the next pipelined request re-entrantly: state is already idle.
                context.writeAndFlush(Self.wrapOutboundOut(.end(trailers)), promise: nil)
            }
        }
    }

    func backendReadComplete() {
        self.context?.flush()
    }

    func backendWritabilityChanged(isWritable: Bool) {
        if isWritable, case .forwarding = self.state {
            self.resumeClientReads()
        }
    }

    func backendClosed() {
        guard case .forwarding = self.state, let exchange = self.exchange else { return }
        if !exchange.responseHeadSent && exchange.reusedConnection && !exchange.retried && exchange.requestEnded
            && exchange.bodyBytes == 0
        {
            // A pooled connection the backend closed just as it was reused (keep-alive race). The
            // bodyless request can be replayed safely on a fresh connection, once.
            exchange.retried = true
            self.state = .acquiring
            exchange.queued = [.end(nil)]
            self.acquireBackend(exchange, allowIdle: false)
            return
        }
        if !exchange.responseHeadSent {
            self.respondWithError(.badGateway)
        } else {
            // Mid-body failure: the response cannot be completed; closing tells the client.
            self.finishExchange()
            self.state = .closed
            self.context?.close(promise: nil)
        }
    }

    private func armRequestTimer(deadline: NIODeadline, context: ChannelHandlerContext) {
        self.requestTimer.arm(at: deadline, on: context.eventLoop, handler: RequestTimerExpiry(handler: self))
    }

    /// What the request timer calls back (on this handler's event loop).
    private struct RequestTimerExpiry: NIOScheduledCallbackHandler {
        let handler: ProxyHandler

        func handleScheduledCallback(eventLoop: some EventLoop) {
            self.handler.requestTimerFired()
        }
    }

    private func cancelRequestTimer() {
        self.requestTimer.cancel()
    }

    private func requestTimerFired() {
        self.requestTimer.fired()
        guard let exchange = self.exchange, !exchange.responseHeadSent, let context = self.context else { return }
        switch self.state {
        case .acquiring, .forwarding:
            break
        case .idle, .rejecting, .closed:
            return
        }
        // Body bytes still flowing to the backend extend the deadline; so does a later exchange
        // than the one the timer was armed for.
        let deadline = exchange.deadline
        if deadline > context.eventLoop.now {
            self.armRequestTimer(deadline: deadline, context: context)
            return
        }
        self.respondWithError(.gatewayTimeout)
    }

    // MARK: - Responses and bookkeeping

    /// Answers the current exchange with a short error response. Keeps the connection only if the
    /// request is complete, the client wants keep-alive and `close` is false; otherwise
    /// `Connection: close`. The answer to a `HEAD` has the same head and no body: `Content-Length`
    /// there describes the body a `GET` would get, and body bytes would read as the next response.
    private func respondWithError(_ status: HTTPResponseStatus, close: Bool = false) {
        guard let exchange = self.exchange, let context = self.context else { return }
        exchange.queued = []
        if case .forwarding(let backend) = self.state {
            backend.close()
        }
        let keepAlive = exchange.clientKeepAlive && exchange.requestEnded && !close
        exchange.status = status.code.asInt
        exchange.responseHeadSent = true
        self.runtime.counters.countResponse(status: exchange.status)
        let head = EdgeResponse.head(for: status, version: exchange.head.version, close: !keepAlive)
        context.write(Self.wrapOutboundOut(.head(head)), promise: nil)
        if exchange.head.method != .HEAD {
            var body = context.channel.allocator.buffer(capacity: 32)
            body.writeString(EdgeResponse.body(for: status))
            exchange.responseBytes = body.readableBytes
            context.write(Self.wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        }
        if keepAlive {
            self.finishExchange()
            self.state = .idle
            self.resumeClientReads()
            context.writeAndFlush(Self.wrapOutboundOut(.end(nil)), promise: nil)
        } else {
            self.finishExchange()
            self.state = .closed
            // Keep draining the unread request body (dropped in `.closed`) while lingering.
            self.resumeClientReads()
            context.writeAndFlush(Self.wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in
                context.closeLingering()
            }
        }
    }

    /// Logs the exchange and forgets it.
    private func finishExchange() {
        self.logExchange()
        self.exchange = nil
    }

    private func logExchange() {
        guard let exchange = self.exchange, let log = self.loopState.accessLog else { return }
        let elapsed = self.loopState.eventLoop.now - exchange.started
        log.append(
            AccessLogRecord(
                time: exchange.wallTime,
                listener: self.runtime.name,
                clientIP: exchange.clientIP,
                clientPort: self.peerPort,
                method: exchange.head.method.rawValue,
                host: exchange.head.headers.first(name: "host") ?? "",
                path: exchange.head.uri,
                status: exchange.status,
                requestBytes: exchange.requestBytes,
                responseBytes: exchange.responseBytes,
                upstream: exchange.upstream,
                upstreamStatus: exchange.upstreamStatus,
                durationMs: Double(elapsed.nanoseconds) / 1_000_000
            )
        )
    }

    /// A request refused before its head was complete (400/408/431): logged with what is known.
    private func logRefusedRequest(status: Int) {
        guard let log = self.loopState.accessLog else { return }
        log.append(
            AccessLogRecord(
                time: Self.wallClock(), listener: self.runtime.name, clientIP: self.peerIP, clientPort: self.peerPort,
                method: "", host: "", path: "", status: status, requestBytes: 0, responseBytes: 0, upstream: "",
                upstreamStatus: nil, durationMs: 0
            )
        )
    }

    /// Drops the exchange without answering (the connection is going away).
    private func abandonExchange(closeBackend: Bool) {
        self.cancelRequestTimer()
        if closeBackend, case .forwarding(let backend) = self.state {
            backend.close()
        }
        self.exchange = nil
        self.state = .idle
    }

    /// Whether the request announces a body (so its end does not follow the head at once).
    private static func hasBody(_ head: HTTPRequestHead) -> Bool {
        if head.headers.contains(name: "transfer-encoding") { return true }
        guard let length = head.headers.first(name: "content-length") else { return false }
        return length != "0"
    }

    private static func estimatedSize(of head: HTTPRequestHead) -> Int {
        var size = head.method.rawValue.utf8.count + head.uri.utf8.count + 12
        for (name, value) in head.headers {
            size += name.utf8.count + value.utf8.count + 4
        }
        return size + 2
    }

    private static func wallClock() -> Double {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return Double(spec.tv_sec) + Double(spec.tv_nsec) / 1_000_000_000
    }
}

@available(*, unavailable)
extension ProxyHandler: Sendable {}

extension UInt {
    fileprivate var asInt: Int { Int(self) }
}
