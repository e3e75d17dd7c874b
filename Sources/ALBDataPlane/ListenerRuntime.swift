import ALBHTTP
import Atomics
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOHTTP2
import NIOPosix

/// An immutable, validated view of a ``ListenerConfig``. Connections and requests read the current
/// one through an atomic reference; ``DataPlane/update(_:)`` swaps in a new one.
final class ListenerSnapshot: AtomicReference, Sendable {
    let config: ListenerConfig
    let clientIPResolver: ClientIPResolver?
    let decoderLimits: StrictHTTPRequestDecoder.Limits
    let forwardedHeaders: ForwardedHeaderOptions
    let balancer: Balancer
    let transport: ListenerTransport
    /// The proxy reads a request's fields beyond what its decoder summarises: the client IP from a trusted
    /// proxy's `X-Forwarded-For`, a sticky session's cookie. Otherwise an HTTP/1 request's fields go to the
    /// backend as the lines the client sent (``ProxyHeaders/backendRequestHead(from:passingOn:summary:forwarding:options:)``).
    var readsRequestFields: Bool { self.clientIPResolver != nil || self.balancer.hasStickyGroups }

    /// `groups`: the data plane's shared server groups (nil in tests of a listener alone).
    init(config: ListenerConfig, groups: ServerGroups? = nil) throws {
        self.config = config
        self.balancer = Balancer(config.groups, scheduler: groups.map { groups in { groups.scheduler(for: $0) } })
        self.transport = ListenerTransport(config)
        if let clientIP = config.clientIP {
            guard let resolver = ClientIPResolver(trustedProxies: clientIP.trustedProxies) else {
                throw DataPlaneError.invalidConfig(listener: config.name, reason: "invalid trusted proxy CIDR")
            }
            self.clientIPResolver = resolver
        } else {
            self.clientIPResolver = nil
        }
        self.forwardedHeaders = config.headers
        let limits = config.limits
        guard limits.maxHeaderBytes > 0, limits.maxHeaderCount > 0, limits.maxConnections > 0 else {
            throw DataPlaneError.invalidConfig(listener: config.name, reason: "limits must be positive")
        }
        self.decoderLimits = StrictHTTPRequestDecoder.Limits(
            maxHeaderBytes: limits.maxHeaderBytes,
            maxHeaderCount: limits.maxHeaderCount
        )
    }
}

/// One listener's state on one event loop: its access log buffer, its counters, and the loop's backend pools
/// (shared with the other listeners: ``ServerGroups``). Used on that loop only, so it needs no locks.
/// (Balancing is shared by all loops: see ``Balancer``.)
final class ListenerLoopState {
    let eventLoop: EventLoop
    let accessLog: AccessLogBuffer?
    /// This loop's share of the listener's counters; a scrape sums every loop's (``ListenerRuntime/metrics()``).
    var counters = ListenerLoopCounters()
    /// The `/metrics` families beyond the status files' counters (durations, bytes): off without `--admin`,
    /// so a process that serves no metrics reads no clock for them.
    let detailedMetrics: Bool
    private let pools: BackendPools
    /// Responses this listener compresses at once on this loop (docs/decisions.md: memory per stream).
    let compressionBudget = CompressionBudget(limit: ListenerLoopState.concurrentCompressions)
    static let concurrentCompressions = 64
    /// Where this loop's HTTP/2 streams assemble their response blocks.
    let http2BlockScratch: HTTP2BlockScratch

    init(eventLoop: EventLoop, accessLog: AccessLog?, pools: BackendPools, detailedMetrics: Bool = true) {
        self.eventLoop = eventLoop
        self.detailedMetrics = detailedMetrics
        self.accessLog = accessLog.map { AccessLogBuffer(log: $0, eventLoop: eventLoop) }
        self.pools = pools
        self.http2BlockScratch = HTTP2BlockScratch(fieldTexts: pools.http1Memory.fieldTexts)
    }

    /// A group by weight, then a server in it by the group's scheduler (`Sch` hashes `clientIP`). Groups
    /// whose servers all have weight 0 are skipped. Nil means no server is available (503).
    /// `excluding`: a server that just failed to connect, for the one retry elsewhere.
    /// `stickyValue`: the request's sticky cookie, which names a server of a sticky group.
    func pick(_ snapshot: ListenerSnapshot, clientIP: String, excluding: BackendServer? = nil,
              stickyValue: Substring? = nil) -> BalancedServer? {
        snapshot.balancer.pickBalanced(clientIP: clientIP, excluding: excluding, stickyValue: stickyValue)
    }

