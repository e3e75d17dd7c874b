import ALBHTTP
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The HTTP/1.1 data plane the reconciler drives: listeners bound on an event loop group, each
/// serving with the configuration snapshot current at each connection/request.
public final class DataPlane: Sendable {
    let group: any EventLoopGroup
    let accessLog: AccessLog?
    let listeners = NIOLockedValueBox<[String: ListenerRuntime]>([:])
    /// Names being started (bind in progress), so two starts of one name cannot race.
    private let starting = NIOLockedValueBox<Set<String>>([])
    /// Instances that stopped accepting and are letting their connections finish (see ``drain(key:)``).
    let draining = NIOLockedValueBox<[ObjectIdentifier: ListenerRuntime]>([:])
    /// How long a drained instance's connections may take before they are closed.
    public let drainTimeout: TimeAmount
    /// Active health checks of server groups, shared by every listener that forwards to them.
    let healthChecker: HealthChecker
    /// Server groups' schedulers and backend pools, shared by every listener that forwards to them.
    let serverGroups: ServerGroups
    /// Listening sockets a previous process passed on (a takeover), until a start claims them.
    let inherited = NIOLockedValueBox(InheritedSockets())
    /// While a takeover waits for `done`, listeners start without accepting (``holdAccepting()``).
    let acceptingHeld = NIOLockedValueBox(false)
    /// QUIC sockets passed on by a previous process that still reads its copy while its connections drain:
    /// this process reads them only once it has exited (``readInheritedDatagramSockets()``).
    let datagramSocketsOfPredecessor = NIOLockedValueBox<[ListenerSocket]>([])
    /// Instances being stopped (``stop(key:)``), still counted in the metrics until they are folded
    /// into ``retired``.
    let stopping = NIOLockedValueBox<[ObjectIdentifier: ListenerRuntime]>([:])
    /// Final counters of closed instances, so a listener's and a server's counters stay monotonic
    /// across replacements (a drained instance's counts do not vanish from the sums).
    let retired = NIOLockedValueBox(RetiredCounters())
    /// Set by ``shutdown(drainTimeout:)``: instances closing after it are not summed.
    let shuttingDown = NIOLockedValueBox(false)
    /// The accept backlog of every listening socket.
    static let backlog: Int32 = 1024

    /// Durations and bytes for `/metrics` (``ListenerLoopState/detailedMetrics``); the counters status
    /// files show are kept either way.
    let detailedMetrics: Bool
    /// Where idle keep-alive connections of plain HTTP listeners wait off their channels; nil: parking is off.
    let parking: ParkedConnections?

    /// `parkIdleConnectionsAfter`: how long an idle keep-alive connection of a plain HTTP listener keeps its
    /// channel before its socket is parked (``ParkedConnections``); nil keeps every connection on its channel.
    public init(group: any EventLoopGroup, accessLog: AccessLog?, drainTimeout: TimeAmount = .seconds(30),
                detailedMetrics: Bool = true, parkIdleConnectionsAfter: TimeAmount? = nil) throws {
        self.detailedMetrics = detailedMetrics
        self.parking = try parkIdleConnectionsAfter.map { try ParkedConnections(parkingDelay: $0, group: group) }
        self.group = group
        self.accessLog = accessLog
        self.drainTimeout = drainTimeout
        self.healthChecker = HealthChecker(group: group)
        self.serverGroups = ServerGroups(health: self.healthChecker, drainTimeout: drainTimeout)
    }

    /// After a listener came, changed or went: servers no serving listener forwards to any more are retired
    /// (their connections in use get up to ``drainTimeout``), and groups none uses are forgotten.
    func retainServerGroups() {
        let groups = self.listeners.withLockedValue { listeners in listeners.values.flatMap { $0.config.groups } }
        self.serverGroups.retain(groups)
    }

    public var listenerKeys: [String] {
        self.listeners.withLockedValue { Array($0.keys) }.sorted()
    }

    /// Binds and starts serving. Port 0 binds an ephemeral port. Returns the bound address,
    /// e.g. "127.0.0.1:8080" or "[::1]:8080". A socket inherited for the address (``inherit(_:)``) is
    /// served instead of binding a new one.
    /// - Throws: ``DataPlaneError/bindFailed(address:reason:)`` with the OS error text;
    ///   ``DataPlaneError/listenerExists(_:)``; ``DataPlaneError/invalidConfig(listener:reason:)``.
    public func start(_ config: ListenerConfig) async throws -> String {
        let address = try await self.bind(config)
        self.retainServerGroups()
        return address
    }

