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

    /// What one request/response pair needs to remember.
    private struct Exchange {
        var id: Int
        var head: HTTPRequestHead
        var clientIP: String
        var clientKeepAlive: Bool
        var wallTime: Double
        var started: NIODeadline
        var lastProgress: NIODeadline
        var requestTimeout: TimeAmount
        var requestBytes: Int
        var responseBytes = 0
        var upstream = ""
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
        var timeout: Scheduled<Void>?
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
            self.requestBody(buffer)
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
        if var exchange = self.exchange, exchange.status == 0 {
            exchange.status = 499  // client closed before a response (nginx's convention)
            self.exchange = exchange
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
            if var exchange = self.exchange {
                if !exchange.responseHeadSent {
                    exchange.status = status
                    self.runtime.counters.countResponse(status: status)
                }
                self.exchange = exchange
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
        let now = NIODeadline.now()
        self.nextExchangeID &+= 1
        var exchange = Exchange(
            id: self.nextExchangeID,
            head: head,
            clientIP: clientIP,
            clientKeepAlive: head.isKeepAlive,
            wallTime: Self.wallClock(),
            started: now,
            lastProgress: now,
            requestTimeout: config.requestTimeout,
            requestBytes: Self.estimatedSize(of: head)
        )
        guard let server = self.loopState.pick(snapshot) else {
            self.exchange = exchange
            if Self.hasBody(head) {
                self.respondWithError(.serviceUnavailable)  // closes: the body is not read
            } else {
                self.state = .rejecting(.serviceUnavailable)  // its end follows at once
            }
            return
        }
        exchange.upstream = server.address
        self.upstreamServer = server
        exchange.backendHead = ProxyHeaders.backendRequestHead(
            from: head,
            forwarding: ForwardingContext(
                clientIP: clientIP,
                clientPort: self.peerPort,
                listenerPort: self.listenerPort,
                loadBalancerName: config.loadBalancerName
            ),
            options: snapshot.forwardedHeaders
        )
        if head.version.minor >= 1,
            head.headers[canonicalForm: "expect"].contains(where: { $0.lowercased() == "100-continue" })
        {
            // Answer the expectation here (the backend's 100 would not be relayed) and do not pass it on.
            exchange.backendHead?.headers.remove(name: "expect")
            context.writeAndFlush(Self.wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .continue))), promise: nil)
        }
        let id = exchange.id
        exchange.timeout = context.eventLoop.assumeIsolated().scheduleTask(in: config.requestTimeout) {
            self.requestTimerFired(id: id)
        }
        self.exchange = exchange
        self.state = .acquiring
        self.clientReadsPaused = true
        exchange.connectTimeout = config.limits.connectTimeout
        self.exchange = exchange
        self.acquireBackend(server: server, id: id, allowIdle: true)
    }

    private func requestBody(_ buffer: ByteBuffer) {
        guard var exchange = self.exchange else { return }
        exchange.requestBytes += buffer.readableBytes
        exchange.bodyBytes += buffer.readableBytes
        exchange.lastProgress = .now()
        switch self.state {
        case .acquiring:
            exchange.queued.append(.body(.byteBuffer(buffer)))
            self.exchange = exchange
        case .forwarding(let backend):
            self.exchange = exchange
            backend.write(.body(.byteBuffer(buffer)))
            self.backendNeedsFlush = true
            if !backend.isWritable {
                self.clientReadsPaused = true
            }
        case .idle, .rejecting, .closed:
            self.exchange = exchange
        }
    }

    private func requestEnd(_ trailers: HTTPHeaders?, context: ChannelHandlerContext) {
        guard var exchange = self.exchange else { return }
        exchange.requestEnded = true
        switch self.state {
        case .acquiring:
            exchange.queued.append(.end(trailers))
            self.exchange = exchange
        case .forwarding(let backend):
            self.exchange = exchange
            backend.write(.end(trailers))
            backend.flush()
            self.backendNeedsFlush = false
        case .rejecting(let status):
            self.exchange = exchange
            self.respondWithError(status)
        case .idle, .closed:
            self.exchange = exchange
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

    private func acquireBackend(server: BackendServer, id: Int, allowIdle: Bool) {
        guard let connectTimeout = self.exchange?.connectTimeout else { return }
        self.loopState.pool(for: server).acquire(connectTimeout: connectTimeout, allowIdle: allowIdle) { result, reused in
            self.backendAcquired(result, reused: reused, id: id)
        }
    }

    private func backendAcquired(_ result: Result<BackendHandler, Error>, reused: Bool, id: Int) {
        guard case .acquiring = self.state, var exchange = self.exchange, exchange.id == id else {
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
            self.exchange = exchange
            for part in queued {
                backend.write(part)
            }
            backend.flush()
            if backend.isWritable {
                self.resumeClientReads()
            }
        }
    }

    func backendRead(_ part: HTTPClientResponsePart) {
        guard case .forwarding(let backend) = self.state, var exchange = self.exchange, let context = self.context
        else { return }
        switch part {
        case .head(let head):
            exchange.timeout?.cancel()
            exchange.timeout = nil
            guard ProxyHeaders.areValid(head.headers) else {
                self.exchange = exchange
                backend.close()
                self.respondWithError(.badGateway)
                return
            }
            exchange.upstreamStatus = head.status.code.asInt
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
            self.exchange = exchange
            self.runtime.counters.countResponse(status: exchange.status)
            context.write(Self.wrapOutboundOut(.head(clientHead)), promise: nil)
        case .body(let buffer):
            exchange.responseBytes += buffer.readableBytes
            self.exchange = exchange
            context.write(Self.wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
            if !context.channel.isWritable {
                backend.pauseReads()
            }
        case .end(let trailers):
            // Give the backend connection back first: only after a complete response with keep-alive
            // and a completely sent request.
            backend.delegate = nil
            if exchange.requestEnded && exchange.backendKeepAlive {
                self.releaseBackend(backend)
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

    private func releaseBackend(_ backend: BackendHandler) {
        guard let upstream = self.exchange?.upstream, !upstream.isEmpty else {
            backend.close()
            return
        }
        self.poolForUpstream(upstream)?.release(backend) ?? backend.close()
    }

    private var upstreamServer: BackendServer?

    private func poolForUpstream(_ upstream: String) -> BackendPool? {
        guard let server = self.upstreamServer, server.address == upstream else { return nil }
        return self.loopState.pool(for: server)
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
        guard case .forwarding = self.state, var exchange = self.exchange else { return }
        if !exchange.responseHeadSent && exchange.reusedConnection && !exchange.retried && exchange.requestEnded
            && exchange.bodyBytes == 0, let server = self.upstreamServer
        {
            // A pooled connection the backend closed just as it was reused (keep-alive race). The
            // bodyless request can be replayed safely on a fresh connection, once.
            exchange.retried = true
            self.exchange = exchange
            self.state = .acquiring
            self.exchange?.queued = [.end(nil)]
            self.acquireBackend(server: server, id: exchange.id, allowIdle: false)
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

    private func requestTimerFired(id: Int) {
        guard var exchange = self.exchange, exchange.id == id, !exchange.responseHeadSent else { return }
        switch self.state {
        case .acquiring, .forwarding:
            break
        case .idle, .rejecting, .closed:
            return
        }
        // Body bytes still flowing to the backend extend the deadline.
        let deadline = exchange.lastProgress + exchange.requestTimeout
        let now = NIODeadline.now()
        if deadline > now, let context = self.context {
            exchange.timeout = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) {
                self.requestTimerFired(id: id)
            }
            self.exchange = exchange
            return
        }
        exchange.timeout = nil
        self.exchange = exchange
        self.respondWithError(.gatewayTimeout)
    }

    // MARK: - Responses and bookkeeping

    /// Answers the current exchange with a short error response. Keeps the connection only if the
    /// request is complete and the client wants keep-alive; otherwise `Connection: close`.
    private func respondWithError(_ status: HTTPResponseStatus) {
        guard var exchange = self.exchange, let context = self.context else { return }
        exchange.timeout?.cancel()
        exchange.timeout = nil
        exchange.queued = []
        if case .forwarding(let backend) = self.state {
            backend.close()
        }
        let keepAlive = exchange.clientKeepAlive && exchange.requestEnded
        exchange.status = status.code.asInt
        exchange.responseHeadSent = true
        self.exchange = exchange
        self.runtime.counters.countResponse(status: exchange.status)
        let head = EdgeResponse.head(for: status, version: exchange.head.version, close: !keepAlive)
        var body = context.channel.allocator.buffer(capacity: 32)
        body.writeString(EdgeResponse.body(for: status))
        self.exchange?.responseBytes = body.readableBytes
        context.write(Self.wrapOutboundOut(.head(head)), promise: nil)
        context.write(Self.wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        if keepAlive {
            self.finishExchange()
            self.state = .idle
            self.resumeClientReads()
            context.writeAndFlush(Self.wrapOutboundOut(.end(nil)), promise: nil)
        } else {
            self.finishExchange()
            self.state = .closed
            context.writeAndFlush(Self.wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in
                context.close(promise: nil)
            }
        }
    }

    /// Logs the exchange and forgets it.
    private func finishExchange() {
        self.exchange?.timeout?.cancel()
        self.logExchange()
        self.exchange = nil
        self.upstreamServer = nil
    }

    private func logExchange() {
        guard let exchange = self.exchange, let log = self.loopState.accessLog else { return }
        let elapsed = NIODeadline.now() - exchange.started
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
        self.exchange?.timeout?.cancel()
        if closeBackend, case .forwarding(let backend) = self.state {
            backend.close()
        }
        self.exchange = nil
        self.upstreamServer = nil
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
