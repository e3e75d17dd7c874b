/// One changed canonical field; `nil` means absent on that side.
public struct FieldChange: Equatable, Sendable {
    public var path: String
    public var old: String?
    public var new: String?
    public init(path: String, old: String?, new: String?) {
        self.path = path
        self.old = old
        self.new = new
    }
}

/// What it takes to bring one live resource to its desired form.
public enum ResourceDiff: Equatable, Sendable {
    case create(ResourceID)
    case update(ResourceID, [FieldChange])
    /// An immutable field changed: the resource must be recreated.
    case replace(ResourceID, immutableFields: [String], [FieldChange])
    case delete(ResourceID)

    public var id: ResourceID {
        switch self {
        case .create(let id), .update(let id, _), .replace(let id, _, _), .delete(let id): id
        }
    }
}

/// Compares desired and live canonical fields. It only decides *what* differs; ordering the actions
/// (create-before-delete, start/stop) is the reconciler's and planner's job.
public enum Differ {
    /// Listener fields whose change forces a replace. `bindAddress` is added by callers from the
    /// listener's LoadBalancer address.
    public static let immutableListenerFields = ["protocol", "port", "loadBalancer", "bindAddress"]

    /// How a listener replace runs.
    public enum ReplaceOrder: String, Sendable {
        case createBeforeDelete = "create before delete"
        case deleteBeforeCreate = "delete before create"
    }

    /// The one place that decides how a replace runs, for `plan` and the reconciler alike. A listener that
    /// is to run gets its new instance before the old one goes: on a new address a socket is bound first,
    /// on the same address the open socket is handed over, so there is never a gap. A listener that is
    /// to be stopped has nothing to serve: the old instance goes and only the configuration is replaced.
    public static func replaceOrder(running: Bool) -> ReplaceOrder {
        running ? .createBeforeDelete : .deleteBeforeCreate
    }

    /// One entry per resource that differs, sorted by id; unchanged resources are left out.
    public static func diff(desired: [ResourceID: CanonicalFields],
                            live: [ResourceID: CanonicalFields]) -> [ResourceDiff] {
        let ids = Set(desired.keys).union(live.keys).sorted()
        var result: [ResourceDiff] = []
        for id in ids {
            switch (desired[id], live[id]) {
            case (.some, .none):
                result.append(.create(id))
            case (.none, .some):
                result.append(.delete(id))
            case let (.some(want), .some(have)):
                let changes = fieldChanges(from: have, to: want)
                guard !changes.isEmpty else { continue }
                let changedPaths = Set(changes.map(\.path))
                let immutable = id.kind == .listener
                    ? immutableListenerFields.filter { changedPaths.contains($0) } : []
                result.append(immutable.isEmpty ? .update(id, changes)
                                                : .replace(id, immutableFields: immutable, changes))
            case (.none, .none):
                continue
            }
        }
        return result
    }

    /// Changes in desired-field order, then fields only the live side has.
    public static func fieldChanges(from live: CanonicalFields, to desired: CanonicalFields) -> [FieldChange] {
        let old = live.dictionary
        let new = desired.dictionary
        var changes: [FieldChange] = []
        for entry in desired.entries where old[entry.path] != entry.value {
            changes.append(FieldChange(path: entry.path, old: old[entry.path], new: entry.value))
        }
        for entry in live.entries where new[entry.path] == nil {
            changes.append(FieldChange(path: entry.path, old: entry.value, new: nil))
        }
        return changes
    }
}
