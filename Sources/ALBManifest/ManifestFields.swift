/// The field tables of every manifest kind: the one place that says which keys a manifest may hold, their
/// types, ranges, enumerations, defaults and meaning. `DocumentDecoder` reads its allowed keys, required
/// keys and static ranges from here, and ``ManifestSchema`` renders these tables as JSON Schema, so the
/// schema editors use and the checks `alb validate` makes cannot drift apart.
///
/// Enumerations come from the model's enums (`ListenerProtocol.allCases`...) and defaults from the model's
/// own default values (`ListenerSpec`, `HealthCheck()`...), so a changed default changes both.
public enum ManifestFields {
    /// `metadata.name`: 1-63 characters of a-z, 0-9 and "-", starting and ending with a letter or digit.
    public static let namePattern = "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"

    /// Every document: `apiVersion`, `kind`, `metadata`, and `spec` (whose fields depend on `kind`).
    public static let document: [ManifestField] = [
        ManifestField("apiVersion", .choice([DocumentDecoder.apiVersion]), required: true,
                      "The manifest format version: always \(DocumentDecoder.apiVersion)."),
        ManifestField("kind", .choice(ResourceKind.allCases.map(\.rawValue)), required: true,
                      "What this document describes; it decides the fields of `spec`."),
        ManifestField("metadata", .mapping(metadata), required: true, "The resource's name and tags."),
        ManifestField("spec", .mapping([]), required: true,
                      "The desired configuration; its fields depend on `kind` (may be {})."),
    ]

    public static let metadata: [ManifestField] = [
        ManifestField("name", .text(TextRule(minLength: 1, maxLength: 63, pattern: namePattern)), required: true,
                      "Unique per kind: 1-63 characters of a-z, 0-9 and \"-\", starting and ending with a letter "
                          + "or digit."),
        ManifestField("tags", .textMap(maxEntries: DocumentDecoder.maxTags),
                      "Free-form string to string labels, at most \(DocumentDecoder.maxTags)."),
    ]

    /// The `spec` mapping of a kind, with its fields and the rules between them.
    public static func spec(for kind: ResourceKind) -> FieldShape {
        switch kind {
        case .loadBalancer: .mapping(loadBalancer, rules: loadBalancerRules)
        case .listener: .mapping(listener, rules: listenerRules)
        case .serverGroup: .mapping(serverGroup)
        case .certificate: .mapping(certificate, rules: certificateRules)
        case .securityPolicy: .mapping(securityPolicy)
        }
    }

    // MARK: LoadBalancer

    private static let loadBalancerDefaults = LoadBalancerSpec()

    public static let loadBalancer: [ManifestField] = [
        ManifestField("edition", .choice(Edition.allCases.map(\.rawValue)),
                      default: .text(loadBalancerDefaults.edition.rawValue),
                      "The instance edition; Basic allows fewer listeners and no client-IP retrieval, mutual TLS or "
                          + "custom TLS policies."),
        ManifestField("address", .text(TextRule(minLength: 1, meaning: "an IP address")),
                      default: .text(loadBalancerDefaults.address),
                      "The IP address every listener of this instance binds. Changing it replaces them all."),
        ManifestField("quotas", .mapping(quotas), "Per-instance limits."),
        ManifestField("upgraded", .boolean, default: .boolean(loadBalancerDefaults.upgraded),
                      "An upgraded instance allows listener timeout quotas up to "
                          + "\(LoadBalancerQuotas.maxTimeoutUpgraded) s instead of \(LoadBalancerQuotas.maxTimeout) s."),
    ]

    public static let quotas: [ManifestField] = [
        ManifestField("listeners", .integer(1...LoadBalancerQuotas.maxListeners),
                      default: .integer(loadBalancerDefaults.quotas.listeners),
                      "Listeners allowed on this instance: at most \(LoadBalancerQuotas.maxListenersBasic) on Basic, "
                          + "\(LoadBalancerQuotas.maxListeners) otherwise."),
        ManifestField("maxIdleTimeout", .integer(1...LoadBalancerQuotas.maxTimeoutUpgraded),
                      default: .integer(loadBalancerDefaults.quotas.maxIdleTimeout),
                      "Upper bound in seconds for its listeners' idleTimeout: at most "
                          + "\(LoadBalancerQuotas.maxTimeout), or \(LoadBalancerQuotas.maxTimeoutUpgraded) if upgraded."),
        ManifestField("maxRequestTimeout", .integer(1...LoadBalancerQuotas.maxTimeoutUpgraded),
                      default: .integer(loadBalancerDefaults.quotas.maxRequestTimeout),
                      "Upper bound in seconds for its listeners' requestTimeout: at most "
                          + "\(LoadBalancerQuotas.maxTimeout), or \(LoadBalancerQuotas.maxTimeoutUpgraded) if upgraded."),
    ]

