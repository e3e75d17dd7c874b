import Foundation
import NIOCore
import NIOEmbedded
import NIOPosix
import XCTest

@testable import ALBDataPlane

final class HealthCheckTests: XCTestCase {
    private let t0 = Date(timeIntervalSince1970: 1_000_000)

    private func record(_ state: inout HealthState, _ results: [Bool], from start: Int = 0) -> [HealthState.Health] {
        results.enumerated().map { offset, success in
            state.record(success: success, reason: success ? "" : "status 503", healthyThreshold: 3, unhealthyThreshold: 2,
                         at: self.t0 + Double(start + offset))
            return state.health
        }
    }

    func testThresholdsMoveAServerOutOfRotationAndBack() {
        var state = HealthState(since: t0)
        XCTAssertEqual(state.health, .unchecked)
        XCTAssertTrue(state.inRotation, "an unchecked server takes traffic")
        XCTAssertEqual(record(&state, [true]), [.healthy], "the first success confirms an unchecked server")
        XCTAssertEqual(record(&state, [false, true, false, false], from: 1), [.healthy, .healthy, .healthy, .unhealthy],
                       "two failures in a row, not two failures")
        XCTAssertFalse(state.inRotation)
        XCTAssertEqual(state.reason, "status 503")
        XCTAssertEqual(state.since, t0 + 4)
        XCTAssertEqual(record(&state, [true, true, false, true, true, true], from: 5),
                       [.unhealthy, .unhealthy, .unhealthy, .unhealthy, .unhealthy, .healthy])
        XCTAssertEqual(state.since, t0 + 10)
    }

    func testAnUncheckedServerThatNeverAnswersGoesOutAfterTheUnhealthyThreshold() {
        var state = HealthState(since: t0)
        XCTAssertEqual(record(&state, [false, false]), [.unchecked, .unhealthy])
    }

    func testBalancersSkipUnhealthyServersAndGive503WhenNoneIsLeft() throws {
        let checker = HealthChecker(group: EmbeddedEventLoop())
        let a = BackendServer(host: "127.0.0.1", port: 9001), b = BackendServer(host: "127.0.0.1", port: 9002)
        let config = HealthCheckConfig(healthyThreshold: 2, unhealthyThreshold: 2)
        for scheduling in [Scheduling.weightedRoundRobin, .weightedLeastRequests, .sourceIPHash] {
            let group = BackendGroup(name: "g-\(scheduling)", servers: [a, b], scheduling: scheduling, healthCheck: config)
            let balancer = Balancer([group], health: { checker.health($0) })
            let healthOfA = checker.health(HealthKey(group: group.name, host: a.host, port: a.port))
            let healthOfB = checker.health(HealthKey(group: group.name, host: b.host, port: b.port))
            for _ in 0..<2 { _ = healthOfA.record(success: false, reason: "connection refused", config: config, at: t0) }
            for client in 0..<10 {
                let picked = try XCTUnwrap(balancer.pickBalanced(clientIP: "10.0.0.\(client)"))
                XCTAssertEqual(picked.server, b, "\(scheduling)")
                picked.requestFinished()
            }
            for _ in 0..<2 { _ = healthOfB.record(success: false, reason: "status 500", config: config, at: t0) }
            XCTAssertNil(balancer.pickBalanced(clientIP: "10.0.0.1"), "\(scheduling): all unhealthy, 503 at once")
            XCTAssertEqual(checker.reports(group: group.name).map(\.reason), ["connection refused", "status 500"])
        }
    }

    func testAProbeOfAClosedPortReportsConnectionRefused() throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { try? group.syncShutdownGracefully() }
        let (socket, port) = try refusingLoopbackSocket()
        defer { close(socket) }
        let outcome = try HealthProbe.run(
            key: HealthKey(group: "g", host: "127.0.0.1", port: port),
            target: HealthChecker.Target(config: HealthCheckConfig(timeout: .seconds(2)), useTLS: false, connectOnly: false),
            on: group.next()).wait()
        XCTAssertFalse(outcome.success)
        XCTAssertEqual(outcome.reason, "connection refused")
    }
}
