import ALBHTTP
import ALBQUIC
import NIOCore
import NIOHTTP1

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Whoever sends a QUIC connection's packets: an exchange that gave its connection something to send
/// (response data, flow-control credit) asks for a write; the listener handler coalesces the asks of one
/// event loop tick into one write per connection.
protocol QUICConnectionWriter: AnyObject {
    func connectionNeedsWrite(_ connection: QUICConnection)
}

/// One HTTP/3 request stream proxied to the listener's server groups over HTTP/1.1: the HTTP/3 transport
/// adapter of ``ProxyExchange``, beside the HTTP/1 and HTTP/2 one (``ProxyHandler``). It shares with that
/// one the state machine (what to answer, when to time out, whether a backend connection is reused), the
/// balancer and the per-loop ``BackendPool``s, ``ProxyHeaders`` and the access log.
///
/// Backpressure both ways, without buffering a body whole: request body bytes get their QUIC flow-control
/// credit back only once written to a writable backend connection (so a stream buffers at most its window);
/// the backend is not read while the stream holds more than the connection's high water mark of
/// unacknowledged response bytes, and is read again on ``HTTP3StreamEvent/writable(streamID:)``.
///
/// Errors before the response head are ordinary responses (502, 503, 504 with a short body); a failure
/// after it resets the stream with H3_INTERNAL_ERROR. Not here: WebSocket over HTTP/3 (RFC 9220), request
/// trailers (dropped), the HTTP/1 edge's header count and header timeout limits (docs/quic.md, slice 4).
/// On the listener's event loop only.
final class HTTP3Exchange: BackendConnectionDelegate {
    private let connection: QUICConnection
    let streamID: Int64
    private weak var writer: QUICConnectionWriter?
    private let runtime: ListenerRuntime
    private let loopState: ListenerLoopState
    private let clientIP: String
    private let clientPort: Int
    private let listenerPort: Int
    private let requestHead: HTTPRequestHead
    private let authority: String
    private var machine: ProxyExchange
    private var backendHead: HTTPRequestHead?
    private var server: BalancedServer?
    private var pool: BackendPool?
    private var backend: BackendHandler?
    private var queued: [HTTPClientRequestPart] = []
    /// Request body bytes written to the backend whose flow-control credit is still held: given back when
    /// the backend connection is writable.
    private var creditHeld = 0
    private var stickyValue: Substring?
    private var setCookie: String?
    private var timer = LazyDeadlineTimer()
    private let wallTime: Double
    /// The exchange is over (answered or abandoned): stream events are ignored, nothing more is sent.
    private(set) var isFinished = false

    init(connection: QUICConnection, streamID: Int64, head: HTTP3RequestHead,
         writer: QUICConnectionWriter, runtime: ListenerRuntime, loopState: ListenerLoopState, listenerPort: Int) {
        self.connection = connection
        self.streamID = streamID
        self.writer = writer
        self.runtime = runtime
        self.loopState = loopState
        self.clientIP = connection.remoteAddress.ipAddress ?? ""
        self.clientPort = connection.remoteAddress.port ?? 0
        self.listenerPort = listenerPort
        self.authority = head.authority
        var fields: [(String, String)] = []
        fields.reserveCapacity(head.fields.count + 1)
        var cookies = CookieFields()
        for field in head.fields {
            if field.name == "cookie" {
                cookies.add(field.value, to: &fields)
            } else {
                fields.append((field.name, field.value))
            }
        }
        var headers = HTTPHeaders(fields)
        if !head.authority.isEmpty && !headers.contains(lowercased: "host") {
            headers.add(name: "host", value: head.authority)
        }
        // HTTP/3 in, HTTP/1.1 out: ProxyHeaders frames a body of unannounced length as chunked for a
        // request whose version is 2 or more, as for an HTTP/2 stream.
        self.requestHead = HTTPRequestHead(version: HTTPVersion(major: 3, minor: 0),
                                           method: HTTPMethod(rawValue: head.method), uri: head.path, headers: headers)
        let logging = loopState.accessLog != nil
        self.wallTime = logging ? Self.wallClock() : 0
        self.machine = ProxyExchange(head: requestHead, started: loopState.eventLoop.now,
                                     requestTimeout: runtime.config.requestTimeout, requestBytes: 0)
    }

    /// The server this exchange counts as one of its requests in flight (`Wlc`, the group's status) until it
    /// is answered or abandoned: then, not when the stream closes, which waits for the client's
    /// acknowledgements.
    private var countedServer: BalancedServer?

    deinit {
        endServerCounts()
    }

    private func endServerCounts() {
        countedServer?.requestFinished()
        countedServer = nil
        pool?.requestEnded()
        pool = nil
    }

    // MARK: - The request

