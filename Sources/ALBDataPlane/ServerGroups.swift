import ALBHTTP
import NIOConcurrencyHelpers
import NIOCore

/// The data plane's server groups as runtimes of their own, shared by every listener that forwards to them:
/// one scheduler per group (the `Wrr` order and cursor, the `Wlc` counts, the view of its servers' health)
/// and, per event loop, one backend pool per server.
///
/// So two listeners forwarding to one group take turns in one round robin, count each other's requests for
/// `Wlc`, and reuse each other's keep-alive connections; and a change to a listener alone (a timeout, a
/// header switch) keeps its groups' scheduling state. A group's scheduler is replaced when its definition
/// changes (servers, weights, scheduler, checks, stickiness); a server that leaves every group is retired.
final class ServerGroups: Sendable {
    let health: HealthChecker
    /// How long a retired server's connections in use may take before they are closed.
    let drainTimeout: TimeAmount
    private let schedulers = NIOLockedValueBox<[String: GroupScheduler]>([:])
    private let loops = NIOLockedValueBox<[ObjectIdentifier: NIOLoopBound<BackendPools>]>([:])

    init(health: HealthChecker, drainTimeout: TimeAmount) {
        self.health = health
        self.drainTimeout = drainTimeout
    }

    /// The group's scheduler: the current one while the group's definition is unchanged, a new one (with
    /// fresh state) when it changed. A listener's weight for the group is not part of the group.
    func scheduler(for group: BackendGroup) -> GroupScheduler {
        self.schedulers.withLockedValue { schedulers in
            if let current = schedulers[group.name], current.schedules(group) { return current }
            let created = GroupScheduler(group, health: { self.health.health($0) })
            schedulers[group.name] = created
            return created
        }
    }

    /// The backend pools of `eventLoop`. Called once per client connection, on that loop.
    func pools(on eventLoop: EventLoop) -> BackendPools {
        let key = ObjectIdentifier(eventLoop)
        return self.loops.withLockedValue { loops in
            if let existing = loops[key] { return existing }
            let created = NIOLoopBound(BackendPools(eventLoop: eventLoop), eventLoop: eventLoop)
            loops[key] = created
            return created
        }.value
    }

    /// Keeps the schedulers of `groups` and the pools of their servers; every other server is retired on
    /// every loop (``BackendPool/retire(drainTimeout:)``). Called after each change of the listeners.
    func retain(_ groups: [BackendGroup]) {
        let names = Set(groups.map(\.name))
        self.schedulers.withLockedValue { schedulers in
            schedulers = schedulers.filter { names.contains($0.key) }
        }
        let keys = Set(groups.flatMap { $0.servers.map(\.poolKey) })
        let drainTimeout = self.drainTimeout
        for bound in self.loops.withLockedValue({ Array($0.values) }) {
            bound.eventLoop.execute { bound.value.retain(keys, drainTimeout: drainTimeout) }
        }
    }

    /// Closes every pool (the data plane is shutting down).
    func closeAll() async {
        for bound in self.loops.withLockedValue({ Array($0.values) }) {
            try? await bound.eventLoop.submit { bound.value.closeAll() }.get()
        }
    }

    /// Requests in flight and sent so far, per server, over every loop and listener (a server listed in two
    /// groups is one server: its pool and its counts are shared). A retired server starts from zero.
    func load(of servers: [BackendServer]) async -> [ServerLoad] {
        var started: [String: Int] = [:]
        var ended: [String: Int] = [:]
        for bound in self.loops.withLockedValue({ Array($0.values) }) {
            let counts = (try? await bound.eventLoop.submit { bound.value.requestCounts }.get()) ?? [:]
            for (key, count) in counts {
                started[key, default: 0] += count.started
                ended[key, default: 0] += count.ended
            }
        }
        return servers.map { server in
            let total = started[server.poolKey] ?? 0
            return ServerLoad(activeRequests: max(0, total - (ended[server.poolKey] ?? 0)), requests: total)
        }
    }

