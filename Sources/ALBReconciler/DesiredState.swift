import ALBDataPlane
import ALBManifest
import ALBTLS
import NIOCore

/// The resources the reconciler should serve, after the last-good rules are applied, and the pure
/// functions that turn them into data-plane configurations and comparable canonical fields.
public struct DesiredState: Sendable {
    public var resources: [ResourceID: Resource]
    /// The certificate files of the Certificate resources, as read for this pass.
    public var certificates: CertificateFiles

    public init(resources: [ResourceID: Resource], certificates: CertificateFiles = CertificateFiles()) {
        self.resources = resources
        self.certificates = certificates
    }

    public func resource(_ kind: ResourceKind, _ name: String) -> Resource? {
        resources[ResourceID(kind: kind, name: name)]
    }

    /// The address a listener binds, from its LoadBalancer; nil when that LoadBalancer is not available.
    /// There is deliberately no default: a listener never binds wider than its LoadBalancer says.
    public func bindAddress(of listener: ListenerSpec) -> String? {
        if case .loadBalancer(let balancer)? = resource(.loadBalancer, listener.loadBalancer)?.spec {
            return balancer.address
        }
        return nil
    }

    /// Canonical fields as diffed by `plan` and recorded as `live`. A listener's also carry the bind
    /// address, so moving its LoadBalancer to another address replaces it.
    public func canonical(_ resource: Resource) -> CanonicalFields {
        var fields = resource.canonical
        if case .listener(let listener) = resource.spec, let address = bindAddress(of: listener) {
            fields.entries.append((path: "bindAddress", value: address))
        }
        return fields
    }

    /// Builds the complete data-plane configuration of a listener, or says why it cannot.
    public func listenerConfig(_ listener: Resource) -> Result<ListenerConfig, ConfigurationError> {
        guard case .listener(let spec) = listener.spec else {
            return .failure(ConfigurationError(reason: .invalidSpec, message: "\(listener.id) is not a listener"))
        }
        var quic: QUICListenerCertificate?
        if spec.protocol == .quic {
            switch quicCertificate(spec) {
            case .success(let built): quic = built
            case .failure(let error): return .failure(error)
            }
        }
        var tls: ServerTLS?
        if spec.protocol == .https {
            switch serverTLS(spec) {
            case .success(let built): tls = built
            case .failure(let error): return .failure(error)
            }
        }
        guard let bindHost = bindAddress(of: spec) else {
            return .failure(ConfigurationError(
                reason: .missingReference,
                message: "load balancer \"\(spec.loadBalancer)\" is not available; the listener keeps its last good address"))
        }
        var groups: [BackendGroup] = []
        for reference in spec.defaultAction.forwardGroup.serverGroups {
            guard case .serverGroup(let group)? = resource(.serverGroup, reference.name)?.spec else {
                return .failure(ConfigurationError(reason: .missingReference,
                                                   message: "server group \"\(reference.name)\" is not available"))
            }
            groups.append(BackendGroup(
                name: reference.name, weight: reference.weight,
                servers: Self.backendServers(group),
                scheduling: Self.scheduling(group.scheduler),
                healthCheck: Self.healthCheck(group.healthCheck),
                stickyCookieTimeout: group.stickySession.enabled ? group.stickySession.cookieTimeout : nil))
        }
        var headers = HeaderOptions()
        headers.xForwardedFor = spec.headers.xForwardedFor
        headers.xForwardedProto = spec.headers.xForwardedProto
        headers.xForwardedPort = spec.headers.xForwardedPort
        headers.xForwardedHost = spec.headers.xForwardedHost
        headers.xForwardedClientSrcPort = spec.headers.xForwardedClientSrcPort
        headers.slbId = spec.headers.slbId
        headers.clientCertSubjectDN = spec.headers.clientCertSubjectDN
        headers.clientCertIssuerDN = spec.headers.clientCertIssuerDN
        headers.clientCertFingerprint = spec.headers.clientCertFingerprint
        headers.clientCertClientVerify = spec.headers.clientCertClientVerify
        let clientIP = spec.clientIp.enabled ? ClientIPOptions(trustedProxies: spec.clientIp.trustedProxies) : nil
        return .success(ListenerConfig(
            name: listener.id.name, loadBalancerName: spec.loadBalancer, bindHost: bindHost,
            port: spec.port, idleTimeout: .seconds(Int64(spec.idleTimeout)),
            requestTimeout: .seconds(Int64(spec.requestTimeout)), headers: headers, clientIP: clientIP,
            groups: groups, tls: tls, compression: spec.compression, altSvc: altSvc(spec), quic: quic))
    }

