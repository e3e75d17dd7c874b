import Foundation

/// Operator log: one event a line on stderr, as text (`level=info msg="..." key=value`) or JSON.
public struct Log: Sendable {
    public enum Level: Int, Sendable, Comparable, CaseIterable {
        case debug, info, warning, error
        public var name: String { ["debug", "info", "warning", "error"][rawValue] }
        public init?(name: String) {
            guard let level = Level.allCases.first(where: { $0.name == name.lowercased() }) else { return nil }
            self = level
        }
        public static func < (lhs: Level, rhs: Level) -> Bool { lhs.rawValue < rhs.rawValue }
    }

    public enum Format: String, Sendable { case text, json }

    public var level: Level
    public var format: Format

    public init(level: Level = .info, format: Format = .text) {
        self.level = level
        self.format = format
    }

    public func debug(_ message: String, _ fields: KeyValuePairs<String, String> = [:]) { emit(.debug, message, fields) }
    public func info(_ message: String, _ fields: KeyValuePairs<String, String> = [:]) { emit(.info, message, fields) }
    public func warning(_ message: String, _ fields: KeyValuePairs<String, String> = [:]) { emit(.warning, message, fields) }
    public func error(_ message: String, _ fields: KeyValuePairs<String, String> = [:]) { emit(.error, message, fields) }

    private func emit(_ at: Level, _ message: String, _ fields: KeyValuePairs<String, String>) {
        guard at >= level else { return }
        let time = Date().formatted(.iso8601)
        var line: String
        switch format {
        case .json:
            var object = ["time": time, "level": at.name, "msg": message]
            for (key, value) in fields { object[key] = value }
            let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data()
            line = String(decoding: data, as: UTF8.self)
        case .text:
            line = "\(time) level=\(at.name) msg=\(Self.quote(message))"
            for (key, value) in fields { line += " \(key)=\(Self.quote(value))" }
        }
        FileHandle.standardError.write(Data((line + "\n").utf8))
    }

    private static func quote(_ value: String) -> String {
        if !value.isEmpty, value.allSatisfy({ $0.isLetter || $0.isNumber || "-_./:".contains($0) }) { return value }
        return "\"" + value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
            .replacingOccurrences(of: "\n", with: "\\n") + "\""
    }
}
