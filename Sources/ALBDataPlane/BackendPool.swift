import ALBHTTP
import NIOCore
import NIOHTTP1
import NIOHTTP2
import NIOSSL
import NIOPosix

/// What a backend connection reports to the client-side exchange that currently uses it.
protocol BackendConnectionDelegate: AnyObject {
    func backendRead(_ part: HTTPClientResponsePart)
    func backendReadComplete()
    func backendWritabilityChanged(isWritable: Bool)
    func backendClosed()
}

/// The last handler of a backend connection's pipeline: relays response parts to its delegate,
/// and holds `read()` while the client side cannot take more (backpressure).
final class BackendHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = HTTPClientRequestPart
    typealias OutboundOut = HTTPClientRequestPart

    weak var delegate: BackendConnectionDelegate?
    /// Set while the connection sits idle in a pool, so a close can take it out.
    weak var idleIn: BackendPool?
    private var context: ChannelHandlerContext?
    private var readsPaused = false
    private var readPending = false

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard let delegate = self.delegate else {
            // Bytes from an idle backend are a protocol violation: the connection cannot be reused.
            context.close(promise: nil)
            return
        }
        delegate.backendRead(Self.unwrapInboundIn(data))
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        self.delegate?.backendReadComplete()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        self.delegate?.backendWritabilityChanged(isWritable: context.channel.isWritable)
    }

    func channelInactive(context: ChannelHandlerContext) {
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

    // MARK: - Used by the proxy (same event loop)

    var isActive: Bool { self.context?.channel.isActive ?? false }
    var isWritable: Bool { self.context?.channel.isWritable ?? false }

    func write(_ part: HTTPClientRequestPart) {
        self.context?.write(Self.wrapOutboundOut(part), promise: nil)
    }

    func flush() {
        self.context?.flush()
    }

    func pauseReads() {
        self.readsPaused = true
    }

    func resumeReads() {
        guard self.readsPaused else { return }
        self.readsPaused = false
        if self.readPending {
            self.readPending = false
            self.context?.read()
        }
    }

    func close() {
        self.delegate = nil
        self.context?.close(promise: nil)
    }

    /// After the backend accepted a WebSocket upgrade and its `101` ended: the connection stops speaking
    /// HTTP and becomes `end` of a tunnel. The HTTP/1 codec goes last, its decoder passing on whatever the
    /// backend sent after its `101` (it holds those bytes unparsed: `leftOverBytesStrategy: .forwardBytes`).
    func leaveHTTP(joining end: TunnelEnd) throws {
        guard let pipeline = self.context?.pipeline.syncOperations else { throw ChannelError.ioOnClosedChannel }
        self.delegate = nil
        pipeline.removeHandler(self, promise: nil)
        try pipeline.addHandler(end)
        // NIO's decoder passes its leftovers on with no read-complete after them: flush them once it is out.
        let decoderLeft = pipeline.eventLoop.makePromise(of: Void.self)
        pipeline.removeHandler(try pipeline.handler(type: BackendHTTP1Codec.self), promise: decoderLeft)
        decoderLeft.futureResult.assumeIsolated().whenComplete { _ in end.flushRelayed() }
    }
}

@available(*, unavailable)
extension BackendHandler: Sendable {}

/// Keep-alive HTTP/1.1 connections to one backend server, on one event loop (no locks, no hops).
/// A connection comes back only after a complete response with keep-alive and a completely sent request.
final class BackendPool {
    let server: BackendServer
    private let eventLoop: EventLoop
    private var idle: [BackendHandler] = []
    /// Every open HTTP/1 connection, idle or in use, so a retired server's can be closed after its drain.
    private var open: [ObjectIdentifier: Channel] = [:]
    private var closed = false
    /// Requests sent to this server from this loop, and those of them that ended: plain Ints on the loop,
    /// summed over loops for the group's status (``ServerGroups/load(of:)``).
    private(set) var requestsStarted = 0
    private(set) var requestsEnded = 0
    /// Idle connections kept per server and loop; more are closed on release.
    static let maxIdle = 256

    init(server: BackendServer, eventLoop: EventLoop) {
        self.server = server
        self.eventLoop = eventLoop
    }

