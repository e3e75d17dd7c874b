import ALBHTTP
import ALBTLS
import NIOCore

/// Which headers the proxy adds to backend requests (SPEC §4 `headers`): the handlers' own options type,
/// so the data plane's configuration and the proxy path share one definition.
public typealias HeaderOptions = ForwardedHeaderOptions

/// Client IP retrieval from `X-Forwarded-For`; see ``ClientIPResolver`` for the rules.
public struct ClientIPOptions: Sendable, Equatable {
    /// CIDRs (or single addresses) of trusted proxies; `["0.0.0.0/0"]` takes the leftmost address.
    public var trustedProxies: [String]

    public init(trustedProxies: [String]) {
        self.trustedProxies = trustedProxies
    }
}

/// One backend. `weight` 0 takes it out of rotation. Its identity for pooling is `host:port`.
public struct BackendServer: Sendable, Equatable, Hashable {
    public var host: String
    public var port: Int
    public var weight: Int
    /// Speak TLS to it (an HTTPS server group).
    public var useTLS: Bool
    /// Speak cleartext HTTP/2 to it, one stream per request (a gRPC server group).
    public var useHTTP2: Bool

    public init(host: String, port: Int, weight: Int = 100, useTLS: Bool = false, useHTTP2: Bool = false) {
        self.host = host
        self.port = port
        self.weight = weight
        self.useTLS = useTLS
        self.useHTTP2 = useHTTP2
    }

    /// The server's identity: connections are pooled per server and protocol.
    public var poolKey: String {
        if self.useHTTP2 { return "h2c://" + self.address }
        return self.useTLS ? "https://" + self.address : self.address
    }

    /// `host:port` (IPv6 hosts in brackets), the pool key and the access log's `upstream`.
    public var address: String {
        // Byte search: `String.contains(_:)` with a string argument goes through Foundation here.
        self.host.utf8.contains(UInt8(ascii: ":")) ? "[\(self.host)]:\(self.port)" : "\(self.host):\(self.port)"
    }
}

/// A group of servers balanced by smooth weighted round robin; groups are weighted against each other.
public struct BackendGroup: Sendable, Equatable {
    public var name: String
    public var weight: Int
    public var servers: [BackendServer]
    public var scheduling: Scheduling
    /// Active health checks of the group's servers; nil when off (every server stays in rotation).
    public var healthCheck: HealthCheckConfig?
    /// Sticky sessions by an inserted cookie: its lifetime in seconds; nil when off.
    public var stickyCookieTimeout: Int?

    public init(name: String, weight: Int = 100, servers: [BackendServer], scheduling: Scheduling = .weightedRoundRobin,
                healthCheck: HealthCheckConfig? = nil, stickyCookieTimeout: Int? = nil) {
        self.name = name
        self.weight = weight
        self.servers = servers
        self.scheduling = scheduling
        self.healthCheck = healthCheck
        self.stickyCookieTimeout = stickyCookieTimeout
    }
}

/// Edge limits, on by default with these values (SPEC §4).
public struct EdgeLimits: Sendable, Equatable {
    /// Request line plus headers, bytes (CRLFs included). Over it: 431 and close.
    public var maxHeaderBytes: Int
    /// Header fields per request. Over it: 431 and close.
    public var maxHeaderCount: Int
    /// From a request's first byte to the end of its head. Over it: 408 and close.
    public var headerTimeout: TimeAmount
    /// Backend TCP connect. Over it: 502.
    public var connectTimeout: TimeAmount
    /// Concurrent client connections per listener; connections above it are closed at once.
    public var maxConnections: Int

    public init(
        maxHeaderBytes: Int = 65536,
        maxHeaderCount: Int = 100,
        headerTimeout: TimeAmount = .seconds(10),
        connectTimeout: TimeAmount = .seconds(5),
        maxConnections: Int = 20_000
    ) {
        self.maxHeaderBytes = maxHeaderBytes
        self.maxHeaderCount = maxHeaderCount
        self.headerTimeout = headerTimeout
        self.connectTimeout = connectTimeout
        self.maxConnections = maxConnections
    }
}

