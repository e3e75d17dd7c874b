import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import XCTest

@testable import ALBDataPlane

/// Idle keep-alive connections whose sockets wait off their channels (``ParkedConnections``), over real
/// sockets: what a client sees of it is nothing, which is what these check, with the data plane's counts.
final class ParkedConnectionsTests: DataPlaneTestCase {
    override class var loopCount: Int { 2 }

    private func config(_ backend: TestBackend, idleTimeout: TimeAmount = .seconds(30),
                        limits: EdgeLimits = EdgeLimits()) -> ListenerConfig {
        ListenerConfig(name: "web", loadBalancerName: "lb", bindHost: "127.0.0.1", port: 0,
                       idleTimeout: idleTimeout, requestTimeout: .seconds(30),
                       groups: [BackendGroup(name: "g", servers: [BackendServer(host: "127.0.0.1", port: backend.port)])],
                       limits: limits)
    }

    /// A data plane that parks connections idle for 100 ms, serving `config`.
    private func start(_ config: ListenerConfig, drainTimeout: TimeAmount = .seconds(30)) async throws -> (DataPlane, String) {
        let plane = try self.plane(drainTimeout: drainTimeout, parkIdleConnectionsAfter: .milliseconds(100))
        return (plane, try await plane.start(config))
    }

    /// A client of `address` that made a request and whose connection then parked.
    private func parkedClient(_ plane: DataPlane, _ address: String, file: StaticString = #filePath,
                              line: UInt = #line) async throws -> TestClient {
        let client = try await client(address)
        let before = plane.parkedConnections
        _ = try await client.request(.GET, "/")
        let parked = await waitUntil { plane.parkedConnections == before + 1 }
        XCTAssertTrue(parked, "idle past the delay", file: file, line: line)
        return client
    }

    private func waitUntil(_ condition: () async -> Bool) async -> Bool {
        for _ in 0..<150 {
            if await condition() { return true }
            try? await Task.sleep(nanoseconds: 20_000_000)
        }
        return false
    }

    func testAParkedConnectionServesItsNextRequestsAndStaysOneConnection() async throws {
        let backend = try await backend("a")
        let (plane, address) = try await start(config(backend))
        let client = try await client(address)
        let first = try await client.request(.GET, "/")
        XCTAssertEqual(first.body, "a")
        let parked = await waitUntil { plane.parkedConnections == 1 }
        XCTAssertTrue(parked, "idle past the delay")
        let open = await plane.stats(key: "web")?.activeConnections
        XCTAssertEqual(open, 1, "a parked connection is still open")
        for round in 1...3 {
            let response = try await client.request(.GET, "/")
            XCTAssertEqual(response.body, "a", "request \(round + 1), after parking")
            XCTAssertEqual(plane.parkedConnections, 0)
            let parkedAgain = await waitUntil { plane.parkedConnections == 1 }
            XCTAssertTrue(parkedAgain)
        }
        let maybeStats = await plane.stats(key: "web")
        let stats = try XCTUnwrap(maybeStats)
        XCTAssertEqual(stats.totalConnections, 1, "resuming is not a new connection")
        XCTAssertEqual(stats.totalRequests, 4)
        XCTAssertEqual(stats.activeConnections, 1)
    }

    func testAParkedConnectionClosesAtItsIdleTimeout() async throws {
        let backend = try await backend("a")
        let (plane, address) = try await start(config(backend, idleTimeout: .milliseconds(700)))
        let asked = NIODeadline.now()
        let client = try await parkedClient(plane, address)
        XCTAssertTrue(client.channel.isActive)
        let closed = await waitForClose(client.channel, timeout: .seconds(3))
        XCTAssertTrue(closed)
        XCTAssertGreaterThanOrEqual(NIODeadline.now() - asked, .milliseconds(700), "not before its idle timeout")
        XCTAssertEqual(plane.parkedConnections, 0)
        let open = await plane.stats(key: "web")?.activeConnections
        XCTAssertEqual(open, 0)
    }

    func testAClientThatClosesWhileParkedIsForgotten() async throws {
        let backend = try await backend("a")
        let (plane, address) = try await start(config(backend))
        let client = try await parkedClient(plane, address)
        await client.close()
        let forgotten = await waitUntil { plane.parkedConnections == 0 }
        XCTAssertTrue(forgotten)
        let uncounted = await waitUntil { await plane.stats(key: "web")?.activeConnections == 0 }
        XCTAssertTrue(uncounted)
    }

    func testParkedConnectionsCountAgainstTheConnectionCap() async throws {
        let backend = try await backend("a")
        let (plane, address) = try await start(config(backend, limits: EdgeLimits(maxConnections: 1)))
        let first = try await parkedClient(plane, address)
        let second = try await client(address)
        let refused = await waitForClose(second.channel, timeout: .seconds(2))
        XCTAssertTrue(refused, "the parked connection holds the one place")
        let served = try await first.request(.GET, "/")
        XCTAssertEqual(served.body, "a")
    }

    func testADrainClosesParkedConnectionsAtOnce() async throws {
        let backend = try await backend("a")
        let (plane, address) = try await start(config(backend), drainTimeout: .seconds(10))
        let client = try await parkedClient(plane, address)
        await plane.drain(key: "web")
        let closed = await waitForClose(client.channel, timeout: .seconds(1))
        XCTAssertTrue(closed, "an idle connection closes at once on a drain, parked or not")
        XCTAssertEqual(plane.parkedConnections, 0)
        let retired = await waitUntil { plane.drainingCount == 0 }
        XCTAssertTrue(retired, "nothing left for the drain to wait for")
    }

    func testAStopClosesParkedConnections() async throws {
        let backend = try await backend("a")
        let (plane, address) = try await start(config(backend))
        let client = try await parkedClient(plane, address)
        await plane.stop(key: "web")
        let closed = await waitForClose(client.channel, timeout: .seconds(1))
        XCTAssertTrue(closed)
        XCTAssertEqual(plane.parkedConnections, 0)
    }

    func testAfterATakeoverAParkedConnectionGetsItsLastRequest() async throws {
        let a = try await backend("a")
        let (old, address) = try await start(config(a), drainTimeout: .seconds(10))
        let idle = try await parkedClient(old, address)
        let exported = await old.exportListeningSockets()
        let new = try plane(drainTimeout: .seconds(10))
        new.inherit(exported)
        _ = try await new.start(config(a))
        await old.stopAccepting()
        async let drained: Void = old.drainAfterHandOff(lastRequestWindow: .seconds(2))
        try await Task.sleep(nanoseconds: 300_000_000)
        XCTAssertEqual(old.parkedConnections, 0, "back on a channel for its last request")
        let last = try await idle.request(.GET, "/")
        XCTAssertEqual(last.body, "a")
        XCTAssertEqual(last.headers["connection"], ["close"])
        let closed = await waitForClose(idle.channel, timeout: .seconds(2))
        XCTAssertTrue(closed)
        await drained
    }
}