    /// Picks a server and starts the exchange; `bodyFollows` when the head did not end the stream.
    func start(bodyFollows: Bool) {
        let snapshot = runtime.snapshot.load(ordering: .acquiring)
        let config = snapshot.config
        loopState.counters.totalRequests &+= 1
        stickyValue = snapshot.balancer.hasStickyGroups ? StickyCookie.value(in: requestHead.headers) : nil
        let picked = machine.mayReachBackend
            ? loopState.pick(snapshot, clientIP: clientIP, stickyValue: stickyValue) : nil
        if let picked {
            route(to: picked)
            backendHead = ProxyHeaders.backendRequestHead(
                from: requestHead,
                forwarding: ForwardingContext(clientIP: clientIP, clientPort: clientPort, listenerPort: listenerPort,
                                              scheme: "https", loadBalancerName: config.loadBalancerName,
                                              peerIsTrustedProxy: false, clientCertificate: nil),
                options: snapshot.forwardedHeaders, backendSpeaksHTTP2: picked.server.useHTTP2)
        }
        switch machine.receiveHead(serverAvailable: picked != nil, hasBody: bodyFollows, expectsContinue: false,
                                   upgradeRequested: false) {
        case .respond(let status, _):
            respondWithError(status)
        case .respondAtEnd:
            break
        case .acquire:
            armTimer()
            acquireBackend(allowIdle: true, connectTimeout: config.limits.connectTimeout)
        }
    }

    func requestBody(_ buffer: ByteBuffer) {
        guard !isFinished else {
            // Nobody will read it: the client gets its credit back at once.
            connection.consumeRequestBody(streamID: streamID, bytes: buffer.readableBytes)
            return
        }
        let count = buffer.readableBytes
        let queue = machine.queuesRequestParts
        switch machine.receiveBody(bytes: count, now: loopState.eventLoop.now) {
        case .forward:
            guard let backend else { return }
            backend.write(.body(.byteBuffer(buffer)))
            backend.flush()
            creditHeld += count
            giveCreditIfWritable()
        case .none, .respond:
            // Queued bytes keep their credit until they are written: the stream's window bounds the queue.
            if queue { queued.append(.body(.byteBuffer(buffer))) } else {
                connection.consumeRequestBody(streamID: streamID, bytes: count)
            }
        }
    }

    func requestEnd() {
        guard !isFinished else { return }
        let queue = machine.queuesRequestParts
        switch machine.receiveEnd() {
        case .forward:
            backend?.write(.end(nil))
            backend?.flush()
        case .respond(let status):
            respondWithError(status)
        case .none:
            if queue { queued.append(.end(nil)) }
        }
    }

    /// The client reset the stream or asked us to stop sending: the exchange is abandoned, and our side of
    /// the stream is reset too (H3_REQUEST_CANCELLED), so the stream closes and the client may open another.
    func clientAbandoned() {
        guard !isFinished else { return }
        if machine.status == 0 { machine.status = 499 }  // nginx's "client closed request"
        connection.reset(streamID: streamID, code: QUICConnection.h3RequestCancelled)
        writer?.connectionNeedsWrite(connection)
        abandon()
    }

    /// The request's body disagreed with its `content-length`; the connection reset the stream. Logged 400, the
    /// answer the HTTP/1 edge gives such a request, unless a response had begun.
    func requestMalformed() {
        guard !isFinished else { return }
        if machine.status == 0 { machine.status = 400 }
        writer?.connectionNeedsWrite(connection)
        abandon()
    }

    /// The stream or the whole connection is gone.
    func streamGone() {
        guard !isFinished else { return }
        if machine.status == 0 { machine.status = 499 }
        abandon()
    }

    func responseWritable() {
        backend?.resumeReads()
    }

    private func giveCreditIfWritable() {
        guard creditHeld > 0, backend?.isWritable ?? true else { return }
        connection.consumeRequestBody(streamID: streamID, bytes: creditHeld)
        creditHeld = 0
        writer?.connectionNeedsWrite(connection)
    }

    // MARK: - The backend

    private func route(to picked: BalancedServer) {
        server = picked
        countedServer = picked
        setCookie = picked.stickyValue.map { $0[...] } == stickyValue ? nil : picked.stickySetCookie
        pool?.requestEnded()
        let next = loopState.pool(for: picked)
        next.requestStarted()
        pool = next
    }

    private func acquireBackend(allowIdle: Bool, connectTimeout: TimeAmount) {
        guard let pool else { return }
        if allowIdle, let idle = pool.takeIdle() {
            backendAcquired(.success(idle), reused: true, connectTimeout: connectTimeout)
            return
        }
        pool.connect(connectTimeout: connectTimeout) { result in
            self.backendAcquired(result, reused: false, connectTimeout: connectTimeout)
        }
    }

