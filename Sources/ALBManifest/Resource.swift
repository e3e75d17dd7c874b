/// The kind-specific part of a resource. Only the decoded values: positions and references are
/// not resolved into it.
public enum ResourceSpec: Equatable, Sendable {
    case loadBalancer(LoadBalancerSpec)
    case listener(ListenerSpec)
    case serverGroup(ServerGroupSpec)
    case certificate(CertificateSpec)
    case securityPolicy(SecurityPolicySpec)

    public var kind: ResourceKind {
        switch self {
        case .loadBalancer: .loadBalancer
        case .listener: .listener
        case .serverGroup: .serverGroup
        case .certificate: .certificate
        case .securityPolicy: .securityPolicy
        }
    }
}

/// One decoded, defaulted manifest document.
///
/// A `Resource` in `ManifestSet.resources` passed every per-resource and cross-resource rule. It is a
/// plain value: it does not track generations or live state (the reconciler does).
public struct Resource: Equatable, Sendable {
    public var id: ResourceID
    public var tags: [String: String]
    public var spec: ResourceSpec
    /// Where the document starts (its first key).
    public var source: SourceLocation

    public init(id: ResourceID, tags: [String: String] = [:], spec: ResourceSpec, source: SourceLocation) {
        self.id = id
        self.tags = tags
        self.spec = spec
        self.source = source
    }
}

/// A source file handed in by the caller; the module never reads files itself.
public struct ManifestFile: Sendable {
    /// The path used in diagnostics and to resolve relative certificate paths.
    public var path: String
    public var contents: String
    /// Why the caller could not read this path (a symbolic link loop, a dangling link, a FIFO where a
    /// manifest was expected). The loader reports it like a file that does not parse, so a reconciler
    /// keeps what the path defined at its last good read instead of deleting it.
    public var readError: String?

    public init(path: String, contents: String) {
        self.path = path
        self.contents = contents
        self.readError = nil
    }

    /// A path that could not be read, reported as `PATH: error: MESSAGE`.
    public init(path: String, readError: String) {
        self.path = path
        self.contents = ""
        self.readError = readError
    }
}
