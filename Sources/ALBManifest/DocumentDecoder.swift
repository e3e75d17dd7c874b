import Yams

/// The outcome of reading one manifest document.
struct DecodedDocument: Sendable {
    var id: ResourceID?
    /// Nil when the document has any problem.
    var resource: Resource?
    var source: SourceLocation
    var diagnostics: [Diagnostic]
    var locations: [String: SourceLocation]
}

/// Turns one document's root node into a `Resource`, applying defaults and every per-resource rule.
/// Cross-resource rules live in `CrossResourceValidator`.
struct DocumentDecoder {
    var reader: NodeReader
    let manifestPath: String

    init(file: String) {
        reader = NodeReader(file: file)
        manifestPath = file
    }

    static let apiVersion = "alb/v1"

    /// Nil for an empty document.
    static func decode(_ root: Node, file: String) -> DecodedDocument? {
        if NodeReader.isNull(root) { return nil }
        var decoder = DocumentDecoder(file: file)
        return decoder.decodeDocument(root)
    }

    mutating func decodeDocument(_ root: Node) -> DecodedDocument {
        let source = reader.location(root)
        guard case .mapping = root else {
            reader.error("document must be a mapping, got \(NodeReader.describe(root))", at: root, reason: .parseError)
            return finish(id: nil, spec: nil, tags: [:], source: source)
        }
        guard let top = reader.mapping(root, path: "", fields: ManifestFields.document) else {
            return finish(id: nil, spec: nil, tags: [:], source: source)
        }
        if let versionNode = top.values["apiVersion"] {
            if let version = reader.string(versionNode, path: "apiVersion"), version != Self.apiVersion {
                reader.error("apiVersion: expected \"\(Self.apiVersion)\", got \"\(version)\"", at: versionNode)
            }
        } else {
            reader.missing(top, "apiVersion")
        }
        var kind: ResourceKind?
        if top.values["kind"] != nil {
            kind = reader.enumeration(top, "kind", as: ResourceKind.self)
        } else {
            reader.missing(top, "kind")
        }
        var name: String?
        var tags: [String: String] = [:]
        if top.values["metadata"] == nil {
            reader.missing(top, "metadata")
        } else if let metadata = reader.object(top, "metadata") {
            name = decodeName(metadata)
            tags = decodeTags(metadata)
        }
        let id = kind.flatMap { kind in name.map { ResourceID(kind: kind, name: $0) } }
        var spec: ResourceSpec?
        if top.values["spec"] == nil {
            reader.missing(top, "spec")
        } else if let kind, let specNode = top.values["spec"] {
            spec = decodeSpec(kind, specNode)
        }
        return finish(id: id, spec: spec, tags: tags, source: source)
    }

    private func finish(id: ResourceID?, spec: ResourceSpec?, tags: [String: String],
                        source: SourceLocation) -> DecodedDocument {
        var diagnostics = reader.diagnostics
        for index in diagnostics.indices { diagnostics[index].resource = id }
        var resource: Resource?
        if diagnostics.isEmpty, let id, let spec {
            resource = Resource(id: id, tags: tags, spec: spec, source: source)
        }
        return DecodedDocument(id: id, resource: resource, source: source, diagnostics: diagnostics,
                               locations: reader.locations)
    }

    // MARK: Metadata

    static func isValidName(_ name: String) -> Bool {
        guard (1...63).contains(name.count), let first = name.first, let last = name.last else { return false }
        let allowed = name.allSatisfy { ($0.isASCII && ($0.isLowercase || $0.isNumber)) || $0 == "-" }
        return allowed && first != "-" && last != "-"
    }

    private mutating func decodeName(_ metadata: MappingView) -> String? {
        guard let node = metadata.values["name"] else {
            reader.missing(metadata, "name")
            return nil
        }
        guard let name = reader.string(node, path: "metadata.name") else { return nil }
        if !Self.isValidName(name) {
            reader.error("metadata.name: \"\(name)\" must be 1-63 characters of a-z, 0-9 and \"-\", "
                         + "starting and ending with a letter or digit", at: node)
        }
        return name
    }

    static let maxTags = 20

