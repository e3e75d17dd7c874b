import ALBHTTP
import Atomics
import NIOCore

/// A smooth weighted round robin shared by every event loop of a listener.
///
/// The order is precomputed once per configuration (one period of ``SmoothWeightedRoundRobin`` over the
/// weights reduced by their gcd, so at most 100 entries per element) and each pick is one relaxed atomic
/// increment: no lock, and the split is exact across loops, so two `curl`s in a row reach two servers.
final class WeightedSchedule<Element: Sendable>: Sendable {
    private let order: [Element]
    private let cursor = ManagedAtomic<Int>(0)

    init(_ weighted: [(element: Element, weight: Int)]) {
        let usable = weighted.filter { $0.weight > 0 }
        let divisor = usable.map(\.weight).reduce(0, Self.gcd)
        let reduced = usable.map { (element: $0.element, weight: $0.weight / max(divisor, 1)) }
        var picker = SmoothWeightedRoundRobin(reduced)
        let period = reduced.reduce(0) { $0 + $1.weight }
        self.order = (0..<period).compactMap { _ in picker.next() }
    }

    var isEmpty: Bool { self.order.isEmpty }

    /// Entries in one period (each element as often as its reduced weight).
    var count: Int { self.order.count }

    func next() -> Element? {
        guard !self.order.isEmpty else { return nil }
        let ticket = self.cursor.loadThenWrappingIncrement(ordering: .relaxed)
        return self.order[Int(UInt(bitPattern: ticket) % UInt(self.order.count))]
    }

    private static func gcd(_ a: Int, _ b: Int) -> Int { b == 0 ? a : gcd(b, a % b) }
}

/// A picked server with its pool key, built once per configuration rather than per request. A class: an
/// exchange copies its pick several times, and as a struct every copy would retain each string and reference
/// in it.
final class BalancedServer: Sendable {
    let server: BackendServer
    /// `server.address`, which formats a string each time it is read.
    let address: String
    let poolKey: String
    /// The group and server as the upstream metrics label them.
    let metricsKey: UpstreamKey
    /// Requests in flight to this server through this configuration (`Wlc` groups only; nil otherwise).
    private let inFlight: ManagedAtomic<Int>?
    /// Sticky groups only: the cookie value naming this server, and the `Set-Cookie` that issues it.
    let stickyValue: String?
    let stickySetCookie: String?

    /// Until when (`NIODeadline` uptime nanoseconds) a failed connect keeps the server out of rotation; 0: in it.
    private let downUntil = ManagedAtomic<UInt64>(0)
    /// The group's count of servers marked down, which a pick reads first (``PassiveFailures``).
    private let groupFailures: PassiveFailures

    init(_ server: BackendServer, countsRequests: Bool = false, group: String = "", stickyCookieTimeout: Int? = nil,
         failures: PassiveFailures = PassiveFailures()) {
        self.groupFailures = failures
        self.server = server
        self.address = server.address
        self.poolKey = server.poolKey
        self.metricsKey = UpstreamKey(group: group, server: server.address)
        self.inFlight = countsRequests ? ManagedAtomic(0) : nil
        if let stickyCookieTimeout {
            let value = StickyCookie.value(group: group, server: server)
            self.stickyValue = value
            self.stickySetCookie = StickyCookie.setCookie(value: value, maxAge: stickyCookieTimeout)
        } else {
            self.stickyValue = nil
            self.stickySetCookie = nil
        }
    }

    var requestsInFlight: Int { self.inFlight?.load(ordering: .relaxed) ?? 0 }

    func requestStarted() {
        self.inFlight?.wrappingIncrement(ordering: .relaxed)
    }

    /// Called once for every pick when its exchange is over (however it ended).
    func requestFinished() {
        self.inFlight?.wrappingDecrement(ordering: .relaxed)
    }

    /// A connect to this server failed (refused, reset or timed out): out of rotation for
    /// ``PassiveFailures/failTimeout``, so that the requests after this one do not each wait for it.
    func connectFailed(now: NIODeadline) {
        let until = now.uptimeNanoseconds &+ PassiveFailures.failTimeout
        if self.downUntil.exchange(until, ordering: .relaxed) == 0 {
            self.groupFailures.marked.wrappingIncrement(ordering: .relaxed)
        }
    }

    /// Whether a failed connect keeps the server out of rotation at `now`; a mark that has run out is cleared.
    func isDown(now: UInt64) -> Bool {
        let until = self.downUntil.load(ordering: .relaxed)
        guard until != 0 else { return false }
        if now < until { return true }
        if self.downUntil.compareExchange(expected: until, desired: 0, ordering: .relaxed).exchanged {
            self.groupFailures.marked.wrappingDecrement(ordering: .relaxed)
        }
        return false
    }
}