    /// The QUIC upgrade's `Alt-Svc` value (SPEC section 4): the associated QUIC listener's port, kept by
    /// clients for a day (`ma=86400`, as ALB). The validator has already refused a reference to anything but
    /// a QUIC listener of the same instance.
    private func altSvc(_ spec: ListenerSpec) -> String? {
        guard spec.protocol == .https, spec.quicUpgrade.enabled, let name = spec.quicUpgrade.listener,
              case .listener(let quic)? = resource(.listener, name)?.spec, quic.protocol == .quic else { return nil }
        return "h3=\":\(quic.port)\"; ma=86400"
    }

    /// A QUIC listener's server certificate, from the same checked PEM files as an HTTPS listener's. GnuTLS
    /// picks no certificate by SNI yet, so `certificates.additional` is not served (docs/quic.md).
    func quicCertificate(_ listener: ListenerSpec) -> Result<QUICListenerCertificate, ConfigurationError> {
        guard let name = listener.certificates.server else {
            return .failure(ConfigurationError(reason: .missingReference, message: "no server certificate"))
        }
        switch certificates.byName[name] {
        case .server(let certificate, _)?:
            return .success(QUICListenerCertificate(chainPEM: certificate.chainPEM, keyPEM: certificate.keyPEM))
        case .problem(let problem)?:
            return .failure(ConfigurationError(reason: .certificateInvalid, message: "certificate \"\(name)\": \(problem.message)"))
        case .ca?:
            return .failure(ConfigurationError(reason: .certificateInvalid,
                                               message: "certificate \"\(name)\" is a CA certificate, not a server certificate"))
        case nil:
            return .failure(ConfigurationError(reason: .missingReference, message: "certificate \"\(name)\" is not available"))
        }
    }
}

extension DesiredState {
    /// The data plane's form of a group's `healthCheck`; nil when it is off.
    static func healthCheck(_ check: HealthCheck) -> HealthCheckConfig? {
        guard check.enabled else { return nil }
        return HealthCheckConfig(
            path: check.path, method: check.method == .get ? .get : .head,
            statusClasses: Set(check.codes.compactMap { code in code.dropFirst(5).first?.wholeNumberValue }),
            interval: .seconds(Int64(check.interval)), timeout: .seconds(Int64(check.timeout)),
            healthyThreshold: check.healthyThreshold, unhealthyThreshold: check.unhealthyThreshold)
    }

    /// Every server group of the desired state that has checks on, for ``DataPlane/applyHealthChecks(_:)``.
    func checkedGroups() -> [DataPlane.CheckedGroup] {
        resources.values.compactMap { resource in
            guard case .serverGroup(let group) = resource.spec, let check = Self.healthCheck(group.healthCheck) else {
                return nil
            }
            return DataPlane.CheckedGroup(name: resource.id.name, servers: Self.backendServers(group), check: check)
        }
    }

    static func backendServers(_ group: ServerGroupSpec) -> [ALBDataPlane.BackendServer] {
        group.servers.map {
            ALBDataPlane.BackendServer(host: $0.address, port: $0.port, weight: $0.weight,
                                       useTLS: group.protocol == .https, useHTTP2: group.protocol == .grpc)
        }
    }

    static func scheduling(_ scheduler: Scheduler) -> Scheduling {
        switch scheduler {
        case .wrr: .weightedRoundRobin
        case .wlc: .weightedLeastRequests
        case .sch: .sourceIPHash
        }
    }

