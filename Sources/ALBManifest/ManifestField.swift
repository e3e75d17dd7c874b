/// One field of a manifest mapping: its name, the shape of its value, whether it is required, its
/// default and what it means.
///
/// The tables of these (``ManifestFields``) are the one list of what a manifest may hold: the decoder
/// takes from them which keys a mapping allows (the unknown-field check and its "did you mean"), which
/// are required and the static ranges of integers; `alb schema` renders the same tables as JSON Schema.
/// Rules that depend on other fields or resources (a quota that follows the edition, references) stay
/// in the decoder and `CrossResourceValidator`; the tables hold those a schema can state.
public struct ManifestField: Sendable {
    public let name: String
    public let shape: FieldShape
    public let required: Bool
    /// What a missing field means; nil when there is no default (required or optional without one).
    public let defaultValue: FieldDefault?
    /// One or two sentences for editors (the JSON Schema `description`).
    public let summary: String

    public init(_ name: String, _ shape: FieldShape, required: Bool = false, default defaultValue: FieldDefault? = nil,
                _ summary: String) {
        self.name = name
        self.shape = shape
        self.required = required
        self.defaultValue = defaultValue
        self.summary = summary
    }
}

/// The type of a manifest value and the constraints the decoder checks on it by itself.
///
/// Only `list` is `indirect`: a wholly indirect enum keeps each case's box behind a pointer tagged in its
/// spare bits, which LeakSanitizer (the fuzz targets' `--sanitize address`) cannot follow from the static
/// tables, so it reported every box as leaked.
public enum FieldShape: Sendable {
    /// A string (any YAML scalar is read as its text).
    case text(TextRule)
    /// A plain integer within the range.
    case integer(ClosedRange<Int>)
    case boolean
    /// One of these strings, exactly.
    case choice([String])
    /// A mapping that allows only these keys, with rules between its fields.
    case mapping([ManifestField], rules: [FieldRule] = [])
    /// A list of values of one shape; `count` bounds its length.
    indirect case list(FieldShape, count: ClosedRange<Int>? = nil)
    /// A mapping of string keys to string values (tags), at most `maxEntries`.
    case textMap(maxEntries: Int)

    /// The fields of a mapping, or of the mappings in a list; empty otherwise.
    public var fields: [ManifestField] {
        switch self {
        case .mapping(let fields, _): fields
        case .list(let item, _): item.fields
        default: []
        }
    }

    /// The range of an integer.
    public var range: ClosedRange<Int>? {
        if case .integer(let range) = self { return range }
        return nil
    }
}

/// Constraints on a string value.
public struct TextRule: Sendable {
    public var minLength: Int?
    public var maxLength: Int?
    /// An ECMA-262 regular expression the whole value matches (anchored).
    public var pattern: String?
    /// Not checked by a schema, only named for readers: "an IP address", "a host name".
    public var meaning: String?

    public init(minLength: Int? = nil, maxLength: Int? = nil, pattern: String? = nil, meaning: String? = nil) {
        self.minLength = minLength
        self.maxLength = maxLength
        self.pattern = pattern
        self.meaning = meaning
    }

    public static let any = TextRule()
}

/// A default value as a manifest would spell it.
public enum FieldDefault: Sendable, Equatable {
    case text(String)
    case integer(Int)
    case boolean(Bool)
    case texts([String])
}

/// A rule between fields of one mapping: when `field` holds one of `values`, `effect` applies.
public struct FieldRule: Sendable {
    public enum Effect: Sendable {
        /// The field at this path (from the mapping) must be present.
        case requires([String])
        /// The field at this path must be absent.
        case forbids([String])
        /// The boolean at this path must not be true.
        case forbidsTrue([String])
        /// The integer at this path, when present, must be at most this.
        case atMost([String], Int)
    }

    public let field: String
    /// The values of `field` (its manifest spelling: `HTTPS`, `true`) that trigger the rule.
    public let values: [String]
    public let effect: Effect

    public init(when field: String, in values: [String], _ effect: Effect) {
        self.field = field
        self.values = values
        self.effect = effect
    }
}

extension Array where Element == ManifestField {
    public subscript(field name: String) -> ManifestField? { first { $0.name == name } }
    public var names: [String] { map(\.name) }
    public var requiredNames: [String] { filter(\.required).map(\.name) }
}
