/// ALB instance edition; it decides which listener features and quotas are allowed.
public enum Edition: String, Sendable, Codable, CaseIterable {
    case basic = "Basic"
    case standard = "Standard"
    case standardWithWaf = "StandardWithWaf"
}

/// Per-instance limits. Values are already checked against the edition and `upgraded` flag.
public struct LoadBalancerQuotas: Equatable, Sendable {
    public var listeners: Int = 50
    public var maxIdleTimeout: Int = 600
    public var maxRequestTimeout: Int = 600

    /// The largest `listeners` quota: on Basic instances, and on the others.
    public static let maxListenersBasic = 80
    public static let maxListeners = 100
    /// The largest timeout quotas: on instances that are not `upgraded`, and on those that are.
    public static let maxTimeout = 900
    public static let maxTimeoutUpgraded = 3600

    public init(listeners: Int = 50, maxIdleTimeout: Int = 600, maxRequestTimeout: Int = 600) {
        self.listeners = listeners
        self.maxIdleTimeout = maxIdleTimeout
        self.maxRequestTimeout = maxRequestTimeout
    }
}

/// A LoadBalancer (ALB instance) spec with defaults applied.
///
/// It binds nothing itself: `address` is only the bind address its listeners use.
public struct LoadBalancerSpec: Equatable, Sendable {
    public var edition: Edition = .standard
    public var address: String = "0.0.0.0"
    public var quotas = LoadBalancerQuotas()
    public var upgraded: Bool = false

    public init(edition: Edition = .standard, address: String = "0.0.0.0",
                quotas: LoadBalancerQuotas = LoadBalancerQuotas(), upgraded: Bool = false) {
        self.edition = edition
        self.address = address
        self.quotas = quotas
        self.upgraded = upgraded
    }
}
