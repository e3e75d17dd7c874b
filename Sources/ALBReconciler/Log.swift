import Foundation
import Logging

/// `--log-format`: how ``ALBLogHandler`` writes an event.
public enum LogFormat: String, Sendable {
    /// `TIME level=info msg="..." key=value` (logfmt).
    case text
    /// One JSON object a line, keys sorted: `{"level":"info","msg":"...","time":"...",...}`.
    case json
}

extension Logger.Level {
    /// The names `--log-level` takes: debug, info, warning, error (any case).
    public init?(name: String) {
        switch name.lowercased() {
        case "debug": self = .debug
        case "info": self = .info
        case "warning": self = .warning
        case "error": self = .error
        default: return nil
        }
    }
}

extension Logger {
    /// The operator log of `alb`: stderr, one event a line, through ``ALBLogHandler``.
    public static func alb(level: Logger.Level = .info, format: LogFormat = .text, label: String = "alb") -> Logger {
        var logger = Logger(label: label) { _ in ALBLogHandler(format: format) }
        logger.logLevel = level
        return logger
    }

    /// An event with fields written in the order given (swift-log's metadata is a dictionary; the order
    /// travels in ``ALBLogHandler/fieldOrderKey`` and is not printed).
    public func debug(_ message: String, _ fields: KeyValuePairs<String, String>) { self.emit(.debug, message, fields) }
    public func info(_ message: String, _ fields: KeyValuePairs<String, String>) { self.emit(.info, message, fields) }
    public func warning(_ message: String, _ fields: KeyValuePairs<String, String>) { self.emit(.warning, message, fields) }
    public func error(_ message: String, _ fields: KeyValuePairs<String, String>) { self.emit(.error, message, fields) }

    private func emit(_ level: Logger.Level, _ message: String, _ fields: KeyValuePairs<String, String>) {
        guard level >= self.logLevel else { return }
        var metadata: Logger.Metadata = [:]
        for (key, value) in fields { metadata[key] = .string(value) }
        metadata[ALBLogHandler.fieldOrderKey] = .array(fields.map { .string($0.key) })
        self.log(level: level, "\(message)", metadata: metadata)
    }
}

/// The `LogHandler` behind every `Logger` of `alb`: the same lines the operator log has always had, as
/// logfmt (`--log-format text`) or JSON, on stderr. Fields given in order (``Logger/info(_:_:)``) keep
/// it; other metadata (the handler's own, a library's) follows in key order.
public struct ALBLogHandler: LogHandler {
    /// Metadata key carrying the order of an event's fields; never printed.
    static let fieldOrderKey = "alb.field-order"

    public var logLevel: Logger.Level = .info
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    public let format: LogFormat
    /// Where lines go (stderr; tests collect them).
    let write: @Sendable (String) -> Void

    public init(format: LogFormat) {
        self.format = format
        self.write = { line in FileHandle.standardError.write(Data(line.utf8)) }
    }

    init(format: LogFormat, write: @escaping @Sendable (String) -> Void) {
        self.format = format
        self.write = write
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { self.metadata[key] }
        set { self.metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var all = self.metadata
        if let provided = self.metadataProvider?.get() { all.merge(provided) { _, new in new } }
        if let given = event.metadata { all.merge(given) { _, new in new } }
        var order: [String] = []
        if case .array(let keys)? = all.removeValue(forKey: Self.fieldOrderKey) {
            order = keys.map { $0.description }
        }
        let ordered = Set(order)
        let fields = order.compactMap { key in all[key].map { (key, $0.description) } }
            + all.keys.filter { !ordered.contains($0) }.sorted().compactMap { key in all[key].map { (key, $0.description) } }
        self.write(Self.line(level: event.level, message: event.message.description, fields: fields, format: self.format,
                             time: Date()) + "\n")
    }

    /// One event as text or JSON (unit-tested).
    static func line(level: Logger.Level, message: String, fields: [(String, String)], format: LogFormat, time: Date) -> String {
        let time = UTCTimestamp.text(time)
        switch format {
        case .json:
            var object = ["time": time, "level": level.rawValue, "msg": message]
            for (key, value) in fields { object[key] = value }
            let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data()
            return String(decoding: data, as: UTF8.self)
        case .text:
            var line = "\(time) level=\(level.rawValue) msg=\(Self.quote(message))"
            for (key, value) in fields { line += " \(key)=\(Self.quote(value))" }
            return line
        }
    }

    private static func quote(_ value: String) -> String {
        if !value.isEmpty, value.allSatisfy({ $0.isLetter || $0.isNumber || "-_./:".contains($0) }) { return value }
        return "\"" + value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
            .replacingOccurrences(of: "\n", with: "\\n") + "\""
    }
}
