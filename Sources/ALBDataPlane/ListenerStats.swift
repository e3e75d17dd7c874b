import Atomics

/// A point-in-time copy of a listener's counters.
public struct ListenerStats: Sendable, Equatable {
    public var activeConnections: Int
    public var totalConnections: Int
    public var totalRequests: Int
    public var responses2xx: Int
    public var responses3xx: Int
    public var responses4xx: Int
    public var responses5xx: Int

    public init(
        activeConnections: Int = 0,
        totalConnections: Int = 0,
        totalRequests: Int = 0,
        responses2xx: Int = 0,
        responses3xx: Int = 0,
        responses4xx: Int = 0,
        responses5xx: Int = 0
    ) {
        self.activeConnections = activeConnections
        self.totalConnections = totalConnections
        self.totalRequests = totalRequests
        self.responses2xx = responses2xx
        self.responses3xx = responses3xx
        self.responses4xx = responses4xx
        self.responses5xx = responses5xx
    }
}

/// Lock-free counters behind ``ListenerStats`` (relaxed: they are statistics, not synchronization).
final class ListenerCounters: Sendable {
    let activeConnections = ManagedAtomic<Int>(0)
    let totalConnections = ManagedAtomic<Int>(0)
    let totalRequests = ManagedAtomic<Int>(0)
    let responses2xx = ManagedAtomic<Int>(0)
    let responses3xx = ManagedAtomic<Int>(0)
    let responses4xx = ManagedAtomic<Int>(0)
    let responses5xx = ManagedAtomic<Int>(0)

    func countResponse(status: Int) {
        switch status {
        case 200..<300: self.responses2xx.wrappingIncrement(ordering: .relaxed)
        case 300..<400: self.responses3xx.wrappingIncrement(ordering: .relaxed)
        case 400..<500: self.responses4xx.wrappingIncrement(ordering: .relaxed)
        case 500..<600: self.responses5xx.wrappingIncrement(ordering: .relaxed)
        default: break
        }
    }

    var snapshot: ListenerStats {
        ListenerStats(
            activeConnections: self.activeConnections.load(ordering: .relaxed),
            totalConnections: self.totalConnections.load(ordering: .relaxed),
            totalRequests: self.totalRequests.load(ordering: .relaxed),
            responses2xx: self.responses2xx.load(ordering: .relaxed),
            responses3xx: self.responses3xx.load(ordering: .relaxed),
            responses4xx: self.responses4xx.load(ordering: .relaxed),
            responses5xx: self.responses5xx.load(ordering: .relaxed)
        )
    }
}
