/// The canonical, fully defaulted, flattened form of a resource: ordered `(path, value)` pairs such as
/// `("port", "8080")`, `("tags.team", "web")` or `("defaultAction.forwardGroup.serverGroups[0].name", "blue")`.
///
/// Plans diff it and status files store it as `live`. Every value is a string; empty lists and unset
/// optional fields have no entry. It never holds secrets (certificate *paths* only). Equality ignores
/// entry order. Keys under `tags` are taken whole, so tag keys may contain dots.
public struct CanonicalFields: Equatable, Sendable, CustomStringConvertible {
    public var entries: [(path: String, value: String)]

    /// The manifest type of a value that is not text.
    public enum ScalarType: Sendable, Equatable { case integer, boolean }

    /// Paths whose values are numbers or booleans in the manifest; every other value is text. Only used
    /// to write values back with their types (status `live`); equality and diffs compare the text.
    public var scalarTypes: [String: ScalarType] = [:]

    public init(entries: [(path: String, value: String)], scalarTypes: [String: ScalarType] = [:]) {
        self.entries = entries
        self.scalarTypes = scalarTypes
    }

    public subscript(path: String) -> String? {
        entries.first { $0.path == path }?.value
    }

    /// Entries as a dictionary (paths are unique).
    public var dictionary: [String: String] {
        Dictionary(entries.map { ($0.path, $0.value) }, uniquingKeysWith: { _, last in last })
    }

    public static func == (lhs: CanonicalFields, rhs: CanonicalFields) -> Bool {
        guard lhs.entries.count == rhs.entries.count else { return false }
        // Same order is the common case (both built by the same code): no dictionaries needed.
        if lhs.entries.elementsEqual(rhs.entries, by: { $0.path == $1.path && $0.value == $1.value }) { return true }
        return lhs.dictionary == rhs.dictionary
    }

    public var description: String {
        entries.map { "\($0.path)=\($0.value)" }.joined(separator: ", ")
    }

    // MARK: Nested form

    /// Rebuild from a nested tree (what `nested` produced after a YAML round trip). Accepts
    /// `[String: Any]`, `[Any]`, `String`, `Int`, `Bool` and `Double` leaves; anything else is
    /// stringified. Entries come out in natural path order (indices numerically).
    public init(nested: Any) {
        var result: [(path: String, value: String)] = []
        var types: [String: ScalarType] = [:]
        Self.flatten(nested, path: "", into: &result, types: &types)
        result.sort { Self.naturalLess($0.path, $1.path) }
        self.init(entries: result, scalarTypes: types)
    }

    /// The nested form: maps in key order, lists, and leaves.
    public indirect enum Nested: Sendable {
        case text(String)
        case integer(Int)
        case boolean(Bool)
        case map([(key: String, value: Nested)])
        case list([Nested])

        /// As Foundation-style values (`[String: Any]`, `[Any]`, `String`, `Int`, `Bool`), for `Yams.dump`.
        public var any: Any {
            switch self {
            case .text(let text): text
            case .integer(let integer): integer
            case .boolean(let boolean): boolean
            case .map(let pairs): Dictionary(pairs.map { ($0.key, $0.value.any) }, uniquingKeysWith: { $1 })
            case .list(let items): items.map(\.any)
            }
        }
    }

    /// Nested dictionaries and arrays of strings, suitable for `Yams.dump`.
    public var nested: [String: Any] { (self.tree(typed: false).any as? [String: Any]) ?? [:] }

    /// The nested form with numbers and booleans typed where ``scalarTypes`` says so (status `live`): built
    /// without `Any`, whose boxes and casts were most of the cost of rendering a status file.
    public var typedTree: Nested { self.tree(typed: true) }

    private func tree(typed: Bool) -> Nested {
        var root = Tree.dict([:])
        for entry in entries {
            var leaf = Nested.text(entry.value)
            if typed {
                switch scalarTypes[entry.path] {
                case .integer?: if let integer = Int(entry.value) { leaf = .integer(integer) }
                case .boolean?: leaf = .boolean(entry.value == "true")
                case nil: break
                }
            }
            root.insert(Self.segments(of: entry.path)[...], value: leaf)
        }
        return root.nested
    }

    private static func flatten(_ value: Any, path: String, into result: inout [(path: String, value: String)],
                                types: inout [String: ScalarType]) {
        switch value {
        case let dict as [String: Any]:
            for (key, child) in dict {
                let childPath: String
                if path == "tags" {
                    // Tag keys are leaves taken whole, even with dots in them.
                    result.append((path: "tags.\(key)", value: scalarText(child)))
                    continue
                }
                childPath = path.isEmpty ? key : "\(path).\(key)"
                flatten(child, path: childPath, into: &result, types: &types)
            }
        case let dict as [AnyHashable: Any]:
            var converted: [String: Any] = [:]
            for (key, child) in dict { converted["\(key.base)"] = child }
            flatten(converted, path: path, into: &result, types: &types)
        case let array as [Any]:
            for (index, child) in array.enumerated() {
                flatten(child, path: "\(path)[\(index)]", into: &result, types: &types)
            }
        default:
            if value is Bool {
                types[path] = .boolean
            } else if value is Int {
                types[path] = .integer
            }
            result.append((path: path, value: scalarText(value)))
        }
    }

