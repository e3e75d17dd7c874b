import ALBHTTP
import NIOCore

/// A point-in-time copy of a listener's counters (what its status file shows).
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

/// The client protocol a response went out on: the `protocol` label of the request metrics.
public enum ClientProtocol: Int, Sendable, CaseIterable {
    case http1, http2, http3
    public var label: String {
        switch self {
        case .http1: "HTTP/1.1"
        case .http2: "HTTP/2"
        case .http3: "HTTP/3"
        }
    }
}

/// Why a connection or request was refused at the edge: the `reason` label of the rejection metric.
public enum EdgeRejection: Int, Sendable, CaseIterable {
    /// The listener's concurrent connection cap (`limits.maxConnections`): closed at accept.
    case connectionLimit
    /// 400: a malformed or smuggling-prone request head.
    case badRequest
    /// 408: the request head did not arrive within the header timeout.
    case headerTimeout
    /// 431: the request head is over the size or field-count limit.
    case headersTooLarge

    public var label: String {
        switch self {
        case .connectionLimit: return "connection_limit"
        case .badRequest: return "bad_request"
        case .headerTimeout: return "header_timeout"
        case .headersTooLarge: return "headers_too_large"
        }
    }

    init?(status: Int) {
        switch status {
        case 400: self = .badRequest
        case 408: self = .headerTimeout
        case 431: self = .headersTooLarge
        default: return nil
        }
    }
}

/// A fixed-bucket histogram of durations, counted in plain Ints: one per loop, summed on scrape.
/// The bounds are Prometheus' default buckets (5 ms to 10 s), which cover a proxy's requests from a
/// cached answer to the request timeout's usual range.
public struct FixedBucketHistogram: Sendable, Equatable {
    /// Upper bounds in nanoseconds (the `le` labels are these in seconds); a last, implicit `+Inf`.
    public static let boundsNanoseconds: [Int64] = [
        5_000_000, 10_000_000, 25_000_000, 50_000_000, 100_000_000, 250_000_000, 500_000_000,
        1_000_000_000, 2_500_000_000, 5_000_000_000, 10_000_000_000,
    ]
    public static var boundsSeconds: [Double] { boundsNanoseconds.map { Double($0) / 1_000_000_000 } }

    /// Observations per bucket (not cumulative), the last one for above every bound.
    public private(set) var buckets = [Int](repeating: 0, count: FixedBucketHistogram.boundsNanoseconds.count + 1)
    public private(set) var count = 0
    public private(set) var sumNanoseconds: Int64 = 0

    public init() {}

    mutating func observe(_ duration: TimeAmount) {
        let nanoseconds = max(duration.nanoseconds, 0)
        var index = 0
        let bounds = Self.boundsNanoseconds
        while index < bounds.count && nanoseconds > bounds[index] { index += 1 }
        self.buckets[index] &+= 1
        self.count &+= 1
        self.sumNanoseconds &+= nanoseconds
    }

    static func += (lhs: inout FixedBucketHistogram, rhs: FixedBucketHistogram) {
        for index in lhs.buckets.indices { lhs.buckets[index] &+= rhs.buckets[index] }
        lhs.count &+= rhs.count
        lhs.sumNanoseconds &+= rhs.sumNanoseconds
    }

    /// Cumulative counts per bound, as the exposition format's `_bucket{le=...}` lines want them.
    public var cumulative: [Int] {
        var total = 0
        return self.buckets.map { total &+= $0; return total }
    }
}

/// A server of a group, as the upstream metrics label it. Its hash is computed once per configuration:
/// a per-request lookup then hashes one Int rather than two strings.
public struct UpstreamKey: Hashable, Sendable {
    public let group: String
    /// "host:port" (IPv6 in brackets).
    public let server: String
    private let precomputedHash: Int

    public init(group: String, server: String) {
        self.group = group
        self.server = server
        var hasher = Hasher()
        hasher.combine(group)
        hasher.combine(server)
        self.precomputedHash = hasher.finalize()
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(self.precomputedHash)
    }

    public static func == (lhs: UpstreamKey, rhs: UpstreamKey) -> Bool {
        lhs.precomputedHash == rhs.precomputedHash && lhs.group == rhs.group && lhs.server == rhs.server
    }
}

/// One server's upstream counters (on one loop, or summed).
public struct UpstreamCounters: Sendable, Equatable {
    /// Connects that failed or timed out (each one, including the one a retry follows).
    public var connectFailures = 0
    /// From the request head (when the server was picked) to the end of the server's response.
    public var duration = FixedBucketHistogram()

    public init() {}

    static func += (lhs: inout UpstreamCounters, rhs: UpstreamCounters) {
        lhs.connectFailures &+= rhs.connectFailures
        lhs.duration += rhs.duration
    }
}