    func pool(for server: BalancedServer) -> BackendPool {
        self.pools.pool(for: server)
    }

    /// What the loop's HTTP/1 connections share, with its backend connections too.
    var http1Memory: HTTP1LoopMemory { self.pools.http1Memory }

    /// An answered request's duration, from its head (``detailedMetrics`` only).
    func observeRequest(started: NIODeadline) {
        guard self.detailedMetrics else { return }
        self.counters.requestDuration.observe(self.eventLoop.now - started)
    }

    /// A server's answer, from the request head to the end of its response (``detailedMetrics`` only).
    /// Takes the server, not its key: passing the key copied its two strings (about 170 instructions a
    /// response) also when detailed metrics are off.
    func observeUpstream(_ server: BalancedServer, started: NIODeadline) {
        guard self.detailedMetrics else { return }
        self.counters.observeUpstream(server.metricsKey, self.eventLoop.now - started)
    }

    func flushLog() {
        self.accessLog?.flush()
    }
}

@available(*, unavailable)
extension ListenerLoopState: Sendable {}

/// A running listener: its snapshot, counters, server channel and client connections.
final class ListenerRuntime: IdleConnectionParking, Sendable {
    let name: String
    let snapshot: ManagedAtomic<ListenerSnapshot>
    /// Connections open now, over every loop: the one listener-wide count, because the connection cap
    /// needs it at accept time (once per connection, never per request).
    private let active = ManagedAtomic<Int>(0)
    let accessLog: AccessLog?
    private let stopping = ManagedAtomic<Bool>(false)
    private let loops = NIOLockedValueBox<[ObjectIdentifier: NIOLoopBound<ListenerLoopState>]>([:])
    private let connections = NIOLockedValueBox<[ObjectIdentifier: Channel]>([:])
    /// The socket this instance accepts from; nil once it was closed or handed to a successor.
    private let socket = NIOLockedValueBox<ListenerSocket?>(nil)
    /// A QUIC socket this instance stopped serving but keeps open while its connections drain (a UDP
    /// socket carries every connection: closing it would end them all at once). Closed by
    /// ``closeEverything()``.
    private let drainingQUICSocket = NIOLockedValueBox<ListenerSocket?>(nil)
    let boundPort = ManagedAtomic<Int>(0)
    /// The snapshot's idle timeout, in nanoseconds, on its own: a connection asks for it every time it becomes
    /// idle (once a request), and loading the snapshot to read it (a reference-counted atomic load and the
    /// config's field) cost about 130 instructions (callgrind). Stored with each new snapshot.
    private let idleTimeoutNanoseconds: ManagedAtomic<Int64>

    /// The server groups this listener's snapshots forward to, shared with the other listeners.
    let groups: ServerGroups

    /// See ``ListenerLoopState/detailedMetrics``.
    let detailedMetrics: Bool

    /// Where idle plain-HTTP/1 connections' sockets wait off their channels; nil: they keep their channels.
    private let parking: ParkedConnections?
    /// Of the open connections (``active``), those parked.
    private let parked = ManagedAtomic<Int>(0)
    /// Cleared before the listener's parked sockets are closed or resumed (a drain, a stop, a takeover), so
    /// that none is parked after.
    private let parkingAllowed = ManagedAtomic<Bool>(true)

    init(config: ListenerConfig, accessLog: AccessLog?, groups: ServerGroups, detailedMetrics: Bool = true,
         parking: ParkedConnections? = nil) throws {
        self.detailedMetrics = detailedMetrics
        self.parking = parking
        self.name = config.name
        self.snapshot = ManagedAtomic(try ListenerSnapshot(config: config, groups: groups))
        self.idleTimeoutNanoseconds = ManagedAtomic(config.idleTimeout.nanoseconds)
        self.accessLog = accessLog
        self.groups = groups
    }

    var config: ListenerConfig {
        self.snapshot.load(ordering: .acquiring).config
    }

    func replace(_ config: ListenerConfig) throws {
        let next = try ListenerSnapshot(config: config, groups: self.groups)
        self.snapshot.store(next, ordering: .releasing)
        self.idleTimeoutNanoseconds.store(config.idleTimeout.nanoseconds, ordering: .relaxed)
    }

