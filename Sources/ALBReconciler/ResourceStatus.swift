import ALBDataPlane
import ALBManifest
import Foundation
import Yams

/// One status condition, Kubernetes style. `lastTransitionTime` moves only when `status` flips.
public struct Condition: Sendable, Equatable {
    public var type: String
    public var status: Bool
    public var reason: String
    public var message: String
    public var lastTransitionTime: Date

    public init(type: String, status: Bool, reason: String, message: String, lastTransitionTime: Date) {
        self.type = type; self.status = status; self.reason = reason; self.message = message
        self.lastTransitionTime = lastTransitionTime
    }
}

/// The newest generation that has not been applied yet, and why.
public struct LastAttempt: Sendable, Equatable {
    public var generation: Int
    public var error: String
    public var at: Date
}

/// The status file of one resource (SPEC section 5). Plain data: encoding and decoding only.
public struct ResourceStatus: Sendable, Equatable {
    public var id: ResourceID
    public var source: String
    public var generation: Int
    public var observedGeneration: Int
    /// Listeners only: Configuring | Running | Stopped | Failed.
    public var state: ListenerLifecycle.Phase?
    public var conditions: [Condition]
    /// The configuration serving now; nil when nothing of this resource has ever been applied.
    public var live: CanonicalFields?
    public var lastAttempt: LastAttempt?
    public var transitions: [ListenerLifecycle.Transition]
    /// Listeners only: the data plane's counters when the file was written.
    public var stats: ListenerStats?
    /// Digest of the desired document, so `generation` survives restarts and bumps only on real change.
    public var desiredDigest: String
    /// When the reconciler first saw the resource (its age in `alb status`).
    public var createdAt: Date?
    /// Listeners only: the bound address, e.g. "127.0.0.1:8080", while serving; written as
    /// `live.boundAddress`.
    public var address: String?
    /// Server groups only: each server with its health (SPEC section 5).
    public var servers: [ServerStatus]?

    /// A server of a group as its status lists it.
    public struct ServerStatus: Sendable, Equatable {
        public var address: String
        public var port: Int
        public var weight: Int
        /// Healthy | Unhealthy | Unchecked, or Draining: removed from the group with requests still in flight.
        public var health: String
        /// The last failed check's reason ("" when none failed).
        public var reason: String
        public var since: Date?
        /// Requests picked for it and not yet over, over every listener and event loop.
        public var activeRequests: Int
        /// Requests sent to it since it joined the data plane.
        public var requests: Int

        public init(address: String, port: Int, weight: Int, health: String, reason: String = "", since: Date? = nil,
                    activeRequests: Int = 0, requests: Int = 0) {
            self.address = address
            self.port = port
            self.weight = weight
            self.health = health
            self.reason = reason
            self.since = since
            self.activeRequests = activeRequests
            self.requests = requests
        }
    }

    public init(id: ResourceID, source: String) {
        self.id = id; self.source = source; generation = 0; observedGeneration = 0
        conditions = []; transitions = []; desiredDigest = ""
    }

    public func condition(_ type: String) -> Condition? { conditions.first { $0.type == type } }

    /// The manifest file of ``source`` (`file:line`), nil when there is none.
    public var sourceFile: String? {
        guard let colon = source.lastIndex(of: ":"), colon > source.startIndex,
              !source[source.index(after: colon)...].isEmpty,
              source[source.index(after: colon)...].allSatisfy(\.isNumber) else { return nil }
        return String(source[..<colon])
    }

    /// Whether this status is `other` but for its counters: a listener's `stats` (present in both) and the
    /// requests in flight and sent of each server (the same servers in the same order). Counters move with
    /// every request; everything else moves only when the reconciler or a health check changes something.
    public func equalsApartFromCounters(_ other: ResourceStatus) -> Bool {
        var counted = self
        if counted.stats != nil, other.stats != nil { counted.stats = other.stats }
        if var servers = counted.servers, let others = other.servers, servers.count == others.count {
            for index in servers.indices {
                servers[index].activeRequests = others[index].activeRequests
                servers[index].requests = others[index].requests
            }
            counted.servers = servers
        }
        return counted == other
    }

