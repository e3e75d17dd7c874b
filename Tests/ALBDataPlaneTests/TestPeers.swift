import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import XCTest

@testable import ALBDataPlane

/// A counter that tests can read from any thread.
final class Counter: Sendable {
    private let count = NIOLockedValueBox(0)
    func increment() { self.count.withLockedValue { $0 += 1 } }
    var value: Int { self.count.withLockedValue { $0 } }
}

/// A tiny HTTP/1.1 backend: `/slow` answers after 3 s, `/count` answers the request body size,
/// `/headers` echoes the request headers, `/big` sends 2 MiB, anything else answers its name.
final class TestBackend: Sendable {
    let name: String
    let channel: Channel
    let connections: Counter
    let requests: Counter

    var port: Int { self.channel.localAddress?.port ?? 0 }

    private init(name: String, channel: Channel, connections: Counter, requests: Counter) {
        self.name = name
        self.channel = channel
        self.connections = connections
        self.requests = requests
    }

    static func start(name: String, group: EventLoopGroup, port: Int = 0) async throws -> TestBackend {
        let connections = Counter()
        let requests = Counter()
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                connections.increment()
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(BackendResponder(name: name, requests: requests))
                }
            }
            .bind(host: "127.0.0.1", port: port).get()
        return TestBackend(name: name, channel: channel, connections: connections, requests: requests)
    }

    func stop() async {
        try? await self.channel.close()
    }
}

final class BackendResponder: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let name: String
    let requests: Counter
    private var head: HTTPRequestHead?
    private var bodyBytes = 0

    init(name: String, requests: Counter) {
        self.name = name
        self.requests = requests
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch self.unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
            self.bodyBytes = 0
            self.requests.increment()
        case .body(let buffer):
            self.bodyBytes += buffer.readableBytes
        case .end:
            guard let head = self.head else { return }
            switch head.uri {
            case "/slow":
                context.eventLoop.assumeIsolated().scheduleTask(in: .seconds(3)) {
                    self.respond(context: context, body: "slow")
                }
            case "/count":
                self.respond(context: context, body: "\(self.bodyBytes)")
            case "/headers":
                self.respond(context: context, body: head.headers.map { "\($0.name): \($0.value)" }.joined(separator: "\n"))
            case "/big":
                self.respond(context: context, body: String(repeating: "x", count: 2 * 1024 * 1024))
            default:
                self.respond(context: context, body: self.name)
            }
        }
    }

    private func respond(context: ChannelHandlerContext, body: String) {
        var headers = HTTPHeaders()
        headers.add(name: "content-length", value: String(body.utf8.count))
        headers.add(name: "x-backend", value: self.name)
        context.write(Self.wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))), promise: nil)
        context.write(Self.wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: body)))), promise: nil)
        context.writeAndFlush(Self.wrapOutboundOut(.end(nil)), promise: nil)
    }
}

struct TestResponse: Sendable {
    var status: Int
    var headers: HTTPHeaders
    var body: String
}

/// Collects responses for a keep-alive HTTP client connection, in order.
final class ResponseQueue: Sendable {
    private let waiting = NIOLockedValueBox<[EventLoopPromise<TestResponse>]>([])

    func push(_ promise: EventLoopPromise<TestResponse>) {
        self.waiting.withLockedValue { $0.append(promise) }
    }

    func pop() -> EventLoopPromise<TestResponse>? {
        self.waiting.withLockedValue { $0.isEmpty ? nil : $0.removeFirst() }
    }

    func failAll(_ error: Error) {
        while let promise = self.pop() { promise.fail(error) }
    }
}

final class ClientCollector: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart
    let queue: ResponseQueue
    private var head: HTTPResponseHead?
    private var body = ""

    init(queue: ResponseQueue) { self.queue = queue }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch self.unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
            self.body = ""
        case .body(let buffer):
            self.body += String(buffer: buffer)
        case .end:
            if let head = self.head {
                self.queue.pop()?.succeed(TestResponse(status: Int(head.status.code), headers: head.headers, body: self.body))
            }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.queue.failAll(ChannelError.eof)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        self.queue.failAll(error)
        context.close(promise: nil)
    }
}

/// A keep-alive HTTP/1.1 client connection.
final class TestClient: Sendable {
    let channel: Channel
    let queue: ResponseQueue

    private init(channel: Channel, queue: ResponseQueue) {
        self.channel = channel
        self.queue = queue
    }

    static func connect(_ address: String, group: EventLoopGroup) async throws -> TestClient {
        let queue = ResponseQueue()
        let (host, port) = try splitAddress(address)
        let channel = try await ClientBootstrap(group: group)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(ClientCollector(queue: queue))
                }
            }
            .connect(host: host, port: port).get()
        return TestClient(channel: channel, queue: queue)
    }

    func request(
        _ method: HTTPMethod = .GET,
        _ uri: String,
        headers: [(String, String)] = [],
        body: ByteBuffer? = nil
    ) async throws -> TestResponse {
        var httpHeaders = HTTPHeaders([("Host", "test.local")] + headers)
        if let body { httpHeaders.add(name: "content-length", value: String(body.readableBytes)) }
        let promise = self.channel.eventLoop.makePromise(of: TestResponse.self)
        self.queue.push(promise)
        self.channel.write(HTTPClientRequestPart.head(HTTPRequestHead(version: .http1_1, method: method, uri: uri, headers: httpHeaders)), promise: nil)
        if let body {
            self.channel.write(HTTPClientRequestPart.body(.byteBuffer(body)), promise: nil)
        }
        self.channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
        return try await promise.futureResult.get()
    }

    func close() async {
        try? await self.channel.close()
    }
}

