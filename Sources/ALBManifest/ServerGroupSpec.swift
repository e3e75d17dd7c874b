/// Protocol spoken to the backends; which listener protocols may use it is a cross-resource rule.
public enum BackendProtocol: String, Sendable, Codable, CaseIterable {
    case http = "HTTP"
    case https = "HTTPS"
    case grpc = "gRPC"
}

/// Load-balancing algorithm of a server group; the data plane implements it.
public enum Scheduler: String, Sendable, Codable, CaseIterable {
    /// Weighted round robin.
    case wrr = "Wrr"
    /// Weighted least connections.
    case wlc = "Wlc"
    /// Source-IP consistent hash.
    case sch = "Sch"
}

/// HTTP method of health probes.
public enum HealthCheckMethod: String, Sendable, Codable, CaseIterable {
    case head = "HEAD"
    case get = "GET"
}

/// How sticky sessions are kept; only `Insert` (the balancer sets a cookie) is supported.
public enum StickySessionType: String, Sendable, Codable, CaseIterable {
    case insert = "Insert"
}

/// One backend; weight 0 takes it out of rotation. A host name is kept as written, never resolved here.
public struct BackendServer: Equatable, Sendable {
    public var address: String
    public var port: Int
    public var weight = 100
    public var description = ""
    public init(address: String, port: Int, weight: Int = 100, description: String = "") {
        self.address = address
        self.port = port
        self.weight = weight
        self.description = description
    }
}

/// Active health checking settings with ALB's defaults; off unless `enabled`. Probing is the data plane's job.
public struct HealthCheck: Equatable, Sendable {
    public var enabled = false
    public var path = "/"
    public var method: HealthCheckMethod = .head
    /// Subset of `http_2xx` ... `http_5xx`.
    public var codes = ["http_2xx", "http_3xx"]
    public var interval = 2
    public var timeout = 5
    public var healthyThreshold = 3
    public var unhealthyThreshold = 3
    public init() {}
}

/// Cookie-based session persistence settings; off unless `enabled`.
public struct StickySession: Equatable, Sendable {
    public var enabled = false
    public var type: StickySessionType = .insert
    public var cookieTimeout = 1000
    public init() {}
}

/// A ServerGroup spec with defaults applied. It does not resolve host names or probe servers.
public struct ServerGroupSpec: Equatable, Sendable {
    public var `protocol`: BackendProtocol = .http
    public var scheduler: Scheduler = .wrr
    public var servers: [BackendServer] = []
    public var healthCheck = HealthCheck()
    public var stickySession = StickySession()
    public init() {}
}