    /// The idle timeout of the current snapshot (``idleTimeoutNanoseconds``).
    var idleTimeout: TimeAmount {
        .nanoseconds(self.idleTimeoutNanoseconds.load(ordering: .relaxed))
    }

    /// Starts accepting from `socket` (a new bind, or one handed over by a predecessor).
    func attach(_ socket: ListenerSocket) {
        self.socket.withLockedValue { $0 = socket }
        self.boundPort.store(socket.channel?.localAddress?.port ?? 0, ordering: .relaxed)
        socket.handOver(to: self)
    }

    /// Gives the socket to `successor` without closing it; this instance accepts nothing more. False
    /// when it holds none.
    ///
    /// The successor owns the socket before this instance starts refusing: a connection accepted in
    /// between finds either this instance still serving (and a drain quiesces it later) or the successor.
    /// The other order left a moment in which the socket's owner refused and no other owner existed yet,
    /// and the connection was closed with its request unread (a reset, one in tens of thousands of
    /// connections under port swaps).
    func handSocket(to successor: ListenerRuntime) -> Bool {
        guard let socket = self.socket.withLockedValue({ $0 }) else { return false }
        successor.attach(socket)
        _ = self.detachSocket()
        return true
    }

    /// Gives up the socket (closing it is the caller's business); this instance accepts nothing more.
    /// Nil when it holds none.
    private func detachSocket() -> ListenerSocket? {
        let socket = self.socket.withLockedValue { socket -> ListenerSocket? in
            defer { socket = nil }
            return socket
        }
        self.stopping.store(true, ordering: .sequentiallyConsistent)
        return socket
    }

    /// The socket this instance accepts from, if it holds one.
    var listeningSocket: ListenerSocket? {
        self.socket.withLockedValue { $0 }
    }

    /// Client connections open now.
    var openConnections: [Channel] {
        self.connections.withLockedValue { Array($0.values) }
    }

    /// The bound address, e.g. "127.0.0.1:8080", while this instance holds a socket.
    var boundAddress: SocketAddress? {
        self.socket.withLockedValue { $0?.channel?.localAddress }
    }

    /// Called once per connection (for a QUIC listener, once), on its event loop.
    func loopState(for eventLoop: EventLoop) -> ListenerLoopState {
        let key = ObjectIdentifier(eventLoop)
        let bound = self.loops.withLockedValue { loops in
            if let existing = loops[key] { return existing }
            let created = NIOLoopBound(
                ListenerLoopState(eventLoop: eventLoop, accessLog: self.accessLog, pools: self.groups.pools(on: eventLoop),
                                  detailedMetrics: self.detailedMetrics),
                eventLoop: eventLoop)
            loops[key] = created
            return created
        }
        return bound.value
    }

