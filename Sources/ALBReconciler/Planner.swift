import ALBManifest

/// What `alb plan` prints: the changes a reconcile would make against the live state in the status files.
public struct Plan: Sendable, Equatable {
    public var lines: [String]
    public var hasChanges: Bool { !lines.isEmpty }
}

public enum Planner {
    public static func plan(manifests: ManifestSet, statuses: [ResourceID: ResourceStatus]) -> Plan {
        let state = DesiredState(resources: manifests.resources)
        var desired: [ResourceID: CanonicalFields] = [:]
        for (id, resource) in manifests.resources { desired[id] = state.canonical(resource) }
        var live: [ResourceID: CanonicalFields] = [:]
        for (id, status) in statuses {
            // Invalid resources are not planned: their last good configuration stays as it is.
            if manifests.invalid[id] != nil { continue }
            if let fields = status.live { live[id] = fields }
        }
        // A listener whose state alone changed is a start or stop, not an update.
        func withoutState(_ fields: CanonicalFields) -> CanonicalFields {
            CanonicalFields(entries: fields.entries.filter { $0.path != "state" })
        }
        var lines: [String] = []
        for change in Differ.diff(desired: desired.mapValues(withoutState), live: live.mapValues(withoutState)) {
            switch change {
            case .create(let id):
                lines.append("+ create \(id)")
            case .delete(let id):
                lines.append("- delete \(id)")
            case .update(let id, let fields):
                lines.append("~ update \(id)")
                lines += fields.map { "    \($0.path): \($0.old ?? "(none)") -> \($0.new ?? "(none)")" }
            case .replace(let id, let immutable, let fields):
                let order = Differ.replaceOrder(running: desired[id]?["state"] != "Stopped")
                let symbol = order == .createBeforeDelete ? "+/-" : "-/+"
                lines.append("\(symbol) replace \(id) (\(immutable.joined(separator: ", ")) is immutable; \(order.rawValue))")
                lines += fields.map { "    \($0.path): \($0.old ?? "(none)") -> \($0.new ?? "(none)")" }
            }
        }
        // Start and stop, from the recorded state.
        for (id, resource) in manifests.resources.sorted(by: { $0.key < $1.key }) where id.kind == .listener {
            guard case .listener(let spec) = resource.spec, let status = statuses[id], status.live != nil,
                  let current = status.state else { continue }
            if spec.state == .running, current != .running { lines.append("> start \(id)") }
            if spec.state == .stopped, current != .stopped { lines.append(". stop \(id)") }
        }
        return Plan(lines: lines)
    }
}