/// Everything one HTTP listener needs. `bindHost`/`port` are fixed for a listener's life
/// (``DataPlane/update(_:)`` refuses to change them); the rest can change in place.
public struct ListenerConfig: Sendable, Equatable {
    public var name: String
    /// Identifies the bound instance in the ``DataPlane``; defaults to `name`. A replacement binds a second
    /// instance of the same listener under another key before the first one goes.
    public var key: String
    public var loadBalancerName: String
    public var bindHost: String
    /// 0 binds an ephemeral port; ``DataPlane/start(_:)`` returns the real address.
    public var port: Int
    public var idleTimeout: TimeAmount
    public var requestTimeout: TimeAmount
    public var headers: HeaderOptions
    public var clientIP: ClientIPOptions?
    public var groups: [BackendGroup]
    public var limits: EdgeLimits
    /// TLS termination (an HTTPS listener); nil serves plain HTTP. Changes in place: the next handshake
    /// uses the new certificates and policy.
    public var tls: ServerTLS?
    /// A QUIC listener (HTTP/3 over UDP) with this certificate; nil for the TCP listeners. Fixed for the
    /// listener's life in this release: a new certificate takes a new listener (docs/quic.md).
    public var quic: QUICListenerCertificate?
    /// Response compression (Brotli, gzip; `ResponseCompressionPolicy`). Changes in place: connections
    /// accepted while it is on compress until it is switched off; see docs/decisions.md.
    public var compression: Bool
    /// The `Alt-Svc` value every relayed response carries (an HTTPS listener's QUIC upgrade:
    /// `h3=":PORT"; ma=86400`); nil for none. Changes in place, from the next response.
    public var altSvc: String?

    public init(
        name: String,
        loadBalancerName: String = "",
        bindHost: String = "0.0.0.0",
        port: Int,
        idleTimeout: TimeAmount = .seconds(15),
        requestTimeout: TimeAmount = .seconds(60),
        headers: HeaderOptions = HeaderOptions(),
        clientIP: ClientIPOptions? = nil,
        groups: [BackendGroup],
        limits: EdgeLimits = EdgeLimits(),
        tls: ServerTLS? = nil,
        compression: Bool = false,
        altSvc: String? = nil,
        quic: QUICListenerCertificate? = nil
    ) {
        self.name = name
        self.key = name
        self.loadBalancerName = loadBalancerName
        self.bindHost = bindHost
        self.port = port
        self.idleTimeout = idleTimeout
        self.requestTimeout = requestTimeout
        self.headers = headers
        self.clientIP = clientIP
        self.groups = groups
        self.limits = limits
        self.tls = tls
        self.compression = compression
        self.altSvc = altSvc
        self.quic = quic
    }
}

/// A QUIC listener's server certificate: the PEM files ALBTLS read and checked, loaded into GnuTLS when the
/// listener starts.
public struct QUICListenerCertificate: Sendable, Equatable {
    public var chainPEM: [UInt8]
    public var keyPEM: [UInt8]

    public init(chainPEM: [UInt8], keyPEM: [UInt8]) {
        self.chainPEM = chainPEM
        self.keyPEM = keyPEM
    }
}

public enum DataPlaneError: Error, CustomStringConvertible, Equatable {
    /// `reason` is the OS error text, e.g. "Address already in use (errno: 98)".
    case bindFailed(address: String, reason: String)
    case unknownListener(String)
    case listenerExists(String)
    /// `bindHost`/`port` cannot change in place: stop and start the listener instead.
    case immutableField(listener: String, field: String)
    case invalidConfig(listener: String, reason: String)

    public var description: String {
        switch self {
        case .bindFailed(let address, let reason): return "cannot bind \(address): \(reason)"
        case .unknownListener(let name): return "unknown listener \(name)"
        case .listenerExists(let name): return "listener \(name) is already running"
        case .immutableField(let listener, let field): return "listener \(listener): \(field) cannot change in place"
        case .invalidConfig(let listener, let reason): return "listener \(listener): \(reason)"
        }
    }
}
