import ALBHTTP
import ALBTLS
import NIOCore
import NIOSSL
import NIOTLS

/// How a listener's accepted connections reach the HTTP pipeline: the seam each transport plugs into.
/// Plain TCP adds nothing; TLS adds the handshake in front (with ALPN offering what the listener serves);
/// QUIC will bring its own datagram channel through the same place.
enum ListenerTransport {
    case plainTCP
    case tls(ServerTLS)

    init(_ config: ListenerConfig) {
        self = config.tls.map(ListenerTransport.tls) ?? .plainTCP
    }

    /// `http` or `https`, for `X-Forwarded-Proto` and the access log.
    var scheme: String {
        switch self {
        case .plainTCP: "http"
        case .tls: "https"
        }
    }

    /// Adds the transport's handlers to a new connection, then the HTTP side: `http1` at once for plain
    /// TCP, and after the TLS handshake whichever protocol ALPN chose (`http2` for `h2`, `http1` for
    /// `http/1.1` or a client that offered nothing). A TLS client that stalls in its handshake is closed
    /// after `handshakeTimeout` (the header timeout: no request can start before the handshake ends).
    /// The HTTP side gets the connection's `TLSConnectionFacts` on TLS, nil on plain TCP.
    func configure(_ channel: Channel, handshakeTimeout: TimeAmount,
                   http1: @escaping (Channel, TLSConnectionFacts?) throws -> Void,
                   http2: @escaping (Channel, TLSConnectionFacts?) throws -> Void) throws {
        switch self {
        case .plainTCP:
            try http1(channel, nil)
        case .tls(let tls):
            let facts = TLSConnectionFacts()
            let pipeline = channel.pipeline.syncOperations
            // The name the client asked for, for the access log: read from the ClientHello before the TLS
            // handler sees it (swift-nio-ssl does not expose it).
            try pipeline.addHandler(ByteToMessageHandler(SNIHandler { [eventLoop = channel.eventLoop] result in
                if case .hostname(let name) = result { facts.serverName = name }
                return eventLoop.makeSucceededVoidFuture()
            }))
            let serverHello = ServerHelloObserver(facts: facts)
            try pipeline.addHandler(serverHello)
            try pipeline.addHandler(NIOSSLServerHandler(context: tls.context))
            try pipeline.addHandler(TLSHandshakeTimeoutHandler(timeout: handshakeTimeout, alsoRemoving: serverHello))
            guard tls.applicationProtocols.contains("h2") else {
                try http1(channel, facts)
                return
            }
            try pipeline.addHandler(ApplicationProtocolNegotiationHandler { result, channel in
                channel.eventLoop.makeCompletedFuture {
                    if case .negotiated("h2") = result {
                        try http2(channel, facts)
                    } else {
                        try http1(channel, facts)
                    }
                }
            })
        }
    }
}

/// Closes a connection whose TLS handshake has not completed within `timeout`; when it completes, leaves the
/// pipeline together with the other handshake-only handler (`alsoRemoving`, on the socket side of the TLS
/// handler, which sees no inbound TLS event). Garbage instead of a ClientHello fails the handshake in the
/// TLS handler, which closes that connection alone.
///
/// A drain (`ChannelShouldQuiesceEvent`) that arrives during the handshake is held and passed on right after
/// the handshake's completion: until then nothing behind this handler speaks HTTP (ALPN chooses HTTP/1 or
/// HTTP/2 at the end of the handshake), so the event would be lost and the connection served on as if no
/// drain had begun, until the drain's deadline closed it under whatever request it carried.
final class TLSHandshakeTimeoutHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny

    private let timeout: TimeAmount
    private var timer: Scheduled<Void>?
    private var alsoRemoving: ServerHelloObserver?
    private var quiescedDuringHandshake = false

    init(timeout: TimeAmount, alsoRemoving: ServerHelloObserver? = nil) {
        self.timeout = timeout
        self.alsoRemoving = alsoRemoving
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { self.arm(context: context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        self.arm(context: context)
        context.fireChannelActive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case TLSUserEvent.handshakeCompleted = event {
            self.timer?.cancel()
            self.timer = nil
            context.fireUserInboundEventTriggered(event)
            if self.quiescedDuringHandshake {
                // The HTTP side exists now (ALPN configured it while the completion passed).
                context.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
            }
            if let observer = self.alsoRemoving {
                self.alsoRemoving = nil
                context.pipeline.syncOperations.removeHandler(observer, promise: nil)
            }
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
            return
        }
        if event is ChannelShouldQuiesceEvent {
            self.quiescedDuringHandshake = true
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.timer?.cancel()
        self.timer = nil
    }

    private func arm(context: ChannelHandlerContext) {
        guard self.timer == nil else { return }
        let channel = context.channel
        self.timer = context.eventLoop.scheduleTask(in: self.timeout) {
            channel.close(promise: nil)
        }
    }
}

@available(*, unavailable)
extension TLSHandshakeTimeoutHandler: Sendable {}

/// What a TLS connection's handshake told, for its requests' access log lines. Written once by the
/// connection's `SNIHandler` and read by its proxy handlers, all on the connection's event loop.
final class TLSConnectionFacts: @unchecked Sendable {
    // @unchecked: touched only on the connection's event loop (the SNI and ServerHello handlers, then its
    // proxy handlers).
    var serverName = ""
    /// The negotiated suite's OpenSSL name, "" until the ServerHello is sent.
    var cipher = ""
    /// Whether the first request has looked the client certificate up (``clientCertificate`` is then what it found).
    var clientCertificateLookedUp = false
    /// The verified client certificate for the forwarding headers: nil when there is none to forward (no mutual
    /// TLS on the listener). A flag and a plain optional rather than a double optional: reading that copied the
    /// four texts through their value witnesses on every request (about 220 instructions, callgrind).
    var clientCertificate: ClientCertificateInfo?
}

/// Reads the cipher suite the server chose from its ServerHello on the way out, for the access log's
/// `tls_cipher` (swift-nio-ssl does not expose it). It looks at the first write only; the handshake timeout
/// handler removes it when the handshake completes.
final class ServerHelloObserver: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let facts: TLSConnectionFacts
    private var seen = false

    init(facts: TLSConnectionFacts) {
        self.facts = facts
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if !self.seen {
            self.seen = true
            if let suite = CipherSuiteName.chosenBy(serverHelloRecord: self.unwrapOutboundIn(data)) {
                self.facts.cipher = CipherSuiteName.of(suite)
            }
        }
        context.write(data, promise: promise)
    }
}

@available(*, unavailable)
extension ServerHelloObserver: Sendable {}