    /// An idle, still open connection (most recently used first), or nil. Synchronous, so the
    /// common case of a warm pool costs no closure or future.
    func takeIdle() -> BackendHandler? {
        while let connection = self.idle.popLast() {
            connection.idleIn = nil
            if connection.isActive {
                return connection
            }
        }
        return nil
    }

    /// Connects a new connection (for an HTTP/2 server, opens a new stream); `completion` runs on this
    /// pool's event loop.
    func connect(
        connectTimeout: TimeAmount,
        _ completion: @escaping (Result<BackendHandler, Error>) -> Void
    ) {
        if self.server.useHTTP2 {
            self.openStream(connectTimeout: connectTimeout, completion)
            return
        }
        let bootstrap = ClientBootstrap(group: self.eventLoop)
            .connectTimeout(connectTimeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { [server = self.server] channel in
                do {
                    if server.useTLS {
                        try channel.pipeline.syncOperations.addHandler(try BackendTLS.handler(for: server.host))
                    }
                    // Bytes after a `101` stay unparsed in the codec's decoder until a tunnel takes them.
                    let pipeline = channel.pipeline.syncOperations
                    try pipeline.addHandler(BackendHTTP1Codec())
                    try pipeline.addHandler(BackendHandler())
                    return channel.eventLoop.makeSucceededVoidFuture()
                } catch {
                    return channel.eventLoop.makeFailedFuture(error)
                }
            }
        let future = self.connect(bootstrap)
        future.assumeIsolated().whenComplete { result in
            switch result {
            case .success(let channel):
                let id = ObjectIdentifier(channel)
                self.open[id] = channel
                channel.closeFuture.assumeIsolated().whenComplete { _ in self.open[id] = nil }
                do {
                    let handler = try channel.pipeline.syncOperations.handler(type: BackendHandler.self)
                    completion(.success(handler))
                } catch {
                    channel.close(promise: nil)
                    completion(.failure(error))
                }
            case .failure(let error):
                completion(.failure(error))
            }
        }
    }

    /// The server by IP address when it is one (no resolver round trip), else by host name.
    private func connect(_ bootstrap: ClientBootstrap) -> EventLoopFuture<Channel> {
        bootstrap.connect(server: self.server.host, port: self.server.port)
    }

    func requestStarted() {
        self.requestsStarted &+= 1
    }

    func requestEnded() {
        self.requestsEnded &+= 1
    }

    func release(_ connection: BackendHandler) {
        connection.delegate = nil
        connection.resumeReads()
        // An HTTP/2 stream serves one request; its connection is what stays.
        guard !self.closed, !self.server.useHTTP2, connection.isActive, self.idle.count < Self.maxIdle else {
            connection.close()
            return
        }
        connection.idleIn = self
        self.idle.append(connection)
    }

    // MARK: - HTTP/2 (gRPC server groups)

    /// The one HTTP/2 connection to this server on this loop, and requests waiting while it connects.
    private var http2: (channel: Channel, multiplexer: NIOHTTP2Handler.StreamMultiplexer)?
    private var http2Waiting: [(Result<BackendHandler, Error>) -> Void] = []

    private func openStream(connectTimeout: TimeAmount, _ completion: @escaping (Result<BackendHandler, Error>) -> Void) {
        if let http2 = self.http2, http2.channel.isActive {
            Self.createStream(on: http2.multiplexer, eventLoop: self.eventLoop, completion)
            return
        }
        self.http2Waiting.append(completion)
        guard self.http2Waiting.count == 1 else { return }  // a connect is under way
        let bootstrap = ClientBootstrap(group: self.eventLoop)
            .connectTimeout(connectTimeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    _ = try channel.pipeline.syncOperations.configureHTTP2Pipeline(
                        mode: .client, connectionConfiguration: NIOHTTP2Handler.ConnectionConfiguration(),
                        streamConfiguration: NIOHTTP2Handler.StreamConfiguration()
                    ) { stream in stream.eventLoop.makeSucceededVoidFuture() }  // the server opens no streams
                }
            }
        let future = self.connect(bootstrap)
        future.assumeIsolated().whenComplete { result in
            let waiting = self.http2Waiting
            self.http2Waiting = []
            switch result {
            case .success(let channel):
                do {
                    let multiplexer = try channel.pipeline.syncOperations.handler(type: NIOHTTP2Handler.self).syncMultiplexer()
                    if self.closed {
                        channel.close(promise: nil)
                        waiting.forEach { $0(.failure(ChannelError.ioOnClosedChannel)) }
                        return
                    }
                    self.http2 = (channel, multiplexer)
                    channel.closeFuture.assumeIsolated().whenComplete { _ in
                        if self.http2?.channel === channel { self.http2 = nil }
                    }
                    for completion in waiting {
                        Self.createStream(on: multiplexer, eventLoop: self.eventLoop, completion)
                    }
                } catch {
                    channel.close(promise: nil)
                    waiting.forEach { $0(.failure(error)) }
                }
            case .failure(let error):
                waiting.forEach { $0(.failure(error)) }
            }
        }
    }

