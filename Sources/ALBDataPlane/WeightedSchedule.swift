import ALBHTTP
import Atomics

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

    func next() -> Element? {
        guard !self.order.isEmpty else { return nil }
        let ticket = self.cursor.loadThenWrappingIncrement(ordering: .relaxed)
        return self.order[Int(UInt(bitPattern: ticket) % UInt(self.order.count))]
    }

    private static func gcd(_ a: Int, _ b: Int) -> Int { b == 0 ? a : gcd(b, a % b) }
}

/// A picked server with its pool key, built once per configuration rather than per request.
struct BalancedServer: Sendable {
    let server: BackendServer
    /// `server.address`, which formats a string each time it is read.
    let address: String
    let poolKey: String

    init(_ server: BackendServer) {
        self.server = server
        self.address = server.address
        self.poolKey = server.poolKey
    }
}

/// A group by weight, then a server within it: the balancing of one configuration snapshot.
final class Balancer: Sendable {
    private let groups: WeightedSchedule<Int>
    private let servers: [WeightedSchedule<BalancedServer>]

    init(_ groups: [BackendGroup]) {
        self.servers = groups.map { group in
            WeightedSchedule(group.servers.map { (element: BalancedServer($0), weight: $0.weight) })
        }
        // A group whose servers all have weight 0 is never chosen.
        self.groups = WeightedSchedule(groups.indices.map { [servers] index in
            (element: index, weight: servers[index].isEmpty ? 0 : groups[index].weight)
        })
    }

    /// Nil when no server is available (503).
    func pick() -> BackendServer? {
        self.pickBalanced()?.server
    }

    func pickBalanced() -> BalancedServer? {
        guard let group = self.groups.next() else { return nil }
        return self.servers[group].next()
    }
}