    private func backendAcquired(_ result: Result<BackendHandler, Error>, reused: Bool, connectTimeout: TimeAmount) {
        guard !isFinished, machine.queuesRequestParts else {
            if case .success(let backend) = result { backend.close() }
            return
        }
        if case .failure(let error) = result, !reused, let failed = server {
            loopState.counters.countConnectFailure(failed.metricsKey)
            failed.connectFailed(now: loopState.eventLoop.now)
            machine.upstreamError = .connect(error)
            if routeToAnotherServer(failed) {
                acquireBackend(allowIdle: true, connectTimeout: connectTimeout)
                return
            }
        }
        let acquired = try? result.get()
        let (failure, _) = machine.backendAcquired(success: acquired != nil, reused: reused, fromCallback: true)
        if let failure {
            respondWithError(failure)
            return
        }
        guard let acquired else { return }
        acquired.delegate = self
        backend = acquired
        if let backendHead { acquired.write(.head(backendHead)) }
        let parts = queued
        queued = []
        for part in parts {
            if case .body(.byteBuffer(let buffer)) = part { creditHeld += buffer.readableBytes }
            acquired.write(part)
        }
        acquired.flush()
        giveCreditIfWritable()
    }

    private func routeToAnotherServer(_ failed: BalancedServer) -> Bool {
        guard machine.mayTryAnotherServer() else { return false }
        let snapshot = runtime.snapshot.load(ordering: .relaxed)
        guard let next = loopState.pick(snapshot, clientIP: clientIP, excluding: failed.server) else { return false }
        guard next.server.useHTTP2 == failed.server.useHTTP2, next.server.useTLS == failed.server.useTLS else {
            next.requestFinished()
            return false
        }
        failed.requestFinished()
        countedServer = nil
        route(to: next)
        return true
    }

    func backendRead(_ part: consuming HTTPClientResponsePart, summary: HTTP1HeadSummary?) {
        guard let backend, !isFinished else { return }
        switch consume part {
        case .head(let head):
            let headersValid = backend.deliversCheckedFields || ProxyHeaders.areValid(head.headers)
            let isKeepAlive = summary?.isKeepAlive(version: head.version) ?? ProxyHeaders.isKeepAlive(head)
            switch machine.receiveResponseHead(status: head.status, isKeepAlive: isKeepAlive,
                                               headersValid: headersValid) {
            case .refuse(let status):
                respondWithError(status)
            case .switchProtocols:
                // Never asked for (no upgrade over HTTP/3): ProxyExchange refuses a 101 it did not ask for.
                respondWithError(.badGateway)
            case .relay:
                let (clientHead, _) = ProxyHeaders.clientResponseHead(
                    from: consume head, summary: summary, requestMethod: requestHead.method,
                    requestVersion: requestHead.version, keepAlive: true, framing: .http2)
                var fields: [HTTP3HeaderField] = []
                fields.reserveCapacity(clientHead.headers.count + 1)
                for (name, value) in clientHead.headers where !Self.connectionSpecific(name) {
                    fields.append(HTTP3HeaderField(name: name.lowercased(), value: value))
                }
                if let setCookie { fields.append(HTTP3HeaderField(name: "set-cookie", value: setCookie)) }
                loopState.counters.countResponse(status: machine.status, clientProtocol: .http3)
                connection.respond(streamID: streamID, status: Int(clientHead.status.code), fields: fields, endStream: false)
                writer?.connectionNeedsWrite(connection)
            }
        case .body(let buffer):
            machine.receiveResponseBody(bytes: buffer.readableBytes)
            connection.sendBody(streamID: streamID, buffer)
            if connection.bufferedResponseBytes(streamID: streamID) > Self.responseHighWater {
                backend.pauseReads()
            }
            writer?.connectionNeedsWrite(connection)
        case .end:
            let end = machine.receiveResponseEnd()
            if let server { loopState.observeUpstream(server, started: machine.started) }
            backend.delegate = nil
            self.backend = nil
            giveBackCredit()
            if end.reuseBackend, let pool { pool.release(backend) } else { backend.close() }
            connection.endResponse(streamID: streamID)
            if !machine.requestEnded { connection.stopReadingRequest(streamID: streamID) }
            writer?.connectionNeedsWrite(connection)
            finish()
        }
    }

    func backendReadComplete() {
        guard !isFinished else { return }
        machine.backendReadComplete(now: loopState.eventLoop.now)
    }

    func backendWritabilityChanged(isWritable: Bool) {
        if isWritable { giveCreditIfWritable() }
    }

    func backendClosed() {
        guard backend != nil, !isFinished else { return }
        switch machine.backendClosed() {
        case .retryOnFreshConnection:
            backend = nil
            queued = [.end(nil)]
            acquireBackend(allowIdle: false, connectTimeout: runtime.config.limits.connectTimeout)
        case .respond(let status):
            backend = nil
            respondWithError(status)
        case .closeClient:
            backend = nil
            resetMidResponse()
        case .none:
            break
        }
    }

