/// Applies the rules that span resources: unique names, references, editions, quotas, port sharing and
/// backend protocols. Each problem is reported against the listener that breaks it, at the field.
///
/// Deterministic by construction: listeners are checked in name order and the only dependency between
/// listeners (`quicUpgrade.listener`) is checked last, against the outcome of every other rule.
struct CrossResourceValidator {
    private let documents: [DecodedDocument]
    private(set) var valid: [ResourceID: Resource] = [:]
    private(set) var invalid: [ResourceID: [Diagnostic]] = [:]
    private(set) var sources: [ResourceID: SourceLocation] = [:]
    /// Every id read (valid or not), to tell "does not exist" from "is invalid" and "wrong kind".
    private var known: Set<ResourceID> = []
    private(set) var locations: [ResourceID: [String: SourceLocation]] = [:]

    init(documents: [DecodedDocument]) {
        self.documents = documents
    }

    mutating func run() {
        collect()
        let listeners = valid.values.filter { $0.id.kind == .listener }.sorted { $0.id < $1.id }
        var passed: [Resource] = []
        for listener in listeners {
            if checkReferences(of: listener) { passed.append(listener) }
        }
        checkPortsAndQuotas(passed)
        for listener in passed where valid[listener.id] != nil {
            checkQUICUpgrade(of: listener)
        }
        sortDiagnostics()
    }

    // MARK: Names

    private mutating func collect() {
        let byID = Dictionary(grouping: documents.compactMap { doc in doc.id.map { ($0, doc) } }, by: \.0)
        for (id, entries) in byID {
            let copies = entries.map(\.1)
            known.insert(id)
            sources[id] = copies[0].source
            locations[id] = copies[0].locations
            var diagnostics = copies.flatMap(\.diagnostics)
            if copies.count > 1 {
                for (index, copy) in copies.enumerated() {
                    let other = copies[index == 0 ? 1 : 0].source
                    let at = copy.locations["metadata.name"] ?? copy.source
                    diagnostics.append(Diagnostic(
                        location: at,
                        message: "metadata.name: duplicate \(id.kind.rawValue) name \"\(id.name)\" (also defined at \(other))",
                        reason: .duplicateName, resource: id))
                }
            } else if let resource = copies[0].resource {
                valid[id] = resource
                continue
            }
            invalid[id] = diagnostics
        }
    }

    /// Diagnostics per resource in position order.
    mutating func sortDiagnostics() {
        for id in invalid.keys {
            invalid[id]?.sort { $0.location != $1.location ? $0.location < $1.location : $0.message < $1.message }
        }
    }

    private mutating func reject(_ id: ResourceID, _ path: String, _ message: String, _ reason: DiagnosticReason) {
        let at = locations[id]?[path] ?? sources[id] ?? SourceLocation(file: "", line: 1, column: 1)
        let diagnostic = Diagnostic(location: at, message: "\(path): \(message)", reason: reason, resource: id)
        invalid[id, default: []].append(diagnostic)
        valid[id] = nil
    }

    /// Looks up a reference, reporting a missing, wrong-kind or invalid target against `from`.
    private mutating func resolve(_ kind: ResourceKind, _ name: String, path: String, from: ResourceID) -> Resource? {
        let target = ResourceID(kind: kind, name: name)
        if let resource = valid[target] { return resource }
        if known.contains(target) {
            reject(from, path, "\(kind.rawValue) \"\(name)\" is invalid", .missingReference)
        } else if let other = ResourceKind.allCases.first(where: { known.contains(ResourceID(kind: $0, name: name)) }) {
            reject(from, path, "\"\(name)\" is a \(other.rawValue), not a \(kind.rawValue)", .missingReference)
        } else {
            reject(from, path, "\(kind.rawValue) \"\(name)\" does not exist", .missingReference)
        }
        return nil
    }

    // MARK: Listener rules