    private mutating func decodeTags(_ metadata: MappingView) -> [String: String] {
        guard let node = metadata.values["tags"] else { return [:] }
        guard case .mapping(let mapping) = node else {
            reader.error("metadata.tags: expected a mapping, got \(NodeReader.describe(node))", at: node)
            return [:]
        }
        var tags: [String: String] = [:]
        for (key, value) in mapping {
            guard case .scalar(let keyScalar) = key, !NodeReader.isNull(key) else {
                reader.error("metadata.tags: tag keys must be non-empty strings, got \(NodeReader.describe(key))",
                             at: key)
                continue
            }
            let path = "metadata.tags.\(keyScalar.string)"
            if let text = reader.string(value, path: path) { tags[keyScalar.string] = text }
        }
        if mapping.count > Self.maxTags {
            reader.error("metadata.tags: \(mapping.count) tags exceed the limit of \(Self.maxTags)", at: node)
        }
        return tags
    }

    // MARK: Specs

    /// The `spec` mapping checked against its kind's field table.
    private mutating func specMapping(_ node: Node, _ kind: ResourceKind) -> MappingView? {
        reader.mapping(node, path: "spec", fields: ManifestFields.spec(for: kind).fields)
    }

    private mutating func decodeSpec(_ kind: ResourceKind, _ node: Node) -> ResourceSpec? {
        switch kind {
        case .loadBalancer: decodeLoadBalancer(node).map(ResourceSpec.loadBalancer)
        case .listener: decodeListener(node).map(ResourceSpec.listener)
        case .serverGroup: decodeServerGroup(node).map(ResourceSpec.serverGroup)
        case .certificate: decodeCertificate(node).map(ResourceSpec.certificate)
        case .securityPolicy: decodeSecurityPolicy(node).map(ResourceSpec.securityPolicy)
        }
    }

    /// The hard upper bound for listener timeouts (an upgraded instance); the instance's own quota is
    /// checked across resources.
    static let maxTimeoutCeiling = LoadBalancerQuotas.maxTimeoutUpgraded

    private mutating func decodeLoadBalancer(_ node: Node) -> LoadBalancerSpec? {
        guard let spec = specMapping(node, .loadBalancer) else { return nil }
        var result = LoadBalancerSpec()
        if let edition = reader.enumeration(spec, "edition", as: Edition.self) { result.edition = edition }
        if let upgraded = reader.bool(spec, "upgraded") { result.upgraded = upgraded }
        if let address = reader.string(spec, "address"), let addressNode = spec.values["address"] {
            if AddressSyntax.isIP(address) {
                result.address = address
            } else {
                reader.error("spec.address: \"\(address)\" is not an IP address", at: addressNode)
            }
        }
        if let quotas = reader.object(spec, "quotas") {
            // The ranges that follow the edition and `upgraded` (ManifestFields.loadBalancerRules).
            let maxListeners = result.edition == .basic ? LoadBalancerQuotas.maxListenersBasic
                : LoadBalancerQuotas.maxListeners
            let maxTimeout = result.upgraded ? LoadBalancerQuotas.maxTimeoutUpgraded : LoadBalancerQuotas.maxTimeout
            if let value = reader.int(quotas, "listeners", range: 1...maxListeners) { result.quotas.listeners = value }
            if let value = reader.int(quotas, "maxIdleTimeout", range: 1...maxTimeout) {
                result.quotas.maxIdleTimeout = value
            }
            if let value = reader.int(quotas, "maxRequestTimeout", range: 1...maxTimeout) {
                result.quotas.maxRequestTimeout = value
            }
        }
        return result
    }

    static let maxDescription = 256
    static let maxAdditionalCertificates = 25

    private mutating func decodeDescription(_ parent: MappingView, _ key: String) -> String? {
        guard let text = reader.string(parent, key), let node = parent.values[key] else { return nil }
        if text.count > Self.maxDescription {
            reader.error("\(parent.childPath(key)): \(text.count) characters exceed the limit of \(Self.maxDescription)",
                         at: node)
            return nil
        }
        return text
    }