    /// Sets a condition, keeping `lastTransitionTime` unless the status flips.
    public mutating func setCondition(_ type: String, _ status: Bool, reason: String, message: String, now: Date) {
        if let index = conditions.firstIndex(where: { $0.type == type }) {
            let old = conditions[index]
            conditions[index] = Condition(type: type, status: status, reason: reason, message: message,
                                          lastTransitionTime: old.status == status ? old.lastTransitionTime : now)
        } else {
            conditions.append(Condition(type: type, status: status, reason: reason, message: message,
                                        lastTransitionTime: now))
        }
    }
}

// MARK: - YAML

extension ResourceStatus {
    static let timestampFormat: Date.ISO8601FormatStyle = .iso8601

    static func timestamp(_ date: Date) -> String { UTCTimestamp.text(date) }
    /// Yams resolves unquoted timestamps to `Date` already; anything else is parsed as ISO 8601 text.
    static func parseTimestamp(_ value: Any?) -> Date? {
        if let date = value as? Date { return date }
        return (value as? String).flatMap { try? timestampFormat.parse($0) }
    }

    /// The whole status in the field order of SPEC section 5: what the status file, `alb status -o yaml`
    /// and `alb status -o json` all show.
    public var document: StatusValue {
        document(live: liveDocument)
    }

    /// `live` as the document shows it (with `boundAddress`), nil when there is none: the flat canonical
    /// fields made a tree again, a third of the CPU of writing a status file. ``StatusStore`` keeps it while a
    /// resource's `live` and `address` stay the same (a refresh of counters rewrites the file, not this).
    var liveDocument: StatusValue? {
        if let live {
            let tree = live.typedTree
            guard let address, case .map(var pairs) = tree else { return StatusValue(tree) }
            pairs.removeAll { $0.key == "boundAddress" }
            let position = pairs.firstIndex { $0.key > "boundAddress" } ?? pairs.endIndex
            pairs.insert((key: "boundAddress", value: .text(address)), at: position)
            return StatusValue(.map(pairs))
        }
        return address.map { .map([("boundAddress", .text($0))]) }
    }

    /// ``document`` with `live` rendered already (``liveDocument``).
    func document(live liveValue: StatusValue?) -> StatusValue {
        var fields: [(String, StatusValue)] = [
            ("kind", .text(id.kind.rawValue)), ("name", .text(id.name)), ("source", .text(source)),
            ("generation", .integer(generation)), ("observedGeneration", .integer(observedGeneration)),
        ]
        if let createdAt { fields.append(("createdAt", .timestamp(createdAt))) }
        if let state { fields.append(("state", .text(state.rawValue))) }
        fields.append(("conditions", .list(conditions.map { condition in
            .map([
                ("type", .text(condition.type)), ("status", .text(condition.status ? "True" : "False")),
                ("reason", .text(condition.reason)), ("message", .text(condition.message)),
                ("lastTransitionTime", .timestamp(condition.lastTransitionTime)),
            ])
        })))
        if let liveValue { fields.append(("live", liveValue)) }
        if let lastAttempt {
            fields.append(("lastAttempt", .map([
                ("generation", .integer(lastAttempt.generation)), ("error", .text(lastAttempt.error)),
                ("at", .timestamp(lastAttempt.at)),
            ])))
        }
        if state != nil {
            fields.append(("transitions", .list(transitions.map { transition in
                .map([
                    ("from", .text(transition.from.rawValue)), ("to", .text(transition.to.rawValue)),
                    ("at", .timestamp(transition.at)), ("reason", .text(transition.reason)),
                ])
            })))
        }
        if let servers {
            fields.append(("servers", .list(servers.map { server in
                var entry: [(String, StatusValue)] = [
                    ("address", .text(server.address)), ("port", .integer(server.port)),
                    ("weight", .integer(server.weight)), ("health", .text(server.health)),
                    ("reason", .text(server.reason)),
                ]
                if let since = server.since { entry.append(("since", .timestamp(since))) }
                entry.append(("activeRequests", .integer(server.activeRequests)))
                entry.append(("requests", .integer(server.requests)))
                return .map(entry)
            })))
        }
        if let stats {
            fields.append(("stats", .map([
                ("activeConnections", .integer(stats.activeConnections)),
                ("totalConnections", .integer(stats.totalConnections)),
                ("totalRequests", .integer(stats.totalRequests)),
                ("responses", .map([
                    ("2xx", .integer(stats.responses2xx)), ("3xx", .integer(stats.responses3xx)),
                    ("4xx", .integer(stats.responses4xx)), ("5xx", .integer(stats.responses5xx)),
                ])),
            ])))
        }
        fields.append(("desiredDigest", .text(desiredDigest)))
        return .map(fields)
    }

