import NIOCore
import NIOPosix
import XCTest

@testable import ALBDataPlane

/// The per-loop counters and their sums at a scrape, over two event loops and real sockets.
final class MetricsTests: DataPlaneTestCase {
    override class var loopCount: Int { 2 }

    private func config(name: String = "web", key: String? = nil, servers: [BackendServer],
                        limits: EdgeLimits = EdgeLimits()) -> ListenerConfig {
        var config = ListenerConfig(
            name: name, loadBalancerName: "lb", bindHost: "127.0.0.1", port: 0, idleTimeout: .seconds(30),
            requestTimeout: .seconds(30), headers: HeaderOptions(), clientIP: nil,
            groups: [BackendGroup(name: "g", weight: 100, servers: servers)], limits: limits)
        if let key { config.key = key }
        return config
    }

    func testHistogramBucketsAreUpperBoundsInclusive() {
        var histogram = FixedBucketHistogram()
        histogram.observe(.milliseconds(5))     // le 0.005
        histogram.observe(.milliseconds(6))     // le 0.01
        histogram.observe(.seconds(11))         // +Inf
        histogram.observe(.nanoseconds(-3))     // clock oddities count as 0
        XCTAssertEqual(histogram.count, 4)
        XCTAssertEqual(histogram.cumulative.first, 2)
        XCTAssertEqual(histogram.cumulative[1], 3)
        XCTAssertEqual(histogram.cumulative.last, 4)
        XCTAssertEqual(histogram.sumNanoseconds, 5_000_000 + 6_000_000 + 11_000_000_000)
    }

    func testCountersAreSummedOverEveryLoopAndConnection() async throws {
        let backend = try await backend("a")
        let server = BackendServer(host: "127.0.0.1", port: backend.port)
        let dataPlane = try self.plane()
        let address = try await dataPlane.start(config(servers: [server]))
        // Several connections: with two loops, both get some (accepts alternate between loops).
        for _ in 0..<4 {
            let client = try await client(address)
            for _ in 0..<3 { _ = try await client.request(.GET, "/") }
            await client.close()
        }
        let metrics = await dataPlane.metrics()
        let web = try XCTUnwrap(metrics.listeners.first { $0.name == "web" })
        XCTAssertEqual(web.counters.totalConnections, 4)
        XCTAssertEqual(web.counters.totalRequests, 12)
        XCTAssertEqual(web.counters.responses(protocol: .http1, statusClass: 2), 12)
        XCTAssertEqual(web.counters.requestDuration.count, 12)
        XCTAssertGreaterThan(web.counters.receivedBytes, 12 * 16)
        XCTAssertGreaterThan(web.counters.sentBytes, 12 * 17)
        let upstream = try XCTUnwrap(metrics.servers.first { $0.server == server.address })
        XCTAssertEqual(upstream.group, "g")
        XCTAssertEqual(upstream.health, "Unchecked")
        XCTAssertNil(upstream.activeRequests)  // Wrr does not count requests in flight
        XCTAssertEqual(upstream.upstream.duration.count, 12)
        XCTAssertEqual(upstream.upstream.connectFailures, 0)
        // The status file's stats are the same sums.
        let stats = await dataPlane.stats(key: "web")
        XCTAssertEqual(stats?.totalRequests, 12)
        XCTAssertEqual(stats?.responses2xx, 12)
    }

    func testStatsOfManyListenersAtOnceAreEachOnesOwnSums() async throws {
        let backend = try await backend("a")
        let server = BackendServer(host: "127.0.0.1", port: backend.port)
        let dataPlane = try self.plane()
        var addresses: [String: String] = [:]
        for name in ["one", "two", "three"] {
            addresses[name] = try await dataPlane.start(config(name: name, key: name, servers: [server]))
        }
        // Several connections each (both loops get some), and a different number of requests per listener.
        for (name, requests) in [("one", 1), ("two", 2)] {
            for _ in 0..<3 {
                let client = try await client(try XCTUnwrap(addresses[name]))
                for _ in 0..<requests { _ = try await client.request(.GET, "/") }
                await client.close()
            }
        }
        let all = await dataPlane.stats(keys: ["one", "two", "three", "gone"])
        XCTAssertEqual(Set(all.keys), ["one", "two", "three"])
        XCTAssertEqual(all["one"]?.totalRequests, 3)
        XCTAssertEqual(all["one"]?.totalConnections, 3)
        XCTAssertEqual(all["two"]?.totalRequests, 6)
        XCTAssertEqual(all["two"]?.responses2xx, 6)
        XCTAssertEqual(all["three"], ListenerStats())
        for name in ["one", "two", "three"] {
            // The sums, not the live gauge: a client's close may reach the server between the two reads.
            var alone = await dataPlane.stats(key: name)
            alone?.activeConnections = all[name]?.activeConnections ?? 0
            XCTAssertEqual(alone, all[name])
        }
    }

    func testConnectFailuresAndEdgeRefusalsAreCountedByReason() async throws {
        let dead = BackendServer(host: "127.0.0.1", port: try refusingPort())
        let dataPlane = try self.plane()
        let address = try await dataPlane.start(config(servers: [dead]))
        let client = try await client(address)
        let response = try await client.request(.GET, "/")
        XCTAssertEqual(response.status, 502)
        let raw = try await rawExchange(address, "GET / HTTP/1.1\r\nHost: h\r\nX: \u{1}\r\n\r\n", group: try self.loopGroup)
        XCTAssertTrue(raw.text.hasPrefix("HTTP/1.1 400"))
        let metrics = await dataPlane.metrics()
        let web = try XCTUnwrap(metrics.listeners.first)
        XCTAssertEqual(web.counters.rejections(.badRequest), 1)
        XCTAssertEqual(web.counters.rejections(.connectionLimit), 0)
        XCTAssertEqual(web.counters.responses(protocol: .http1, statusClass: 5), 1)
        XCTAssertEqual(web.counters.responses(protocol: .http1, statusClass: 4), 1)
        XCTAssertEqual(metrics.servers.first?.upstream.connectFailures, 1)
        XCTAssertEqual(metrics.servers.first?.upstream.duration.count, 0)
    }