    private static func createStream(on multiplexer: NIOHTTP2Handler.StreamMultiplexer, eventLoop: EventLoop,
                                     _ completion: @escaping (Result<BackendHandler, Error>) -> Void) {
        multiplexer.createStreamChannel { stream in
            stream.eventLoop.makeCompletedFuture {
                try stream.pipeline.syncOperations.addHandler(HTTP2FramePayloadToHTTP1ClientCodec(httpProtocol: .http))
                try stream.pipeline.syncOperations.addHandler(BackendHandler())
            }
        }.hop(to: eventLoop).assumeIsolated().whenComplete { result in
            completion(result.flatMap { stream in
                Result { try stream.pipeline.syncOperations.handler(type: BackendHandler.self) }
            })
        }
    }

    func remove(_ connection: BackendHandler) {
        self.idle.removeAll { $0 === connection }
    }

    var idleCount: Int { self.idle.count }

    /// The server left every group: it gets no new requests, its idle connections close now and those in
    /// use when their exchange ends (the pool is closed), and whatever is still open after `drainTimeout`
    /// (a long download, a WebSocket tunnel, gRPC streams) is closed then.
    func retire(drainTimeout: TimeAmount) {
        var remaining = Array(self.open.values)
        if let http2 = self.http2?.channel { remaining.append(http2) }
        self.http2 = nil
        self.closed = true
        self.closeIdle()
        guard !remaining.isEmpty else { return }
        self.eventLoop.assumeIsolated().scheduleTask(in: drainTimeout) {
            for channel in remaining { channel.close(promise: nil) }
        }
    }

    func closeAll() {
        self.closed = true
        self.http2?.channel.close(promise: nil)
        self.http2 = nil
        self.closeIdle()
    }

    private func closeIdle() {
        let connections = self.idle
        self.idle.removeAll()
        for connection in connections {
            connection.idleIn = nil
            connection.close()
        }
    }
}

@available(*, unavailable)
extension BackendPool: Sendable {}

/// TLS to HTTPS server groups. Like nginx's `proxy_ssl_verify off` (its default) and ALB's HTTPS backends,
/// the backend's certificate is not verified: backends are usually addressed by IP with internal
/// certificates. SNI carries the server's host name when it is one (never an IP address).
enum BackendTLS {
    static let context: NIOSSLContext? = {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.certificateVerification = .none
        configuration.minimumTLSVersion = .tlsv12
        configuration.applicationProtocols = ["http/1.1"]
        return try? NIOSSLContext(configuration: configuration)
    }()

    static func handler(for host: String) throws -> NIOSSLClientHandler {
        guard let context else { throw DataPlaneError.invalidConfig(listener: "", reason: "no TLS client context") }
        let isAddress = (try? SocketAddress(ipAddress: host, port: 0)) != nil
        return try NIOSSLClientHandler(context: context, serverHostname: isAddress ? nil : host)
    }
}

extension ClientBootstrap {
    /// Connects to a backend given as an IP address (no resolver involved) or a host name.
    func connect(server host: String, port: Int) -> EventLoopFuture<Channel> {
        if let address = try? SocketAddress(ipAddress: host, port: port) {
            return self.connect(to: address)
        }
        return self.connect(host: host, port: port)
    }
}
