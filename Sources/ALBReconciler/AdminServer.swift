import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix

/// `alb reconcile --admin ADDR:PORT`: a small HTTP/1.1 server for probes and operators, beside the data
/// plane on the same event loops (SPEC: `/metrics`, `/healthz`, `/readyz`, `/status`):
/// - `GET /metrics`: the Prometheus text format (docs/operations.md lists every family).
/// - `GET /healthz`: 200 `ok` while the process runs its event loops.
/// - `GET /readyz`: 200 `ready` once the first pass is done and every listener serves as its manifest
///   asks; 503 with one line per reason otherwise (``AdminState/readiness``).
/// - `GET /status`: the JSON of `alb status -o json`, from memory rather than the status files.
/// Anything else is 404 (405 for a method other than GET or HEAD). It reads only the published
/// ``AdminState``: a probe never waits for a reconcile pass. `/metrics` sums the data plane's per-loop
/// counters at each scrape (one short task per event loop), also without waiting for a pass.
public final class AdminServer: Sendable {
    private let channel: Channel

    private init(channel: Channel) {
        self.channel = channel
    }

    /// The bound address, e.g. "127.0.0.1:9901".
    public var address: String {
        guard let address = self.channel.localAddress, let port = address.port else { return "" }
        let host = address.ipAddress ?? ""
        return host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }

    public static func start(host: String, port: Int, group: any EventLoopGroup, state: AdminStateBox,
                             metrics: @escaping @Sendable () async -> String = { "" }) async throws -> AdminServer {
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(AdminHandler(state: state, metrics: metrics))
                }
            }
        return AdminServer(channel: try await bootstrap.bind(host: host, port: port).get())
    }

    public func stop() async {
        try? await self.channel.close()
    }
}

/// Answers one admin request at a time (NIO's pipelining handler orders them).
final class AdminHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let state: AdminStateBox
    private let metrics: @Sendable () async -> String
    private var request: HTTPRequestHead?

    init(state: AdminStateBox, metrics: @escaping @Sendable () async -> String = { "" }) {
        self.state = state
        self.metrics = metrics
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch self.unwrapInboundIn(data) {
        case .head(let head):
            self.request = head
        case .body:
            break
        case .end:
            guard let head = self.request else { return }
            self.request = nil
            let (status, type, body) = Self.answer(method: head.method, path: head.uri, state: self.state.current)
            if status == .ok, type == Self.metricsType {
                // Summing the data plane's counters visits every event loop: answered when that is done.
                let context = NIOLoopBound(context, eventLoop: context.eventLoop)
                let metrics = self.metrics
                context.value.eventLoop.makeFutureWithTask { await metrics() }.whenSuccess { text in
                    Self.respond(head: head, status: .ok, type: Self.metricsType, body: Data(text.utf8), context: context.value)
                }
                return
            }
            Self.respond(head: head, status: status, type: type, body: body, context: context)
        }
    }

    /// A request NIO's decoder refused was answered 400 (`Connection: close`) by NIO's protocol error handler
    /// before this; nothing more can be read from the connection, so it closes.
    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }

    /// The content type of `/metrics`: the Prometheus text format, version 0.0.4.
    static let metricsType = "text/plain; version=0.0.4; charset=utf-8"

    /// Writes the response, then closes the connection when the request did not ask to keep it (HTTP/1.0
    /// without `Connection: keep-alive`, or `Connection: close`): a probe written as `printf ... | nc` reads to
    /// the close.
    private static func respond(head: HTTPRequestHead, status: HTTPResponseStatus, type: String, body: Data,
                                context: ChannelHandlerContext) {
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: type)
        headers.add(name: "content-length", value: String(body.count))
        headers.add(name: "cache-control", value: "no-store")
        let keepAlive = head.isKeepAlive
        if !keepAlive {
            headers.add(name: "connection", value: "close")
        } else if head.version.minor == 0 {
            headers.add(name: "connection", value: "keep-alive")
        }
        context.write(Self.wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))),
                      promise: nil)
        if head.method != .HEAD {
            context.write(Self.wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: body)))), promise: nil)
        }
        let written = context.writeAndFlush(Self.wrapOutboundOut(.end(nil)))
        if !keepAlive {
            let context = NIOLoopBound(context, eventLoop: context.eventLoop)
            written.whenComplete { _ in context.value.close(promise: nil) }
        }
    }

    /// The whole answer to a request, as a pure function of the published state (unit-tested).
    static func answer(method: HTTPMethod, path: String, state: AdminState) -> (HTTPResponseStatus, String, Data) {
        let text = "text/plain; charset=utf-8"
        let route = path.split(separator: "?", maxSplits: 1).first.map(String.init) ?? path
        guard ["/metrics", "/healthz", "/readyz", "/status"].contains(route) else {
            return (.notFound, text, Data("not found: the admin endpoint serves /metrics, /healthz, /readyz and /status\n".utf8))
        }
        guard method == .GET || method == .HEAD else {
            return (.methodNotAllowed, text, Data("method not allowed\n".utf8))
        }
        switch route {
        case "/metrics":
            // The body is made by the caller (it needs the data plane); this says where it goes.
            return (.ok, Self.metricsType, Data())
        case "/healthz":
            return (.ok, text, Data("ok\n".utf8))
        case "/readyz":
            let (ready, reasons) = state.readiness
            return ready ? (.ok, text, Data("ready\n".utf8))
                : (.serviceUnavailable, text, Data((["not ready"] + reasons).joined(separator: "\n").utf8 + Data("\n".utf8)))
        default:
            return (.ok, "application/json", state.statusJSON + Data("\n".utf8))
        }
    }
}

@available(*, unavailable)
extension AdminHandler: Sendable {}
