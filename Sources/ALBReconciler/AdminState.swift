import Foundation
import NIOConcurrencyHelpers

/// What the admin endpoint serves, published by the reconciler after each pass and stats refresh, so
/// answering a probe takes one short lock and never waits for a pass.
public struct AdminState: Sendable {
    /// The first pass has finished (until then `/readyz` is 503).
    public var firstPassDone = false
    /// SIGTERM or a takeover: the process drains and will exit (`/readyz` is 503 from then on).
    public var draining = false
    public var statuses: [ResourceStatus] = []

    public init() {}

    /// `/readyz`: ready once the first pass is done and every listener serves as its manifest asks:
    /// `Running`, or `Stopped` because it says `state: Stopped` (Synced). Otherwise the reasons, one per
    /// listener that is not, as an operator would grep them.
    public var readiness: (ready: Bool, reasons: [String]) {
        if self.draining { return (false, ["draining: the reconciler is stopping"]) }
        guard self.firstPassDone else { return (false, ["the first reconcile pass has not finished"]) }
        var reasons: [String] = []
        for status in self.statuses.sorted(by: { $0.id < $1.id }) where status.id.kind == .listener {
            let synced = status.condition("Synced")
            switch status.state {
            case .running?:
                continue
            case .stopped? where synced?.status == true:
                continue
            default:
                let state = status.state?.rawValue ?? "Pending"
                let why = [status.condition("Valid"), synced, status.condition("Ready")]
                    .compactMap { $0 }.first { !$0.status }
                reasons.append("listener \(status.id.name): \(state)"
                               + (why.map { " (\($0.reason)): \($0.message)" } ?? ""))
            }
        }
        return (reasons.isEmpty, reasons)
    }

    /// `/status`: the same JSON as `alb status -o json`.
    public var statusJSON: Data {
        ResourceStatus.json(of: self.statuses.sorted { $0.id < $1.id })
    }
}

/// The shared, published ``AdminState``.
public final class AdminStateBox: Sendable {
    private let box = NIOLockedValueBox(AdminState())

    public init() {}

    public var current: AdminState { self.box.withLockedValue { $0 } }

    public func startDraining() {
        self.box.withLockedValue { $0.draining = true }
    }

    func publish(statuses: [ResourceStatus], firstPassDone: Bool) {
        self.box.withLockedValue {
            $0.statuses = statuses
            $0.firstPassDone = $0.firstPassDone || firstPassDone
        }
    }
}

/// `--admin ADDR:PORT` as given on the command line: `127.0.0.1:9901`, `[::1]:9901`, `localhost:9901`.
public struct AdminAddress: Sendable, Equatable {
    public var host: String
    public var port: Int

    /// The address, or why `text` is not `HOST:PORT` with a port from 1 to 65535 (0: any free port).
    public static func parse(_ text: String) -> Result<AdminAddress, AdminAddressError> {
        let host: Substring, portText: Substring
        if text.hasPrefix("["), let close = text.firstIndex(of: "]") {
            host = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            guard rest.hasPrefix(":") else { return .failure(AdminAddressError("expected [IPv6]:PORT")) }
            portText = rest.dropFirst()
        } else {
            guard let colon = text.lastIndex(of: ":"), !text[..<colon].contains(":") else {
                return .failure(AdminAddressError("expected HOST:PORT, e.g. 127.0.0.1:9901"))
            }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
        }
        guard !host.isEmpty, let port = Int(portText), (0...65535).contains(port) else {
            return .failure(AdminAddressError("expected HOST:PORT with a port from 1 to 65535"))
        }
        return .success(AdminAddress(host: String(host), port: port))
    }

    /// 127.0.0.0/8, ::1 or `localhost`: the only hosts `--admin` takes without `--admin-allow-remote`.
    public var isLoopback: Bool {
        if self.host == "localhost" || self.host == "::1" { return true }
        let parts = self.host.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 4 && parts[0] == "127" && parts.allSatisfy { UInt8($0) != nil }
    }
}

public struct AdminAddressError: Error, Sendable, Equatable, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}

/// The admin endpoint's address as listeners must not claim it: a listener that wants the same port on
/// an overlapping host is refused with a clear reason instead of racing the admin endpoint for the bind.
public struct ReservedAddress: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// The same port on the same host, on a wildcard (`0.0.0.0`, `::`) on either side, or `localhost`
    /// against a loopback address.
    public func overlaps(host other: String, port: Int) -> Bool {
        guard port == self.port, port != 0 else { return false }
        let mine = Self.normalized(self.host), theirs = Self.normalized(other)
        let wildcards: Set<String> = ["0.0.0.0", "::", ""]
        return mine == theirs || wildcards.contains(mine) || wildcards.contains(theirs)
            || (Self.isLoopback(mine) && Self.isLoopback(theirs) && (mine == "localhost" || theirs == "localhost"))
    }

    public var description: String {
        self.host.contains(":") ? "[\(self.host)]:\(self.port)" : "\(self.host):\(self.port)"
    }

    private static func normalized(_ host: String) -> String {
        var host = host.lowercased()
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        if host == "::ffff:0.0.0.0" || host == "0:0:0:0:0:0:0:0" { return "::" }
        if host == "0:0:0:0:0:0:0:1" { return "::1" }
        return host
    }

    private static func isLoopback(_ host: String) -> Bool {
        host == "localhost" || host == "::1" || host.hasPrefix("127.")
    }
}