    /// The TLS policy a listener names: a predefined id or a SecurityPolicy resource.
    public func tlsPolicy(_ listener: ListenerSpec) -> TLSPolicy? {
        let policy: SecurityPolicySpec?
        if let predefined = SecurityPolicySpec.predefined[listener.securityPolicy] {
            policy = predefined
        } else if case .securityPolicy(let custom)? = resource(.securityPolicy, listener.securityPolicy)?.spec {
            policy = custom
        } else {
            policy = nil
        }
        return policy.map { spec in
            TLSPolicy(versions: spec.tlsVersions.compactMap { TLSProtocolVersion(rawValue: $0.rawValue) },
                      ciphers: spec.ciphers)
        }
    }

    /// The TLS side of an HTTPS listener: its certificates (checked), policy and ALPN protocols.
    func serverTLS(_ listener: ListenerSpec) -> Result<ServerTLS, ConfigurationError> {
        var clientCA: CABundle?
        var caDigest = ""
        if listener.mutualAuthentication.enabled {
            let name = listener.mutualAuthentication.ca ?? ""
            switch certificates.byName[name] {
            case .ca(let bundle, let digest)?:
                clientCA = bundle
                caDigest = digest
            case .problem(let problem)?:
                return .failure(ConfigurationError(reason: .certificateInvalid, message: "CA certificate \"\(name)\": \(problem.message)"))
            case .server?:
                return .failure(ConfigurationError(reason: .certificateInvalid,
                                                   message: "certificate \"\(name)\" is a server certificate, not a CA certificate"))
            case nil:
                return .failure(ConfigurationError(reason: .missingReference, message: "CA certificate \"\(name)\" is not available"))
            }
        }
        guard let serverName = listener.certificates.server else {
            return .failure(ConfigurationError(reason: .missingReference, message: "no server certificate"))
        }
        var digests: [String] = []
        func certificate(_ name: String) -> Result<ServerCertificate, ConfigurationError> {
            switch certificates.byName[name] {
            case .server(let certificate, let digest)?:
                digests.append(digest)
                return .success(certificate)
            case .problem(let problem)?:
                return .failure(ConfigurationError(reason: .certificateInvalid,
                                                   message: "certificate \"\(name)\": \(problem.message)"))
            case .ca?:
                return .failure(ConfigurationError(reason: .certificateInvalid,
                                                   message: "certificate \"\(name)\" is a CA certificate, not a server certificate"))
            case nil:
                return .failure(ConfigurationError(reason: .missingReference,
                                                   message: "certificate \"\(name)\" is not available"))
            }
        }
        let main: ServerCertificate
        switch certificate(serverName) {
        case .success(let loaded): main = loaded
        case .failure(let error): return .failure(error)
        }
        var additional: [ServerCertificate] = []
        for name in listener.certificates.additional {
            switch certificate(name) {
            case .success(let loaded): additional.append(loaded)
            case .failure(let error): return .failure(error)
            }
        }
        guard let policy = tlsPolicy(listener) else {
            return .failure(ConfigurationError(reason: .missingReference,
                                               message: "security policy \"\(listener.securityPolicy)\" is not available"))
        }
        let protocols = listener.http2 ? ["h2", "http/1.1"] : ["http/1.1"]
        let identity = Reconciler.digest(([serverName] + listener.certificates.additional + digests
                                          + ["\(policy.minimum.rawValue)-\(policy.maximum.rawValue)"] + policy.ciphers
                                          + protocols + [caDigest]).joined(separator: "\n"))
        do {
            return .success(try ServerTLS(defaultCertificate: main, additional: additional, policy: policy,
                                          applicationProtocols: protocols, clientCA: clientCA, identity: identity))
        } catch {
            return .failure(ConfigurationError(reason: .certificateInvalid, message: String(describing: error)))
        }
    }
}

public struct ConfigurationError: Error, Sendable, Equatable {
    public var reason: ListenerLifecycle.FailureReason
    public var message: String
}