    func testTheConnectionCapAndOversizedHeadsAreRejectionsWithTheirReasons() async throws {
        let backend = try await backend("a")
        let dataPlane = try self.plane()
        let address = try await dataPlane.start(
            config(servers: [BackendServer(host: "127.0.0.1", port: backend.port)], limits: EdgeLimits(maxConnections: 1)))
        let first = try await client(address)
        _ = try await first.request(.GET, "/")
        let second = try await client(address)
        let closed = await waitForClose(second.channel, timeout: .seconds(2))
        XCTAssertTrue(closed)
        await first.close()
        try await Task.sleep(nanoseconds: 200_000_000)
        let oversized = "GET / HTTP/1.1\r\nHost: h\r\nX: " + String(repeating: "a", count: 70_000) + "\r\n\r\n"
        let raw = try await rawExchange(address, oversized, group: try self.loopGroup)
        XCTAssertTrue(raw.text.hasPrefix("HTTP/1.1 431"), raw.text)
        let metrics = await dataPlane.metrics()
        let web = try XCTUnwrap(metrics.listeners.first)
        XCTAssertEqual(web.counters.rejections(.connectionLimit), 1)
        XCTAssertEqual(web.counters.rejections(.headersTooLarge), 1)
        XCTAssertEqual(web.counters.rejections(.badRequest), 0)
        XCTAssertEqual(web.counters.totalConnections, 2, "the capped connection is not an accepted one")
    }

    func testServerHealthIsOneOfThreeStates() async throws {
        let backend = try await backend("a")
        let live = BackendServer(host: "127.0.0.1", port: backend.port)
        let dead = BackendServer(host: "127.0.0.1", port: try refusingPort())
        let check = HealthCheckConfig(interval: .milliseconds(50), timeout: .milliseconds(500), healthyThreshold: 2,
                                      unhealthyThreshold: 2)
        var config = config(servers: [live, dead])
        config.groups = [BackendGroup(name: "g", weight: 100, servers: [live, dead], healthCheck: check)]
        let dataPlane = try self.plane()
        dataPlane.applyHealthChecks([DataPlane.CheckedGroup(name: "g", servers: [live, dead], check: check)])
        _ = try await dataPlane.start(config)
        var health: [String: String] = [:]
        for _ in 0..<100 {
            health = Dictionary(uniqueKeysWithValues: await dataPlane.metrics().servers.map { ($0.server, $0.health) })
            if health[dead.address] == "Unhealthy" && health[live.address] == "Healthy" { break }
            try await Task.sleep(nanoseconds: 50_000_000)
        }
        XCTAssertEqual(health[live.address], "Healthy")
        XCTAssertEqual(health[dead.address], "Unhealthy")
    }

    func testWlcGroupsReportTheirRequestsInFlight() async throws {
        let backend = try await backend("a")
        let server = BackendServer(host: "127.0.0.1", port: backend.port)
        var config = config(servers: [server])
        config.groups = [BackendGroup(name: "g", weight: 100, servers: [server], scheduling: .weightedLeastRequests)]
        let dataPlane = try self.plane()
        let address = try await dataPlane.start(config)
        let client = try await client(address)
        async let slow = client.request(.GET, "/slow")
        var inFlight: Int?
        for _ in 0..<100 {
            inFlight = await dataPlane.metrics().servers.first?.activeRequests
            if inFlight == 1 { break }
            try await Task.sleep(nanoseconds: 20_000_000)
        }
        XCTAssertEqual(inFlight, 1)
        _ = try await slow
        let after = await dataPlane.metrics().servers.first
        XCTAssertEqual(after?.activeRequests, 0)
        XCTAssertEqual(after?.upstream.duration.count, 1)
        XCTAssertGreaterThan(after?.upstream.duration.sumNanoseconds ?? 0, 2_500_000_000, "/slow answers after 3 s")
    }

    func testARetiredInstanceKeepsItsCountsInTheListenersSums() async throws {
        let backend = try await backend("a")
        let server = BackendServer(host: "127.0.0.1", port: backend.port)
        let dataPlane = try self.plane(drainTimeout: .milliseconds(200))
        let address = try await dataPlane.start(config(key: "web#1", servers: [server]))
        let first = try await client(address)
        for _ in 0..<3 { _ = try await first.request(.GET, "/") }
        await first.close()
        // A replacement on the same socket, then the old instance drains and closes.
        _ = try dataPlane.handOver(from: "web#1", to: config(key: "web#2", servers: [server]))
        await dataPlane.drain(key: "web#1")
        let second = try await client(address)
        for _ in 0..<2 { _ = try await second.request(.GET, "/") }
        let deadline = NIODeadline.now() + .seconds(5)
        while dataPlane.drainingCount > 0 && NIODeadline.now() < deadline {
            try await Task.sleep(nanoseconds: 20_000_000)
        }
        XCTAssertEqual(dataPlane.drainingCount, 0)
        let metrics = await dataPlane.metrics()
        XCTAssertEqual(metrics.listeners.count, 1)
        XCTAssertEqual(metrics.listeners.first?.counters.totalRequests, 5)
        XCTAssertEqual(metrics.servers.first?.upstream.duration.count, 5)
        // The status file shows the serving instance's own counts, as before.
        let stats = await dataPlane.stats(key: "web#2")
        XCTAssertEqual(stats?.totalRequests, 2)
    }
}
