extension Resource {
    /// The canonical flattened form: spec fields (paths without the `spec.` prefix) in declaration
    /// order, then `tags.KEY` in key order.
    public var canonical: CanonicalFields {
        var out = CanonicalBuilder()
        switch spec {
        case .loadBalancer(let lb):
            out.add("edition", lb.edition.rawValue)
            out.add("address", lb.address)
            out.add("quotas.listeners", lb.quotas.listeners)
            out.add("quotas.maxIdleTimeout", lb.quotas.maxIdleTimeout)
            out.add("quotas.maxRequestTimeout", lb.quotas.maxRequestTimeout)
            out.add("upgraded", lb.upgraded)
        case .listener(let listener):
            out.addListener(listener)
        case .serverGroup(let group):
            out.add("protocol", group.protocol.rawValue)
            out.add("scheduler", group.scheduler.rawValue)
            for (index, server) in group.servers.enumerated() {
                let prefix = "servers[\(index)]"
                out.add("\(prefix).address", server.address)
                out.add("\(prefix).port", server.port)
                out.add("\(prefix).weight", server.weight)
                out.add("\(prefix).description", server.description)
            }
            let check = group.healthCheck
            out.add("healthCheck.enabled", check.enabled)
            out.add("healthCheck.path", check.path)
            out.add("healthCheck.method", check.method.rawValue)
            out.addList("healthCheck.codes", check.codes)
            out.add("healthCheck.interval", check.interval)
            out.add("healthCheck.timeout", check.timeout)
            out.add("healthCheck.healthyThreshold", check.healthyThreshold)
            out.add("healthCheck.unhealthyThreshold", check.unhealthyThreshold)
            out.add("stickySession.enabled", group.stickySession.enabled)
            out.add("stickySession.type", group.stickySession.type.rawValue)
            out.add("stickySession.cookieTimeout", group.stickySession.cookieTimeout)
        case .certificate(let cert):
            out.add("type", cert.type.rawValue)
            out.add("certificate", cert.certificate)
            out.add("privateKey", cert.privateKey)
        case .securityPolicy(let policy):
            out.addList("tlsVersions", policy.tlsVersions.map(\.rawValue))
            out.addList("ciphers", policy.ciphers)
        }
        for key in tags.keys.sorted() {
            out.add("tags.\(key)", tags[key])
        }
        return CanonicalFields(entries: out.entries, scalarTypes: out.scalarTypes)
    }
}

private struct CanonicalBuilder {
    var entries: [(path: String, value: String)] = []
    var scalarTypes: [String: CanonicalFields.ScalarType] = [:]

    mutating func add(_ path: String, _ value: String?) {
        if let value { entries.append((path: path, value: value)) }
    }

    mutating func add(_ path: String, _ value: Int) {
        scalarTypes[path] = .integer
        add(path, String(value))
    }

    mutating func add(_ path: String, _ value: Bool) {
        scalarTypes[path] = .boolean
        add(path, value ? "true" : "false")
    }

    mutating func addList(_ path: String, _ values: [String]) {
        for (index, value) in values.enumerated() { add("\(path)[\(index)]", value) }
    }

    mutating func addListener(_ listener: ListenerSpec) {
        add("loadBalancer", listener.loadBalancer)
        add("protocol", listener.protocol.rawValue)
        add("port", listener.port)
        add("description", listener.description)
        add("state", listener.state.rawValue)
        add("http2", listener.http2)
        add("idleTimeout", listener.idleTimeout)
        add("requestTimeout", listener.requestTimeout)
        add("compression", listener.compression)
        add("clientIp.enabled", listener.clientIp.enabled)
        addList("clientIp.trustedProxies", listener.clientIp.trustedProxies)
        for field in HeaderSwitches.fields {
            add("headers.\(field.name)", listener.headers[keyPath: field.keyPath])
        }
        add("quicUpgrade.enabled", listener.quicUpgrade.enabled)
        add("quicUpgrade.listener", listener.quicUpgrade.listener)
        add("certificates.server", listener.certificates.server)
        addList("certificates.additional", listener.certificates.additional)
        add("securityPolicy", listener.securityPolicy)
        add("mutualAuthentication.enabled", listener.mutualAuthentication.enabled)
        add("mutualAuthentication.ca", listener.mutualAuthentication.ca)
        for (index, group) in listener.defaultAction.forwardGroup.serverGroups.enumerated() {
            let prefix = "defaultAction.forwardGroup.serverGroups[\(index)]"
            add("\(prefix).name", group.name)
            add("\(prefix).weight", group.weight)
        }
    }
}
