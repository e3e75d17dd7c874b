@testable import ALBDataPlane
import NIOConcurrencyHelpers
import XCTest

final class WeightedScheduleTests: XCTestCase {
    func testOnePeriodFollowsSmoothWeightedRoundRobin() {
        let schedule = WeightedSchedule([(element: "a", weight: 30), (element: "b", weight: 10), (element: "c", weight: 0)])
        XCTAssertEqual((0..<8).compactMap { _ in schedule.next() }, ["a", "a", "b", "a", "a", "a", "b", "a"])
    }

    func testAllZeroWeightsPickNothing() {
        XCTAssertNil(WeightedSchedule<String>([(element: "a", weight: 0)]).next())
        XCTAssertNil(Balancer([BackendGroup(name: "g", servers: [BackendServer(host: "127.0.0.1", port: 1, weight: 0)])]).pick())
    }

    func testGroupsWithOnlyZeroWeightServersAreSkipped() {
        let live = BackendServer(host: "127.0.0.1", port: 2)
        let balancer = Balancer([
            BackendGroup(name: "drained", weight: 100, servers: [BackendServer(host: "127.0.0.1", port: 1, weight: 0)]),
            BackendGroup(name: "live", weight: 1, servers: [live]),
        ])
        XCTAssertEqual((0..<5).compactMap { _ in balancer.pick() }, Array(repeating: live, count: 5))
    }

    func testSplitIsExactWhenPicksComeFromManyThreads() {
        let balancer = Balancer([
            BackendGroup(name: "blue", weight: 80, servers: [BackendServer(host: "127.0.0.1", port: 1)]),
            BackendGroup(name: "green", weight: 20, servers: [BackendServer(host: "127.0.0.1", port: 2)]),
        ])
        let counts = ManagedCounts()
        DispatchQueue.concurrentPerform(iterations: 4) { _ in
            for _ in 0..<250 { if let server = balancer.pick() { counts.add(server.port) } }
        }
        XCTAssertEqual(counts.snapshot, [1: 800, 2: 200])
    }
}

private final class ManagedCounts: Sendable {
    private let counts = NIOLockedValueBox<[Int: Int]>([:])
    func add(_ key: Int) { counts.withLockedValue { $0[key, default: 0] += 1 } }
    var snapshot: [Int: Int] { counts.withLockedValue { $0 } }
}
