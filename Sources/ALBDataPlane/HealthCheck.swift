import Atomics
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix

/// A server group's active health check (the manifest's `healthCheck`, validated and defaulted).
public struct HealthCheckConfig: Sendable, Hashable {
    public enum Method: String, Sendable, Hashable {
        case head = "HEAD"
        case get = "GET"
    }

    public var path: String
    public var method: Method
    /// Status classes that count as healthy: 2 for `http_2xx` and so on.
    public var statusClasses: Set<Int>
    public var interval: TimeAmount
    public var timeout: TimeAmount
    public var healthyThreshold: Int
    public var unhealthyThreshold: Int

    public init(path: String = "/", method: Method = .head, statusClasses: Set<Int> = [2, 3],
                interval: TimeAmount = .seconds(2), timeout: TimeAmount = .seconds(5),
                healthyThreshold: Int = 3, unhealthyThreshold: Int = 3) {
        self.path = path
        self.method = method
        self.statusClasses = statusClasses
        self.interval = interval
        self.timeout = timeout
        self.healthyThreshold = healthyThreshold
        self.unhealthyThreshold = unhealthyThreshold
    }
}

/// One server's health as its checks found it: a value type, so its transitions are tested without I/O.
///
/// A server starts `unchecked` and in rotation (like HAProxy's servers, which start up): adding a server
/// does not wait for checks. `unhealthyThreshold` failures in a row take it out of rotation;
/// `healthyThreshold` successes in a row bring an unhealthy server back, and the first success confirms
/// an unchecked one.
public struct HealthState: Sendable, Equatable {
    public enum Health: String, Sendable {
        case unchecked = "Unchecked"
        case healthy = "Healthy"
        case unhealthy = "Unhealthy"
    }

    public private(set) var health = Health.unchecked
    /// The last failed check's reason ("connection refused", "status 503", "timed out after 5 s").
    public private(set) var reason = ""
    /// When `health` last changed.
    public private(set) var since: Date
    private var successesInARow = 0
    private var failuresInARow = 0

    public init(since: Date) {
        self.since = since
    }

    /// Whether requests may go to the server.
    public var inRotation: Bool { self.health != .unhealthy }

    /// Records one check; returns whether `health` changed.
    @discardableResult
    public mutating func record(success: Bool, reason: String = "", healthyThreshold: Int, unhealthyThreshold: Int,
                                at now: Date) -> Bool {
        let before = self.health
        if success {
            self.successesInARow += 1
            self.failuresInARow = 0
            if self.health == .unchecked || (self.health == .unhealthy && self.successesInARow >= healthyThreshold) {
                self.health = .healthy
            }
        } else {
            self.failuresInARow += 1
            self.successesInARow = 0
            self.reason = reason
            if self.health != .unhealthy && self.failuresInARow >= unhealthyThreshold {
                self.health = .unhealthy
            }
        }
        if self.health != before { self.since = now }
        return self.health != before
    }
}

/// A server of a server group as the balancer and the checker share it: whether it is in rotation is an
/// atomic the balancer reads per pick (no lock on the request path); the full state is for status files.
final class ServerHealth: Sendable {
    private let rotation = ManagedAtomic<Bool>(true)
    private let state: NIOLockedValueBox<HealthState>

    init() {
        self.state = NIOLockedValueBox(HealthState(since: Date()))
    }

    var inRotation: Bool { self.rotation.load(ordering: .relaxed) }

    var current: HealthState { self.state.withLockedValue { $0 } }

    func record(success: Bool, reason: String, config: HealthCheckConfig, at now: Date) -> Bool {
        let (changed, inRotation) = self.state.withLockedValue { state in
            let changed = state.record(success: success, reason: reason, healthyThreshold: config.healthyThreshold,
                                       unhealthyThreshold: config.unhealthyThreshold, at: now)
            return (changed, state.inRotation)
        }
        self.rotation.store(inRotation, ordering: .relaxed)
        return changed
    }

    /// Checks were switched off: back in rotation, unchecked.
    func reset() {
        self.state.withLockedValue { $0 = HealthState(since: Date()) }
        self.rotation.store(true, ordering: .relaxed)
    }
}

/// A server of a group, as health is kept: per group, since two groups may check one server differently.
struct HealthKey: Hashable, Sendable {
    var group: String
    var host: String
    var port: Int
}

/// A server's health for its group's status file.
public struct ServerHealthReport: Sendable, Equatable {
    public var host: String
    public var port: Int
    public var health: HealthState.Health
    public var reason: String
    public var since: Date
}

/// Runs the active checks: one probe per server of each checked group per interval, whatever the number of
/// listeners that forward to the group or their event loops, and keeps every group server's
/// ``ServerHealth``, which balancers look up when a configuration is built (created on first use, so the
/// order in which a listener and its group's checks are set up does not matter).
final class HealthChecker: Sendable {
    /// What a check needs of a server beyond its key.
    struct Target: Hashable, Sendable {
        var config: HealthCheckConfig
        var useTLS: Bool
        /// gRPC groups (h2c): the check is a TCP connect, an HTTP/1.1 request would not be understood.
        var connectOnly: Bool
    }

    private let group: any EventLoopGroup
    private let servers = NIOLockedValueBox<[HealthKey: ServerHealth]>([:])
    private let probes = NIOLockedValueBox<[HealthKey: (target: Target, task: RepeatedTask)]>([:])

    init(group: any EventLoopGroup) {
        self.group = group
    }

    func health(_ key: HealthKey) -> ServerHealth {
        self.servers.withLockedValue { servers in
            if let existing = servers[key] { return existing }
            let created = ServerHealth()
            servers[key] = created
            return created
        }
    }

