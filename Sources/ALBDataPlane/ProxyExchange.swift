import ALBHTTP
import NIOCore
import NIOHTTP1

/// One request/response exchange of the reverse proxy as a state machine that performs no I/O.
///
/// A transport adapter (today the HTTP/1 connection handler, ``ProxyHandler``; an HTTP/2 stream next)
/// feeds it what happens (the request's parts, the backend's parts, the backend connection coming and
/// going, the request timer) and does what each call returns. It decides everything that does not
/// depend on the transport: when to pick and connect, what to queue, when a backend answer is refused
/// (502), when the request has timed out (504), whether a failed connection may be retried, whether the
/// backend connection can be reused and whether the client connection can stay open. Time is passed in
/// as `NIODeadline`s, so tests drive it with a manual clock.
///
/// The facts it keeps (sizes, status, timing) are what the access log records.
struct ProxyExchange {
    enum Phase: Equatable {
        /// Waiting for a backend connection; request parts are queued (at most one read's worth).
        case acquiring
        case forwarding
        /// No server is available for a bodyless request: answered once its end has arrived, so the
        /// connection can stay open.
        case rejecting(HTTPResponseStatus)
        /// Answered (by the backend or with an error); nothing more is forwarded.
        case finished
    }

    /// What to do with a request head.
    enum HeadDecision: Equatable {
        /// Answer at once with this error; `close` when the connection cannot be reused.
        case respond(HTTPResponseStatus, close: Bool)
        /// Answer with this error once the (bodyless) request's end has arrived.
        case respondAtEnd(HTTPResponseStatus)
        /// Acquire a backend connection; answer `100 Continue` first when the client expects it.
        case acquire(sendContinue: Bool)
    }

    /// What to do with a part of the request body or its end.
    enum RequestPartAction: Equatable {
        /// Nothing: the part was queued, or the exchange no longer forwards.
        case none
        /// Write it to the backend; `flush` for the request's end.
        case forward(flush: Bool)
        case respond(HTTPResponseStatus)
    }

    /// What to do with the backend's response head.
    enum ResponseHeadDecision: Equatable {
        /// Relay it; the client connection stays open after the response when `keepAlive`.
        case relay(keepAlive: Bool)
        /// The backend accepted a WebSocket upgrade: relay its `101`; once its head has ended, both
        /// connections become one byte tunnel.
        case switchProtocols
        /// Close the backend connection and answer the client with this error instead.
        case refuse(HTTPResponseStatus)
    }

    /// What to do after the backend's response ended.
    struct ResponseEnd: Equatable {
        /// Put the backend connection back in the pool (a complete keep-alive response to a fully sent
        /// request); otherwise close it.
        var reuseBackend: Bool
        var closeClient: Bool
        /// The `101` is complete: join client and backend connections into a tunnel (neither is reused nor
        /// closed).
        var tunnel = false
    }

    /// What to do when the backend connection closed before the exchange ended.
    enum BackendClosedAction: Equatable {
        /// A pooled connection closed just as it was reused (the keep-alive race): replay the bodyless
        /// request once on a fresh connection.
        case retryOnFreshConnection
        case respond(HTTPResponseStatus)
        /// The response head was sent: the response cannot be completed; closing tells the client.
        case closeClient
        case none
    }

    enum TimerAction: Equatable {
        case rearm(NIODeadline)
        case respond(HTTPResponseStatus)
        /// The response head went out and the backend then sent nothing for the request timeout: the response
        /// cannot be completed. Close the backend connection and end the client's response as a failure (close
        /// an HTTP/1 connection, reset a stream).
        case abortResponse
        case none
    }

    private(set) var phase: Phase
    let method: HTTPMethod
    let version: HTTPVersion
    let clientKeepAlive: Bool
    let started: NIODeadline
    let requestTimeout: TimeAmount
    private(set) var lastProgress: NIODeadline
    /// Some of the response arrived since ``lastProgress`` was last set from it (``backendReadComplete(now:)``).
    private var responseProgressed = false
    private(set) var requestEnded = false
    private(set) var responseHeadSent = false
    private(set) var backendKeepAlive = false
    private(set) var closeClientAfterResponse = false
    private(set) var reusedConnection = false
    private(set) var retried = false
    private(set) var triedAnotherServer = false
    private(set) var bodyBytes = 0
    /// Whether the request asked to switch to WebSocket (the only case a 101 may be relayed). Its client
    /// connection is not read as HTTP again: it becomes a tunnel or closes after the response.
    private(set) var askedToUpgrade = false
    private(set) var switchedProtocols = false
    /// Access-log facts.
    /// Why the backend side failed, when it did (the access log's `upstream_error`).
    var upstreamError: UpstreamError?
    var requestBytes: Int
    var responseBytes = 0
    var status = 0
    var upstreamStatus: Int?

