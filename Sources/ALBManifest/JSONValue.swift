/// A JSON value whose objects keep their key order, so a rendered document is byte-for-byte stable
/// (a committed schema can be compared with `alb schema`'s output). Building and rendering only: no
/// parsing, no I/O.
public indirect enum JSONValue: Sendable {
    case bool(Bool)
    case int(Int)
    case string(String)
    case array([JSONValue])
    case object([(key: String, value: JSONValue)])

    /// Pretty-printed with two-space indentation and a final newline.
    public var rendered: String {
        var out = ""
        render(into: &out, indent: "")
        return out + "\n"
    }

    private func render(into out: inout String, indent: String) {
        let inner = indent + "  "
        switch self {
        case .bool(let value): out += value ? "true" : "false"
        case .int(let value): out += String(value)
        case .string(let value): Self.quote(value, into: &out)
        case .array(let items):
            // Short lists of scalars stay on one line (enums, required): easier to read.
            if items.allSatisfy(\.isScalar), items.count <= 12 {
                out += "["
                for (index, item) in items.enumerated() {
                    if index > 0 { out += ", " }
                    item.render(into: &out, indent: inner)
                }
                out += "]"
                return
            }
            out += "[\n"
            for (index, item) in items.enumerated() {
                out += inner
                item.render(into: &out, indent: inner)
                out += index == items.count - 1 ? "\n" : ",\n"
            }
            out += indent + "]"
        case .object(let members):
            if members.isEmpty {
                out += "{}"
                return
            }
            out += "{\n"
            for (index, member) in members.enumerated() {
                out += inner
                Self.quote(member.key, into: &out)
                out += ": "
                member.value.render(into: &out, indent: inner)
                out += index == members.count - 1 ? "\n" : ",\n"
            }
            out += indent + "}"
        }
    }

    private var isScalar: Bool {
        switch self {
        case .array, .object: false
        default: true
        }
    }

    /// Appends `text` as a JSON string. The same text is a valid YAML double-quoted scalar (YAML 1.2 has
    /// JSON's escapes), which is how the status files use it.
    public static func quote(_ text: String, into out: inout String) {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(text.utf8.count + 2)
        quote(text, into: &bytes)
        out += String(decoding: bytes, as: UTF8.self)
    }

    /// ``quote(_:into:)`` as UTF-8 bytes. Runs of bytes that need no escape are appended whole: appending
    /// scalar by scalar was most of the CPU of writing events.log at a cold start (100 listeners, 200 events).
    public static func quote(_ text: String, into out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        let utf8 = text.utf8
        var runStart = utf8.startIndex
        var index = runStart
        while index != utf8.endIndex {
            let byte = utf8[index]
            let escape: StaticString
            switch byte {
            case UInt8(ascii: "\""): escape = "\\\""
            case UInt8(ascii: "\\"): escape = "\\\\"
            case UInt8(ascii: "\n"): escape = "\\n"
            case UInt8(ascii: "\r"): escape = "\\r"
            case UInt8(ascii: "\t"): escape = "\\t"
            case ..<0x20: escape = "\\u00"  // then the byte's two hex digits
            default:
                index = utf8.index(after: index)
                continue
            }
            out.append(contentsOf: utf8[runStart..<index])
            escape.withUTF8Buffer { out.append(contentsOf: $0) }
            if escape.utf8CodeUnitCount == 4 {
                out.append(Self.hexDigits[Int(byte >> 4)])
                out.append(Self.hexDigits[Int(byte & 0xf)])
            }
            index = utf8.index(after: index)
            runStart = index
        }
        out.append(contentsOf: utf8[runStart...])
        out.append(UInt8(ascii: "\""))
    }

    private static let hexDigits = Array("0123456789abcdef".utf8)
}