/// Passive failure marking, nginx's default `max_fails=1 fail_timeout=10s`: a server whose connect failed is
/// skipped by the group's picks for ten seconds, then tried again by the next pick that comes to it. Without it,
/// a server that drops connection attempts made every request the rotation sent to it wait for the connect
/// timeout before its retry. When every server is marked, the picks ignore the marks (better a try than a 503).
/// One count per group, read with one relaxed load per pick: nothing else is read while no server is marked.
final class PassiveFailures: Sendable {
    static let failTimeout: UInt64 = 10_000_000_000

    /// Servers of the group marked down, some perhaps run out and not yet cleared.
    let marked = ManagedAtomic<Int>(0)

    init() {}
}

/// A group by weight, then a server within it by the group's scheduler: the balancing of one configuration
/// snapshot, shared by every event loop of the listener. The groups' schedulers are shared with the other
/// listeners that forward to them (``ServerGroups``).
final class Balancer: Sendable {
    private let groups: WeightedSchedule<Int>
    private let servers: [GroupScheduler]

    /// Some group sets sticky cookies: requests' cookies are worth reading.
    let hasStickyGroups: Bool

    /// `health` gives the checked servers' shared health (groups with checks only); `scheduler`, when
    /// given, the shared scheduler of each group (else each group gets its own).
    init(_ groups: [BackendGroup], health: (HealthKey) -> ServerHealth? = { _ in nil },
         scheduler: ((BackendGroup) -> GroupScheduler)? = nil) {
        let servers = groups.map { scheduler?($0) ?? GroupScheduler($0, health: health) }
        self.servers = servers
        self.hasStickyGroups = groups.contains { $0.stickyCookieTimeout != nil }
        // A group whose servers all have weight 0 is never chosen.
        self.groups = WeightedSchedule(groups.indices.map { index in
            (element: index, weight: servers[index].isEmpty ? 0 : groups[index].weight)
        })
    }

    /// Nil when no server is available (503).
    func pick(clientIP: String = "") -> BackendServer? {
        self.pickBalanced(clientIP: clientIP)?.server
    }

    /// `clientIP` (after client-IP retrieval) is what `Sch` hashes. A pick from a `Wlc` group counts as a
    /// request in flight until the returned server's ``BalancedServer/requestFinished()``.
    ///
    /// `excluding` leaves one server out (a retry after its connect failed): its group may still be
    /// chosen, for its other servers; a group with no other server leaves the choice to the next group.
    func pickBalanced(clientIP: String, excluding: BackendServer? = nil, stickyValue: Substring? = nil) -> BalancedServer? {
        if let stickyValue, self.hasStickyGroups {
            for group in self.servers {
                if let server = group.server(stickyValue: stickyValue, excluding: excluding) { return server }
            }
        }
        guard let excluding else {
            guard let group = self.groups.next() else { return nil }
            return self.servers[group].pick(clientIP: clientIP)
        }
        for _ in 0..<max(self.servers.count, 1) {
            guard let group = self.groups.next() else { return nil }
            if let server = self.servers[group].pick(clientIP: clientIP, excluding: excluding) { return server }
        }
        return nil
    }
}

/// One server group's servers and its scheduler's state.
final class GroupScheduler: Sendable {
    /// The group it was built for, without the listener's weight for it (which is not the group's).
    private let definition: BackendGroup
    private let scheduling: Scheduling
    private let servers: [BalancedServer]
    private let weights: [Int]
    private let roundRobin: WeightedSchedule<BalancedServer>
    /// Sch: each server's seed (its address) with its weight.
    private let hashSeeds: [(seed: UInt64, weight: Int)]
    /// Wlc: rotates the order in which ties are broken.
    private let tieCursor = ManagedAtomic<Int>(0)
    /// Each server's health when the group is checked (nil: no checks, every server in rotation).
    private let health: [ServerHealth]?
    private let failures = PassiveFailures()

    init(_ group: BackendGroup, health: (HealthKey) -> ServerHealth? = { _ in nil }) {
        var definition = group
        definition.weight = 0
        self.definition = definition
        self.scheduling = group.scheduling
        let checked = group.healthCheck == nil ? nil : group.servers.compactMap {
            health(HealthKey(group: group.name, host: $0.host, port: $0.port))
        }
        self.health = checked?.count == group.servers.count ? checked : nil
        let counted = group.scheduling == .weightedLeastRequests
        let failures = self.failures
        self.servers = group.servers.map {
            BalancedServer($0, countsRequests: counted, group: group.name, stickyCookieTimeout: group.stickyCookieTimeout,
                           failures: failures)
        }
        self.weights = group.servers.map(\.weight)
        self.roundRobin = WeightedSchedule(zip(self.servers, self.weights).map { (element: $0, weight: $1) })
        self.hashSeeds = group.servers.map { (seed: SourceIPHash.seed(of: $0.address), weight: $0.weight) }
    }