    private mutating func decodeListener(_ node: Node) -> ListenerSpec? {
        guard let spec = specMapping(node, .listener) else { return nil }
        reader.requireFields(spec)
        let loadBalancer = reader.string(spec, "loadBalancer")
        let proto = reader.enumeration(spec, "protocol", as: ListenerProtocol.self)
        let port = reader.int(spec, "port")
        let action = decodeDefaultAction(spec)
        var result = ListenerSpec(loadBalancer: loadBalancer ?? "", protocol: proto ?? .http, port: port ?? 1,
                                  defaultAction: action ?? DefaultAction(forwardGroup: ForwardGroup(serverGroups: [])))
        if let value = decodeDescription(spec, "description") { result.description = value }
        if let value = reader.enumeration(spec, "state", as: ListenerDesiredState.self) { result.state = value }
        let http2 = reader.bool(spec, "http2")
        if let http2 { result.http2 = http2 }
        if let value = reader.int(spec, "idleTimeout") { result.idleTimeout = value }
        if let value = reader.int(spec, "requestTimeout") { result.requestTimeout = value }
        if let value = reader.bool(spec, "compression") { result.compression = value }
        if let value = reader.string(spec, "securityPolicy") { result.securityPolicy = value }

        if let clientIp = reader.object(spec, "clientIp") {
            if let value = reader.bool(clientIp, "enabled") { result.clientIp.enabled = value }
            if let items = reader.list(clientIp, "trustedProxies") {
                for item in items {
                    guard let text = reader.string(item.node, path: item.path) else { continue }
                    if AddressSyntax.isIPOrCIDR(text) {
                        result.clientIp.trustedProxies.append(text)
                    } else {
                        reader.error("\(item.path): \"\(text)\" is not an IP address or CIDR", at: item.node)
                    }
                }
            }
        }
        if let headers = reader.object(spec, "headers") {
            for field in HeaderSwitches.fields {
                if let value = reader.bool(headers, field.name) { result.headers[keyPath: field.keyPath] = value }
            }
        }
        var quicUpgradeView: MappingView?
        if let quic = reader.object(spec, "quicUpgrade") {
            quicUpgradeView = quic
            if let value = reader.bool(quic, "enabled") { result.quicUpgrade.enabled = value }
            result.quicUpgrade.listener = reader.string(quic, "listener")
        }
        var certificatesView: MappingView?
        if let certificates = reader.object(spec, "certificates") {
            certificatesView = certificates
            result.certificates.server = reader.string(certificates, "server")
            if let names = reader.stringList(certificates, "additional"), let listNode = certificates.values["additional"] {
                if names.count > Self.maxAdditionalCertificates {
                    reader.error("spec.certificates.additional: \(names.count) certificates exceed the limit of "
                                 + "\(Self.maxAdditionalCertificates)", at: listNode)
                }
                result.certificates.additional = names
            }
        }
        var mutualView: MappingView?
        if let mutual = reader.object(spec, "mutualAuthentication") {
            mutualView = mutual
            if let value = reader.bool(mutual, "enabled") { result.mutualAuthentication.enabled = value }
            result.mutualAuthentication.ca = reader.string(mutual, "ca")
        }

        // Rules that depend on the protocol.
        if let proto {
            if proto != .https {
                if http2 == true, let node = spec.values["http2"] {
                    reader.error("spec.http2: only for HTTPS listeners", at: node)
                }
                if let node = spec.values["securityPolicy"] {
                    reader.error("spec.securityPolicy: only for HTTPS listeners", at: node)
                }
                if result.mutualAuthentication.enabled, let node = mutualView?.values["enabled"] {
                    reader.error("spec.mutualAuthentication.enabled: only for HTTPS listeners", at: node)
                }
                if result.quicUpgrade.enabled, let node = quicUpgradeView?.values["enabled"] {
                    reader.error("spec.quicUpgrade.enabled: only for HTTPS listeners", at: node)
                }
            }
            if proto == .quic, result.clientIp.enabled, let node = spec.values["clientIp"] {
                let enabledNode = node.mapping?["enabled"] ?? node
                reader.error("spec.clientIp.enabled: not supported on QUIC listeners", at: enabledNode)
            }
            if proto != .http, result.certificates.server == nil {
                if let certificatesView { reader.missing(certificatesView, "server") } else {
                    reader.error("missing required field \"spec.certificates.server\"", at: spec.node)
                }
            }
            if proto == .https {
                if result.mutualAuthentication.enabled, result.mutualAuthentication.ca == nil, let mutualView {
                    reader.missing(mutualView, "ca")
                }
                if result.quicUpgrade.enabled, result.quicUpgrade.listener == nil, let quicUpgradeView {
                    reader.missing(quicUpgradeView, "listener")
                }
            }
        }
        return result
    }