    /// The child channel initializer: enforces the connection cap, counts, and builds the pipeline.
    /// Nil when this instance is stopping: the socket then offers the connection to its next owner.
    /// `resumed`: a parked connection back on a channel (already counted, in the cap and the totals).
    func initializeConnection(_ channel: Channel, resumed: Bool = false) -> EventLoopFuture<Void>? {
        let snapshot = self.snapshot.load(ordering: .acquiring)
        let key = ObjectIdentifier(channel)
        // Registered before `stopping` is read, and `stopping` is set before a drain lists the
        // connections: a connection is either refused here or seen (and quiesced) by the drain.
        self.connections.withLockedValue { $0[key] = channel }
        if self.stopping.load(ordering: .sequentiallyConsistent) {
            self.connections.withLockedValue { $0[key] = nil }
            guard resumed else { return nil }
            // Its listener is going: the client's request meets a closed connection, as it would have had
            // the drain closed it a moment earlier (the bootstrap closes a channel its initializer failed).
            self.active.wrappingDecrement(ordering: .relaxed)
            return channel.eventLoop.makeFailedFuture(ChannelError.ioOnClosedChannel)
        }
        // The child initializer runs on the connection's loop: its counters are this loop's.
        let state = self.loopState(for: channel.eventLoop)
        if !resumed {
            let active = self.active.wrappingIncrementThenLoad(ordering: .relaxed)
            if active > snapshot.config.limits.maxConnections {
                self.active.wrappingDecrement(ordering: .relaxed)
                state.counters.countRejection(.connectionLimit)
                self.connections.withLockedValue { $0[key] = nil }
                return channel.close()
            }
            state.counters.totalConnections &+= 1
        }
        channel.closeFuture.whenComplete { _ in
            self.connections.withLockedValue { $0[key] = nil }
            self.active.wrappingDecrement(ordering: .relaxed)
        }
        do {
            let options = EdgePipelineOptions(
                limits: snapshot.decoderLimits,
                headerTimeout: snapshot.config.limits.headerTimeout,
                idleTimeout: { [self] in self.idleTimeout },
                // Plain HTTP listeners serve h2c with prior knowledge; TLS ones negotiate HTTP/2 by ALPN.
                acceptsHTTP2Preface: snapshot.config.tls == nil,
                compression: snapshot.config.compression ? self.compressionOptions(state) : nil,
                memory: state.http1Memory,
                // A TLS session lives in its channel: only plain TCP connections park.
                parking: self.parking != nil && snapshot.config.tls == nil ? self : nil
            )
            // Set here and not as the bootstrap's child option: NIO applies those one by one through a chain of
            // futures, 18 allocations a connection with the two it had (docs/benchmarks.md). `TCP_NODELAY` needs
            // no call: accepted sockets inherit it from the listening socket, and a parked one keeps it.
            try channel.syncOptions?.setOption(.recvAllocator, value: DataPlane.clientReceiveAllocator)
            if self.detailedMetrics {
                try channel.pipeline.syncOperations.addHandler(ByteCountingHandler(state: state), name: "byte-counting")
            }
            let loopState = NIOLoopBound(state, eventLoop: channel.eventLoop)
            let scheme = snapshot.transport.scheme
            try snapshot.transport.configure(
                channel, handshakeTimeout: snapshot.config.limits.headerTimeout,
                http1: { channel, facts in
                    let proxy = ProxyHandler(runtime: self, loopState: loopState.value, scheme: scheme, tlsFacts: facts)
                    try channel.pipeline.syncOperations.configureEdgeHTTPPipeline(options: options, application: proxy)
                },
                http2: { channel, facts in
                    try self.configureHTTP2(channel, loopState: loopState.value, scheme: scheme, facts: facts)
                })
            return channel.eventLoop.makeSucceededVoidFuture()
        } catch {
            return channel.eventLoop.makeFailedFuture(error)
        }
    }

    // MARK: Parking (IdleConnectionParking)

    var parkingDelay: TimeAmount { self.parking?.parkingDelay ?? .zero }

    func park(_ channel: Channel, until idleDeadline: NIODeadline) -> Bool {
        self.parking?.park(channel, of: self, until: idleDeadline) ?? false
    }

    /// Whether a connection may park now: not once the listener drains, stops or hands over.
    var acceptsParking: Bool {
        self.parkingAllowed.load(ordering: .sequentiallyConsistent) && !self.stopping.load(ordering: .sequentiallyConsistent)
    }

    /// A parked socket is one of the listener's open connections, as it was on its channel.
    func countParked() {
        self.active.wrappingIncrement(ordering: .relaxed)
        self.parked.wrappingIncrement(ordering: .relaxed)
    }

    /// A parked socket closed.
    func uncountParked() {
        self.active.wrappingDecrement(ordering: .relaxed)
        self.parked.wrappingDecrement(ordering: .relaxed)
    }

    /// A parked socket the client sent on: a new channel on `loop` with the listener's current pipeline,
    /// which reads the request as from a connection just accepted.
    func resumeParked(_ descriptor: Int32, on loop: EventLoop) -> EventLoopFuture<Channel> {
        self.parked.wrappingDecrement(ordering: .relaxed)
        return ClientBootstrap(group: loop)
            .channelInitializer { channel in
                self.initializeConnection(channel, resumed: true)
                    ?? channel.eventLoop.makeFailedFuture(ChannelError.ioOnClosedChannel)
            }
            .withConnectedSocket(descriptor)
    }

    /// No connection parks from now on; the parked ones close (a drain: they are idle).
    private func closeParked() {
        self.parkingAllowed.store(false, ordering: .sequentiallyConsistent)
        self.parking?.closeParked(of: self)
    }

