/// Server groups' active health checks: the reconciler says which groups are checked and how; the data
/// plane runs one probe per server per interval and every listener's balancer skips unhealthy servers.
extension DataPlane {
    /// A server group as the checker needs it.
    public struct CheckedGroup: Sendable, Equatable {
        public var name: String
        public var servers: [BackendServer]
        public var check: HealthCheckConfig

        public init(name: String, servers: [BackendServer], check: HealthCheckConfig) {
            self.name = name
            self.servers = servers
            self.check = check
        }
    }

    /// Runs exactly these groups' checks from now on (starting, changing and stopping probes as needed);
    /// groups not listed are not checked and their servers are in rotation.
    public func applyHealthChecks(_ groups: [CheckedGroup]) {
        var targets: [HealthKey: HealthChecker.Target] = [:]
        for group in groups {
            for server in group.servers {
                targets[HealthKey(group: group.name, host: server.host, port: server.port)] = HealthChecker.Target(
                    config: group.check, useTLS: server.useTLS, connectOnly: server.useHTTP2)
            }
        }
        self.healthChecker.apply(targets)
    }

    /// Requests in flight and sent so far to each of `servers`, in their order (for their group's status).
    public func serverLoad(_ servers: [BackendServer]) async -> [ServerLoad] {
        await self.serverGroups.load(of: servers)
    }

    /// Requests still in flight to each of `servers` since it left every group, and all it carried since
    /// (for its group's status while it drains).
    public func drainingServerLoad(_ servers: [BackendServer]) async -> [ServerLoad] {
        await self.serverGroups.drainingLoad(of: servers)
    }

    /// Each checked server of `group` with its health, reason and since when (for the group's status).
    public func serverHealth(group: String) -> [ServerHealthReport] {
        self.healthChecker.reports(group: group)
    }
}