    /// Starts every configuration at once, as ``start(_:)`` each: the result at each index is that
    /// configuration's bound address or its error, and one failing (a port in use) does not stop the others.
    /// Binding one after another costs a round trip to an event loop each (a cold start of 100 listeners);
    /// here they overlap. Configurations on the same port (other hosts, or TCP and UDP) still bind one after
    /// another in the given order, so which of two overlapping addresses gets the port (0.0.0.0 and
    /// 127.0.0.1) does not depend on timing. Server groups no listener uses are retired once, after the
    /// whole batch: a retire after each bind would see only the listeners bound so far and drop the groups
    /// of those still binding.
    public func start(_ configs: [ListenerConfig]) async -> [Result<String, any Error>] {
        // Port 0 (an ephemeral port) never clashes: each such configuration is a batch of its own.
        let samePort = Dictionary(grouping: configs.indices) { configs[$0].port == 0 ? -1 - $0 : configs[$0].port }
        let finished = await withTaskGroup(of: [(Int, Result<String, any Error>)].self) { group in
            // In the order given (the reconciler's is by name), so the first listeners are the first to serve.
            for indices in samePort.values.sorted(by: { $0[0] < $1[0] }) {
                group.addTask {
                    var results: [(Int, Result<String, any Error>)] = []
                    for index in indices {
                        do {
                            results.append((index, .success(try await self.bind(configs[index]))))
                        } catch {
                            results.append((index, .failure(error)))
                        }
                    }
                    return results
                }
            }
            var finished: [(Int, Result<String, any Error>)] = []
            for await results in group { finished.append(contentsOf: results) }
            return finished
        }
        self.retainServerGroups()
        return finished.sorted { $0.0 < $1.0 }.map(\.1)
    }