    /// No connection parks from now on; the parked ones get their channels back (a successor process took
    /// over: each open connection is offered its last request).
    func resumeParked() async {
        self.parkingAllowed.store(false, ordering: .sequentiallyConsistent)
        await self.parking?.resumeParked(of: self)
    }

    /// The compressor's options: on while the current snapshot says so (asked per response), so a listener
    /// switched off stops compressing at once; one switched on compresses on connections accepted (HTTP/1)
    /// or streams opened (HTTP/2) from then on. Listeners without compression get no handler at all.
    private func compressionOptions(_ loopState: ListenerLoopState) -> ResponseCompressionOptions {
        ResponseCompressionOptions(budget: loopState.compressionBudget) { [snapshot = self.snapshot] in
            snapshot.load(ordering: .relaxed).config.compression
        }
    }

    /// HTTP/2 settings of every listener (docs/tls.md lists them): at most 128 concurrent streams per
    /// connection and a 64 KiB header list (the HTTP/1 head limit); nio-http2's abuse protections stay on
    /// at their defaults (rapid reset, CONTINUATION floods, empty DATA frames, control-frame buffering).
    static let http2Settings: HTTP2Settings = [
        HTTP2Setting(parameter: .maxConcurrentStreams, value: 128),
        HTTP2Setting(parameter: .maxHeaderListSize, value: 65536),
    ]

    /// The HTTP/2 side of a connection: each stream is one exchange, served by the same proxy handler as
    /// an HTTP/1 connection behind the stream codec, with HTTP/2 framing. nio-http2's handler runs without its
    /// multiplexer: ``HTTP2StreamRouter`` gives each stream a pipeline of its own that serves the connection's
    /// streams one after another (``HTTP2StreamSlot``), rather than a channel built and torn down per stream.
    func configureHTTP2(_ channel: Channel, loopState: ListenerLoopState, scheme: String,
                        facts: TLSConnectionFacts?) throws {
        var connection = NIOHTTP2Handler.ConnectionConfiguration()
        connection.initialSettings = Self.http2Settings
        // The router checks the blocks clients send (HTTP2InboundBlock); nio-http2's switch would check the
        // proxy's own response blocks as well, at several times the cost.
        connection.headerBlockValidation = .disabled
        // So does it check a request's DATA against its `content-length`; nio-http2's check of both ways looked
        // the field up in every block.
        connection.contentLengthValidation = .disabled
        // One request timer for all the connection's streams; the manager stops it when the connection goes.
        let requestTimer = SharedDeadlineTimer()
        let manager = HTTP2ConnectionManager(requestTimer: requestTimer) { [self] in
            self.idleTimeout
        }
        let endpoints = ClientEndpoints(of: channel)
        let compressesNow = { [snapshot = self.snapshot] in snapshot.load(ordering: .relaxed).config.compression }
        let router = HTTP2StreamRouter(compressesNow: compressesNow, connection: manager) { slot in
            let pipeline = slot.pipeline.syncOperations
            let codec = HTTP2ServerStreamCodec(blockScratch: loopState.http2BlockScratch)
            try pipeline.addHandler(codec)
            slot.attachCodec(codec)
            if slot.compresses {
                try pipeline.addHandler(self.compressionOptions(loopState).makeHandler())
            }
            let proxy = ProxyHandler(runtime: self, loopState: loopState, scheme: scheme, framing: .http2,
                                     tlsFacts: facts, endpoints: endpoints, requestTimer: requestTimer)
            try pipeline.addHandler(proxy)
            if !slot.compresses {
                codec.attachDirectly(proxy)
            }
        }
        let pipeline = channel.pipeline.syncOperations
        // Below the HTTP/2 handler, so that the streams answered in one tick leave in one write.
        try pipeline.addHandler(TickFlushCoalescer())
        try pipeline.addHandler(NIOHTTP2Handler(mode: .server, connectionConfiguration: connection,
                                                streamConfiguration: NIOHTTP2Handler.StreamConfiguration()))
        try pipeline.addHandler(router)
        try pipeline.addHandler(manager)
    }

    /// Stops accepting: closes the listening socket, unless it was handed to a successor. A QUIC socket
    /// stays open instead and its connections drain (GOAWAY, their requests finish, no new connection is
    /// created); ``closeEverything()`` closes it.
    func closeServerChannel() async {
        guard let socket = self.detachSocket() else { return }
        guard self.config.quic != nil, let channel = socket.channel else {
            await socket.close()
            return
        }
        self.drainingQUICSocket.withLockedValue { $0 = socket }
        channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
    }