    public static let loadBalancerRules: [FieldRule] = [
        FieldRule(when: "edition", in: [Edition.basic.rawValue],
                  .atMost(["quotas", "listeners"], LoadBalancerQuotas.maxListenersBasic)),
        FieldRule(when: "upgraded", in: ["false"], .atMost(["quotas", "maxIdleTimeout"], LoadBalancerQuotas.maxTimeout)),
        FieldRule(when: "upgraded", in: ["false"],
                  .atMost(["quotas", "maxRequestTimeout"], LoadBalancerQuotas.maxTimeout)),
    ]

    // MARK: Listener

    private static let listenerDefaults = ListenerSpec(loadBalancer: "", protocol: .http, port: 1,
                                                       defaultAction: DefaultAction(forwardGroup: ForwardGroup(serverGroups: [])))

    public static let listener: [ManifestField] = [
        ManifestField("loadBalancer", .text(.any), required: true,
                      "The LoadBalancer this listener belongs to. Changing it replaces the listener."),
        ManifestField("protocol", .choice(ListenerProtocol.allCases.map(\.rawValue)), required: true,
                      "The client-facing protocol. Changing it replaces the listener."),
        ManifestField("port", .integer(1...65535), required: true,
                      "The port it listens on. Changing it replaces the listener (the new port is bound first)."),
        ManifestField("description", .text(TextRule(maxLength: DocumentDecoder.maxDescription)),
                      default: .text(listenerDefaults.description),
                      "Free text, at most \(DocumentDecoder.maxDescription) characters (the console's listener name)."),
        ManifestField("state", .choice(ListenerDesiredState.allCases.map(\.rawValue)),
                      default: .text(listenerDefaults.state.rawValue), "The desired state: Running or Stopped."),
        ManifestField("http2", .boolean, default: .boolean(listenerDefaults.http2),
                      "Offer HTTP/2 by ALPN (HTTPS listeners only)."),
        ManifestField("idleTimeout", .integer(1...DocumentDecoder.maxTimeoutCeiling),
                      default: .integer(listenerDefaults.idleTimeout),
                      "Seconds an idle keep-alive connection stays open; at most the instance's quotas.maxIdleTimeout."),
        ManifestField("requestTimeout", .integer(1...DocumentDecoder.maxTimeoutCeiling),
                      default: .integer(listenerDefaults.requestTimeout),
                      "Seconds to wait for a backend's response (then 504); at most the instance's "
                          + "quotas.maxRequestTimeout."),
        ManifestField("compression", .boolean, default: .boolean(listenerDefaults.compression),
                      "Compress responses (validated, not acted on yet)."),
        ManifestField("clientIp", .mapping(clientIp),
                      "Client-IP retrieval from X-Forwarded-For (not on QUIC listeners or Basic instances)."),
        ManifestField("headers", .mapping(headers), "Which forwarding headers the listener adds to proxied requests."),
        ManifestField("quicUpgrade", .mapping(quicUpgrade, rules: quicUpgradeRules),
                      "Advertise a QUIC listener with Alt-Svc (HTTPS listeners only)."),
        ManifestField("certificates", .mapping(certificates),
                      "Certificate names; `server` is required for HTTPS and QUIC listeners."),
        ManifestField("securityPolicy", .text(.any), default: .text(listenerDefaults.securityPolicy),
                      "A predefined policy id (\(SecurityPolicySpec.predefined.keys.sorted().joined(separator: ", "))) "
                          + "or a SecurityPolicy name (HTTPS listeners only)."),
        ManifestField("mutualAuthentication", .mapping(mutualAuthentication, rules: mutualAuthenticationRules),
                      "Mutual TLS: verify client certificates against a CA Certificate (HTTPS listeners only)."),
        ManifestField("defaultAction", .mapping(defaultAction), required: true, "The default forwarding rule."),
    ]

