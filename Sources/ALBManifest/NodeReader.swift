import Yams

/// A mapping being read: its path, node, the fields its table allows (``ManifestFields``) and values by
/// key (explicit nulls are dropped).
struct MappingView {
    var path: String
    var node: Node
    var fields: [ManifestField]
    var values: [String: Node]

    func childPath(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    /// The fields of the mapping (or of each mapping in the list) under `key`.
    func fields(of key: String) -> [ManifestField] { fields[field: key]?.shape.fields ?? [] }
}

/// Reads one document's Yams nodes into typed values, collecting every problem instead of stopping
/// at the first. Records the position of every value it reads so cross-resource rules can point at
/// the offending field.
struct NodeReader {
    let file: String
    var diagnostics: [Diagnostic] = []
    /// Field path (`spec.port`) -> position of its value.
    var locations: [String: SourceLocation] = [:]

    init(file: String) { self.file = file }

    func location(_ node: Node) -> SourceLocation {
        let mark = node.mark
        return SourceLocation(file: file, line: mark?.line ?? 1, column: mark?.column ?? 1)
    }

    mutating func error(_ message: String, at node: Node, reason: DiagnosticReason = .invalidSpec) {
        error(message, at: location(node), reason: reason)
    }

    mutating func error(_ message: String, at location: SourceLocation, reason: DiagnosticReason = .invalidSpec) {
        diagnostics.append(Diagnostic(location: location, message: message, reason: reason))
    }

    // MARK: Describing nodes

    static func isNull(_ node: Node) -> Bool {
        guard case .scalar(let scalar) = node, scalar.style == .plain || scalar.style == .any else { return false }
        return ["", "~", "null", "Null", "NULL"].contains(scalar.string)
    }

    /// How a value is named in "got ..." messages.
    static func describe(_ node: Node) -> String {
        switch node {
        case .scalar(let scalar): isNull(node) ? "null" : "\"\(scalar.string)\""
        case .mapping: "a mapping"
        case .sequence: "a list"
        case .alias: "an alias"
        }
    }

    // MARK: Structure

    /// Checks `node` is a mapping with scalar keys among `fields`, reporting the rest (with the nearest
    /// known name when one is close: a typo, not a different field).
    mutating func mapping(_ node: Node, path: String, fields: [ManifestField]) -> MappingView? {
        guard case .mapping(let mapping) = node else {
            error("\(path): expected a mapping, got \(Self.describe(node))", at: node)
            return nil
        }
        locations[path] = location(node)
        var view = MappingView(path: path, node: node, fields: fields, values: [:])
        let allowed = fields.names
        for (key, value) in mapping {
            guard case .scalar(let keyScalar) = key else {
                error("\(path.isEmpty ? "" : "\(path): ")mapping keys must be scalars, got \(Self.describe(key))", at: key)
                continue
            }
            let name = keyScalar.string
            guard allowed.contains(name) else {
                var message = "unknown field \"\(view.childPath(name))\""
                if let nearest = NearestName.suggestion(for: name, among: allowed) {
                    message += " (did you mean \"\(nearest)\"?)"
                }
                error(message, at: key)
                continue
            }
            if Self.isNull(value) { continue }
            view.values[name] = value
        }
        return view
    }

    /// A child mapping, checked against its table; nil when absent or wrong type (already reported).
    mutating func object(_ parent: MappingView, _ key: String) -> MappingView? {
        guard let node = parent.values[key] else { return nil }
        return mapping(node, path: parent.childPath(key), fields: parent.fields(of: key))
    }

    /// Reports every field the table marks required that `parent` lacks, in table order.
    mutating func requireFields(_ parent: MappingView) {
        for key in parent.fields.requiredNames where parent.values[key] == nil { missing(parent, key) }
    }