    private mutating func decodeDefaultAction(_ spec: MappingView) -> DefaultAction? {
        guard let action = reader.object(spec, "defaultAction") else { return nil }
        guard action.values["forwardGroup"] != nil else {
            reader.missing(action, "forwardGroup")
            return nil
        }
        guard let forward = reader.object(action, "forwardGroup") else { return nil }
        guard forward.values["serverGroups"] != nil else {
            reader.missing(forward, "serverGroups")
            return nil
        }
        guard let items = reader.list(forward, "serverGroups") else { return nil }
        if items.isEmpty, let listNode = forward.values["serverGroups"] {
            reader.error("\(forward.childPath("serverGroups")): must not be empty", at: listNode)
            return nil
        }
        var groups: [WeightedServerGroup] = []
        var seen: Set<String> = []
        for item in items {
            guard let entry = reader.mapping(item.node, path: item.path, fields: forward.fields(of: "serverGroups"))
            else { continue }
            guard let nameNode = entry.values["name"] else {
                reader.missing(entry, "name")
                continue
            }
            guard let name = reader.string(nameNode, path: entry.childPath("name")) else { continue }
            if !seen.insert(name).inserted {
                reader.error("\(entry.childPath("name")): server group \"\(name)\" is listed twice", at: nameNode)
            }
            var group = WeightedServerGroup(name: name)
            if let weight = reader.int(entry, "weight") { group.weight = weight }
            groups.append(group)
        }
        return DefaultAction(forwardGroup: ForwardGroup(serverGroups: groups))
    }

    static let healthCheckCodes = ["http_2xx", "http_3xx", "http_4xx", "http_5xx"]

    private mutating func decodeServerGroup(_ node: Node) -> ServerGroupSpec? {
        guard let spec = specMapping(node, .serverGroup) else { return nil }
        var result = ServerGroupSpec()
        if let value = reader.enumeration(spec, "protocol", as: BackendProtocol.self) { result.protocol = value }
        if let value = reader.enumeration(spec, "scheduler", as: Scheduler.self) { result.scheduler = value }
        for item in reader.list(spec, "servers") ?? [] {
            guard let entry = reader.mapping(item.node, path: item.path, fields: spec.fields(of: "servers"))
            else { continue }
            reader.requireFields(entry)
            var server = BackendServer(address: "", port: 1)
            if let address = reader.string(entry, "address"), let addressNode = entry.values["address"] {
                if AddressSyntax.isIP(address) || AddressSyntax.isHostname(address) {
                    server.address = address
                } else {
                    reader.error("\(entry.childPath("address")): \"\(address)\" is not an IP address or host name",
                                 at: addressNode)
                }
            }
            if let port = reader.int(entry, "port") { server.port = port }
            if let weight = reader.int(entry, "weight") { server.weight = weight }
            if let text = decodeDescription(entry, "description") { server.description = text }
            result.servers.append(server)
        }
        if let check = reader.object(spec, "healthCheck") {
            var health = HealthCheck()
            if let value = reader.bool(check, "enabled") { health.enabled = value }
            if let value = reader.string(check, "path"), let pathNode = check.values["path"] {
                if value.hasPrefix("/") { health.path = value } else {
                    reader.error("spec.healthCheck.path: \"\(value)\" must start with \"/\"", at: pathNode)
                }
            }
            if let value = reader.enumeration(check, "method", as: HealthCheckMethod.self) { health.method = value }
            if let items = reader.list(check, "codes"), let listNode = check.values["codes"] {
                if items.isEmpty { reader.error("spec.healthCheck.codes: must not be empty", at: listNode) }
                var codes: [String] = []
                for item in items {
                    guard let code = reader.string(item.node, path: item.path) else { continue }
                    if Self.healthCheckCodes.contains(code) { codes.append(code) } else {
                        reader.error("\(item.path): \"\(code)\" is not one of "
                                     + Self.healthCheckCodes.joined(separator: ", "), at: item.node)
                    }
                }
                health.codes = codes
            }
            if let value = reader.int(check, "interval") { health.interval = value }
            if let value = reader.int(check, "timeout") { health.timeout = value }
            if let value = reader.int(check, "healthyThreshold") { health.healthyThreshold = value }
            if let value = reader.int(check, "unhealthyThreshold") { health.unhealthyThreshold = value }
            result.healthCheck = health
        }
        if let sticky = reader.object(spec, "stickySession") {
            if let value = reader.bool(sticky, "enabled") { result.stickySession.enabled = value }
            if let value = reader.enumeration(sticky, "type", as: StickySessionType.self) {
                result.stickySession.type = value
            }
            if let value = reader.int(sticky, "cookieTimeout") {
                result.stickySession.cookieTimeout = value
            }
        }
        return result
    }

