import NIOCore
import NIOHTTP1
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
final class BackendHandler: ChannelDuplexHandler {
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
}

@available(*, unavailable)
extension BackendHandler: Sendable {}

/// Keep-alive HTTP/1.1 connections to one backend server, on one event loop (no locks, no hops).
/// A connection comes back only after a complete response with keep-alive and a completely sent request.
final class BackendPool {
    let server: BackendServer
    private let eventLoop: EventLoop
    private var idle: [BackendHandler] = []
    private var closed = false
    /// Idle connections kept per server and loop; more are closed on release.
    static let maxIdle = 128

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

    /// Connects a new connection; `completion` runs on this pool's event loop.
    func connect(
        connectTimeout: TimeAmount,
        _ completion: @escaping (Result<BackendHandler, Error>) -> Void
    ) {
        let bootstrap = ClientBootstrap(group: self.eventLoop)
            .connectTimeout(connectTimeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { [server = self.server] channel in
                do {
                    if server.useTLS {
                        try channel.pipeline.syncOperations.addHandler(try BackendTLS.handler(for: server.host))
                    }
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(BackendHandler())
                    return channel.eventLoop.makeSucceededVoidFuture()
                } catch {
                    return channel.eventLoop.makeFailedFuture(error)
                }
            }
        let future: EventLoopFuture<Channel>
        if let address = try? SocketAddress(ipAddress: self.server.host, port: self.server.port) {
            future = bootstrap.connect(to: address)
        } else {
            future = bootstrap.connect(host: self.server.host, port: self.server.port)
        }
        future.assumeIsolated().whenComplete { result in
            switch result {
            case .success(let channel):
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

    func release(_ connection: BackendHandler) {
        connection.delegate = nil
        connection.resumeReads()
        guard !self.closed, connection.isActive, self.idle.count < Self.maxIdle else {
            connection.close()
            return
        }
        connection.idleIn = self
        self.idle.append(connection)
    }

    func remove(_ connection: BackendHandler) {
        self.idle.removeAll { $0 === connection }
    }

    var idleCount: Int { self.idle.count }

    func closeAll() {
        self.closed = true
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