    /// Requests still in flight to each of `servers` after it left every group (``BackendPools/drainingCounts()``),
    /// over every loop; zero for a server with none.
    func drainingLoad(of servers: [BackendServer]) async -> [ServerLoad] {
        var total: [String: ServerLoad] = [:]
        for bound in self.loops.withLockedValue({ Array($0.values) }) {
            let counts = (try? await bound.eventLoop.submit { bound.value.drainingCounts() }.get()) ?? [:]
            for (key, load) in counts {
                var sum = total[key] ?? ServerLoad(activeRequests: 0, requests: 0)
                sum.activeRequests += load.activeRequests
                sum.requests += load.requests
                total[key] = sum
            }
        }
        return servers.map { total[$0.poolKey] ?? ServerLoad(activeRequests: 0, requests: 0) }
    }

    /// Idle pooled connections over all loops (for tests and diagnostics).
    func idleConnections() async -> Int {
        var total = 0
        for bound in self.loops.withLockedValue({ Array($0.values) }) {
            total += (try? await bound.eventLoop.submit { bound.value.idleCount }.get()) ?? 0
        }
        return total
    }
}

/// One event loop's backend pools, one per server (by protocol and address), used on that loop only.
final class BackendPools {
    private let eventLoop: EventLoop
    private var pools: [String: BackendPool] = [:]
    /// The server asked for last and its pool: a request to the same server as the one before (one server, or
    /// a sticky client) skips hashing its key, which cost about 400 instructions a request (callgrind).
    private var lastPicked: (server: BalancedServer, pool: BackendPool)?
    private var closed = false
    /// What this loop's HTTP/1 connections share, both ways: requests to backends, responses to clients
    /// (``ListenerLoopState/http1Memory``).
    let http1Memory = HTTP1LoopMemory()

    init(eventLoop: EventLoop) {
        self.eventLoop = eventLoop
    }

    func pool(for server: BalancedServer) -> BackendPool {
        if let last = self.lastPicked, last.server === server { return last.pool }
        let pool = self.keyedPool(for: server)
        self.lastPicked = (server, pool)
        return pool
    }

    private func keyedPool(for server: BalancedServer) -> BackendPool {
        if let pool = self.pools[server.poolKey] { return pool }
        let pool = BackendPool(server: server.server, eventLoop: self.eventLoop, http1Memory: self.http1Memory)
        if self.closed { pool.closeAll() }
        self.pools[server.poolKey] = pool
        return pool
    }

    func retain(_ keys: Set<String>, drainTimeout: TimeAmount) {
        self.lastPicked = nil
        for (key, pool) in self.pools where !keys.contains(key) {
            pool.retire(drainTimeout: drainTimeout)
            self.pools[key] = nil
            if pool.activeRequests > 0 { self.draining[key, default: []].append(pool) }
        }
    }

    /// Retired pools with requests still in flight, by server: their servers show as `Draining` in their
    /// groups' status until the last request ends (or the drain timeout closes its connection).
    private var draining: [String: [BackendPool]] = [:]

    /// The requests still in flight on retired pools and all they carried, by server; a pool whose requests
    /// have all ended is forgotten here.
    func drainingCounts() -> [String: ServerLoad] {
        var counts: [String: ServerLoad] = [:]
        for (key, pools) in self.draining {
            let left = pools.filter { $0.activeRequests > 0 }
            self.draining[key] = left.isEmpty ? nil : left
            guard !left.isEmpty else { continue }
            counts[key] = ServerLoad(activeRequests: left.reduce(0) { $0 + $1.activeRequests },
                                     requests: left.reduce(0) { $0 + $1.requestsStarted })
        }
        return counts
    }

    func closeAll() {
        self.closed = true
        self.lastPicked = nil
        self.draining = [:]
        for pool in self.pools.values {
            pool.closeAll()
        }
    }

    var idleCount: Int {
        self.pools.values.reduce(0) { $0 + $1.idleCount }
    }

    var requestCounts: [String: (started: Int, ended: Int)] {
        self.pools.mapValues { (started: $0.requestsStarted, ended: $0.requestsEnded) }
    }
}

/// A server's requests, for its group's status.
public struct ServerLoad: Sendable, Equatable {
    /// Picked and not yet over (a WebSocket tunnel counts while it is open).
    public var activeRequests: Int
    /// Sent to it since it joined (retired and added again: from zero).
    public var requests: Int

    public init(activeRequests: Int, requests: Int) {
        self.activeRequests = activeRequests
        self.requests = requests
    }
}

@available(*, unavailable)
extension BackendPools: Sendable {}