    private static func scalarText(_ value: Any) -> String {
        switch value {
        case let string as String: string
        case let bool as Bool: bool ? "true" : "false"
        case let int as Int: String(int)
        case let double as Double: String(double)
        default: "\(value)"
        }
    }

    private enum Segment {
        case key(String)
        case index(Int)
    }

    /// Splits `a.b[0].c` into key/index segments; the rest after `tags.` is one key. Works on the UTF-8
    /// bytes: splitting by `Character` (grapheme breaking on every byte) was two fifths of the CPU of
    /// writing a cold start's status files (callgrind: 17,500 instructions a path).
    private static func segments(of path: String) -> [Segment] {
        if path.hasPrefix("tags.") {
            return [.key("tags"), .key(String(path.dropFirst(5)))]
        }
        let utf8 = path.utf8
        var result: [Segment] = []
        var partStart = utf8.startIndex
        while true {
            let partEnd = utf8[partStart...].firstIndex(of: UInt8(ascii: ".")) ?? utf8.endIndex
            let part = utf8[partStart..<partEnd]
            if let bracket = part.firstIndex(of: UInt8(ascii: "[")) {
                result.append(.key(String(Substring(part[..<bracket]))))
                var rest = part[bracket...]
                while rest.first == UInt8(ascii: "["), let close = rest.firstIndex(of: UInt8(ascii: "]")) {
                    result.append(.index(Self.decimal(rest[rest.index(after: rest.startIndex)..<close]) ?? 0))
                    rest = rest[rest.index(after: close)...]
                }
            } else {
                result.append(.key(String(Substring(part))))
            }
            guard partEnd != utf8.endIndex else { return result }
            partStart = utf8.index(after: partEnd)
        }
    }

    /// The value of a run of 1 to 18 ASCII digits (never overflows), else nil.
    private static func decimal(_ digits: Substring.UTF8View) -> Int? {
        guard !digits.isEmpty, digits.count <= 18 else { return nil }
        var value = 0
        for digit in digits {
            guard digit >= UInt8(ascii: "0"), digit <= UInt8(ascii: "9") else { return nil }
            value = value * 10 + Int(digit - UInt8(ascii: "0"))
        }
        return value
    }

    private indirect enum Tree {
        case leaf(Nested)
        case dict([String: Tree])
        case list([Tree])

        /// Each level is taken out of its parent while it changes (the parent holds a placeholder), so it is
        /// the only reference to its storage and grows in place: copying every level on every insert was
        /// most of the cost of rendering a status file.
        mutating func insert(_ path: ArraySlice<Segment>, value: Nested) {
            guard let first = path.first else {
                self = .leaf(value)
                return
            }
            let rest = path.dropFirst()
            switch first {
            case .key(let key):
                var dict: [String: Tree] = [:]
                if case .dict(let existing) = self { dict = existing }
                self = .placeholder
                var child = dict.removeValue(forKey: key) ?? .dict([:])
                child.insert(rest, value: value)
                dict[key] = child
                self = .dict(dict)
            case .index(let index):
                var list: [Tree] = []
                if case .list(let existing) = self { list = existing }
                self = .placeholder
                while list.count <= index { list.append(.dict([:])) }
                var child = list[index]
                list[index] = .placeholder
                child.insert(rest, value: value)
                list[index] = child
                self = .list(list)
            }
        }

        /// What a level holds while it is out being changed.
        static var placeholder: Tree { .list([]) }

        /// Maps with their keys in order.
        var nested: Nested {
            switch self {
            case .leaf(let value): value
            case .dict(let dict): .map(dict.sorted { $0.key < $1.key }.map { (key: $0.key, value: $0.value.nested) })
            case .list(let list): .list(list.map(\.nested))
            }
        }
    }

    /// Lexical order, except that runs of digits compare as numbers (`servers[2]` < `servers[10]`).
    static func naturalLess(_ lhs: String, _ rhs: String) -> Bool {
        var left = Array(lhs.unicodeScalars)[...]
        var right = Array(rhs.unicodeScalars)[...]
        func isDigit(_ scalar: Unicode.Scalar) -> Bool { ("0"..."9").contains(scalar) }
        while let leftFirst = left.first, let rightFirst = right.first {
            if isDigit(leftFirst) && isDigit(rightFirst) {
                let leftDigits = left.prefix(while: isDigit)
                let rightDigits = right.prefix(while: isDigit)
                let leftNumber = String(String.UnicodeScalarView(leftDigits))
                let rightNumber = String(String.UnicodeScalarView(rightDigits))
                if leftNumber.count != rightNumber.count { return leftNumber.count < rightNumber.count }
                if leftNumber != rightNumber { return leftNumber < rightNumber }
                left = left.dropFirst(leftDigits.count)
                right = right.dropFirst(rightDigits.count)
            } else {
                if leftFirst != rightFirst { return leftFirst.value < rightFirst.value }
                left = left.dropFirst()
                right = right.dropFirst()
            }
        }
        return left.isEmpty && !right.isEmpty
    }
}