/// One listener's counters on one event loop. Plain Ints, touched only on that loop (the
/// ``ListenerLoopState`` that owns them is loop-bound): counting costs no lock and no atomic on a
/// cache line other loops write. A scrape sums them by running on each loop (``ListenerRuntime/metrics()``).
public struct ListenerLoopCounters: Sendable, Equatable {
    public var totalConnections = 0
    public var totalRequests = 0
    /// Responses by ``ClientProtocol`` and status class: index `protocol * 5 + (status / 100 - 1)`.
    public var responses = [Int](repeating: 0, count: ClientProtocol.allCases.count * 5)
    /// By ``EdgeRejection``.
    public var rejections = [Int](repeating: 0, count: EdgeRejection.allCases.count)
    /// Bytes read from and written to client sockets (TLS records included on HTTPS listeners).
    public var receivedBytes = 0
    public var sentBytes = 0
    /// Answered requests, from the request head to the response's end.
    public var requestDuration = FixedBucketHistogram()
    public var upstreams: [UpstreamKey: UpstreamCounters] = [:]

    public init() {}

    mutating func countResponse(status: Int, framing: ClientFraming = .http1) {
        self.countResponse(status: status, clientProtocol: framing == .http2 ? .http2 : .http1)
    }

    mutating func countResponse(status: Int, clientProtocol: ClientProtocol) {
        let statusClass = status / 100
        guard statusClass >= 1 && statusClass <= 5 else { return }
        self.responses[clientProtocol.rawValue * 5 + statusClass - 1] &+= 1
    }

    mutating func countRejection(_ rejection: EdgeRejection) {
        self.rejections[rejection.rawValue] &+= 1
    }

    /// A 400, 408 or 431 refusal at the edge (other statuses are not edge rejections).
    mutating func countEdgeRefusal(status: Int) {
        if let rejection = EdgeRejection(status: status) { self.countRejection(rejection) }
    }

    mutating func countConnectFailure(_ key: UpstreamKey) {
        self.upstreams[key, default: UpstreamCounters()].connectFailures &+= 1
    }

    mutating func observeUpstream(_ key: UpstreamKey, _ duration: TimeAmount) {
        self.upstreams[key, default: UpstreamCounters()].duration.observe(duration)
    }

    /// Responses of one status class (1 to 5) over every protocol.
    public func responses(statusClass: Int) -> Int {
        ClientProtocol.allCases.reduce(0) { $0 &+ self.responses[$1.rawValue * 5 + statusClass - 1] }
    }

    public func responses(protocol clientProtocol: ClientProtocol, statusClass: Int) -> Int {
        self.responses[clientProtocol.rawValue * 5 + statusClass - 1]
    }

    public func rejections(_ rejection: EdgeRejection) -> Int {
        self.rejections[rejection.rawValue]
    }

    public static func += (lhs: inout ListenerLoopCounters, rhs: ListenerLoopCounters) {
        lhs.totalConnections &+= rhs.totalConnections
        lhs.totalRequests &+= rhs.totalRequests
        for index in lhs.responses.indices { lhs.responses[index] &+= rhs.responses[index] }
        for index in lhs.rejections.indices { lhs.rejections[index] &+= rhs.rejections[index] }
        lhs.receivedBytes &+= rhs.receivedBytes
        lhs.sentBytes &+= rhs.sentBytes
        lhs.requestDuration += rhs.requestDuration
        for (key, counters) in rhs.upstreams {
            lhs.upstreams[key, default: UpstreamCounters()] += counters
        }
    }
}

/// A listener's metrics at one scrape: its loops' counters summed, plus the gauges read then.
public struct ListenerMetrics: Sendable, Equatable {
    public var name: String
    public var activeConnections: Int
    /// Of ``activeConnections``, those idle with their sockets parked (``ParkedConnections``).
    public var parkedConnections: Int
    public var counters: ListenerLoopCounters

    public init(name: String, activeConnections: Int = 0, parkedConnections: Int = 0,
                counters: ListenerLoopCounters = ListenerLoopCounters()) {
        self.name = name
        self.activeConnections = activeConnections
        self.parkedConnections = parkedConnections
        self.counters = counters
    }

    /// What the listener's status file shows.
    public var stats: ListenerStats {
        ListenerStats(
            activeConnections: self.activeConnections,
            totalConnections: self.counters.totalConnections,
            totalRequests: self.counters.totalRequests,
            responses2xx: self.counters.responses(statusClass: 2),
            responses3xx: self.counters.responses(statusClass: 3),
            responses4xx: self.counters.responses(statusClass: 4),
            responses5xx: self.counters.responses(statusClass: 5)
        )
    }
}
