import NIOCore
import NIOPosix
import XCTest

@testable import ALBDataPlane

/// ``DataPlane/start(_:)-([ListenerConfig])``: listeners bound together, as a reconcile pass starts them.
final class BatchStartTests: DataPlaneTestCase {
    // One loop, so pooling is observable.
    override class var loopCount: Int { 1 }

    private func listener(_ name: String, port: Int = 0, _ servers: [BackendServer]) -> ListenerConfig {
        ListenerConfig(name: name, loadBalancerName: "lb", bindHost: "127.0.0.1", port: port, idleTimeout: .seconds(30),
                       requestTimeout: .seconds(30), groups: [BackendGroup(name: "g", weight: 100, servers: servers)])
    }

    /// A port another socket listens on, kept open until the test ends.
    private func takenPort() async throws -> (Channel, Int) {
        let channel = try await ServerBootstrap(group: try self.loopGroup)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .bind(host: "127.0.0.1", port: 0).get()
        let port = try XCTUnwrap(channel.localAddress?.port)
        return (channel, port)
    }

    func testAPortInUseFailsOnlyItsOwnListenerAndTheOthersServe() async throws {
        let a = try await backend("a")
        let (blocker, port) = try await takenPort()
        let servers = [BackendServer(host: "127.0.0.1", port: a.port)]
        let plane = try plane()
        let results = await plane.start([listener("one", servers), listener("busy", port: port, servers),
                                         listener("two", servers)])
        XCTAssertEqual(results.count, 3)
        guard case .failure(DataPlaneError.bindFailed(let address, let reason)) = results[1] else {
            return XCTFail("the listener on a taken port should fail to bind: \(results[1])")
        }
        XCTAssertEqual(address, "127.0.0.1:\(port)")
        XCTAssertTrue(reason.contains("Address already in use"), reason)
        XCTAssertEqual(plane.listenerKeys, ["one", "two"])
        for result in [results[0], results[2]] {
            let client = try await client(try result.get())
            let response = try await client.request(.GET, "/")
            XCTAssertEqual(response.status, 200)
            XCTAssertEqual(response.body, "a")
        }
        try await blocker.close()
    }

    func testListenersStartedTogetherShareTheirGroupsRoundRobinAndConnections() async throws {
        let a = try await backend("a"), b = try await backend("b"), c = try await backend("c"), d = try await backend("d")
        let first = BackendGroup(name: "first", weight: 100, servers: [BackendServer(host: "127.0.0.1", port: a.port),
                                                                      BackendServer(host: "127.0.0.1", port: b.port)])
        let second = BackendGroup(name: "second", weight: 100, servers: [BackendServer(host: "127.0.0.1", port: c.port),
                                                                        BackendServer(host: "127.0.0.1", port: d.port)])
        let plane = try plane()
        // Every other listener forwards to the other group: both groups outlive the batch, each as one
        // scheduler and one pool per server whatever order the binds finished in.
        let configs = (0..<12).map { index in
            var config = listener("l\(index)", [])
            config.groups = [index % 2 == 0 ? first : second]
            return config
        }
        let results = await plane.start(configs)
        var answers: [String] = []
        for result in results {
            let client = try await client(try result.get())
            answers.append(try await client.request(.GET, "/").body)
        }
        // One cursor per group, its listeners taking turns in it (one each would give a, c, a, c, ...).
        XCTAssertEqual(answers, ["a", "c", "b", "d", "a", "c", "b", "d", "a", "c", "b", "d"])
        for server in [a, b, c, d] {
            XCTAssertEqual(server.connections.value, 1, "one pooled connection per server, used by every listener")
        }
    }

    func testListenersOnOnePortBindInTheirOrder() async throws {
        let a = try await backend("a")
        let servers = [BackendServer(host: "127.0.0.1", port: a.port)]
        let (probe, port) = try await takenPort()
        try await probe.close()
        let plane = try plane()
        // Both want 127.0.0.1:port: the first one in the batch gets it, every time.
        let results = await plane.start([listener("first", port: port, servers), listener("second", port: port, servers)])
        XCTAssertEqual(try results[0].get(), "127.0.0.1:\(port)")
        guard case .failure(DataPlaneError.bindFailed) = results[1] else {
            return XCTFail("the second listener on the same port should fail to bind: \(results[1])")
        }
        XCTAssertEqual(plane.listenerKeys, ["first"])
    }
}