    /// - Parameter clientKeepAlive: whether the request keeps its connection, when the caller knows already.
    init(head: HTTPRequestHead, clientKeepAlive: Bool? = nil, started: NIODeadline, requestTimeout: TimeAmount,
         requestBytes: Int) {
        self.phase = .acquiring
        self.method = head.method
        self.version = head.version
        self.clientKeepAlive = clientKeepAlive ?? ProxyHeaders.isKeepAlive(head.headers, version: head.version)
        self.started = started
        self.lastProgress = started
        self.requestTimeout = requestTimeout
        self.requestBytes = requestBytes
    }

    /// Whether the request may go to a backend at all: the balancer is asked only then, so a refused
    /// request does not move the weighted round robin.
    var mayReachBackend: Bool { !self.method.isCONNECT }

    /// When the request times out unless body bytes keep flowing.
    var deadline: NIODeadline { self.lastProgress + self.requestTimeout }

    // MARK: - The request

    /// Decides what a new request gets. `serverAvailable` is the balancer's answer for this request;
    /// `hasBody` whether its head announces a body; `expectsContinue` an HTTP/1.1 `Expect: 100-continue`;
    /// `upgradeRequested` a (well-formed) WebSocket upgrade.
    mutating func receiveHead(serverAvailable: Bool, hasBody: Bool, expectsContinue: Bool,
                              upgradeRequested: Bool) -> HeadDecision {
        self.askedToUpgrade = upgradeRequested
        if self.method.isCONNECT {
            // A reverse proxy opens no tunnels, and the bytes after such a head are not HTTP.
            return .respond(.notImplemented, close: true)
        }
        guard serverAvailable else {
            self.upstreamError = .noServer
            if hasBody {
                return .respond(.serviceUnavailable, close: true)  // the body is not read
            }
            self.phase = .rejecting(.serviceUnavailable)  // its end follows at once
            return .respondAtEnd(.serviceUnavailable)
        }
        return .acquire(sendContinue: expectsContinue)
    }

    mutating func receiveBody(bytes: Int, now: NIODeadline) -> RequestPartAction {
        self.requestBytes += bytes
        self.bodyBytes += bytes
        self.lastProgress = now
        return self.phase == .forwarding ? .forward(flush: false) : .none
    }

    mutating func receiveEnd() -> RequestPartAction {
        self.requestEnded = true
        switch self.phase {
        case .forwarding: return .forward(flush: true)
        case .rejecting(let status): return .respond(status)
        case .acquiring, .finished: return .none
        }
    }

    /// Whether request parts must be queued for a backend connection that is not there yet.
    var queuesRequestParts: Bool { self.phase == .acquiring }

    // MARK: - The backend connection

    /// A backend connection is ready (or could not be had). On success the adapter writes the request
    /// head and everything queued; it flushes at once unless the request is still arriving within the
    /// current read (`flushNow` false: the read's end flushes).
    /// A connect to the picked server failed (refused, reset, timed out): nothing of the request reached a
    /// backend, so it may go to another server, once per exchange (issue 7: one retry, never after request
    /// bytes were sent). False means answer 502 (``backendAcquired(success:reused:fromCallback:)``).
    mutating func mayTryAnotherServer() -> Bool {
        guard self.phase == .acquiring, !self.triedAnotherServer else { return false }
        self.triedAnotherServer = true
        return true
    }

    mutating func backendAcquired(success: Bool, reused: Bool, fromCallback: Bool) -> (respond: HTTPResponseStatus?, flushNow: Bool) {
        guard self.phase == .acquiring else { return (nil, false) }
        guard success else {
            if self.upstreamError == nil { self.upstreamError = .connectFailed }
            return (.badGateway, false)
        }
        self.phase = .forwarding
        self.reusedConnection = reused
        return (nil, fromCallback || self.requestEnded)
    }

    /// `acceptsWebSocket`: the head is a `101` that names `websocket` (``WebSocketHandshake/isAccepted(_:)``).
    /// From here the request timeout measures the backend's silence between reads of the response
    /// (``backendReadComplete(now:)``).
    mutating func receiveResponseHead(status: HTTPResponseStatus, isKeepAlive: Bool, headersValid: Bool,
                                      acceptsWebSocket: Bool = false) -> ResponseHeadDecision {
        guard headersValid else {
            self.upstreamError = .invalidResponse
            return .refuse(.badGateway)
        }
        self.responseProgressed = true
        self.upstreamStatus = Int(status.code)
        if status == .switchingProtocols {
            // Any other 101, relayed, would leave the client waiting for a protocol that never starts.
            guard self.askedToUpgrade, acceptsWebSocket, self.requestEnded else {
                self.upstreamError = .invalidResponse
                return .refuse(.badGateway)
            }
            self.switchedProtocols = true
            self.status = 101
            self.responseHeadSent = true
            return .switchProtocols
        }
        self.backendKeepAlive = isKeepAlive
        self.status = Int(status.code)
        self.responseHeadSent = true
        return .relay(keepAlive: self.clientKeepAlive && self.requestEnded && !self.askedToUpgrade)
    }