    public static let clientIp: [ManifestField] = [
        ManifestField("enabled", .boolean, default: .boolean(listenerDefaults.clientIp.enabled),
                      "Take the client IP from X-Forwarded-For when the peer is a trusted proxy."),
        ManifestField("trustedProxies", .list(.text(TextRule(minLength: 1, meaning: "an IP address or CIDR"))),
                      "Trusted proxies as IPs or CIDRs; [\"0.0.0.0/0\"] takes the leftmost address."),
    ]

    public static let headers: [ManifestField] = HeaderSwitches.fields.map { field in
        ManifestField(field.name, .boolean, default: .boolean(HeaderSwitches()[keyPath: field.keyPath]),
                      field.summary)
    }

    public static let quicUpgrade: [ManifestField] = [
        ManifestField("enabled", .boolean, default: .boolean(listenerDefaults.quicUpgrade.enabled),
                      "Send Alt-Svc for the QUIC listener named by `listener`."),
        ManifestField("listener", .text(.any), "A QUIC listener on the same instance."),
    ]

    public static let quicUpgradeRules = [FieldRule(when: "enabled", in: ["true"], .requires(["listener"]))]

    public static let certificates: [ManifestField] = [
        ManifestField("server", .text(.any), "The default server Certificate (type Server)."),
        ManifestField("additional",
                      .list(.text(.any), count: 0...DocumentDecoder.maxAdditionalCertificates),
                      "More server Certificates, chosen by SNI; at most \(DocumentDecoder.maxAdditionalCertificates)."),
    ]

    public static let mutualAuthentication: [ManifestField] = [
        ManifestField("enabled", .boolean, default: .boolean(listenerDefaults.mutualAuthentication.enabled),
                      "Require client certificates signed by `ca`."),
        ManifestField("ca", .text(.any), "A Certificate of type CA."),
    ]

    public static let mutualAuthenticationRules = [FieldRule(when: "enabled", in: ["true"], .requires(["ca"]))]

    public static let defaultAction: [ManifestField] = [
        ManifestField("forwardGroup", .mapping(forwardGroup), required: true, "Forward to server groups by weight."),
    ]

    public static let forwardGroup: [ManifestField] = [
        ManifestField("serverGroups", .list(.mapping(weightedServerGroup), count: 1...Int.max), required: true,
                      "The server groups and their shares of requests; not empty."),
    ]

    public static let weightedServerGroup: [ManifestField] = [
        ManifestField("name", .text(.any), required: true, "A ServerGroup name, listed once."),
        ManifestField("weight", .integer(0...100), default: .integer(WeightedServerGroup(name: "").weight),
                      "Its share of requests, 0-100; 0 sends none."),
    ]

    /// Rules that depend on the listener's protocol.
    public static let listenerRules: [FieldRule] = {
        let notHTTPS = ListenerProtocol.allCases.filter { $0 != .https }.map(\.rawValue)
        return [
            FieldRule(when: "protocol", in: [ListenerProtocol.https.rawValue, ListenerProtocol.quic.rawValue],
                      .requires(["certificates", "server"])),
            FieldRule(when: "protocol", in: notHTTPS, .forbidsTrue(["http2"])),
            FieldRule(when: "protocol", in: notHTTPS, .forbids(["securityPolicy"])),
            FieldRule(when: "protocol", in: notHTTPS, .forbidsTrue(["mutualAuthentication", "enabled"])),
            FieldRule(when: "protocol", in: notHTTPS, .forbidsTrue(["quicUpgrade", "enabled"])),
            FieldRule(when: "protocol", in: [ListenerProtocol.quic.rawValue], .forbidsTrue(["clientIp", "enabled"])),
        ]
    }()

    // MARK: ServerGroup

    private static let serverGroupDefaults = ServerGroupSpec()

    public static let serverGroup: [ManifestField] = [
        ManifestField("protocol", .choice(BackendProtocol.allCases.map(\.rawValue)),
                      default: .text(serverGroupDefaults.protocol.rawValue), "The protocol spoken to the servers."),
        ManifestField("scheduler", .choice(Scheduler.allCases.map(\.rawValue)),
                      default: .text(serverGroupDefaults.scheduler.rawValue),
                      "Wrr: weighted round robin; Wlc: weighted least requests; Sch: consistent hash of the client IP."),
        ManifestField("servers", .list(.mapping(server)), "The backends."),
        ManifestField("healthCheck", .mapping(healthCheck), "Active health checks (off unless enabled)."),
        ManifestField("stickySession", .mapping(stickySession), "Sticky sessions by an inserted cookie (off unless enabled)."),
    ]

