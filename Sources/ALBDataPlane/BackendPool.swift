import ALBHTTP
import NIOCore
import NIOHTTP1
import NIOHTTP2
import NIOSSL
import NIOPosix

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

    /// What the loop's HTTP/1 connections share (``BackendPools/http1Memory``).
    private let http1Memory: HTTP1LoopMemory?

    init(server: BackendServer, eventLoop: EventLoop, http1Memory: HTTP1LoopMemory? = nil) {
        self.server = server
        self.eventLoop = eventLoop
        self.http1Memory = http1Memory
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
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelOption(.recvAllocator, value: DataPlane.backendReceiveAllocator)
            .channelInitializer { [server = self.server, memory = NIOLoopBound(self.http1Memory, eventLoop: self.eventLoop)] channel in
                // On this pool's loop, as the bootstrap's group is that loop alone: the loop's memory may be used.
                let memory = memory.value
                do {
                    if server.useTLS {
                        try channel.pipeline.syncOperations.addHandler(try BackendTLS.handler(for: server.host))
                    }
                    // The proxy drops the hop-by-hop fields of every response it relays: the decoder leaves
                    // them out for it.
                    let decoder = StrictHTTPResponseDecoder(fieldTexts: memory?.fieldTexts, leavesOutHopByHop: true)
                    try channel.pipeline.syncOperations.addHandler(
                        BackendHTTP1Handler(decoder: decoder, headBuffer: memory?.heads))
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

    /// Requests picked for this server on this loop and not yet over.
    var activeRequests: Int { self.requestsStarted &- self.requestsEnded }

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
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
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
                try stream.pipeline.syncOperations.addHandler(BackendHTTP2StreamHandler())
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

extension UpstreamError {
    /// A failed connect's cause, from the error NIO reports (a timeout, or `ECONNREFUSED` among the addresses tried).
    static func connect(_ error: Error) -> UpstreamError {
        if case ChannelError.connectTimeout = error { return .connectTimeout }
        let refused = { (error: Error) in (error as? IOError)?.errnoCode == ECONNREFUSED }
        if refused(error) { return .connectRefused }
        if let failures = error as? NIOConnectionError, failures.connectionErrors.contains(where: { refused($0.error) }) {
            return .connectRefused
        }
        return .connectFailed
    }
}