    /// ``start(_:)`` without retiring unused server groups (the caller does, once it is done binding).
    private func bind(_ config: ListenerConfig) async throws -> String {
        let reserved = self.starting.withLockedValue { starting -> Bool in
            if starting.contains(config.key) { return false }
            starting.insert(config.key)
            return true
        }
        guard reserved, self.listeners.withLockedValue({ $0[config.key] == nil }) else {
            if reserved { _ = self.starting.withLockedValue { $0.remove(config.key) } }
            throw DataPlaneError.listenerExists(config.name)
        }
        defer { _ = self.starting.withLockedValue { $0.remove(config.key) } }
        if let certificate = config.quic {
            return try await self.startQUIC(config, certificate: certificate)
        }

        let runtime = try ListenerRuntime(config: config, accessLog: self.accessLog, groups: self.serverGroups,
                                          detailedMetrics: self.detailedMetrics, parking: self.parking)
        let socket = ListenerSocket(address: Self.format(host: config.bindHost, port: config.port), owner: runtime)
        let held = self.acceptingHeld.withLockedValue { $0 }
        let bootstrap = ServerBootstrap(group: self.group)
            .serverChannelOption(.backlog, value: Self.backlog)
            .serverChannelOption(.autoRead, value: !held)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            // Accepted sockets inherit it (an inherited listening socket gets it here too); the connection's
            // other option is set by its initializer (`ListenerRuntime.initializeConnection`).
            .serverChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                socket.accept(channel)
            }
        let inherited = self.inherited.withLockedValue { $0.claim(address: socket.address, listener: config.name) }
        do {
            // The socket is made here rather than by `bootstrap.bind`, so the data plane knows its
            // descriptor and can pass a copy to a successor process (docs/takeover.md).
            let descriptor = try inherited?.descriptor ?? OwnedDescriptor.listeningTCP(
                on: Self.socketAddress(host: config.bindHost, port: config.port), backlog: Self.backlog)
            guard let raw = descriptor.take() else { throw IOError(errnoCode: EBADF, reason: "listening socket") }
            let channel = try await bootstrap.withBoundSocket(raw).get()
            // NIO listens again with its default backlog when it adopts a socket; put ours back.
            OwnedDescriptor.setBacklog(Self.backlog, ofListening: raw)
            socket.setChannel(channel, descriptor: raw)
        } catch {
            throw DataPlaneError.bindFailed(address: socket.address, reason: Self.reason(error))
        }
        runtime.attach(socket)
        self.listeners.withLockedValue { $0[config.key] = runtime }
        if held && !self.acceptingHeld.withLockedValue({ $0 }) {
            await socket.startAccepting()  // released while this one was being set up
        }
        return Self.describe(runtime.boundAddress, fallback: config)
    }

    /// Starts `config` on the socket that the instance `key` listens on, without closing it: from now
    /// on that socket's new connections go to the new instance, while the old instance keeps the
    /// connections it has (``drain(key:)`` or ``stop(key:)`` it next). Both must have the same address.
    /// Returns the bound address.
    /// - Throws: ``DataPlaneError/unknownListener(_:)`` when `key` holds no socket,
    ///   ``DataPlaneError/immutableField(listener:field:)`` when the addresses differ,
    ///   ``DataPlaneError/listenerExists(_:)``, ``DataPlaneError/invalidConfig(listener:reason:)``.
    public func handOver(from key: String, to config: ListenerConfig) throws -> String {
        guard let previous = self.listeners.withLockedValue({ $0[key] }), previous.boundAddress != nil else {
            throw DataPlaneError.unknownListener(key)
        }
        let old = previous.config
        guard old.bindHost == config.bindHost,
              config.port == old.port || config.port == previous.boundPort.load(ordering: .relaxed) else {
            throw DataPlaneError.immutableField(listener: config.name, field: "address")
        }
        guard self.listeners.withLockedValue({ $0[config.key] == nil }) else {
            throw DataPlaneError.listenerExists(config.name)
        }
        let runtime = try ListenerRuntime(config: config, accessLog: self.accessLog, groups: self.serverGroups,
                                          detailedMetrics: self.detailedMetrics, parking: self.parking)
        if let certificate = config.quic, certificate != old.quic {
            // The UDP socket's endpoint outlives the instance: it takes the new instance's certificate.
            try self.rotateQUICCertificate(of: previous, to: certificate, listener: config.name)
        }
        guard previous.handSocket(to: runtime) else { throw DataPlaneError.unknownListener(key) }
        self.listeners.withLockedValue { $0[config.key] = runtime }
        self.retainServerGroups()
        return Self.describe(runtime.boundAddress, fallback: config)
    }

    /// Swaps the listener's snapshot in place. Established connections keep working; their next
    /// requests (and idle periods) and new connections use the new settings. Backend pools of servers
    /// that remain are kept. `bindHost` and `port` cannot change (stop and start instead); a port of 0
    /// or the bound port both count as unchanged.
    public func update(_ config: ListenerConfig) throws {
        guard let runtime = self.listeners.withLockedValue({ $0[config.key] }) else {
            throw DataPlaneError.unknownListener(config.name)
        }
        let current = runtime.config
        if current.bindHost != config.bindHost {
            throw DataPlaneError.immutableField(listener: config.name, field: "bindHost")
        }
        if config.port != current.port && config.port != runtime.boundPort.load(ordering: .relaxed) {
            throw DataPlaneError.immutableField(listener: config.name, field: "port")
        }
        var next = config
        next.port = current.port
        if let certificate = config.quic, certificate != current.quic {
            try self.rotateQUICCertificate(of: runtime, to: certificate, listener: config.name)
        }
        try runtime.replace(next)
        self.retainServerGroups()
    }

    /// Closes the listening socket and every client connection of the listener; its servers' pools close
    /// unless another listener forwards to them.
    public func stop(key: String) async {
        guard let runtime = self.listeners.withLockedValue({ $0.removeValue(forKey: key) }) else { return }
        self.retainServerGroups()
        let id = ObjectIdentifier(runtime)
        self.stopping.withLockedValue { $0[id] = runtime }
        await runtime.closeEverything()
        await self.retire(runtime, from: self.stopping)
        self.accessLog?.flush()
    }

    /// Folds a closed instance's final counters into ``retired`` and forgets it, in one step as a scrape
    /// sees it (a scrape lists the instances and copies ``retired`` under the same locks' order).
    private func retire(_ runtime: ListenerRuntime, from set: NIOLockedValueBox<[ObjectIdentifier: ListenerRuntime]>) async {
        // Once the data plane shuts down, its event loops may be gone: nothing is summed any more.
        guard !self.shuttingDown.withLockedValue({ $0 }) else {
            set.withLockedValue { $0[ObjectIdentifier(runtime)] = nil }
            return
        }
        let final = await runtime.metrics()
        self.retired.withLockedValue { retired in
            set.withLockedValue { $0[ObjectIdentifier(runtime)] = nil }
            retired.add(final)
        }
    }

    /// Retires the instance `key` the way an nginx or HAProxy reload retires its old workers: it stops
    /// accepting at once (its socket is closed unless it was handed over, so the port is free when this
    /// returns), idle keep-alive connections close, busy ones finish their exchange with
    /// `Connection: close`, and whatever is still open after ``drainTimeout`` is closed. The waiting
    /// happens in the background.
    public func drain(key: String) async {
        guard let runtime = self.listeners.withLockedValue({ $0.removeValue(forKey: key) }) else { return }
        self.retainServerGroups()
        await runtime.closeServerChannel()
        runtime.quiesceConnections()
        let id = ObjectIdentifier(runtime)
        self.draining.withLockedValue { $0[id] = runtime }
        let deadline = NIODeadline.now() + self.drainTimeout
        Task {
            await Self.waitForConnections(of: [runtime], until: deadline)
            await runtime.closeEverything()
            await self.retire(runtime, from: self.draining)
            self.accessLog?.flush()
        }
    }

    /// Instances still draining (for tests and diagnostics).
    public var drainingCount: Int { self.draining.withLockedValue { $0.count } }

    static func waitForConnections(of runtimes: [ListenerRuntime], until deadline: NIODeadline) async {
        while NIODeadline.now() < deadline, runtimes.contains(where: { $0.activeConnections > 0 }) {
            try? await Task.sleep(nanoseconds: 20_000_000)
        }
    }

    /// The instance's counters (summed over its event loops) for its status file.
    public func stats(key: String) async -> ListenerStats? {
        await self.stats(keys: [key])[key]
    }

    /// ``stats(key:)`` of many instances at once (a reconcile pass's status files): one hop to each event
    /// loop for all of them, not one per instance and loop. Keys that serve nothing are absent.
    public func stats(keys: [String]) async -> [String: ListenerStats] {
        let runtimes = self.listeners.withLockedValue { listeners in
            keys.compactMap { key in listeners[key].map { (key: key, runtime: $0) } }
        }
        let metrics = await ListenerRuntime.metrics(of: runtimes.map(\.runtime))
        return Dictionary(zip(runtimes.map(\.key), metrics.map(\.stats)), uniquingKeysWith: { first, _ in first })
    }

    /// Graceful: stops accepting everywhere, closes idle keep-alive connections, lets busy ones finish
    /// their current exchange (then they close), waits up to `drainTimeout`, then closes everything.
    public func shutdown(drainTimeout: TimeAmount) async {
        self.shuttingDown.withLockedValue { $0 = true }
        self.healthChecker.stopAll()
        let serving = self.listeners.withLockedValue { listeners in
            let all = Array(listeners.values)
            listeners.removeAll()
            return all
        }
        for runtime in serving {
            await runtime.closeServerChannel()
            runtime.quiesceConnections()
        }
        let runtimes = serving + self.draining.withLockedValue { Array($0.values) }
        await Self.waitForConnections(of: runtimes, until: NIODeadline.now() + drainTimeout)
        for runtime in runtimes {
            await runtime.closeEverything()
        }
        await self.serverGroups.closeAll()
        await self.parking?.stop()
        self.accessLog?.flush()
    }

    /// Sockets of idle connections parked now, over every listener (tests and diagnostics).
    public var parkedConnections: Int { self.parking?.count ?? 0 }

    /// Idle pooled backend connections, over all servers and loops (for tests and diagnostics).
    func idleBackendConnections() async -> Int {
        await self.serverGroups.idleConnections()
    }

    /// Client connections read into 1 KiB first instead of NIO's default 2 KiB. The channel keeps its
    /// last receive buffer for reuse for as long as it is open, so this is memory every idle keep-alive
    /// connection holds; 1 KiB (nginx's `client_header_buffer_size`) still takes a typical request head
    /// in one read, and the allocator grows (doubling, up to 64 KiB) for bodies and larger heads.
    static var clientReceiveAllocator: AdaptiveRecvByteBufferAllocator {
        AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 1024, maximum: 65536)
    }

    /// HTTP/1 backend connections start at NIO's 2 KiB and grow up to 128 KiB rather than NIO's 64 KiB, so a
    /// 64 KiB body and its head arrive in one read instead of two (a read system call and a pass through the
    /// response decoder fewer; callgrind: 43,400 -> 39,100 instructions a 64 KiB response). It holds less
    /// memory, not more: the channel's buffer pool keeps every buffer it had to add, and at 64 KiB the first
    /// read's buffer was still on its way to the client when the second read came (64 connections after a
    /// 64 KiB load: 235 KiB each before, 182 after; docs/benchmarks.md).
    static var backendReceiveAllocator: AdaptiveRecvByteBufferAllocator {
        AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 2048, maximum: 131_072)
    }

    /// "host:port" of a bound socket, or of the configuration when the OS did not say.
    static func describe(_ address: SocketAddress?, fallback config: ListenerConfig) -> String {
        guard let address, let port = address.port else { return format(host: config.bindHost, port: config.port) }
        return format(host: address.ipAddress ?? config.bindHost, port: port)
    }

    /// Where a listener binds. An IP address (what a LoadBalancer's address is) is parsed as one: getaddrinfo
    /// would check the host's interfaces over a netlink socket first (AI_ADDRCONFIG, glibc's default), once
    /// for each of a cold start's 100 listeners. Anything else (a name) is resolved as before.
    static func socketAddress(host: String, port: Int) throws -> SocketAddress {
        if let address = try? SocketAddress(ipAddress: host, port: port) { return address }
        return try SocketAddress.makeAddressResolvingHost(host, port: port)
    }

    static func format(host: String, port: Int) -> String {
        host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }

    /// The OS error text, e.g. "Address already in use (errno: 98)".
    static func reason(_ error: Error) -> String {
        if let ioError = error as? IOError {
            let code = ioError.errnoCode
            return "\(String(cString: strerror(code))) (errno: \(code))"
        }
        return "\(error)"
    }
}
