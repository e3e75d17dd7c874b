/// The client-facing protocol; QUIC listeners speak HTTP/3 over UDP, the others TCP.
/// Immutable on a listener: changing it replaces the listener.
public enum ListenerProtocol: String, Sendable, Codable, CaseIterable {
    case http = "HTTP"
    case https = "HTTPS"
    case quic = "QUIC"
}

/// What the operator wants, not what is: the observed state (Configuring, Failed...) lives in status.
public enum ListenerDesiredState: String, Sendable, Codable, CaseIterable {
    case running = "Running"
    case stopped = "Stopped"
}

/// Client-IP retrieval from `X-Forwarded-For`. Syntax only: the data plane applies it.
public struct ClientIPSettings: Equatable, Sendable {
    public var enabled: Bool = false
    /// IPs or CIDRs; `["0.0.0.0/0"]` trusts every hop.
    public var trustedProxies: [String] = []
    public init(enabled: Bool = false, trustedProxies: [String] = []) {
        self.enabled = enabled
        self.trustedProxies = trustedProxies
    }
}

/// Which `X-Forwarded-*` style headers the listener adds to proxied requests. The client-certificate
/// switches only have an effect on mutual-TLS listeners; that is not an error elsewhere.
public struct HeaderSwitches: Equatable, Sendable {
    public var xForwardedFor = true
    public var xForwardedProto = false
    public var xForwardedPort = false
    public var xForwardedHost = false
    public var xForwardedClientSrcPort = false
    public var slbId = false
    public var clientCertSubjectDN = false
    public var clientCertIssuerDN = false
    public var clientCertFingerprint = false
    public var clientCertClientVerify = false
    public init() {}

    /// Manifest key names, in canonical order, with their key paths and what each adds.
    static var fields: [(name: String, keyPath: WritableKeyPath<HeaderSwitches, Bool>, summary: String)] { [
        ("xForwardedFor", \.xForwardedFor, "X-Forwarded-For with the client IP appended."),
        ("xForwardedProto", \.xForwardedProto, "X-Forwarded-Proto: http or https."),
        ("xForwardedPort", \.xForwardedPort, "X-Forwarded-Port: the listener port."),
        ("xForwardedHost", \.xForwardedHost, "X-Forwarded-Host: the request's Host."),
        ("xForwardedClientSrcPort", \.xForwardedClientSrcPort, "X-Forwarded-Client-srcport: the client's source port."),
        ("slbId", \.slbId, "SLB-ID: the load balancer's name."),
        ("clientCertSubjectDN", \.clientCertSubjectDN, "X-Forwarded-Clientcert-subjectdn (mutual TLS only)."),
        ("clientCertIssuerDN", \.clientCertIssuerDN, "X-Forwarded-Clientcert-issuerdn (mutual TLS only)."),
        ("clientCertFingerprint", \.clientCertFingerprint, "X-Forwarded-Clientcert-fingerprint (mutual TLS only)."),
        ("clientCertClientVerify", \.clientCertClientVerify,
         "X-Forwarded-Clientcert-clientverify (mutual TLS only)."),
    ] }
}

/// Advertise an associated QUIC listener with `Alt-Svc`. Names the listener; does not resolve its port.
public struct QUICUpgrade: Equatable, Sendable {
    public var enabled = false
    public var listener: String?
    public init(enabled: Bool = false, listener: String? = nil) {
        self.enabled = enabled
        self.listener = listener
    }
}

/// Certificate names (not contents): the default server certificate and the SNI-selected extras.
public struct ListenerCertificates: Equatable, Sendable {
    public var server: String?
    public var additional: [String] = []
    public init(server: String? = nil, additional: [String] = []) {
        self.server = server
        self.additional = additional
    }
}

/// Mutual TLS: client certificates verified against a CA Certificate (by name; contents are not read here).
public struct MutualAuthentication: Equatable, Sendable {
    public var enabled = false
    /// Name of a Certificate of type CA.
    public var ca: String?
    public init(enabled: Bool = false, ca: String? = nil) {
        self.enabled = enabled
        self.ca = ca
    }
}

/// A server group named by a forward action, with its share of traffic (0 sends none).
/// Holds the name only; the loader checks it exists and matches the listener protocol.
public struct WeightedServerGroup: Equatable, Sendable {
    public var name: String
    public var weight: Int = 100
    public init(name: String, weight: Int = 100) {
        self.name = name
        self.weight = weight
    }
}

/// The server groups a rule forwards to; never empty once validated.
public struct ForwardGroup: Equatable, Sendable {
    public var serverGroups: [WeightedServerGroup]
    public init(serverGroups: [WeightedServerGroup]) { self.serverGroups = serverGroups }
}

/// The listener's default forwarding rule; there are no other rules in this version.
public struct DefaultAction: Equatable, Sendable {
    public var forwardGroup: ForwardGroup
    public init(forwardGroup: ForwardGroup) { self.forwardGroup = forwardGroup }
}

/// A Listener spec with defaults applied and per-resource rules checked.
///
/// It holds names of the resources it uses, not the resources: the loader checks the references,
/// and callers resolve them. `protocol`, `port` and `loadBalancer` are immutable (a change replaces it).
public struct ListenerSpec: Equatable, Sendable {
    public var loadBalancer: String
    public var `protocol`: ListenerProtocol
    public var port: Int
    public var description: String = ""
    public var state: ListenerDesiredState = .running
    public var http2 = true
    public var idleTimeout = 15
    public var requestTimeout = 60
    public var compression = false
    public var clientIp = ClientIPSettings()
    public var headers = HeaderSwitches()
    public var quicUpgrade = QUICUpgrade()
    public var certificates = ListenerCertificates()
    public var securityPolicy = ListenerSpec.defaultSecurityPolicy
    public var mutualAuthentication = MutualAuthentication()
    public var defaultAction: DefaultAction

    public static let defaultSecurityPolicy = "tls_cipher_policy_1_0"

    public init(loadBalancer: String, protocol: ListenerProtocol, port: Int, defaultAction: DefaultAction) {
        self.loadBalancer = loadBalancer
        self.protocol = `protocol`
        self.port = port
        self.defaultAction = defaultAction
    }
}