    private static let serverDefaults = BackendServer(address: "", port: 1)

    public static let server: [ManifestField] = [
        ManifestField("address", .text(TextRule(minLength: 1, meaning: "an IP address or host name")), required: true,
                      "An IP address or host name."),
        ManifestField("port", .integer(1...65535), required: true, "The server's port."),
        ManifestField("weight", .integer(0...100), default: .integer(serverDefaults.weight),
                      "0-100; 0 takes the server out of rotation."),
        ManifestField("description", .text(TextRule(maxLength: DocumentDecoder.maxDescription)),
                      default: .text(serverDefaults.description),
                      "Free text, at most \(DocumentDecoder.maxDescription) characters."),
    ]

    private static let healthDefaults = HealthCheck()

    public static let healthCheck: [ManifestField] = [
        ManifestField("enabled", .boolean, default: .boolean(healthDefaults.enabled), "Probe every server."),
        ManifestField("path", .text(TextRule(pattern: "^/")), default: .text(healthDefaults.path),
                      "The request path; starts with \"/\"."),
        ManifestField("method", .choice(HealthCheckMethod.allCases.map(\.rawValue)),
                      default: .text(healthDefaults.method.rawValue), "The request method."),
        ManifestField("codes", .list(.choice(DocumentDecoder.healthCheckCodes), count: 1...Int.max),
                      default: .texts(healthDefaults.codes), "Status classes that pass."),
        ManifestField("interval", .integer(1...50), default: .integer(healthDefaults.interval),
                      "Seconds between two checks of a server."),
        ManifestField("timeout", .integer(1...300), default: .integer(healthDefaults.timeout),
                      "Seconds a check may take, connect included."),
        ManifestField("healthyThreshold", .integer(2...10), default: .integer(healthDefaults.healthyThreshold),
                      "Passed checks in a row that bring a server back into rotation."),
        ManifestField("unhealthyThreshold", .integer(2...10), default: .integer(healthDefaults.unhealthyThreshold),
                      "Failed checks in a row that take a server out of rotation."),
    ]

    private static let stickyDefaults = StickySession()

    public static let stickySession: [ManifestField] = [
        ManifestField("enabled", .boolean, default: .boolean(stickyDefaults.enabled),
                      "Keep a client on one server with a cookie."),
        ManifestField("type", .choice(StickySessionType.allCases.map(\.rawValue)),
                      default: .text(stickyDefaults.type.rawValue), "Insert: the balancer sets the cookie."),
        ManifestField("cookieTimeout", .integer(1...86400), default: .integer(stickyDefaults.cookieTimeout),
                      "The cookie's Max-Age in seconds."),
    ]

    // MARK: Certificate and SecurityPolicy

    public static let certificate: [ManifestField] = [
        ManifestField("type", .choice(CertificateType.allCases.map(\.rawValue)), required: true,
                      "Server: a certificate with its key; CA: verifies client certificates."),
        ManifestField("certificate", .text(TextRule(minLength: 1)), required: true,
                      "Path of the PEM certificate (chain) file, relative to this manifest's file."),
        ManifestField("privateKey", .text(TextRule(minLength: 1)),
                      "Path of the PEM private key file (Server certificates only)."),
    ]

    public static let certificateRules: [FieldRule] = [
        FieldRule(when: "type", in: [CertificateType.server.rawValue], .requires(["privateKey"])),
        FieldRule(when: "type", in: [CertificateType.ca.rawValue], .forbids(["privateKey"])),
    ]

    public static let securityPolicy: [ManifestField] = [
        ManifestField("tlsVersions", .list(.choice(TLSVersion.allCases.map(\.rawValue)), count: 1...Int.max),
                      required: true, "The TLS versions the policy enables."),
        ManifestField("ciphers", .list(.choice(SecurityPolicySpec.knownCiphers), count: 1...Int.max), required: true,
                      "OpenSSL cipher names from the predefined policies' lists."),
    ]
}
