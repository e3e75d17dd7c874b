import ALBDataPlane
import ALBManifest
import NIOCore

/// The resources the reconciler should serve, after the last-good rules are applied, and the pure
/// functions that turn them into data-plane configurations and comparable canonical fields.
public struct DesiredState: Sendable {
    public var resources: [ResourceID: Resource]

    public init(resources: [ResourceID: Resource]) { self.resources = resources }

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
        guard spec.protocol == .http else {
            return .failure(ConfigurationError(
                reason: .protocolNotServed,
                message: "\(spec.protocol.rawValue) listeners are validated but not served by this release"))
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
                servers: group.servers.map { ALBDataPlane.BackendServer(host: $0.address, port: $0.port, weight: $0.weight) }))
        }
        var headers = HeaderOptions()
        headers.xForwardedFor = spec.headers.xForwardedFor
        headers.xForwardedProto = spec.headers.xForwardedProto
        headers.xForwardedPort = spec.headers.xForwardedPort
        headers.xForwardedHost = spec.headers.xForwardedHost
        headers.xForwardedClientSrcPort = spec.headers.xForwardedClientSrcPort
        headers.slbId = spec.headers.slbId
        let clientIP = spec.clientIp.enabled ? ClientIPOptions(trustedProxies: spec.clientIp.trustedProxies) : nil
        return .success(ListenerConfig(
            name: listener.id.name, loadBalancerName: spec.loadBalancer, bindHost: bindHost,
            port: spec.port, idleTimeout: .seconds(Int64(spec.idleTimeout)),
            requestTimeout: .seconds(Int64(spec.requestTimeout)), headers: headers, clientIP: clientIP,
            groups: groups))
    }
}

public struct ConfigurationError: Error, Sendable, Equatable {
    public var reason: ListenerLifecycle.FailureReason
    public var message: String
}
