// nio-relay LISTEN_PORT BACKEND_PORT: a TCP relay on 127.0.0.1, one event loop. Each client connection gets a
// backend connection of its own and the bytes of each side are written to the other as they are read: no HTTP
// parsing, no pool, no timers. What it costs per proxied request is what NIO's channels cost (two sockets, a read
// and a write on each, one handler per pipeline), the part of alb's CPU that no change above NIO can remove.
import NIOCore
import NIOPosix

/// Writes what one channel reads to its partner, flushing once per read burst; closes the partner when its own
/// channel closes. Bytes a client sends before its backend connection is up wait in `pending`.
final class RelayHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private var partner: Channel?
    private var pending: [ByteBuffer] = []
    private var needsFlush = false

    init(partner: Channel? = nil) {
        self.partner = partner
    }

    func connect(to partner: Channel) {
        self.partner = partner
        guard !self.pending.isEmpty else { return }
        for buffer in self.pending { partner.write(buffer, promise: nil) }
        self.pending = []
        partner.flush()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = Self.unwrapInboundIn(data)
        guard let partner = self.partner else {
            self.pending.append(buffer)
            return
        }
        partner.write(buffer, promise: nil)
        self.needsFlush = true
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        guard self.needsFlush else { return }
        self.needsFlush = false
        self.partner?.flush()
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.partner?.close(promise: nil)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}

let arguments = CommandLine.arguments
guard arguments.count == 3, let listenPort = Int(arguments[1]), let backendPort = Int(arguments[2]) else {
    print("usage: nio-relay LISTEN_PORT BACKEND_PORT")
    exit(2)
}
let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
let server = try ServerBootstrap(group: group)
    .serverChannelOption(.backlog, value: 1024)
    .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
    .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
    .childChannelInitializer { client in
        let clientSide = RelayHandler()
        return client.pipeline.addHandler(clientSide).flatMap {
            ClientBootstrap(group: client.eventLoop)
                .channelOption(.tcpOption(.tcp_nodelay), value: 1)
                .channelInitializer { backend in backend.pipeline.addHandler(RelayHandler(partner: client)) }
                .connect(host: "127.0.0.1", port: backendPort)
                .map { backend in clientSide.connect(to: backend) }
        }
    }
    .bind(host: "127.0.0.1", port: listenPort)
    .wait()
print("nio-relay: 127.0.0.1:\(listenPort) -> 127.0.0.1:\(backendPort)")
try server.closeFuture.wait()