    /// A child list's elements with their paths; nil when absent or wrong type (already reported).
    mutating func list(_ parent: MappingView, _ key: String) -> [(node: Node, path: String)]? {
        guard let node = parent.values[key] else { return nil }
        let path = parent.childPath(key)
        guard case .sequence(let sequence) = node else {
            error("\(path): expected a list, got \(Self.describe(node))", at: node)
            return nil
        }
        locations[path] = location(node)
        return sequence.enumerated().map { (node: $1, path: "\(path)[\($0)]") }
    }

    mutating func missing(_ parent: MappingView, _ key: String) {
        error("missing required field \"\(parent.childPath(key))\"", at: parent.node)
    }

    // MARK: Scalars

    mutating func string(_ node: Node, path: String) -> String? {
        guard case .scalar(let scalar) = node, !Self.isNull(node) else {
            error("\(path): expected a string, got \(Self.describe(node))", at: node)
            return nil
        }
        locations[path] = location(node)
        return scalar.string
    }

    mutating func int(_ node: Node, path: String, range: ClosedRange<Int>? = nil) -> Int? {
        guard case .scalar(let scalar) = node, scalar.style == .plain || scalar.style == .any,
              let value = Int(scalar.string) else {
            error("\(path): expected an integer, got \(Self.describe(node))", at: node)
            return nil
        }
        locations[path] = location(node)
        if let range, !range.contains(value) {
            error("\(path): \(value) is out of range \(range.lowerBound)-\(range.upperBound)", at: node)
            return nil
        }
        return value
    }

    mutating func bool(_ node: Node, path: String) -> Bool? {
        if case .scalar(let scalar) = node, scalar.style == .plain || scalar.style == .any {
            switch scalar.string {
            case "true", "True", "TRUE":
                locations[path] = location(node)
                return true
            case "false", "False", "FALSE":
                locations[path] = location(node)
                return false
            default: break
            }
        }
        error("\(path): expected a boolean (true or false), got \(Self.describe(node))", at: node)
        return nil
    }

    mutating func enumeration<E: RawRepresentable & CaseIterable>(_ node: Node, path: String, as _: E.Type) -> E?
    where E.RawValue == String {
        guard let text = string(node, path: path) else { return nil }
        guard let value = E(rawValue: text) else {
            let choices = E.allCases.map(\.rawValue).joined(separator: ", ")
            error("\(path): \"\(text)\" is not one of \(choices)", at: node)
            return nil
        }
        return value
    }

    // MARK: Keyed conveniences (absent -> nil, no error)

    mutating func string(_ parent: MappingView, _ key: String) -> String? {
        parent.values[key].flatMap { string($0, path: parent.childPath(key)) }
    }

    /// An integer within `range`, or by default within the range its table gives.
    mutating func int(_ parent: MappingView, _ key: String, range: ClosedRange<Int>? = nil) -> Int? {
        let bounds = range ?? parent.fields[field: key]?.shape.range
        return parent.values[key].flatMap { int($0, path: parent.childPath(key), range: bounds) }
    }

    mutating func bool(_ parent: MappingView, _ key: String) -> Bool? {
        parent.values[key].flatMap { bool($0, path: parent.childPath(key)) }
    }

    mutating func enumeration<E: RawRepresentable & CaseIterable>(_ parent: MappingView, _ key: String,
                                                                   as type: E.Type) -> E?
    where E.RawValue == String {
        parent.values[key].flatMap { enumeration($0, path: parent.childPath(key), as: type) }
    }

    /// A list of strings; nil when absent or when any element is wrong (already reported).
    mutating func stringList(_ parent: MappingView, _ key: String) -> [String]? {
        guard let items = list(parent, key) else { return nil }
        var result: [String] = []
        var ok = true
        for item in items {
            if let value = string(item.node, path: item.path) { result.append(value) } else { ok = false }
        }
        return ok ? result : nil
    }

    /// The position recorded for `path`, or `fallback`.
    func location(of path: String, fallback: SourceLocation) -> SourceLocation {
        locations[path] ?? fallback
    }
}