    private mutating func decodeCertificate(_ node: Node) -> CertificateSpec? {
        guard let spec = specMapping(node, .certificate) else { return nil }
        reader.requireFields(spec)
        let type = reader.enumeration(spec, "type", as: CertificateType.self)
        let certificate = decodePath(spec, "certificate")
        let privateKey = decodePath(spec, "privateKey")
        if type == .server, spec.values["privateKey"] == nil { reader.missing(spec, "privateKey") }
        if type == .ca, let keyNode = spec.values["privateKey"] {
            reader.error("spec.privateKey: only for Server certificates", at: keyNode)
        }
        guard let type, let certificate else { return nil }
        return CertificateSpec(type: type, certificate: certificate, privateKey: privateKey)
    }

    private mutating func decodePath(_ spec: MappingView, _ key: String) -> String? {
        guard let text = reader.string(spec, key), let node = spec.values[key] else { return nil }
        guard !text.isEmpty else {
            reader.error("\(spec.childPath(key)): must not be empty", at: node)
            return nil
        }
        guard !Self.looksLikePEMContent(text) else {
            // Pasting the PEM itself is a common slip. Taken for a path, a private key would be echoed by every
            // message and file that names the path (status, `alb plan`, errors): refused, and never repeated.
            reader.error("\(spec.childPath(key)): must be the path of a PEM file, not its content (the value is "
                         + "not shown: it may be a private key)", at: node)
            return nil
        }
        return ManifestPath.resolve(text, relativeTo: manifestPath)
    }

    /// PEM armour, a line break, or more than any usable path (PATH_MAX is 4096; a key's base64 alone is longer
    /// than 1,000 bytes).
    static func looksLikePEMContent(_ text: String) -> Bool {
        text.utf8.count > 1024 || text.contains("-----") || text.contains(where: \.isNewline)
    }

    private mutating func decodeSecurityPolicy(_ node: Node) -> SecurityPolicySpec? {
        guard let spec = specMapping(node, .securityPolicy) else { return nil }
        reader.requireFields(spec)
        var versions: [TLSVersion] = []
        if let items = reader.list(spec, "tlsVersions"), let listNode = spec.values["tlsVersions"] {
            if items.isEmpty { reader.error("spec.tlsVersions: must not be empty", at: listNode) }
            for item in items {
                if let version = reader.enumeration(item.node, path: item.path, as: TLSVersion.self) {
                    versions.append(version)
                }
            }
        }
        var ciphers: [String] = []
        if let items = reader.list(spec, "ciphers"), let listNode = spec.values["ciphers"] {
            if items.isEmpty { reader.error("spec.ciphers: must not be empty", at: listNode) }
            for item in items {
                guard let cipher = reader.string(item.node, path: item.path) else { continue }
                if SecurityPolicySpec.knownCiphers.contains(cipher) { ciphers.append(cipher) } else {
                    reader.error("\(item.path): unknown cipher \"\(cipher)\"", at: item.node)
                }
            }
        }
        return SecurityPolicySpec(tlsVersions: versions, ciphers: ciphers)
    }
}

/// Pure string handling of manifest-relative paths (no file system access).
public enum ManifestPath {
    /// `path` relative to the directory of `manifest`; absolute paths are returned unchanged.
    /// `.` and `..` segments are folded where possible.
    public static func resolve(_ path: String, relativeTo manifest: String) -> String {
        if path.hasPrefix("/") { return path }
        var directory = manifest.split(separator: "/", omittingEmptySubsequences: false).dropLast()
        let absolute = manifest.hasPrefix("/")
        if absolute { directory = directory.dropFirst() }
        var parts: [Substring] = []
        for segment in Array(directory) + path.split(separator: "/", omittingEmptySubsequences: false) {
            switch segment {
            case "", ".": continue
            case "..":
                if let last = parts.last, last != ".." { parts.removeLast() } else if !absolute { parts.append("..") }
            default: parts.append(segment)
            }
        }
        let joined = parts.joined(separator: "/")
        return absolute ? "/" + joined : (joined.isEmpty ? "." : joined)
    }
}