    /// The framing stage decided the connection closes after this response (an HTTP/1.0 client with
    /// an unframed body, or `Connection: close`).
    mutating func closeClientAfterResponse(_ close: Bool) {
        self.closeClientAfterResponse = close
    }

    mutating func receiveResponseBody(bytes: Int) {
        self.responseBytes += bytes
        self.responseProgressed = true
    }

    /// The backend's read is over: if it carried some of the response, the silence the request timeout bounds
    /// starts now. Read once a read rather than at each part: a small response has ended by then, and its
    /// exchange asks for no time at all.
    mutating func backendReadComplete(now: @autoclosure () -> NIODeadline) {
        guard self.responseProgressed else { return }
        self.responseProgressed = false
        self.lastProgress = now()
    }

    mutating func receiveResponseEnd() -> ResponseEnd {
        self.phase = .finished
        if self.switchedProtocols {
            return ResponseEnd(reuseBackend: false, closeClient: false, tunnel: true)
        }
        return ResponseEnd(reuseBackend: self.requestEnded && self.backendKeepAlive,
                           closeClient: self.closeClientAfterResponse || !self.requestEnded || self.askedToUpgrade)
    }

    mutating func backendClosed() -> BackendClosedAction {
        guard self.phase == .forwarding else { return .none }
        if !self.responseHeadSent && self.reusedConnection && !self.retried && self.requestEnded && self.bodyBytes == 0 {
            self.retried = true
            self.phase = .acquiring
            return .retryOnFreshConnection
        }
        if !self.responseHeadSent {
            self.upstreamError = .closedBeforeResponse
            return .respond(.badGateway)
        }
        self.phase = .finished
        self.upstreamError = .closedMidResponse
        return .closeClient
    }

    // MARK: - Time and errors

    /// The request timeout bounds the wait for the response head (504), and then the backend's silence between
    /// reads of the response body, as nginx's `proxy_read_timeout` does: a backend that stops mid-response would
    /// otherwise hold the client, its connection and its server's count of requests in flight forever.
    mutating func timerFired(now: NIODeadline) -> TimerAction {
        switch self.phase {
        case .acquiring, .forwarding: break
        case .rejecting, .finished: return .none
        }
        guard !self.switchedProtocols else { return .none }  // a tunnel has its own idle timeout
        self.backendReadComplete(now: now)  // (a read's end always comes first; this only makes sure)
        // Body bytes still flowing (the request's to the backend, then the response's from it) extend the deadline.
        if self.deadline > now { return .rearm(self.deadline) }
        guard self.responseHeadSent else {
            self.upstreamError = .noResponseInTime
            return .respond(.gatewayTimeout)
        }
        self.phase = .finished
        self.upstreamError = .silentMidResponse
        return .abortResponse
    }

    /// The exchange is answered with an error by the proxy itself; returns whether the client
    /// connection stays open after it (the request is complete, the client wants keep-alive and the
    /// error does not demand a close).
    mutating func respondWithError(_ status: HTTPResponseStatus, close: Bool) -> Bool {
        self.phase = .finished
        self.status = Int(status.code)
        self.responseHeadSent = true
        return self.clientKeepAlive && self.requestEnded && !close && !self.askedToUpgrade
    }
}

/// Why an exchange's backend side failed, as the access log's `upstream_error` says it (nginx's error log, HAProxy's
/// termination flags, Envoy's response flags): empty when nothing failed there.
enum UpstreamError: String, Sendable {
    /// No server with a weight above 0 is in rotation (503).
    case noServer = "no server available"
    /// The connect was refused (502, after the one retry on another server).
    case connectRefused = "connect refused"
    /// The connect timed out (502, after the one retry).
    case connectTimeout = "connect timed out"
    case connectFailed = "connect failed"
    /// The backend closed, reset or sent what is no HTTP/1 response before a response head (502).
    case closedBeforeResponse = "closed before a valid response head"
    /// A response head that may not be relayed: a field that cannot go on, an unasked-for `101` (502).
    case invalidResponse = "invalid response head"
    /// No response head within the request timeout (504).
    case noResponseInTime = "no response head within the request timeout"
    /// The response head went out, then the backend closed or broke its framing.
    case closedMidResponse = "closed mid-response"
    /// The response head went out, then nothing came for the request timeout.
    case silentMidResponse = "silent mid-response for the request timeout"
}