    /// Every rule that does not involve another listener; true when the listener passed them all.
    private mutating func checkReferences(of resource: Resource) -> Bool {
        guard case .listener(let spec) = resource.spec else { return true }
        let id = resource.id
        var loadBalancer: LoadBalancerSpec?
        if let lb = resolve(.loadBalancer, spec.loadBalancer, path: "spec.loadBalancer", from: id),
           case .loadBalancer(let lbSpec) = lb.spec {
            loadBalancer = lbSpec
        }
        if let lb = loadBalancer {
            let owner = "LoadBalancer \"\(spec.loadBalancer)\""
            if spec.idleTimeout > lb.quotas.maxIdleTimeout {
                reject(id, "spec.idleTimeout",
                       "\(spec.idleTimeout) is out of range 1-\(lb.quotas.maxIdleTimeout) (quotas.maxIdleTimeout of \(owner))",
                       .invalidSpec)
            }
            if spec.requestTimeout > lb.quotas.maxRequestTimeout {
                reject(id, "spec.requestTimeout",
                       "\(spec.requestTimeout) is out of range 1-\(lb.quotas.maxRequestTimeout) "
                       + "(quotas.maxRequestTimeout of \(owner))", .invalidSpec)
            }
            if lb.edition == .basic {
                if spec.clientIp.enabled {
                    reject(id, "spec.clientIp.enabled", "not supported on Basic edition (\(owner))", .editionNotSupported)
                }
                if spec.mutualAuthentication.enabled {
                    reject(id, "spec.mutualAuthentication.enabled", "not supported on Basic edition (\(owner))",
                           .editionNotSupported)
                }
            }
        }
        for (index, entry) in spec.defaultAction.forwardGroup.serverGroups.enumerated() {
            let path = "spec.defaultAction.forwardGroup.serverGroups[\(index)].name"
            guard let group = resolve(.serverGroup, entry.name, path: path, from: id),
                  case .serverGroup(let groupSpec) = group.spec else { continue }
            checkBackend(id, spec, groupSpec.protocol, entry.name, path: path)
        }
        if let name = spec.certificates.server {
            checkCertificate(id, name, path: "spec.certificates.server", expected: .server)
        }
        for (index, name) in spec.certificates.additional.enumerated() {
            checkCertificate(id, name, path: "spec.certificates.additional[\(index)]", expected: .server)
        }
        if let name = spec.mutualAuthentication.ca {
            checkCertificate(id, name, path: "spec.mutualAuthentication.ca", expected: .ca)
        }
        if SecurityPolicySpec.predefined[spec.securityPolicy] == nil,
           resolve(.securityPolicy, spec.securityPolicy, path: "spec.securityPolicy", from: id) != nil,
           loadBalancer?.edition == .basic {
            reject(id, "spec.securityPolicy",
                   "custom security policies are not supported on Basic edition (LoadBalancer \"\(spec.loadBalancer)\")",
                   .editionNotSupported)
        }
        return valid[id] != nil
    }

    private mutating func checkBackend(_ id: ResourceID, _ spec: ListenerSpec, _ backend: BackendProtocol,
                                       _ name: String, path: String) {
        let allowed: [BackendProtocol] = switch spec.protocol {
        case .http: [.http, .https]
        case .https: [.http, .https, .grpc]
        case .quic: [.http]
        }
        if !allowed.contains(backend) {
            reject(id, path, "\(spec.protocol.rawValue) listeners cannot forward to \(backend.rawValue) server group "
                   + "\"\(name)\"", .backendProtocolMismatch)
        } else if backend == .grpc, !spec.http2 {
            reject(id, path, "gRPC server group \"\(name)\" requires http2: true", .backendProtocolMismatch)
        }
    }

    private mutating func checkCertificate(_ id: ResourceID, _ name: String, path: String, expected: CertificateType) {
        guard let cert = resolve(.certificate, name, path: path, from: id),
              case .certificate(let spec) = cert.spec, spec.type != expected else { return }
        reject(id, path, "Certificate \"\(name)\" has type \(spec.type.rawValue), expected \(expected.rawValue)",
               .invalidSpec)
    }

