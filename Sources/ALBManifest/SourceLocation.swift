/// A position in a manifest file, 1-based, as an operator's editor counts it; line 0 stands for the
/// path as a whole (a file that could not be read has no lines).
///
/// It does not know the file's contents or whether the position still exists: it is only a label
/// carried by diagnostics and resources so that every problem can be reported as `file:line:col`.
public struct SourceLocation: Hashable, Sendable, Codable, CustomStringConvertible, Comparable {
    public var file: String
    public var line: Int
    public var column: Int

    public init(file: String, line: Int, column: Int) {
        self.file = file
        self.line = line
        self.column = column
    }

    /// `file:line:col`, or `file` alone for the path as a whole.
    public var description: String { line > 0 ? "\(file):\(line):\(column)" : file }

    /// Ordered by file, then line, then column.
    public static func < (lhs: SourceLocation, rhs: SourceLocation) -> Bool {
        (lhs.file, lhs.line, lhs.column) < (rhs.file, rhs.line, rhs.column)
    }
}

/// The five resource kinds a manifest document may declare.
///
/// Declaration order (LoadBalancer first, SecurityPolicy last) is the sort order, so plans and status
/// listings show instances before the listeners that live on them. It carries no spec data.
public enum ResourceKind: String, CaseIterable, Sendable, Codable, Comparable {
    case loadBalancer = "LoadBalancer"
    case listener = "Listener"
    case serverGroup = "ServerGroup"
    case certificate = "Certificate"
    case securityPolicy = "SecurityPolicy"

    /// The folder under the status directory holding this kind's status files.
    public var statusFolder: String {
        switch self {
        case .loadBalancer: "loadbalancers"
        case .listener: "listeners"
        case .serverGroup: "servergroups"
        case .certificate: "certificates"
        case .securityPolicy: "securitypolicies"
        }
    }

    private var order: Int { Self.allCases.firstIndex(of: self) ?? 0 }

    public static func < (lhs: ResourceKind, rhs: ResourceKind) -> Bool { lhs.order < rhs.order }
}

/// Identifies a resource: names are unique per kind, not across kinds.
///
/// It does not check that the name is well formed; the loader does that.
public struct ResourceID: Hashable, Comparable, Sendable, Codable, CustomStringConvertible {
    public var kind: ResourceKind
    public var name: String

    public init(kind: ResourceKind, name: String) {
        self.kind = kind
        self.name = name
    }

    /// `Kind/name`, e.g. `Listener/web`.
    public var description: String { "\(kind.rawValue)/\(name)" }

    public static func < (lhs: ResourceID, rhs: ResourceID) -> Bool {
        lhs.kind != rhs.kind ? lhs.kind < rhs.kind : lhs.name < rhs.name
    }
}