    /// A QUIC listener whose process hands over to a successor (which does not get the UDP socket): its
    /// connections drain (GOAWAY, requests finish, CONNECTION_CLOSE) while the socket stays with this
    /// instance until ``closeEverything()``. Nothing for TCP listeners.
    func drainQUICConnections() {
        guard self.config.quic != nil, let channel = self.listeningSocket?.channel else { return }
        channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
    }

    /// Asks every connection to finish its current exchange and close; parked (idle) ones close at once.
    func quiesceConnections() {
        self.closeParked()
        for channel in self.connections.withLockedValue({ Array($0.values) }) {
            channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        }
    }

    /// TCP connections, plus the QUIC connections of the UDP socket this instance holds or drains (none
    /// once it handed the socket to a successor, which serves them on).
    var activeConnections: Int {
        let quicSocket = self.socket.withLockedValue { $0 } ?? self.drainingQUICSocket.withLockedValue { $0 }
        return self.active.load(ordering: .relaxed) + (quicSocket?.quicConnections.load(ordering: .relaxed) ?? 0)
    }

    /// Every loop's counters summed: each loop's are copied on that loop (a copy of a few arrays), so
    /// counting never takes a lock; the copies are added up here.
    func metrics() async -> ListenerMetrics {
        await Self.metrics(of: [self])[0]
    }

    /// ``metrics()`` of many instances, in their order, with one task per event loop for all of them,
    /// submitted to every loop before waiting for any. Hopping per instance and loop, one round trip
    /// after another, was most of a reconcile pass's status phase once 100 listeners had served a
    /// request each (100-200 round trips, 7-20 ms on 2 busy cores).
    static func metrics(of runtimes: [ListenerRuntime]) async -> [ListenerMetrics] {
        var byLoop: [ObjectIdentifier: (loop: EventLoop, states: [(index: Int, state: NIOLoopBound<ListenerLoopState>)])] = [:]
        for (index, runtime) in runtimes.enumerated() {
            for bound in runtime.loops.withLockedValue({ Array($0.values) }) {
                byLoop[ObjectIdentifier(bound.eventLoop), default: (bound.eventLoop, [])].states.append((index, bound))
            }
        }
        let reads = byLoop.values.map { entry in
            let states = entry.states
            return entry.loop.submit { states.map { ($0.index, $0.state.value.counters) } }
        }
        var totals = [ListenerLoopCounters](repeating: ListenerLoopCounters(), count: runtimes.count)
        for read in reads {
            guard let counters = try? await read.get() else { continue }
            for (index, counters) in counters { totals[index] += counters }
        }
        return zip(runtimes, totals).map { runtime, total in
            ListenerMetrics(name: runtime.name, activeConnections: runtime.activeConnections,
                            parkedConnections: runtime.parked.load(ordering: .relaxed), counters: total)
        }
    }


    /// Closes every connection and flushes the access log buffers (backend pools belong to the server groups).
    func closeEverything() async {
        await self.closeServerChannel()
        if let quicSocket = self.drainingQUICSocket.withLockedValue({ socket -> ListenerSocket? in
            defer { socket = nil }
            return socket
        }), let channel = quicSocket.channel {
            // CONNECTION_CLOSE to every connection still open (the drain timeout), then the socket.
            try? await channel.eventLoop.submit {
                try channel.pipeline.syncOperations.handler(type: QUICListenerHandler.self).closeAllConnections()
            }.get()
            await quicSocket.close()
        }
        self.closeParked()
        let channels = self.connections.withLockedValue { Array($0.values) }
        for channel in channels {
            channel.close(promise: nil)
        }
        for channel in channels {
            try? await channel.closeFuture.get()
        }
        let loops = self.loops.withLockedValue { Array($0.values) }
        for bound in loops {
            try? await bound.eventLoop.submit { bound.value.flushLog() }.get()
        }
    }

    /// Runs `body` on every loop this listener has state on (tests and flushing).
    func onEveryLoop(_ body: @escaping @Sendable (ListenerLoopState) -> Void) async {
        let loops = self.loops.withLockedValue { Array($0.values) }
        for bound in loops {
            try? await bound.eventLoop.submit { body(bound.value) }.get()
        }
    }
}