    /// The response head went out: the response cannot be completed, the stream is reset.
    private func resetMidResponse() {
        connection.reset(streamID: streamID, code: QUICConnection.h3InternalError)
        writer?.connectionNeedsWrite(connection)
        finish()
    }

    // MARK: - Time, errors, the end

    private func armTimer() {
        timer.arm(at: machine.deadline, on: loopState.eventLoop, handler: TimerExpiry(exchange: self))
    }

    // @unchecked: scheduled, called and cancelled on its owner's event loop only (LazyDeadlineTimer).
    private struct TimerExpiry: NIOScheduledCallbackHandler, @unchecked Sendable {
        let exchange: HTTP3Exchange
        func handleScheduledCallback(eventLoop: some EventLoop) {
            exchange.timerFired()
        }
    }

    private func timerFired() {
        timer.fired()
        guard !isFinished else { return }
        switch machine.timerFired(now: loopState.eventLoop.now) {
        case .rearm: armTimer()
        case .respond(let status): respondWithError(status)
        case .abortResponse:
            // The backend went silent mid-response for the request timeout.
            closeBackend()
            resetMidResponse()
        case .none: break
        }
    }

    /// Answers with a short error response (the same text as the other listeners'), closing any backend
    /// connection; the rest of the request is not wanted.
    private func respondWithError(_ status: HTTPResponseStatus) {
        guard !isFinished else { return }
        closeBackend()
        queued = []
        giveBackCredit()
        _ = machine.respondWithError(status, close: false)
        loopState.counters.countResponse(status: machine.status, clientProtocol: .http3)
        let bodyText = EdgeResponse.body(for: status)
        let sendsBody = !requestHead.method.isHEAD
        let fields = [HTTP3HeaderField(name: "content-type", value: "text/plain; charset=utf-8"),
                      HTTP3HeaderField(name: "content-length", value: String(bodyText.utf8.count))]
        connection.respond(streamID: streamID, status: Int(status.code), fields: fields, endStream: !sendsBody)
        if sendsBody {
            var body = ByteBuffer()
            body.writeString(bodyText)
            machine.responseBytes = body.readableBytes
            connection.sendBody(streamID: streamID, body)
            connection.endResponse(streamID: streamID)
        }
        if !machine.requestEnded { connection.stopReadingRequest(streamID: streamID) }
        writer?.connectionNeedsWrite(connection)
        finish()
    }

    /// Credit held for bytes that went to the backend is given back when the exchange ends that way.
    private func giveBackCredit() {
        guard creditHeld > 0 else { return }
        connection.consumeRequestBody(streamID: streamID, bytes: creditHeld)
        creditHeld = 0
    }

    /// The exchange lets go of its backend connection, which closes (its response is not wanted).
    private func closeBackend() {
        if let backend {
            backend.delegate = nil
            backend.close()
            self.backend = nil
        }
    }

    private func abandon() {
        closeBackend()
        queued = []
        finish()
    }

    private func finish() {
        guard !isFinished else { return }
        isFinished = true
        timer.cancel()
        loopState.observeRequest(started: machine.started)
        log()
        endServerCounts()
    }

    private func log() {
        guard let accessLog = loopState.accessLog else { return }
        let elapsed = loopState.eventLoop.now - machine.started
        accessLog.append(AccessLogRecord(
            time: wallTime, listener: runtime.name, protocol: "HTTP/3", clientIP: clientIP, clientPort: clientPort,
            method: requestHead.method.rawValue, host: authority, path: requestHead.uri, status: machine.status,
            requestBytes: machine.requestBytes, responseBytes: machine.responseBytes, upstream: server?.address ?? "",
            upstreamStatus: machine.upstreamStatus, durationMs: Double(elapsed.nanoseconds) / 1_000_000,
            tlsVersion: "TLSv1.3", tlsCipher: "", sni: "", upstreamError: machine.upstreamError?.rawValue ?? ""))
    }

    /// Unacknowledged response bytes of one stream above which its backend is not read (the connection's
    /// ``QUICConnectionConfiguration/responseBufferHighWater``; reading resumes under the low mark).
    static let responseHighWater = QUICConnectionConfiguration().responseBufferHighWater

    /// Fields HTTP/3 forbids in a message (RFC 9114 section 4.2): they describe an HTTP/1 connection.
    private static func connectionSpecific(_ name: String) -> Bool {
        switch name.lowercased() {
        case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te": return true
        default: return false
        }
    }

    static func wallClock() -> Double {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return Double(spec.tv_sec) + Double(spec.tv_nsec) / 1_000_000_000
    }
}

@available(*, unavailable)
extension HTTP3Exchange: Sendable {}