    /// No server with a positive weight.
    var isEmpty: Bool { self.roundRobin.isEmpty }

    /// Whether this scheduler was built for `group` as it is now defined (whatever a listener's weight for it).
    func schedules(_ group: BackendGroup) -> Bool {
        var definition = group
        definition.weight = 0
        return definition == self.definition
    }

    /// The server a sticky cookie names, if it is in this group, in rotation and not `excluding`; a `Wlc`
    /// group counts it like a pick.
    func server(stickyValue: Substring, excluding: BackendServer?) -> BalancedServer? {
        let now = self.failures.marked.load(ordering: .relaxed) > 0 ? NIODeadline.now().uptimeNanoseconds : nil
        guard let index = self.servers.firstIndex(where: { $0.stickyValue.map { $0[...] == stickyValue } ?? false }),
              self.usable(index, excluding: excluding, now: now) else { return nil }
        let server = self.servers[index]
        server.requestStarted()
        return server
    }

    /// Servers out of rotation: the one a retry avoids, those their checks found unhealthy, and, given `now`,
    /// those a failed connect marked down (``PassiveFailures``).
    private func usable(_ index: Int, excluding: BackendServer?, now: UInt64?) -> Bool {
        if let health = self.health, !health[index].inRotation { return false }
        if let now, self.servers[index].isDown(now: now) { return false }
        return excluding == nil || self.servers[index].server != excluding
    }

    func pick(clientIP: String, excluding: BackendServer? = nil) -> BalancedServer? {
        let marked = self.failures.marked.load(ordering: .relaxed) > 0
        if !marked, excluding == nil, self.scheduling == .weightedRoundRobin, self.health?.allSatisfy(\.inRotation) ?? true {
            return self.roundRobin.next()  // the usual pick, in one step
        }
        guard marked else { return self.pick(clientIP: clientIP, excluding: excluding, now: nil) }
        // Some server is marked down: picked without it, unless no other is left.
        return self.pick(clientIP: clientIP, excluding: excluding, now: NIODeadline.now().uptimeNanoseconds)
            ?? self.pick(clientIP: clientIP, excluding: excluding, now: nil)
    }

    /// `now`: leave out the servers a failed connect marked down (nil: take no notice of the marks).
    private func pick(clientIP: String, excluding: BackendServer?, now: UInt64?) -> BalancedServer? {
        let health = self.health
        func usable(_ index: Int) -> Bool { self.usable(index, excluding: excluding, now: now) }
        let everyServerUsable = excluding == nil && now == nil && (health?.allSatisfy(\.inRotation) ?? true)
        switch self.scheduling {
        case .weightedRoundRobin:
            guard !everyServerUsable else { return self.roundRobin.next() }
            // The order holds each server as often as its weight: a bounded walk finds a usable one if any.
            for _ in 0..<self.roundRobin.count {
                if let server = self.roundRobin.next(), let index = self.index(of: server), usable(index) {
                    return server
                }
            }
            return nil
        case .sourceIPHash:
            // Without the servers out of rotation, their clients spread over the others as if removed.
            let seeds = everyServerUsable ? self.hashSeeds
                : self.hashSeeds.indices.map { usable($0) ? self.hashSeeds[$0] : (seed: self.hashSeeds[$0].seed, weight: 0) }
            return SourceIPHash.pick(key: clientIP, servers: seeds).map { self.servers[$0] }
        case .weightedLeastRequests:
            // Loads read one by one, not as one snapshot: two loops picking at once may both see the same
            // minimum, as two Envoy workers may; the next picks see both requests.
            let active = self.servers.map { $0.requestsInFlight }
            let weights = everyServerUsable ? self.weights : self.weights.indices.map { usable($0) ? self.weights[$0] : 0 }
            let start = self.tieCursor.loadThenWrappingIncrement(ordering: .relaxed)
            guard let index = LeastRequests.pick(active: active, weights: weights, start: start) else { return nil }
            let server = self.servers[index]
            server.requestStarted()
            return server
        }
    }

    private func index(of server: BalancedServer) -> Int? {
        self.servers.firstIndex { $0.server == server.server }
    }
}
