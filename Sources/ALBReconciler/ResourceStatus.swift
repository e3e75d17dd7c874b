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

    public init(id: ResourceID, source: String) {
        self.id = id; self.source = source; generation = 0; observedGeneration = 0
        conditions = []; transitions = []; desiredDigest = ""
    }

    public func condition(_ type: String) -> Condition? { conditions.first { $0.type == type } }

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

    static func timestamp(_ date: Date) -> String { date.formatted(timestampFormat) }
    /// Yams resolves unquoted timestamps to `Date` already; anything else is parsed as ISO 8601 text.
    static func parseTimestamp(_ value: Any?) -> Date? {
        if let date = value as? Date { return date }
        return (value as? String).flatMap { try? timestampFormat.parse($0) }
    }

    /// Serialises in the field order of SPEC section 5.
    public func yaml() -> String {
        var pairs: [(Node, Node)] = [
            ("kind", Node(id.kind.rawValue)), ("name", Node(id.name)), ("source", Node(source)),
            ("generation", Node(String(generation))), ("observedGeneration", Node(String(observedGeneration))),
        ]
        if let state { pairs.append(("state", Node(state.rawValue))) }
        pairs.append(("conditions", Node(conditions.map { condition in
            Node([
                ("type", Node(condition.type)),
                ("status", Node(condition.status ? "True" : "False", Tag(.str), .doubleQuoted)),
                ("reason", Node(condition.reason)), ("message", Node(condition.message, Tag(.str), .doubleQuoted)),
                ("lastTransitionTime", Node(Self.timestamp(condition.lastTransitionTime))),
            ] as [(Node, Node)])
        })))
        if let live { pairs.append(("live", Self.node(from: live.nested))) }
        if let lastAttempt {
            pairs.append(("lastAttempt", Node([
                ("generation", Node(String(lastAttempt.generation))),
                ("error", Node(lastAttempt.error, Tag(.str), .doubleQuoted)),
                ("at", Node(Self.timestamp(lastAttempt.at))),
            ] as [(Node, Node)])))
        }
        if state != nil {
            pairs.append(("transitions", Node(transitions.map { transition in
                Node([
                    ("from", Node(transition.from.rawValue)), ("to", Node(transition.to.rawValue)),
                    ("at", Node(Self.timestamp(transition.at))), ("reason", Node(transition.reason)),
                ] as [(Node, Node)])
            })))
        }
        if let stats {
            pairs.append(("stats", Node([
                ("activeConnections", Node(String(stats.activeConnections))),
                ("totalConnections", Node(String(stats.totalConnections))),
                ("totalRequests", Node(String(stats.totalRequests))),
                ("responses", Node([
                    ("2xx", Node(String(stats.responses2xx))), ("3xx", Node(String(stats.responses3xx))),
                    ("4xx", Node(String(stats.responses4xx))), ("5xx", Node(String(stats.responses5xx))),
                ] as [(Node, Node)])),
            ] as [(Node, Node)])))
        }
        pairs.append(("desiredDigest", Node(desiredDigest)))
        return (try? Yams.serialize(node: Node(pairs))) ?? ""
    }

    private static func node(from value: Any) -> Node {
        switch value {
        case let dictionary as [String: Any]:
            return Node(dictionary.keys.sorted().map { (Node($0), node(from: dictionary[$0] ?? "")) })
        case let array as [Any]:
            return Node(array.map { node(from: $0) })
        default:
            // Always quoted strings: the live view is compared as text, "8080" must stay "8080".
            return Node(String(describing: value), Tag(.str), .doubleQuoted)
        }
    }

    /// Reads a status file back; nil when it is not one of ours (never throws on bad input).
    public static func parse(yaml text: String) -> ResourceStatus? {
        guard let root = (try? Yams.load(yaml: text)) as? [String: Any],
              let kindText = root["kind"] as? String, let kind = ResourceKind(rawValue: kindText),
              let name = root["name"] as? String else { return nil }
        var status = ResourceStatus(id: ResourceID(kind: kind, name: name), source: root["source"] as? String ?? "")
        status.generation = int(root["generation"]) ?? 0
        status.observedGeneration = int(root["observedGeneration"]) ?? 0
        status.state = (root["state"] as? String).flatMap(ListenerLifecycle.Phase.init(rawValue:))
        for item in root["conditions"] as? [[String: Any]] ?? [] {
            guard let type = item["type"] as? String else { continue }
            status.conditions.append(Condition(
                type: type, status: string(item["status"]) == "True", reason: string(item["reason"]) ?? "",
                message: string(item["message"]) ?? "",
                lastTransitionTime: parseTimestamp(item["lastTransitionTime"]) ?? Date()))
        }
        if let live = root["live"] { status.live = CanonicalFields(nested: live) }
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