    /// The checks that should run: starts new ones, restarts changed ones, stops the rest (their servers
    /// go back in rotation as unchecked).
    func apply(_ targets: [HealthKey: Target]) {
        var stopped: [(HealthKey, RepeatedTask)] = []
        var started: [HealthKey: Target] = [:]
        self.probes.withLockedValue { probes in
            for (key, probe) in probes where targets[key] != probe.target {
                stopped.append((key, probe.task))
                probes[key] = nil
            }
            for (key, target) in targets where probes[key] == nil {
                started[key] = target
            }
        }
        for (key, task) in stopped {
            task.cancel()
            if targets[key] == nil { self.health(key).reset() }
        }
        for (key, target) in started {
            let task = self.schedule(key, target)
            self.probes.withLockedValue { $0[key] = (target, task) }
        }
        // Servers no group checks any more: forget them. A balancer built before this still holds its
        // object, reset above to unchecked and in rotation, until the pass gives its listener a new one.
        self.servers.withLockedValue { servers in
            servers = servers.filter { targets[$0.key] != nil }
        }
    }

    func reports(group name: String) -> [ServerHealthReport] {
        let entries = self.servers.withLockedValue { $0.filter { $0.key.group == name } }
        return entries.map { key, health in
            let state = health.current
            return ServerHealthReport(host: key.host, port: key.port, health: state.health, reason: state.reason,
                                      since: state.since)
        }.sorted { ($0.host, $0.port) < ($1.host, $1.port) }
    }

    func stopAll() {
        let tasks = self.probes.withLockedValue { probes -> [RepeatedTask] in
            defer { probes.removeAll() }
            return probes.values.map(\.task)
        }
        for task in tasks { task.cancel() }
    }

    private func schedule(_ key: HealthKey, _ target: Target) -> RepeatedTask {
        let health = self.health(key)
        let loop = self.group.next()
        return loop.scheduleRepeatedAsyncTask(initialDelay: .zero, delay: target.config.interval) { _ in
            HealthProbe.run(key: key, target: target, on: loop).map { outcome in
                _ = health.record(success: outcome.success, reason: outcome.reason, config: target.config, at: Date())
            }
        }
    }
}

/// One check of one server: connect (within the check's timeout), send `METHOD path HTTP/1.1` with
/// `Host: host:port` and `Connection: close`, read the status line; the whole check also ends at the
/// timeout. Never fails: the outcome says why a check did not pass.
enum HealthProbe {
    struct Outcome: Sendable {
        var success: Bool
        var reason: String
    }

    static func run(key: HealthKey, target: HealthChecker.Target, on loop: any EventLoop) -> EventLoopFuture<Outcome> {
        let config = target.config
        let status = loop.makePromise(of: Int.self)
        let bootstrap = ClientBootstrap(group: loop)
            .connectTimeout(config.timeout)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if target.connectOnly { return }
                    if target.useTLS, let tls = try? BackendTLS.handler(for: key.host) {
                        try channel.pipeline.syncOperations.addHandler(tls)
                    }
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(StatusLineReader(status: status))
                }
            }
        let connected = bootstrap.connect(server: key.host, port: key.port)
        let deadline = loop.scheduleTask(in: config.timeout) {
            status.fail(HealthCheckTimeout())
        }
        connected.whenComplete { result in
            switch result {
            case .success(let channel):
                if target.connectOnly {
                    status.succeed(200)
                    channel.close(promise: nil)
                    return
                }
                var headers = HTTPHeaders()
                headers.add(name: "host", value: Self.hostHeader(key))
                headers.add(name: "connection", value: "close")
                headers.add(name: "user-agent", value: "alb-health-check")
                let method: HTTPMethod = config.method == .get ? .GET : .HEAD
                channel.write(HTTPClientRequestPart.head(HTTPRequestHead(version: .http1_1, method: method,
                                                                         uri: config.path, headers: headers)),
                              promise: nil)
                channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
                status.futureResult.whenComplete { _ in channel.close(promise: nil) }
            case .failure(let error):
                status.fail(error)
            }
        }
        return status.futureResult.map { code in
            deadline.cancel()
            if config.statusClasses.contains(code / 100) { return Outcome(success: true, reason: "") }
            return Outcome(success: false, reason: "status \(code)")
        }.recover { error in
            deadline.cancel()
            return Outcome(success: false, reason: Self.reason(error, timeout: config.timeout))
        }
    }

    static func hostHeader(_ key: HealthKey) -> String {
        key.host.contains(":") ? "[\(key.host)]:\(key.port)" : "\(key.host):\(key.port)"
    }

    /// A short reason for status files and `alb status`, not NIO's full error text.
    static func reason(_ error: Error, timeout: TimeAmount) -> String {
        let seconds = timeout.nanoseconds / 1_000_000_000
        if error is HealthCheckTimeout { return "no response within \(seconds) s" }
        if case ChannelError.connectTimeout = error { return "connect timed out after \(seconds) s" }
        let text = String(describing: error)
        if text.localizedCaseInsensitiveContains("refused") { return "connection refused" }
        if text.localizedCaseInsensitiveContains("reset") { return "connection reset" }
        if error is HealthCheckClosed { return "closed before a response" }
        return String(text.prefix(120))
    }
}

struct HealthCheckTimeout: Error {}
struct HealthCheckClosed: Error {}

/// Completes a check with the response's status code, or fails it when the connection ends first.
private final class StatusLineReader: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart

    private let status: EventLoopPromise<Int>

    init(status: EventLoopPromise<Int>) {
        self.status = status
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head(let head) = self.unwrapInboundIn(data) {
            self.status.succeed(Int(head.status.code))
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.status.fail(HealthCheckClosed())
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        self.status.fail(error)
        context.close(promise: nil)
    }
}