    /// The status file's text.
    public func yaml() -> String {
        document.yaml
    }

    /// One YAML document listing every status in full (`alb status -o yaml`).
    public static func yaml(of statuses: [ResourceStatus]) -> String {
        StatusValue.list(statuses.map(\.document)).yaml
    }

    /// One JSON array of every status in full (`alb status -o json`, the admin endpoint's `/status`).
    public static func json(of statuses: [ResourceStatus]) -> Data {
        (try? JSONSerialization.data(withJSONObject: statuses.map(\.document.jsonObject),
                                     options: [.prettyPrinted, .sortedKeys])) ?? Data("[]".utf8)
    }

    /// Reads a status file back; nil when it is not one of ours (never throws on bad input).
    public static func parse(yaml text: String) -> ResourceStatus? {
        guard let root = (try? Yams.load(yaml: text)) as? [String: Any],
              let kindText = root["kind"] as? String, let kind = ResourceKind(rawValue: kindText),
              let name = root["name"] as? String else { return nil }
        var status = ResourceStatus(id: ResourceID(kind: kind, name: name), source: root["source"] as? String ?? "")
        status.generation = int(root["generation"]) ?? 0
        status.observedGeneration = int(root["observedGeneration"]) ?? 0
        status.createdAt = parseTimestamp(root["createdAt"])
        status.state = (root["state"] as? String).flatMap(ListenerLifecycle.Phase.init(rawValue:))
        for item in root["conditions"] as? [[String: Any]] ?? [] {
            guard let type = item["type"] as? String else { continue }
            status.conditions.append(Condition(
                type: type, status: string(item["status"]) == "True", reason: string(item["reason"]) ?? "",
                message: string(item["message"]) ?? "",
                lastTransitionTime: parseTimestamp(item["lastTransitionTime"]) ?? Date()))
        }
        if var live = root["live"] as? [String: Any] {
            // The bound address is shown inside `live` (SPEC section 5) but is not a desired field.
            status.address = string(live.removeValue(forKey: "boundAddress"))
            if !live.isEmpty { status.live = CanonicalFields(nested: live) }
        }
        if let attempt = root["lastAttempt"] as? [String: Any] {
            status.lastAttempt = LastAttempt(generation: int(attempt["generation"]) ?? 0,
                                             error: string(attempt["error"]) ?? "",
                                             at: parseTimestamp(attempt["at"]) ?? Date())
        }
        for item in root["transitions"] as? [[String: Any]] ?? [] {
            guard let from = string(item["from"]).flatMap(ListenerLifecycle.Phase.init(rawValue:)),
                  let to = string(item["to"]).flatMap(ListenerLifecycle.Phase.init(rawValue:)) else { continue }
            status.transitions.append(.init(from: from, to: to, at: parseTimestamp(item["at"]) ?? Date(),
                                            reason: string(item["reason"]) ?? ""))
        }
        if let servers = root["servers"] as? [[String: Any]] {
            status.servers = servers.map { item in
                ServerStatus(address: string(item["address"]) ?? "", port: int(item["port"]) ?? 0,
                             weight: int(item["weight"]) ?? 0, health: string(item["health"]) ?? "",
                             reason: string(item["reason"]) ?? "", since: parseTimestamp(item["since"]),
                             activeRequests: int(item["activeRequests"]) ?? 0, requests: int(item["requests"]) ?? 0)
            }
        }
        if let stats = root["stats"] as? [String: Any] {
            var parsed = ListenerStats()
            parsed.activeConnections = int(stats["activeConnections"]) ?? 0
            parsed.totalConnections = int(stats["totalConnections"]) ?? 0
            parsed.totalRequests = int(stats["totalRequests"]) ?? 0
            let responses = stats["responses"] as? [String: Any] ?? [:]
            parsed.responses2xx = int(responses["2xx"]) ?? 0
            parsed.responses3xx = int(responses["3xx"]) ?? 0
            parsed.responses4xx = int(responses["4xx"]) ?? 0
            parsed.responses5xx = int(responses["5xx"]) ?? 0
            status.stats = parsed
        }
        status.desiredDigest = string(root["desiredDigest"]) ?? ""
        return status
    }

