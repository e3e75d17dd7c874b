import NIOCore
import NIOEmbedded
import XCTest

@testable import ALBDataPlane

/// A server group is one runtime however many listeners forward to it: one scheduler, one pool per server.
final class ServerGroupsTests: DataPlaneTestCase {
    // One loop, so pooling is observable.
    override class var loopCount: Int { 1 }

    private func listener(_ name: String, _ servers: [BackendServer], groupWeight: Int = 100,
                          requestTimeout: TimeAmount = .seconds(30)) -> ListenerConfig {
        ListenerConfig(name: name, loadBalancerName: "lb", bindHost: "127.0.0.1", port: 0, idleTimeout: .seconds(30),
                       requestTimeout: requestTimeout,
                       groups: [BackendGroup(name: "g", weight: groupWeight, servers: servers)])
    }

    /// A loop's pools are per server key; the last one asked for is remembered, but never past the pool's
    /// retirement (a server gone from every group, then back, gets a new pool).
    func testALoopsPoolIsFoundAgainAndARetiredOneIsNot() {
        let loop = EmbeddedEventLoop()
        let pools = BackendPools(eventLoop: loop)
        let server = BackendServer(host: "127.0.0.1", port: 1)
        let first = BalancedServer(server)
        let pool = pools.pool(for: first)
        XCTAssertTrue(pools.pool(for: first) === pool)
        let sameServerNewConfiguration = BalancedServer(server)
        XCTAssertTrue(pools.pool(for: sameServerNewConfiguration) === pool, "by key, not by the configuration's object")
        let other = BalancedServer(BackendServer(host: "127.0.0.1", port: 2))
        XCTAssertFalse(pools.pool(for: other) === pool)
        XCTAssertTrue(pools.pool(for: first) === pool)
        pools.retain([other.poolKey], drainTimeout: .seconds(1))
        XCTAssertFalse(pools.pool(for: first) === pool, "the retired pool is not handed out again")
        pools.closeAll()
        _ = try? loop.syncShutdownGracefully()
    }

    func testListenersForwardingToOneGroupShareItsRoundRobinAndItsConnections() async throws {
        let a = try await backend("a")
        let b = try await backend("b")
        let servers = [BackendServer(host: "127.0.0.1", port: a.port), BackendServer(host: "127.0.0.1", port: b.port)]
        let plane = try plane()
        // Different weights for the group in each listener: the listener's weight is not the group's.
        let first = try await client(try await plane.start(listener("one", servers, groupWeight: 100)))
        let second = try await client(try await plane.start(listener("two", servers, groupWeight: 50)))
        var answers: [String] = []
        for _ in 0..<3 {
            answers.append(try await first.request(.GET, "/").body)
            answers.append(try await second.request(.GET, "/").body)
        }
        // One cursor: the two listeners take turns in it (separate ones would give a, a, b, b, a, a).
        XCTAssertEqual(answers, ["a", "b", "a", "b", "a", "b"])
        XCTAssertEqual(a.connections.value, 1, "one pooled connection per server, used by both listeners")
        XCTAssertEqual(b.connections.value, 1)
    }

    func testAChangeToAListenerAloneKeepsItsGroupsStateAndAChangedGroupStartsAfresh() async throws {
        let a = try await backend("a")
        let b = try await backend("b")
        let c = try await backend("c")
        let servers = [BackendServer(host: "127.0.0.1", port: a.port), BackendServer(host: "127.0.0.1", port: b.port)]
        let plane = try plane()
        var config = listener("one", servers)
        let client = try await client(try await plane.start(config))
        let before = try await client.request(.GET, "/").body
        config.requestTimeout = .seconds(10)
        try plane.update(config)
        let after = try await client.request(.GET, "/").body
        XCTAssertEqual([before, after], ["a", "b"], "the round robin went on across the listener's update")

        config.groups[0].servers.append(BackendServer(host: "127.0.0.1", port: c.port))
        try plane.update(config)
        var answers: [String] = []
        for _ in 0..<3 { answers.append(try await client.request(.GET, "/").body) }
        XCTAssertEqual(answers, ["a", "b", "c"], "a new definition of the group, a new order")
    }

    func testAServerNoListenerForwardsToIsRetiredAndItsIdleConnectionsClose() async throws {
        let a = try await backend("a")
        let b = try await backend("b")
        let plane = try plane()
        var config = listener("one", [BackendServer(host: "127.0.0.1", port: a.port)])
        let client = try await client(try await plane.start(config))
        _ = try await client.request(.GET, "/")
        var idle = await plane.idleBackendConnections()
        XCTAssertEqual(idle, 1)
        config.groups[0].servers = [BackendServer(host: "127.0.0.1", port: b.port)]
        try plane.update(config)
        let answer = try await client.request(.GET, "/").body
        XCTAssertEqual(answer, "b")
        idle = await plane.idleBackendConnections()
        XCTAssertEqual(idle, 1, "a's idle connection closed when a left the group; b's is pooled")
    }
}
