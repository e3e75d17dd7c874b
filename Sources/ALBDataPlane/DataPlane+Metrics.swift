/// The data plane's metrics at one scrape (`/metrics`, docs/operations.md): every listener's counters
/// summed over its event loops and its instances, and every server of the groups listeners forward to.
extension DataPlane {
    /// One server of a group at a scrape.
    public struct ServerMetrics: Sendable, Equatable {
        public var group: String
        /// "host:port".
        public var server: String
        /// `Healthy`, `Unhealthy` or `Unchecked` (a group without health checks).
        public var health: String
        /// Requests in flight, for `Wlc` groups (the scheduler that counts them); nil otherwise.
        public var activeRequests: Int?
        public var upstream: UpstreamCounters
    }

    public struct Metrics: Sendable, Equatable {
        /// Sorted by name; one entry per listener name (a replacement's instances are summed).
        public var listeners: [ListenerMetrics] = []
        /// Sorted by group, then server.
        public var servers: [ServerMetrics] = []

        public init() {}
    }

    /// Sums every instance's per-loop counters, one task on each loop reading all of them: nothing on the
    /// request path takes a lock or an atomic for this. Instances that closed are in ``RetiredCounters``.
    public func metrics() async -> Metrics {
        let (runtimes, retired) = self.retired.withLockedValue { retired in
            let runtimes = self.listeners.withLockedValue { Array($0.values) }
                + self.draining.withLockedValue { Array($0.values) }
                + self.stopping.withLockedValue { Array($0.values) }
            return (runtimes, retired)
        }
        let serving = self.listeners.withLockedValue { Array($0.values) }
        var byName: [String: ListenerMetrics] = [:]
        var upstreams = retired.upstreams
        for metrics in await ListenerRuntime.metrics(of: runtimes) {
            byName[metrics.name, default: ListenerMetrics(name: metrics.name)].activeConnections += metrics.activeConnections
            byName[metrics.name, default: ListenerMetrics(name: metrics.name)].parkedConnections += metrics.parkedConnections
            byName[metrics.name, default: ListenerMetrics(name: metrics.name)].counters += metrics.counters
            for (key, counters) in metrics.counters.upstreams {
                upstreams[key, default: UpstreamCounters()] += counters
            }
        }
        // Closed instances of listeners that still exist keep their counts; a listener that is gone
        // leaves the exposition (and, should it come back, continues from its old counts).
        for (name, counters) in retired.listeners where byName[name] != nil {
            byName[name, default: ListenerMetrics(name: name)].counters += counters
        }
        var result = Metrics()
        result.listeners = byName.values.map { metrics in
            var metrics = metrics
            metrics.counters.upstreams = [:]  // reported per server below
            return metrics
        }.sorted { $0.name < $1.name }

        // Servers: those of the groups the serving listeners forward to, now.
        var servers: [UpstreamKey: (group: BackendGroup, server: BackendServer)] = [:]
        for runtime in serving {
            for group in runtime.config.groups {
                for server in group.servers {
                    servers[UpstreamKey(group: group.name, server: server.address)] = (group, server)
                }
            }
        }
        // Requests in flight, as the group status counts them (the shared pools' per-loop counts), reported
        // for `Wlc` groups: the scheduler that balances on them.
        let counted = servers.filter { $0.value.group.scheduling == .weightedLeastRequests }
        let loads = await self.serverGroups.load(of: counted.values.map(\.server))
        let inFlight = Dictionary(zip(counted.keys, loads.map(\.activeRequests)), uniquingKeysWith: { first, _ in first })
        var health: [String: [String: String]] = [:]
        for group in Set(servers.values.map(\.group.name)) {
            health[group] = Dictionary(self.serverHealth(group: group).map {
                (BackendServer(host: $0.host, port: $0.port).address, $0.health.rawValue)
            }, uniquingKeysWith: { first, _ in first })
        }
        result.servers = servers.map { key, entry in
            let group = entry.group
            return ServerMetrics(group: key.group, server: key.server,
                                 health: group.healthCheck == nil ? "Unchecked" : health[key.group]?[key.server] ?? "Unchecked",
                                 activeRequests: group.scheduling == .weightedLeastRequests ? inFlight[key] ?? 0 : nil,
                                 upstream: upstreams[key] ?? UpstreamCounters())
        }.sorted { ($0.group, $0.server) < ($1.group, $1.server) }
        return result
    }
}

/// What closed listener instances counted, kept so sums stay monotonic.
struct RetiredCounters: Sendable {
    var listeners: [String: ListenerLoopCounters] = [:]
    var upstreams: [UpstreamKey: UpstreamCounters] = [:]

    mutating func add(_ metrics: ListenerMetrics) {
        var counters = metrics.counters
        for (key, upstream) in counters.upstreams {
            self.upstreams[key, default: UpstreamCounters()] += upstream
        }
        counters.upstreams = [:]
        self.listeners[metrics.name, default: ListenerLoopCounters()] += counters
    }
}