    private static func string(_ value: Any?) -> String? {
        switch value {
        case nil: return nil
        case let text as String: return text
        case let some?: return String(describing: some)
        }
    }

    private static func int(_ value: Any?) -> Int? {
        if let number = value as? Int { return number }
        return string(value).flatMap { Int($0) }
    }
}

/// An ordered tree of plain values: one status document, written as YAML or as JSON.
public indirect enum StatusValue: Sendable {
    case text(String)
    case integer(Int)
    case boolean(Bool)
    case timestamp(Date)
    case list([StatusValue])
    case map([(String, StatusValue)])

    /// From the nested form of ``CanonicalFields`` (maps in key order, lists, typed leaves).
    init(_ nested: CanonicalFields.Nested) {
        switch nested {
        case .map(let pairs): self = .map(pairs.map { ($0.key, StatusValue($0.value)) })
        case .list(let items): self = .list(items.map(StatusValue.init))
        case .boolean(let boolean): self = .boolean(boolean)
        case .integer(let integer): self = .integer(integer)
        case .text(let text): self = .text(text)
        }
    }

    /// Block-style YAML, as Yams writes it by default (two-space indents, a list's items at its key's
    /// indent), written directly: Yams resolved a tag for every scalar with regular expressions, which was
    /// most of the 100 ms that writing 103 status files took on a cold start. Written as bytes: appending
    /// to a `String` piece by piece (and making each indent a new string) was two fifths of what is left.
    public var yaml: String {
        var out: [UInt8] = []
        out.reserveCapacity(2048)
        switch self {
        case .map(let pairs) where !pairs.isEmpty:
            Self.appendBlock(pairs, indent: 0, into: &out)
        case .list(let items) where !items.isEmpty:
            Self.appendBlock(items, indent: 0, into: &out)
        default:
            self.appendInline(into: &out)
            out.append(UInt8(ascii: "\n"))
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// A mapping's pairs, each on its own line at `indent` spaces.
    private static func appendBlock(_ pairs: [(String, StatusValue)], indent: Int, into out: inout [UInt8]) {
        for (index, (key, value)) in pairs.enumerated() {
            if index > 0 { appendSpaces(indent, into: &out) }
            StatusValue.text(key).appendInline(into: &out)
            out.append(UInt8(ascii: ":"))
            switch value {
            case .map(let nested) where !nested.isEmpty:
                out.append(UInt8(ascii: "\n"))
                appendSpaces(indent + 2, into: &out)
                appendBlock(nested, indent: indent + 2, into: &out)
            case .list(let items) where !items.isEmpty:
                out.append(UInt8(ascii: "\n"))
                appendSpaces(indent, into: &out)
                appendBlock(items, indent: indent, into: &out)
            default:
                out.append(UInt8(ascii: " "))
                value.appendInline(into: &out)
                out.append(UInt8(ascii: "\n"))
            }
        }
    }

    /// A sequence's items, each starting with `- ` at `indent` spaces; a mapping item continues two spaces in.
    private static func appendBlock(_ items: [StatusValue], indent: Int, into out: inout [UInt8]) {
        for (index, item) in items.enumerated() {
            if index > 0 { appendSpaces(indent, into: &out) }
            out.append(UInt8(ascii: "-"))
            out.append(UInt8(ascii: " "))
            if case .map(let pairs) = item, !pairs.isEmpty {
                appendBlock(pairs, indent: indent + 2, into: &out)
            } else {
                item.appendInline(into: &out)
                out.append(UInt8(ascii: "\n"))
            }
        }
    }

    private static func appendSpaces(_ count: Int, into out: inout [UInt8]) {
        out.append(contentsOf: repeatElement(UInt8(ascii: " "), count: count))
    }

    /// A scalar, or an empty or nested collection in flow style (`{}`, `[]`, `[a, b]`).
    private func appendInline(into out: inout [UInt8]) {
        switch self {
        case .text(let text):
            // Quoted when a plain scalar would read back as something else ("8080", "true", "null", "a: b").
            if Self.readsAsText(text) {
                out.append(contentsOf: text.utf8)
            } else {
                JSONValue.quote(text, into: &out)
            }
        case .integer(let value): out.append(contentsOf: String(value).utf8)
        case .boolean(let value): out.append(contentsOf: (value ? "true" : "false").utf8)
        case .timestamp(let date): out.append(contentsOf: ResourceStatus.timestamp(date).utf8)
        case .list(let items):
            out.append(UInt8(ascii: "["))
            for (index, item) in items.enumerated() {
                if index > 0 { out.append(contentsOf: ", ".utf8) }
                item.appendInline(into: &out)
            }
            out.append(UInt8(ascii: "]"))
        case .map(let pairs):
            out.append(UInt8(ascii: "{"))
            for (index, (key, value)) in pairs.enumerated() {
                if index > 0 { out.append(contentsOf: ", ".utf8) }
                StatusValue.text(key).appendInline(into: &out)
                out.append(contentsOf: ": ".utf8)
                value.appendInline(into: &out)
            }
            out.append(UInt8(ascii: "}"))
        }
    }

    /// Foundation values for `JSONSerialization`.
    public var jsonObject: Any {
        switch self {
        case .text(let text): return text
        case .integer(let value): return value
        case .boolean(let value): return value
        case .timestamp(let date): return ResourceStatus.timestamp(date)
        case .list(let items): return items.map(\.jsonObject)
        case .map(let pairs):
            var object: [String: Any] = [:]
            for (key, value) in pairs { object[key] = value.jsonObject }
            return object
        }
    }

    /// Whether a plain scalar reads back as this text: ASCII that starts with a letter, has no character
    /// that YAML reads as syntax in a plain scalar (`#`, flow indicators, quotes; a `:` only before a
    /// space or at the end: `web.yaml:12` stays plain), does not end in a space, and is no YAML keyword.
    /// Anything else is double-quoted, which is always safe.
    private static func readsAsText(_ text: String) -> Bool {
        let utf8 = text.utf8
        guard let first = utf8.first, (first | 0x20) >= UInt8(ascii: "a"), (first | 0x20) <= UInt8(ascii: "z"),
              utf8.last != UInt8(ascii: " ") else { return false }
        var previous: UInt8 = 0
        for byte in utf8 {
            switch byte {
            case UInt8(ascii: " ") where previous == UInt8(ascii: ":"):
                return false  // `key: value` inside a scalar
            case UInt8(ascii: "#"), UInt8(ascii: "{"), UInt8(ascii: "}"), UInt8(ascii: "["), UInt8(ascii: "]"),
                 UInt8(ascii: ","), UInt8(ascii: "&"), UInt8(ascii: "*"), UInt8(ascii: "!"), UInt8(ascii: "|"),
                 UInt8(ascii: ">"), UInt8(ascii: "'"), UInt8(ascii: "\""), UInt8(ascii: "%"), UInt8(ascii: "@"),
                 UInt8(ascii: "`"), UInt8(ascii: "\\"):
                return false  // YAML syntax in a plain scalar (a switch: a Set hashed every byte of every file)
            case 0x20...0x7e:
                break
            default:
                return false
            }
            previous = byte
        }
        if previous == UInt8(ascii: ":") { return false }
        return utf8.count > Self.longestKeyword || !Self.keywords.contains(text.lowercased())
    }

    private static let longestKeyword = 5
    private static let keywords: Set<String> = ["true", "false", "yes", "no", "on", "off", "null", "y", "n", "nan", "inf"]
}