    /// Port sharing and the listener quota, per LoadBalancer, among listeners that passed every other rule.
    private mutating func checkPortsAndQuotas(_ listeners: [Resource]) {
        let byInstance = Dictionary(grouping: listeners) { resource -> String in
            if case .listener(let spec) = resource.spec { return spec.loadBalancer }
            return ""
        }
        var rejections: [(ResourceID, String, String, DiagnosticReason)] = []
        for (instance, members) in byInstance {
            let specs: [(id: ResourceID, spec: ListenerSpec)] = members.compactMap { resource in
                if case .listener(let spec) = resource.spec { return (resource.id, spec) }
                return nil
            }.sorted { $0.id < $1.id }
            // Grouped by port first: an instance of 100 listeners compares a handful, not 10,000 pairs.
            let byPort = Dictionary(grouping: specs) { $0.spec.port }
            for mine in specs {
                for other in byPort[mine.spec.port] ?? [] where other.id != mine.id
                    && Self.conflict(mine.spec.protocol, other.spec.protocol) {
                    rejections.append((mine.id, "spec.port",
                                       "port \(mine.spec.port) conflicts with Listener \"\(other.id.name)\" "
                                       + "(\(other.spec.protocol.rawValue)) on LoadBalancer \"\(instance)\"",
                                       .portConflict))
                }
            }
            guard case .loadBalancer(let lb)? = valid[ResourceID(kind: .loadBalancer, name: instance)]?.spec else {
                continue
            }
            for listener in specs.dropFirst(lb.quotas.listeners) {
                rejections.append((listener.id, "spec.loadBalancer",
                                   "LoadBalancer \"\(instance)\" has more listeners than its quota of "
                                   + "\(lb.quotas.listeners) (quotas.listeners)", .quotaExceeded))
            }
        }
        rejections += Self.sharedAddressConflicts(byInstance) { instance in
            guard case .loadBalancer(let lb)? = self.valid[ResourceID(kind: .loadBalancer, name: instance)]?.spec else {
                return nil
            }
            return lb.address
        }
        for rejection in rejections { reject(rejection.0, rejection.1, rejection.2, rejection.3) }
    }

    /// Listeners of different LoadBalancers with the same address share its ports too: the second bind would
    /// fail when the reconciler starts it (`BindFailed`), where `alb validate` said nothing. (Different
    /// addresses that overlap, `0.0.0.0` and `127.0.0.1`, are the data plane's to order, as before.)
    private static func sharedAddressConflicts(
        _ byInstance: [String: [Resource]], address: (String) -> String?
    ) -> [(ResourceID, String, String, DiagnosticReason)] {
        var placed: [String: [(id: ResourceID, spec: ListenerSpec)]] = [:]
        var addresses: [String: String] = [:]
        for (instance, members) in byInstance {
            guard let bound = address(instance) else { continue }
            addresses[instance] = bound
            for resource in members {
                guard case .listener(let spec) = resource.spec else { continue }
                placed["\(bound.lowercased()) \(spec.port)", default: []].append((resource.id, spec))
            }
        }
        var rejections: [(ResourceID, String, String, DiagnosticReason)] = []
        for sharing in placed.values where sharing.count > 1 {
            for mine in sharing.sorted(by: { $0.id < $1.id }) {
                for other in sharing where other.spec.loadBalancer != mine.spec.loadBalancer
                    && Self.conflict(mine.spec.protocol, other.spec.protocol) {
                    rejections.append((mine.id, "spec.port",
                                       "port \(mine.spec.port) conflicts with Listener \"\(other.id.name)\" "
                                       + "(\(other.spec.protocol.rawValue)) on LoadBalancer \"\(other.spec.loadBalancer)\", "
                                       + "which has the same address \(addresses[other.spec.loadBalancer] ?? "")",
                                       .portConflict))
                }
            }
        }
        return rejections
    }

    /// Same protocol never shares a port; HTTP and HTTPS (both TCP) do not either; QUIC is UDP.
    static func conflict(_ lhs: ListenerProtocol, _ rhs: ListenerProtocol) -> Bool {
        if lhs == rhs { return true }
        return Set([lhs, rhs]) == [.http, .https]
    }

    private mutating func checkQUICUpgrade(of resource: Resource) {
        guard case .listener(let spec) = resource.spec, let name = spec.quicUpgrade.listener else { return }
        let path = "spec.quicUpgrade.listener"
        guard let target = resolve(.listener, name, path: path, from: resource.id),
              case .listener(let targetSpec) = target.spec else { return }
        if targetSpec.protocol != .quic {
            reject(resource.id, path, "Listener \"\(name)\" is \(targetSpec.protocol.rawValue), not QUIC", .missingReference)
        } else if targetSpec.loadBalancer != spec.loadBalancer {
            reject(resource.id, path, "Listener \"\(name)\" is on LoadBalancer \"\(targetSpec.loadBalancer)\", "
                   + "not \"\(spec.loadBalancer)\"", .missingReference)
        }
    }
}