func splitAddress(_ address: String) throws -> (String, Int) {
    guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]) else {
        throw ChannelError.inappropriateOperationForState
    }
    return (String(address[..<colon]).trimmingCharacters(in: CharacterSet(charactersIn: "[]")), port)
}

/// Collects raw bytes until the peer closes.
final class RawCollector: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    private let text = NIOLockedValueBox("")
    var received: String { self.text.withLockedValue { $0 } }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let chunk = String(buffer: self.unwrapInboundIn(data))
        self.text.withLockedValue { $0 += chunk }
    }
}

/// Sends raw bytes and returns what came back once the server closed (or after `timeout`).
func rawExchange(_ address: String, _ request: String, group: EventLoopGroup, timeout: TimeAmount = .seconds(5)) async throws -> (text: String, closed: Bool) {
    let (host, port) = try splitAddress(address)
    let collector = RawCollector()
    let channel = try await ClientBootstrap(group: group)
        .channelInitializer { channel in
            channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(collector) }
        }
        .connect(host: host, port: port).get()
    try await channel.writeAndFlush(ByteBuffer(string: request)).get()
    let closed = await waitForClose(channel, timeout: timeout)
    try? await channel.close()
    return (collector.received, closed)
}

/// True if the channel closed within `timeout`.
func waitForClose(_ channel: Channel, timeout: TimeAmount) async -> Bool {
    let deadline = NIODeadline.now() + timeout
    while NIODeadline.now() < deadline {
        if !channel.isActive { return true }
        try? await Task.sleep(nanoseconds: 20_000_000)
    }
    return !channel.isActive
}

/// A backend that answers every read with the same canned bytes, then optionally closes.
final class CannedResponder: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    let response: String
    let close: Bool

    init(response: String, close: Bool) {
        self.response = response
        self.close = close
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let close = self.close
        context.writeAndFlush(Self.wrapOutboundOut(ByteBuffer(string: self.response))).assumeIsolated().whenComplete { _ in
            if close { context.close(promise: nil) }
        }
    }
}

func startCannedBackend(_ response: String, close: Bool, group: EventLoopGroup) async throws -> Channel {
    try await ServerBootstrap(group: group)
        .childChannelInitializer { channel in
            channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHandler(CannedResponder(response: response, close: close))
            }
        }
        .bind(host: "127.0.0.1", port: 0).get()
}

/// A backend that accepts connections but never reads (for backpressure tests).
func startStalledBackend(group: EventLoopGroup) async throws -> Channel {
    try await ServerBootstrap(group: group)
        .childChannelOption(.autoRead, value: false)
        .childChannelOption(.socketOption(.so_rcvbuf), value: 64 * 1024)
        .bind(host: "127.0.0.1", port: 0).get()
}

/// Data-plane tests over real sockets on 127.0.0.1: an event loop group of `loopCount` loops, and the data
/// planes, backends and clients a test starts, all stopped after it.
class DataPlaneTestCase: XCTestCase {
    /// Loops in the group (override for one loop, where pooling must be observable).
    class var loopCount: Int { 2 }

    private var group: MultiThreadedEventLoopGroup?
    private var planes: [DataPlane] = []
    private var backends: [TestBackend] = []
    private var clients: [TestClient] = []
    private var refusingSockets: [Int32] = []

    override func setUp() async throws {
        self.group = MultiThreadedEventLoopGroup(numberOfThreads: Self.loopCount)
    }

    override func tearDown() async throws {
        for client in self.clients { await client.close() }
        for plane in self.planes { await plane.shutdown(drainTimeout: .milliseconds(100)) }
        for backend in self.backends { await backend.stop() }
        for socket in self.refusingSockets { Glibc.close(socket) }
        try await self.group?.shutdownGracefully()
    }

    /// A loopback port that refuses connections until the test ends (``refusingLoopbackSocket()``).
    func refusingPort() throws -> Int {
        let refusing = try refusingLoopbackSocket()
        self.refusingSockets.append(refusing.descriptor)
        return refusing.port
    }

    var loopGroup: EventLoopGroup {
        get throws { try XCTUnwrap(self.group) }
    }

    /// A data plane on the test's group, shut down after the test.
    func plane(accessLog: AccessLog? = nil, drainTimeout: TimeAmount = .seconds(30),
               parkIdleConnectionsAfter: TimeAmount? = nil) throws -> DataPlane {
        let plane = try DataPlane(group: try self.loopGroup, accessLog: accessLog, drainTimeout: drainTimeout,
                                  parkIdleConnectionsAfter: parkIdleConnectionsAfter)
        self.planes.append(plane)
        return plane
    }

    func backend(_ name: String) async throws -> TestBackend {
        let backend = try await TestBackend.start(name: name, group: try self.loopGroup)
        self.backends.append(backend)
        return backend
    }

    func client(_ address: String) async throws -> TestClient {
        let client = try await TestClient.connect(address, group: try self.loopGroup)
        self.clients.append(client)
        return client
    }
}

/// A loopback port that refuses connections while the returned socket is open: a TCP socket bound to it and not
/// listening (a connect gets `ECONNREFUSED`). A port freed by closing a server instead could be handed out again
/// by the next bind to port 0, the test's own listener's, which then answers where a refusal was wanted.
func refusingLoopbackSocket() throws -> (descriptor: Int32, port: Int) {
    let socket = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard socket >= 0 else { throw IOError(errnoCode: errno, reason: "socket") }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) { pointer in
        pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { generic in
            bind(socket, generic, length) == 0 && getsockname(socket, generic, &length) == 0
        }
    }
    guard bound else {
        let code = errno
        Glibc.close(socket)
        throw IOError(errnoCode: code, reason: "bind")
    }
    return (socket, Int(UInt16(bigEndian: address.sin_port)))
}
